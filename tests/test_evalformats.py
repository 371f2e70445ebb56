"""promptfoo, Inspect AI and DeepEval result files: detected by structure, mapped (items, models,
judges, scores), imported through the normal importer, and refused with a one-line error naming the
original file, record and field when bad. The files are hand-built to each tool's format
(tests/data/evalformats/, or built here from them)."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from calib import cli
from calib.data import evalformats as ef
from calib.data.evalformats import inspectlog, sniff
from calib.data import ingest, store
from calib.errors import InputError
from conftest import write_table

DATA = Path(__file__).resolve().parent / "data" / "evalformats"
PF, INSPECT, DE_RUN, DE_RESULTS = (DATA / "promptfoo_results.json", DATA / "inspect_log.json",
                                   DATA / "deepeval_test_run.json", DATA / "deepeval_results.json")


def counts(con):
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("items", "outputs", "judge_scores")}


def score(con, model, judge, dim, prompt_like):
    return con.execute(
        "SELECT s.score, s.rationale FROM judge_scores s JOIN items i USING (item_id) WHERE s.model = ? "
        "AND s.judge = ? AND s.dimension = ? AND i.prompt LIKE ?", [model, judge, dim, prompt_like]).fetchone()


def pf_results() -> list[dict]:
    return json.loads(PF.read_text())["results"]["results"]


def write_pf(tmp_path: Path, results: list[dict], name="pf.json") -> Path:
    doc = json.loads(PF.read_text())
    doc["results"]["results"] = results
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def write_eval_zip(path: Path, log: dict, header_name: str = "header.json") -> Path:
    """An Inspect ``.eval`` log as Inspect writes it: header.json (the log without samples), one
    ``samples/<id>_epoch_<n>.json`` per sample, and the summaries."""
    header = {k: v for k, v in log.items() if k != "samples"}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("_journal/start.json", json.dumps({"version": 2, "eval": log["eval"], "plan": log["plan"]}))
        for s in log["samples"]:
            z.writestr(f"samples/{s['id']}_epoch_{s['epoch']}.json", json.dumps(s))
        z.writestr("summaries.json", json.dumps([{"id": s["id"], "epoch": s["epoch"]} for s in log["samples"]]))
        z.writestr(header_name, json.dumps(header))
    return path


# --------------------------------------------------------------------------- detection


def test_detects_each_tool_by_structure_not_extension(tmp_path, small_outputs):
    assert ef.detect(PF) == "promptfoo"
    assert ef.detect(INSPECT) == "inspect"
    assert ef.detect(DE_RUN) == "deepeval" and ef.detect(DE_RESULTS) == "deepeval"
    renamed = tmp_path / "export.txt"  # the structure decides, not the name
    renamed.write_text(PF.read_text())
    assert ef.detect(renamed) == "promptfoo"
    assert ef.detect(write_eval_zip(tmp_path / "log.zip", json.loads(INSPECT.read_text()))) == "inspect"
    # Tiebreak's own files are left to the importer
    for suffix in (".csv", ".jsonl", ".parquet"):
        assert ef.detect(write_table(small_outputs.head(4), tmp_path / f"t{suffix}")) is None
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": [1, 2]}))
    assert ef.detect(other) is None


def test_detects_a_document_bigger_than_the_sniffed_prefix_by_its_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(sniff, "SNIFF_BYTES", 300)  # as a 2 GB log would be: only its opening is read
    for path, kind in ((PF, "promptfoo"), (INSPECT, "inspect"), (DE_RUN, "deepeval"), (DE_RESULTS, "deepeval")):
        assert ef.detect(path) == kind
    # a key name inside a string value is data, not structure
    decoy = tmp_path / "decoy.json"
    decoy.write_text(json.dumps({"note": '"promptIdx": 1, "provider": "x", "eval": {}, "samples": []',
                                 "pad": "y" * 1000}))
    assert ef.detect(decoy) is None


# --------------------------------------------------------------------------- promptfoo


def test_promptfoo_json_mapping_and_import(con):
    conv = ef.convert(PF)
    assert conv.tool == "promptfoo"
    assert conv.models == ["openai:gpt-4o-mini", "Candidate Claude"]  # an empty label falls back to the id
    assert len(conv.items) == 3 and len(conv.rows) == 5  # the 429 error has no output
    assert conv.scores == {("promptfoo-llm-rubric", "tone"): 5, ("promptfoo-contains", "quality"): 5}
    text = conv.summary()
    assert "6 results" in text and "1 results with a provider error" in text
    assert "assertion 'llm-rubric' (metric 'tone') -> judge 'promptfoo-llm-rubric', dimension 'tone'" in text

    rep = ef.import_converted(con, conv, baseline="openai:gpt-4o-mini")
    assert rep.added == {"items": 3, "outputs": 5, "judge_scores": 10}
    assert rep.file == str(PF)
    assert score(con, "Candidate Claude", "promptfoo-llm-rubric", "tone", "%reset my password%") == (
        pytest.approx(0.2), "Refuses a benign request.")
    assert score(con, "Candidate Claude", "promptfoo-contains", "quality", "%reset my password%")[0] == 0
    row = con.execute("SELECT o.output, o.latency_ms, o.cost_usd, o.input_tokens, o.output_tokens, i.reference, i.prompt "
                      "FROM outputs o JOIN items i USING (item_id) WHERE model = 'openai:gpt-4o-mini' "
                      "AND i.prompt LIKE '%reset%'").fetchone()
    assert row == ("Click 'Forgot password' and follow the reset link.", 800, pytest.approx(0.0003), 40, 60,
                   "Use the reset link on the sign-in page.", "Answer the customer: How do I reset my password?")
    s = store.get_settings(con)
    assert s["baseline"] == "openai:gpt-4o-mini" and s["candidates"] == ["Candidate Claude"]
    assert set(s["dimensions"]) == {"tone", "quality"}


def test_promptfoo_jsonl_export_reads_like_the_json(tmp_path):
    """One EvaluateResult a line; older promptfoo joined batches with no newline between them."""
    results = pf_results()
    lines = [json.dumps(r) for r in results]
    p = tmp_path / "results.jsonl"
    p.write_text("\n".join(lines[:3]) + lines[3] + "\n" + "\n".join(lines[4:]) + "\n")  # "}{" on one line
    assert ef.detect(p) == "promptfoo"
    a, b = ef.convert(PF), ef.convert(p)
    assert [r.values for r in a.rows] == [r.values for r in b.rows]
    assert b.rows[0].where == "line 1"
    # EvalResult lines carry the vars in testCase only: the same items all the same
    p.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "vars"}) for r in results) + "\n")
    assert [r.values["item_id"] for r in ef.convert(p).rows] == [r.values["item_id"] for r in a.rows]


def test_promptfoo_same_test_in_two_files_is_one_item(con, tmp_path):
    results = pf_results()
    base = write_pf(tmp_path, [r for r in results if r["provider"]["id"].startswith("openai")], "a.json")
    cand = write_pf(tmp_path, [r for r in results if not r["provider"]["id"].startswith("openai")], "b.json")
    ef.import_eval_file(con, base)
    ef.import_eval_file(con, cand, add_model=True)
    assert counts(con)["items"] == 3
    assert con.execute("SELECT count(*) FROM (SELECT item_id FROM outputs GROUP BY item_id "
                       "HAVING count(*) = 2)").fetchone()[0] == 2


def test_promptfoo_several_prompts_become_models_and_repeats_keep_the_first(tmp_path):
    results = [r for r in pf_results() if r["provider"]["id"].startswith("openai")]
    variant = copy.deepcopy(results)
    for r in variant:
        r["promptIdx"] = 1
        r["prompt"] = {"raw": "Be brief. " + r["prompt"]["raw"], "label": "brief"}
        r["response"]["output"] = "short: " + r["response"]["output"]
    repeat = copy.deepcopy(results[0])
    repeat["response"]["output"] = "a second answer to the same test (promptfoo --repeat 2)"
    conv = ef.convert(write_pf(tmp_path, results + variant + [repeat]))
    assert conv.models == ["openai:gpt-4o-mini | support_prompt", "openai:gpt-4o-mini | brief"]
    assert len(conv.items) == 3 and len(conv.rows) == 6
    assert conv.rows[0].values["prompt"].startswith("question: How do I reset")
    assert "1 repeats of an (item, model)" in conv.summary()


# --------------------------------------------------------------------------- Inspect AI


@pytest.mark.parametrize("kind", ["json", "eval", "eval-journal-only"])
def test_inspect_log_mapping(con, tmp_path, kind):
    log = json.loads(INSPECT.read_text())
    if kind == "json":
        path = INSPECT
    else:
        path = tmp_path / "2026-12-01_support-qa.eval"
        write_eval_zip(path, log)
        if kind == "eval-journal-only":  # a log still running: no header.json yet
            with zipfile.ZipFile(path) as z, zipfile.ZipFile(tmp_path / "j.eval", "w") as out:
                for n in z.namelist():
                    if n != "header.json":
                        out.writestr(n, z.read(n))
            path = tmp_path / "j.eval"
    conv = ef.convert(path)
    assert conv.tool == "inspect" and conv.models == ["openai/gpt-4o-mini"]
    by_id = {r.values["item_id"]: r.values for r in conv.rows}
    assert set(by_id) == {"support_qa/1", "support_qa/2", "support_qa/4"}  # q3 errored
    one = by_id["support_qa/1"]
    assert one["output"] == "Click 'Forgot password' and follow the link."  # epoch 1 kept, not epoch 2
    assert one["judge:inspect-model_graded_qa:quality"] == 1.0 and one["judge:inspect-includes:quality"] == 0.0
    assert one["latency_ms"] == pytest.approx(1250) and one["input_tokens"] == 20
    two = by_id["support_qa/2"]
    assert two["prompt"] == "system: You are a billing assistant.\n\nuser: Can I change my plan mid-month?"
    assert two["output"] == "Yes; the change is prorated."  # reasoning left out
    assert two["reference"] == "Yes, it is prorated.\nProrated"
    assert two["judge:inspect-model_graded_qa:quality"] == 0.5
    four = by_id["support_qa/4"]
    assert four["judge:inspect-rubric:helpfulness"] == 0.25 and four["judge:inspect-rubric:accuracy"] == 1.0
    assert conv.skipped["later epochs (the first epoch of each sample is kept)"] == 1
    assert conv.skipped["samples that ended in an error"] == 1
    rep = ef.import_converted(con, conv)
    assert rep.added["items"] == 3 and rep.added["outputs"] == 3 and rep.added["judge_scores"] == 7
    assert score(con, "openai/gpt-4o-mini", "inspect-model_graded_qa", "quality", "%plan mid-month%") == (
        0.5, "GRADE: P, misses the date.")


def test_inspect_two_models_logs_pair_on_sample_id(con, tmp_path):
    log = json.loads(INSPECT.read_text())
    log["eval"]["model"] = "anthropic/claude-3-5-haiku"
    other = write_eval_zip(tmp_path / "cand.eval", log)
    ef.import_eval_file(con, INSPECT)
    conv, rep = ef.import_eval_file(con, other, add_model=True)
    assert rep.added["items"] == 0 and rep.added["outputs"] == 3
    assert store.get_settings(con)["candidates"] == ["anthropic/claude-3-5-haiku"]
    # --model renames the log's model
    conv = ef.convert(INSPECT, model="prod")
    assert conv.models == ["prod"]


def test_eval_zip_bomb_and_member_count_are_refused(tmp_path, monkeypatch):
    log = json.loads(INSPECT.read_text())
    log["samples"][0]["output"]["choices"][0]["message"]["content"] = "x" * 50_000  # compresses to ~100 bytes
    path = write_eval_zip(tmp_path / "bomb.eval", log)
    monkeypatch.setattr(inspectlog, "MAX_ZIP_MEMBER_BYTES", 20_000)
    with pytest.raises(InputError, match="unpacks to more than"):
        ef.convert(path)
    monkeypatch.setattr(inspectlog, "MAX_ZIP_MEMBER_BYTES", 10**9)
    monkeypatch.setattr(inspectlog, "MAX_ZIP_TOTAL_BYTES", 30_000)
    with pytest.raises(InputError, match="the log unpacks to more than"):
        ef.convert(path)
    monkeypatch.setattr(inspectlog, "MAX_ZIP_TOTAL_BYTES", 10**9)
    monkeypatch.setattr(inspectlog, "MAX_ZIP_MEMBERS", 3)
    with pytest.raises(InputError, match="members"):
        ef.convert(path, "inspect")


# --------------------------------------------------------------------------- DeepEval


def test_deepeval_saved_run_mapping(con):
    conv = ef.convert(DE_RUN)
    assert conv.tool == "deepeval" and conv.models == ["support-bot-v2"]  # hyperparameters.model
    assert len(conv.rows) == 3
    first, second, third = (r.values for r in conv.rows)
    assert first["judge:deepeval-Answer Relevancy:quality"] == pytest.approx(0.92)
    # Toxicity passes when score <= threshold: stored as 1 - score so higher is better, as Tiebreak expects
    assert first["judge:deepeval-Toxicity:quality"] == pytest.approx(1.0)
    assert second["judge:deepeval-Toxicity:quality"] == pytest.approx(0.2)
    assert third["judge:deepeval-Answer Relevancy:quality"] is None  # the metric errored: no score
    assert first["context"] == "Passwords are reset from the sign-in page.\n\nLinks expire after 1 hour."
    assert first["latency_ms"] == pytest.approx(1200) and first["cost_usd"] == pytest.approx(0.0004)
    assert "lower is better in DeepEval" in conv.summary() and "1 conversational test cases" in conv.summary()
    rep = ef.import_converted(con, conv)
    assert rep.added == {"items": 3, "outputs": 3, "judge_scores": 5}


def test_deepeval_evaluate_results_and_merged_test_functions(tmp_path):
    conv = ef.convert(DE_RESULTS, model="cand-v3")
    assert conv.models == ["cand-v3"] and len(conv.rows) == 2
    assert conv.rows[1].values["context"] == "Plans can change any time; prorated."
    assert conv.rows[0].values["judge:deepeval-Correctness [GEval]:quality"] == pytest.approx(0.8)
    assert "deepeval_results" in ef.convert(DE_RESULTS).models  # no model recorded: the file name, said
    # `deepeval test run` writes one test case per test function: same input and answer -> one output
    doc = json.loads(DE_RESULTS.read_text())
    extra = copy.deepcopy(doc["test_results"][0])
    extra["metrics_data"] = [dict(extra["metrics_data"][0], name="Conciseness", score=0.4, success=False)]
    doc["test_results"].append(extra)
    p = tmp_path / "merged.json"
    p.write_text(json.dumps(doc))
    merged = ef.convert(p, model="m")
    assert len(merged.rows) == 2
    assert merged.rows[0].values["judge:deepeval-Conciseness:quality"] == pytest.approx(0.4)
    assert merged.rows[0].values["judge:deepeval-Correctness [GEval]:quality"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- bad input, hostile data


def test_malformed_file_is_one_line_error_and_changes_nothing(con, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    assert cli.main(["import", str(PF), "--db", str(db)]) == 0
    capsys.readouterr()
    truncated = tmp_path / "results.json"
    truncated.write_text(PF.read_text()[:3000])
    assert cli.main(["import", str(truncated), "--db", str(db), "--format", "promptfoo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(truncated) in err and "malformed JSON" in err and "(line 41, character" in err
    # a score the importer refuses: named by the original file, record and promptfoo field
    results = pf_results()
    results[3]["gradingResult"]["componentResults"][0]["score"] = 250
    bad = write_pf(tmp_path, results, "bad.json")
    with pytest.raises(InputError) as e:
        ef.import_eval_file(con, bad)
    assert e.value.file == str(bad) and e.value.row == 4
    assert e.value.column == "gradingResult.componentResults[0].score"
    assert "out of range" in str(e.value) and "results.results[3]" in str(e.value)
    assert counts(con) == {"items": 0, "outputs": 0, "judge_scores": 0}
    # structure the reader cannot use, also one line with the record
    results = pf_results()
    results[2]["provider"] = {}
    with pytest.raises(InputError, match=r"row 3, column 'provider': results.results\[2\]: no provider"):
        ef.convert(write_pf(tmp_path, results, "noprov.json"))
    with pytest.raises(InputError, match="not a promptfoo, Inspect AI or DeepEval"):
        ef.convert(tmp_path / "cli.duckdb")
    c = store.connect(db)
    assert counts(c) == {"items": 3, "outputs": 5, "judge_scores": 10}  # the failed import changed nothing
    c.close()


def test_strict_names_and_nul_bytes_go_through_the_importer(con, tmp_path):
    ef.import_eval_file(con, PF)
    with pytest.raises(InputError) as e:  # a new model without --add-model: refused, naming the tool's field
        ef.import_eval_file(con, INSPECT)
    assert e.value.file == str(INSPECT) and "new model 'openai/gpt-4o-mini'" in str(e.value)
    assert e.value.column == "eval.model"
    log = json.loads(INSPECT.read_text())
    log["samples"][2]["output"]["choices"][0]["message"]["content"][1]["text"] = "bad\x00byte"
    p = tmp_path / "nul.json"
    p.write_text(json.dumps(log))
    with pytest.raises(InputError) as e:
        ef.import_eval_file(con, p, allow_new=True)
    assert e.value.row == 3 and e.value.column == "output.choices[0].message.content" and "NUL" in str(e.value)


def test_hostile_strings_stay_data(con, tmp_path, capsys):
    evil = "\x1b]8;;http://127.0.0.1:9/\x07<img src=x onerror=alert(1)>**b**\u202e"
    results = pf_results()
    for r in results:
        if r["provider"]["id"].startswith("anthropic"):
            r["provider"]["label"] = evil
            r["response"]["output"] = evil if r["response"].get("output") else r["response"].get("output")
    for r in results:
        for c in (r.get("gradingResult") or {}).get("componentResults", []):
            c["reason"] = evil
    path = write_pf(tmp_path, results)
    db = tmp_path / "h.duckdb"
    assert cli.main(["import", str(path), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    c = store.connect(db)
    assert evil in store.models(c)
    assert c.execute("SELECT count(*) FROM outputs WHERE output = ?", [evil]).fetchone()[0] == 2
    assert c.execute("SELECT count(*) FROM judge_scores WHERE rationale = ?", [evil]).fetchone()[0] == 10
    c.close()


def test_cli_hook_formats_and_flags(tmp_path, capsys, small_outputs):
    db = str(tmp_path / "c.duckdb")
    assert cli.main(["import", str(DE_RUN), "--db", db, "--model", "prod", "--dimension", "helpful"]) == 0
    out = capsys.readouterr().out
    assert "read as deepeval" in out and "model 'prod' (from --model)" in out and "added 3 items" in out
    c = store.connect(db)
    assert store.get_settings(c)["dimensions"] == ["helpful"]
    c.close()
    # a Tiebreak file still goes the usual way; --model on it is refused
    csv = write_table(small_outputs.head(6), tmp_path / "t.csv")
    assert cli.main(["import", str(csv), "--db", str(tmp_path / "n.duckdb")]) == 0
    assert cli.main(["import", str(csv), "--db", str(tmp_path / "n2.duckdb"), "--model", "x"]) == 2
    assert "--model and --dimension apply to" in capsys.readouterr().err
    # --format forces the reader; the wrong one gives a one-line error
    assert cli.main(["import", str(INSPECT), "--db", db, "--format", "deepeval"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # --format tiebreak skips detection: the importer reads the promptfoo JSON as JSONL and says why not
    assert cli.main(["import", str(PF), "--db", db, "--format", "tiebreak"]) == 2
    assert str(PF) in capsys.readouterr().err


def test_rows_are_the_documented_import_format(tmp_path):
    """The converted table is a plain outputs file: it imports with ingest directly too."""
    conv = ef.convert(PF)
    table = ef._table(conv)
    assert {"item_id", "model", "prompt", "output", "judge:promptfoo-llm-rubric:tone"} <= set(table.column_names)
    df = table.to_pandas()
    assert df.groupby(["item_id", "model"]).size().max() == 1
    p = tmp_path / "rows.parquet"
    df.to_parquet(p, index=False)
    c = store.connect(tmp_path / "x.duckdb")
    assert ingest.import_file(c, p).added["outputs"] == 5
    c.close()
    assert isinstance(df, pd.DataFrame)
