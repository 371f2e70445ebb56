"""Single sign-on in the pages (AppTest, with ``at.secrets`` and ``at.user`` standing in for
secrets.toml and the identity provider): what the sign-in page offers, a matched user gets the
role Tiebreak gave them, an unknown one is refused, and the Admin page sets e-mails. The real
flow through a provider is in tests/test_browser_sso.py."""

from __future__ import annotations

import pathlib
import time

import pytest
from streamlit.testing.v1 import AppTest

from calib.data import demo, store
from calib.review import sso, users

ROOT = pathlib.Path(__file__).resolve().parent.parent
AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "x" * 32, "label": "Okta",
        "client_id": "tiebreak", "client_secret": "s", "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "sso.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 40, seed=5)
    users.add_user(con, "ada", "admin", "ada-password")
    sso.add_user(con, "lea", "lead", None, "lea@example.com")
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def _run(page="app.py", secrets=None, user=None, state=None) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for k, v in (secrets or {}).items():
        at.secrets[k] = v
    if user is not None:
        at.user = user
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _sso_buttons(at) -> list[str]:
    return [b.label for b in at.button if b.label.startswith("Sign in with")]


def _text(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "title") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts).replace("\\", "")  # markdown escapes of safetext.md


def test_without_auth_secrets_the_page_is_as_before(db):
    at = _run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not [b for b in at.button if b.label.startswith("Sign in with")]


def test_sso_button_beside_passwords_and_alone_when_passwords_are_off(db):
    at = _run(secrets={"auth": AUTH})
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert _sso_buttons(at) == ["Sign in with Okta"]
    at = _run(secrets={"auth": AUTH, "tiebreak": {"password_sign_in": False}})
    assert not at.text_input and _sso_buttons(at) == ["Sign in with Okta"]
    # half-configured: passwords stay and the page says why single sign-on is off
    at = _run(secrets={"auth": {k: v for k, v in AUTH.items() if k != "cookie_secret"},
                       "tiebreak": {"password_sign_in": False}})
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert "cookie_secret" in _text(at) and "ignored" in _text(at)


def test_a_matched_user_gets_tiebreaks_role_and_an_sso_sign_out(db):
    claims = {"is_logged_in": True, "email": "LEA@example.com", "email_verified": True, "provider": "default",
              "iat": int(time.time())}
    at = _run(secrets={"auth": AUTH, "tiebreak": {"password_sign_in": False}}, user=claims)
    assert at.session_state["auth_user"] == "lea" and at.session_state["auth_via"] == "sso"
    assert "Signed in as lea (lead)" in _text(at) and "Signed in by single sign-on" in _text(at)
    assert any(m.label == "Items" for m in at.metric)  # the lead's Home page
    assert "Change password" not in [e.label for e in at.get("expander")]
    # the role is Tiebreak's, read at every rerun
    users.set_role(_cur(db), "lea", "sme", actor="ada")
    at.run()
    assert at.session_state["auth_role"] == "sme"
    # deactivated: the session ends at the next rerun, with the reason
    users.set_active(_cur(db), "lea", False, actor="ada")
    at.run()
    assert "auth_user" not in at.session_state and "deactivated" in _text(at)


def test_an_unknown_or_unverified_email_is_refused_with_a_way_out(db):
    for claims, why in (({"email": "eve@example.com", "email_verified": True}, "no Tiebreak user has this e-mail"),
                        ({"email": "lea@example.com", "email_verified": False}, "verified")):
        at = _run(secrets={"auth": AUTH}, user={"is_logged_in": True, "provider": "default", "iat": time.time(),
                                                **claims})
        assert "auth_user" not in at.session_state and why in _text(at)
        assert "Sign out of the identity provider, to use another account" in [b.label for b in at.button]
        assert [t.label for t in at.text_input] == ["User name", "Password"]  # passwords still on


def test_a_password_session_ends_when_passwords_are_turned_off(db):
    at = _run(secrets={"auth": AUTH, "tiebreak": {"password_sign_in": False}},
              state={"auth_user": "ada", "auth_role": "admin"})
    assert not any(m.label == "Items" for m in at.metric) and _sso_buttons(at) == ["Sign in with Okta"]


def _cur(path):
    from pages.shared import ui

    return ui._connection(str(path)).cursor()


def test_admin_page_adds_an_sso_only_user_and_sets_emails(db):
    at = _run("pages/7_Admin.py", state={"auth_user": "ada", "auth_role": "admin"})
    at.text_input(key="admin_new_name").set_value("sam")
    at.selectbox(key="admin_new_role").set_value("sme")
    at.text_input(key="admin_new_email").set_value("Sam@Example.com")
    next(b for b in at.get("form_submit_button") if b.label == "➕ Add user").click().run()
    assert not at.exception and any("added" in s.value for s in at.success)
    cur = _cur(db)
    assert sso.emails(cur)["sam"] == "sam@example.com"
    assert sso.match(cur, {"email": "sam@example.com", "email_verified": True}).role == "sme"
    at.selectbox(key="admin_who").set_value("ada").run()
    at.text_input(key="admin_email_ada").set_value("lea@example.com")
    next(b for b in at.get("form_submit_button") if b.label == "Save e-mail").click().run()
    assert "already belongs to user 'lea'" in _text(at)
    at.text_input(key="admin_email_ada").set_value("ada@example.com")
    next(b for b in at.get("form_submit_button") if b.label == "Save e-mail").click().run()
    assert sso.emails(cur)["ada"] == "ada@example.com"


def test_admin_page_says_how_users_sign_in(db):
    at = _run("pages/7_Admin.py", secrets={"auth": AUTH, "tiebreak": {"password_sign_in": False}},
              state={"auth_user": "ada", "auth_role": "admin"})
    # (the password session above ends with passwords off: the sign-in page shows instead)
    assert _sso_buttons(at) == ["Sign in with Okta"]
    at = _run("pages/7_Admin.py", secrets={"auth": AUTH}, state={"auth_user": "ada", "auth_role": "admin"})
    assert "Single sign-on: Okta (users are matched by e-mail); password sign-in: on." in _text(at)
    at = _run("pages/7_Admin.py", state={"auth_user": "ada", "auth_role": "admin"})
    assert "Single sign-on: off; password sign-in: on." in _text(at)


def test_a_hostile_email_claim_is_shown_as_text(db):
    hostile = "[x](javascript:alert(1))<b>@evil.com"
    at = _run(secrets={"auth": AUTH},
              user={"is_logged_in": True, "provider": "default", "email": hostile, "email_verified": True,
                    "iat": time.time()})
    shown = at.error[0].value
    assert "no Tiebreak user has this e-mail" in shown.replace("\\", "")
    assert "\\[x\\]\\(javascript" in shown and "\\<b\\>" in shown  # markdown and HTML escaped


def test_an_old_sign_in_offers_the_providers_button_again(db):
    at = _run(secrets={"auth": AUTH}, user={"is_logged_in": True, "provider": "default", "email": "lea@example.com",
                                            "email_verified": True, "iat": time.time() - 13 * 3600})
    assert "auth_user" not in at.session_state and "sign in again" in _text(at)
    assert _sso_buttons(at) == ["Sign in with Okta"]
