"""Which tool wrote a file, told by its structure: an ``.eval`` zip with an Inspect log header, or
JSON whose (top-level) keys are the tool's. Only the file's opening is read."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

SNIFF_BYTES = 1024 * 1024
MAX_NAMES = 200_000


def _kind_of(value: Any) -> str | None:
    """Which tool wrote this JSON value, by its structure (None: not one of them)."""
    if isinstance(value, list):
        first = next((v for v in value if isinstance(v, dict)), None)
        if first is None:
            return None
        if is_promptfoo_result(first):
            return "promptfoo"
        if is_deepeval_case(first):
            return "deepeval"
        return None
    if not isinstance(value, dict):
        return None
    if is_promptfoo_result(value):
        return "promptfoo"
    inner = value.get("results")
    if isinstance(inner, dict) and isinstance(inner.get("results"), list):
        return "promptfoo"  # OutputFile / ResultsFile: {evalId, results: {version, results: [...]}}
    if isinstance(inner, list) and ("prompts" in value or "stats" in value) and "version" in value:
        return "promptfoo"  # EvaluateSummary on its own
    if isinstance(value.get("eval"), dict) and ("samples" in value or "plan" in value or "status" in value):
        return "inspect"
    if isinstance(value.get("testCases"), list) or isinstance(value.get("test_results"), list) \
            or isinstance(value.get("conversationalTestCases"), list):
        return "deepeval"
    return None


def is_promptfoo_result(v: dict) -> bool:
    return ("promptIdx" in v or "testIdx" in v) and ("provider" in v or "response" in v)


def is_deepeval_case(v: dict) -> bool:
    return "input" in v and any(k in v for k in ("metrics_data", "metricsData", "actual_output", "actualOutput"))


def detect(path: str | Path) -> str | None:
    """``promptfoo``, ``inspect`` or ``deepeval`` when ``path`` is one of their result files, by its
    structure (an ``.eval`` zip with a log header, or JSON whose keys are the tool's); None for
    anything else, which the Tiebreak importer reads as usual."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist()[:MAX_NAMES])
        except (zipfile.BadZipFile, OSError):
            return None
        if names & {"header.json", "_journal/start.json", "start.json"}:
            return "inspect"
        return None
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        return None
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if not text[:1] in ("{", "["):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except (json.JSONDecodeError, RecursionError):
        value = None
    if isinstance(value, dict) and "item_id" in value:
        return None  # a Tiebreak JSONL row
    if value is not None:
        return _kind_of(value)
    # the document is bigger than the sniffed prefix: tell it by the keys the prefix opens with
    return _kind_of_keys(_key_paths(text))


def _key_paths(text: str, max_depth: int = 3) -> set[tuple[str, ...]]:
    """Object keys of a (possibly cut) JSON text as paths from the top, e.g. ("results", "version");
    list elements are "[]". A small scanner: text inside string values is never taken for a key."""
    paths: set[tuple[str, ...]] = set()
    stack: list[list] = []  # [kind, key of this container in its parent]
    i, n = 0, len(text)
    last_key: str | None = None
    while i < n:
        ch = text[i]
        if ch == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    j += 1
                buf.append(text[j] if j < n else "")
                j += 1
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k < n and text[k] == ":" and stack and stack[-1][0] == "{":
                last_key = "".join(buf)
                if len(stack) <= max_depth:
                    paths.add(tuple(s[1] for s in stack[1:]) + (last_key,))
            i = j + 1
            continue
        if ch in "{[":
            key = "[]" if stack and stack[-1][0] == "[" else (last_key or "")
            stack.append([ch, key])
            last_key = None
        elif ch in "}]":
            if stack:
                stack.pop()
        i += 1
    return paths


def _kind_of_keys(paths: set[tuple[str, ...]]) -> str | None:
    top = {p[0] for p in paths if len(p) == 1}
    first = {p[1] for p in paths if len(p) == 2 and p[0] == "[]"}
    if {"promptIdx", "testIdx"} & (top | first) and {"provider", "response"} & (top | first):
        return "promptfoo"
    if ("results", "results") in paths or ("evalId" in top and ("results", "version") in paths):
        return "promptfoo"
    if "eval" in top and top & {"samples", "plan", "status"}:
        return "inspect"
    if top & {"testCases", "test_results", "conversationalTestCases"} or (
            "input" in first and first & {"metrics_data", "metricsData", "actual_output", "actualOutput"}):
        return "deepeval"
    return None
