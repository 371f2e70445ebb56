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

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from calib.data.evalformats.common import (DEFAULT_DIMENSION, FORMATS, NUM_COLS, Converted, Row,
                                           dimension_name)
from calib.data.evalformats import deepeval, inspectlog, promptfoo
from calib.data.evalformats.sniff import detect
from calib.errors import InputError

__all__ = ["FORMATS", "DEFAULT_DIMENSION", "Converted", "Row", "detect", "convert", "import_converted",
           "import_eval_file"]

READERS = {"promptfoo": promptfoo.read, "inspect": inspectlog.read, "deepeval": deepeval.read}


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
    dimension = dimension_name(dimension)
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
