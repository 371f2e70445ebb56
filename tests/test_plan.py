"""The budget planner (calib/insight/plan.py, `tiebreak plan`, the Decision page's panel): the
optimiser on known numbers, the cost model, the predicted width against simulation with a known
truth, the CLI and the page."""

from __future__ import annotations

import contextlib
import io
import json
import math
import pathlib
from datetime import datetime

import numpy as np
import pytest

from calib import cli
from calib.data import store
from calib.errors import TiebreakError
from calib.insight import plan
from calib.stats import crosscheck

ROOT = pathlib.Path(__file__).resolve().parent.parent
Z = crosscheck._z(0.95)


def q(s2_d=0.25, s2_e=0.05, cand="c", dim="d", n2_now=40, mean=0.0) -> plan.Quantity:
    return plan.Quantity(dim, cand, mean, 0.05, n2_now, s2_d, s2_e)


def costs(c_call=0.001, calls=10, label=1.0) -> plan.Costs:
    return plan.Costs(per_call={"j": c_call}, calls={"j": calls}, label_usd=label)


# --------------------------------------------------------------------------- the model and optimiser


def test_variance_limits():
    N, s2_d, s2_e = 1000, 0.3, 0.1
    # a census: only the residual term
    assert plan.two_phase_variance(N, 50, N, s2_d, s2_e) == pytest.approx((1 / 50 - 1 / N) * s2_e)
    # n1 = n2: the judges add nothing, human-only
    assert plan.two_phase_variance(50, 50, N, s2_d, s2_e) == pytest.approx(plan.human_only_variance(50, N, s2_d))
    # every item labelled: no sampling error
    assert plan.two_phase_variance(N, N, N, s2_d, s2_e) == 0.0
    assert plan.width_of(0.01, 2.0) == pytest.approx(0.4)


def test_budget_optimum_matches_the_closed_form():
    """N practically infinite, nothing bought: the grid finds the classical double-sampling
    optimum n2/n1 = sqrt(c1 S_e^2 / (c2 (S_d^2 - S_e^2)))."""
    c, qq, B = costs(c_call=0.002, calls=10), q(0.25, 0.05), 500.0  # c1 = 0.02, c2 = 1
    res = plan.optimise([qq], 10_000_000, c, budget=B, n1_done=0, done={"c": 0}, allow_no_judges=True)
    p = res["plan"]
    cf = plan.classical_optimum(B, c.item_usd, c.label_usd, qq.s2_d, qq.s2_e)
    assert cf["ratio"] == pytest.approx(math.sqrt(0.02 * 0.05 / (1 * 0.20)))
    assert p["judged"] and p["cost_usd"] <= B + 1e-9
    assert p["judged_items"] == pytest.approx(cf["judged_items"], rel=0.03)
    assert p["labelled_items"] == pytest.approx(cf["labelled_items"], rel=0.03)
    # and it is the best: the alternatives are no narrower for the same money
    assert p["width"] <= res["all_labels_no_judges"]["width"]
    assert res["judge_every_item"] is None  # 10M items do not fit in the budget
    assert any("more than the budget" in n for n in res["notes"])


def test_census_budget_buys_labels_only_and_sunk_costs_are_not_counted():
    """Every item already judged (a census, today's projects) and 40 labelled: a budget buys
    labels only; the totals count what is done, the cost only what is still to buy."""
    N = 3000
    res = plan.optimise([q(n2_now=40)], N, costs(label=2.0), budget=100.0, n1_done=N, done={"c": 40},
                        allow_no_judges=False)
    p = res["plan"]
    assert (p["judged_items"], p["judged_items_to_buy"], p["judge_calls_to_buy"]) == (N, 0, 0)
    assert (p["labelled_items"], p["labels_to_buy"]) == (90, 50)
    assert p["cost_usd"] == pytest.approx(100.0) and p["judge_cost_usd"] == 0
    assert p["judge_calls"] == N * 10  # the totals include the sunk calls
    assert p["width"] == pytest.approx(2 * Z * math.sqrt((1 / 90 - 1 / N) * 0.05))
    # several candidates: every candidate needs its own labels
    res2 = plan.optimise([q(cand="a"), q(cand="b", s2_e=0.08)], N, costs(label=2.0), budget=100.0, n1_done=N,
                         done={"a": 40, "b": 30}, allow_no_judges=False)
    p2 = res2["plan"]
    assert p2["labels_to_buy"] == (p2["labelled_items"] - 40) + (p2["labelled_items"] - 30) <= 50
    assert p2["binding"]["candidate"] == "b"  # the larger residual variance binds


def test_judges_worth_nothing_means_no_judges():
    """S_e^2 >= S_d^2: judging cannot help, and the plan is all labels."""
    res = plan.optimise([q(0.2, 0.2)], 100_000, costs(), budget=200.0, n1_done=0, done={"c": 0})
    assert res["plan"]["judged"] is False
    assert plan.classical_ratio(0.01, 1.0, 0.2, 0.2) is None


def test_target_width_is_the_inverse():
    N, qq = 5000, q(0.25, 0.05, n2_now=0)
    t = 0.06
    res = plan.optimise([qq], N, costs(), target_width=t, n1_done=N, done={"c": 0}, allow_no_judges=False)
    p = res["plan"]
    # census: the smallest n2 with (1/n2 - 1/N) S_e^2 <= (t / 2z)^2
    vt = (t / (2 * Z)) ** 2
    assert p["labelled_items"] == math.ceil(1 / (vt / qq.s2_e + 1 / N))
    assert p["width"] <= t < plan.width_of(plan.two_phase_variance(N, p["labelled_items"] - 1, N, 0.25, 0.05), Z)
    # from scratch: cheapest design, no dearer than either alternative, and it reaches the target
    r2 = plan.optimise([qq], N, costs(c_call=0.005), target_width=t, n1_done=0, done={"c": 0})
    assert r2["plan"]["width"] <= t * (1 + 1e-9)
    for alt in ("all_labels_no_judges", "judge_every_item"):
        assert r2["plan"]["cost_usd"] <= r2[alt]["cost_usd"] + 1e-9 and r2[alt]["width"] <= t * (1 + 1e-9)
    assert 0 < r2["plan"]["judged_items"] < N


def test_student_t_interval_as_the_design_estimator_uses():
    """With Kish's effective share, Tiebreak's interval is a Student-t (calib.stats.design.t_df):
    the inversion divides it out at today's n and the plan puts it back at the planned n."""
    from scipy import stats

    assert plan.interval_quantile(Z, 40, 1.0) == pytest.approx(stats.t.ppf(0.975, 39))
    assert plan.interval_quantile(Z, 40, 0.5) == pytest.approx(stats.t.ppf(0.975, 19))
    assert plan.interval_quantile(Z, 40, None) == Z
    N, s2_d, s2_e = 3000, 0.3, 0.06
    half = stats.t.ppf(0.975, 39) * math.sqrt(plan.two_phase_variance(N, 40, N, s2_d, s2_e))
    got = plan.invert_fit(half, Z * math.sqrt(s2_d / 40), 40, 40, N, N, Z, plan.interval_quantile(Z, 40, 1.0))
    assert got == pytest.approx((s2_d, s2_e))
    qq = plan.Quantity("d", "c", 0.0, 0.05, 0, s2_d, s2_e, keff=1.0)
    res = plan.optimise([qq], N, costs(), target_width=0.08, n1_done=N, done={"c": 0}, allow_no_judges=False)
    n2 = res["plan"]["labelled_items"]
    width = lambda k: 2 * stats.t.ppf(0.975, k - 1) * math.sqrt(plan.two_phase_variance(N, k, N, s2_d, s2_e))  # noqa: E731
    assert width(n2) <= 0.08 < width(n2 - 1)


def test_bad_goals_are_refused():
    with pytest.raises(TiebreakError, match="positive"):
        plan.optimise([q()], 100, costs(), budget=0.0)
    with pytest.raises(TiebreakError, match="one of them"):
        plan.optimise([q()], 100, costs())
    with pytest.raises(TiebreakError, match="buys nothing"):
        plan.optimise([q()], 100, costs(label=5.0), budget=1.0, n1_done=100, done={"c": 40}, allow_no_judges=False)


def test_inversion_recovers_the_variances():
    """The fit's half-widths back to S_d^2 and S_e^2 (census and two-phase)."""
    N, n2, s2_d, s2_e = 4000, 60, 0.3, 0.07
    h_half = Z * math.sqrt(s2_d / n2)  # human-only: no finite-population correction
    t_half = Z * math.sqrt(plan.two_phase_variance(N, n2, N, s2_d, s2_e))
    assert plan.invert_fit(t_half, h_half, n2, n2, N, N, Z) == pytest.approx((s2_d, s2_e))
    t2 = Z * math.sqrt(plan.two_phase_variance(800, n2, N, s2_d, s2_e))
    assert plan.invert_fit(t2, h_half, n2, n2, 800, N, Z) == pytest.approx((s2_d, s2_e))


def test_residual_variance_fades_with_labels():
    """S_e^2 at n2: today's at today's n2; the model error fades as n2_now / n2, the protections as
    (n2_now + 6) / (n2 + 6); nothing fades for a fit without the parts."""
    base = plan.Quantity("d", "c", 0.0, 0.05, 40, 0.25, 0.10)
    assert base.s2_e_at(40) == base.s2_e_at(400) == pytest.approx(0.10)
    qf = plan.Quantity("d", "c", 0.0, 0.05, 40, 0.25, 0.10, None, f_err=0.2, f_prot=0.1)
    assert qf.s2_e_at(40) == pytest.approx(0.10)
    assert qf.s2_e_at(80) == pytest.approx(0.10 * (0.7 + 0.2 * 0.5 + 0.1 * 46 / 86))
    assert qf.s2_e_at(10 ** 9) == pytest.approx(0.07, rel=1e-6)
    assert plan.fading_shares(None) == (0.0, 0.0)
    assert plan.fading_shares({"empirical": 8.0, "total": 10.0, "model_error": 2.0}) == pytest.approx((0.2, 0.2))
    # a model error larger than the residuals' own variance counts as all of it, never more
    assert plan.fading_shares({"empirical": 8.0, "total": 10.0, "model_error": 9.0}) == pytest.approx((0.8, 0.2))


def test_model_error_part_is_the_calibration_error():
    """Simulation with a known truth: residuals from predictions with a known error
    (p-hat = p + delta, var delta known per item) carry the error's variance; the design variance's
    "model_error" part is that share, and what is left is the variance with the true p."""
    from calib.stats import design

    rng = np.random.default_rng(3)
    got, want = [], []
    for _ in range(30):
        I, N = 400, 100_000
        p = rng.uniform(0.2, 0.8, size=(I, 2))
        y = (rng.random((I, 2)) < p).astype(float)
        sd_err = np.full((I, 2), 0.12)
        p_hat = p + sd_err * rng.normal(size=(I, 2))
        c_err = np.zeros((I, 2, 2))
        c_err[:, 0, 0], c_err[:, 1, 1] = sd_err[:, 0] ** 2, sd_err[:, 1] ** 2
        args = dict(N=np.full(2, float(N)), n_unl=np.full(2, float(N - I)), v_model=p * (1 - p),
                    present=np.ones((I, 2)), w=np.full(I, N / I))
        parts, true_parts = {}, {}
        design._domain_estimate(np.zeros(2), np.zeros(2), e=y - p_hat, parts=parts, c_err=c_err, **args)
        design._domain_estimate(np.zeros(2), np.zeros(2), e=y - p, parts=true_parts, **args)
        assert 0 <= parts["model_error"][0, 0] <= parts["empirical"][0, 0] <= parts["total"][0, 0] + 1e-15
        got.append(parts["empirical"][0, 0] - parts["model_error"][0, 0])
        want.append(true_parts["empirical"][0, 0])
    assert np.mean(got) / np.mean(want) == pytest.approx(1.0, abs=0.05)


# --------------------------------------------------------------------------- simulation with a known truth


def _population(N: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Items with the SME difference d = y_cand - y_base and a calibrated judge prediction
    f = E[d | judges] that explains about two thirds of its variance."""
    s = rng.normal(size=N)
    p_b = 1 / (1 + np.exp(-6 * s))
    p_c = 1 / (1 + np.exp(-6 * (s + 1.5 * rng.normal(size=N))))
    y_b, y_c = rng.random(N) < p_b, rng.random(N) < p_c
    return y_c.astype(float) - y_b.astype(float), p_c - p_b


def test_predicted_width_matches_the_obtained_width_census():
    """Plan from a pilot's two intervals (human-only and the calibrated, PPI-type difference
    estimator of calib.stats.crosscheck), label the planned n2, and compare: over 40 simulated
    projects the predicted width is the width the estimator then reports (a pilot of 200 knows
    a width to ~8%), and the estimator's true sampling spread."""
    rng = np.random.default_rng(7)
    N = 40_000
    d, f = _population(N, rng)
    ratios, estimates, predicted_all = [], [], []
    for _ in range(40):
        pilot = rng.choice(N, 200, replace=False)
        _, lo_h, hi_h = crosscheck.weighted_mean_interval(d[pilot], None, 0.95)
        ppi = crosscheck.ppi_mean_interval(d[pilot], f[pilot], f.mean(), None, 0.95, tune=False)
        s2_d, s2_e = plan.invert_fit((ppi["hi"] - ppi["lo"]) / 2, (hi_h - lo_h) / 2, 200, 200, N, N, Z)
        res = plan.optimise([q(s2_d, s2_e, n2_now=200)], N, costs(label=1.0), budget=300.0, n1_done=N,
                            done={"c": 200}, allow_no_judges=False)
        n2, predicted = res["plan"]["labelled_items"], res["plan"]["width"]
        assert n2 == 500
        more = rng.choice(np.setdiff1d(np.arange(N), pilot), n2 - 200, replace=False)
        s = np.concatenate([pilot, more])  # the pilot's labels and the ones bought
        r = crosscheck.ppi_mean_interval(d[s], f[s], f.mean(), None, 0.95, tune=False)
        ratios.append(predicted / (r["hi"] - r["lo"]))
        estimates.append(r["mean"])
        predicted_all.append(predicted)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)
    assert 0.8 < np.quantile(ratios, 0.1) and np.quantile(ratios, 0.9) < 1.2
    assert np.mean(predicted_all) / (2 * Z * np.std(estimates)) == pytest.approx(1.0, abs=0.15)


def test_predicted_width_matches_the_two_phase_spread():
    """A from-scratch plan that judges a sample (n1 < N): the estimate mean_n1(f) + mean_n2(d - f)
    over repeated two-phase samples has the spread the plan predicts."""
    rng = np.random.default_rng(11)
    N = 20_000
    d, f = _population(N, rng)
    s2_d, s2_e = d.var(ddof=1), (d - f).var(ddof=1)
    res = plan.optimise([q(s2_d, s2_e, n2_now=0)], N, costs(c_call=0.004, calls=10, label=1.0), budget=400.0,
                        n1_done=0, done={"c": 0})
    p = res["plan"]
    n1, n2 = p["judged_items"], p["labelled_items"]
    assert p["judged"] and 2 * n2 < n1 < N
    est = []
    for _ in range(1500):
        s1 = rng.choice(N, n1, replace=False)
        s2 = rng.choice(s1, n2, replace=False)
        est.append(crosscheck.ppi_mean_interval(d[s2], f[s2], f[s1].mean(), None, 0.95, tune=False)["mean"])
    assert p["width"] / (2 * Z * np.std(est)) == pytest.approx(1.0, abs=0.07)


# --------------------------------------------------------------------------- the cost model


def _call(con, judge, cost, status="ok", key=None, tin=500, tout=50):
    con.execute(
        """INSERT INTO judge_calls (call_key, task, judge, item_id, model, dimension, status, attempts,
                                    input_tokens, output_tokens, cost_usd, created_at)
           VALUES (?, 'score', ?, 'i', 'm', 'd', ?, 1, ?, ?, ?, ?)""",
        [key or f"{judge}-{cost}-{status}-{np.random.random()}", judge, status, tin, tout, cost, datetime.now()])


def test_price_map_and_batch_discount():
    import litellm

    info = litellm.get_model_info(model="gpt-4o-mini")
    assert plan.price_per_token("gpt-4o-mini", False) == (info["input_cost_per_token"], info["output_cost_per_token"])
    batch = plan.price_per_token("gpt-4o-mini", True)
    assert batch[0] == pytest.approx(info.get("input_cost_per_token_batches", info["input_cost_per_token"] * 0.5))
    assert batch[0] < info["input_cost_per_token"]
    assert plan.BATCH_DISCOUNT == 0.5
    with pytest.raises(TiebreakError, match="price map"):
        plan.price_per_token("no-such-model-xyz", False)


def test_measured_call_costs(con):
    """Measured mean cost per ok call; a failed call does not count; a call made in a provider
    batch is counted at its online price; --batch halves the online price."""
    _call(con, "a", 0.002)
    _call(con, "a", 0.004)
    _call(con, "a", 9.0, status="failed")
    _call(con, "b", 0.001, key="kb")  # made in a batch at half price: online 0.002
    con.execute("INSERT INTO judge_batch_calls VALUES (1, 'kb')")
    per, src = plan.judge_costs(con, {"a": 2, "b": 2}, batch=False)
    assert per == pytest.approx({"a": 0.003, "b": 0.002})
    per_b, _ = plan.judge_costs(con, {"a": 2, "b": 2}, batch=True)
    assert per_b == pytest.approx({"a": 0.0015, "b": 0.001})
    assert all("measured" in s for s in src)
    # a judge with no measured calls needs a price: refused, then priced from the map at its tokens
    with pytest.raises(TiebreakError, match="no price for judge"):
        plan.judge_costs(con, {"a": 2, "c": 1}, batch=False)
    pin, pout = plan.price_per_token("gpt-4o-mini", False)
    per_c, _ = plan.judge_costs(con, {"a": 2, "c": 1}, batch=False, judge_model="gpt-4o-mini",
                                judge_models={"c": "gpt-4o-mini"})
    assert per_c["c"] > 0 and per_c["a"] == pytest.approx(0.003)
    per_off, _ = plan.judge_costs(con, {"c": 1}, batch=False, judge_models={"c": None})
    assert per_off == {"c": 0.0}
    assert pin > 0 and pout > 0


def test_sme_label_cost_sources(con):
    s = store.get_settings(con)
    assert plan.sme_label_cost(con, s, 2.5)[0] == 2.5
    store.set_settings(con, sme_cost_per_label=1.75)
    assert plan.sme_label_cost(con, store.get_settings(con), None)[0] == 1.75
    store.set_settings(con, sme_cost_per_label=0.0, sme_hourly_usd=90.0)
    for ms in (30_000, 60_000, 120_000):  # median 60 s at $90/h: $1.50
        con.execute("""INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, source, duration_ms)
                       VALUES (?, 'm', 'd', true, 'a', now(), 'test', ?)""", [f"i{ms}", ms])
    cost, why = plan.sme_label_cost(con, store.get_settings(con), None)
    assert cost == pytest.approx(1.5) and "median rating time" in why
    with pytest.raises(TiebreakError, match="positive"):
        plan.sme_label_cost(con, s, 0.0)


# --------------------------------------------------------------------------- the project, the CLI, the page


@pytest.fixture(scope="module")
def fitted_db(tmp_path_factory):
    """A demo project with 40 items labelled by the simulated SME and a fast fit."""
    from calib.data import demo
    from calib.review import simulate
    from calib.stats import engine

    path = tmp_path_factory.mktemp("plan") / "p.duckdb"
    c = store.connect(path, create=True)
    demo.load_demo(c, 400, seed=4)
    simulate.simulate_sme(c, 40)
    engine.fit_project(c, "fast")
    c.close()
    return path


def _cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(args))
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def test_fit_records_delta_variance_parts_and_the_plan_fades_them(fitted_db):
    """The fit's Deltas carry their variance's pieces; the plan's residual variance at more labels
    is today's with the model error and protections faded (never above today's)."""
    from calib.stats import engine

    c = store.connect(fitted_db)
    try:
        fit = engine.latest_fit(c)
        for d in fit["diffs"]:
            vp = d["var_parts"]
            assert 0 <= vp["model_error"] <= vp["empirical"] + 1e-12 <= vp["total"] + 2e-12
        res = plan.plan_project(c, budget=80.0, sme_cost_per_label=1.0, judge_model="gpt-4o-mini")
    finally:
        c.close()
    by = {(x["dimension"], x["candidate"]): x for x in res["quantities"]}
    for w in res["plan"]["widths"]:
        qq = by[(w["dimension"], w["candidate"])]
        assert 0 < w["s2_e_planned"] <= qq["s2_e"] + 1e-15
        assert qq["f_err"] + qq["f_prot"] > 0


def test_cli_plan_json_keys(fitted_db):
    rc, out, err = _cli("plan", "--db", str(fitted_db), "--budget", "60", "--judge-model", "gpt-4o-mini", "--json")
    assert rc == 0, err
    res = json.loads(out)
    for key in ("plan", "all_labels_no_judges", "judge_every_item"):
        assert {"labels", "judge_calls", "judged_items", "cost_usd", "width"} <= set(res[key])
    p = res["plan"]
    assert p["judged_items"] == 400 and p["judge_calls_to_buy"] == 0  # a census: judging is sunk
    assert p["labels_to_buy"] > 0 and p["cost_usd"] <= 60
    assert res["costs"]["calls_per_judged_item"] == 2 * 3 * 3 + 2 * 1 * 1  # 2 models x 3 judges x 3 dims + 1 pair judge
    # the text output names the plan and both alternatives
    rc, out, _ = _cli("plan", "--db", str(fitted_db), "--target-width", "10", "--judge-model", "gpt-4o-mini",
                      "--from-scratch", "--batch", "--sme-cost-per-label", "2")
    assert rc == 0 and "PLAN:" in out and "all labels, no judges" in out and "judge every item" in out


@pytest.mark.parametrize("args, words", [
    (["--budget", "0"], "--budget 0: give a positive amount"),
    (["--budget", "-5"], "positive amount"),
    (["--target-width", "0"], "positive width"),
    (["--budget", "10", "--sme-cost-per-label", "-1"], "--sme-cost-per-label"),
])
def test_cli_bad_values_one_line(fitted_db, args, words):
    rc, out, err = _cli("plan", "--db", str(fitted_db), "--judge-model", "gpt-4o-mini", *args)
    assert rc == 2 and out == "" and words in err and err.count("\n") == 1


def test_cli_refuses_to_plan_before_a_fit(tmp_path):
    from calib.data import demo

    path = tmp_path / "nofit.duckdb"
    c = store.connect(path, create=True)
    demo.load_demo(c, 60, seed=1)
    c.close()
    rc, out, err = _cli("plan", "--db", str(path), "--budget", "50", "--judge-model", "gpt-4o-mini")
    assert rc == 2 and "no fit with labels yet" in err and err.count("\n") == 1


def test_decision_page_plan_panel(fitted_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TIEBREAK_DB", str(fitted_db))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    at.number_input(key="decision_plan_budget").set_value(50.0)
    at.button(key="decision_plan_go").click()
    at.run()
    assert not at.exception, at.exception
    frames = [df for df in (e.value for e in at.dataframe) if "Design" in df.columns]
    assert frames, "no plan table"
    assert list(frames[0]["Design"]) == ["Plan", "All labels, no judges", "Judge every item"]
    assert any("still to buy" in c.value for c in at.caption)


def test_decision_page_plan_panel_shows_hostile_names_as_text(tmp_path, monkeypatch):
    """Dimension, candidate and judge names from the data reach the panel's table and captions
    as text only (tests/hostile.py's audit)."""
    import sys

    from streamlit.testing.v1 import AppTest

    from calib.stats import engine

    sys.path.insert(0, str(ROOT / "tests"))
    import hostile

    path = tmp_path / "hostile.duckdb"
    hostile.build(path, port=9)
    c = store.connect(path)
    engine.fit_project(c, "fast")
    c.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=120)
    at.session_state["auth_user"], at.session_state["auth_role"] = "adm", "admin"
    at.run()
    at.number_input(key="decision_plan_sme").set_value(1.0)
    at.button(key="decision_plan_go").click()
    at.run()
    assert not at.exception, at.exception
    shown = [df for df in (e.value for e in at.dataframe) if "Design" in df.columns]
    assert shown or any("too few" in i.value for i in at.info)
    assert hostile.audit(at) == []


def test_pairwise_only_project_plans_its_win_rate(tmp_path):
    """A pairwise-only project (50 real PandaLM comparisons, tests/data) plans its win rate: the
    quantity inverts back to today's interval at today's pairs, and the plan names it."""
    import sys

    import pandas as pd

    from calib.data import ingest
    from calib.stats import engine

    sys.path.insert(0, str(ROOT / "tests"))
    import test_pairwise_only as tpo

    panda = pd.read_json(tpo.PANDA, lines=True)
    panda = panda[(panda.model_1 == "bloom-7b") & (panda.model_2 == "llama-7b")].assign(
        item_id=lambda d: "p" + d.idx.astype(str))
    c = store.connect(tmp_path / "p.duckdb", create=True)
    try:
        tpo._project(c, panda, tmp_path)
        lab = panda.head(30)
        pd.DataFrame({"item_id": lab.item_id, "baseline": "bloom-7b", "candidate": "llama-7b", "dimension": "overall",
                      "preference": lab.human_majority.map(tpo.PREF), "annotator": "h"}).to_csv(tmp_path / "l.csv",
                                                                                                   index=False)
        ingest.import_labels(c, tmp_path / "l.csv")
        fit = engine.fit_project(c, "fast")
        (pref,) = fit["preference"]
        assert pref["var_parts"]["total"] >= pref["var_parts"]["empirical"] >= pref["var_parts"]["model_error"] >= 0
        res = plan.plan_project(c, budget=20.0, sme_cost_per_label=1.0, judge_cost_per_call=0.001)
    finally:
        c.close()
    (qq,) = res["quantities"]
    assert qq["estimand"] == "win rate" and qq["mean"] == pytest.approx(pref["mean"] - 0.5)
    N = res["population_items"]
    t = plan.interval_quantile(Z, qq["n2_now"], qq["keff"])
    again = plan.width_of(plan.two_phase_variance(N, qq["n2_now"], N, qq["s2_d"], qq["s2_e"]), t)
    assert again == pytest.approx(pref["hi"] - pref["lo"], rel=1e-6)
    p = res["plan"]
    assert p["binding"] == {"dimension": "overall", "candidate": "llama-7b", "estimand": "win rate"}
    assert p["labelled_items"] == 50 and p["width"] < pref["hi"] - pref["lo"]  # every pair compared: narrower
    assert plan.plan_rows(res)[0]["Binding quantity"] == "overall (llama-7b), win rate"
