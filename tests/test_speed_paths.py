"""The live refit's fast paths (issue #12, item 5) compute what the plain code they replace did:
each is checked against that plain code on seeded inputs (invariants, not snapshot numbers)."""

from __future__ import annotations

import json

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_info

from calib.data import store
from calib.stats import engine, model


def test_expit_fast_is_scipy_expit_up_to_round_off():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = np.concatenate([rng.normal(0, 4, 20_000), [-1e4, -120.0, -88.0, -30.0, 0.0, 1e-9, 30.0, 88.0, 1e4]]).astype(dtype)
        got, want = model.expit_fast(x), expit(x)
        assert got.dtype == dtype and got.shape == x.shape and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=3 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)
        assert np.array_equal(x, x.astype(dtype))  # the input is left as it was
    assert model.expit_fast(np.array([-1e4], np.float32))[0] == 0.0 and model.expit_fast(np.array([1e4]))[0] == 1.0


def test_importance_log_likelihood_as_matrix_products_is_the_elementwise_sum():
    rng = np.random.default_rng(1)
    eta = rng.normal(0, 6, (300, 500))
    eta[0, :5] = [-800.0, -40.0, 0.0, 40.0, 800.0]
    k = rng.integers(0, 4, 500).astype(float)
    n = k + rng.integers(0, 4, 500)
    want = (k * eta).sum(1) - (n * np.logaddexp(0.0, eta)).sum(1)
    soft = model._softplus_inplace(eta.copy())
    np.testing.assert_allclose(soft, np.logaddexp(0.0, eta), rtol=1e-15, atol=0)
    np.testing.assert_allclose(eta @ k - soft @ n, want, rtol=1e-12)


def _fit_json(dims: list[str], shift: float) -> str:
    return json.dumps({"diffs": [{"dimension": d, "candidate": "cand", "mean": shift + i, "lo": shift - 1, "hi": shift + 1,
                                  "p_noninferior": 0.5, "decision": "label more"} for i, d in enumerate(dims)]})


def _add_fit(con, n_labels: int, result: str) -> None:
    con.execute("INSERT INTO fits (created_at, kind, n_labels, seconds, result) VALUES (current_timestamp, 'fast', ?, ?, ?)",
                [n_labels, 0.1 + n_labels / 1000, result])


def _history_uncached(con) -> list[dict]:
    """fits_history as it was: every fit's JSON parsed on every call."""
    out = []
    for fid, at, kind, n, secs, res in con.execute(
            "SELECT fit_id, created_at, kind, n_labels, seconds, result FROM fits ORDER BY fit_id").fetchall():
        for d in json.loads(res)["diffs"]:
            out.append({"fit_id": fid, "created_at": at, "kind": kind, "n_labels": n, "seconds": secs,
                        **{k: d[k] for k in ("dimension", "candidate", "mean", "lo", "hi", "p_noninferior", "decision")}})
    return out


def test_fits_history_reads_each_fit_once_and_equals_parsing_them_all(tmp_path):
    a, b = store.connect(tmp_path / "a.duckdb"), store.connect(tmp_path / "b.duckdb")
    for i in range(5):
        _add_fit(a, 10 * i, _fit_json(["correctness", "style"], i / 10))
        _add_fit(b, 10 * i, _fit_json(["refusal"], -i / 10))  # the same fit ids in another database
    assert engine.fits_history(a) == _history_uncached(a) and len(_history_uncached(a)) == 10
    assert engine.fits_history(b) == _history_uncached(b)
    first = engine.fits_history(a)
    first[0]["mean"] = 99.0  # a caller changing its rows changes nobody else's
    _add_fit(a, 60, _fit_json(["correctness", "style"], 0.7))
    assert engine.fits_history(a) == _history_uncached(a) and len(engine.fits_history(a)) == 12
    assert engine.fits_history(b) == _history_uncached(b)
    a.close()
    b.close()


def test_a_fit_runs_blas_on_one_thread_and_restores_it(demo_con, monkeypatch):
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    seen = []
    laplace = model.fit_laplace

    def spy(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return laplace(*args, **kwargs)

    monkeypatch.setattr(model, "fit_laplace", spy)
    engine.fit_project(demo_con, "fast", record=False)
    assert seen and all(s == {1} for s in seen)
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == before
