"""Several candidates: the unit of SME work is (item, candidate); the sampler spends labels across
candidates; the fit gives every candidate its decision (Bonferroni across candidates) and p_best.
Statistics by simulation with the demo's hidden truth, never by snapshot numbers."""

from __future__ import annotations

import json
import pathlib
import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from calib.data import demo, store
from calib.review import labelling, queue, simulate, users
from calib.stats import engine
from calib.errors import TiebreakError

ROOT = pathlib.Path(__file__).resolve().parent.parent
LABEL = str(ROOT / "pages" / "1_Label.py")
CANDS = demo.ALL_CANDIDATES
SHORT_NAMES = ["legacy", "nova", "lite", "orion"]  # the distinctive part of each model name


@pytest.fixture
def con3(tmp_path):
    c = store.connect(tmp_path / "multi.duckdb")
    demo.load_demo(c, 400, seed=2, candidates=3)
    yield c
    c.close()


def _verdicts(con, item_id, models):
    truth = con.execute("SELECT model, dimension, verdict, kind FROM sim_truth WHERE item_id = ?", [item_id]).fetchall()
    return {(m, d): (bool(v), k) for m, d, v, k in truth if m in models}


def _queue_unit(con, item_id, cand, batch=None):
    queue._insert_queue(con, pd.DataFrame({
        "item_id": [item_id], "candidate": [cand], "inclusion_prob": [0.5], "policy": ["test"], "reason": ["test"],
        "priority": [0.0], "batch_id": [batch or queue._next_batch_id(con)], "overlap": [False]}))


def test_demo_makes_three_candidates_and_keeps_the_default(con3):
    assert store.get_settings(con3)["candidates"] == CANDS
    assert store.models(con3) == [demo.BASELINE, *CANDS]
    one = demo.generate(50, seed=4)
    three = demo.generate(50, seed=4, candidates=3)
    assert set(one.outputs["model"]) == set(demo.MODELS)
    # the first candidate's data do not depend on how many candidates are made
    a = one.outputs.set_index(["item_id", "model"]).sort_index()
    b = three.outputs[three.outputs["model"].isin(demo.MODELS)].set_index(["item_id", "model"]).sort_index()
    pd.testing.assert_frame_equal(a, b)
    # the cheap candidate is truly worse on refusal, the better one is not worse anywhere
    t = three.truth.groupby(["model", "dimension"])["verdict"].mean()
    assert t[(demo.CANDIDATE_LITE, "refusal")] < t[(demo.BASELINE, "refusal")] - 0.08
    assert all(t[(demo.CANDIDATE_ORION, d)] > t[(demo.BASELINE, d)] for d in demo.DIMENSIONS)
    assert set(three.truth_pairs["candidate"]) == set(CANDS)


def test_units_queue_every_candidate_and_submit_writes_one_preference_for_the_served_one(con3):
    b = queue.refill(con3, 60, seed=1)
    assert b.eligible == 3 * 400  # every (item, candidate)
    per_cand = dict(con3.execute("SELECT candidate, count(*) FROM queue GROUP BY 1").fetchall())
    assert set(per_cand) == set(CANDS)
    lease = queue.next_item(con3, "ana")
    assert lease.candidate in CANDS
    pair = [demo.BASELINE, lease.candidate]
    other = next(c for c in CANDS if c != lease.candidate)
    with pytest.raises(TiebreakError, match="not shown"):
        queue.submit(con3, lease.lease_id, "ana", _verdicts(con3, lease.item_id, [*pair, other]), preference="tie")
    n = queue.submit(con3, lease.lease_id, "ana", _verdicts(con3, lease.item_id, pair), preference="candidate")
    assert n == 6
    prefs = con3.execute("SELECT baseline, candidate, preference FROM pair_labels").fetchall()
    assert prefs == [(demo.BASELINE, lease.candidate, "candidate")]
    assert {m for (m,) in con3.execute("SELECT DISTINCT model FROM labels").fetchall()} == set(pair)
    assert con3.execute("SELECT n_done FROM queue WHERE item_id = ? AND candidate = ?",
                        [lease.item_id, lease.candidate]).fetchone()[0] == 1


def test_an_item_labelled_for_one_candidate_is_still_eligible_for_another(con3):
    item = "q0000007"
    c1, c2 = CANDS[0], CANDS[1]
    _queue_unit(con3, item, c1)
    lease = queue.next_item(con3, "ana")
    assert (lease.item_id, lease.candidate) == (item, c1)
    queue.submit(con3, lease.lease_id, "ana", _verdicts(con3, item, [demo.BASELINE, c1]), preference="tie")
    units = queue.unit_priorities(con3)
    got = {(i, c) for i, c in zip(units.item_id, units.candidate) if i == item}
    assert got == {(item, c2), (item, CANDS[2])}
    _queue_unit(con3, item, c2)
    lease2 = queue.next_item(con3, "ana")  # the same SME may rate the item again against another candidate
    assert (lease2.item_id, lease2.candidate) == (item, c2)
    n_base = con3.execute("SELECT count(*) FROM labels WHERE model = ?", [demo.BASELINE]).fetchone()[0]
    written = queue.submit(con3, lease2.lease_id, "ana", _verdicts(con3, item, [demo.BASELINE, c2]), preference="baseline")
    # the baseline's identical verdicts are not written again; the new candidate's are
    assert written == 3
    assert con3.execute("SELECT count(*) FROM labels WHERE model = ?", [demo.BASELINE]).fetchone()[0] == n_base
    assert con3.execute("SELECT count(*) FROM labels WHERE model = ?", [c2]).fetchone()[0] == 3
    assert sorted(con3.execute("SELECT candidate FROM pair_labels").fetchall()) == sorted([(c1,), (c2,)])
    # a different verdict on the baseline is a new row (the newest counts)
    _queue_unit(con3, item, CANDS[2])
    lease3 = queue.next_item(con3, "ana")
    flipped = {k: ((not v[0]) if k[0] == demo.BASELINE and k[1] == "style" else v[0], v[1])
               for k, v in _verdicts(con3, item, [demo.BASELINE, CANDS[2]]).items()}
    assert queue.submit(con3, lease3.lease_id, "ana", flipped, preference="tie") == 4


def test_sides_are_random_per_item_candidate_and_sme():
    orders = {(c, labelling.blind_order(f"q{i:07d}", "ana", [demo.BASELINE, c])[0] == demo.BASELINE)
              for i in range(30) for c in CANDS}
    assert orders == {(c, s) for c in CANDS for s in (True, False)}
    same = [labelling.blind_order(f"q{i:07d}", "ana", [demo.BASELINE, CANDS[0]])[0] == demo.BASELINE
            for i in range(200)]
    other = [labelling.blind_order(f"q{i:07d}", "ana", [demo.BASELINE, CANDS[1]])[0] == demo.BASELINE
             for i in range(200)]
    assert 0.3 < np.mean(np.array(same) == np.array(other)) < 0.7  # not the same order for every candidate


def _rendered_text(at) -> str:
    """Every string the page sent to the browser (all elements' protos)."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at._tree)
    return "\n".join(out)


def test_smes_never_see_model_names(tmp_path, monkeypatch):
    path = tmp_path / "label3.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 120, seed=5, candidates=3)
    users.add_user(con, "ana", "sme", "password-ana")
    queue.refill(con, 40, seed=3)
    # the labelling API's output for every queued unit: no model name in anything the page prints
    for item, cand in con.execute("SELECT item_id, candidate FROM queue").fetchall():
        v = labelling.item_view(con, item, "ana", candidate=cand)
        shown = " ".join(str(x) for x in (v.item_id, v.segment, v.prompt, v.context, v.reference,
                                           v.left_output, v.right_output))
        assert {v.left_model, v.right_model} == {demo.BASELINE, cand}
        assert not any(m.lower() in shown.lower() for m in store.models(con))
        assert not any(re.search(rf"\b{w}\b", shown, re.I) for w in SHORT_NAMES)
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(LABEL, default_timeout=60)
    at.session_state["auth_user"] = "ana"
    at.session_state["auth_role"] = "sme"
    at.run()
    seen = set()
    for _ in range(8):
        assert not at.exception
        text = _rendered_text(at)
        assert "Left answer" in text and "Right answer" in text  # the walk does see the page
        for m in [demo.BASELINE, *CANDS]:
            assert m not in text
        assert not any(re.search(rf"\b{w}\b", text, re.I) for w in SHORT_NAMES)  # not even "nova", "lite"
        for r in at.radio:
            if r.key and r.key.startswith("label_") and r.value is None:
                r.set_value(r.options[0])
        at.get("form_submit_button")[0].click().run()
    from pages.shared import ui
    cur = ui._connection(str(path)).cursor()
    seen = {c for (c,) in cur.execute("SELECT DISTINCT candidate FROM pair_labels").fetchall()}
    assert len(seen) >= 2  # the page served units of several candidates
    assert cur.execute("SELECT count(*) FROM pair_labels").fetchone()[0] == 8  # one preference per unit


def test_three_candidates_queue_label_and_fit_give_every_candidate_a_decision(con3):
    queue.refill(con3, 60, seed=1)
    assert simulate.simulate_sme(con3, 240) == 240
    fit = engine.fit_project(con3, "fast")
    assert fit["candidates"] == CANDS
    k = len(CANDS)
    assert fit["decide_prob_per_candidate"] == pytest.approx(1 - (1 - fit["decide_prob"]) / k)
    for c in CANDS:
        rows = [r for r in fit["diffs"] if r["candidate"] == c]
        assert {r["dimension"] for r in rows} == set(demo.DIMENSIONS)
        assert all(r["decision"] in ("not worse", "worse", "label more") and r["n_items"] > 0 for r in rows)
        assert [r for r in fit["preference"] if r["candidate"] == c and r["dimension"] == "overall"]
    for d in demo.DIMENSIONS:
        pb = {r["model"]: r["p_best"] for r in fit["p_best"] if r["dimension"] == d}
        assert set(pb) == {demo.BASELINE, *CANDS} and sum(pb.values()) == pytest.approx(1.0)
    # against the hidden truth: intervals of Delta cover it for most (dimension, candidate)
    truth = dict(((m, d), v) for m, d, v in con3.execute(
        "SELECT model, dimension, avg(verdict::INT) FROM sim_truth GROUP BY ALL").fetchall())
    covered = [r["lo"] - 1e-9 <= truth[(r["candidate"], r["dimension"])] - truth[(demo.BASELINE, r["dimension"])]
               <= r["hi"] + 1e-9 for r in fit["diffs"]]
    assert sum(covered) >= len(covered) - 2
    # the cheap candidate is truly worse on refusal (by about 0.15): never "not worse" there
    lite = next(r for r in fit["diffs"] if r["candidate"] == demo.CANDIDATE_LITE and r["dimension"] == "refusal")
    assert lite["decision"] != "not worse"
    # each candidate's Delta rests on its own sample: the items labelled for it
    by_cand = fit["estimator"]["refusal"]["by_candidate"]
    n_units = dict(con3.execute("SELECT candidate, count(DISTINCT item_id) FROM pair_labels GROUP BY 1").fetchall())
    assert {c: by_cand[c]["labelled_items"] for c in CANDS} == n_units


def test_a_decided_candidate_gets_at_most_a_tenth_of_the_next_100_labels(con3):
    sme = "demo-sme"
    queue.refill(con3, 45, seed=2)
    simulate.simulate_sme(con3, queue.servable_count(con3, sme), annotator=sme)
    assert queue.servable_count(con3, sme) == 0
    fit = engine.fit_project(con3, "fast", record=False)
    decided = demo.CANDIDATE_LITE
    for r in fit["diffs"]:  # the latest fit: the cheap candidate decided everywhere, the others not
        r["decision"] = "worse" if r["candidate"] == decided else "label more"
    con3.execute("INSERT INTO fits (created_at, kind, n_labels, seconds, result) VALUES (current_timestamp, 'fast', ?, 0, ?)",
                 [fit["n_labels"], json.dumps(fit)])
    assert queue.decided_candidates(con3, CANDS) == {decided}
    units = queue.unit_priorities(con3)
    pi = queue.stratified_inclusion(units.priority, units.segment, 20, 0.2, units.base_weight)
    assert (pi[units.candidate == decided] > 0).all()  # still a probability sample (exploration share)
    before = con3.execute("SELECT coalesce(max(label_id), 0) FROM pair_labels").fetchone()[0]
    assert simulate.simulate_sme(con3, 100, annotator=sme, seed=7) == 100
    got = con3.execute("SELECT candidate, count(*) FROM pair_labels WHERE label_id > ? GROUP BY 1", [before]).fetchall()
    got = dict(got)
    print("labels per candidate after the decision:", got)
    assert sum(got.values()) == 100
    assert got.get(decided, 0) <= 10
    assert got.get(CANDS[0], 0) > 20 and got.get(CANDS[2], 0) > 20


def test_one_candidate_project_keeps_null_units_working(demo_con):
    """Rows from before units (candidate NULL) stand for the first candidate."""
    queue.refill(demo_con, 10, seed=1)
    demo_con.execute("UPDATE queue SET candidate = NULL")
    lease = queue.next_item(demo_con, "ana")
    assert lease.candidate == demo.CANDIDATE
    queue.submit(demo_con, lease.lease_id, "ana", _verdicts(demo_con, lease.item_id, demo.MODELS), preference="tie")
    assert demo_con.execute("SELECT n_done FROM queue WHERE item_id = ?", [lease.item_id]).fetchone()[0] == 1
    units = queue.unit_priorities(demo_con)
    assert lease.item_id not in set(units.item_id) and set(units.candidate) == {demo.CANDIDATE}


PAGES = ["app.py"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture(scope="module")
def labelled_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "pages3.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 200, seed=4, candidates=3)
    store.set_settings(con, demo_mode=True)
    queue.refill(con, 40, seed=1)
    simulate.simulate_sme(con, 90)
    engine.fit_project(con, "fast")
    con.close()
    return path


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_with_three_candidates(labelled_db, page, monkeypatch):
    monkeypatch.setenv("TIEBREAK_DB", str(labelled_db))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / page), default_timeout=90)
    at.run()
    assert not at.exception, at.exception


def test_decision_page_shows_every_candidate_and_p_best(labelled_db, monkeypatch):
    monkeypatch.setenv("TIEBREAK_DB", str(labelled_db))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown).replace("\\", "")  # safe.md escapes markdown
    assert "Recommendation per candidate" in text
    assert all(c in text for c in CANDS)
    assert len(at.metric) >= len(CANDS) * len(demo.DIMENSIONS)  # a verdict card per candidate and dimension
    pbest = next(df.value for df in at.dataframe if "P(highest pass rate)" in df.value.columns)
    assert set(pbest["Model"]) == {demo.BASELINE, *CANDS}
    assert "Bonferroni" in " ".join(c.value for c in at.caption)


def test_cli_demo_fit_and_regressions_list_every_candidate(tmp_path, capsys):
    from calib import cli

    db = str(tmp_path / "cli3.duckdb")
    assert cli.main(["demo", "--db", db, "--items", "150", "--seed", "3", "--candidates", "3"]) == 0
    assert cli.main(["simulate", "--db", db, "--items", "45"]) == 0
    capsys.readouterr()
    assert cli.main(["fit", "--db", db, "--fast", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["candidates"] == CANDS
    assert {(d["candidate"], d["dimension"]) for d in out["diffs"]} == {(c, d) for c in CANDS for d in demo.DIMENSIONS}
    assert {r["model"] for r in out["p_best"]} == {demo.BASELINE, *CANDS}
    assert "Bonferroni" in out["multiplicity"]
    assert cli.main(["fit", "--db", db, "--fast"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in CANDS) and "P(best)" in text
    assert cli.main(["regressions", "--db", db, "--json", "--dimension", "refusal"]) == 0
    reg = json.loads(capsys.readouterr().out)
    assert [e["candidate"] for e in reg["candidates"]] == CANDS and reg["candidate"] == CANDS[0]
    assert cli.main(["queue", "--db", db, "--n", "6", "--format", "json", "--lease", "bo"]) == 0
    units = json.loads(capsys.readouterr().out)
    assert units and all(u["candidate"] in CANDS for u in units)
    check = duckdb.connect(db, read_only=True)
    leased = set(check.execute("SELECT item_id, candidate FROM leases WHERE annotator = 'bo'").fetchall())
    check.close()
    assert leased == {(u["item_id"], u["candidate"]) for u in units}
    assert cli.main(["demo", "--db", str(tmp_path / "bad.duckdb"), "--candidates", "5"]) == 2
    assert "--candidates" in capsys.readouterr().err


def test_report_has_a_recommendation_per_candidate_and_p_best(labelled_db):
    from calib.insight import report

    con = store.connect(labelled_db)
    try:
        html = report.build_report(con, db_label="three")
    finally:
        con.close()
    for c in CANDS:
        assert f"Recommendation for {c}" in html
    assert "highest pass rate" in html and "Bonferroni" in html


def test_cold_start_priority_is_each_candidates_disagreement_with_the_baseline(con3):
    u = queue.unit_priorities(con3)
    assert u.policy == "disagreement"
    df = pd.DataFrame({"item": u.item_id, "cand": u.candidate, "prio": u.priority})
    first = df[df.cand == CANDS[0]].set_index("item")["prio"]
    d = dict(con3.execute("SELECT item_id, score FROM item_disagreement").fetchall())
    # the item's disagreement score is its largest over candidates: the first candidate's units reach
    # it where that candidate is the furthest from the baseline, never exceed it
    score = np.array([d[i] for i in first.index])
    assert (first.to_numpy() <= score + 1e-9).all() and np.isclose(first.to_numpy(), score).any()
    # another candidate's differ (its outputs differ from the first candidate's)
    lite = df[df.cand == demo.CANDIDATE_LITE].set_index("item")["prio"].reindex(first.index)
    assert not np.allclose(lite.to_numpy(), first.to_numpy())


def test_a_lead_filter_queues_units_of_every_candidate_or_of_one(con3):
    b = queue.queue_filtered(con3, n=9, segment="eu", seed=1)
    rows = con3.execute("SELECT candidate, inclusion_prob FROM queue WHERE batch_id = ?", [b.batch_id]).fetchall()
    n_eu = con3.execute("SELECT count(*) FROM items WHERE segment = 'eu'").fetchone()[0]
    assert b.eligible == 3 * n_eu and len(rows) == 9
    assert all(p == pytest.approx(9 / (3 * n_eu)) for _, p in rows)
    b2 = queue.queue_filtered(con3, n=5, segment="eu", seed=2, candidate=demo.CANDIDATE_ORION)
    assert {c for (c,) in con3.execute("SELECT candidate FROM queue WHERE batch_id = ?", [b2.batch_id]).fetchall()} \
        == {demo.CANDIDATE_ORION}
    with pytest.raises(TiebreakError, match="unknown candidate"):
        queue.queue_filtered(con3, n=5, segment="eu", candidate="nope")


def test_a_comparison_is_a_unit_in_progress_and_throughput(con3):
    """An SME who rates one item against two candidates did two comparisons (one distinct item):
    the Label page's count and the Annotators page's throughput say 2; a label with no lease counts
    for the first candidate."""
    from calib.insight import annotators, tables

    item = "q0000011"
    for cand in CANDS[:2]:
        _queue_unit(con3, item, cand)
        lease = queue.next_item(con3, "ana")
        assert (lease.item_id, lease.candidate) == (item, cand)
        queue.submit(con3, lease.lease_id, "ana", _verdicts(con3, item, [demo.BASELINE, cand]), preference="tie",
                     duration_ms=20_000)
    assert labelling.progress(con3, "ana")["comparisons_today"] == 2
    # an imported label (no lease) on another item: one more comparison, for the first candidate
    con3.execute("""INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, source)
                    VALUES ('q0000012', ?, 'style', true, 'ana', current_timestamp, 'import')""", [CANDS[1]])
    assert labelling.progress(con3, "ana")["comparisons_today"] == 3
    thr = {t["annotator"]: t for t in annotators.throughput(con3)}["ana"]
    assert (thr["units"], thr["items"]) == (3, 2)
    assert thr["by_candidate"] == {CANDS[0]: 2, CANDS[1]: 1}  # in the settings' order
    assert thr["median_s"] == pytest.approx(20.0)
    row = tables.annotator_table([thr])[0]
    assert row[tables.COMPARISONS] == "3" and row["Distinct items"] == "2"
    assert tables.annotator_candidate_table([thr]) == [{"SME": "ana", CANDS[0]: "2", CANDS[1]: "1"}]


def _chart_names(at) -> list[str]:
    return [t.get("name", "") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]


def test_judges_and_annotators_pages_show_every_candidate(labelled_db, monkeypatch):
    """Every per-model table and the calibration curve on the Judges page list the baseline (marked)
    and every candidate; the Annotators page counts comparisons per candidate."""
    monkeypatch.setenv("TIEBREAK_DB", str(labelled_db))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "3_Judges.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    frames = [df.value for df in at.dataframe]
    fitness_df = pd.concat([f for f in frames if "Fitness band" in f.columns])  # one table per dimension
    assert set(fitness_df["Model"]) == {f"{demo.BASELINE} (baseline)", *CANDS}
    differences = next(f for f in frames if "Quality differs" in f.columns)
    assert set(differences["Candidate"]) == set(CANDS)
    bias = next(f for f in frames if "Bias on the candidate" in f.columns)
    assert set(bias["Candidate"]) <= set(CANDS) and len(set(bias["Candidate"])) >= 2
    disagreement = next(f for f in frames if "Verdicts differ" in f.columns)
    assert set(disagreement["Model"]) == {f"{demo.BASELINE} (baseline)", *CANDS}
    names = _chart_names(at)
    assert names[0] == f"{demo.BASELINE} (baseline)" and set(names[1:]) <= set(CANDS) and len(names) >= 3
    assert not [c for f in frames for c in f.columns if "_" in c]  # human headers

    at = AppTest.from_file(str(ROOT / "pages" / "4_Annotators.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    thr = next(df.value for df in at.dataframe if "Comparisons (item, candidate)" in df.value.columns)
    per_cand = next(df.value for df in at.dataframe if set(df.value.columns) & set(CANDS))
    assert set(per_cand.columns) - {"SME"} <= set(CANDS) and len(per_cand.columns) >= 3
    assert any("Comparisons per hour" in df.value.columns for df in at.dataframe)
    count = lambda v: int(v.replace(",", ""))  # noqa: E731
    for (_, r), (_, c) in zip(thr.iterrows(), per_cand.iterrows()):  # every comparison belongs to one candidate
        assert r["SME"] == c["SME"]
        assert sum(count(c[k]) for k in per_cand.columns if k != "SME") == count(r["Comparisons (item, candidate)"])
        assert count(r["Comparisons (item, candidate)"]) >= count(r["Distinct items"])


def test_top_disagreements_weigh_every_candidate_against_the_baseline(con3):
    """The Home page's list of items where judges disagree counts, per item, the candidate whose
    judges' view is furthest from the baseline's (not only the first candidate's)."""
    queue.top_disagreements(con3, 1)  # builds the cells
    cons = con3.execute(
        """SELECT oc.item_id, oc.dimension, oc.model, avg(list_avg(mc.x)) AS v
           FROM output_cells oc JOIN model_cells mc USING (dimension, cell_id) GROUP BY ALL""").fetch_df()
    wide = cons.pivot_table(index=["item_id", "dimension"], columns="model", values="v")
    cands = [c for c in store.get_settings(con3)["candidates"]]
    per_cand = pd.DataFrame({c: (wide[c] - wide[demo.BASELINE]).abs() for c in cands}).groupby("item_id").mean()
    got = dict(con3.execute("SELECT item_id, between_models FROM item_disagreement").fetchall())
    expected = per_cand.max(axis=1)
    assert np.allclose([got[i] for i in expected.index], expected.to_numpy())
    assert (per_cand.idxmax(axis=1) != cands[0]).any()  # some items are about another candidate
