"""AppTest smoke tests: every page runs without an exception on the demo data."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["app.py"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture
def demo_db(tmp_path, monkeypatch):
    from calib import demo, store

    path = tmp_path / "app.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 200, seed=2)
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(demo_db, page):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception


def test_home_shows_counts(demo_db):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Items"] == "200" and metrics["Outputs"] == "400"
    assert any("support-legacy-v1" in t.value for t in at.text)


def test_home_review_list_returns_flagged_item(demo_db):
    from calib import queue, store

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    queue.refill(con, 5, seed=1)
    lease = queue.next_item(con, "ana")
    queue.flag(con, lease.lease_id, "ana", "personal data in prompt")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert any("personal data in prompt" in t.value for t in at.text)
    next(b for b in at.button if b.label == "Return to queue").click().run()
    assert queue.review_list(con) == []
    assert store.get_settings(con)["baseline"]


def test_decision_page_shows_what_fit_says(demo_db):
    from calib import engine

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    con.execute("""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
                   SELECT item_id, model, dimension, verdict, kind, 'sim', current_timestamp, 'test' FROM sim_truth
                   WHERE item_id IN (SELECT item_id FROM items ORDER BY item_id LIMIT 60)""")
    fit = engine.fit_project(con, "fast")
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=60)
    at.run()
    assert not at.exception
    cards = {m.label: m.value for m in at.metric}
    assert cards == {d["dimension"]: d["decision"].upper() for d in fit["diffs"]}
    n_before = len(engine.fits_history(con))
    next(b for b in at.button if b.label.startswith("Refit")).click().run()
    assert len(engine.fits_history(con)) == n_before + len(fit["diffs"])  # a new fit adds one point per dimension


def test_run_judges_page_runs_offline_judges_to_the_end(demo_db):
    import time

    from pages.shared import ui

    at = AppTest.from_file(str(ROOT / "pages" / "5_Run_judges.py"), default_timeout=60)
    at.run()
    assert not at.exception
    next(b for b in at.button if b.label == "Start").click().run()
    con = ui._connection(str(demo_db)).cursor()
    for _ in range(100):  # the run is on its own thread
        if con.execute("SELECT count(*) FROM judge_calls").fetchone()[0] == 1200:
            break
        time.sleep(0.1)
    assert con.execute("SELECT count(*) FROM judge_scores WHERE judge = 'lexical-similarity'").fetchone()[0] == 400
    at.run()
    assert not at.exception
    assert any(m.label == "OK" and m.value == "1,200" for m in at.metric)
