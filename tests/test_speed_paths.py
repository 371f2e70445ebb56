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


def test_model_cells_read_as_columns_equal_the_tuple_per_cell_reading(demo_con):
    from calib.data import cells

    cells.ensure_cells(demo_con)
    models = store.models(demo_con)
    for dim in store.get_settings(demo_con)["dimensions"]:
        for ms in (models, models[:1]):  # every model, and a subset (cells of other models dropped)
            data, _, f_pop = engine.load_dimension(demo_con, dim, ms)
            # the code it replaces: one Python tuple per cell
            mc = demo_con.execute("SELECT cell_id, model, segment, x, n, sum_f FROM model_cells WHERE dimension = ? "
                                  "ORDER BY cell_id", [dim]).fetchall()
            mi = {m: i for i, m in enumerate(ms)}
            si = {s: i for i, s in enumerate(sorted({r[2] for r in mc}))}
            keep = [r for r in mc if r[1] in mi]
            assert data.segments == sorted(si) and data.cell_x.dtype == float
            assert np.array_equal(data.cell_model, np.array([mi[r[1]] for r in keep], np.int64))
            assert np.array_equal(data.cell_segment, np.array([si[r[2]] for r in keep], np.int64))
            assert np.array_equal(data.cell_x, np.array([r[3] for r in keep], float).reshape(len(keep), len(data.judges)))
            assert np.array_equal(data.cell_n, np.array([r[4] for r in keep], np.int64))
            assert np.array_equal(data.cell_ids, np.array([r[0] for r in keep], np.int64))
            assert f_pop == {m: sum(r[5] for r in keep if r[1] == m) / max(1, sum(r[4] for r in keep if r[1] == m))
                             for m in ms}


def test_shrinkage_figure_arrays_hold_the_history_values():
    from calib.insight import plots

    rng = np.random.default_rng(2)
    hist = [{"dimension": "style", "n_labels": int(n), "fit_id": i, "mean": float(m), "lo": float(m - w), "hi": float(m + w)}
            for i, (n, m, w) in enumerate(zip(range(10, 2010), rng.normal(0, 0.05, 2000), rng.uniform(0.01, 0.2, 2000)))]
    fig = plots.shrinkage_figure(hist, "style")
    x = [h["n_labels"] for h in hist]
    assert list(fig.data[0].x) == x + x[::-1]
    assert list(fig.data[0].y) == [h["hi"] for h in hist] + [h["lo"] for h in hist][::-1]
    assert list(fig.data[1].x) == x and list(fig.data[1].y) == [h["mean"] for h in hist]
    assert list(fig.data[1].error_y.array) == [h["hi"] - h["mean"] for h in hist]
    assert list(fig.data[1].error_y.arrayminus) == [h["mean"] - h["lo"] for h in hist]
    empty = plots.shrinkage_figure([], "style")
    assert len(empty.data[0].x) == 0 and len(empty.data[1].x) == 0
