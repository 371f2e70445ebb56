"""Import round trips, idempotence, every bad-input case, labels in and out."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from calib.data import ingest, store
from calib.errors import InputError
from conftest import write_table  # (not tests.conftest: ppi-python installs a top-level `tests` package)

FORMATS = [".csv", ".jsonl", ".parquet"]


def counts(con):
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("items", "outputs", "judge_scores", "pair_judge_prefs", "labels", "pair_labels")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_each_format(con, tmp_path, small_outputs, fmt):
    path = write_table(small_outputs, tmp_path / f"out{fmt}")
    rep = ingest.import_file(con, path, baseline="support-legacy-v1")
    assert rep.added == {"items": 40, "outputs": 80, "judge_scores": 80 * 9}
    row = small_outputs.iloc[7]
    got = con.execute(
        "SELECT i.prompt, i.segment, o.output, o.latency_ms, o.input_tokens FROM items i JOIN outputs o USING (item_id) "
        "WHERE item_id = ? AND model = ?", [row.item_id, row.model]).fetchone()
    assert got == (row.prompt, row.segment, row.output, pytest.approx(row.latency_ms), row.input_tokens)
    score = con.execute(
        "SELECT score FROM judge_scores WHERE item_id = ? AND model = ? AND judge = 'judge-strict' "
        "AND dimension = 'style'", [row.item_id, row.model]).fetchone()[0]
    assert score == pytest.approx(row["judge:judge-strict:style"])
    s = store.get_settings(con)
    assert s["baseline"] == "support-legacy-v1" and s["candidates"] == ["support-nova-v2"]
    assert s["dimensions"] == ["correctness", "refusal", "style"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reimport_changes_nothing_and_new_items_are_added(con, tmp_path, small_outputs, fmt):
    first = small_outputs[small_outputs.item_id < "q0000030"]
    ingest.import_file(con, write_table(first, tmp_path / f"a{fmt}"))
    before = counts(con)
    rep = ingest.import_file(con, write_table(first, tmp_path / f"a{fmt}"))
    assert counts(con) == before and sum(rep.added.values()) == 0
    assert rep.skipped["outputs"] == len(first)
    ingest.import_file(con, write_table(small_outputs, tmp_path / f"all{fmt}"))
    assert counts(con)["items"] == 40 and counts(con)["outputs"] == 80


def test_default_segment_and_first_model_is_baseline(con, tmp_path):
    df = pd.DataFrame({"item_id": ["a", "a", "b"], "model": ["old", "new", "old"], "prompt": ["p", "p", "q"],
                       "output": ["x", "y", "z"], "judge:j:correctness": [1, 0, 1]})
    rep = ingest.import_file(con, write_table(df, tmp_path / "x.csv"))
    assert con.execute("SELECT DISTINCT segment FROM items").fetchall() == [("all",)]
    assert store.get_settings(con)["baseline"] == "old"
    assert any("baseline model set to 'old'" in n for n in rep.notes)


# --------------------------------------------------------------------------- bad input


def _bad_cases(df: pd.DataFrame):
    """(name, mutated frame, expected row, expected column, message fragment)."""
    judge = "judge:judge-strict:correctness"
    nonnum = df.copy()
    nonnum[judge] = nonnum[judge].astype(object)
    nonnum.loc[4, judge] = "high"
    out_of_range = df.copy()
    out_of_range.loc[6, judge] = 250.0
    dup = pd.concat([df, df.iloc[[2]]], ignore_index=True)
    empty_prompt = df.copy()
    empty_prompt.loc[3, "prompt"] = ""
    conflict = df.copy()
    conflict.loc[1, "prompt"] = "another prompt"  # row 2 is item q...0's second model
    neg = df.copy()
    neg.loc[5, "latency_ms"] = -3.0
    return [
        ("missing column", df.drop(columns=["prompt"]), 0, "prompt", "required column is missing"),
        ("non-numeric score", nonnum, 5, judge, "not a number"),
        ("out-of-range score", out_of_range, 7, judge, "out of range"),
        ("duplicate item/model", dup, len(df) + 1, "model", "duplicate (item_id, model)"),
        ("empty required text", empty_prompt, 4, "prompt", "must not be empty"),
        ("conflicting prompt", conflict, 2, "prompt", "differs from an earlier row"),
        ("negative latency", neg, 6, "latency_ms", ">= 0"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_bad_input_names_file_row_column_and_stores_nothing(con, tmp_path, small_outputs, fmt):
    good = small_outputs[small_outputs.item_id < "q0000020"].reset_index(drop=True)
    ingest.import_file(con, write_table(good, tmp_path / f"good{fmt}"))
    stored = counts(con)
    fresh = small_outputs[small_outputs.item_id >= "q0000020"].reset_index(drop=True)  # new items: would add
    for name, frame, row, col, fragment in _bad_cases(fresh):
        path = write_table(frame, tmp_path / f"bad{fmt}")
        with pytest.raises(InputError) as info:
            ingest.import_file(con, path)
        err = info.value
        assert (err.file, err.row, err.column) == (str(path), row, col), name
        assert fragment in str(err) and str(path) in str(err), name
        assert "\n" not in str(err), name
        assert counts(con) == stored, name


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file(con, tmp_path, small_outputs, fmt):
    path = write_table(small_outputs.iloc[:0], tmp_path / f"empty{fmt}")
    with pytest.raises(InputError, match="empty"):
        ingest.import_file(con, path)
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        ingest.import_file(con, tmp_path / "zero.csv")
    assert counts(con)["items"] == 0


def test_broken_encoding_names_row_and_column(con, tmp_path):
    raw = ("item_id,model,prompt,output,judge:j:correctness\n"
           "a,m1,hello,fine,1\n").encode() + b"b,m1,caf\xe9 au lait,fine,1\n"
    path = tmp_path / "latin1.csv"
    path.write_bytes(raw)
    with pytest.raises(InputError) as info:
        ingest.import_file(con, path)
    assert (info.value.row, info.value.column) == (2, "prompt")
    assert "UTF-8" in str(info.value)
    jl = tmp_path / "latin1.jsonl"
    jl.write_bytes(b'{"item_id": "a", "model": "m1", "prompt": "caf\xe9", "output": "x", "judge:j:c": 1}\n')
    with pytest.raises(InputError) as info:
        ingest.import_file(con, jl)
    assert (info.value.row, info.value.column) == (1, "prompt")
    assert counts(con)["items"] == 0


def test_ragged_csv_and_malformed_json(con, tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("item_id,model,prompt,output,judge:j:c\na,m,p,o,1\nb,m,p,o,1,extra\n")
    with pytest.raises(InputError, match="has 6 fields") as info:
        ingest.import_file(con, p)
    assert info.value.row == 2
    j = tmp_path / "m.jsonl"
    j.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": "o", "judge:j:c": 1}\n{"item_id": "b",\n')
    with pytest.raises(InputError, match="malformed JSON") as info:
        ingest.import_file(con, j)
    assert info.value.row == 2


def test_unknown_file_type(con, tmp_path):
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="unknown file type '.xlsx'"):
        ingest.import_file(con, p)


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, small_outputs):
    path = write_table(small_outputs.drop(columns=["output"]), tmp_path / "bad.csv")
    r = subprocess.run([sys.executable, "-m", "calib.cli", "import", str(path), "--db", str(tmp_path / "c.duckdb"), "--new"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "bad.csv, row 0, column 'output': required column is missing" in r.stderr


# --------------------------------------------------------------------------- pairwise judge preferences


def test_pair_prefs_import_and_range_check(demo_con, tmp_path):
    ids = [r[0] for r in demo_con.execute("SELECT item_id FROM items ORDER BY item_id LIMIT 3").fetchall()]
    df = pd.DataFrame({"item_id": ids, "baseline": "support-legacy-v1", "candidate": "support-nova-v2",
                       "pref:judge-x:overall": [0.0, 0.5, 1.0]})
    rep = ingest.import_file(demo_con, write_table(df, tmp_path / "p.csv"), add_judge=True)
    assert rep.added == {"pair_judge_prefs": 3}
    df.loc[1, "pref:judge-y:overall"] = 1.5
    before = counts(demo_con)
    with pytest.raises(InputError) as info:
        ingest.import_file(demo_con, write_table(df, tmp_path / "p2.csv"), add_judge=True)
    assert (info.value.row, info.value.column) == (2, "pref:judge-y:overall")
    assert counts(demo_con) == before


# --------------------------------------------------------------------------- labels


def _labels(con, n=4):
    ids = [r[0] for r in con.execute("SELECT item_id FROM items ORDER BY item_id LIMIT ?", [n]).fetchall()]
    return pd.DataFrame({"item_id": ids, "model": "support-nova-v2", "dimension": "correctness",
                         "verdict": ["pass", "fail", "1", "0"][:n], "annotator": "ana",
                         "created_at": "2026-11-20T10:00:00", "note": [None, "wrong refund window", None, None][:n]})


@pytest.mark.parametrize("fmt", FORMATS)
def test_labels_import_export_roundtrip(demo_con, tmp_path, fmt):
    lab = _labels(demo_con)
    rep = ingest.import_labels(demo_con, write_table(lab, tmp_path / f"l{fmt}"))
    assert rep.added == {"labels": 4}
    verdicts = [r[0] for r in demo_con.execute("SELECT verdict FROM labels ORDER BY item_id").fetchall()]
    assert verdicts == [True, False, True, False]
    pairs = pd.DataFrame({"item_id": lab.item_id[:2], "baseline": "support-legacy-v1", "candidate": "support-nova-v2",
                          "dimension": "overall", "preference": ["candidate", "tie"], "annotator": "bo"})
    assert ingest.import_labels(demo_con, write_table(pairs, tmp_path / f"p{fmt}")).added == {"pair_labels": 2}
    # a correction is a new row; history kept
    corr = lab.iloc[[1]].assign(verdict="pass", created_at="2026-11-20T11:00:00", note="re-checked")
    ingest.import_labels(demo_con, write_table(corr, tmp_path / f"c{fmt}"))
    out = tmp_path / f"export{fmt}"
    assert ingest.export_labels(demo_con, out) == 7
    exported = pd.read_parquet(out) if fmt == ".parquet" else (
        pd.read_csv(out) if fmt == ".csv" else pd.read_json(out, lines=True))
    assert len(exported) == 7 and set(exported.kind_of_label) == {"pointwise", "pairwise"}
    # re-importing the export adds nothing
    before = counts(demo_con)
    rep = ingest.import_labels(demo_con, out)
    assert counts(demo_con) == before and sum(rep.added.values()) == 0


@pytest.mark.parametrize(
    "column,value,fragment",
    [("item_id", "nope", "unknown item_id"), ("model", "gpt-9", "unknown model"),
     ("dimension", "politeness", "unknown dimension"), ("verdict", "maybe", "pass/fail"),
     ("annotator", None, "must not be empty"), ("created_at", "yesterday", "not a timestamp")],
)
def test_bad_labels_rejected_whole(demo_con, tmp_path, column, value, fragment):
    lab = _labels(demo_con)
    lab[column] = lab[column].astype(object)
    lab.loc[2, column] = value
    with pytest.raises(InputError) as info:
        ingest.import_labels(demo_con, write_table(lab, tmp_path / "l.csv"))
    assert (info.value.row, info.value.column) == (3, column)
    assert fragment in str(info.value)
    assert counts(demo_con)["labels"] == 0


def test_label_file_without_verdict_or_preference(demo_con, tmp_path):
    lab = _labels(demo_con).drop(columns=["verdict"])
    with pytest.raises(InputError, match="verdict column"):
        ingest.import_labels(demo_con, write_table(lab, tmp_path / "l.csv"))


def test_outputs_without_scores_then_offline_judges_then_fit(tmp_path, small_outputs, capsys):
    """Issue 13: a team with outputs and no scores imports them, runs `tiebreak judge run` with the
    offline judges, and fits (pointwise dimensions come from the judges' config)."""
    from pathlib import Path

    from calib import cli
    from calib.stats import engine

    db = tmp_path / "j.duckdb"
    plain = small_outputs[[c for c in small_outputs.columns if not c.startswith(("judge:", "rationale:"))]]
    path = write_table(plain, tmp_path / "plain.csv")
    assert cli.main(["import", str(path), "--db", str(db), "--new", "--baseline", "support-legacy-v1"]) == 0
    assert "0 judge_scores" in capsys.readouterr().out
    cfg = Path(__file__).resolve().parent.parent / "data" / "judges.offline.toml"
    assert cli.main(["judge", "run", "--db", str(db), "--config", str(cfg)]) == 0
    assert "0 failed" in capsys.readouterr().out
    con = store.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM judge_scores").fetchone()[0] == 80 * 3
        assert {"correctness", "refusal", "style"} <= set(store.get_settings(con)["dimensions"])
        fit = engine.fit_project(con, "fast", record=False)
        assert {d["dimension"] for d in fit["diffs"]} >= {"correctness", "refusal", "style"}
    finally:
        con.close()


# --------------------------------------------------------------------------- strict imports (issue 14 part 5)


def _two_files(tmp_path, small_outputs, edit, name="second.csv"):
    first, second = small_outputs.iloc[:40].copy(), small_outputs.iloc[40:].copy()
    return write_table(first, tmp_path / "first.csv"), write_table(edit(second), tmp_path / name)


@pytest.mark.parametrize("edit, flag, message", [
    (lambda d: d.assign(model=d.model.str.replace("support-nova-v2", "support-Nova-v2")), "add_model",
     "new model 'support-Nova-v2' not in the project"),
    (lambda d: d.rename(columns={"judge:judge-strict:style": "judge:judge-Strict:style"}), "add_judge",
     "new judge 'judge-Strict'"),
    (lambda d: d.rename(columns={"judge:judge-strict:correctness": "judge:judge-strict:Correctness"}), "add_dimension",
     "'Correctness' looks like 'correctness'"),
])
def test_second_import_with_new_name_is_refused_unless_asked(con, tmp_path, small_outputs, edit, flag, message):
    first, second = _two_files(tmp_path, small_outputs, edit)
    ingest.import_file(con, first, baseline="support-legacy-v1")
    before = counts(con)
    with pytest.raises(InputError, match=message) as exc:
        ingest.import_file(con, second)
    assert "--add-" in str(exc.value) and "\n" not in str(exc.value)
    assert counts(con) == before
    ingest.import_file(con, second, **{flag: True})
    assert counts(con) != before


def test_allow_new_accepts_everything(con, tmp_path, small_outputs):
    first, second = _two_files(tmp_path, small_outputs, lambda d: d.assign(model=d.model + "-x"))
    ingest.import_file(con, first, baseline="support-legacy-v1")
    ingest.import_file(con, second, allow_new=True)
    assert len(store.models(con)) == 4


def test_columns_differing_in_case_one_line_error(con, tmp_path, small_outputs):
    df = small_outputs.assign(Output=small_outputs.output)
    path = write_table(df, tmp_path / "case.csv")
    with pytest.raises(InputError, match="only in case") as exc:
        ingest.import_file(con, path)
    assert "row 0" in str(exc.value) and "Output" in str(exc.value)
    assert counts(con)["outputs"] == 0


def test_judge_scale_change_refused(con, tmp_path, small_outputs):
    col = "judge:judge-strict:style"
    first, second = _two_files(tmp_path, small_outputs, lambda d: d.assign(**{col: 3.0}))
    ingest.import_file(con, first, baseline="support-legacy-v1")
    assert con.execute("SELECT max(score) FROM judge_scores WHERE judge='judge-strict' AND dimension='style'").fetchone()[0] <= 1
    with pytest.raises(InputError, match="another scale"):
        ingest.import_file(con, second)


def test_empty_scores_and_missing_outputs_are_counted(con, tmp_path, small_outputs):
    df = small_outputs.copy()
    df.loc[df.index[:3], "judge:judge-strict:style"] = None
    df = df.drop(df.index[-1])  # the last item has one model's output only
    rep = ingest.import_file(con, write_table(df, tmp_path / "o.csv"), baseline="support-legacy-v1")
    text = rep.summary()
    assert "3 empty judge scores" in text and "1 items of this file miss a model's output" in text


def test_nul_byte_and_typed_ids_and_boolean_latency_refused(con, tmp_path, small_outputs):
    df = small_outputs.copy()
    df.loc[df.index[4], "output"] = "bad\x00byte"
    with pytest.raises(InputError, match="NUL byte"):
        ingest.import_file(con, write_table(df, tmp_path / "nul.parquet"))
    ids = small_outputs.assign(item_id=range(len(small_outputs)))
    with pytest.raises(InputError, match="must be text"):
        ingest.import_file(con, write_table(ids, tmp_path / "ids.parquet"))
    lat = small_outputs.assign(latency_ms=True)
    with pytest.raises(InputError, match="not a number"):
        ingest.import_file(con, write_table(lat, tmp_path / "lat.parquet"))
    assert counts(con)["outputs"] == 0
