"""The lead's pages in a real browser after 100 simulated labels with two candidates: screenshots
of the Decision, Regressions, Judges and Annotators pages (tests/_artifacts/decision_100.png,
regressions_100.png, judges_100.png, annotators_100.png), looked at by a person; the test checks
the cards, the charts, the flips, the judge fitness tables and the comparisons per candidate are
drawn, every candidate is named on the Judges page, and no exception is shown."""

from __future__ import annotations

import pathlib
import sys

import pytest

from calib.data import demo

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import ART, _open, _sign_in, labelled_lead_app, playwright, settle  # noqa: E402

pytestmark = pytest.mark.slow


def _whole_page(page, path) -> None:
    """Streamlit scrolls inside its main container, so a full-page screenshot shows one screen:
    grow the viewport to the content's height first."""
    h = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
                      "[data-testid=\"stAppViewContainer\"]')].map(e => e.scrollHeight), 1100)")
    page.set_viewport_size({"width": 1500, "height": min(int(h) + 40, 12000)})
    settle(page, quiet_ms=500)  # charts and grids re-measure at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1500, "height": 1100})


@pytest.fixture
def hundred_labels(tmp_path):
    """A demo project where a simulated SME labelled 100 items, with a fit every 20 labels."""
    # as the bundled demo: a baseline and two candidates
    url, proc = labelled_lead_app(tmp_path / "lead100.duckdb", 1000, seed=3, rounds=5, candidates=2)
    yield url
    proc.terminate()
    proc.wait(10)


def test_decision_regressions_judges_and_annotators_pages_after_100_labels(hundred_labels):
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser, page = _open(p)
        _sign_in(page, hundred_labels, "lea", "lea-password")
        page.get_by_role("link", name="Decision").wait_for(timeout=60_000)
        page.get_by_role("link", name="Decision").click()
        page.locator("text=/Recommendation/").first.wait_for(timeout=60_000)
        page.locator('[data-testid="stPlotlyChart"]').nth(5).wait_for(timeout=60_000)
        settle(page)
        assert page.locator('[data-testid="stMetric"]').count() >= len(demo.DIMENSIONS)
        assert not page.locator('[data-testid="stException"]').count()
        _whole_page(page, ART / "decision_100.png")
        page.get_by_role("link", name="Regressions").click()
        page.locator("text=/SME-confirmed regressions and improvements/").first.wait_for(timeout=60_000)
        page.locator("text=/Likely regressions among/").first.wait_for(timeout=60_000)
        settle(page)
        assert not page.locator('[data-testid="stException"]').count()
        assert page.locator('[data-testid="stExpander"]').count() >= 1  # the flips with their outputs
        _whole_page(page, ART / "regressions_100.png")
        page.get_by_role("link", name="Judges", exact=True).click()
        page.locator("text=/Judge fitness per model/").first.wait_for(timeout=60_000)
        page.locator("text=/Calibration curve/").first.wait_for(timeout=60_000)
        settle(page)
        assert not page.locator('[data-testid="stException"]').count()
        assert page.get_by_text("judge-lenient").count() >= 1
        _whole_page(page, ART / "judges_100.png")
        judges_text = page.locator('[data-testid="stMain"]').inner_text()
        assert all(c in judges_text for c in demo.ALL_CANDIDATES[:2]) and "(baseline)" in judges_text
        page.get_by_role("link", name="Annotators", exact=True).click()
        page.locator("text=/Drift over the session/").first.wait_for(timeout=60_000)
        page.locator("text=/A comparison is what an SME rates/").first.wait_for(timeout=60_000)
        settle(page)
        assert not page.locator('[data-testid="stException"]').count()
        _whole_page(page, ART / "annotators_100.png")
        browser.close()
