"""promptfoo results: ``promptfoo eval -o results.json`` (``OutputFile``: ``results.results[]`` of
``EvaluateResult``) and ``-o results.jsonl`` (one result a line) as Tiebreak rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calib.data.evalformats.common import (MAX_JSON_BYTES, Converted, Row, as_number, as_score, as_text,
                                           dimension_name, first_key, json_values, read_json_document,
                                           stable_id)
from calib.data.evalformats.sniff import is_promptfoo_result
from calib.errors import InputError


def _promptfoo_results(path: Path) -> tuple[list[tuple[int, str, dict]], str]:
    """(record number, locator, EvaluateResult) for each result, and a description of the layout."""
    with open(path, "rb") as fh:  # JSONL when the first line is a whole result (however long it is)
        first_line = fh.readline(MAX_JSON_BYTES).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    try:
        first, _ = json.JSONDecoder().raw_decode(first_line)
        one_per_line = isinstance(first, dict) and is_promptfoo_result(first)
    except (json.JSONDecodeError, RecursionError):
        one_per_line = False
    if one_per_line:
        out = []
        for lineno, v in json_values(path):
            if not isinstance(v, dict):
                raise InputError(str(path), lineno, None, "each line must be a JSON object (a promptfoo result)")
            out.append((lineno, f"line {lineno}", v))
        return out, "JSONL export, one result a line"
    doc = read_json_document(path)
    layout = "JSON"
    results = doc
    if isinstance(doc, dict):
        inner = doc.get("results")
        if isinstance(inner, dict):
            layout = f"JSON output, results version {inner.get('version', '?')}"
            results = inner.get("results")
            prefix = "results.results"
        else:
            results = inner
            prefix = "results"
    else:
        prefix = ""
    if not isinstance(results, list):
        raise InputError(str(path), None, "results", "no list of results found (expected results.results[] "
                                                     "as written by `promptfoo eval -o results.json`)")
    out = []
    for i, v in enumerate(results):
        if not isinstance(v, dict):
            raise InputError(str(path), i + 1, None, f"{prefix}[{i}] is not an object (a promptfoo result)")
        out.append((i + 1, f"{prefix}[{i}]", v))
    return out, layout


def read(path: Path, dimension: str, model: str | None) -> Converted:
    results, layout = _promptfoo_results(path)
    conv = Converted("promptfoo", str(path), [])
    prompt_keys = {(first_key(r, "promptIdx"), first_key(first_key(r, "prompt"), "label")) for _, _, r in results}
    multi_prompt = len(prompt_keys) > 1
    errors = 0
    judge_keys: dict[tuple[str, str, int], str] = {}  # (type, metric, nth of that pair in a result) -> judge
    described: set[tuple[str, str]] = set()
    renamed: dict[str, str] = {}
    for rec, where, r in results:
        provider = r.get("provider")
        if isinstance(provider, str):
            name, pfield = provider, "provider"
        else:
            name = first_key(provider, "label") or first_key(provider, "id")
            pfield = "provider.label" if first_key(provider, "label") else "provider.id"
        if not isinstance(name, str) or not name.strip():
            raise InputError(str(path), rec, "provider", f"{where}: no provider id or label (the model)")
        prompt = r.get("prompt") if isinstance(r.get("prompt"), dict) else {}
        raw_prompt = as_text(prompt.get("raw")) or as_text(r.get("prompt") if isinstance(r.get("prompt"), str) else None)
        test = r.get("testCase") if isinstance(r.get("testCase"), dict) else {}
        # testCase.vars first: the JSONL export (EvalResult) has no top-level vars, and the same test
        # must get the same item id from either export
        vars_ = test.get("vars") if isinstance(test.get("vars"), dict) else (
            r.get("vars") if isinstance(r.get("vars"), dict) else {})
        response = r.get("response") if isinstance(r.get("response"), dict) else None
        if r.get("error") and (response is None or response.get("output") is None) or \
                (r.get("failureReason") == 2 and (response is None or response.get("output") is None)):
            errors += 1  # the provider failed: no answer to judge
            continue
        if multi_prompt:
            label = first_key(prompt, "label") or f"prompt {first_key(r, 'promptIdx')}"
            name = f"{name} | {label}"
            item_id = "pf-" + stable_id(vars_)
            item_prompt = "\n".join(f"{k}: {as_text(v)}" for k, v in vars_.items()) or (raw_prompt or "")
        else:
            item_id = "pf-" + stable_id(raw_prompt, vars_)
            item_prompt = raw_prompt
        if model is not None:
            if renamed.setdefault(name, model) and len(renamed) > 1:
                raise InputError(str(path), rec, pfield, "--model names the one model of a file, and this file "
                                                         "has several providers; leave --model out")
            name = model
        if item_prompt is None:
            raise InputError(str(path), rec, "prompt.raw", f"{where}: no prompt text")
        out = response.get("output") if response else None
        usage = first_key(response, "tokenUsage") or first_key(r, "tokenUsage") or {}  # the provider's, not the graders'
        ref = next((vars_[k] for k in ("reference", "expected", "expected_output", "ground_truth") if k in vars_), None)
        values: dict[str, Any] = {
            "item_id": item_id, "model": name, "prompt": item_prompt, "output": as_text(out) if out is not None else "",
            "context": as_text(vars_.get("context")), "reference": as_text(ref),
            "latency_ms": as_number(r.get("latencyMs")), "cost_usd": as_number(r.get("cost")),
            "input_tokens": as_number(first_key(usage, "prompt")), "output_tokens": as_number(first_key(usage, "completion")),
        }
        fields = {"item_id": "prompt.raw + vars" if not multi_prompt else "vars", "model": pfield,
                  "prompt": "prompt.raw" if not multi_prompt else "vars", "output": "response.output",
                  "latency_ms": "latencyMs", "cost_usd": "cost", "input_tokens": "tokenUsage.prompt",
                  "output_tokens": "tokenUsage.completion", "context": "vars.context", "reference": "vars"}
        grading = r.get("gradingResult") if isinstance(r.get("gradingResult"), dict) else None
        components = grading.get("componentResults") if grading else None
        seen: dict[tuple[str, str], int] = {}
        if isinstance(components, list) and components:
            for ci, comp in enumerate(components):
                if not isinstance(comp, dict):
                    continue
                assertion = comp.get("assertion") if isinstance(comp.get("assertion"), dict) else {}
                atype = as_text(assertion.get("type")) or "assertion"
                metric = as_text(assertion.get("metric"))
                dim = dimension_name(metric) if metric else dimension
                nth = seen.get((atype, dim), 0)
                seen[(atype, dim)] = nth + 1
                key = (atype, dim, nth)
                if key not in judge_keys:
                    judge_keys[key] = f"promptfoo-{atype}" + (f"-{nth + 1}" if nth else "")
                judge = judge_keys[key]
                raw_score = comp.get("score") if as_number(comp.get("score")) is not None else comp.get("pass")
                score = as_score(raw_score)
                src = f"gradingResult.componentResults[{ci}].{'score' if as_number(comp.get('score')) is not None else 'pass'}"
                col = f"judge:{judge}:{dim}"
                values[col] = score
                fields[col] = src
                if comp.get("reason") is not None:
                    values[f"rationale:{judge}:{dim}"] = as_text(comp.get("reason"))
                if (judge, dim) not in described:
                    described.add((judge, dim))
                    how = "score" if as_number(comp.get("score")) is not None else "pass/fail as 1/0"
                    conv.mapping.append(
                        f"assertion {atype!r}{f' (metric {metric!r})' if metric else ''}{f' #{nth + 1}' if nth else ''} "
                        f"-> judge {judge!r}, dimension {dim!r} ({how}; reason -> rationale)")
        elif grading is not None:
            # no component results: the overall grade is the one judge
            raw_score = grading.get("score") if as_number(grading.get("score")) is not None else grading.get("pass")
            col = f"judge:promptfoo:{dimension}"
            values[col] = as_score(raw_score)
            fields[col] = "gradingResult.score"
            if grading.get("reason") is not None:
                values[f"rationale:promptfoo:{dimension}"] = as_text(grading.get("reason"))
            if ("promptfoo", dimension) not in described:
                described.add(("promptfoo", dimension))
                conv.mapping.append(f"gradingResult (no component results) -> judge 'promptfoo', dimension {dimension!r}")
        conv.rows.append(Row(values, rec, where, fields))
    n_providers = len({r.values["model"] for r in conv.rows})
    conv.mapping.insert(0, f"{layout}: {len(results)} results, {n_providers} "
                           f"{'provider x prompt columns' if multi_prompt else 'providers'}")
    if multi_prompt:
        conv.mapping.insert(1, f"{len(prompt_keys)} prompts: each (provider, prompt) became a model "
                               "'<provider> | <prompt label>'; item = the test's vars (item_id 'pf-' + hash of "
                               "vars), its prompt text = the vars as 'name: value' lines")
    else:
        conv.mapping.insert(1, "item_id = 'pf-' + hash of prompt.raw and vars (the same test gets the same id "
                               "in another file); prompt = prompt.raw; output = response.output")
    conv.mapping.insert(2, "model = provider.label, else provider.id; latency_ms = latencyMs; cost_usd = cost; "
                           "tokens = tokenUsage.prompt/completion; context = vars.context; reference = "
                           "vars.reference/expected/expected_output/ground_truth")
    conv.skipped["results with a provider error (no output)"] = errors
    conv.column_fields = {"model": "provider", "prompt": "prompt.raw", "output": "response.output"}
    return conv
