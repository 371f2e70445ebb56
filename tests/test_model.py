"""The calibration engine, tested by simulation with a known truth (no snapshot numbers)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
from scipy import stats
import pytest

from calib.data import cells, demo, ingest, store
from calib.stats import crosscheck, engine, forecast, model


def _sim_cells(seed: int, n_items: int, n_labels: int, dim: str, width: float = cells.BIN):
    """A demo project as arrays: CellData with ``n_labels`` random items labelled from the truth."""
    d = demo.generate(n_items, seed=seed)
    out = d.outputs
    om = out.model.map({m: i for i, m in enumerate(demo.MODELS)}).to_numpy()
    os_ = out.segment.map({s: i for i, s in enumerate(demo.REGIONS)}).to_numpy()
    items = {it: i for i, it in enumerate(out.item_id.unique())}
    oi = out.item_id.map(items).to_numpy()
    truth = d.truth[d.truth.dimension == dim].set_index(["item_id", "model"]).verdict
    y = truth.loc[list(zip(out.item_id, out.model))].to_numpy(float)
    Z = cells.normal_scores(out[[f"judge:{j}:{dim}" for j in demo.JUDGES]].to_numpy(float))
    chosen = np.random.default_rng([seed, 77]).choice(len(items), n_labels, replace=False)
    lab = np.flatnonzero(np.isin(oi, chosen))
    data = cells.cells_from_arrays(demo.MODELS, demo.REGIONS, demo.JUDGES, om, os_, Z, lab, y[lab], width=width)
    true_rates = [y[om == 0].mean(), y[om == 1].mean()]
    return data, true_rates


# --------------------------------------------------------------------------- model values


def test_fast_fit_covers_known_truth_without_bias():
    """Over 12 simulated projects x 3 dimensions, 95% intervals of Delta cover the truth and the
    posterior mean is unbiased (a coverage study in miniature; bench/coverage.py is the full one)."""
    covered, errors = [], []
    for rep in range(12):
        for dim in demo.DIMENSIONS:
            data, (rb, rc) = _sim_cells(500 + rep, 600, 150, dim)
            post = model.fit_laplace(data, draws=1000, seed=rep)
            rates = model.population_rate_draws(data, post, seed=rep)
            delta = rates.overall[demo.CANDIDATE] - rates.overall[demo.BASELINE]
            mean, lo, hi = model.posterior_interval(delta)
            covered.append(lo <= rc - rb <= hi)
            errors.append(mean - (rc - rb))
    assert np.mean(covered) >= 0.85  # P(< 31 of 36 | 0.95) < 1%
    assert abs(np.mean(errors)) < 0.015
    assert np.sqrt(np.mean(np.square(errors))) < 0.05


def test_labels_shrink_the_interval_and_all_labels_give_the_truth():
    data50, truth = _sim_cells(9, 400, 50, "correctness")
    data300, _ = _sim_cells(9, 400, 300, "correctness")
    dataall, _ = _sim_cells(9, 400, 400, "correctness")
    widths = []
    for d in (data50, data300, dataall):
        r = model.population_rate_draws(d, model.fit_laplace(d, 1000))
        _, lo, hi = model.posterior_interval(r.overall[demo.BASELINE])
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # every output labelled: the population rate is known exactly
    r = model.population_rate_draws(dataall, model.fit_laplace(dataall, 1000))
    assert r.overall[demo.BASELINE].mean() == pytest.approx(truth[0], abs=1e-9)
    assert widths[2] < 1e-9


def test_binning_changes_estimates_by_less_than_0002():
    for dim in demo.DIMENSIONS:
        binned, _ = _sim_cells(21, 1500, 200, dim, width=cells.BIN)
        exact, _ = _sim_cells(21, 1500, 200, dim, width=0)
        assert len(binned.cell_n) < len(exact.cell_n)
        rb = model.population_rate_draws(binned, model.fit_laplace(binned, 4000, seed=1), seed=1)
        re = model.population_rate_draws(exact, model.fit_laplace(exact, 4000, seed=1), seed=1)
        for m in demo.MODELS:
            assert abs(rb.overall[m].mean() - re.overall[m].mean()) < 0.002, (dim, m)


def test_decision_rule():
    assert model.decide(0.96) == "not worse"
    assert model.decide(0.04) == "worse"
    assert model.decide(0.5) == "label more"
    assert model.decide(0.91, threshold=0.9) == "not worse"
    draws = np.array([-0.05, -0.01, 0.0, 0.02])
    assert model.p_noninferior(draws, 0.02) == 0.75


@pytest.mark.slow
@pytest.mark.xdist_group("nuts")  # NUTS compiles its kernel once per worker (5-15 s): share it
def test_nuts_agrees_with_fast_fit():
    """Tiny real NUTS run: the fast fit's interval endpoints are within 15% of NUTS's width (the
    issue's 10% is checked with more draws in bench/refit_speed.py; here MC error is larger)."""
    data, _ = _sim_cells(3, 500, 150, "style")
    nuts = model.fit_nuts(data, draws=500, tune=300, seed=1)
    fast = model.fit_laplace(data, draws=4000, seed=1)
    dn = model.population_rate_draws(data, nuts)
    df = model.population_rate_draws(data, fast)
    a = model.posterior_interval(dn.overall[demo.CANDIDATE] - dn.overall[demo.BASELINE])
    b = model.posterior_interval(df.overall[demo.CANDIDATE] - df.overall[demo.BASELINE])
    width = a[2] - a[1]
    assert max(abs(x - y) for x, y in zip(a, b)) <= 0.15 * width
    assert set(nuts.diagnostics) >= {"max_rhat", "min_ess_bulk", "divergences", "warnings"}
    # a refit with a different number of labelled cells reuses the compiled model
    compiled = dict(model._COMPILED)
    fewer = dataclasses.replace(data, obs_cell=data.obs_cell[:-7], obs_k=data.obs_k[:-7], obs_n=data.obs_n[:-7])
    again = model.fit_nuts(fewer, draws=100, tune=100, seed=2)
    assert model._COMPILED == compiled and again.theta.shape == (200, data.n_params)


def test_nuts_kernel_is_the_pymc_density_and_its_gradient():
    """The fused numba kernel NUTS samples with evaluates exactly the PyMC model's log density
    (same parameterisation, data, centring and whitening), and its gradient matches finite
    differences."""
    import pymc as pm

    from calib.stats import nuts_kernel

    data, _ = _sim_cells(5, 400, 120, "correctness")
    fast = model.fit_laplace(data, draws=400, seed=0)
    lam = model.centring(data, fast)
    loc, chol = model.whitening(model._to_nuts_space(data, fast, lam))
    sh = model._nuts_shared(data, loc, chol, lam)
    m = model.build_pymc_model(data)
    pm.set_data({"w_loc": loc, "w_chol": chol, "lam": lam}, model=m)
    logp_pymc = m.compile_logp(mode="FAST_COMPILE")
    rng = np.random.default_rng(1)
    for _ in range(3):
        w = rng.normal(size=data.n_params + 2)
        lp, g = nuts_kernel.logp_grad(w, *[sh[k] for k in nuts_kernel.SHARED])
        assert lp == pytest.approx(float(logp_pymc({"w": w})), abs=1e-8)
        eye = np.eye(len(w))
        num = [(nuts_kernel.logp_grad(w + 1e-6 * e, *[sh[k] for k in nuts_kernel.SHARED])[0]
                - nuts_kernel.logp_grad(w - 1e-6 * e, *[sh[k] for k in nuts_kernel.SHARED])[0]) / 2e-6 for e in eye]
        assert np.allclose(num, g, atol=1e-4 * max(1.0, np.abs(g).max()))


def _pair_sim(seed: int, n: int = 400, n_lab: int = 120, weights=(1.2, 0.6)):
    """Preferences from an ordered logistic model on one feature per pairwise judge (``weights``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(weights)))
    u = x @ np.asarray(weights) + 0.3 + rng.logistic(size=n)
    y = np.where(u > 1.0, 2, np.where(u < -0.8, 0, 1))
    lab = rng.choice(n, n_lab, replace=False)
    return cells.pair_cells_from_arrays([f"j{i}" for i in range(len(weights))], x, lab, y[lab]), y


def test_pair_kernel_is_the_pymc_density_and_its_gradient():
    """The preference model's fused kernel (what NUTS samples) is the PyMC model's density up to a
    constant, in the whitened coordinates, and its gradient matches finite differences."""
    from calib.stats import pair_kernel

    pdata, _ = _pair_sim(2)
    loc = np.array([0.8, 0.3, -0.5, 0.2])
    chol = np.linalg.cholesky(np.array([[0.5, 0.1, 0, 0], [0.1, 0.4, 0, 0], [0, 0, 0.3, 0.05], [0, 0, 0.05, 0.2]]))
    sh = pair_kernel.shared_data(loc, chol, pdata.cell_x, pdata.obs_cell, pdata.obs_y)
    logp_pymc = model.build_pairwise_pymc_model(pdata).compile_logp(mode="FAST_COMPILE")
    rng = np.random.default_rng(3)
    points = [rng.normal(size=4) for _ in range(3)]
    ours, theirs = [], []
    for w in points:
        lp, g = pair_kernel.logp_grad(w, *[sh[k] for k in pair_kernel.SHARED])
        u = loc + chol @ w
        ours.append(lp)
        theirs.append(float(logp_pymc({"gamma": u[:2], "c0": u[2], "log_gap": u[3]})))
        num = [(pair_kernel.logp_grad(w + 1e-6 * e, *[sh[k] for k in pair_kernel.SHARED])[0]
                - pair_kernel.logp_grad(w - 1e-6 * e, *[sh[k] for k in pair_kernel.SHARED])[0]) / 2e-6 for e in np.eye(4)]
        assert np.allclose(num, g, atol=1e-4 * max(1.0, np.abs(g).max()))
    assert np.allclose(np.diff(ours), np.diff(theirs), atol=1e-8)


@pytest.mark.slow
@pytest.mark.xdist_group("nuts")
def test_pairwise_nuts_agrees_with_the_fast_fit():
    """NUTS and the fast fit of the preference model give the same posterior (means within a
    fifth of a posterior sd, sds within 20%), and NUTS reports its convergence. Four judges, as
    the demo's preference model (test_fit_project_records_history...): one compiled kernel."""
    pdata, _ = _pair_sim(5, weights=(1.2, 0.6, -0.4, 0.2))
    nuts, diag = model.pairwise_posterior(pdata, "nuts", draws=1000, seed=1)
    fast, _ = model.pairwise_posterior(pdata, "fast", draws=4000, seed=1)
    sd = nuts.std(0)
    assert np.all(np.abs(nuts.mean(0) - fast.mean(0)) <= 0.2 * sd)
    assert np.all(np.abs(fast.std(0) / sd - 1) <= 0.2)
    assert set(diag) >= {"max_rhat", "min_ess_bulk", "divergences", "warnings"}


def test_pairwise_win_rate_covers_truth():
    rng = np.random.default_rng(4)
    covered = []
    for rep in range(20):
        n = 400
        x = rng.normal(size=(n, 2))
        eta = 1.2 * x[:, 0] + 0.6 * x[:, 1] + 0.3
        u = eta + rng.logistic(size=n)
        y = np.where(u > 1.0, 2, np.where(u < -0.8, 0, 1))
        true = np.mean(y / 2)
        lab = rng.choice(n, 120, replace=False)
        pdata = cells.pair_cells_from_arrays(["a", "b"], x, lab, y[lab])
        _, lo, hi = model.posterior_interval(model.fit_pairwise(pdata, seed=rep))
        covered.append(lo <= true <= hi)
    assert np.mean(covered) >= 0.8


# --------------------------------------------------------------------------- cross-checks


def test_ppi_is_unbiased_and_covers_with_unequal_inclusion_probabilities():
    rng = np.random.default_rng(0)
    N = 4000
    z = rng.normal(size=N)
    y = (z + rng.normal(size=N) > -0.5).astype(float)
    f = (z + 0.8 * rng.normal(size=N) > -0.2).astype(float)  # a biased, noisy judge
    truth = y.mean()
    priority = np.abs(z) < 0.5  # over-sample uncertain items
    covered, est = [], []
    for _ in range(300):
        pi = np.where(priority, 0.08, 0.02)
        lab = rng.random(N) < pi
        r = crosscheck.ppi_mean_interval(y[lab], f[lab], f.mean(), 1 / pi[lab])
        covered.append(r["lo"] <= truth <= r["hi"])
        est.append(r["mean"])
    assert 0.91 <= np.mean(covered) <= 0.99
    assert abs(np.mean(est) - truth) < 0.005
    # lambda = 0 is the human-only (weighted) estimate
    r0 = crosscheck.ppi_mean_interval(y[:200], f[:200], f.mean(), tune=False)
    assert r0["lam"] == 1.0
    assert crosscheck.ppi_mean_interval(y[:200], np.zeros(200), 0.0)["mean"] == pytest.approx(y[:200].mean())


def test_wilson_and_disagreement_flag():
    m, lo, hi = crosscheck.wilson_interval(8, 10)
    assert m == 0.8 and 0.44 < lo < 0.5 and 0.94 < hi < 0.98
    assert crosscheck.intervals_disagree((0, 0.1), (0.2, 0.3))
    assert not crosscheck.intervals_disagree((0, 0.25), (0.2, 0.3))


# --------------------------------------------------------------------------- forecast


def test_forecast_shrinks_and_matches_now_at_zero():
    data, _ = _sim_cells(5, 1000, 100, "correctness")
    post = model.fit_laplace(data, 2000)
    sds = forecast.delta_sd_after(data, post, [0, 50, 200, 800], 0, 1, current_sd=0.03)
    assert sds[0] == pytest.approx(0.03)
    assert sds[0] > sds[1] > sds[2] > sds[3] > 0
    k = forecast.labels_for_width(lambda k: forecast.delta_sd_after(data, post, [k], 0, 1, current_sd=0.03)[0],
                                  0.06, 900)
    assert k is not None and 2 * 1.959964 * forecast.delta_sd_after(data, post, [k], 0, 1, current_sd=0.03)[0] <= 0.06
    assert 2 * 1.959964 * forecast.delta_sd_after(data, post, [k - 1], 0, 1, current_sd=0.03)[0] > 0.06


def test_decision_probability():
    # far above the margin: a decision is almost sure; at the margin with little to learn: unlikely
    assert forecast.decision_probability(0.1, 0.02, 0.01, 0.02) > 0.99
    assert forecast.decision_probability(-0.02, 0.02, 0.0199, 0.02) < 0.05


# --------------------------------------------------------------------------- engine over DuckDB


def _label_from_truth(con, n_items: int, seed: int = 0) -> None:
    con.execute(
        f"""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
            SELECT item_id, model, dimension, verdict, kind, 'sim', current_timestamp, 'test' FROM sim_truth
            WHERE item_id IN (SELECT item_id FROM items ORDER BY hash(item_id || '{seed}') LIMIT {n_items})""")
    con.execute(
        f"""INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, strength, annotator,
                created_at, source)
            SELECT item_id, baseline, candidate, dimension, preference, strength, 'sim', current_timestamp, 'test'
            FROM sim_truth_pairs WHERE item_id IN (SELECT item_id FROM items ORDER BY hash(item_id || '{seed}')
            LIMIT {n_items})""")


def test_duckdb_cells_match_numpy_cells(demo_con):
    cells.ensure_cells(demo_con)
    out = demo_con.execute("SELECT * FROM outputs JOIN items USING (item_id) ORDER BY item_id, model").fetch_df()
    scores = demo_con.execute(
        "SELECT item_id, model, judge, dimension, score FROM judge_scores").fetch_df()
    wide = scores.pivot_table(index=["item_id", "model"], columns=["judge", "dimension"], values="score")
    for dim in demo.DIMENSIONS:
        Z = cells.normal_scores(wide.xs(dim, axis=1, level="dimension")[sorted(demo.JUDGES)].to_numpy(float))
        om = np.array([demo.MODELS.index(m) for m in wide.index.get_level_values("model")])
        seg = out.set_index(["item_id", "model"]).loc[wide.index, "segment"]
        segs = sorted(seg.unique())
        os_ = np.array([segs.index(s) for s in seg])
        ref = cells.cells_from_arrays(demo.MODELS, segs, sorted(demo.JUDGES), om, os_, Z, [], [])
        got, _, _ = engine.load_dimension(demo_con, dim, demo.MODELS)
        key = lambda d: sorted(zip(d.cell_model, d.cell_segment, map(tuple, np.round(d.cell_x, 6)), d.cell_n))  # noqa: E731
        assert key(got) == key(ref)


@pytest.mark.xdist_group("nuts")  # the preference model's NUTS runs for real
def test_fit_project_records_history_and_moves_with_labels(demo_con, monkeypatch):
    _label_from_truth(demo_con, 60)
    r1 = engine.fit_project(demo_con, "fast")
    assert {"n_labels", "interval", "rates", "diffs", "preference", "cross_checks"} <= set(r1)
    assert r1["n_labels"] == 60 and r1["interval"] == 0.95
    assert {d["decision"] for d in r1["diffs"]} <= {"not worse", "worse", "label more"}
    assert {c["method"] for c in r1["cross_checks"]} >= {"human-only", "ppi++", "judge-only:judge-strict"}
    assert any(r["segment"] is None for r in r1["rates"]) and any(r["segment"] for r in r1["rates"])
    assert r1["preference"] and 0 <= r1["preference"][0]["mean"] <= 1
    _label_from_truth(demo_con, 200, seed=1)
    r2 = engine.fit_project(demo_con, "fast")
    hist = engine.fits_history(demo_con)
    assert [h["n_labels"] for h in hist if h["dimension"] == "style"] == [60, r2["n_labels"]]
    w1 = {d["dimension"]: d["hi"] - d["lo"] for d in r1["diffs"]}
    w2 = {d["dimension"]: d["hi"] - d["lo"] for d in r2["diffs"]}
    assert all(w2[k] < w1[k] for k in w1)
    # plumbing of the NUTS path with sampling mocked
    monkeypatch.setattr(model, "fit_nuts", lambda data, draws=800, seed=0: model.fit_laplace(data, 500, seed))
    r3 = engine.fit_project(demo_con, "nuts")
    assert r3["kind"] == "nuts" and demo_con.execute("SELECT count(*) FROM fits WHERE kind = 'nuts'").fetchone()[0] == 1


def test_cells_rebuilt_only_when_data_change(demo_con, tmp_path):
    assert cells.ensure_cells(demo_con) is True
    assert cells.ensure_cells(demo_con) is False
    _label_from_truth(demo_con, 10)
    assert cells.ensure_cells(demo_con) is False  # labels do not touch the population cells
    extra = demo.generate(5, seed=99, start=900000).outputs
    path = tmp_path / "more.parquet"
    extra.to_parquet(path)
    ingest.import_file(demo_con, path)
    assert cells.ensure_cells(demo_con) is True


def test_cli_fit_and_forecast_json(tmp_path):
    db = tmp_path / "c.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 300, seed=3)
    _label_from_truth(con, 80)
    con.close()
    r = subprocess.run([sys.executable, "-m", "calib.cli", "fit", "--db", str(db), "--json", "--fast", "--margin", "0.03"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n_labels"] == 80 and res["margin"] == 0.03
    for d in res["diffs"]:
        assert {"dimension", "baseline", "candidate", "mean", "lo", "hi", "p_noninferior", "decision"} <= set(d)
        assert d["lo"] <= d["mean"] <= d["hi"]
    r = subprocess.run([sys.executable, "-m", "calib.cli", "forecast", "--db", str(db), "--extra", "50,100", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fc = json.loads(r.stdout)["forecasts"]
    assert len(fc) == 3 and all(f["steps"][0]["width"] > f["steps"][1]["width"] for f in fc)


def test_preposterior_decision_probability_is_calibrated_by_simulation():
    """Truths drawn from the prior, today's estimate from n items, the future one from k more:
    the mean forecast chance of a decision matches the share of futures that decide."""
    rng = np.random.default_rng(11)
    R, n, k, s2, m, tau = 4000, 20, 40, 0.2, 0.02, 0.1
    delta = rng.normal(0, tau, R)
    e_n = delta + rng.normal(0, np.sqrt(s2 / n), R)
    e_new = delta + rng.normal(0, np.sqrt(s2 / k), R)
    e_future = (n * e_n + k * e_new) / (n + k)
    sd_after = np.sqrt(s2 / (n + k))
    z = stats.norm.ppf(0.95)
    decided = np.abs(e_future + m) > z * sd_after
    fc = [forecast.preposterior_decision_probability(e, np.sqrt(s2 / n), n, k, s2, sd_after, m, 0.95, tau) for e in e_n]
    assert abs(np.mean(fc) - decided.mean()) < 0.03
    # from no labels at all, the prior alone
    fc0 = forecast.preposterior_decision_probability(0.0, 1.0, 0, k, s2, np.sqrt(s2 / k), m, 0.95, tau)
    decided0 = np.abs(delta + rng.normal(0, np.sqrt(s2 / k), R) + m) > z * np.sqrt(s2 / k)
    assert abs(fc0 - decided0.mean()) < 0.03
