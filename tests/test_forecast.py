"""The forecast with the queue's defensive mixture (calib/stats/forecast.py): by simulation with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from calib.stats import forecast, sampling


def _ht_variance(r: np.ndarray, e: np.ndarray, a: float, n: int, reps: int, rng) -> float:
    """Monte Carlo variance of the Horvitz-Thompson mean of ``e`` under Poisson sampling with
    pi = n ((1 - a) + a r) / N (r with mean 1)."""
    N = len(e)
    pi = np.clip(n * ((1 - a) + a * r) / N, 0, 1)
    draws = rng.random((reps, N)) < pi
    return float(((draws * (e / pi)).sum(1) / N).var())


@pytest.mark.parametrize("informative", [True, False])
def test_mixture_variance_ratio_from_a_few_labels_predicts_the_mixtures_variance(informative):
    """Known truth: a population whose residual sd follows the priority (informative) or not. The
    ratio the forecast uses, estimated from 60 uniform labels at the weight ``evidence_mix`` picks,
    is within 15% of the true variance ratio of the mixture's estimate to uniform's (Monte Carlo),
    below 1 where the priorities help and about 1 where they do not."""
    rng = np.random.default_rng(7)
    N = 3000
    r = rng.gamma(2.0, 0.5, N)
    r = np.clip(r, r.mean() / 3, r.mean() * 3)
    r = r / r.mean()
    sd = r if informative else rng.permutation(r)
    e = rng.standard_normal(N) * sd
    lab = rng.choice(N, 60, replace=False)
    a, _ = sampling.evidence_mix(r[lab], e[lab] ** 2, np.full(60, N / 60), 0.8)
    est = forecast.mixture_variance_ratio(r[lab], e[lab] ** 2, a)
    truth = _ht_variance(r, e, a, 150, 4000, rng) / _ht_variance(r, e, 0.0, 150, 4000, rng)
    assert est == pytest.approx(truth, rel=0.15)
    if informative:
        assert a > 0.3 and truth < 0.9
    else:
        assert truth > 0.9 and est > 0.9


def test_design_forecast_pools_todays_labels_with_the_mixtures():
    sd_now, n, N = 0.03, 50, 2000
    plain = forecast.design_sd_function(sd_now, n, N, 0.4, 2)
    mixed = forecast.design_sd_function(sd_now, n, N, 0.4, 2, future_ratio=0.7)
    assert plain(0) == pytest.approx(sd_now) and mixed(0) == pytest.approx(sd_now)
    s2 = sd_now ** 2 / (1 / n - 1 / N)
    assert plain(100) == pytest.approx(np.sqrt(s2 * (1 / 150 - 1 / N)))  # the uniform forecast, unchanged
    assert mixed(100) == pytest.approx(np.sqrt((50 * s2 + 100 * 0.7 * s2) / 150 * (1 / 150 - 1 / N)))
    assert mixed.s2 == pytest.approx(0.7 * s2)  # a future label's variance, for the decision chance
    cold = forecast.design_sd_function(0.0, 0, N, 0.4, 2, future_ratio=0.7)
    assert cold(100) == pytest.approx(np.sqrt(0.28 * (1 / 100 - 1 / N)))


def test_forecast_uses_the_queues_mixture_on_a_project(demo_con):
    """Before any label: the cold start's weight (the batch within 3x) and no claimed gain; after
    labels, the labels' own evidence, a ratio within the defensive bound; the selection shares
    mix uniform and priority by that weight."""
    from calib.data import store
    from calib.review import simulate
    from calib.data.cells import ensure_cells
    from calib.stats import engine, model

    ensure_cells(demo_con)
    models = store.models(demo_con)
    dim = store.get_settings(demo_con)["dimensions"][0]
    data, _, _ = engine.load_dimension(demo_con, dim, models)
    post = model.fit_laplace(data, draws=200)
    cold = forecast.sampler_mixture(data, post, 0, 1, random_share=0.2)
    assert cold["how"] == "cold start" and cold["ratio"] == 1.0 and 0 <= cold["a"] <= 0.8
    q = forecast.selection_shares(data, 0.2, post, 0, 1)
    assert q.sum() == pytest.approx(1.0) and (q >= 0).all()
    simulate.simulate_sme(demo_con, 40)
    ensure_cells(demo_con)
    data, _, _ = engine.load_dimension(demo_con, dim, models)
    post = model.fit_laplace(data, draws=200)
    warm = forecast.sampler_mixture(data, post, 0, 1, random_share=0.2)
    assert warm["how"].startswith("evidence") and 0 <= warm["a"] <= 0.8
    assert 0 < warm["ratio"] <= 1 / (1 - warm["a"]) + 1e-9
    none = forecast.sampler_mixture(data, post, 0, 1, random_share=1.0)  # a lead asked for all random
    assert none["a"] == 0.0 and none["ratio"] == pytest.approx(1.0)
