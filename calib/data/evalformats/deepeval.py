"""DeepEval test results: ``evaluate()`` results dumped to JSON (``test_results[]``) and the saved
run ``.deepeval/.latest_test_run.json`` (``testCases[]``, camelCase), as Tiebreak rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calib.data.evalformats.common import (Converted, Row, as_number, as_text, first_key, read_json_document,
                                           stable_id)
from calib.errors import InputError


def _deepeval_cases(doc: Any, path: Path) -> tuple[list[tuple[int, str, dict]], dict, int, str]:
    if isinstance(doc, list):
        cases, prefix, hyper, convo = doc, "", {}, 0
        layout = "list of test results"
    elif isinstance(doc, dict):
        if isinstance(doc.get("testCases"), list) or isinstance(doc.get("conversationalTestCases"), list):
            cases, prefix = doc.get("testCases") or [], "testCases"
            layout = "saved test run (testCases[], camelCase)"
        else:
            cases, prefix = doc.get("test_results") or [], "test_results"
            layout = "evaluate() results (test_results[])"
        hyper = doc.get("hyperparameters") if isinstance(doc.get("hyperparameters"), dict) else {}
        convo = len(doc.get("conversationalTestCases") or [])
    else:
        raise InputError(str(path), None, None, "not a DeepEval test run")
    out = []
    for i, c in enumerate(cases):
        if not isinstance(c, dict):
            raise InputError(str(path), i + 1, None, f"{prefix}[{i}] is not an object (a DeepEval test case)")
        if c.get("conversational") is True or c.get("turns"):  # (turns is null on single-turn results)
            convo += 1
            continue
        out.append((i + 1, f"{prefix}[{i}]", c))
    return out, hyper, convo, layout


def read(path: Path, dimension: str, model: str | None) -> Converted:
    cases, hyper, convo, layout = _deepeval_cases(read_json_document(path), path)
    hyper_model = next((as_text(v) for k, v in hyper.items() if str(k).lower() == "model" and v), None)
    name = model or hyper_model or path.stem
    conv = Converted("deepeval", str(path), [])
    # Which way each metric points: DeepEval passes most metrics when score >= threshold, but some
    # (bias, toxicity, hallucination, ...) when score <= threshold. Told from the file's own
    # success flags, so a custom metric is read the way DeepEval judged it.
    votes: dict[str, list[int]] = {}
    for _, _, c in cases:
        for m in first_key(c, "metrics_data", "metricsData") or []:
            if not isinstance(m, dict):
                continue
            s, t, ok = as_number(m.get("score")), as_number(m.get("threshold")), m.get("success")
            if s is None or t is None or not isinstance(ok, bool) or s == t:
                continue
            v = votes.setdefault(str(m.get("name")), [0, 0])
            v[0] += ok == (s > t)
            v[1] += ok == (s < t)
    lower_better = {k for k, (up, down) in votes.items() if down > up}
    described: set[str] = set()
    no_output = 0
    for rec, where, c in cases:
        inp = first_key(c, "input")
        if inp is None:
            raise InputError(str(path), rec, "input", f"{where}: the test case has no input")
        actual = first_key(c, "actual_output", "actualOutput")
        if actual is None:
            no_output += 1
        ctx = first_key(c, "retrieval_context", "retrievalContext") or first_key(c, "context")
        secs = as_number(first_key(c, "completion_time", "completionTime"))
        values: dict[str, Any] = {
            "item_id": "de-" + stable_id(as_text(inp)), "model": name, "prompt": as_text(inp), "output": as_text(actual) or "",
            "reference": as_text(first_key(c, "expected_output", "expectedOutput")),
            "context": "\n\n".join(map(str, ctx)) if isinstance(ctx, list) else as_text(ctx),
            "latency_ms": secs * 1000 if secs is not None else None,
            "cost_usd": as_number(first_key(c, "token_cost", "tokenCost")),
            "input_tokens": as_number(first_key(c, "input_token_count", "inputTokenCount")),
            "output_tokens": as_number(first_key(c, "output_token_count", "outputTokenCount")),
        }
        fields = {"item_id": "input", "prompt": "input", "output": "actualOutput", "reference": "expectedOutput",
                  "context": "retrievalContext", "latency_ms": "completionTime", "cost_usd": "tokenCost"}
        for mi, m in enumerate(first_key(c, "metrics_data", "metricsData") or []):
            if not isinstance(m, dict):
                continue
            metric = as_text(m.get("name")) or f"metric-{mi}"
            judge = f"deepeval-{metric}"
            col = f"judge:{judge}:{dimension}"
            s = as_number(m.get("score"))
            if s is None and isinstance(m.get("success"), bool) and not m.get("error"):
                s = 1.0 if m["success"] else 0.0  # a metric with only a verdict
            elif s is not None and metric in lower_better and 0 <= s <= 1:
                s = 1.0 - s
            values[col] = s
            fields[col] = f"{where.split('[')[0]}[].metricsData[{mi}].score"
            if m.get("reason") is not None:
                values[f"rationale:{judge}:{dimension}"] = as_text(m.get("reason"))
            if judge not in described:
                described.add(judge)
                ev = as_text(first_key(m, "evaluation_model", "evaluationModel"))
                flip = " (lower is better in DeepEval: success when score <= threshold -> stored as 1 - score)" \
                    if metric in lower_better else ""
                conv.mapping.append(f"metric {metric!r}{f' (evaluated by {ev!r})' if ev else ''} -> judge {judge!r}, "
                                    f"dimension {dimension!r}{flip}; reason -> rationale")
        conv.rows.append(Row(values, rec, where, fields))
    how = "from --model" if model else ("hyperparameters.model" if hyper_model else
                                        "the file name: DeepEval does not record the model under test; "
                                        "log it with hyperparameters={'model': ...} or import with --model NAME")
    conv.mapping.insert(0, f"{layout}: {len(cases)} test cases; model {name!r} ({how})")
    conv.mapping.insert(1, "item_id = 'de-' + hash of input (test case names are positional); prompt = input; "
                           "output = actual_output; reference = expected_output; context = retrieval_context "
                           "(else context); latency_ms = completion_time x 1000; cost_usd = token_cost")
    conv.skipped["conversational test cases (multi-turn: not one prompt and answer)"] = convo
    conv.skipped["test cases with no actual_output (imported as empty answers)"] = no_output
    conv.column_fields = {"model": "hyperparameters.model", "prompt": "input", "output": "actualOutput"}
    return conv
