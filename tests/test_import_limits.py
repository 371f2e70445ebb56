"""Hostile import files (issue 25) and misleading ones (issue 24): each refused with the one-line
error naming file/row/column, exit 2 from the CLI, nothing stored; limits are settings."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pandas as pd
import pytest

from calib.data import importjob, ingest, readers, store
from calib.errors import InputError
from conftest import write_table


def counts(con):
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("items", "outputs", "judge_scores", "pair_judge_prefs", "labels")}


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


def _frame(n=4, models=("base", "cand")):
    rows = [{"item_id": f"i{k}", "model": m, "prompt": f"p{k}", "output": f"o{k}{m}", "judge:j:correctness": 1}
            for k in range(n) for m in models]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- problem 1: wide files


def test_100000_column_csv_is_refused_fast_by_the_cli(tmp_path):
    """The 1.7 MB file that took 23 GB: refused from its header, one line, exit 2."""
    cols = ["item_id", "model", "prompt", "output"] + [f"judge:j{i}:d" for i in range(100_000)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(cols) + "\n" + ",".join(["a", "m", "p", "o"] + ["1"] * 100_000) + "\n")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "calib.cli", "import", str(path), "--db", str(tmp_path / "w.duckdb")],
                       capture_output=True, text=True)
    assert time.perf_counter() - t < 30  # generous on a loaded machine; ~1 s idle
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "wide.csv, row 0" in r.stderr and "import_max_columns" in r.stderr


def test_judge_and_column_limits_are_settings(con, tmp_path):
    df = _frame(1, ("base",))
    for i in range(12):
        df[f"judge:j{i}:d"] = 1
    path = write_table(df, tmp_path / "judges.csv")
    store.set_settings(con, import_max_judge_columns=10)
    with pytest.raises(InputError, match="13 judge:/pref: columns; the limit is 10") as info:
        ingest.import_file(con, path)
    assert info.value.row == 0 and "import_max_judge_columns" in _one_line(info.value)
    store.set_settings(con, import_max_judge_columns=200, import_max_columns=8)
    for fmt in (".csv", ".jsonl", ".parquet"):
        with pytest.raises(InputError, match="the limit is 8 .setting import_max_columns"):
            ingest.import_file(con, write_table(df, tmp_path / f"cols{fmt}"))
    store.set_settings(con, import_max_columns=500)
    assert ingest.import_file(con, path).added["judge_scores"] == 13
    assert readers.Limits.from_settings(store.get_settings(con)).max_columns == 500


def test_many_judge_columns_at_the_limit_import(con, tmp_path):
    """200 judge columns (the default limit): no 'Max expression depth' from DuckDB's parser."""
    df = _frame(2, ("base",))
    df = pd.concat([df, pd.DataFrame({f"judge:j{i}:d": [0.5] * len(df) for i in range(199)})], axis=1)
    rep = ingest.import_file(con, write_table(df, tmp_path / "many.csv"))
    assert rep.added["judge_scores"] == 2 * 200


# --------------------------------------------------------------------------- problem 5: row bombs


@pytest.mark.parametrize("fmt", [".csv", ".jsonl", ".parquet"])
def test_row_limit_refuses_before_work(con, tmp_path, fmt):
    store.set_settings(con, import_max_rows=5)
    path = write_table(_frame(3), tmp_path / f"rows{fmt}")  # 6 rows
    with pytest.raises(InputError, match="rows; the limit is 5 .setting import_max_rows") as info:
        ingest.import_file(con, path)
    assert str(path) in _one_line(info.value)
    assert counts(con)["outputs"] == 0
    store.set_settings(con, import_max_rows=6)
    assert ingest.import_file(con, path).added["outputs"] == 6


def test_quoted_multiline_rows_are_counted_by_duckdb(con, tmp_path):
    """A field spanning lines is one row: the quick line count is not used for such files."""
    path = tmp_path / "multi.csv"
    path.write_text('item_id,model,prompt,output\na,m,"line one\nline two\nline three",o\n')
    store.set_settings(con, import_max_rows=1)
    assert ingest.import_file(con, path).added["outputs"] == 1
    assert con.execute("SELECT prompt FROM items").fetchone()[0] == "line one\nline two\nline three"


def test_byte_limit(con, tmp_path):
    path = write_table(_frame(3), tmp_path / "big.parquet")
    store.set_settings(con, import_max_bytes=100)
    with pytest.raises(InputError, match="bytes; the limit is 100 .setting import_max_bytes"):
        ingest.import_file(con, path)


# --------------------------------------------------------------------------- problem 8: bad files, one line


def _corrupt_parquet(path):
    duckdb.connect().execute(
        f"""COPY (SELECT 'q' || i AS item_id, 'm' AS model, md5(i::VARCHAR) || repeat('x', 40) AS prompt,
            md5((i * 7)::VARCHAR) AS output, random() AS "judge:j:c" FROM range(20000) t(i))
            TO '{path}' (FORMAT PARQUET, COMPRESSION ZSTD)""")
    data = bytearray(path.read_bytes())
    start, stop = len(data) // 8, len(data) // 2
    data[start:stop] = bytes((i * 97 + 13) % 256 for i in range(stop - start))
    path.write_bytes(bytes(data))
    return path


def test_corrupt_parquet_one_line_error_in_cli_and_app_paths(con, tmp_path):
    path = _corrupt_parquet(tmp_path / "corrupt.parquet")
    with pytest.raises(InputError) as info:
        ingest.import_file(con, path)
    assert str(path) in _one_line(info.value)
    assert counts(con)["items"] == 0
    with pytest.raises(InputError) as info:  # the app's path: the capped child reads every page
        importjob.import_isolated(con, path)
    assert "not a readable Parquet file" in _one_line(info.value)
    assert counts(con)["items"] == 0


def test_deeply_nested_jsonl_is_refused_and_shallow_nesting_is_text(con, tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    with pytest.raises(InputError, match="nested deeper than 20 levels") as info:
        ingest.import_file(con, deep)
    assert info.value.row == 1 and "import_max_depth" in _one_line(info.value)
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": "o", "context": {"docs": [1, [2]]}, '
                  '"judge:j:c": 0.5}\n')
    ingest.import_file(con, ok)
    assert con.execute("SELECT context FROM items").fetchone()[0] == '{"docs":[1,[2]]}'


def test_jsonl_line_that_is_not_an_object(con, tmp_path):
    p = tmp_path / "list.jsonl"
    p.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": "o"}\n[1, 2]\n')
    with pytest.raises(InputError, match="must be a JSON object") as info:
        ingest.import_file(con, p)
    assert info.value.row == 2


def test_child_out_of_memory_is_one_line(con, tmp_path):
    """A child that cannot get memory fails alone, reported in one line."""
    path = write_table(_frame(2), tmp_path / "f.csv")
    store.set_settings(con, import_memory_mb=40)
    with pytest.raises(InputError, match="import_memory_mb") as info:
        importjob.import_isolated(con, path)
    _one_line(info.value)
    store.set_settings(con, import_memory_mb=2048)
    assert importjob.import_isolated(con, path).added["outputs"] == 4


def test_app_path_matches_cli_errors(con, tmp_path):
    df = _frame(3)
    df["judge:j:correctness"] = df["judge:j:correctness"].astype(object)
    df.loc[3, "judge:j:correctness"] = "high"
    path = write_table(df, tmp_path / "bad.csv")
    with pytest.raises(InputError) as cli:
        ingest.import_file(con, path)
    with pytest.raises(InputError) as app:
        importjob.import_isolated(con, path)
    assert str(app.value) == str(cli.value) and (app.value.row, app.value.column) == (4, "judge:j:correctness")


# --------------------------------------------------------------------------- issue 24: misleading files


def test_near_duplicate_model_names_in_a_fresh_project(con, tmp_path):
    df = _frame(3, ("base", "cand_a", "Cand-A", "cand-a"))
    path = write_table(df, tmp_path / "models.csv")
    with pytest.raises(InputError) as info:
        ingest.import_file(con, path)
    msg = _one_line(info.value)
    assert info.value.column == "model" and info.value.row == 3
    assert "'cand_a', 'Cand-A' and 'cand-a' differ only in case" in msg
    assert "--add-model cand_a --add-model Cand-A --add-model cand-a" in msg
    assert counts(con)["outputs"] == 0
    with pytest.raises(InputError):  # naming only some of them is not enough
        ingest.import_file(con, path, add_model=["cand_a", "Cand-A"])
    r = subprocess.run([sys.executable, "-m", "calib.cli", "import", str(path), "--db", str(tmp_path / "n.duckdb"),
                        "--add-model", "cand_a", "--add-model", "Cand-A", "--add-model", "cand-a"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ingest.import_file(con, path, add_model=["cand_a", "Cand-A", "cand-a"]).added["outputs"] == 12


def test_add_model_names_accept_only_those_models(con, tmp_path):
    ingest.import_file(con, write_table(_frame(2), tmp_path / "first.csv"), baseline="base")
    second = write_table(_frame(2, ("base", "new-one", "other")), tmp_path / "second.csv")
    with pytest.raises(InputError, match="new model 'other'"):
        ingest.import_file(con, second, add_model=["new-one"])
    assert ingest.import_file(con, second, add_model=["new-one", "other"]).added["outputs"] == 4


def test_semicolon_csv_is_detected_and_said(con, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("item_id;model;prompt;output;judge:j:c\na;m;p, with a comma;o;1\nb;m;q;o;0\n")
    rep = ingest.import_file(con, path)
    assert rep.added["outputs"] == 2
    assert any("semicolon-separated" in n for n in rep.notes)
    assert con.execute("SELECT prompt FROM items WHERE item_id = 'a'").fetchone()[0] == "p, with a comma"
    tab = tmp_path / "tab.csv"
    tab.write_text("item_id\tmodel\tprompt\toutput\nc\tm\tr\to\n")
    assert any("tab-separated" in n for n in ingest.import_file(con, tab).notes)


def test_unknown_delimiter_is_named_in_the_error(con, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("item_id model prompt output\na,m,p,o\n")
    with pytest.raises(InputError, match="has 4 fields but the header has 1; the header has no comma") as info:
        ingest.import_file(con, path)
    assert info.value.row == 1


def test_jsonl_keys_differing_only_in_case(con, tmp_path):
    p = tmp_path / "case.jsonl"
    p.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": "o", "Output": "x"}\n')
    with pytest.raises(InputError, match="only in case") as info:
        ingest.import_file(con, p)
    assert (info.value.row, info.value.column) == (0, "Output")
