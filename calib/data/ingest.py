"""Import outputs, judge scores, pairwise judge preferences and labels; export labels.

Every import is one transaction: the file is read into a staging view, validated with SQL
(first offending row and column reported), then inserted; any error rolls everything back, so
nothing from a bad file is stored and nothing already stored is touched.

Row numbers in errors are data rows counted from 1 (the CSV header is row 0), so "row 7" is the
seventh record, and for CSV/JSONL the physical line is given too when it differs.

File kinds are told apart by their columns:
- outputs: ``item_id, model, prompt, output`` and ``judge:<judge>:<dimension>`` columns;
- pairwise judge preferences: ``item_id, baseline, candidate`` and ``pref:<judge>:<dimension>``;
- labels (``tiebreak labels import``): pointwise rows have ``model`` and ``verdict``, pairwise
  rows ``baseline``, ``candidate`` and ``preference``; one file may hold both (as exported).
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import duckdb

from calib.data import readers, store
from calib.errors import InputError, TiebreakError

JUDGE_PREFIX, PREF_PREFIX, RATIONALE_PREFIX = "judge:", "pref:", "rationale:"
SCORE_MIN, SCORE_MAX = 0.0, 100.0  # judge scores: 0/1, probabilities, Likert and 0-100 all fit
OUTPUT_REQUIRED = ["item_id", "model", "prompt", "output"]
OUTPUT_OPTIONAL_TEXT = ["segment", "topic", "context", "reference"]
OUTPUT_OPTIONAL_NUM = ["latency_ms", "input_tokens", "output_tokens", "cost_usd"]
PREF_REQUIRED = ["item_id", "baseline", "candidate"]
PAIR_PREFERENCES = {"candidate", "baseline", "tie"}
INCLUSION_PROB = "inclusion_prob"  # an outputs file's phase-1 probability per scored item (two-phase design)
VERDICTS = {"pass": True, "fail": False, "1": True, "0": False, "true": True, "false": False,
            "1.0": True, "0.0": False}


@dataclass
class ImportReport:
    """What an import did, for the CLI and the app to print."""

    file: str
    kind: str
    rows: int
    added: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        added = ", ".join(f"{v} {k}" for k, v in self.added.items()) or "nothing new"
        text = f"{self.file}: {self.rows} {self.kind} rows read; added {added}"
        skipped = {k: v for k, v in self.skipped.items() if v}
        if skipped:
            text += "; already present (unchanged): " + ", ".join(f"{v} {k}" for k, v in skipped.items())
        return "\n".join([text, *self.notes])


# --------------------------------------------------------------------------- reading files


def _q(name: str) -> str:
    """Quote an identifier for SQL (column names hold colons)."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def stage(con: duckdb.DuckDBPyConnection, path: str | Path, name: str = "_stage", *,
          limits: readers.Limits | None = None, prepared: str | Path | None = None,
          notes: list[str] | None = None) -> list[str]:
    """Expose ``path`` as the temp view ``name`` with a 1-based ``_row`` column; return its columns.

    The file is checked against ``limits`` (default: the project's settings) before any work and read
    through DuckDB (``calib.data.readers``), never into Python lists. ``prepared`` is a Parquet file
    that ``readers.prepare`` already wrote from ``path`` (the app does that in a memory-capped child
    process); errors still name ``path``. A Parquet file is read in place (the 5.3M-row path); CSV
    and JSONL are converted to a typed temp table first. Reader notes (a detected delimiter) are
    appended to ``notes``."""
    path = Path(path)
    if limits is None:
        limits = readers.Limits.from_settings(store.get_settings(con))
    con.execute(f"DROP VIEW IF EXISTS {name}")
    con.execute(f"DROP TABLE IF EXISTS {name}_data")
    if prepared is not None:
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet({_lit(str(prepared))})")
    elif readers.file_kind(path) == "parquet":
        readers.check_size(path, limits)
        reader = readers.reader_connection(tempfile.gettempdir())
        try:
            readers.parquet_columns(path, reader, limits)
        finally:
            reader.close()
        con.execute(
            f"CREATE TEMP VIEW {name} AS SELECT * EXCLUDE (file_row_number), "
            f"file_row_number + 1 AS _row FROM read_parquet({_lit(str(path))}, file_row_number = true)"
        )
    else:
        with tempfile.TemporaryDirectory(prefix="tiebreak-import-") as tmp:
            out = Path(tmp) / "staged.parquet"
            info = readers.prepare(path, out, limits)
            if notes is not None:
                notes.extend(info["notes"])
            con.execute(f"CREATE TEMP TABLE {name}_data AS SELECT * FROM read_parquet({_lit(str(out))})")
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {name}_data")
    cols = [d[0] for d in con.execute(f"SELECT * FROM {name} LIMIT 0").description if d[0] != "_row"]
    readers.check_columns(path, cols, limits)
    return cols


def _column_types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()}


# --------------------------------------------------------------------------- validation helpers


def _num_expr(col: str, typ: str) -> str:
    """A staged column as DOUBLE (NULL when empty or not a number); ``s`` is the staged row."""
    if typ.upper().startswith(("VARCHAR", "STRING")):
        return f"TRY_CAST(NULLIF(trim(s.{_q(col)}), '') AS DOUBLE)"
    return f"TRY_CAST(s.{_q(col)} AS DOUBLE)"


def _text_expr(col: str) -> str:
    """A staged column as trimmed text, NULL when empty; qualified so subqueries cannot rebind it."""
    return f"NULLIF(trim(CAST(s.{_q(col)} AS VARCHAR)), '')"


def _first_bad(con, view: str, checks: list[tuple[str, str, str]]) -> tuple[int, str, str] | None:
    """Run (column, condition, message) checks in one scan; the first failing row, column, message."""
    if not checks:
        return None
    flags = ", ".join(f"({cond}) AS f{i}" for i, (_, cond, _) in enumerate(checks))
    where = " OR ".join(f"({cond})" for _, cond, _ in checks)
    row = con.execute(f"SELECT _row, {flags} FROM {view} s WHERE {where} ORDER BY _row LIMIT 1").fetchone()
    if row is None:
        return None
    for i, (col, _, msg) in enumerate(checks):
        if row[1 + i]:
            return row[0], col, msg
    return None


def _raise_first_bad(con, view, path, checks) -> None:
    bad = _first_bad(con, view, checks)
    if bad:
        r, col, msg = bad
        value = con.execute(f"SELECT CAST({_q(col)} AS VARCHAR) FROM {view} WHERE _row = ?", [r]).fetchone()[0]
        shown = "empty" if value is None or str(value).strip() == "" else repr(str(value)[:60])
        raise InputError(str(path), r, col, f"{msg} (got {shown})")


def _number_checks(col: str, typ: str, lo: float, hi: float, what: str, hint: str = "") -> list[tuple[str, str, str]]:
    """Checks that a staged column holds numbers within [lo, hi] (empty cells allowed)."""
    e = _num_expr(col, typ)
    return [(col, f"s.{_q(col)} IS NOT NULL AND {e} IS NULL", f"{what} is not a number"),
            (col, f"{e} IS NOT NULL AND (isnan({e}) OR {e} < {lo} OR {e} > {hi})",
             f"{what} out of range [{lo:g}, {hi:g}]{hint}")]


def _require(path, columns: list[str], required: list[str]) -> None:
    for col in required:
        if col not in columns:
            raise InputError(str(path), 0, col, f"required column is missing; the file has: {', '.join(columns)}")


def _check_rows(con, view, path) -> int:
    n = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
    if n == 0:
        raise InputError(str(path), None, None, "the file is empty (no rows)")
    return n


def _check_duplicates(con, view, path, keys: list[str]) -> None:
    key_sql = ", ".join(_text_expr(k) for k in keys)
    dup = con.execute(
        f"""SELECT _row, first_row FROM (
                SELECT _row, min(_row) OVER (PARTITION BY {key_sql}) AS first_row,
                       row_number() OVER (PARTITION BY {key_sql} ORDER BY _row) AS rn
                FROM {view} s) WHERE rn = 2 ORDER BY _row LIMIT 1"""
    ).fetchone()
    if dup:
        raise InputError(
            str(path), dup[0], keys[-1],
            f"duplicate ({', '.join(keys)}): the same key is already on row {dup[1]}",
        )


def _split_scored_column(path, col: str, prefix: str) -> tuple[str, str]:
    parts = col[len(prefix):].rsplit(":", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise InputError(str(path), 0, col, f"must be named {prefix}<judge>:<dimension>")
    return parts[0], parts[1]


def _check_case(path, columns: list[str]) -> None:
    """Two columns differing only in case (``Output`` and ``output``) are refused: which one is meant?"""
    seen: dict[str, str] = {}
    for c in columns:
        if c.lower() in seen:
            raise InputError(str(path), 0, c, f"differs from column {seen[c.lower()]!r} only in case; keep one")
        seen[c.lower()] = c


def _close(name: str, known: list[str]) -> str:
    """`'Correctness' looks like 'correctness'` when a known name is close (rapidfuzz), else ''."""
    from rapidfuzz import fuzz, process, utils

    hit = process.extractOne(name, known, scorer=fuzz.ratio, processor=utils.default_process, score_cutoff=70)
    return f": {name!r} looks like {hit[0]!r}" if hit else ""


def _check_new_names(path, what: str, column: str, found: list[str], known: list[str], allowed: bool,
                     flag: str) -> None:
    """Refuse names a project does not have yet unless the import asks for them (strict imports)."""
    if allowed or not known:
        return
    new = [n for n in found if n not in known]
    if new:
        raise InputError(
            str(path), None, column,
            f"new {what} {new[0]!r} not in the project ({', '.join(known)}){_close(new[0], known)}; "
            f"fix the file, or import with {flag} (or --allow-new) to add it")


def _check_text_columns(con, path, columns: list[str], types: dict[str, str], text_cols: list[str]) -> list:
    """Checks for text columns: no NUL byte; typed files (Parquet) must give ids and names as text."""
    checks = []
    for c in text_cols:
        if c not in columns:
            continue
        if c in ("item_id", "model", "baseline", "candidate") and not types[c].upper().startswith(("VARCHAR", "STRING")):
            raise InputError(str(path), 0, c, f"must be text, the file has a {types[c]} column "
                                              f"(store ids as strings, e.g. '7' rather than 7)")
        checks.append((c, f"contains(CAST(s.{_q(c)} AS VARCHAR), chr(0))", "contains a NUL byte"))
    return checks


def _check_scales(con, path, judged: dict[str, tuple[str, str]], types) -> None:
    """A judge's scale must not change between imports (0-1 stored, then a 3 arrives)."""
    for c, (judge, dim) in judged.items():
        old = con.execute("SELECT min(score), max(score) FROM judge_scores WHERE judge = ? AND dimension = ?",
                          [judge, dim]).fetchone()
        if old[1] is None:
            continue
        # scales are 0-1 (pass/fail, probability), up to 10 (Likert) or up to 100: a score above the
        # stored scale's ceiling means the judge's prompt or parser changed
        ceiling = next(x for x in (1.0, 10.0, SCORE_MAX) if old[1] <= x)
        e = _num_expr(c, types[c])
        row = con.execute(f"SELECT _row, {e} FROM _stage s WHERE {e} > {ceiling} ORDER BY _row LIMIT 1").fetchone()
        if row:
            raise InputError(str(path), row[0], c, f"judge score {row[1]:g} is on another scale than the "
                             f"{old[0]:g}-{old[1]:g} already stored for {judge} on {dim}")


# --------------------------------------------------------------------------- outputs


def import_file(con: duckdb.DuckDBPyConnection, path: str | Path, baseline: str | None = None, *,
                add_model: bool | Sequence[str] = False, add_judge: bool = False, add_dimension: bool = False,
                allow_new: bool = False, limits: readers.Limits | None = None,
                prepared: str | Path | None = None, judged_sample: str | None = None) -> ImportReport:
    """Import an outputs file or a pairwise-preference file (told apart by its columns).

    Strict: once a project has outputs, a model, judge or dimension it does not know is refused
    (a misspelling would silently add a candidate or a question for SMEs) unless ``add_model``,
    ``add_judge``, ``add_dimension`` or ``allow_new`` asks for it. ``add_model`` may instead name
    the models to accept; model names of one file that differ only in case, ``-``/``_`` or spaces
    (``cand_a``, ``Cand-A``) are refused unless ``add_model`` names each of them, even in a fresh
    project. ``limits`` and ``prepared``: see :func:`stage`.

    An outputs file in which only SOME items carry judge scores must say how those items were
    chosen (``_judged_subset``): an ``inclusion_prob`` column, or ``judged_sample="uniform"``
    (``--judged-sample uniform``); else it is refused."""
    if judged_sample not in (None, "uniform"):
        raise InputError(str(path), None, None, f"--judged-sample {judged_sample}: the only declared design is uniform")
    path = Path(path)
    named = [] if isinstance(add_model, bool) else [str(m) for m in add_model]
    allow = {"model": bool(add_model) or allow_new, "judge": add_judge or allow_new,
             "dimension": add_dimension or allow_new, "model_names": named}
    notes: list[str] = []
    with _one_line_errors(path):
        with store.transaction(con):
            columns = stage(con, path, limits=limits, prepared=prepared, notes=notes)
            _check_case(path, columns)
            if any(c.startswith(PREF_PREFIX) for c in columns) and "output" not in columns:
                report = _import_pair_prefs(con, path, columns, allow)
            else:
                report = _import_outputs(con, path, columns, baseline, allow, judged_sample)
    report.notes = notes + report.notes
    return report


@contextmanager
def _one_line_errors(path: Path) -> Iterator[None]:
    """A DuckDB error while reading a file (a corrupt Parquet page, memory) as the one-line error;
    the transaction has rolled back by then, so nothing was stored."""
    try:
        yield
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(str(path), None, None, f"cannot import the file: {first}") from None


def _model_key(name: str) -> str:
    """``cand_a``, ``Cand-A``, ``cand a`` and ``cand-a`` share a key: one model spelled several ways."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def _check_near_duplicate_models(con, path: Path, file_models: list[str], known: list[str],
                                 named: list[str]) -> None:
    """Refuse a file whose model names differ from each other only in case, ``-``/``_`` or spaces,
    unless every such name new to the project is given with ``--add-model NAME``. (A name close to
    a stored model is caught by the strict check of new names, which a bare ``--add-model`` passes.)"""
    groups: dict[str, list[str]] = {}
    for m in file_models:
        groups.setdefault(_model_key(m), []).append(m)
    for names in groups.values():
        new = [m for m in names if m not in known]
        if len(names) < 2 or not new or all(m in named for m in new):
            continue
        first_new = con.execute(f"SELECT min(_row) FROM _stage s WHERE {_text_expr('model')} = ?",
                                [names[1]]).fetchone()[0]  # where the second spelling first appears
        spelled = ", ".join(repr(m) for m in names[:-1]) + f" and {names[-1]!r}"
        flags = " ".join(f"--add-model {shlex.quote(m)}" for m in new)
        raise InputError(
            str(path), first_new, "model",
            f"models {spelled} differ only in case, '-'/'_' or spaces: one model spelled {len(names)} ways? "
            f"fix the file, or import with {flags} to keep them apart")


def _known_judges(con) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT judge FROM judge_scores UNION SELECT judge FROM pair_judge_prefs ORDER BY 1").fetchall()]


def _known_dimensions(con) -> list[str]:
    dims = store.get_settings(con)["dimensions"]
    return dims + [r[0] for r in con.execute(
        "SELECT DISTINCT dimension FROM pair_judge_prefs ORDER BY 1").fetchall() if r[0] not in dims]


def _import_outputs(con, path: Path, columns: list[str], baseline: str | None,
                    allow: dict[str, bool] | None = None, judged_sample: str | None = None) -> ImportReport:
    allow = allow or {}
    _require(path, columns, OUTPUT_REQUIRED)
    # No judge column is fine: a pairwise-only project, or outputs to be scored by `tiebreak judge run`.
    judge_cols = [c for c in columns if c.startswith(JUDGE_PREFIX)]
    judged = {c: _split_scored_column(path, c, JUDGE_PREFIX) for c in judge_cols}
    rationale_cols = {c: _split_scored_column(path, c, RATIONALE_PREFIX) for c in columns if c.startswith(RATIONALE_PREFIX)}
    n = _check_rows(con, "_stage", path)
    types = _column_types(con, "_stage")

    # An empty output is a real answer (an SME should see it and fail it): stored as ''.
    checks = [(c, f"{_text_expr(c)} IS NULL", "must not be empty") for c in OUTPUT_REQUIRED if c != "output"]
    checks += _check_text_columns(con, path, columns, types, OUTPUT_REQUIRED + OUTPUT_OPTIONAL_TEXT)
    for c in judge_cols:
        checks += _number_checks(c, types[c], SCORE_MIN, SCORE_MAX, "judge score")
    if INCLUSION_PROB in columns and judge_cols:  # on rows with a judge score: the item's phase-1 probability
        scored_row = " OR ".join(f"{_num_expr(c, types[c])} IS NOT NULL" for c in judge_cols)
        e = _num_expr(INCLUSION_PROB, types[INCLUSION_PROB])
        checks.append((INCLUSION_PROB, f"({scored_row}) AND {e} IS NULL",
                       "must be the item's probability of having been chosen for judging, in (0, 1], on a row "
                       "with judge scores"))
        checks.append((INCLUSION_PROB, f"({scored_row}) AND (isnan({e}) OR {e} <= 0 OR {e} > 1)",
                       "must be a probability in (0, 1] (the chance the item was chosen for judging)"))
    for c in OUTPUT_OPTIONAL_NUM:
        if c in columns:
            if types[c].upper() == "BOOLEAN":
                raise InputError(str(path), 0, c, "is not a number (the file has a true/false column)")
            e = _num_expr(c, types[c])
            checks.append((c, f"s.{_q(c)} IS NOT NULL AND {e} IS NULL", "is not a number"))
            checks.append((c, f"{e} IS NOT NULL AND (isnan({e}) OR isinf({e}) OR {e} < 0)", "must be a finite number >= 0"))
    _raise_first_bad(con, "_stage", path, checks)
    _check_duplicates(con, "_stage", path, ["item_id", "model"])
    file_models = [r[0] for r in con.execute(
        f"SELECT {_text_expr('model')} AS m FROM _stage s GROUP BY m ORDER BY min(_row)").fetchall()]
    known_models = store.models(con)
    names = allow.get("model_names", [])
    if known_models:
        _check_new_names(path, "model", "model", [m for m in file_models if m not in names], known_models,
                         allow.get("model", False) and not names, "--add-model")
    _check_near_duplicate_models(con, path, file_models, known_models, names)
    if con.execute("SELECT count(*) FROM outputs").fetchone()[0]:
        _check_new_names(path, "judge", judge_cols[0] if judge_cols else None,
                         list(dict.fromkeys(j for j, _ in judged.values())), _known_judges(con),
                         allow.get("judge", False), "--add-judge")
        _check_new_names(path, "dimension", judge_cols[0] if judge_cols else None,
                         list(dict.fromkeys(d for _, d in judged.values())), _known_dimensions(con),
                         allow.get("dimension", False), "--add-dimension")
    _check_scales(con, path, judged, types)

    opt = {c: (_text_expr(c) if c in columns else "NULL") for c in OUTPUT_OPTIONAL_TEXT}
    nums = {c: (_num_expr(c, types[c]) if c in columns else "NULL") for c in OUTPUT_OPTIONAL_NUM}
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _clean AS SELECT _row,
            {_text_expr('item_id')} AS item_id, {_text_expr('model')} AS model,
            coalesce({opt['segment']}, 'all') AS segment, {opt['topic']} AS topic,
            CAST(prompt AS VARCHAR) AS prompt, {opt['context']} AS context, {opt['reference']} AS reference,
            coalesce(CAST(output AS VARCHAR), '') AS output,
            {nums['latency_ms']} AS latency_ms, CAST({nums['input_tokens']} AS BIGINT) AS input_tokens,
            CAST({nums['output_tokens']} AS BIGINT) AS output_tokens, {nums['cost_usd']} AS cost_usd
            {''.join(f', {_num_expr(c, types[c])} AS j{i}' for i, c in enumerate(judge_cols))}
            {''.join(f', CAST({_q(c)} AS VARCHAR) AS r{i}' for i, c in enumerate(rationale_cols))}
            , {_num_expr(INCLUSION_PROB, types[INCLUSION_PROB]) if INCLUSION_PROB in columns else 'NULL::DOUBLE'} AS ip
            FROM _stage s"""
    )
    # One prompt/segment per item, within the file and against the database.
    for col in ("prompt", "segment"):
        bad = con.execute(
            f"""SELECT _row FROM (SELECT _row, count(DISTINCT {col}) OVER (PARTITION BY item_id) AS k,
                row_number() OVER (PARTITION BY item_id ORDER BY _row) AS rn FROM _clean)
                WHERE k > 1 AND rn > 1 ORDER BY _row LIMIT 1"""
        ).fetchone()
        if bad:
            raise InputError(str(path), bad[0], col, "differs from an earlier row of the same item_id")
        bad = con.execute(
            f"""SELECT min(c._row) FROM _clean c JOIN items i USING (item_id) WHERE c.{col} <> i.{col}"""
        ).fetchone()
        if bad and bad[0] is not None:
            raise InputError(str(path), bad[0], col, f"the item is already stored with a different {col}")

    sample_notes = _judged_subset(con, path, judge_cols, INCLUSION_PROB in columns, judged_sample)
    report = ImportReport(str(path), "output", n)
    before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("items", "outputs", "judge_scores")}
    con.execute(
        """INSERT INTO items
           SELECT item_id, segment, topic, prompt, context, reference, current_timestamp
           FROM (SELECT * FROM _clean QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY _row) = 1) c
           WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = c.item_id)
           ORDER BY _row"""
    )
    con.execute(
        """INSERT INTO outputs (item_id, model, output, latency_ms, input_tokens, output_tokens, cost_usd)
           SELECT item_id, model, output, latency_ms, input_tokens, output_tokens, cost_usd FROM _clean c
           WHERE NOT EXISTS (SELECT 1 FROM outputs o WHERE o.item_id = c.item_id AND o.model = c.model)
           ORDER BY _row"""
    )
    rat_by_key = {v: i for i, v in enumerate(rationale_cols.values())}
    parts = []
    for i, c in enumerate(judge_cols):
        judge, dim = judged[c]
        r = rat_by_key.get((judge, dim))
        parts.append(
            f"SELECT item_id, model, {_lit(judge)} AS judge, {_lit(dim)} AS dimension, j{i} AS score, "
            f"{f'r{r}' if r is not None else 'NULL'} AS rationale FROM _clean WHERE j{i} IS NOT NULL"
        )
    existing = con.execute("SELECT count(*) FROM judge_scores").fetchone()[0]
    new_scores = " UNION ALL ".join(parts) or (
        "SELECT NULL::VARCHAR AS item_id, NULL::VARCHAR AS model, NULL::VARCHAR AS judge, NULL::VARCHAR AS dimension, "
        "NULL::DOUBLE AS score, NULL::VARCHAR AS rationale WHERE FALSE")
    if existing:
        con.execute(
            f"""INSERT INTO judge_scores SELECT * FROM ({new_scores}) n WHERE NOT EXISTS (
                SELECT 1 FROM judge_scores s WHERE s.item_id = n.item_id AND s.model = n.model
                AND s.judge = n.judge AND s.dimension = n.dimension)"""
        )
    else:
        con.execute(f"INSERT INTO judge_scores {new_scores}")
    after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
    report.added = {t: after[t] - before[t] for t in before}
    n_items = con.execute("SELECT count(DISTINCT item_id) FROM _clean").fetchone()[0]
    n_scores = con.execute(f"SELECT count(*) FROM ({new_scores})").fetchone()[0] if existing else report.added["judge_scores"]
    report.skipped = {
        "items": n_items - report.added["items"],
        "outputs": n - report.added["outputs"],
        "judge_scores": n_scores - report.added["judge_scores"],
    }
    if judge_cols:
        empty = con.execute(" + ".join(f"count(*) FILTER (WHERE j{i} IS NULL)" for i in range(len(judge_cols))).join(
            ["SELECT ", " FROM _clean"])).fetchone()[0]
        if empty:
            report.notes.append(f"{empty} empty judge scores (not stored; the judge did not score those outputs)")
    report.notes += sample_notes
    report.notes += _update_project_settings(con, path, baseline, sorted({d for _, d in judged.values()}))
    n_models = con.execute("SELECT count(DISTINCT model) FROM outputs").fetchone()[0]
    lonely = con.execute(
        """SELECT count(*) FROM (SELECT item_id FROM outputs WHERE item_id IN (SELECT item_id FROM _clean)
           GROUP BY item_id HAVING count(DISTINCT model) < ?)""", [n_models]).fetchone()[0]
    if lonely and n_models > 1:
        report.notes.append(f"{lonely} items of this file miss a model's output (not compared for that model "
                            f"until it is imported)")
    con.execute("DROP TABLE _clean")
    return report


def _judged_subset(con, path: Path, judge_cols: list[str], has_prob: bool, judged_sample: str | None) -> list[str]:
    """The two-phase rule for an outputs file (``_clean`` staged; inside the import's transaction):
    when only some of the file's items carry judge scores (an item is judged when any of its
    outputs has any score), the file must say how they were chosen, because a subset judged for
    convenience and treated as the population is the error a judged sample exists to avoid.

    - an ``inclusion_prob`` column (each scored item's probability, in (0, 1]), or
      ``judged_sample="uniform"`` (pi1 = scored items / the file's items): the scored items are
      recorded as a phase-1 batch of kind 'import' (``calib.data.phase1``);
    - scores for items of the project's drawn sample only (judged elsewhere and imported back)
      complete that sample; nothing new is recorded;
    - otherwise refused, naming the file, the first row of an item without scores and the column.

    A file with no judge scores, or with scores on every item (and no ``inclusion_prob``), imports
    as before. Returns the notes for the report."""
    from calib.data import phase1

    if not judge_cols:
        return [f"--judged-sample {judged_sample} ignored: the file has no judge scores"] if judged_sample else []
    scored = " OR ".join(f"j{i} IS NOT NULL" for i in range(len(judge_cols)))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _scored AS
                    SELECT item_id, max(ip) FILTER (WHERE {scored}) AS ip FROM _clean GROUP BY item_id
                    HAVING bool_or({scored})""")
    n_items = con.execute("SELECT count(DISTINCT item_id) FROM _clean").fetchone()[0]
    n_scored = con.execute("SELECT count(*) FROM _scored").fetchone()[0]
    partial = 0 < n_scored < n_items
    if not partial and not (has_prob and n_scored):
        notes = [f"--judged-sample {judged_sample} ignored: " + ("every item of the file carries judge scores"
                 if n_scored else "the file has no judge scores")] if judged_sample else []
        if n_scored and not phase1.is_census(con):
            outside = con.execute(f"SELECT count(*) FROM _scored WHERE item_id NOT IN ({phase1.sampled_items_sql()})"
                                  ).fetchone()[0]
            if outside:
                notes.append(f"{outside:,} scored items of this file are outside the project's judged sample: their "
                             "scores are kept but do not enter the estimate")
        con.execute("DROP TABLE _scored")
        return notes
    # one probability per item, over its scored rows: the first row differing from the item's first
    row = con.execute(f"""SELECT min(_row) FROM (
                              SELECT _row, ip, first(ip) OVER (PARTITION BY item_id ORDER BY _row) AS ip0
                              FROM _clean WHERE {scored}) WHERE ip <> ip0""").fetchone()[0] if has_prob else None
    if row is not None:
        raise InputError(str(path), row, INCLUSION_PROB, "differs from an earlier row of the same item_id (one "
                         "probability per item)")
    kind = None if phase1.is_census(con) else con.execute("SELECT any_value(kind) FROM judge_sample").fetchone()[0]
    if kind == "draw":
        outside = con.execute(f"""SELECT min(c._row) FROM _clean c SEMI JOIN _scored USING (item_id)
                                  WHERE c.item_id NOT IN ({phase1.sampled_items_sql()})""").fetchone()[0]
        con.execute("DROP TABLE _scored")
        if outside is not None:
            raise InputError(str(path), outside, judge_cols[0],
                             "this item carries judge scores but is not in the project's judged sample (drawn by "
                             "`tiebreak judge run --sample`): import scores for the sample's items only, or every "
                             "item's, or extend the sample with `tiebreak judge run --sample N`")
        return [f"{n_scored:,} scored items complete the project's judged sample (their probabilities are the "
                "recorded ones" + ("; the file's inclusion_prob is not used" if has_prob else "") + ")"]
    if not has_prob and judged_sample != "uniform":
        row = con.execute("SELECT min(_row) FROM _clean WHERE item_id NOT IN (SELECT item_id FROM _scored)").fetchone()[0]
        con.execute("DROP TABLE _scored")
        raise InputError(
            str(path), row, judge_cols[0],
            f"only {n_scored:,} of the file's {n_items:,} items carry judge scores and this item has none; a subset "
            "judged for convenience is no sample of the rest: add an inclusion_prob column (each scored item's "
            "probability of having been chosen for judging, in (0, 1]), or import with --judged-sample uniform if "
            "they were drawn uniformly at random, or give every item its scores")
    how = "inclusion_prob" if has_prob else "uniform"
    pi = "ip" if has_prob else f"{n_scored} / {n_items}"
    batch = phase1.record_import(con, f"SELECT item_id, {pi}::DOUBLE AS pi1 FROM _scored", how)
    con.execute("DROP TABLE _scored")
    notes = [f"judged sample: {n_scored:,} of the file's {n_items:,} items carry judge scores, recorded as phase-1 "
             f"batch {batch} ({'the file' + chr(39) + 's inclusion_prob' if has_prob else 'declared uniform'})"]
    outside = _outside_sample(con)
    if outside:
        notes.append(f"{outside:,} items judged earlier are outside the judged sample: their scores are kept but "
                     "do not enter the estimate")
    return notes


def _outside_sample(con) -> int:
    """Items with judge scores that are not in the recorded judged sample (ignored by the cells)."""
    return con.execute("""SELECT count(DISTINCT item_id) FROM judge_scores
                          WHERE item_id NOT IN (SELECT item_id FROM judge_sample)""").fetchone()[0]


def _update_project_settings(con, path: Path, baseline: str | None, dims: list[str]) -> list[str]:
    """Record dimensions, the baseline and the candidates after an outputs import."""
    s = store.get_settings(con)
    present = [r[0] for r in con.execute(
        "SELECT model FROM outputs GROUP BY model ORDER BY min(item_id), model").fetchall()]
    notes = []
    if baseline is not None:
        if baseline not in present:
            raise InputError(str(path), None, "model", f"--baseline {baseline!r} is not a model in the data ({', '.join(present)})")
        new_base = baseline
    elif s["baseline"] in present:
        new_base = s["baseline"]
    else:
        file_models = [r[0] for r in con.execute(
            "SELECT model FROM _clean GROUP BY model ORDER BY min(_row)").fetchall()]
        new_base = file_models[0]
        notes.append(f"baseline model set to {new_base!r} (the first model in the file); change it with "
                     f"`tiebreak settings set baseline MODEL` or import with --baseline")
    candidates = [m for m in present if m != new_base]
    store.set_settings(
        con, baseline=new_base, candidates=candidates,
        dimensions=s["dimensions"] + [d for d in dims if d not in s["dimensions"]],
    )
    return notes


def _import_pair_prefs(con, path: Path, columns: list[str], allow: dict[str, bool] | None = None) -> ImportReport:
    allow = allow or {}
    _require(path, columns, PREF_REQUIRED)
    pref_cols = [c for c in columns if c.startswith(PREF_PREFIX)]
    named = {c: _split_scored_column(path, c, PREF_PREFIX) for c in pref_cols}
    n = _check_rows(con, "_stage", path)
    types = _column_types(con, "_stage")
    if con.execute("SELECT count(*) FROM pair_judge_prefs").fetchone()[0]:  # a second preference import
        _check_new_names(path, "judge", pref_cols[0], list(dict.fromkeys(j for j, _ in named.values())),
                         _known_judges(con), allow.get("judge", False), "--add-judge")
        known_dims = _known_dimensions(con)
        _check_new_names(path, "dimension", pref_cols[0], list(dict.fromkeys(d for _, d in named.values())),
                         known_dims + ([] if "overall" in known_dims else ["overall"]),
                         allow.get("dimension", False), "--add-dimension")
    checks = [(c, f"{_text_expr(c)} IS NULL", "must not be empty") for c in PREF_REQUIRED]
    checks += _check_text_columns(con, path, columns, types, PREF_REQUIRED)
    for c in pref_cols:
        checks += _number_checks(c, types[c], 0, 1, "preference", " (1 = candidate better, 0.5 = tie)")
    checks.append(("item_id", f"{_text_expr('item_id')} NOT IN (SELECT item_id FROM items)", "unknown item_id"))
    for c in ("baseline", "candidate"):
        checks.append((c, f"NOT EXISTS (SELECT 1 FROM outputs o WHERE o.item_id = {_text_expr('item_id')} "
                          f"AND o.model = {_text_expr(c)})", "no output of this model for the item"))
    _raise_first_bad(con, "_stage", path, checks)
    _check_duplicates(con, "_stage", path, ["item_id", "baseline", "candidate"])
    parts = [
        f"SELECT {_text_expr('item_id')} AS item_id, {_text_expr('baseline')} AS baseline, "
        f"{_text_expr('candidate')} AS candidate, {_lit(named[c][0])} AS judge, {_lit(named[c][1])} AS dimension, "
        f"{_num_expr(c, types[c])} AS preference FROM _stage s WHERE {_num_expr(c, types[c])} IS NOT NULL"
        for c in pref_cols
    ]
    before = con.execute("SELECT count(*) FROM pair_judge_prefs").fetchone()[0]
    con.execute(
        f"""INSERT INTO pair_judge_prefs SELECT * FROM ({' UNION ALL '.join(parts)}) n WHERE NOT EXISTS (
            SELECT 1 FROM pair_judge_prefs p WHERE p.item_id = n.item_id AND p.baseline = n.baseline
            AND p.candidate = n.candidate AND p.judge = n.judge AND p.dimension = n.dimension)"""
    )
    added = con.execute("SELECT count(*) FROM pair_judge_prefs").fetchone()[0] - before
    total = con.execute(f"SELECT count(*) FROM ({' UNION ALL '.join(parts)})").fetchone()[0]
    return ImportReport(str(path), "pairwise-preference", n, {"pair_judge_prefs": added},
                        {"pair_judge_prefs": total - added})


# --------------------------------------------------------------------------- labels


def import_labels(con: duckdb.DuckDBPyConnection, path: str | Path, source: str = "import", *,
                  limits: readers.Limits | None = None, prepared: str | Path | None = None) -> ImportReport:
    """Append pointwise and/or pairwise labels from a file; exact repeats of stored labels are skipped.

    A repeat is a row equal to a stored label in item, model/pair, dimension, verdict/preference,
    annotator and created_at, so re-importing an export adds nothing while genuinely new
    judgments (a correction is a new row) are appended.
    """
    path = Path(path)
    with _one_line_errors(path), store.transaction(con):
        columns = stage(con, path, limits=limits, prepared=prepared)
        _check_case(path, columns)
        n = _check_rows(con, "_stage", path)
        has_point = "verdict" in columns
        has_pair = "preference" in columns
        if not (has_point or has_pair):
            raise InputError(str(path), 0, "verdict", "a label file needs a verdict column (pointwise) "
                             "or a preference column (pairwise)")
        _require(path, columns, ["item_id", "dimension", "annotator"])
        if has_point:
            _require(path, columns, ["model"])
        if has_pair:
            _require(path, columns, ["baseline", "candidate"])
        s = store.get_settings(con)
        dims = s["dimensions"]
        dim_list = ", ".join(_lit(d) for d in dims) or "NULL"
        is_pair = f"{_text_expr('preference')} IS NOT NULL" if has_pair else "FALSE"
        is_point = f"NOT ({is_pair})"
        t = lambda c: _text_expr(c) if c in columns else "NULL"  # noqa: E731
        checks = [
            ("item_id", f"{t('item_id')} IS NULL", "must not be empty"),
            ("annotator", f"{t('annotator')} IS NULL", "must not be empty"),
            ("dimension", f"{t('dimension')} IS NULL", "must not be empty"),
            ("item_id", f"{t('item_id')} NOT IN (SELECT item_id FROM items)", "unknown item_id"),
        ]
        if has_point:
            checks += [
                ("verdict", f"{is_point} AND {t('verdict')} IS NULL", "must be pass/fail (or 1/0)"),
                ("verdict", f"{is_point} AND lower({t('verdict')}) NOT IN ({', '.join(_lit(v) for v in VERDICTS)})",
                 "must be pass/fail (or 1/0)"),
                ("model", f"{is_point} AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.item_id = {t('item_id')} "
                          f"AND o.model = {t('model')})", "unknown model for this item"),
                ("dimension", f"{is_point} AND {t('dimension')} NOT IN ({dim_list})",
                 f"unknown dimension (known: {', '.join(dims) or 'none'})"),
            ]
        if has_pair:
            checks += [
                ("preference", f"{is_pair} AND lower({t('preference')}) NOT IN ('candidate', 'baseline', 'tie')",
                 "must be candidate, baseline or tie"),
                ("dimension", f"{is_pair} AND {t('dimension')} NOT IN ({dim_list}, 'overall')",
                 f"unknown dimension (known: {', '.join(dims + ['overall'])})"),
            ] + [
                (c, f"{is_pair} AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.item_id = {t('item_id')} "
                    f"AND o.model = {t(c)})", "unknown model for this item")
                for c in ("baseline", "candidate")
            ]
        if "created_at" in columns:
            checks.append(("created_at", f"{t('created_at')} IS NOT NULL AND TRY_CAST({t('created_at')} AS TIMESTAMP) IS NULL",
                           "not a timestamp (use ISO 8601, e.g. 2026-11-21T10:30:00)"))
        if "strength" in columns:
            checks.append(("strength", f"{t('strength')} IS NOT NULL AND TRY_CAST({t('strength')} AS INTEGER) IS NULL",
                           "must be a whole number"))
        _raise_first_bad(con, "_stage", path, checks)

        created = f"coalesce(TRY_CAST({t('created_at')} AS TIMESTAMP), current_timestamp::TIMESTAMP)"
        verdict_case = " ".join(f"WHEN {_lit(k)} THEN {str(v).upper()}" for k, v in VERDICTS.items())
        added = {}
        if has_point:
            before = con.execute("SELECT count(*) FROM labels").fetchone()[0]
            con.execute(
                f"""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, note, source,
                        duration_ms)
                    SELECT * FROM (SELECT {t('item_id')} AS item_id, {t('model')} AS model, {t('dimension')} AS dimension,
                        CASE lower({t('verdict')}) {verdict_case} END AS verdict, {t('kind')} AS kind,
                        {t('annotator')} AS annotator, {created} AS created_at, {t('note')} AS note,
                        coalesce({t('source')}, {_lit(source)}) AS source,
                        TRY_CAST({t('duration_ms')} AS BIGINT) AS duration_ms
                        FROM _stage s WHERE {is_point} ORDER BY _row) n
                    WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id = n.item_id AND l.model = n.model
                        AND l.dimension = n.dimension AND l.verdict = n.verdict AND l.annotator = n.annotator
                        AND l.created_at = n.created_at)"""
            )
            added["labels"] = con.execute("SELECT count(*) FROM labels").fetchone()[0] - before
        if has_pair:
            before = con.execute("SELECT count(*) FROM pair_labels").fetchone()[0]
            con.execute(
                f"""INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, strength, annotator,
                        created_at, note, source, duration_ms)
                    SELECT * FROM (SELECT {t('item_id')} AS item_id, {t('baseline')} AS baseline,
                        {t('candidate')} AS candidate, {t('dimension')} AS dimension,
                        lower({t('preference')}) AS preference, TRY_CAST({t('strength')} AS INTEGER) AS strength,
                        {t('annotator')} AS annotator, {created} AS created_at, {t('note')} AS note,
                        coalesce({t('source')}, {_lit(source)}) AS source,
                        TRY_CAST({t('duration_ms')} AS BIGINT) AS duration_ms
                        FROM _stage s WHERE {is_pair} ORDER BY _row) n
                    WHERE NOT EXISTS (SELECT 1 FROM pair_labels l WHERE l.item_id = n.item_id
                        AND l.baseline = n.baseline AND l.candidate = n.candidate AND l.dimension = n.dimension
                        AND l.preference = n.preference AND l.annotator = n.annotator
                        AND l.created_at = n.created_at)"""
            )
            added["pair_labels"] = con.execute("SELECT count(*) FROM pair_labels").fetchone()[0] - before
    report = ImportReport(str(path), "label", n, added)
    report.skipped = {"repeats of stored labels": n - sum(added.values())}
    return report


EXPORT_SQL = """
    SELECT 'pointwise' AS kind_of_label, label_id, item_id, model, NULL AS baseline, NULL AS candidate, dimension,
           CASE WHEN verdict THEN 'pass' ELSE 'fail' END AS verdict, NULL AS preference, NULL::INTEGER AS strength,
           kind, annotator, strftime(created_at, '%Y-%m-%dT%H:%M:%S.%f') AS created_at, note, source, duration_ms,
           lease_id, side AS left_model_or_side
    FROM labels
    UNION ALL
    SELECT 'pairwise', label_id, item_id, NULL, baseline, candidate, dimension, NULL, preference, strength, NULL,
           annotator, strftime(created_at, '%Y-%m-%dT%H:%M:%S.%f'), note, source, duration_ms, lease_id, left_model
    FROM pair_labels
    ORDER BY created_at, kind_of_label, label_id
"""


def export_labels(con: duckdb.DuckDBPyConnection, path: str | Path) -> int:
    """Write every label (both kinds, full history, corrections included) to CSV, JSONL or Parquet.
    In a CSV, text that a spreadsheet would run as a formula (a note ``=HYPERLINK(...)``, an item id
    starting with ``-``) gets a leading single quote (``store.csv_safe_sql``); Parquet and JSONL keep
    every value exactly."""
    path = Path(path)
    fmt = {".csv": "FORMAT CSV, HEADER", ".parquet": "FORMAT PARQUET", ".jsonl": "FORMAT JSON", ".json": "FORMAT JSON"}.get(path.suffix.lower())
    if fmt is None:
        raise TiebreakError(f"{path}: unknown file type {path.suffix!r}; use .csv, .jsonl or .parquet")
    sql = store.csv_safe_sql(con, EXPORT_SQL) if path.suffix.lower() == ".csv" else EXPORT_SQL
    con.execute(f"COPY ({sql}) TO {_lit(str(path))} ({fmt})")
    return con.execute(f"SELECT count(*) FROM ({EXPORT_SQL})").fetchone()[0]


# --------------------------------------------------------------------------- demo files


def load_demo_files(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """Load a demo folder (outputs.parquet, prefs.parquet, truth*.parquet) written by calib.data.demo."""
    meta = json.loads((folder / "meta.json").read_text())
    import_file(con, folder / "outputs.parquet", baseline=meta["baseline"])
    if len(meta.get("candidates", [])) > 1:  # the demo's order of candidates (the import sorts them by name)
        store.set_settings(con, candidates=list(meta["candidates"]))
    import_file(con, folder / "prefs.parquet")
    with store.transaction(con):
        con.execute(f"INSERT INTO sim_truth SELECT item_id, model, dimension, verdict, kind FROM read_parquet({_lit(str(folder / 'truth.parquet'))})")
        con.execute(f"INSERT INTO sim_truth_pairs SELECT item_id, baseline, candidate, dimension, preference, strength FROM read_parquet({_lit(str(folder / 'truth_pairs.parquet'))})")
