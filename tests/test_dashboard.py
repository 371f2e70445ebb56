"""The lead dashboard's computations: judge and annotator diagnostics, sign-off, live refits, demo
simulator, replay and the HTML report (no browser)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from calib import cli
from calib.data import demo, store
from calib.stats import engine
from calib.review import simulate
from calib.insight import annotators, dashboard, diagnostics, report


def _label_truth(con, n_items: int, offset: int = 0, annotator: str = "sim") -> None:
    con.execute(f"""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
                   SELECT item_id, model, dimension, verdict, kind, '{annotator}', current_timestamp, 'test'
                   FROM sim_truth WHERE item_id IN (SELECT item_id FROM items ORDER BY item_id
                                                    LIMIT {n_items} OFFSET {offset})""")


# --------------------------------------------------------------------------- agreement statistics


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, nominal alpha = 0.743
    units = [[1, 1, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4], [4, 4, 4, 4],
             [1, 1, 2, 1], [2, 2, 2, 2], [5, 5, 5], [1, 1], [3]]
    assert annotators.krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_by_simulation():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.6
    same = [[bool(t), bool(t)] for t in truth]
    independent = [[bool(rng.random() < 0.6), bool(rng.random() < 0.6)] for _ in truth]
    noisy = [[bool(t ^ (rng.random() < 0.1)), bool(t ^ (rng.random() < 0.1))] for t in truth]
    assert annotators.krippendorff_alpha_nominal(same) == 1.0
    assert abs(annotators.krippendorff_alpha_nominal(independent)) < 0.12
    # 10% flips each: agreement 0.82; chance agreement ~0.50 -> alpha ~0.64
    assert 0.5 < annotators.krippendorff_alpha_nominal(noisy) < 0.78


def test_cohen_kappa():
    assert diagnostics.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert diagnostics.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0


def test_judge_bias_toward_the_candidate_is_found(demo_con):
    """The demo's lenient judge is lenient toward the candidate only: its bias differs between the
    models, and its kappa interval covers its point estimate."""
    _label_truth(demo_con, 250)
    bias = diagnostics.judge_bias_by_model(demo_con)
    lenient = [b for b in bias if b["judge"] == "judge-lenient"]
    assert lenient and any(b["differs"] and b["bias_difference"] > 0 for b in lenient)
    agree = diagnostics.judge_agreement(demo_con)
    assert agree and all(a["kappa_lo"] <= a["kappa"] <= a["kappa_hi"] for a in agree)
    assert all(a["n"] == a["judge_pass_sme_pass"] + a["judge_pass_sme_fail"] + a["judge_fail_sme_pass"]
               + a["judge_fail_sme_fail"] for a in agree)
    curve = diagnostics.calibration_curve(demo_con, "judge-strict", "correctness")
    assert curve and all(0 <= c["lo"] <= c["sme_pass_rate"] <= c["hi"] <= 1 for c in curve)
    binary = diagnostics.calibration_curve(demo_con, "judge-lenient", "correctness")  # a pass/fail judge
    assert sorted({(c["model"], c["score_mean"]) for c in binary}) == sorted(
        {(m, v) for m in demo.MODELS for v in (0.0, 1.0)})  # one point per score it gives, per model
    assert curve[0]["model"] == demo.BASELINE and curve[0]["role"] == "baseline"  # the baseline's line first
    dis = diagnostics.judge_disagreement(demo_con)
    assert dis and all(0 <= d["disagree_share"] <= 1 for d in dis)
    assert {d["model"] for d in dis} == set(demo.MODELS)  # per model
    assert {d["role"] for d in dis if d["model"] == demo.BASELINE} == {"baseline"}


def test_annotator_position_bias_throughput_and_drift(demo_con):
    from calib.review import queue

    queue.refill(demo_con, 60, seed=1)
    # a left-biased SME: always prefers the answer on the left
    for i in range(30):
        lease = queue.next_item(demo_con, "lefty")
        left = ("support-legacy-v1", "support-nova-v2")[i % 2]  # sides alternate ...
        pref = "baseline" if left == "support-legacy-v1" else "candidate"  # ... and the left one always wins
        queue.submit(demo_con, lease.lease_id, "lefty", {(left, "correctness"): (True, None)}, preference=pref,
                     duration_ms=30_000, left_model=left)
    bias = {b["annotator"]: b for b in annotators.position_bias(demo_con)}
    assert bias["lefty"]["left_rate"] == 1.0 and bias["lefty"]["biased"]
    thr = {t["annotator"]: t for t in annotators.throughput(demo_con)}
    assert thr["lefty"]["items"] == thr["lefty"]["units"] == 30 and thr["lefty"]["median_s"] == pytest.approx(30.0)
    assert thr["lefty"]["units_per_hour"] == pytest.approx(120.0)
    assert annotators.drift(demo_con)


def test_agreement_from_overlapping_labels(demo_con):
    _label_truth(demo_con, 40, annotator="a")
    _label_truth(demo_con, 40, annotator="b")  # the same truth twice: perfect agreement
    rows = {r["dimension"]: r for r in annotators.agreement(demo_con)}
    assert rows["correctness"]["units"] == 80 and rows["correctness"]["alpha"] == 1.0


# --------------------------------------------------------------------------- sign-off and live refits


def _fit(decisions):
    return {"margin": 0.02, "diffs": [{"dimension": f"d{i}", "mean": 0.0, "lo": -0.01, "hi": 0.01, "p_noninferior": 0.99,
                                       "decision": d} for i, d in enumerate(decisions)]}


def test_signoff_rules():
    cmp = [{"model": "old", "role": "baseline", "latency_p95_ms": 900.0, "cost_per_1k_usd": 2.0},
           {"model": "new", "role": "candidate", "latency_p95_ms": 1200.0, "cost_per_1k_usd": 1.0}]
    assert dashboard.signoff(_fit(["not worse", "not worse"]), cmp, {})["recommendation"] == "sign off"
    assert dashboard.signoff(_fit(["not worse", "label more"]), cmp, {})["recommendation"] == "label more"
    assert dashboard.signoff(_fit(["worse", "label more"]), cmp, {})["recommendation"] == "do not sign off"
    slow = dashboard.signoff(_fit(["not worse"]), cmp, {"signoff_max_p95_latency_ms": 1000.0})
    assert slow["recommendation"] == "do not sign off" and "latency" in slow["blockers"][0]
    cheap = dashboard.signoff(_fit(["not worse"]), cmp, {"signoff_max_cost_per_1k_usd": 1.5})
    assert cheap["recommendation"] == "sign off"


def test_refresh_refits_only_when_labels_arrive(demo_con):
    assert dashboard.refit_due(demo_con)
    _label_truth(demo_con, 30)
    f1 = dashboard.refresh(demo_con)
    assert f1["kind"] == "fast" and f1["forecasts"] and not dashboard.refit_due(demo_con)
    assert dashboard.refresh(demo_con) == engine.latest_fit(demo_con)
    _label_truth(demo_con, 1, offset=30)
    assert dashboard.refit_due(demo_con)
    assert dashboard.refresh(demo_con)["n_labels"] == f1["n_labels"] + 1


def test_model_comparison_has_latency_and_cost(demo_con):
    rows = dashboard.model_comparison(demo_con, None)
    assert [r["role"] for r in rows] == ["baseline", "candidate"]
    for r in rows:
        assert r["latency_p50_ms"] <= r["latency_p95_ms"] and r["cost_per_1k_usd"] > 0
    _label_truth(demo_con, 30)
    fit = engine.fit_project(demo_con, "fast", record=False)
    with_rates = dashboard.with_pass_rates(rows, fit)
    rate = next(x for x in fit["rates"] if x["model"] == rows[1]["model"] and x["dimension"] == "style"
                and x["segment"] is None)
    assert with_rates[1]["pass_style"] == rate["mean"] and with_rates[1]["latency_p95_ms"] == rows[1]["latency_p95_ms"]
    assert "pass_style" not in rows[1]  # the cached stats are not modified


def test_background_fit_records_and_never_blocks(demo_con, monkeypatch):
    from calib.stats import model

    _label_truth(demo_con, 30)
    monkeypatch.setattr(model, "fit_nuts", lambda data, draws=600, seed=0: (time.sleep(0.3), model.fit_laplace(data, 300, seed))[1])
    t = time.perf_counter()
    run = dashboard.BackgroundFit(demo_con, "nuts")
    assert time.perf_counter() - t < 0.2 and run.running
    while run.running:
        time.sleep(0.05)
    assert run.error is None and engine.latest_fit(demo_con, kind="nuts")["n_labels"] == 30


# --------------------------------------------------------------------------- demo mode and replay


def test_simulated_sme_labels_through_the_queue_with_the_truth(demo_con):
    n = simulate.simulate_sme(demo_con, 25)
    assert n == 25
    rows = demo_con.execute("""SELECT count(*), count(*) FILTER (WHERE l.verdict = t.verdict)
                               FROM labels l JOIN sim_truth t USING (item_id, model, dimension)
                               WHERE l.source = 'demo'""").fetchone()
    assert rows[0] == 25 * 2 * 3 and rows[1] == rows[0]
    assert demo_con.execute("SELECT count(*) FROM leases WHERE outcome = 'labelled'").fetchone()[0] == 25
    assert demo_con.execute("SELECT count(*) FROM pair_labels WHERE source = 'demo'").fetchone()[0] == 25


def test_simulate_needs_truth(con):
    with pytest.raises(Exception, match="hidden truth"):
        simulate.simulate_sme(con, 1)


def test_replay_shrinks_the_interval(demo_con):
    simulate.simulate_sme(demo_con, 120)
    rows = simulate.replay(demo_con, points=5)
    for dim in ("correctness", "refusal", "style"):
        r = sorted((x for x in rows if x["dimension"] == dim), key=lambda x: x["step"])
        assert [x["n_labels"] for x in r] == sorted(x["n_labels"] for x in r) and r[-1]["n_labels"] == 120
        assert r[-1]["hi"] - r[-1]["lo"] < r[0]["hi"] - r[0]["lo"]
    assert demo_con.execute("SELECT count(*) FROM fits").fetchone()[0] == 0  # replays are not recorded


# --------------------------------------------------------------------------- report


def test_report_has_every_dimension_decision_and_is_self_contained(demo_con):
    _label_truth(demo_con, 60)
    fit = engine.fit_project(demo_con, "fast")
    html = report.build_report(demo_con, fit, db_label="<demo & db>")
    for d in fit["diffs"]:
        assert f"<b>{d['dimension']}</b>" in html and d["decision"].upper() in html
    assert "&lt;demo &amp; db&gt;" in html and "<demo & db>" not in html  # escaped
    # plotly.js is inlined: no script, stylesheet or image is loaded from the network
    assert "<script src=" not in html and "<link" not in html and 'src="http' not in html
    assert report.data_fingerprint(demo_con) in html


def test_cli_report(tmp_path, capsys):
    from calib.data import demo

    db = tmp_path / "r.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 150, seed=4)
    simulate.simulate_sme(con, 30)
    con.close()
    out = tmp_path / "report.html"
    assert cli.main(["report", "--db", str(db), "--out", str(out)]) == 0
    text = out.read_text()
    assert all(dim in text for dim in ("correctness", "refusal", "style")) and "Recommendation" in text
    assert cli.main(["simulate", "--db", str(db), "--items", "5", "--fit"]) == 0
    assert "5 items labelled" in capsys.readouterr().out


def test_report_shows_hostile_names_as_text(tmp_path):
    """Names and texts that are markdown/HTML/bidi appear escaped in the report's tables, cards and
    plots: no tag, link or image from the data, bidi overrides visible."""
    import pathlib
    import re
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import hostile

    path = tmp_path / "hostile.duckdb"
    hostile.build(path, port=9)
    con = store.connect(path)
    fit = engine.fit_project(con, "fast")
    html = report.build_report(con, fit, db_label=hostile.payload("db", 9))
    con.close()
    # plotly.js is inlined once; outside it, nothing from the data is a tag
    data_part = re.sub(r"<script>/\*\*.*?</script>", "", html, flags=re.S)
    assert len(data_part) < len(html) / 4  # the plotly bundle was cut out
    for marker in ("<img", "<a href", "<b>b</b>", "<script>alert", "\u202e", "127.0.0.1:9/pixel\"", 'src="http'):
        assert marker not in data_part, marker
    assert "&lt;img src=http://127.0.0.1:9/img-base.png" in data_part and "[U+202E]" in data_part


def test_one_nuts_fit_per_database_however_many_sessions_press_run(demo_con, monkeypatch):
    """Four sessions pressing "Run NUTS" at once start one background fit; a direct second NUTS fit
    while it runs is refused (not queued); after it ends a new one can start."""
    from calib.stats import model

    _label_truth(demo_con, 30)
    release, entered = threading.Event(), threading.Event()

    def slow_nuts(data, draws=600, seed=0):
        entered.set()
        release.wait(5)
        return model.fit_laplace(data, 300, seed)

    monkeypatch.setattr(model, "fit_nuts", slow_nuts)
    started, barrier = [], threading.Barrier(4)

    def press():
        barrier.wait()
        started.append(dashboard.start_nuts(demo_con))  # as the page: the process's shared connection

    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(new for _, new in started) == 1 and len({id(run) for run, _ in started}) == 1
    assert dashboard.nuts_run(demo_con.cursor()) is started[0][0]
    assert entered.wait(10)  # the background fit is sampling (it holds the database's NUTS lock)
    with pytest.raises(engine.FitRunning):
        engine.fit_project(demo_con.cursor(), "nuts")
    release.set()
    run = started[0][0]
    while run.running:
        time.sleep(0.02)
    assert run.error is None
    assert demo_con.execute("SELECT count(*) FROM fits WHERE kind = 'nuts'").fetchone()[0] == 1
    again, new = dashboard.start_nuts(demo_con.cursor())
    assert new and again is not run
    while again.running:
        time.sleep(0.02)
