"""The two-phase estimator (calib.stats.twophase) by simulation with a known truth: judges score a
probability sample, SMEs label a sample of the judged items; the model's predictions are
deliberately wrong, and the estimate must stay unbiased and its interval cover."""

from __future__ import annotations

import numpy as np
import pytest

from calib.data import cells
from calib.stats import design, twophase


def _population(rng, N=6000):
    """Two models, two segments of different size and level, one judge whose link to the verdict is
    a step (no logistic model fits it); the candidate slightly worse in segment 1."""
    seg = (rng.random(N) < 0.3).astype(int)
    x = rng.standard_normal((N, 2))  # judge score per model
    base = np.where(seg == 1, 0.55, 0.8)
    p_true = np.clip(base[:, None] + 0.25 * (x > 0.3) - 0.1 * (x < -1) - np.array([0.0, 0.04]) * seg[:, None], 0.02, 0.98)
    y = (rng.random((N, 2)) < p_true).astype(float)
    return seg, x, y


def _estimate(rng, seg, x, y, n1_frac, n2, stratified, wrong):
    N = len(seg)
    # phase 1: a (stratified) simple random sample of the items
    if stratified:
        s1 = np.concatenate([rng.choice(np.flatnonzero(seg == h), int(round(n1_frac * (seg == h).sum())), replace=False)
                             for h in (0, 1)])
        pi1 = np.where(seg[s1] == 1, len(s1[seg[s1] == 1]) / (seg == 1).sum(), len(s1[seg[s1] == 0]) / (seg == 0).sum())
    else:
        s1 = rng.choice(N, int(round(n1_frac * N)), replace=False)
        pi1 = np.full(len(s1), len(s1) / N)
    # phase 2: a simple random sample of the judged items
    pos2 = rng.choice(len(s1), n2, replace=False)
    n1 = len(s1)
    out_item = np.repeat(np.arange(n1), 2)
    out_model = np.tile([0, 1], n1)
    z = x[s1].reshape(-1, 1)
    lab_out = np.concatenate([2 * pos2, 2 * pos2 + 1])
    yy = y[s1].reshape(-1)
    data, out_cell = cells.cells_from_arrays(["b", "c"], ["s0", "s1"], ["j"], out_model, np.repeat(seg[s1], 2), z,
                                             lab_out, yy[lab_out], return_index=True)
    w1_out = np.repeat(1.0 / pi1, 2)
    data.cell_pop = np.bincount(out_cell, weights=w1_out, minlength=len(data.cell_n))
    C = len(data.cell_n)
    # the deliberately wrong working model: every cell predicted `wrong` (no information, biased)
    p_cells = np.full(C, wrong)
    p_lab = np.full((50, len(lab_out)), wrong)
    lab = design.LabelledSet(item_id=out_item[lab_out].astype(str).astype(object), model=out_model[lab_out],
                             cell=out_cell[lab_out].astype(np.int64), k=yy[lab_out], n=np.ones(len(lab_out)),
                             w=np.full(len(lab_out), n1 / n2), w1=w1_out[lab_out])
    dummy = {"b": np.zeros(2000), "c": np.zeros(2000)}
    rates = design.design_rate_draws(data, p_cells, p_lab, lab, dummy, {"b": {}, "c": {}}, seed=int(rng.integers(1e9)))
    return rates


@pytest.mark.parametrize("stratified", [False, True])
def test_two_phase_unbiased_and_covering_under_a_wrong_model(stratified):
    rng = np.random.default_rng(7 + stratified)
    seg, x, y = _population(rng)
    truth = y.mean(0)
    err, cover, z = [], [], []
    for r in range(150):
        rates = _estimate(rng, seg, x, y, 0.1, 80, stratified, wrong=0.5)
        d = rates.overall["c"] - rates.overall["b"]
        lo, hi = np.quantile(d, [0.025, 0.975])
        e = d.mean() - (truth[1] - truth[0])
        err.append(e)
        z.append(e / d.std())
        cover.append(lo <= truth[1] - truth[0] <= hi)
        for m, name in enumerate("bc"):
            lo, hi = np.quantile(rates.overall[name], [0.025, 0.975])
            cover.append(lo <= truth[m] <= hi)
    err = np.array(err)
    # unbiased: the mean error within 3 of its standard errors; honest: coverage near 95%
    assert abs(err.mean()) < 3 * err.std() / np.sqrt(len(err))
    assert 0.91 <= np.mean(cover) <= 0.995
    assert 0.8 < np.std(z) < 1.25


def test_delta_covers_when_the_labelled_items_show_no_discordance():
    """Two models that agree on all but 4 of 100 items; phase 1 judges 50, SMEs label 40 of them:
    about half of the samples label no discordant item, and the phase-1 variance of Delta must
    still allow the unjudged half to differ (the pair's discordance floor; without it such
    samples claimed a near-zero phase-1 variance: SummEval covered 0.27 there)."""
    rng = np.random.default_rng(5)
    N = 100
    seg = np.zeros(N, int)
    x = rng.standard_normal((N, 2))
    y_b = (rng.random(N) < 0.5).astype(float)
    y_c = y_b.copy()
    y_c[:3] = 1 - y_c[:3]  # three discordant items the candidate differs on
    y_c[3] = 1 - y_c[3]
    y = np.column_stack([y_b, y_c])
    truth = y[:, 1].mean() - y[:, 0].mean()
    cover = []
    for r in range(200):
        rates = _estimate(rng, seg, x, y, 0.5, 40, False, wrong=0.5)
        d = rates.overall["c"] - rates.overall["b"]
        lo, hi = np.quantile(d, [0.025, 0.975])
        cover.append(lo <= truth <= hi)
    assert np.mean(cover) >= 0.93  # 0.88 without the floor, 1.0 with it (a 100-item population)


def test_phase_one_variance_counts_which_items_were_judged():
    """With perfect predictions the phase-2 residuals vanish; what remains is phase 1's error, and
    the interval must still cover it (a census would claim near-zero width)."""
    rng = np.random.default_rng(3)
    seg, x, y = _population(rng, 4000)
    truth = y.mean(0)
    cover = []
    for r in range(120):
        N = len(seg)
        s1 = rng.choice(N, 200, replace=False)
        rates_pi1 = np.full(len(s1), 200 / N)
        cover.append(_cover_perfect(rng, s1, rates_pi1, seg, y, truth))
    assert np.mean(cover) >= 0.9


def _cover_perfect(rng, s1, pi1, seg, y, truth):
    n1 = len(s1)
    pos2 = rng.choice(n1, 60, replace=False)
    out_model = np.tile([0, 1], n1)
    out_item = np.repeat(np.arange(n1), 2)
    # every output its own cell (a perfect model: p = y)
    z = np.arange(2 * n1, dtype=float).reshape(-1, 1)
    lab_out = np.concatenate([2 * pos2, 2 * pos2 + 1])
    yy = y[s1].reshape(-1)
    data, out_cell = cells.cells_from_arrays(["b", "c"], ["s0", "s1"], ["j"], out_model, np.repeat(seg[s1], 2), z,
                                             lab_out, yy[lab_out], width=0, return_index=True)
    w1_out = np.repeat(1.0 / pi1, 2)
    data.cell_pop = np.bincount(out_cell, weights=w1_out, minlength=len(data.cell_n))
    p_cells = np.bincount(out_cell, weights=yy, minlength=len(data.cell_n)) / np.maximum(data.cell_n, 1)
    lab = design.LabelledSet(item_id=out_item[lab_out].astype(str).astype(object), model=out_model[lab_out],
                             cell=out_cell[lab_out].astype(np.int64), k=yy[lab_out], n=np.ones(len(lab_out)),
                             w=np.full(len(lab_out), n1 / 60), w1=w1_out[lab_out])
    p_lab = np.tile(yy[lab_out], (20, 1))
    rates = design.design_rate_draws(data, p_cells, p_lab, lab, {"b": np.zeros(1000), "c": np.zeros(1000)},
                                     {"b": {}, "c": {}}, seed=int(rng.integers(1e9)))
    lo, hi = np.quantile(rates.overall["c"], [0.025, 0.975])
    return lo <= truth[1] <= hi


def test_a_census_is_unchanged():
    """pi1 = 1 for every item (every item judged) gives exactly the census estimator's answer."""
    rng = np.random.default_rng(11)
    seg, x, y = _population(rng, 3000)
    a = _estimate(np.random.default_rng(5), seg, x, y, 1.0, 100, False, wrong=0.6)
    import calib.stats.design as d
    orig = d.design_rate_draws

    def census(data, p_cells, p_lab, lab, *args, **kw):
        from dataclasses import replace
        return orig(replace(data, cell_pop=None), p_cells, p_lab, replace(lab, w1=None), *args, **kw)

    d.design_rate_draws = census
    try:
        b = _estimate(np.random.default_rng(5), seg, x, y, 1.0, 100, False, wrong=0.6)
    finally:
        d.design_rate_draws = orig
    for m in "bc":
        assert np.allclose(a.overall[m], b.overall[m])
    w1 = twophase.stratified_pi1(np.array(["a", "b", "a"]), {"a": 2, "b": 1}, {"a": 4, "b": 4})
    assert np.allclose(w1, [0.5, 0.25, 0.5])


def test_forecast_width_has_the_phase_one_floor():
    """More labels do not shrink the phase-1 part: the forecast sd tends to it, not to zero."""
    from calib.stats import forecast

    fixed = 0.01 ** 2
    sd_now = np.sqrt(0.3 * (1 / 100 - 1 / 2000) + fixed)
    fn = forecast.design_sd_function(sd_now, 100, 2000, 0.25, fixed_var=fixed)
    assert abs(fn(0) - sd_now) < 1e-12
    assert fn(1900) >= 0.01 - 1e-12 and fn(1900) < 0.0101
    assert abs(fn.s2 - 0.3) < 1e-9
    # a target below the floor is never reached
    assert forecast.labels_for_width(fn, 2 * 1.96 * 0.009, 1900) is None


def test_product_path_on_a_judged_sample(tmp_path):
    """Import, a 30% judged sample by segment, queue-chosen labels from simulated SMEs, fit: the
    fit says it is two-phase, its intervals carry a phase-1 part, and only judged items were labelled."""
    from calib.data import demo, phase1, store
    from calib.review import queue, simulate
    from calib.stats import engine

    con = store.connect(tmp_path / "p.duckdb", create=True)
    demo.load_demo(con, 900, seed=4)
    phase1.draw_sample(con, fraction=0.3, strata="segment", seed=2)
    for _ in range(3):
        queue.refill(con, 20, seed=1)
        simulate.simulate_sme(con, 20, seed=3)
    fit = engine.fit_project(con, kind="fast")
    assert fit["judged_sample"]["judged"] == 270 and fit["judged_sample"]["items"] == 900
    assert "two-phase" in engine.interval_words(fit)
    dim = store.get_settings(con)["dimensions"][0]
    pc = fit["estimator"][dim]["domains"]["overall"]["phase1_cov"]
    assert all(pc[m][m] > 0 for m in pc)
    outside = con.execute("SELECT count(*) FROM labels WHERE item_id NOT IN (SELECT item_id FROM judge_sample)").fetchone()[0]
    assert outside == 0


def test_two_phase_win_rate_unbiased_and_covering_through_the_product(tmp_path):
    """A pairwise-only project (the win rate) of 500 items, fixed (design-based: the population is
    given, the samples vary): judges on a 30% sample drawn by ``phase1.draw_sample``, 40 uniformly
    chosen judged pairs compared by an SME. Over replicates the win rate's estimate is unbiased for
    the population's true win rate, its interval covers it, and its half-width is the error's real
    size (the phase-1 part counted: the judge is worse on the hard prompts, where the candidate loses)."""
    import shutil

    import pandas as pd

    from calib.data import ingest, phase1, store
    from calib.stats import engine

    n_items, reps = 500, 24
    rng = np.random.default_rng(700)
    ids = [f"i{k:04d}" for k in range(n_items)]
    hard = rng.random(n_items) < 0.4
    win = (rng.random(n_items) < np.where(hard, 0.35, 0.75)).astype(float)
    judge = np.where(rng.random(n_items) < np.where(hard, 0.6, 0.85), win, 1 - win)
    truth = win.mean()
    pd.concat([pd.DataFrame({"item_id": ids, "model": m, "prompt": "p", "output": m}) for m in ("old", "new")]
              ).to_csv(tmp_path / "o.csv", index=False)
    pd.DataFrame({"item_id": ids, "baseline": "old", "candidate": "new", "pref:j1:overall": judge}
                 ).to_csv(tmp_path / "p.csv", index=False)
    con = store.connect(tmp_path / "base.duckdb", create=True)
    ingest.import_file(con, tmp_path / "o.csv", baseline="old")
    ingest.import_file(con, tmp_path / "p.csv")
    con.close()
    pos = {k: i for i, k in enumerate(ids)}
    errs, covered, half = [], 0, []
    for rep in range(reps):
        shutil.copy(tmp_path / "base.duckdb", tmp_path / "t.duckdb")
        con = store.connect(tmp_path / "t.duckdb")
        phase1.draw_sample(con, fraction=0.3, seed=rep)
        judged = sorted(phase1.item_inclusion(con)["item_id"])
        lab = [judged[i] for i in np.random.default_rng(rep).choice(len(judged), 40, replace=False)]
        pd.DataFrame({"item_id": lab, "baseline": "old", "candidate": "new", "dimension": "overall",
                      "annotator": "sme", "preference": ["candidate" if win[pos[k]] else "baseline" for k in lab]}
                     ).to_csv(tmp_path / "l.csv", index=False)
        ingest.import_labels(con, tmp_path / "l.csv")
        fit = engine.fit_project(con, "fast", record=False)
        con.close()
        assert "two-phase" in engine.interval_words(fit)
        w = fit["preference"][0]
        errs.append(w["mean"] - truth)
        covered += w["lo"] <= truth <= w["hi"]
        half.append((w["hi"] - w["lo"]) / 2)
    errs = np.array(errs)
    assert abs(errs.mean()) < 3 * errs.std(ddof=1) / np.sqrt(reps)  # unbiased
    assert covered / reps >= 0.83  # 95% intervals; 24 replicates (binomial sd 0.045)
    assert np.mean(half) > 0.8 * 1.96 * errs.std(ddof=1)  # the half-width is the error's real size
