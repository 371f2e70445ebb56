"""Single sign-on end to end in a real browser: `streamlit run` with an ``[auth]`` secrets file
pointing at a local OpenID Connect provider (``oidc-provider-mock``, a Flask app served here on
127.0.0.1), Debian's chromium driven by Playwright.

With password sign-in turned off, the sign-in page offers only the provider's button. A lead
signs in through the provider and lands on Home, an SME lands on the Label page, each signs out
(through the provider's end-session page); someone the provider knows but Tiebreak does not is
refused and can sign out to try another account. Offline: the provider's metadata, keys and
tokens are fetched from the local mock. Screenshots go to tests/_artifacts/.

Ports: free ones, or $TIEBREAK_SSO_APP_PORT / $TIEBREAK_SSO_IDP_PORT when set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from calib.data import demo, store
from calib.review import sso, users

from test_browser import ART, ROOT, _free_port, _open, healthy, playwright, settle  # noqa: E402 - skips when chromium is missing

oidc_mock = pytest.importorskip("oidc_provider_mock")
pytestmark = pytest.mark.slow
LABEL = "Mock IdP"


def _port(env: str) -> int:
    return int(os.environ[env]) if os.environ.get(env) else _free_port()


@pytest.fixture
def idp(monkeypatch):
    """The mock provider on 127.0.0.1 with three accounts, each with a verified e-mail; its
    authorize page has one button per account. Any client id and secret are accepted."""
    import werkzeug.serving

    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the mock speaks plain http on loopback
    accounts = [oidc_mock.User(sub=sub, claims={"email": f"{sub.title()}@Example.com", "email_verified": True,
                                                "name": sub.title()}) for sub in ("lea", "sam", "eve")]
    server = werkzeug.serving.make_server("127.0.0.1", _port("TIEBREAK_SSO_IDP_PORT"),
                                          oidc_mock.app(user_claims=accounts), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    server.server_close()


@pytest.fixture
def app(tmp_path, idp):
    db = tmp_path / "sso.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 60, seed=6)
    users.add_user(con, "ada", "admin", "ada-password")
    sso.add_user(con, "lea", "lead", None, "lea@example.com")
    sso.add_user(con, "sam", "sme", None, "sam@example.com")  # eve has no Tiebreak user
    con.close()
    port = _port("TIEBREAK_SSO_APP_PORT")
    secrets = tmp_path / "secrets.toml"  # never the project's own .streamlit/secrets.toml
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "browser-test-cookie-secret-0123456789"
client_id = "tiebreak"
client_secret = "tiebreak-secret"
server_metadata_url = "{idp}/.well-known/openid-configuration"
label = "{LABEL}"

[tiebreak]
password_sign_in = false
""")
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--secrets.files", str(secrets)],
        cwd=ROOT, env={**os.environ, "TIEBREAK_DB": str(db)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not healthy(url, 60):
        proc.kill()
        pytest.fail("streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
    yield url, db
    proc.terminate()
    proc.wait(10)
    log.close()


def _sign_in_page(page):
    page.get_by_role("button", name=f"Sign in with {LABEL}").wait_for(timeout=60_000)
    assert page.get_by_role("textbox", name="User name").count() == 0  # password sign-in is off


def _through_the_provider(page, idp, account) -> float:
    """Sign in as ``account`` at the provider; returns the time the click on the app's button was made."""
    t0 = time.perf_counter()
    page.get_by_role("button", name=f"Sign in with {LABEL}").click()
    page.wait_for_url(f"{idp}/oauth2/authorize**", timeout=30_000)
    page.get_by_role("button", name=account, exact=True).click()  # the mock's one-click account
    return t0


def _sign_out(page, idp, button="Sign out"):
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{idp}/oauth2/end_session**", timeout=30_000)  # the provider's end-session page
    page.get_by_role("button", name="End session").click()
    _sign_in_page(page)


def test_sign_in_through_the_provider_by_role_then_sign_out(app, idp):
    url, db = app
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        page.goto(url)
        _sign_in_page(page)
        page.screenshot(path=str(ART / "sso_sign_in.png"))

        # a lead: Home, with the lead's pages in the sidebar
        t0 = _through_the_provider(page, idp, "lea")
        page.get_by_text("Signed in as lea (lead)").first.wait_for(timeout=60_000)
        print(f"\nsign-in through the provider, click to signed in: {time.perf_counter() - t0:.2f} s")
        page.get_by_text("Signed in by single sign-on").first.wait_for(timeout=30_000)
        page.get_by_role("heading", name="Project").wait_for(timeout=30_000)
        assert page.url.rstrip("/") == url
        sidebar = page.locator('[data-testid="stSidebar"]')
        for link in ("Decision", "Admin"):
            sidebar.get_by_role("link", name=link).wait_for(timeout=30_000)
        settle(page)
        page.screenshot(path=str(ART / "sso_lead_home.png"))
        _sign_out(page, idp)
        page.reload()
        _sign_in_page(page)
        assert page.get_by_text("Signed in as").count() == 0  # Streamlit's identity cookie is gone

        # an SME: the Label page, and no lead page in the sidebar
        _through_the_provider(page, idp, "sam")
        page.get_by_text("Signed in as sam (sme)").first.wait_for(timeout=60_000)
        page.locator("text=/^Item q\\d+/").first.wait_for(timeout=60_000)
        assert "/Label" in page.url
        assert sidebar.get_by_role("link", name="Decision").count() == 0
        page.locator('[data-testid="stForm"] [role="radiogroup"]').first.wait_for(timeout=60_000)
        settle(page)
        page.screenshot(path=str(ART / "sso_sme_label.png"))
        _sign_out(page, idp)

        # someone the provider knows but Tiebreak does not: refused, and can sign out to try another
        _through_the_provider(page, idp, "eve")
        refusal = page.locator('[data-testid="stAlertContentError"]').first
        refusal.wait_for(timeout=60_000)
        page.screenshot(path=str(ART / "sso_refused.png"))
        assert "no Tiebreak user has this e-mail" in refusal.inner_text()
        assert "eve@example.com" in refusal.inner_text().replace("\u2060", "")  # safetext: no autolink
        assert page.get_by_text("Signed in as").count() == 0
        _sign_out(page, idp, button="Sign out of the identity provider, to use another account")
        browser.close()
