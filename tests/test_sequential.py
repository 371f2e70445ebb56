"""The anytime-valid sign-off (calib/stats/sequential.py): by simulation with a known truth."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from calib.errors import TiebreakError
from calib.stats import engine, sequential



def _bench():
    """bench/sequential_signoff.py, loaded by path: bench/ on sys.path would let bench/coverage.py
    shadow the `coverage` package numba imports (the NUTS tests on the same worker failed)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "sequential_signoff.py"
    spec = importlib.util.spec_from_file_location("tiebreak_bench_sequential_signoff", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _crossing_rate(factor, reps: int = 2000, steps: int = 1000, seed: int = 0) -> float:
    """Share of random walks of standardised observations (true mean 0, running sd plugged in) whose
    lower bound mean_n - factor(n) sd_n / sqrt(n) ever rises above the truth from n = 10 on."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((reps, steps)) * 0.3 + 0.0
    n = np.arange(1, steps + 1)
    mean = np.cumsum(x, 1) / n
    var = np.maximum(np.cumsum(x ** 2, 1) / n - mean ** 2, 1e-12) * n / np.maximum(n - 1, 1)
    f = np.array([factor(k) for k in n])
    lo = mean - f * np.sqrt(var / n)
    return float((lo[:, 9:] > 0).any(1).mean())


def test_the_confidence_sequence_keeps_its_level_under_continuous_monitoring_and_the_fixed_interval_does_not():
    """Known truth (mean 0): watched after every observation up to 1,000, the 95%
    confidence sequence's lower side is wrong at most 5% of the time; the fixed-n 95% bound several
    times that."""
    alpha = 0.05
    cs = _crossing_rate(lambda k: sequential.boundary_factor(k, alpha, target=100))
    fixed = _crossing_rate(lambda k: norm.ppf(1 - alpha))
    assert cs <= alpha  # 2,000 walks: sd of the rate ~0.005
    assert fixed >= 3 * alpha


def test_boundary_is_tightest_at_its_target_and_wider_than_the_fixed_interval():
    g = [sequential.boundary_factor(n, 0.05, target=100) for n in (20, 50, 100, 200, 1000)]
    assert min(g) == g[2] and all(x > norm.ppf(0.95) for x in g)
    assert 0.7 < sequential.watch_cost(100, 0.05, 100) < 1.0  # about 85% wider at the target


def test_decide_and_apply_keep_the_fixed_fields_and_hold_on_few_items():
    assert sequential.decide(-0.01, 0.03, -0.02) == "not worse"
    assert sequential.decide(-0.06, -0.03, -0.02) == "worse"
    assert sequential.decide(-0.03, 0.01, -0.02) == "label more"
    row = {"mean": 0.0, "sd": 0.005, "lo": -0.008, "hi": 0.008, "p_noninferior": 0.99, "decision": "not worse",
           "n_items": 1000}  # enough items for the null's variance floor (below 0.005) not to bind
    out = sequential.apply(dict(row), "anytime", 0.05, 100, -0.02, min_items=20)
    assert out["cs_lo"] < row["lo"] and out["cs_hi"] > row["hi"]
    assert out["decision"] == "not worse" and out["decision_fixed"] == "not worse"
    assert out["lo"] == row["lo"] and out["p_noninferior"] == row["p_noninferior"]
    # at the fixed interval's edge the sequence is still undecided
    edge = dict(row, sd=0.02 / 1.75)
    assert sequential.apply(dict(edge), "anytime", 0.05, 100, -0.02)["decision"] == "label more"
    assert sequential.apply(dict(edge), "fixed", 0.05, 100, -0.02)["decision"] == "not worse"
    few = dict(row, n_items=10, decision="label more")
    assert sequential.apply(few, "anytime", 0.05, 100, -0.02, min_items=20)["decision"] == "label more"
    # the sequence waits for MIN_ITEMS_ANYTIME (its variance estimate), the fixed rule only min_items
    early = dict(row, n_items=sequential.MIN_ITEMS_ANYTIME - 1)
    assert sequential.apply(dict(early), "anytime", 0.05, 100, -0.02, min_items=20)["decision"] == "label more"
    assert sequential.apply(dict(early), "fixed", 0.05, 100, -0.02, min_items=20)["decision"] == "not worse"
    with pytest.raises(TiebreakError, match="signoff_mode"):
        sequential.check_mode("anytim")


def test_design_estimate_watched_after_every_label_signs_off_wrongly_at_most_nominally_in_anytime_mode():
    """The product's design estimate on simulated projects whose true Delta is exactly -margin, a
    lead looking after every label: the anytime mode's wrong sign-offs stay near 5%, the fixed
    mode's are several times more; a truly fine candidate is still signed off."""
    bench = _bench()

    rows = bench.study(projects=60, n_items=400, margin=0.05, n_max=150, deltas=(-1.0, 1.0), seed=3)
    at, fine = rows
    assert at["anytime_every1_signoff"] <= 0.10  # 60 projects: 5% +- 2.8%
    assert at["fixed_every1_signoff"] >= at["anytime_every1_signoff"] + 0.1
    assert fine["anytime_every1_signoff"] >= 0.8
    assert fine["anytime_every1_median_n"] >= fine["fixed_every1_median_n"]  # the price of watching


def test_fit_records_the_mode_and_decides_by_the_sequence(demo_con):
    from calib.data import store
    from calib.review import simulate

    store.set_settings(demo_con, min_decision_items=20, margin=0.05)
    simulate.simulate_sme(demo_con, 50)
    fit = engine.fit_project(demo_con, "fast", record=False)
    assert fit["signoff_mode"] == "anytime" and "anytime-valid" in fit["signoff_words"]
    for d in fit["diffs"] + fit["preference"]:
        assert d["cs_lo"] < d["lo"] and d["cs_hi"] > d["hi"]  # the sequence is the wider
        null = -fit["margin"] if d in fit["diffs"] else 0.5 - fit["margin"]
        held = d["n_items"] < sequential.MIN_ITEMS_ANYTIME
        assert d["decision"] == ("label more" if held else sequential.decide(d["cs_lo"], d["cs_hi"], null))
        if d["decision"] != "label more":  # the sequence decides only where the fixed interval does too
            assert d["decision_fixed"] == d["decision"]
    extra = [25, 100, 400]
    chance = {}
    for mode in ("anytime", "fixed"):
        store.set_settings(demo_con, signoff_mode=mode)
        fc = engine.forecast_project(demo_con, extra)["forecasts"]
        chance[mode] = [s["p_decision"] for f in fc for s in f["steps"]]
    # the forecast knows the price: a decision is never likelier under the wider bound, and some less
    assert all(a <= f + 1e-12 for a, f in zip(chance["anytime"], chance["fixed"]))
    assert any(a < f - 0.01 for a, f in zip(chance["anytime"], chance["fixed"]))
    fixed = engine.fit_project(demo_con, "fast", record=False)
    assert fixed["signoff_mode"] == "fixed"
    assert all(d["decision"] == d["decision_fixed"] for d in fixed["diffs"])
    with pytest.raises(TiebreakError, match="signoff_mode"):
        store.set_settings(demo_con, signoff_mode="sometimes")  # refused, nothing written
    assert store.get_settings(demo_con)["signoff_mode"] == "fixed"
    demo_con.execute("INSERT OR REPLACE INTO settings VALUES ('signoff_mode', '\"sometimes\"')")  # written elsewhere
    with pytest.raises(TiebreakError, match="signoff_mode"):
        engine.fit_project(demo_con, "fast", record=False)


def test_decision_page_cli_and_report_say_which_interval_decides_and_what_watching_costs(tmp_path, monkeypatch):
    import contextlib
    import io

    from streamlit.testing.v1 import AppTest

    from calib import cli
    from calib.data import store
    from calib.insight import report
    from conftest import demo_db_file

    root = Path(__file__).resolve().parents[1]
    path = demo_db_file(tmp_path / "seq.duckdb", 200, seed=2, labels=40)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(root)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # the CLI records the fit the page then shows
        assert cli.main(["fit", "--fast", "--db", str(path)]) == 0
    out = buf.getvalue()
    assert "sign-off mode anytime" in out and "anytime-valid bound" in out and "price of watching" in out
    at = AppTest.from_file(str(root / "pages" / "2_Decision.py"), default_timeout=60)
    at.run()
    assert not at.exception
    captions = " ".join(c.value for c in at.caption).replace("\\", "")  # markdown escapes
    assert "anytime-valid" in captions and "price of watching" in captions and "anytime-valid bound" in captions
    con = store.connect(path)
    try:
        html = report.build_report(con, db_label=str(path))
        assert "Sign-off mode: <b>anytime</b>" in html and "Sign-off mode (anytime-valid or fixed-n)" in html
        store.set_settings(con, signoff_mode="fixed")
    finally:
        con.close()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["fit", "--fast", "--db", str(path)]) == 0
    assert "sign-off mode fixed" in buf.getvalue() and "ONE look" in buf.getvalue()
    assert "anytime-valid bound" not in buf.getvalue()


def _rare_regression_signoffs(floor: bool, reps: int = 1500, steps: int = 400, rate: float = 0.03,
                              seed: int = 1) -> float:
    """Known truth: a candidate that fails where the baseline passes on a share ``rate`` of the items
    and nowhere else (per-item difference -1 or 0, Delta = -rate, the margin ``rate``), labelled one
    item at a time; the share of projects whose anytime decision ever says "not worse" (wrong) with
    the plug-in variance (no floor) or floored at the null (the product's)."""
    rng = np.random.default_rng(seed)
    d = -(rng.random((reps, steps)) < rate).astype(float)
    n = np.arange(1, steps + 1)
    mean = np.cumsum(d, 1) / n
    var = np.maximum(np.cumsum(d ** 2, 1) / n - mean ** 2, 0.0) * n / np.maximum(n - 1, 1)
    sd = np.sqrt(var / n)
    if floor:
        sd = np.maximum(sd, np.array([sequential.floored_sd(0.0, k, -rate) for k in n]))
    lo = mean - sd * np.array([sequential.boundary_factor(k, 0.05, 100) for k in n])
    wrong = (lo[:, sequential.MIN_ITEMS_ANYTIME - 1:] > -rate).any(1)
    # the product's decision function agrees where it is called on one of these looks
    j, k = int(np.argmax(wrong)), sequential.MIN_ITEMS_ANYTIME
    assert (sequential.anytime_decision(mean[j, k - 1], np.sqrt(var[j, k - 1] / k), k, 0.05, 100, -rate,
                                        floor=floor) == "not worse") == bool(lo[j, k - 1] > -rate)
    return float(wrong.mean())


def test_rare_regressions_not_yet_drawn_do_not_sign_off_a_candidate_at_the_margin():
    """Pass rates near 100% (issue #23): the few items where the candidate regresses may not be
    among the first labels, and then the plug-in variance collapses while the mean looks fine. The
    sequence floored at the null's least variance keeps the wrong sign-offs at or below 5%; without
    the floor they are far above it."""
    assert sequential.null_variance(-0.03) == pytest.approx(0.03 * 0.47)
    assert sequential.null_variance(0.5 - 0.03) == pytest.approx(0.03 * 0.47)  # a win rate's null
    assert sequential.floored_sd(0.5, 100, -0.03) == 0.5  # only ever widens
    floored = _rare_regression_signoffs(floor=True)
    plain = _rare_regression_signoffs(floor=False)
    assert floored <= 0.05  # 1,500 projects: sd of the rate ~0.006
    assert plain >= 0.15


def test_design_estimate_at_pass_rates_near_one_signs_off_wrongly_at_most_nominally():
    """The bench's high-pass-rate scenario (rates ~0.93, margin 3 pp) at small scale, with the
    product's design estimate: true Delta at the margin, looks after every label."""
    bench = _bench()
    (at,) = bench.study(projects=60, n_items=400, margin=0.03, n_max=150, deltas=(-1.0,), seed=5, level=3.5)
    assert at["anytime_every1_signoff"] <= 0.10  # 60 projects: 5% +- 2.8%
    assert at["anytime_every1_signoff"] <= at["anytime_nofloor_every1_signoff"]
