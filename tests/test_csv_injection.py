"""CSV exports a lead may open in a spreadsheet: no cell from data or users runs as a formula
(OWASP CSV injection: text starting with = + - @ tab CR gets a leading single quote), numbers stay
numbers, Parquet keeps every value exactly."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from calib import safetext
from calib.data import demo, ingest, store
from calib.insight import tables

FORMULAS = ["=1+1", "=HYPERLINK(\"http://127.0.0.1:9/x\",\"click\")", "+SUM(A1)", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1)", "\t=1+1", "\r=1+1"]


def formula_cells(text: str) -> list[str]:
    """Cells of a CSV that a spreadsheet would run: text starting with a formula character that is
    not a plain number (-0.5 is read as the number)."""
    out = []
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            if cell.startswith(safetext.CSV_FORMULA_START):
                try:
                    float(cell)
                except ValueError:
                    out.append(cell)
    return out


def formula_project(path: Path, n_items: int = 12) -> store.duckdb.DuckDBPyConnection:
    """A small project whose item ids, model names, notes and annotators start with formulas."""
    out = demo.generate(n_items, seed=4).outputs
    ids = {old: (FORMULAS[i % len(FORMULAS)] + f" i{i}") for i, old in enumerate(sorted(out.item_id.unique()))}
    out["item_id"] = out.item_id.map(ids)
    out["model"] = out.model.map({demo.BASELINE: "=base()", demo.CANDIDATE: "-cand"})
    f = path.parent / "formula_outputs.parquet"
    out.to_parquet(f, index=False)
    con = store.connect(path)
    ingest.import_file(con, f, baseline="=base()")
    for k, item in enumerate(sorted(ids.values())[:6]):
        con.execute("""INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, note, source,
                                           duration_ms) VALUES (?, '-cand', 'correctness', TRUE, ?, now(), ?, 'app', ?)""",
                    [item, "@sme", FORMULAS[k % len(FORMULAS)], -5 - k])
    con.execute("""INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, strength, annotator,
                                            created_at, note, source) VALUES (?, '=base()', '-cand', 'overall',
                                            'tie', -1, '+lead', now(), '=1+1', 'app')""", [sorted(ids.values())[0]])
    return con


def test_csv_cell_quotes_text_that_starts_a_formula_only():
    for f in FORMULAS:
        assert safetext.csv_cell(f) == "'" + f
    for v in ["plain", "a=b", "", None, -0.5, 3, "'already"]:
        assert safetext.csv_cell(v) == v


def test_labels_csv_export_has_no_formula_cell_and_keeps_numbers(tmp_path):
    con = formula_project(tmp_path / "f.duckdb")
    out = tmp_path / "labels.csv"
    n = ingest.export_labels(con, out)
    text = out.read_text()
    assert n == 7 and formula_cells(text) == []
    df = pd.read_csv(out)
    assert set(df.note.dropna()) <= {"'" + f for f in FORMULAS}
    assert sorted(df.duration_ms.dropna().astype(int))[:2] == [-10, -9]  # numbers, unquoted
    assert df.strength.dropna().tolist() == [-1]
    # Parquet (and JSONL) keep the values exactly
    pq = tmp_path / "labels.parquet"
    ingest.export_labels(con, pq)
    back = pd.read_parquet(pq)
    assert set(back.note.dropna()) == set(FORMULAS[:6]) | {"=1+1"}
    assert set(back.model.dropna()) == {"-cand"}


def test_fits_history_csv_quotes_names_and_keeps_negative_deltas_numeric():
    history = [{"fit_id": 1, "kind": "fast", "dimension": "=cmd()", "candidate": "@m", "mean": -0.05, "lo": -0.1,
                "hi": 0.02, "decision": "label more"}]
    text = tables.fits_history_csv(history).decode()
    assert formula_cells(text) == []
    df = pd.read_csv(io.StringIO(text))
    assert df.loc[0, "dimension"] == "'=cmd()" and df.loc[0, "mean"] == pytest.approx(-0.05)


def test_cli_queue_and_labels_export_write_no_formula_cell(tmp_path, capsys):
    from calib import cli

    db = tmp_path / "f.duckdb"
    formula_project(db).close()
    assert cli.main(["queue", "--n", "5", "--db", str(db)]) == 0
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) > 1 and formula_cells(printed) == []
    assert cli.main(["labels", "export", str(tmp_path / "cli.csv"), "--db", str(db)]) == 0
    assert formula_cells((tmp_path / "cli.csv").read_text()) == []


def test_the_apps_tables_offer_no_csv_download():
    """st.dataframe's toolbar CSV is written in the browser from the cells as shown (no
    neutralising): the app turns it off; its own exports are the neutralised ones above."""
    import tomllib

    cfg = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["disableDataExport"] is True
