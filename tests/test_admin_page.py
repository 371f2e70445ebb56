"""The Admin page (AppTest): add a user, change a setting, an upload with an error shows the CLI's
one-line message and stores nothing, a good upload imports; leads do not manage users."""

from __future__ import annotations

import pathlib

import pytest
from streamlit.testing.v1 import AppTest

from calib.data import demo, store
from calib.review import users

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "7_Admin.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "admin.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 60, seed=4)
    users.add_user(con, "ada", "admin", "ada-password")
    users.add_user(con, "lee", "lead", "lee-password")
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def _cur(path):
    from pages.shared import ui

    return ui._connection(str(path)).cursor()


def _app(user="ada", role="admin") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["auth_user"], at.session_state["auth_role"] = user, role
    at.run()
    assert not at.exception, at.exception
    return at


def _submit(at: AppTest, label: str) -> None:
    next(b for b in at.get("form_submit_button") if b.label == label).click().run()
    assert not at.exception, at.exception


def test_admin_adds_a_user_who_can_then_sign_in(db):
    at = _app()
    at.text_input(key="admin_new_name").set_value("bob")
    at.selectbox(key="admin_new_role").set_value("sme")
    at.text_input(key="admin_new_pw").set_value("bob-password")
    _submit(at, "➕ Add user")
    assert any("added" in s.value for s in at.success)
    cur = _cur(db)
    assert {u["name"]: u["role"] for u in users.list_users(cur)}["bob"] == "sme"
    assert users.sign_in(cur, "bob", "bob-password", "t").role == "sme"
    at.text_input(key="admin_new_name").set_value("bob")
    at.text_input(key="admin_new_pw").set_value("other-password")
    _submit(at, "➕ Add user")
    assert any("already exists" in e.value for e in at.error)


def test_admin_changes_a_setting(db):
    at = _app()
    at.number_input(key="admin_set_margin").set_value(0.05)
    at.checkbox(key="admin_set_show_judges").check()
    _submit(at, "💾 Save settings")
    s = store.get_settings(_cur(db))
    assert s["margin"] == 0.05 and s["show_judges_to_sme"] is True
    assert s["baseline"] == demo.BASELINE and s["candidates"] == [demo.CANDIDATE]  # untouched
    assert any(e["action"] == "setting changed" and "margin" in e["detail"] for e in users.audit_log(_cur(db)))


def test_upload_with_an_error_shows_one_line_and_stores_nothing(db, tmp_path):
    from calib.data import ingest

    cur = _cur(db)
    before = store.status(cur)
    rows = demo.generate(5, seed=9).outputs.head(6).copy()
    rows["item_id"] = [f"new{i // 2}" for i in range(len(rows))]
    judge_col = next(c for c in rows.columns if c.startswith("judge:"))
    rows[judge_col] = rows[judge_col].astype(object)
    rows.loc[rows.index[3], judge_col] = "lots"
    data = rows.to_csv(index=False).encode()
    # the CLI's message for the same file
    (tmp_path / "new_outputs.csv").write_bytes(data)
    with pytest.raises(Exception) as cli_error:
        ingest.import_file(store.connect(tmp_path / "other.duckdb"), tmp_path / "new_outputs.csv")
    at = _app()
    at.file_uploader(key="admin_import_file").set_value(("new_outputs.csv", data, "text/csv"))
    at.run()
    at.button(key="admin_import_go").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0]
    shown = errors[0].replace("\\", "")
    assert shown == str(cli_error.value).replace(str(tmp_path) + "/", "")
    assert shown.startswith("new_outputs.csv") and "row 4" in shown and judge_col in shown
    assert store.status(cur) == before  # nothing stored


def test_good_upload_imports_labels(db):
    cur = _cur(db)
    item = cur.execute("SELECT item_id FROM items ORDER BY item_id LIMIT 1").fetchone()[0]
    data = (f"item_id,model,dimension,verdict,annotator\n{item},{demo.BASELINE},correctness,pass,kim\n").encode()
    at = _app(user="lee", role="lead")
    at.radio(key="admin_import_kind").set_value("SME labels (pointwise and/or pairwise)")
    at.run()
    at.file_uploader(key="admin_import_file").set_value(("labels.csv", data, "text/csv"))
    at.run()
    at.button(key="admin_import_go").click().run()
    assert not at.exception, at.exception
    assert any("added 1" in s.value for s in at.success), [s.value for s in at.success]
    assert cur.execute("SELECT count(*) FROM labels WHERE annotator = 'kim'").fetchone()[0] == 1


def test_lead_cannot_manage_users_but_can_unlock(db):
    cur = _cur(db)
    for i in range(12):
        users.sign_in(cur, "ada", "wrong", "10.1.1.1", now=1e9 + 1000.0 * i)
    at = _app(user="lee", role="lead")
    assert not any(b.label == "➕ Add user" for b in at.get("form_submit_button"))
    assert any("ada" in t.value and "locked" in t.value for t in at.text)
    at.button(key="admin_unlock_user_ada").click().run()
    assert not any(r["key"] == "ada" and r["locked"] for r in users.throttled(cur))


def test_smes_do_not_get_the_admin_page(db):
    con = _cur(db)
    users.add_user(con, "ana", "sme", "ana-password")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["auth_user"], at.session_state["auth_role"] = "ana", "sme"
    at.run()
    assert any("this page is for" in e.value for e in at.error)
    assert not [b for b in at.get("form_submit_button") if b.form_id.startswith("admin")]


def test_deactivation_and_role_changes_act_on_open_sessions(db):
    from pages.shared import ui  # noqa: F401 - the app's connection

    cur = _cur(db)
    at = _app(user="lee", role="lead")
    assert not any("this page is for" in e.value for e in at.error)
    users.set_role(cur, "lee", "sme", actor="ada")
    at.run()
    assert any("this page is for" in e.value for e in at.error)  # the role is read at every rerun
    users.set_active(cur, "lee", False, actor="ada")
    at.run()
    assert [t.label for t in at.text_input][:2] == ["User name", "Password"]  # signed out


def test_owner_changes_their_password_in_the_sidebar(db):
    at = _app(user="lee", role="lead")
    at.text_input(key="auth_pw_old").set_value("lee-password")
    at.text_input(key="auth_pw_new").set_value("lee-new-password")
    at.text_input(key="auth_pw_again").set_value("lee-new-password")
    _submit(at, "Change password")
    assert any("Password changed" in s.value for s in at.success)
    cur = _cur(db)
    assert users.sign_in(cur, "lee", "lee-new-password", "t").role == "lead"
    assert users.check_token(cur, at.session_state["auth_token"]) == ("lee", "lead")
    at.run()  # this session goes on with its fresh token
    assert not any("this page is for" in e.value for e in at.error)
    assert "auth_name" not in [t.key for t in at.text_input]


def test_settings_set_elsewhere_outside_the_usual_range_still_render(db):
    cur = _cur(db)
    store.set_settings(cur, margin=1.5, lease_minutes=0, demo_pace=0.0)
    at = _app()
    assert at.number_input(key="admin_set_margin").value == 1.5
    at.number_input(key="admin_set_margin").set_value(0.03)
    _submit(at, "💾 Save settings")
    s = store.get_settings(cur)
    assert s["margin"] == 0.03 and s["lease_minutes"] == 0  # untouched values are not rewritten


def test_hostile_upload_fails_alone_with_one_line(db):
    """A 100,000-column CSV (1.7 MB) is read by the capped child process: one line, nothing stored."""
    cols = ["item_id", "model", "prompt", "output"] + [f"judge:j{i}:d" for i in range(100_000)]
    data = (",".join(cols) + "\n" + ",".join(["a", "m", "p", "o"] + ["1"] * 100_000) + "\n").encode()
    cur = _cur(db)
    before = store.status(cur)
    at = _app()
    at.file_uploader(key="admin_import_file").set_value(("wide.csv", data, "text/csv"))
    at.run()
    at.button(key="admin_import_go").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0]
    shown = errors[0].replace("\\", "")
    assert shown.startswith("wide.csv, row 0") and "import_max_columns" in shown
    assert store.status(cur) == before


def test_upload_of_an_eval_tool_file_imports_with_its_mapping(db):
    data = (ROOT / "tests" / "data" / "evalformats" / "deepeval_test_run.json").read_bytes()
    at = _app()
    at.file_uploader(key="admin_import_file").set_value(("latest_test_run.json", data, "application/json"))
    at.run()
    at.checkbox(key="admin_import_allow_new").check()
    at.button(key="admin_import_go").click().run()
    assert not at.exception, at.exception
    shown = " ".join(s.value for s in at.success).replace("\\", "")  # markdown-escaped text
    assert "read as deepeval" in shown and "support-bot-v2" in shown and "added 3 items" in shown
    assert "support-bot-v2" in store.models(_cur(db))
