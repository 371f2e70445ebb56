"""The sign-off report as a document: its content (fast, no browser) and its print to PDF in chromium
(slow): A4, more than one page, every section heading there under print media, no table wider than
the printable width. The PDF goes to tests/_artifacts/report.pdf."""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest

from calib.data import demo, store
from calib.insight import fitness, report
from calib.review import simulate
from calib.stats import engine

ROOT = pathlib.Path(__file__).resolve().parent.parent
ART = ROOT / "tests" / "_artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "project.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 300, seed=6)
    for _ in range(3):
        simulate.simulate_sme(con, 20)
        engine.fit_project(con, "fast", forecast_extra=[25, 50, 100])
    yield con, path
    con.close()


def _th_and_td(html: str) -> tuple[list[str], list[str]]:
    return re.findall(r"<th>(.*?)</th>", html), re.findall(r"<td>(.*?)</td>", html)


def test_report_content_with_and_without_judge_fitness(project, monkeypatch):
    con, path = project
    monkeypatch.setattr(report, "fitness", None)
    html = report.build_report(con, db_label=str(path))
    for title in report.SECTIONS:
        assert f">{title}</h2>" in html, title
    assert html.index(">Recommendation</h2>") < html.index(">Decision per dimension</h2>") < html.index(">Regressions</h2>")
    assert "not available" in html
    assert str(path.parent) not in html and path.name in html  # the file name only, no server path
    heads, cells = _th_and_td(html)
    assert heads and not [h for h in heads if "_" in h]  # human headers
    assert "None" not in cells and "nan" not in cells
    assert "much better than" in html  # the simulated SME compares side by side too
    assert "SME-confirmed regressions" in html and html.count("<div class='flip'>") <= report.SAMPLE_REGRESSIONS
    assert "@page { size: A4; margin: 15mm; }" in html and "@media print" in html

    monkeypatch.undo()  # the real calib.insight.fitness: per model, and the difference between the models
    html = report.build_report(con, db_label=str(path))
    rows = fitness.judge_fitness(con)
    assert rows and "Fitness band" in html and "Difference between the models" in html
    for r in rows:  # every judge x dimension x model row, with its band
        assert f"<td>{r['band']}</td>" in html


def test_report_from_a_nuts_fit_shows_convergence(project, monkeypatch):
    con, _ = project
    fit = engine.latest_fit(con)
    fit = {**fit, "kind": "nuts", "diagnostics": {d: {"max_rhat": 1.003, "min_ess_bulk": 812.0, "divergences": 0,
                                                      "warnings": []} for d in fit["diagnostics"]}}
    html = report.build_report(con, fit)
    assert "Max R-hat" in html and "1.003" in html and "812" in html and "Divergences" in html


@pytest.mark.slow
def test_report_prints_to_a_multi_page_a4_pdf_with_every_section(project, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    con, path = project
    src = tmp_path / "report.html"
    src.write_text(report.build_report(con, db_label=str(path)), encoding="utf-8")
    ART.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 680, "height": 1000})  # A4's printable width at 96 px/inch
        page.goto(src.as_uri())
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        page.emulate_media(media="print")
        headings = page.locator("h2").all_inner_texts()
        assert [h.strip() for h in headings] == report.SECTIONS
        # no table wider than the printable width (long cells wrap)
        too_wide = page.evaluate("""() => [...document.querySelectorAll('table, .flip, .plot')]
            .filter(t => t.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .map(t => t.outerHTML.slice(0, 120))""")
        assert too_wide == []
        breaks = page.evaluate("""() => [...document.querySelectorAll('h2')]
            .map(h => getComputedStyle(h).breakBefore)""")
        assert breaks.count("page") >= 5  # major sections start on a new page
        pdf = page.pdf(format="A4")
        browser.close()
    (ART / "report.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages > 1, pages


def test_decision_page_builds_the_report_from_the_nuts_fit(tmp_path, monkeypatch):
    """The Exports offer the latest NUTS fit when one exists; the report then says NUTS and shows
    its R-hat, and names the database by its file name only."""
    import json

    from streamlit.testing.v1 import AppTest

    from pages.shared import ui

    path = tmp_path / "nuts.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 200, seed=2)
    simulate.simulate_sme(con, 30)
    fit = engine.fit_project(con, "fast", forecast_extra=[25, 50])
    # a recorded NUTS fit (its numbers borrowed from the fast fit: sampling is not what is tested here)
    nuts = {**fit, "kind": "nuts", "diagnostics": {d: {"max_rhat": 1.004, "min_ess_bulk": 950.0, "divergences": 0,
                                                       "warnings": []} for d in fit["diagnostics"]}}
    con.execute("INSERT INTO fits (created_at, kind, n_labels, seconds, result) VALUES (current_timestamp, 'nuts', ?, 1, ?)",
                [fit["n_labels"], json.dumps(nuts)])
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    radio = at.radio(key="decision_report_fit")
    assert "the latest NUTS fit" in radio.options
    radio.set_value("the latest NUTS fit").run()
    next(b for b in at.button if b.label == "Build the sign-off report").click().run()
    assert not at.exception, at.exception
    html = at.session_state["decision_report"]
    assert "NUTS (authoritative)" in html and "Max R-hat" in html and "1.004" in html
    assert str(tmp_path) not in html and "nuts.duckdb" in html
    ui._connection.clear()  # the page's cached connection holds the file
