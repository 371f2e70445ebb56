"""End to end in a real browser: `streamlit run` on 127.0.0.1, Debian's chromium driven by Playwright.

An SME signs in and rates items with the keyboard only; the labels are then found in DuckDB.
Reports the median time from submit to the next item shown (printed; quoted in the notes) and
saves screenshots under tests/_artifacts/. Skipped when chromium or playwright is missing
(.ci/run installs both).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import pytest

from calib.data import demo, store
from calib.review import users

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from browser_util import rerun_mark, settle  # noqa: E402,F401 - rerun_mark: for the other browser tests

ROOT = pathlib.Path(__file__).resolve().parent.parent
ART = ROOT / "tests" / "_artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.slow

playwright = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(db, port: int | None = None) -> tuple[str, subprocess.Popen]:
    """`streamlit run app.py` on ``port`` (default: a free one) of 127.0.0.1 against ``db``; returns
    (url, process) once healthy."""
    port = port or _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "TIEBREAK_DB": str(db)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if healthy(url, 60):
        return url, proc
    proc.kill()
    pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])


def healthy(url: str, seconds: float) -> bool:
    """Poll the app's health endpoint every 0.1 s for up to ``seconds``: is it up?"""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _open(p):
    """Debian's chromium, headless, with nothing that calls out (this machine's network is closed)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])
    return browser, browser.new_page(viewport={"width": 1500, "height": 1100})


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "browser.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 150, seed=8)
    users.add_user(con, "ana", "sme", "ana-password")
    con.close()
    url, proc = _start_app(db)
    yield url, proc, db
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


NEXT_ITEM_JS = r"""old => {
    const e = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
        .find(x => /^Item q\d+/.test(x.innerText));
    return e && !e.innerText.startsWith('Item ' + old + ' ');
}"""


FORM_READY_JS = r"""n => {
    const groups = document.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]');
    return groups.length === n && !document.querySelector('[data-testid="stForm"] input:checked')
        && document.__tiebreakKeys === true;
}"""


FORM_ONE_ANSWERED_JS = r"""n => {
    const groups = document.querySelectorAll('[data-testid="stForm"] [role="radiogroup"]');
    return groups.length === n && document.querySelectorAll('[data-testid="stForm"] input:checked').length === 1
        && document.__tiebreakKeys === true;
}"""


def _item(page) -> str:
    return page.locator("text=/^Item q\\d+/").first.inner_text().split()[1]


def test_sign_in_and_rate_with_the_keyboard_only(server):
    url, proc, db = server
    ART.mkdir(parents=True, exist_ok=True)
    dims = len(demo.DIMENSIONS)
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        page.goto(url)
        page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
        page.get_by_role("textbox", name="User name").focus()
        page.keyboard.type("ana")
        page.keyboard.press("Tab")
        page.keyboard.type("ana-password")
        page.keyboard.press("Enter")
        page.locator("text=/^Item q\\d+/").first.wait_for(timeout=60_000)
        page.wait_for_function("() => document.__tiebreakKeys === true", timeout=30_000)  # shortcuts loaded
        rated, times = [], []
        for n in range(10):
            page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=30_000)  # typing before it would be lost
            settle(page)  # the rerun that drew the item is over: nothing redraws the form under the keys
            item = _item(page)
            page.evaluate("document.activeElement && document.activeElement.blur()")  # not in a text box
            for _ in range(2 * dims):
                page.keyboard.press("1")
            page.keyboard.press("3")  # about the same
            # the hint follows the form's state as the browser applies each key (not synchronously)
            page.wait_for_function("() => document.querySelector('#tiebreak-next').innerText.startsWith('All answered')",
                                   timeout=10_000)
            if n == 0:
                page.screenshot(path=str(ART / "label_filled.png"), full_page=True)
            t0 = time.perf_counter()
            page.keyboard.press("Control+Enter")
            page.wait_for_function(NEXT_ITEM_JS, arg=item, timeout=20_000)
            times.append(time.perf_counter() - t0)
            rated.append(item)
        page.screenshot(path=str(ART / "label_next.png"), full_page=True)
        browser.close()
    proc.terminate()
    proc.wait(10)
    con = store.connect(db, read_only=True)
    rows = con.execute("SELECT item_id, count(*), bool_and(verdict) FROM labels WHERE annotator = 'ana' GROUP BY item_id").fetchall()
    assert {r[0] for r in rows} == set(rated)
    assert all(r[1] == 2 * dims and r[2] for r in rows)
    prefs = con.execute("SELECT DISTINCT preference FROM pair_labels WHERE annotator = 'ana'").fetchall()
    assert prefs == [("tie",)]
    median_ms = 1000 * statistics.median(times)
    (ART / "timing.txt").write_text(f"submit to next item: median {median_ms:.0f} ms, all {[round(1000 * t) for t in times]}\n")
    print(f"\nsubmit to next item: median {median_ms:.0f} ms over {len(times)} items")


def labelled_lead_app(db, items: int, seed: int, rounds: int, candidates: int = 1) -> tuple[str, subprocess.Popen]:
    """Start the app on a demo project with a history: a lead "lea", and a fast fit after each of
    ``rounds`` rounds of 20 items labelled by the simulated SME."""
    from calib.stats import engine
    from calib.review import simulate

    con = store.connect(db)
    demo.load_demo(con, items, seed=seed, candidates=candidates)
    users.add_user(con, "lea", "lead", "lea-password")
    for _ in range(rounds):
        simulate.simulate_sme(con, 20)
        engine.fit_project(con, "fast", forecast_extra=[25, 50, 100, 200, 400, 800])
    con.close()
    return _start_app(db)


@pytest.fixture
def lead_server(tmp_path):
    """A demo project with a history: three fits as a simulated SME labels 20, 40, 60 items."""
    url, proc = labelled_lead_app(tmp_path / "lead.duckdb", 300, seed=5, rounds=3)
    yield url
    proc.terminate()
    proc.wait(10)


def test_lead_sees_the_decision_page_and_shrinkage_plot(lead_server):
    """Screenshots of the decision page and of the shrinkage plot (tests/_artifacts/), looked at by
    a person; the test checks the verdict cards and the charts are drawn."""
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        page.goto(lead_server)
        page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
        page.get_by_role("textbox", name="User name").fill("lea")
        page.get_by_role("textbox", name="Password").fill("lea-password")
        page.keyboard.press("Enter")
        page.get_by_role("link", name="Decision").wait_for(timeout=60_000)
        page.get_by_role("link", name="Decision").click()
        page.locator("text=/Recommendation/").first.wait_for(timeout=60_000)
        charts = page.locator('[data-testid="stPlotlyChart"]')
        charts.nth(5).wait_for(timeout=60_000)  # shrinkage + forest per dimension
        settle(page)  # plotly has drawn every chart
        assert page.locator('[data-testid="stMetric"]').count() == len(demo.DIMENSIONS) + 1  # + the win rate card
        page.screenshot(path=str(ART / "decision_page.png"), full_page=True)
        charts.first.screenshot(path=str(ART / "shrinkage_plot.png"))
        assert page.locator(".js-plotly-plot .scatterlayer").count() >= 3
        browser.close()


# --------------------------------------------------------------------------- hostile data


class _Listener:
    """A tiny HTTP server on 127.0.0.1 that records every request (it should get none)."""

    def __init__(self):
        import http.server
        import threading

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile_server(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import hostile

    listener = _Listener()
    db = tmp_path / "hostile.duckdb"
    names = hostile.build(db, listener.port)
    url, proc = _start_app(db)
    yield url, listener, names, db, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    listener.close()


# Elements built from the data that must not exist: images, links, scripts, frames, objects.
LEAKS_JS = """port => {
    const bad = [];
    const hit = (s) => s && (s.includes(':' + port) || /pixel-|img-|\\/a-|\\/l-/.test(s));
    for (const e of document.querySelectorAll('img, image, source, video, audio, iframe, object, embed'))
        if (hit(e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('data') || '')) bad.push(e.outerHTML.slice(0, 200));
    // no link from the data anywhere, the lead-written guidelines included (issue 25: links shown as text)
    for (const a of document.querySelectorAll('a')) {
        const href = a.getAttribute('href') || '';
        if (hit(href) || /^(mailto|data|javascript):/.test(href)) bad.push(a.outerHTML.slice(0, 200));
    }
    for (const s of document.querySelectorAll('script')) if (/^\\s*alert\\(/.test(s.textContent)) bad.push('script ' + s.textContent.slice(0, 100));
    for (const e of document.querySelectorAll('[onerror], [onload]')) bad.push('handler ' + e.outerHTML.slice(0, 200));
    return bad;
}"""


FORM_TOP_JS = "() => document.querySelector('[data-testid=\"stForm\"]').getBoundingClientRect().top + window.scrollY"


def _watch(page, app_url, seen):
    """Record every request that is not to the app itself (or, for the report, to its own file) and
    every dialog."""
    allowed = (app_url, app_url.replace("http", "ws"), "data:", "blob:") if app_url.startswith("http") \
        else (app_url, "data:", "blob:")

    def on_request(req):
        u = req.url
        if not u.startswith(allowed):
            seen["foreign"].append(u)
        elif "pixel-" in u or "img-" in u or "/a-" in u:
            seen["foreign"].append(u)  # a relative URL from a name (dimensions cannot hold ':')

    def on_dialog(d):
        seen["dialogs"].append(d.message)
        d.dismiss()

    page.on("request", on_request)
    page.on("dialog", on_dialog)
    page.on("websocket", lambda ws: on_request(type("R", (), {"url": ws.url})()))


def _sign_in(page, url, name, password):
    page.goto(url)
    page.get_by_role("textbox", name="User name").wait_for(timeout=60_000)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.keyboard.press("Enter")


def test_hostile_data_is_shown_as_text_and_nothing_calls_out(hostile_server):
    """Every name and text field carries markdown images, HTML, <script>, links and bidi overrides
    aimed at a listener on 127.0.0.1: an admin opens every page and the report, an SME labels with
    the keyboard (every shortcut); the listener hears nothing, no request leaves the app, no dialog
    opens, no image or link from the data is in the DOM, and the payloads are readable as text."""
    url, listener, names, db, proc = hostile_server
    ART.mkdir(parents=True, exist_ok=True)
    seen = {"foreign": [], "dialogs": []}
    port = listener.port
    dims = len(names["dims"])
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])

        # ---- an admin opens every page
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
        page = ctx.new_page()
        _watch(page, url, seen)
        _sign_in(page, url, "adm", "adm-password")
        page.get_by_role("link", name="Decision").wait_for(timeout=60_000)
        settle(page)
        labels = [t.strip() for t in page.locator('[data-testid="stSidebar"] a').all_inner_texts() if t.strip()]
        assert {"Home", "Label", "Decision", "Judges", "Annotators"} <= set(labels)
        for label in labels:
            page.locator('[data-testid="stSidebar"] a', has_text=label).first.click()
            settle(page)
            page.screenshot(path=str(ART / f"hostile_admin_{label.lower().replace(' ', '_')}.png"), full_page=True)
            assert page.evaluate(LEAKS_JS, port) == [], label
            assert not page.locator('[data-testid="stException"]').count(), label
        # back on the Decision page: the payloads are there, as text; build and open the report
        page.locator('[data-testid="stSidebar"] a', has_text="Decision").first.click()
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=90_000)
        settle(page)
        assert page.evaluate(LEAKS_JS, port) == []
        forest = page.locator('[data-testid="stPlotlyChart"]').nth(1).inner_text()  # ticks and title, as text
        assert f"segEU![x](http://127.0.0.1:{port}/pixel-segEU.png)" in forest and "<img src=/img-" in forest
        page.get_by_text("Exports").click()
        settle(page)  # no rerun under way: the click reaches the button that stays
        page.get_by_role("button", name="Build the sign-off report").click()
        try:
            page.get_by_role("button", name="Sign-off report (HTML)").wait_for(timeout=300_000)
            settle(page)  # the run that made the report is over: the button's file stays
        finally:
            page.screenshot(path=str(ART / "hostile_admin_exports.png"), full_page=True)
        with page.expect_download(timeout=60_000) as dl:
            page.get_by_role("button", name="Sign-off report (HTML)").click()
        report_file = ART / "hostile_report.html"
        dl.value.save_as(str(report_file))
        rpage = ctx.new_page()
        _watch(rpage, report_file.as_uri(), seen)
        rpage.goto(report_file.as_uri())
        rpage.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        settle(rpage)
        rpage.screenshot(path=str(ART / "hostile_report.png"), full_page=False)
        assert rpage.evaluate(LEAKS_JS, port) == []
        assert f"![x](http://127.0.0.1:{port}/pixel-base.png)" in rpage.locator("body").inner_text()
        ctx.close()

        # ---- an SME labels with the keyboard
        ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = ctx.new_page()
        _watch(page, url, seen)
        _sign_in(page, url, names["sme"], "sme-password")
        page.locator("text=/^Item q\\d+/").first.wait_for(timeout=60_000)
        page.wait_for_function("() => document.__tiebreakKeys === true", timeout=30_000)
        settle(page)
        page.screenshot(path=str(ART / "hostile_label.png"), full_page=True)
        assert page.evaluate(LEAKS_JS, port) == []
        body = page.locator("body").inner_text().replace("\u2060", "")  # word joiners stop autolinks
        assert "[U+202E]" in body and "\u202e" not in body
        assert any(f"{s}![x](http://127.0.0.1:{port}/pixel-{s}.png)" in body for s in ("segEU", "segNA"))
        nxt = page.locator("#tiebreak-next")
        page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=30_000)
        settle(page)  # no rerun under way: the keys reach the form that stays
        page.evaluate("document.activeElement && document.activeElement.blur()")
        assert nxt.inner_text().startswith("Next digit (1-2) answers: dimA") and "· left" in nxt.inner_text()
        # Alt+R shows and hides the reference
        before = page.locator('[data-testid="stCode"]').count()
        page.keyboard.press("Alt+r")
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"stCode\"]').length > {before}",
                               timeout=20_000)
        assert f"ref![x](http://127.0.0.1:{port}/pixel-ref.png)" in page.locator("body").inner_text()
        page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=30_000)
        settle(page)  # no rerun under way: the keys reach the form that stays
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press("1")
        page.wait_for_function("() => document.querySelector('#tiebreak-next').innerText.includes('· right')",
                               timeout=10_000)  # the hint follows the key asynchronously
        page.screenshot(path=str(ART / "hostile_label_reference.png"), full_page=True)
        settle(page)  # the answer's draft save is over
        page.keyboard.press("Alt+r")
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"stCode\"]').length === {before}",
                               timeout=20_000)
        rated = []
        for n in range(3):
            # the first item keeps its one answer across the Alt+R rerun: wait until the rerun has
            # drawn the form again with it (and the key script is back) before typing on
            page.wait_for_function(FORM_READY_JS if n else FORM_ONE_ANSWERED_JS, arg=2 * dims + 1, timeout=30_000)
            settle(page)  # no rerun under way: the keys reach the form that stays
            item = _item(page)
            page.evaluate("document.activeElement && document.activeElement.blur()")
            for _ in range(2 * dims - (0 if n else 1)):
                page.keyboard.press("1")
            page.keyboard.press("3")
            # the hint follows the form's state as the browser applies each key (not synchronously)
            page.wait_for_function("() => document.querySelector('#tiebreak-next').innerText.startsWith('All answered')",
                                   timeout=10_000)
            # a 50 KB output scrolls in its box: the form stays near the top of the page
            assert page.evaluate(FORM_TOP_JS) < 1500
            page.keyboard.press("Control+Enter")
            page.wait_for_function(NEXT_ITEM_JS, arg=item, timeout=30_000)
            rated.append(item)
            assert page.evaluate(LEAKS_JS, port) == []
        # Alt+U: undo (the previous item comes back), Alt+S: skip, Alt+F: flag
        page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=30_000)
        settle(page)  # no rerun under way: the keys reach the form that stays
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press("Alt+u")
        page.get_by_text("Re-rate your previous item: the new rating").wait_for(timeout=20_000)
        page.wait_for_function(f"() => document.body.innerText.includes('Item ' + {json.dumps(rated[-1])})",
                               timeout=20_000)
        for key, message in (("Alt+s", "Skipped"), ("Alt+f", "Flagged")):
            page.wait_for_function(FORM_READY_JS, arg=2 * dims + 1, timeout=30_000)
            settle(page)  # no rerun under way: the keys reach the form that stays
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.keyboard.press(key)
            page.get_by_text(message).first.wait_for(timeout=20_000)
        settle(page)
        page.screenshot(path=str(ART / "hostile_label_after.png"), full_page=True)
        assert page.evaluate(LEAKS_JS, port) == []
        ctx.close()
        browser.close()
    assert listener.hits == []
    assert seen["foreign"] == []
    assert seen["dialogs"] == []
    proc.terminate()  # the app holds the database
    proc.wait(10)
    con = store.connect(db, read_only=True)
    stored = {r[0] for r in con.execute("SELECT DISTINCT item_id FROM labels WHERE annotator = ?", [names["sme"]]).fetchall()}
    outcomes = {r[0] for r in con.execute("SELECT outcome FROM leases WHERE annotator = ?", [names["sme"]]).fetchall()}
    con.close()
    # the page shows ids cut at a space, with word joiners that stop autolinks
    assert all(any(s.startswith(r.replace("\u2060", "")) for s in stored) for r in rated)
    assert {"skipped", "flagged"} <= outcomes
