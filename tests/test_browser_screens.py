"""Every lead page read at 1280 and 1440 px wide, in a real browser (issue 24): no card text is cut
off, no chart title or legend runs past its chart, no table needs a sideways scroll, the Demo page
names each candidate's cards, and a project with no label yet gets a short Decision page that says
what to do next.

It also checks what the lead reads on each page is drawn (the flips on Regressions, judge fitness
per model and every candidate named on Judges, the comparisons on Annotators): one app fewer than a
separate lead-pages test (the suite's time on 2 cores).

Two apps start side by side (the CLI cannot write to a database an app holds, so the 0-label
project is its own database): a demo project with two candidates where a simulated SME labelled
40 items, and the same demo with no label. Full-page screenshots of Home, Decision (with labels and
with none), Demo, Judges, Annotators, Regressions, Run judges and Admin at both widths go to
tests/_artifacts/screens_<page>_<width>.png, to be looked at by a person.

``TIEBREAK_TEST_PORT=N`` starts the apps on ports N and N + 1 (default: free ports)."""

from __future__ import annotations

import os
import pathlib
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from calib.data import demo, store
from calib.review import simulate, users
from calib.stats import engine

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import ART, _open, _sign_in, _start_app, playwright, settle  # noqa: E402

pytestmark = pytest.mark.slow

WIDTHS = (1280, 1440)
EMPTY_MAX_HEIGHT = 2000  # px: the 0-label Decision page was 6,500 px of a prior-only fit

# Text whose width is larger than its box: cut off (ellipsis or overflow hidden). Cards: st.metric's
# label, value and delta and everything inside them. Charts: a title, legend or note outside its
# chart's box. Tables: a data grid whose columns are wider than the grid (a sideways scroll).
CLIPPED_JS = r"""() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]');
  const cards = main.querySelectorAll('[data-testid="stMetricLabel"], [data-testid="stMetricValue"], '
                                      + '[data-testid="stMetricDelta"]');
  for (const el of cards) {
    for (const e of [el, ...el.querySelectorAll('*')]) {
      if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
        out.push(`card ${el.dataset.testid} ${e.scrollWidth} > ${e.clientWidth} px: ${el.innerText.slice(0, 80)}`);
        break;
      }
    }
  }
  for (const plot of main.querySelectorAll('.js-plotly-plot')) {
    const box = plot.getBoundingClientRect();
    for (const t of plot.querySelectorAll('.gtitle, .legend, .annotation-text, .xtitle, .ytitle')) {
      const r = t.getBoundingClientRect();
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1))
        out.push(`chart ${t.getAttribute('class')} outside its chart: ${(t.textContent || '').slice(0, 80)}`);
    }
  }
  for (const g of main.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')) {
    if (g.scrollWidth > g.clientWidth + 1) {
      const hs = [...main.querySelectorAll('h3, strong')].filter(h => h.compareDocumentPosition(g) & 4);
      out.push(`table under "${hs.length ? hs[hs.length - 1].innerText.slice(0, 60) : ''}" scrolls sideways: `
               + `${g.scrollWidth} > ${g.clientWidth} px`);
    }
  }
  return out;
}"""

HEIGHT_JS = """() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], '
    + '[data-testid="stAppViewContainer"]')].map(e => e.scrollHeight))"""


def _labelled(path) -> None:
    """Two candidates, 40 items labelled by the simulated SME (fits at 20 and 40 labels, so the
    shrinkage charts have a history), demo mode on; an admin and an SME account."""
    con = store.connect(path)
    demo.load_demo(con, 300, seed=0, candidates=2)
    store.set_settings(con, demo_mode=True)
    users.add_user(con, "ada", "admin", "ada-password")  # an admin sees every lead page and all of Admin
    users.add_user(con, "sam", "sme", "sam-password")
    for _ in range(2):
        simulate.simulate_sme(con, 20)
        engine.fit_project(con, "fast", forecast_extra=[25, 50, 100, 200, 400, 800])
    con.close()


def _empty(path) -> None:
    con = store.connect(path)
    demo.load_demo(con, 300, seed=0, candidates=2)
    con.close()


@pytest.fixture
def apps(tmp_path):
    """(labelled app url, 0-label app url), started at the same time."""
    _labelled(tmp_path / "labelled.duckdb")
    _empty(tmp_path / "empty.duckdb")
    base = int(os.environ.get("TIEBREAK_TEST_PORT", "0"))
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda k: _start_app(tmp_path / ("labelled.duckdb", "empty.duckdb")[k],
                                                     base + k if base else None), range(2)))
    yield started[0][0], started[1][0]
    for _, proc in started:
        proc.terminate()
        proc.wait(10)


def _shoot(page, width: int, name: str) -> tuple[int, list[str]]:
    """The page's content height, what is cut off, and a full-page screenshot (Streamlit scrolls
    inside its main container: the viewport grows to the content first)."""
    height = int(page.evaluate(HEIGHT_JS))
    page.set_viewport_size({"width": width, "height": min(height + 40, 12_000)})
    settle(page, quiet_ms=500)  # charts and grids re-measure at the new size
    try:  # on a loaded machine Plotly's resize may still be pending: what stays cut after 8 s is cut
        page.wait_for_function(f"() => ({CLIPPED_JS})().length === 0", timeout=8_000, polling=250)
    except playwright.TimeoutError:
        pass
    clipped = page.evaluate(CLIPPED_JS)
    page.screenshot(path=str(ART / f"screens_{name}_{width}.png"), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})
    return height, clipped


# page link, text that says it is drawn, charts to wait for
PAGES = [("Home", "Where the judges disagree most", 0), ("Decision", "Recommendation per candidate", 12),
         ("Demo", "vs the baseline", 6), ("Judges", "Calibration curve", 1),
         ("Annotators", "Drift over the session", 0), ("Regressions", "Likely regressions among", 0),
         ("Run judges", "Calls so far", 0), ("Admin", "Add a user", 0)]


def _check_both_widths(page, name: str) -> list[str]:
    """Screenshots and clipped text at each width: the viewport is resized, as a person resizes
    the window (the page lays out again; the script does not rerun)."""
    problems = []
    for width in WIDTHS:
        _, clipped = _shoot(page, width, name)
        problems += [f"{name} at {width} px: {c}" for c in clipped]
    return problems


def test_every_page_is_readable_at_1280_and_1440_px(apps):
    labelled, empty = apps
    ART.mkdir(parents=True, exist_ok=True)
    problems = []
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        # a project with no label: the Decision page is short and says what to do next
        page.goto(empty + "/Decision")
        page.locator("text=/No SME labels yet/").first.wait_for(timeout=60_000)
        settle(page)
        for width in WIDTHS:
            height, clipped = _shoot(page, width, "decision_no_labels")
            assert height < EMPTY_MAX_HEIGHT, f"{height} px at {width} px wide"
            problems += [f"decision (no labels) at {width} px: {c}" for c in clipped]
        text = page.locator('[data-testid="stMain"]').inner_text()
        assert "Label page" in text and "tiebreak labels import" in text and "Demo page" in text, text
        assert not page.locator('[data-testid="stMetric"]').count()
        assert not page.locator('[data-testid="stPlotlyChart"]').count()

        _sign_in(page, labelled, "ada", "ada-password")
        for link, ready, charts in PAGES:
            page.get_by_role("link", name=link, exact=True).wait_for(timeout=60_000)
            page.get_by_role("link", name=link, exact=True).click()
            page.locator(f"text=/{ready}/").first.wait_for(timeout=60_000)
            if charts:
                page.locator('[data-testid="stPlotlyChart"]').nth(charts - 1).wait_for(timeout=60_000)
            settle(page)
            assert not page.locator('[data-testid="stException"]').count(), link
            if link == "Demo":  # each candidate's cards under its name, a card per dimension
                main = page.locator('[data-testid="stMain"]').inner_text()
                for cand in demo.ALL_CANDIDATES[:2]:
                    assert f"{cand} vs the baseline" in main, main[:2000]
                assert page.locator('[data-testid="stMetric"]').count() == 2 * len(demo.DIMENSIONS)
            if link == "Decision":
                assert page.locator('[data-testid="stMetric"]').count() >= 2 * len(demo.DIMENSIONS)
            # what the lead reads on each page is drawn (this test took over test_browser_lead_pages')
            if link == "Regressions":
                page.locator("text=/SME-confirmed regressions and improvements/").first.wait_for(timeout=60_000)
                assert page.locator('[data-testid="stExpander"]').count() >= 1  # the flips with their outputs
            if link == "Judges":
                page.locator("text=/Judge fitness per model/").first.wait_for(timeout=60_000)
                assert page.get_by_text("judge-lenient").count() >= 1
                main = page.locator('[data-testid="stMain"]').inner_text()
                assert all(c in main for c in demo.ALL_CANDIDATES[:2]) and "(baseline)" in main
            if link == "Annotators":
                page.locator("text=/A comparison is what an SME rates/").first.wait_for(timeout=60_000)
            problems += _check_both_widths(page, link.lower().replace(" ", "_"))
        browser.close()
    assert not problems, "\n".join(problems)
