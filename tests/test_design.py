"""The design-consistent estimator (calib.stats.design), tested by simulation with a known truth:
unbiased and covering under a deliberately wrong working model and a non-uniform design."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from calib.data import cells
from calib.stats import design, engine, model

MODELS, SEGMENTS, JUDGES = ["base", "cand"], ["s0", "s1"], ["j0"]


def _population(seed: int, N: int = 1500):
    """Two models, one judge whose link to the verdict is a step (not logistic) and biased
    towards the candidate: the logistic working model is wrong on purpose."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 2, N)
    score = {m: rng.normal(size=N) for m in range(2)}
    # truth: the verdict jumps at score 0.8 for the baseline and at 0.0 for the candidate, and
    # the judge is lenient to the candidate (its scores shifted up by 0.7)
    y = {0: (rng.random(N) < np.where(score[0] > 0.8, 0.92, 0.35)).astype(float),
         1: (rng.random(N) < np.where(score[1] > 0.0, 0.85, 0.25)).astype(float)}
    judge = {0: score[0], 1: score[1] + 0.7}
    return seg, judge, y


def _fit_once(seed: int, n: int):
    seg, judge, y = _population(seed)
    N = len(seg)
    rng = np.random.default_rng([seed, 5])
    # non-uniform Poisson design: items with extreme judge scores are 6x as likely to be chosen
    prio = 1.0 + 5.0 * (np.abs(judge[0]) + np.abs(judge[1]) > 2.5)
    pi = np.minimum(1.0, n * prio / prio.sum())
    chosen = np.flatnonzero(rng.random(N) < pi)
    om = np.r_[np.zeros(N, int), np.ones(N, int)]
    os_ = np.r_[seg, seg]
    z = np.r_[judge[0], judge[1]][:, None]
    yy = np.r_[y[0], y[1]]
    lab_out = np.r_[chosen, chosen + N]
    data, inv = cells.cells_from_arrays(MODELS, SEGMENTS, JUDGES, om, os_, z, lab_out, yy[lab_out],
                                        return_index=True)
    post = model.fit_laplace(data, draws=800, seed=seed)
    mrates = model.population_rate_draws(data, post, seed=seed)
    lab = engine.LabelledOutputs(
        item_id=np.r_[chosen, chosen].astype(str).astype(object), model=np.r_[np.zeros(len(chosen), int), np.ones(len(chosen), int)],
        y=yy[lab_out], f=np.zeros(len(lab_out)), w=np.r_[1 / pi[chosen], 1 / pi[chosen]],
        cell=inv[lab_out].astype(np.int64), k=yy[lab_out].astype(np.int64), n=np.ones(len(lab_out), np.int64))
    drates = engine.design_rates(data, post, lab, mrates, seed=seed)
    truth = y[1].mean() - y[0].mean()
    d = drates.overall["cand"] - drates.overall["base"]
    m = mrates.overall["cand"] - mrates.overall["base"]
    return truth, model.posterior_interval(d), model.posterior_interval(m)


def test_design_estimate_is_unbiased_and_covers_when_the_model_is_wrong():
    errs, model_errs, cover = [], [], []
    for rep in range(40):
        truth, (dm, dlo, dhi), (mm, _, _) = _fit_once(3000 + rep, 300)
        errs.append(dm - truth)
        model_errs.append(mm - truth)
        cover.append(dlo <= truth <= dhi)
    errs, model_errs = np.array(errs), np.array(model_errs)
    se = errs.std() / np.sqrt(len(errs))
    # the design estimate is unbiased (within 3 standard errors of the simulation) ...
    assert abs(errs.mean()) < 3 * se + 0.005
    # ... where the wrong working model alone is not (its bias is several times larger)
    assert abs(model_errs.mean()) > 2 * abs(errs.mean())
    assert np.mean(cover) >= 0.85  # 95% nominal (bench/realdata.py and 120 replicates here: 0.958)


def test_loo_predictions_move_away_from_the_own_label():
    rng = np.random.default_rng(0)
    p = expit(rng.normal(0, 0.5, size=(2000, 1)))
    up = design.loo_predictions(p, np.array([0.0]), np.array([1.0]))  # own label 0 removed: higher
    down = design.loo_predictions(p, np.array([1.0]), np.array([1.0]))  # own label 1 removed: lower
    assert down[0] < p.mean() < up[0]


def test_pairwise_loo_predictions_move_away_from_the_own_preference():
    """A pair the SME gave to the candidate is predicted, without it, as less of a candidate win;
    one given to the baseline as more; a tie sits in between."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.4, size=2000)
    pc, pt = expit(a - 0.5), expit(0.5 - a) - expit(-0.5 - a)
    probs = np.stack([1 - pc - pt, pt, pc], axis=-1)[:, None, :].repeat(3, axis=1)  # (D, 3 items, 3)
    counts = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # candidate, tie, baseline
    loo = design.loo_pair_predictions(probs, counts)
    full = (pc + 0.5 * pt).mean()
    assert loo[0] < full < loo[2]
    assert loo[0] < loo[1] < loo[2]


def test_census_gives_the_truth_exactly():
    """Every item labelled: the estimate is the population rate, with (almost) no width."""
    seg, judge, y = _population(7, N=300)
    N = len(seg)
    om = np.r_[np.zeros(N, int), np.ones(N, int)]
    lab_out = np.arange(2 * N)
    yy = np.r_[y[0], y[1]]
    data, inv = cells.cells_from_arrays(MODELS, SEGMENTS, JUDGES, om, np.r_[seg, seg],
                                        np.r_[judge[0], judge[1]][:, None], lab_out, yy, return_index=True)
    post = model.fit_laplace(data, draws=400)
    mrates = model.population_rate_draws(data, post)
    lab = engine.LabelledOutputs(
        item_id=np.r_[np.arange(N), np.arange(N)].astype(str).astype(object), model=om, y=yy, f=np.zeros(2 * N),
        w=np.ones(2 * N), cell=inv.astype(np.int64), k=yy.astype(np.int64), n=np.ones(2 * N, np.int64))
    d = engine.design_rates(data, post, lab, mrates)
    mean, lo, hi = model.posterior_interval(d.overall["cand"] - d.overall["base"])
    assert abs(mean - (y[1].mean() - y[0].mean())) < 1e-3 and hi - lo < 1e-3


def test_project_fit_reports_the_design_estimate_and_holds_decisions_on_few_labels(demo_con):
    """Through the product: labels served by the queue give a design-based estimate for every
    dimension and the win rate; with fewer labelled items than min_decision_items no decision
    is announced, and the reason is given."""
    from calib.data import store
    from calib.review import simulate

    store.set_settings(demo_con, min_decision_items=1000)
    simulate.simulate_sme(demo_con, 30)
    fit = engine.fit_project(demo_con, "fast")
    for dim, est in fit["estimator"].items():
        assert est["estimator"] == "design" and est["labelled_items"] == 30
        assert "queue" in est["design"]
    assert all(d["decision"] == "label more" and "min_decision_items" in d["note"] for d in fit["diffs"]
               if "note" in d)
    assert any(c["method"] == "model-only" for c in fit["cross_checks"])
    assert fit["preference"] and fit["preference"][0]["estimator"]["estimator"] == "design"
    for p in fit["preference"]:  # the side-by-side decision: P(win rate >= 1/2 - margin), held too
        assert 0 <= p["p_noninferior"] <= 1 and p["decision"] == "label more"
        assert ("note" in p) == (max(p["p_noninferior"], 1 - p["p_noninferior"]) >= fit["decide_prob"])


def test_labels_imported_without_a_queue_are_declared_a_uniform_sample(demo_con, tmp_path):
    import pandas as pd

    from calib.data import ingest

    truth = demo_con.execute("SELECT item_id, model, dimension, verdict FROM sim_truth ORDER BY item_id LIMIT 120").fetch_df()
    truth["verdict"] = truth["verdict"].map({True: "pass", False: "fail"})
    truth["annotator"] = "outside"
    path = tmp_path / "labels.csv"
    truth.to_csv(path, index=False)
    ingest.import_labels(demo_con, path)
    fit = engine.fit_project(demo_con, "fast")
    assert all("uniform random sample" in est["design"] for est in fit["estimator"].values())


def test_rate_near_one_still_covers_when_the_sample_holds_no_failure():
    """A 0.96 rate among 100 items, 20 labelled at random: many samples hold no failure, and the
    residuals then show no variation; the variance floor keeps the interval honest (without it
    this covers 62%)."""
    rng = np.random.default_rng(5)
    N, n, reps = 100, 20, 400
    y_pop = np.zeros(N)
    y_pop[rng.choice(N, 96, replace=False)] = 1.0
    truth = y_pop.mean()
    p_model = 0.97  # a model that predicts the level well, and knows nothing item by item
    hits = 0
    for r in range(reps):
        s = rng.choice(N, n, replace=False)
        y = y_pop[s][:, None]
        e = y - p_model
        mean, cov, k = design._domain_estimate(
            np.array([y.sum()]), np.array([(N - n) * p_model]), np.array([float(N)]), np.array([float(N - n)]),
            e, np.full_like(e, p_model * (1 - p_model)), np.ones_like(e), np.full(n, N / n), y)
        d = design._t_draws(mean, cov, k - 1, 2000, np.random.default_rng(r))[:, 0]
        lo, hi = np.quantile(d, [0.025, 0.975])
        hits += lo <= truth <= hi
    assert hits / reps >= 0.93


def _estimate(y_lab, p_unl_sum, N, e, v, w: design.Weights):
    mean, cov, _ = design._domain_estimate(
        np.array([y_lab.sum()]), np.array([p_unl_sum]), np.array([float(N)]), np.array([float(N - len(y_lab))]),
        e[:, None], v[:, None], np.ones((len(e), 1)), w.c, y_lab[:, None], w.v, w.pi)
    return mean[0], np.sqrt(cov[0, 0])


def _sequential_study(N, sizes, reps, seed, model="wrong", favour=4.0):
    """Queue-like sequential batches: each batch is Poisson over the units the earlier ones left,
    inclusion probabilities sum to the batch size over that pool and favour (4x) the items the
    wrong working model is least sure of; returns the errors of the sequential and the pooled
    (raw 1/pi) estimates, and the sequential estimate's coverage of the 95% interval; ``favour`` 1:
    uniform batches, and "single" errors: one uniform Poisson sample of the same expected size."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=N)
    y = (rng.random(N) < expit(1.5 * x - 0.6 * x ** 2 + 0.4)).astype(float)
    # "wrong": misses the curvature and the level; "none": a constant (the human-only estimate)
    p_model = expit(0.8 * x) if model == "wrong" else np.full(N, 0.5)
    truth = y.mean()
    err = {"sequential": [], "pooled": [], "single": []}
    hits = 0
    for _ in range(reps):
        left = np.ones(N, bool)
        idx, w, key, batches = [], [], [], []
        for b, n_b in enumerate(sizes):
            prio = np.where(np.abs(x) < 0.6, favour, 1.0) * left
            pi = np.minimum(n_b * prio / prio.sum(), 1.0)
            take = (rng.random(N) < pi) & left
            idx += list(np.flatnonzero(take)); w += list(1 / pi[take]); key += [b] * int(take.sum())
            batches.append(design.Batch(key=b, whole=True, queued=int(take.sum())))
            left &= ~take
        idx, w, key = np.array(idx), np.array(w), np.array(key)
        e, v = y[idx] - p_model[idx], p_model[idx] * (1 - p_model[idx])
        unl = p_model[left].sum()
        pooled = design.Weights(w, w, 1 / np.maximum(w, 1))
        for how, ww in (("sequential", design.sequential_weights(w, idx, key, batches, N)), ("pooled", pooled)):
            m, sd = _estimate(y[idx], unl, N, e, v, ww)
            err[how].append(m - truth)
            if how == "sequential":
                hits += abs(m - truth) <= 1.96 * sd
        one = np.flatnonzero(rng.random(N) < sum(sizes) / N)
        w1 = np.full(len(one), N / sum(sizes))
        m, _ = _estimate(y[one], p_model[np.setdiff1d(np.arange(N), one)].sum(), N, y[one] - p_model[one],
                         p_model[one] * (1 - p_model[one]), design.Weights(w1, w1, 1 / w1))
        err["single"].append(m - truth)
    return {k: np.array(v) for k, v in err.items()}, hits / reps


def test_sequential_batches_stay_unbiased_and_beat_pooled_weights_when_the_last_batch_is_small():
    """A big batch then a small one (2% and 0.2% of a large population) under a deliberately wrong
    working model: combined inversely to their planned variances the estimate is unbiased and covers, and is
    more precise than pooling the raw 1/pi weights (where the small batch's few large weights
    count as much as the whole big batch)."""
    err, cover = _sequential_study(3000, [60, 6], 300, 11)
    seq = err["sequential"]
    assert abs(seq.mean()) < 3 * seq.std() / np.sqrt(len(seq)) + 0.002
    assert np.sqrt((seq ** 2).mean()) < 0.9 * np.sqrt((err["pooled"] ** 2).mean())
    assert cover >= 0.92


def test_sequential_batches_stay_unbiased_when_most_of_a_small_population_is_labelled():
    """60 of 100 items in three batches, each drawn from what the earlier ones left (as the queue
    does): the estimate stays unbiased and covers though the last pool is a third of the
    population, with a wrong working model and with none (a constant: the human-only estimate)."""
    for model in ("wrong", "none"):
        err, cover = _sequential_study(100, [30, 20, 10], 400, 12, model)
        seq = err["sequential"]
        assert abs(seq.mean()) < 3 * seq.std() / np.sqrt(len(seq)) + 0.002
        assert cover >= 0.93


def test_uniform_batches_lose_nothing_against_one_uniform_sample():
    """Uniform batches of 10 until 60 of 100 items are labelled hold the information of one uniform
    sample of 60: combined inversely to their planned variances, the error is about as small (1.08x
    on these seeds; combined by their labelled items it was 1.23x: the early batches, drawn from the
    full pool, are the least exact)."""
    err, cover = _sequential_study(100, [10] * 6, 600, 13, "wrong", favour=1.0)
    rmse = {k: np.sqrt((v ** 2).mean()) for k, v in err.items()}
    assert rmse["sequential"] < 1.15 * rmse["single"]  # 1.08 measured; 1.23 by labelled items
    assert cover >= 0.93


def test_a_lead_subset_batch_does_not_stand_for_the_population():
    """A lead's subset batch (filtered) after the queue's batches has no population estimate of its
    own: its items weigh 0 (they were in the last queue batch's pool, which that batch's estimate
    covers; the estimator then subtracts their known residuals); the weights add up to the
    population, and only the queue batches' own terms are random."""
    w = np.array([10.0, 10.0, 10.0, 50.0, 2.0])
    batches = [design.Batch(1, True, 3), design.Batch(2, True, 1), design.Batch(3, False, 1)]
    parts = design.sequential_weights(w, np.array(["a", "b", "c", "d", "e"]), np.array([1, 1, 1, 2, 3]), batches, 40)
    c = parts.c
    assert c[4] == 0.0 and parts.v[4] == 0.0
    assert np.isclose(c[:4].sum(), 40.0)
    # the batches' estimates combined inversely to their planned variances, pool (pool - n) / n:
    # batch 1, 3 labelled of a pool of 40; batch 2, one labelled of the 37 left
    inv1, inv2 = 1 / (40 * 37 / 3), 1 / (37 * 36 / 1)
    lam1, lam2 = inv1 / (inv1 + inv2), inv2 / (inv1 + inv2)
    # batch 1: lam1 of the pool of 40; then each of its items stands for itself in batch 2's
    # estimate (lam2); batch 2: lam2 of its pool of 37
    assert np.allclose(c[:3], lam1 * 40 / 3 + lam2) and np.isclose(c[3], lam2 * 37)
    assert np.allclose(parts.v[:3], lam1 * 40 / 3)
