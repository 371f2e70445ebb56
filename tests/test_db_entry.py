"""Issue 24: `--db`/`$TIEBREAK_DB` opens an existing Tiebreak database only. A missing path, a CSV or
Parquet file, a foreign DuckDB file are refused in one line and left untouched; `init`, `import --new`
and `demo` create; every write reports what it wrote as read back from the file."""

from __future__ import annotations

import pathlib

import duckdb
import pytest

from calib import cli
from calib.data import demo, store
from calib.errors import TiebreakError

from conftest import write_table

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def good_csv(tmp_path, small_outputs):
    return write_table(small_outputs, tmp_path / "good.csv")


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("args", [
    ["import", "{good}"], ["users", "add", "bob", "--role", "sme", "--password", "long-enough-pw"],
    ["settings", "set", "margin", "0.03"], ["status"]])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_data_file_as_db_is_refused_and_untouched(tmp_path, good_csv, small_outputs, capsys, args, kind):
    target = good_csv if kind == "csv" else write_table(small_outputs, tmp_path / "copy.parquet")
    if kind == "csv":
        target = tmp_path / "copy.csv"
        target.write_bytes(good_csv.read_bytes())
    before = target.read_bytes()
    argv = [a.replace("{good}", str(good_csv)) for a in args] + ["--db", str(target)]
    assert cli.main(argv) == 2
    err = _err_line(capsys)
    assert f"is a {'CSV' if kind == 'csv' else 'Parquet'} file, not a Tiebreak database" in err
    assert target.read_bytes() == before
    assert not pathlib.Path(str(target) + ".wal").exists()


def test_a_missing_db_is_refused_and_not_created(tmp_path, good_csv, capsys, monkeypatch):
    typo = tmp_path / "projcet.duckdb"
    for argv in (["import", str(good_csv)], ["status"], ["users", "list"], ["regressions"]):
        assert cli.main([*argv, "--db", str(typo)]) == 2
        assert _err_line(capsys) == (f"tiebreak: error: no such database: {typo}; create it with `tiebreak init {typo}` "
                                     f"or `tiebreak import FILE --db {typo} --new`")
    monkeypatch.setenv("TIEBREAK_DB", str(typo))
    assert cli.main(["status"]) == 2
    assert f"no such database: {typo} (from $TIEBREAK_DB)" in _err_line(capsys)
    assert not typo.exists()


def test_a_foreign_duckdb_file_is_refused_and_not_migrated_into(tmp_path, capsys):
    path = tmp_path / "other.duckdb"
    c = duckdb.connect(str(path))
    c.execute("CREATE TABLE mine (x INTEGER)")
    c.close()
    assert cli.main(["status", "--db", str(path)]) == 2
    assert "a DuckDB database but not a Tiebreak one" in _err_line(capsys)
    c = duckdb.connect(str(path))
    assert [r[0] for r in c.execute("SHOW TABLES").fetchall()] == ["mine"]
    c.close()


def test_store_connect_never_opens_a_data_file(tmp_path, good_csv):
    """The library level too: DuckDB 2 would open the CSV as an in-memory database (writes lost)."""
    with pytest.raises(TiebreakError, match="is a CSV file"):
        store.connect(good_csv)
    with pytest.raises(TiebreakError, match="no such database"):
        store.connect(tmp_path / "missing.duckdb", create=False)
    store.connect(tmp_path / "fresh.duckdb").close()  # tests and build code still create with connect


def test_init_then_import_reads_back_from_the_file(tmp_path, good_csv, capsys):
    db = tmp_path / "p.duckdb"
    assert cli.main(["init", str(db)]) == 0
    assert "new empty Tiebreak database" in capsys.readouterr().out
    assert cli.main(["init", str(db)]) == 2
    assert "already exists" in _err_line(capsys)
    assert cli.main(["import", str(good_csv), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{db} now holds 40 items, 80 outputs" in out and "(read back from the file)" in out
    assert cli.main(["users", "add", "bob", "--role", "sme", "--password", "long-enough-pw", "--db", str(db)]) == 0
    assert f"saved in {db} (read back)" in capsys.readouterr().out
    c = store.connect(db, read_only=True, create=False)
    assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 40
    assert c.execute("SELECT role FROM users WHERE name = 'bob'").fetchone()[0] == "sme"
    c.close()


def test_import_new_creates_refuses_existing_and_leaves_nothing_on_bad_input(tmp_path, good_csv, small_outputs, capsys):
    db = tmp_path / "n.duckdb"
    bad = write_table(small_outputs.drop(columns=["output"]), tmp_path / "bad.csv")
    assert cli.main(["import", str(bad), "--db", str(db), "--new"]) == 2
    assert "bad.csv, row 0, column 'output'" in _err_line(capsys)
    assert not db.exists() and not pathlib.Path(str(db) + ".wal").exists()
    assert cli.main(["import", str(good_csv), "--db", str(db), "--new"]) == 0
    assert "now holds 40 items" in capsys.readouterr().out
    assert cli.main(["import", str(good_csv), "--db", str(db), "--new"]) == 2
    assert "already exists" in _err_line(capsys)


def test_demo_still_creates_its_database(tmp_path, capsys):
    db = tmp_path / "d.duckdb"
    assert cli.main(["demo", "--db", str(db), "--items", "30"]) == 0
    assert "read back from the file: 30 items, 60 outputs" in capsys.readouterr().out


def test_the_app_refuses_a_missing_db_with_the_same_line(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    typo = tmp_path / "typo.duckdb"
    monkeypatch.setenv("TIEBREAK_DB", str(typo))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("no such database" in e.value and "tiebreak init" in e.value for e in at.error)
    assert not typo.exists()


def test_bundled_demo_is_still_built_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("TIEBREAK_DB", raising=False)
    monkeypatch.setattr(store, "DEMO_DB", tmp_path / "demo.duckdb")
    con = demo.open_db()
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] > 0
    con.close()
