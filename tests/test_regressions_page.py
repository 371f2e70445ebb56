"""The Regressions page (AppTest): the SME-confirmed flips with both outputs, the rates, the ranking,
and "Queue these for SMEs" recording a lead-chosen batch with its inclusion probabilities."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

from conftest import demo_db_file  # (not tests.conftest: ppi-python installs a top-level `tests` package)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "8_Regressions.py")


@pytest.fixture
def labelled_db(tmp_path, monkeypatch):
    path = demo_db_file(tmp_path / "regr.duckdb", 300, seed=4, labels=60)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def test_page_shows_flips_and_queues_likely_regressions(labelled_db):
    from calib.insight import regressions
    from pages.shared import ui

    con = ui._connection(str(labelled_db)).cursor()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    summary = regressions.flip_summary(con, "correctness")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Regressions (baseline pass, candidate fail)"] == str(summary["regressions"])
    assert metrics["Items labelled for both models"] == str(summary["items"])
    flips = regressions.sme_flips(con, "correctness")
    assert summary["regressions"] > 0
    first = flips[flips.flip == "regression"].iloc[0]
    assert first["baseline_output"] in [c.value for c in at.code]  # both outputs, as text
    assert first["candidate_output"] in [c.value for c in at.code]
    headers = [list(df.value.columns) for df in at.dataframe]
    assert ["Segment", "Items labelled for both", "Regressions", "Regression rate", "Improvements",
            "Improvement rate"] in headers
    assert any("P(regression)" in h for h in headers)

    queued_before = con.execute("SELECT count(*) FROM queue").fetchone()[0]
    at.number_input(key="regr_queue_k").set_value(15)
    next(b for b in at.button if b.label == "Queue these for SMEs").click().run()
    assert not at.exception, at.exception
    last = at.session_state["regr_last_batch"]
    rows = con.execute("SELECT inclusion_prob, policy, reason FROM queue WHERE batch_id = ?",
                       [last["batch_id"]]).fetchall()
    assert len(rows) == last["selected"] > 0
    assert con.execute("SELECT count(*) FROM queue").fetchone()[0] == queued_before + len(rows)
    assert all(0 < p <= 1 and pol == "filtered" and "likely regressions" in why for p, pol, why in rows)
    assert abs(last["expected"] - 15) < 1e-6
    assert any(f"Queued batch {last['batch_id']}" in s.value for s in at.success)
    assert any("Inclusion probability" in df.value.columns for df in at.dataframe)


def test_page_explains_when_nothing_is_labelled(tmp_path, monkeypatch):
    path = demo_db_file(tmp_path / "fresh.duckdb", 100, seed=2)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    infos = " ".join(i.value for i in at.info)
    assert "No item has SME labels for both models" in infos and "No side-by-side preferences" in infos


def test_annotators_page_explains_no_overlap_and_counts_comparisons(labelled_db):
    """Before any overlap the agreement section explains itself; throughput counts comparisons
    (distinct (item, candidate) units) and distinct items."""
    from calib.insight import annotators
    from pages.shared import ui

    at = AppTest.from_file(str(ROOT / "pages" / "4_Annotators.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    con = ui._connection(str(labelled_db)).cursor()
    if not any(a["units"] for a in annotators.agreement(con)):  # one simulated SME: no overlap
        assert any("No overlap yet" in i.value for i in at.info)
    thr = next(df.value for df in at.dataframe if "Distinct items" in df.value.columns)
    items = con.execute("SELECT count(DISTINCT item_id) FROM labels WHERE annotator = 'demo-sme'").fetchone()[0]
    units = con.execute("""SELECT count(DISTINCT (l.item_id, e.candidate)) FROM labels l
                           LEFT JOIN leases e ON e.lease_id = l.lease_id WHERE l.annotator = 'demo-sme'""").fetchone()[0]
    assert thr["Distinct items"].tolist() == [f"{items:,}"]
    assert thr["Comparisons (item, candidate)"].tolist() == [f"{units:,}"]
    assert not [c for df in at.dataframe for c in df.value.columns if "_" in c]  # human headers
