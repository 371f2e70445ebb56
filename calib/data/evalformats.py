"""Read other eval tools' result files (promptfoo, Inspect AI, DeepEval) as Tiebreak import rows.

Teams already run one of these tools and have outputs and scorer results in its files; this module
reshapes them into the outputs import format (one row per item and model, ``judge:<judge>:<dimension>``
columns; see data/SCHEMA.md) and says what became what. The rows then go through
``calib.data.ingest.import_file`` unchanged (a temporary Parquet file), so validation, strictness
about new names, the transaction and the one-line errors are the importer's own; an error it finds
in a converted row is reported against the original file and the tool's field that produced it.

Formats (looked up in each tool's source):
- promptfoo: ``promptfoo eval -o results.json`` (``OutputFile``: ``results.results[]`` of
  ``EvaluateResult`` with ``provider``, ``prompt.raw``, ``vars``, ``response.output``, ``latencyMs``,
  ``cost``, ``gradingResult.componentResults[]`` with ``assertion.type``/``metric``, ``pass``,
  ``score``, ``reason``), and ``-o results.jsonl`` (one ``EvaluateResult`` a line);
- Inspect AI: eval logs, ``.json`` (``EvalLog``: ``eval.task``/``eval.model``, ``samples[]``) and
  ``.eval`` (a zip: ``header.json`` or ``_journal/start.json``, ``samples/<id>_epoch_<n>.json``);
  sample ``scores`` are ``{scorer: {value, answer, explanation}}`` with values ``C``/``I``/``P``/``N``,
  numbers, booleans or a dict of them;
- DeepEval: ``evaluate()`` results dumped to JSON (``test_results[]`` with ``input``,
  ``actual_output``, ``metrics_data[]``) and the saved test run (``.deepeval/.latest_test_run.json``:
  ``testCases[]`` with ``actualOutput``, ``metricsData[]``, camelCase).

Nothing here imports a tool's package: the files are plain JSON (and a zip for ``.eval``), read
with size caps so a hostile file (a zip bomb, a huge document) is refused rather than exhausting memory.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from calib.errors import InputError

FORMATS = ("promptfoo", "inspect", "deepeval")
DEFAULT_DIMENSION = "quality"
MAX_JSON_BYTES = 512 * 1024 * 1024  # one JSON document read whole; promptfoo JSONL and .eval stream
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_MEMBER_BYTES = 256 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
SNIFF_BYTES = 1024 * 1024

TEXT_COLS = ["item_id", "model", "prompt", "output", "context", "reference"]
NUM_COLS = ["latency_ms", "input_tokens", "output_tokens", "cost_usd"]


# --------------------------------------------------------------------------- the converted file


@dataclass
class Row:
    """One Tiebreak outputs row, with where in the source file it came from (for errors)."""

    values: dict[str, Any]
    record: int  # 1-based record number in the source (result, line, sample, test case)
    where: str  # e.g. "results[3]", "line 4", "samples/7_epoch_1.json"
    fields: dict[str, str] = field(default_factory=dict)  # Tiebreak column -> the tool's field


@dataclass
class Converted:
    """A tool's file as Tiebreak import rows, and what became what."""

    tool: str
    file: str
    rows: list[Row]
    mapping: list[str] = field(default_factory=list)  # "what became what" lines
    skipped: dict[str, int] = field(default_factory=dict)
    column_fields: dict[str, str] = field(default_factory=dict)  # Tiebreak column -> tool field, file-wide
    scores: dict[tuple[str, str], int] = field(default_factory=dict)  # (judge, dimension) -> scores given

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.values["model"] for r in self.rows))

    @property
    def items(self) -> list[str]:
        return list(dict.fromkeys(r.values["item_id"] for r in self.rows))

    def summary(self) -> str:
        """The printed mapping: counts, models, judges, choices made and what was skipped.
        Names from the file are shown through ``safetext.one_line`` (no control characters)."""
        from calib.safetext import one_line

        head = (f"{one_line(self.file, 200)}: read as {self.tool} -> {len(self.items)} items, "
                f"{len(self.rows)} outputs, {len(self.models)} model{'s' if len(self.models) != 1 else ''} "
                f"({', '.join(repr(one_line(m, 60)) for m in self.models)})")
        lines = [head] + [f"  {one_line(line, 600)}" for line in self.mapping]
        for (judge, dim), n in self.scores.items():
            lines.append(f"  judge {one_line(judge, 60)!r}, dimension {one_line(dim, 60)!r}: {n} scores")
        skipped = {k: v for k, v in self.skipped.items() if v}
        if skipped:
            lines.append("  skipped: " + "; ".join(f"{v} {k}" for k, v in skipped.items()))
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _h(*parts: Any) -> str:
    """A short stable id from JSON-able parts (the same test in another file gets the same id)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _text(v: Any) -> str | None:
    """A value as text for a text column: strings as they are, anything else as JSON."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def _num(v: Any) -> float | None:
    """A number, or None (booleans and text are not numbers here: the importer refuses them)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _get(obj: Any, *names: str) -> Any:
    """The first present key of ``names`` in a dict (snake_case and camelCase spellings)."""
    if not isinstance(obj, dict):
        return None
    for n in names:
        if n in obj and obj[n] is not None:
            return obj[n]
    return None


def _dimension_name(name: str) -> str:
    """A dimension cannot hold ':' (it ends the ``judge:<judge>:<dimension>`` column)."""
    return name.replace(":", "-").strip() or DEFAULT_DIMENSION


def _score(raw: Any) -> float | None:
    """A tool's score as a Tiebreak judge score: numbers as they are, pass/fail as 1/0."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    return _num(raw)


def _loads(text: str, path: Path) -> Any:
    """One JSON document (no record to name yet: the error gives its line and character)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), None, None,
                         f"malformed JSON: {exc.msg} (line {exc.lineno}, character {exc.colno})") from None
    except RecursionError:
        raise InputError(str(path), None, None, "JSON nested too deeply to read") from None


def _read_json_document(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(str(path), None, None,
                         f"a {size / 2**20:.0f} MiB JSON document is too big to read whole (limit "
                         f"{MAX_JSON_BYTES // 2**20} MiB); export JSONL (promptfoo) or .eval (Inspect) instead")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                                                f"{exc.start}); save the file as UTF-8") from None
    return _loads(text, path)


def _json_values(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) for each JSON value of a JSON Lines file. Several values on one line are
    accepted: promptfoo before 0.100 joined its JSONL batches without a newline between them."""
    dec = json.JSONDecoder()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(str(path), lineno, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                                                          "save the file as UTF-8") from None
            pos, end = 0, len(text)
            while True:
                while pos < end and text[pos].isspace():
                    pos += 1
                if pos >= end:
                    break
                try:
                    value, pos = dec.raw_decode(text, pos)
                except json.JSONDecodeError as exc:
                    raise InputError(str(path), lineno, None,
                                     f"malformed JSON: {exc.msg} at character {exc.colno}") from None
                except RecursionError:
                    raise InputError(str(path), lineno, None, "JSON nested too deeply to read") from None
                yield lineno, value


# --------------------------------------------------------------------------- detection


def _kind_of(value: Any) -> str | None:
    """Which tool wrote this JSON value, by its structure (None: not one of them)."""
    if isinstance(value, list):
        first = next((v for v in value if isinstance(v, dict)), None)
        if first is None:
            return None
        if _is_promptfoo_result(first):
            return "promptfoo"
        if _is_deepeval_case(first):
            return "deepeval"
        return None
    if not isinstance(value, dict):
        return None
    if _is_promptfoo_result(value):
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


def _is_promptfoo_result(v: dict) -> bool:
    return ("promptIdx" in v or "testIdx" in v) and ("provider" in v or "response" in v)


def _is_deepeval_case(v: dict) -> bool:
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
                names = set(z.namelist()[:MAX_ZIP_MEMBERS])
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


# --------------------------------------------------------------------------- promptfoo


def _promptfoo_results(path: Path) -> tuple[list[tuple[int, str, dict]], str]:
    """(record number, locator, EvaluateResult) for each result, and a description of the layout."""
    with open(path, "rb") as fh:  # JSONL when the first line is a whole result (however long it is)
        first_line = fh.readline(MAX_JSON_BYTES).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    try:
        first, _ = json.JSONDecoder().raw_decode(first_line)
        one_per_line = isinstance(first, dict) and _is_promptfoo_result(first)
    except (json.JSONDecodeError, RecursionError):
        one_per_line = False
    if one_per_line:
        out = []
        for lineno, v in _json_values(path):
            if not isinstance(v, dict):
                raise InputError(str(path), lineno, None, "each line must be a JSON object (a promptfoo result)")
            out.append((lineno, f"line {lineno}", v))
        return out, "JSONL export, one result a line"
    doc = _read_json_document(path)
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


def _promptfoo(path: Path, dimension: str, model: str | None) -> Converted:
    results, layout = _promptfoo_results(path)
    conv = Converted("promptfoo", str(path), [])
    prompt_keys = {(_get(r, "promptIdx"), _get(_get(r, "prompt"), "label")) for _, _, r in results}
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
            name = _get(provider, "label") or _get(provider, "id")
            pfield = "provider.label" if _get(provider, "label") else "provider.id"
        if not isinstance(name, str) or not name.strip():
            raise InputError(str(path), rec, "provider", f"{where}: no provider id or label (the model)")
        prompt = r.get("prompt") if isinstance(r.get("prompt"), dict) else {}
        raw_prompt = _text(prompt.get("raw")) or _text(r.get("prompt") if isinstance(r.get("prompt"), str) else None)
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
            label = _get(prompt, "label") or f"prompt {_get(r, 'promptIdx')}"
            name = f"{name} | {label}"
            item_id = "pf-" + _h(vars_)
            item_prompt = "\n".join(f"{k}: {_text(v)}" for k, v in vars_.items()) or (raw_prompt or "")
        else:
            item_id = "pf-" + _h(raw_prompt, vars_)
            item_prompt = raw_prompt
        if model is not None:
            if renamed.setdefault(name, model) and len(renamed) > 1:
                raise InputError(str(path), rec, pfield, "--model names the one model of a file, and this file "
                                                         "has several providers; leave --model out")
            name = model
        if item_prompt is None:
            raise InputError(str(path), rec, "prompt.raw", f"{where}: no prompt text")
        out = response.get("output") if response else None
        usage = _get(response, "tokenUsage") or _get(r, "tokenUsage") or {}  # the provider's, not the graders'
        ref = next((vars_[k] for k in ("reference", "expected", "expected_output", "ground_truth") if k in vars_), None)
        values: dict[str, Any] = {
            "item_id": item_id, "model": name, "prompt": item_prompt, "output": _text(out) if out is not None else "",
            "context": _text(vars_.get("context")), "reference": _text(ref),
            "latency_ms": _num(r.get("latencyMs")), "cost_usd": _num(r.get("cost")),
            "input_tokens": _num(_get(usage, "prompt")), "output_tokens": _num(_get(usage, "completion")),
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
                atype = _text(assertion.get("type")) or "assertion"
                metric = _text(assertion.get("metric"))
                dim = _dimension_name(metric) if metric else dimension
                nth = seen.get((atype, dim), 0)
                seen[(atype, dim)] = nth + 1
                key = (atype, dim, nth)
                if key not in judge_keys:
                    judge_keys[key] = f"promptfoo-{atype}" + (f"-{nth + 1}" if nth else "")
                judge = judge_keys[key]
                raw_score = comp.get("score") if _num(comp.get("score")) is not None else comp.get("pass")
                score = _score(raw_score)
                src = f"gradingResult.componentResults[{ci}].{'score' if _num(comp.get('score')) is not None else 'pass'}"
                col = f"judge:{judge}:{dim}"
                values[col] = score
                fields[col] = src
                if comp.get("reason") is not None:
                    values[f"rationale:{judge}:{dim}"] = _text(comp.get("reason"))
                if (judge, dim) not in described:
                    described.add((judge, dim))
                    how = "score" if _num(comp.get("score")) is not None else "pass/fail as 1/0"
                    conv.mapping.append(
                        f"assertion {atype!r}{f' (metric {metric!r})' if metric else ''}{f' #{nth + 1}' if nth else ''} "
                        f"-> judge {judge!r}, dimension {dim!r} ({how}; reason -> rationale)")
        elif grading is not None:
            # no component results: the overall grade is the one judge
            raw_score = grading.get("score") if _num(grading.get("score")) is not None else grading.get("pass")
            col = f"judge:promptfoo:{dimension}"
            values[col] = _score(raw_score)
            fields[col] = "gradingResult.score"
            if grading.get("reason") is not None:
                values[f"rationale:promptfoo:{dimension}"] = _text(grading.get("reason"))
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


# --------------------------------------------------------------------------- Inspect AI

INSPECT_VALUES = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}  # CORRECT, PARTIAL, INCORRECT, NOANSWER


def _inspect_value(v: Any) -> float | None:
    """Inspect's ``value_to_float``: C 1, P 0.5, I/N 0, yes/true 1, no/false 0, numbers as numbers."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        if v in INSPECT_VALUES:
            return INSPECT_VALUES[v]
        low = v.strip().lower()
        if low in ("yes", "true"):
            return 1.0
        if low in ("no", "false"):
            return 0.0
        try:
            return float(low)
        except ValueError:
            return None
    return None


def _resolve(text: Any, attachments: dict) -> Any:
    """Inspect condenses long content into ``attachment://<hash>`` references kept in the sample."""
    if isinstance(text, str) and text.startswith("attachment://"):
        return attachments.get(text[len("attachment://"):], text)
    return text


def _content_text(content: Any, attachments: dict) -> str:
    """A message's content (a string or a list of parts) as text; non-text parts as a marker."""
    content = _resolve(content, attachments)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if p.get("type") == "text":
                    parts.append(str(_resolve(p.get("text", ""), attachments)))
                elif p.get("type") == "reasoning":
                    continue  # the model's hidden reasoning is not its answer
                else:
                    parts.append(f"({p.get('type', 'content')})")
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    return _text(content) or ""


def _inspect_prompt(inp: Any, attachments: dict) -> str:
    inp = _resolve(inp, attachments)
    if isinstance(inp, str):
        return inp
    if isinstance(inp, list):
        msgs = [m for m in inp if isinstance(m, dict)]
        if len(msgs) == 1 and msgs[0].get("role") == "user":
            return _content_text(msgs[0].get("content"), attachments)
        return "\n\n".join(f"{m.get('role', '?')}: {_content_text(m.get('content'), attachments)}" for m in msgs)
    return _text(inp) or ""


def _read_capped(z: zipfile.ZipFile, name: str, budget: list[int], path: Path) -> bytes:
    """A zip member's bytes, read with a cap (the header's sizes are not trusted: a bomb lies)."""
    try:
        with z.open(name) as fh:
            data = fh.read(MAX_ZIP_MEMBER_BYTES + 1)
    except NotImplementedError:
        raise InputError(str(path), None, None, f"member {name!r} uses a compression this Python cannot read "
                                                "(deflate64 from older Inspect, or zstd from INSPECT_USE_ZSTD); "
                                                "convert it with `inspect log convert --to json`") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(str(path), None, None, f"damaged zip member {name!r}: {exc}") from None
    if len(data) > MAX_ZIP_MEMBER_BYTES:
        raise InputError(str(path), None, None, f"member {name!r} unpacks to more than "
                                                f"{MAX_ZIP_MEMBER_BYTES // 2**20} MiB; refused")
    budget[0] -= len(data)
    if budget[0] < 0:
        raise InputError(str(path), None, None, f"the log unpacks to more than {MAX_ZIP_TOTAL_BYTES // 2**30} GiB; refused")
    return data


def _zip_json(z, name, budget, path) -> Any:
    data = _read_capped(z, name, budget, path)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(str(path), None, None, f"member {name!r} is not readable JSON: {exc}") from None


def _inspect_log(path: Path) -> tuple[dict, Iterator[tuple[str, Any]], str]:
    """(eval spec, (locator, sample) pairs, layout) from a ``.json`` or ``.eval`` log."""
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if not is_zip:
        doc = _read_json_document(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("eval"), dict):
            raise InputError(str(path), None, "eval", "not an Inspect eval log (no 'eval' object)")
        samples = doc.get("samples")
        if not isinstance(samples, list):
            raise InputError(str(path), None, "samples", "the log has no samples (was it written with "
                                                         "--no-log-samples, or is it still running?)")
        return doc["eval"], ((f"samples[{i}]", s) for i, s in enumerate(samples)), ".json log"
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(str(path), None, None, f"not a readable .eval (zip) file: {exc}") from None
    infos = z.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        z.close()
        raise InputError(str(path), None, None, f"the zip has {len(infos)} members (limit {MAX_ZIP_MEMBERS}); refused")
    try:
        names = [i.filename for i in infos]
        budget = [MAX_ZIP_TOTAL_BYTES]
        header_name = next((n for n in ("header.json", "_journal/start.json", "start.json") if n in names), None)
        if header_name is None:
            raise InputError(str(path), None, None, "not an Inspect .eval log (no header.json or _journal/start.json)")
        header = _zip_json(z, header_name, budget, path)
        spec = header.get("eval") if isinstance(header, dict) else None
        if not isinstance(spec, dict):
            raise InputError(str(path), None, "eval", f"{header_name} has no 'eval' object")
        # samples/<id>_epoch_<n>.json (the experimental .eval2 keeps a sample's shell in .../sample.json)
        sample_names = [n for n in names if n.startswith("samples/") and n.endswith(".json")
                        and (n.count("/") == 1 or n.endswith("/sample.json"))]
        if not sample_names:
            raise InputError(str(path), None, "samples", "the log has no samples (was it written with "
                                                         "--no-log-samples, or is it still running?)")
    except BaseException:
        z.close()
        raise

    def gen():
        try:
            for n in sample_names:
                yield n, _zip_json(z, n, budget, path)
        finally:
            z.close()
    return spec, gen(), ".eval log (zip)"


def _inspect(path: Path, dimension: str, model: str | None) -> Converted:
    spec, samples, layout = _inspect_log(path)
    task = _text(spec.get("task")) or path.stem
    name = model or _text(spec.get("model"))
    if not name:
        raise InputError(str(path), None, "eval.model", "the log names no model; import with --model NAME")
    conv = Converted("inspect", str(path), [])
    seen: dict[str, int] = {}  # item -> the epoch kept
    later_epochs = errored = list_scores = unreadable = 0
    scorers: set[str] = set()
    n = 0
    for rec, (where, s) in enumerate(samples, start=1):
        n += 1
        if not isinstance(s, dict):
            raise InputError(str(path), rec, None, f"{where} is not an object (an Inspect sample)")
        sid = s.get("id")
        if sid is None or isinstance(sid, (dict, list)):
            raise InputError(str(path), rec, "id", f"{where}: the sample has no id")
        epoch = s.get("epoch") if isinstance(s.get("epoch"), int) else 1
        if s.get("error"):
            errored += 1
            continue
        attachments = s.get("attachments") if isinstance(s.get("attachments"), dict) else {}
        item_id = f"{task}/{sid}"
        if item_id in seen:  # another epoch of a sample already read: keep the lowest epoch
            later_epochs += 1
            if epoch >= seen[item_id]:
                continue
            conv.rows = [r for r in conv.rows if r.values["item_id"] != item_id]
        output = s.get("output") if isinstance(s.get("output"), dict) else {}
        choices = output.get("choices") if isinstance(output.get("choices"), list) else []
        text = None
        if output.get("completion") is not None:
            text = _text(_resolve(output.get("completion"), attachments))
        elif choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict):
            text = _content_text(choices[0]["message"].get("content"), attachments)
        usage = output.get("usage") if isinstance(output.get("usage"), dict) else {}
        target = s.get("target")
        ref = "\n".join(str(t) for t in target) if isinstance(target, list) else _text(target)
        latency = _num(s.get("total_time")) if _num(s.get("total_time")) is not None else _num(output.get("time"))
        values: dict[str, Any] = {
            "item_id": item_id, "model": name, "prompt": _inspect_prompt(s.get("input"), attachments),
            "output": text or "", "reference": ref or None,
            "latency_ms": latency * 1000 if latency is not None else None,
            "input_tokens": _num(usage.get("input_tokens")), "output_tokens": _num(usage.get("output_tokens")),
        }
        fields = {"item_id": "id", "prompt": "input", "output": "output.choices[0].message.content",
                  "reference": "target", "latency_ms": "total_time", "model": "eval.model"}
        scores = s.get("scores") if isinstance(s.get("scores"), dict) else {}
        for scorer, sc in scores.items():
            if not isinstance(sc, dict):
                unreadable += 1
                continue
            judge = f"inspect-{scorer}"
            value = sc.get("value")
            parts = value.items() if isinstance(value, dict) else [(None, value)]
            for key, v in parts:
                if isinstance(v, (list, dict)):
                    list_scores += 1
                    continue
                dim = _dimension_name(str(key)) if key is not None else dimension
                col = f"judge:{judge}:{dim}"
                score = _inspect_value(v)
                if score is None and v is not None:
                    unreadable += 1
                values[col] = score
                fields[col] = f"scores.{scorer}.value" + (f".{key}" if key is not None else "")
                if sc.get("explanation") is not None:
                    values[f"rationale:{judge}:{dim}"] = _text(sc.get("explanation"))
                if (judge, dim) not in scorers:
                    scorers.add((judge, dim))
                    conv.mapping.append(f"scorer {scorer!r}{f' value {key!r}' if key is not None else ''} -> judge "
                                        f"{judge!r}, dimension {dim!r} (C 1, P 0.5, I/N 0, numbers as they are; "
                                        "explanation -> rationale)")
        seen[item_id] = epoch
        conv.rows.append(Row(values, rec, where, fields))
    conv.mapping.insert(0, f"{layout}: task {task!r}, model {name!r}"
                           f"{' (from --model)' if model else ' (eval.model)'}, {n} samples")
    conv.mapping.insert(1, "item_id = '<task>/<sample id>' (the same sample of the same task in another model's "
                           "log gets the same id); prompt = input; output = output.choices[0].message.content; "
                           "reference = target; latency_ms = total_time x 1000; tokens = output.usage")
    conv.skipped["later epochs (the first epoch of each sample is kept)"] = later_epochs
    conv.skipped["samples that ended in an error"] = errored
    conv.skipped["list-valued scores (not one number)"] = list_scores
    conv.skipped["score values not readable as numbers (left empty)"] = unreadable
    conv.column_fields = {"model": "eval.model", "prompt": "input", "output": "output"}
    return conv


# --------------------------------------------------------------------------- DeepEval


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


def _deepeval(path: Path, dimension: str, model: str | None) -> Converted:
    cases, hyper, convo, layout = _deepeval_cases(_read_json_document(path), path)
    hyper_model = next((_text(v) for k, v in hyper.items() if str(k).lower() == "model" and v), None)
    name = model or hyper_model or path.stem
    conv = Converted("deepeval", str(path), [])
    # Which way each metric points: DeepEval passes most metrics when score >= threshold, but some
    # (bias, toxicity, hallucination, ...) when score <= threshold. Told from the file's own
    # success flags, so a custom metric is read the way DeepEval judged it.
    votes: dict[str, list[int]] = {}
    for _, _, c in cases:
        for m in _get(c, "metrics_data", "metricsData") or []:
            if not isinstance(m, dict):
                continue
            s, t, ok = _num(m.get("score")), _num(m.get("threshold")), m.get("success")
            if s is None or t is None or not isinstance(ok, bool) or s == t:
                continue
            v = votes.setdefault(str(m.get("name")), [0, 0])
            v[0] += ok == (s > t)
            v[1] += ok == (s < t)
    lower_better = {k for k, (up, down) in votes.items() if down > up}
    described: set[str] = set()
    no_output = 0
    for rec, where, c in cases:
        inp = _get(c, "input")
        if inp is None:
            raise InputError(str(path), rec, "input", f"{where}: the test case has no input")
        actual = _get(c, "actual_output", "actualOutput")
        if actual is None:
            no_output += 1
        ctx = _get(c, "retrieval_context", "retrievalContext") or _get(c, "context")
        secs = _num(_get(c, "completion_time", "completionTime"))
        values: dict[str, Any] = {
            "item_id": "de-" + _h(_text(inp)), "model": name, "prompt": _text(inp), "output": _text(actual) or "",
            "reference": _text(_get(c, "expected_output", "expectedOutput")),
            "context": "\n\n".join(map(str, ctx)) if isinstance(ctx, list) else _text(ctx),
            "latency_ms": secs * 1000 if secs is not None else None,
            "cost_usd": _num(_get(c, "token_cost", "tokenCost")),
            "input_tokens": _num(_get(c, "input_token_count", "inputTokenCount")),
            "output_tokens": _num(_get(c, "output_token_count", "outputTokenCount")),
        }
        fields = {"item_id": "input", "prompt": "input", "output": "actualOutput", "reference": "expectedOutput",
                  "context": "retrievalContext", "latency_ms": "completionTime", "cost_usd": "tokenCost"}
        for mi, m in enumerate(_get(c, "metrics_data", "metricsData") or []):
            if not isinstance(m, dict):
                continue
            metric = _text(m.get("name")) or f"metric-{mi}"
            judge = f"deepeval-{metric}"
            col = f"judge:{judge}:{dimension}"
            s = _num(m.get("score"))
            if s is None and isinstance(m.get("success"), bool) and not m.get("error"):
                s = 1.0 if m["success"] else 0.0  # a metric with only a verdict
            elif s is not None and metric in lower_better and 0 <= s <= 1:
                s = 1.0 - s
            values[col] = s
            fields[col] = f"{where.split('[')[0]}[].metricsData[{mi}].score"
            if m.get("reason") is not None:
                values[f"rationale:{judge}:{dimension}"] = _text(m.get("reason"))
            if judge not in described:
                described.add(judge)
                ev = _text(_get(m, "evaluation_model", "evaluationModel"))
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


# --------------------------------------------------------------------------- conversion and import

READERS = {"promptfoo": _promptfoo, "inspect": _inspect, "deepeval": _deepeval}


def _merge_repeats(conv: Converted) -> None:
    """One row per (item, model): rows for the same pair with the same answer are merged (DeepEval
    writes a test case per test function); a different answer is a repeat (promptfoo --repeat) and
    the first is kept."""
    by_key: dict[tuple[str, str], Row] = {}
    kept, repeats = [], 0
    for row in conv.rows:
        key = (row.values["item_id"], row.values["model"])
        first = by_key.get(key)
        if first is None:
            by_key[key] = row
            kept.append(row)
        elif first.values["output"] == row.values["output"]:
            for k, v in row.values.items():
                if first.values.get(k) is None and v is not None:
                    first.values[k] = v
                    first.fields.setdefault(k, row.fields.get(k, k))
        else:
            repeats += 1
    conv.rows = kept
    if repeats:
        conv.skipped["repeats of an (item, model) already read (the first answer is kept)"] = repeats


def convert(path: str | Path, fmt: str | None = None, *, dimension: str = DEFAULT_DIMENSION,
            model: str | None = None) -> Converted:
    """Read a promptfoo, Inspect AI or DeepEval file (``fmt`` forces which; None detects it)."""
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "no such file")
    fmt = fmt or detect(path)
    if fmt not in READERS:
        raise InputError(str(path), None, None, "not a promptfoo, Inspect AI or DeepEval result file "
                                                f"(use --format {'|'.join(FORMATS)} to say which)")
    dimension = _dimension_name(dimension)
    conv = READERS[fmt](path, dimension, model)
    if model is not None and fmt == "promptfoo" and conv.rows:
        conv.mapping.append(f"--model {model!r}: every provider renamed to it")
    _merge_repeats(conv)
    for row in conv.rows:  # scores given per (judge, dimension), counted on the rows as imported
        for col, v in row.values.items():
            if col.startswith("judge:") and v is not None:
                judge, dim = col[len("judge:"):].rsplit(":", 1)
                conv.scores[(judge, dim)] = conv.scores.get((judge, dim), 0) + 1
    if not conv.rows:
        raise InputError(str(path), None, None, f"no outputs to import ({fmt} file with nothing usable; "
                                                + ("; ".join(f'{v} {k}' for k, v in conv.skipped.items() if v) or "empty")
                                                + ")")
    return conv


def _table(conv: Converted) -> pa.Table:
    """The rows as an Arrow table of the import format: ids and text as strings, the rest doubles."""
    cols: dict[str, None] = {}
    for row in conv.rows:
        for k in row.values:
            cols.setdefault(k, None)
    arrays = {}
    for c in cols:
        vals = [row.values.get(c) for row in conv.rows]
        if c in NUM_COLS or c.startswith("judge:"):
            if all(v is None for v in vals):
                continue
            arrays[c] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
        else:
            if c not in ("item_id", "model", "prompt", "output") and all(v is None for v in vals):
                continue
            arrays[c] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    return pa.table(arrays)


def _source_error(conv: Converted, exc: InputError) -> InputError:
    """An importer error about the converted rows, retold against the original file and field."""
    column = exc.column
    if exc.row and 1 <= exc.row <= len(conv.rows):
        row = conv.rows[exc.row - 1]
        field_name = row.fields.get(column or "", column)
        return InputError(conv.file, row.record, field_name, f"{exc.message} [{conv.tool} {row.where}, "
                                                             f"Tiebreak column {column!r}]")
    field_name = conv.column_fields.get(column or "", column)
    return InputError(conv.file, None, field_name, f"{exc.message} [{conv.tool}"
                                                   f"{f', Tiebreak column {column!r}' if column else ''}]")


def import_converted(con, conv: Converted, baseline: str | None = None, **allow: bool):
    """Import converted rows through ``ingest.import_file`` (validation, strictness, one transaction)
    via a temporary Parquet file; errors name the original file, record and the tool's field."""
    from calib.data import ingest

    with tempfile.TemporaryDirectory(prefix="tiebreak-evalimport-") as tmp:
        staged = Path(tmp) / "converted.parquet"
        pq.write_table(_table(conv), staged)
        try:
            report = ingest.import_file(con, staged, baseline=baseline, **allow)
        except InputError as exc:
            if Path(exc.file) != staged:
                raise
            raise _source_error(conv, exc) from None
    report.file = conv.file
    report.kind = f"{conv.tool} output"
    return report


def import_eval_file(con, path: str | Path, fmt: str | None = None, *, dimension: str = DEFAULT_DIMENSION,
                     model: str | None = None, baseline: str | None = None, **allow: bool):
    """Convert and import one tool file: returns (the conversion, the importer's report)."""
    conv = convert(path, fmt, dimension=dimension, model=model)
    return conv, import_converted(con, conv, baseline=baseline, **allow)
