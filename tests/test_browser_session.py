"""In a real browser (Debian's chromium, helpers from tests/test_browser.py): a session survives a
reload and a new tab, sign-out ends it (also after a reload), wrong passwords are throttled, and
the Admin page renders. Screenshots go to tests/_artifacts/."""

from __future__ import annotations

import pytest

from calib.data import demo, store
from calib.review import users

from test_browser import ART, _open, _start_app, playwright  # noqa: E402 - skips when chromium is missing

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "session.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 60, seed=3)
    users.add_user(con, "lea", "lead", "lea-password")
    users.add_user(con, "ada", "admin", "ada-password")
    con.close()
    url, proc = _start_app(db)
    yield url, proc, db
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def _sign_in(page, name, password):
    page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _signed_in_as(page, name, timeout=60_000):
    page.get_by_text(f"Signed in as {name}").first.wait_for(timeout=timeout)


def _session_cookie(context):
    return next((c for c in context.cookies() if c["name"] == "tiebreak_session"), None)


def test_session_survives_reload_and_new_tab_and_sign_out_ends_it(server):
    url, proc, db = server
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, _ = _open(p)
        context = browser.new_context(viewport={"width": 1500, "height": 1100})  # one cookie jar, many tabs
        page = context.new_page()
        page.goto(url)
        _sign_in(page, "lea", "lea-password")
        _signed_in_as(page, "lea")
        page.wait_for_function("() => document.cookie.includes('tiebreak_session=')", timeout=30_000)
        cookie = _session_cookie(context)
        assert cookie and cookie["sameSite"] == "Strict"

        page.reload()
        _signed_in_as(page, "lea")
        assert page.get_by_role("textbox", name="User name").count() == 0
        page.screenshot(path=str(ART / "session_after_reload.png"))

        tab = context.new_page()
        tab.goto(url + "/Decision")
        _signed_in_as(tab, "lea")
        tab.close()

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("textbox", name="User name").wait_for(timeout=30_000)
        page.wait_for_function("() => !document.cookie.includes('tiebreak_session=')", timeout=30_000)
        page.reload()
        page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
        assert page.get_by_text("Signed in as lea").count() == 0

        # the old token, put back by hand, no longer works (sign-out ended the session server-side)
        context.add_cookies([{**cookie}])
        page.reload()
        page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
        assert page.get_by_text("Signed in as lea").count() == 0

        # wrong passwords are throttled: from the third failure on, a wait is owed (a loaded machine
        # may spend the first 2 s wait on the bcrypt check itself, so a further attempt shows it)
        for attempt in range(6):
            _sign_in(page, "lea", "not-the-password")
            page.get_by_text("wrong password").or_(page.get_by_text("Too many failed sign-ins")).first.wait_for(timeout=30_000)
            if attempt >= 2 and page.get_by_text("Try again in").count():
                break
        page.get_by_text("Try again in").first.wait_for(timeout=30_000)
        page.screenshot(path=str(ART / "session_throttled.png"))
        browser.close()


def test_admin_page_in_the_browser(server):
    url, proc, db = server
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        page.goto(url)
        _sign_in(page, "ada", "ada-password")
        _signed_in_as(page, "ada")
        page.goto(url + "/Admin")
        _signed_in_as(page, "ada")
        page.get_by_text("Initial password").first.wait_for(timeout=60_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ART / "admin_users.png"), full_page=True)
        page.get_by_role("tab", name="⚙️ Settings").click()
        page.get_by_text("Non-inferiority margin").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ART / "admin_settings.png"), full_page=True)
        page.get_by_role("tab", name="📥 Imports").click()
        page.get_by_text("What the file holds").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ART / "admin_imports.png"), full_page=True)
        browser.close()
