"""AppTest smoke tests: every page runs without an exception on the demo data."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

from conftest import demo_db_file  # (not tests.conftest: ppi-python installs a top-level `tests` package)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["app.py"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture
def demo_db(tmp_path, monkeypatch):
    path = demo_db_file(tmp_path / "app.duckdb", 200, seed=2)
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
    from calib.data import store
    from calib.review import queue

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


def _label_truth(con, n_items: int, offset: int = 0) -> None:
    con.execute(f"""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
                   SELECT item_id, model, dimension, verdict, kind, 'sim', current_timestamp, 'test' FROM sim_truth
                   WHERE item_id IN (SELECT item_id FROM items ORDER BY item_id LIMIT {n_items} OFFSET {offset})""")


def test_home_counts_labelled_items_not_label_rows(demo_db):
    """Home and Decision both speak of labelled items (distinct items); label rows are named as such."""
    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    _label_truth(con, 12)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    metric = next(m for m in at.metric if m.label == "Labelled items")
    assert metric.value == "12"
    rows = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    assert f"{rows:,} label rows" in metric.proto.help


def test_decision_page_shows_what_fit_says(demo_db):
    """The verdict cards are what `tiebreak fit --json` says for the same database."""
    import json

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    _label_truth(con, 60)
    from calib.stats import engine

    engine.fit_project(con, "fast", forecast_extra=[25, 50])  # the page shows the latest fit while no label arrives
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=60)
    at.run()
    assert not at.exception
    cards = {m.label: m.value for m in at.metric}
    import contextlib
    import io

    from calib import cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["fit", "--json", "--fast", "--db", str(demo_db)]) == 0
    cli_fit = json.loads(buf.getvalue())
    assert cards == {d["dimension"]: d["decision"].upper() for d in cli_fit["diffs"]}
    assert any("Recommendation" in m.value for m in at.markdown)


def test_new_label_moves_the_shrinkage_curve_by_one_point(demo_db):
    from calib.stats import engine

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    _label_truth(con, 40)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=60)
    at.run()  # labels arrived and no fit yet: the page fits
    assert not at.exception
    before = engine.fits_history(con)
    n_dims = len({h["dimension"] for h in before})
    at.run()  # nothing new: no refit
    assert len(engine.fits_history(con)) == len(before)
    _label_truth(con, 1, offset=40)  # one more labelled item
    at.run()
    after = engine.fits_history(con)
    assert len(after) == len(before) + n_dims  # one new point per dimension
    assert max(h["n_labels"] for h in after) == max(h["n_labels"] for h in before) + 1


@pytest.mark.parametrize("role", ["sme", "lead", "admin"])
@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_for_each_role(demo_db, page, role):
    """Signed in with each role: a page either renders or says it is not for this role, never raises."""
    from calib.review import users

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    users.add_user(con, f"u-{role}", role, "pw-123456")
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.session_state["auth_user"], at.session_state["auth_role"] = f"u-{role}", role
    at.run()
    assert not at.exception, at.exception
    allowed = next(r for p, _, r in ui.PAGES if p == page)
    if role not in allowed and page != "app.py":
        assert any("this page is for" in e.value for e in at.error)


def test_demo_mode_adds_labels_and_refits(demo_db):
    from calib.data import store
    from calib.stats import engine

    from pages.shared import ui

    con = ui._connection(str(demo_db)).cursor()
    at = AppTest.from_file(str(ROOT / "pages" / "6_Demo.py"), default_timeout=60)
    at.run()
    assert not at.exception
    next(b for b in at.button if b.label == "Switch demo mode on").click().run()
    assert store.get_settings(con)["demo_mode"] is True
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception
    n1 = con.execute("SELECT count(DISTINCT item_id) FROM labels WHERE source = 'demo'").fetchone()[0]
    fits1 = len(engine.fits_history(con))
    assert n1 >= 1 and fits1 >= 1
    at.session_state["demo_last"] = at.session_state["demo_last"] - 3  # three seconds pass
    at.run()
    n2 = con.execute("SELECT count(DISTINCT item_id) FROM labels WHERE source = 'demo'").fetchone()[0]
    assert n2 > n1 and len(engine.fits_history(con)) > fits1
    n_charts = len(at.get("plotly_chart"))
    at.toggle(key="demo_replay").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == n_charts + 3  # one replay per dimension


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
    assert not [c for df in at.dataframe for c in df.value.columns if "_" in c]  # human headers


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_an_empty_project(tmp_path, monkeypatch, page):
    """A new database with nothing imported: every page explains instead of failing."""
    from calib.data import store

    path = tmp_path / "empty.duckdb"
    store.connect(path).close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception


@pytest.fixture
def hostile_db(tmp_path, monkeypatch):
    """Every name and text field of the project is markdown/HTML/bidi (tests/hostile.py)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import hostile

    path = tmp_path / "hostile.duckdb"
    names = hostile.build(path, port=9)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return hostile, names


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_hostile_names_as_text(hostile_db, page):
    """No name, reason or text from the data reaches a markdown context unescaped, a plain text
    with a bidi override, or st.html markup, on any page (as an admin)."""
    hostile, names = hostile_db
    at = AppTest.from_file(str(ROOT / page), default_timeout=120)
    at.session_state["auth_user"], at.session_state["auth_role"] = "adm", "admin"
    at.run()
    assert not at.exception, at.exception
    assert hostile.audit(at) == []


def test_nothing_in_the_app_is_fetched_from_the_internet():
    """Streamlit fetches ``:material/...:`` page icons (favicons) from a font host, and a font set to
    a URL in config.toml from wherever it points; the keyboard script is not on the deprecated
    components API (removed after 2026-06-01)."""
    import tomllib

    for path in [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]:
        text = path.read_text()
        assert ":material/" not in text, path
        assert "import streamlit.components" not in text and "components.html(" not in text, path
    theme = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text()).get("theme", {})
    assert not any("://" in str(v) for v in theme.values())
