"""End to end in a real browser: `streamlit run` on 127.0.0.1, Debian's chromium driven by Playwright.

An SME signs in and rates items with the keyboard only; the labels are then found in DuckDB.
Reports the median time from submit to the next item shown (printed; quoted in the notes) and
saves screenshots under tests/_artifacts/. Skipped when chromium or playwright is missing
(.ci/run installs both).
"""

from __future__ import annotations

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


def _start_app(db) -> tuple[str, subprocess.Popen]:
    """`streamlit run app.py` on a free 127.0.0.1 port against ``db``; returns (url, process) once healthy."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "TIEBREAK_DB": str(db)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return url, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])


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
            item = _item(page)
            page.evaluate("document.activeElement && document.activeElement.blur()")  # not in a text box
            for _ in range(2 * dims):
                page.keyboard.press("1")
            page.keyboard.press("3")  # about the same
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


@pytest.fixture
def lead_server(tmp_path):
    """A demo project with a history: three fits as a simulated SME labels 20, 40, 60 items."""
    from calib.stats import engine
    from calib.review import simulate

    db = tmp_path / "lead.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 300, seed=5)
    users.add_user(con, "lea", "lead", "lea-password")
    for _ in range(3):
        simulate.simulate_sme(con, 20)
        engine.fit_project(con, "fast", forecast_extra=[25, 50, 100, 200, 400, 800])
    con.close()
    url, proc = _start_app(db)
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
        page.wait_for_timeout(1500)  # let plotly finish drawing
        assert page.locator('[data-testid="stMetric"]').count() == len(demo.DIMENSIONS)
        page.screenshot(path=str(ART / "decision_page.png"), full_page=True)
        charts.first.screenshot(path=str(ART / "shrinkage_plot.png"))
        assert page.locator(".js-plotly-plot .scatterlayer").count() >= 3
        browser.close()
