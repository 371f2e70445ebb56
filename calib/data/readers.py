"""Read an import file (CSV, JSONL, Parquet) through DuckDB into a typed, row-numbered Parquet file.

Why: a hostile file must fail fast, with a one-line error, and with bounded memory. So

- stated limits (bytes, columns, judge columns, rows, nesting depth) are checked before any real
  work, from the file size, the header line, a streamed row count or the Parquet footer;
- rows are never gathered into Python lists: DuckDB streams the file (CSV with ``store_rejects`` so a
  ragged or mis-encoded line is reported with its line and column; JSONL as raw objects, so deep
  nesting cannot recurse) and writes a Parquet file with a 1-based ``_row`` column;
- every reader error becomes an :class:`InputError` naming the file, the row and the column.

This module is what the app runs in a separate, memory-capped process (``calib.data.importjob``):
a bad file can then fail only that process. It imports neither the store nor anything above it.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import duckdb

from calib.errors import InputError

JUDGE_PREFIXES = ("judge:", "pref:")
CSV_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
HEADER_MAX_BYTES = 1 << 20  # a header line longer than 1 MiB is refused (with the column count if it is over)
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}


@dataclass(frozen=True)
class Limits:
    """What an import file may hold; each is a project setting (``tiebreak settings set import_max_rows N``)."""

    max_bytes: int = 10_000_000_000  # import_max_bytes: the file's size (the app's uploads: server.maxUploadSize)
    max_rows: int = 8_000_000  # import_max_rows: data rows per file (5.3M imports in ~34 s, 2 GB)
    max_columns: int = 500  # import_max_columns
    max_judge_columns: int = 200  # import_max_judge_columns: judge:/pref: columns (judges x dimensions)
    max_depth: int = 20  # import_max_depth: nesting of a JSON value or a Parquet type

    SETTINGS = {"max_bytes": "import_max_bytes", "max_rows": "import_max_rows", "max_columns": "import_max_columns",
                "max_judge_columns": "import_max_judge_columns", "max_depth": "import_max_depth"}

    @classmethod
    def from_settings(cls, settings: dict) -> "Limits":
        """Limits from project settings (keys ``import_max_*``), defaults for keys not set."""
        return cls(**{f.name: int(settings.get(cls.SETTINGS[f.name], f.default)) for f in fields(cls)})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Limits":
        return cls(**json.loads(text))


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _over(path: Path, what: str, n: int | str, limit: int, setting: str, row: int | None = None,
          column: str | None = None) -> InputError:
    return InputError(str(path), row, column,
                      f"the file has {n} {what}; the limit is {limit:,} (setting {setting}; "
                      f"raise it with `tiebreak settings set {setting} N` if the file is genuine)")


def reader_connection(temp_dir: str | Path, memory_limit: str = "512MB", threads: int = 2) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for reading files, capped so a reader cannot take the machine; it spills
    to ``temp_dir`` (the folder of the Parquet it writes) rather than to the working directory."""
    con = duckdb.connect()
    con.execute(f"SET temp_directory = {_lit(str(temp_dir))}")
    con.execute(f"SET memory_limit = {_lit(memory_limit)}")
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = true")
    return con


def file_kind(path: Path) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from the suffix; refuses anything else and missing files."""
    if not path.exists():
        raise InputError(str(path), None, None, "no such file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(str(path), None, None,
                         f"unknown file type {path.suffix.lower() or '(none)'!r}; use .csv, .jsonl or .parquet")
    return kind


def check_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise _over(path, "bytes", f"{size:,}", limits.max_bytes, "import_max_bytes")


def check_columns(path: Path, columns: list[str], limits: Limits) -> None:
    """Column and judge-column counts (each judge column costs checks and an insert per row)."""
    if len(columns) > limits.max_columns:
        raise _over(path, "columns", f"{len(columns):,}", limits.max_columns, "import_max_columns", 0)
    seen: dict[str, str] = {}
    for c in columns:  # DuckDB's column names are case-insensitive: refuse before it does, naming both
        if c.lower() in seen:
            raise InputError(str(path), 0, c, f"differs from column {seen[c.lower()]!r} only in case; keep one")
        seen[c.lower()] = c
    judged = [c for c in columns if c.startswith(JUDGE_PREFIXES)]
    if len(judged) > limits.max_judge_columns:
        raise _over(path, "judge:/pref: columns", f"{len(judged):,}", limits.max_judge_columns,
                    "import_max_judge_columns", 0, judged[limits.max_judge_columns])


def _simple_lines(path: Path, csv_quotes: bool) -> int | None:
    """The number of lines when every line is one record (no blank line; for CSV no quote, so no
    field spans lines), else None. Bytes only, ~0.3 s for 80 MB: a row bomb is refused before DuckDB
    parses it."""
    lines, last, prev = 0, b"", b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            both = prev + chunk
            if (csv_quotes and b'"' in chunk) or b"\n\n" in both or b"\n\r\n" in both:
                return None
            lines += chunk.count(b"\n")
            prev, last = both[-2:], chunk[-1:]
    return lines + (1 if last and last != b"\n" else 0)


def _check_rows(path: Path, con, source_sql: str, limits: Limits, header_lines: int = 0,
                csv_quotes: bool = False) -> int:
    """Count data rows, streaming, stopping one past the limit."""
    simple = _simple_lines(path, csv_quotes)
    if simple is not None and simple - header_lines > limits.max_rows:
        raise _over(path, "rows", f"{simple - header_lines:,}", limits.max_rows, "import_max_rows")
    # fetchall, not fetchone: DuckDB writes the CSV rejects table only when the result is finished
    n = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {source_sql} LIMIT {limits.max_rows + 1})").fetchall()[0][0]
    if n > limits.max_rows:
        raise _over(path, "rows", f"more than {limits.max_rows:,}", limits.max_rows, "import_max_rows")
    return n


def _empty(path: Path) -> InputError:
    return InputError(str(path), None, None, "the file is empty (a header but no rows)")


# --------------------------------------------------------------------------- CSV


def _header(path: Path, limits: Limits) -> tuple[list[str], str]:
    """The header's column names and the delimiter, from the first line only (at most 1 MiB read).

    The delimiter is the one of , ; tab | that splits the header into the most columns, so a
    semicolon-separated file is read as such (and said so) instead of as one wide column."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_MAX_BYTES + 1)
    if not head.strip():
        raise InputError(str(path), None, None, "the file is empty (no header, no rows)")
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > HEADER_MAX_BYTES:
        most = max(line.count(d.encode()) + 1 for d in CSV_DELIMITERS)
        if most > limits.max_columns:
            raise _over(path, "columns", f"more than {most - 1:,}", limits.max_columns, "import_max_columns", 0)
        raise InputError(str(path), 0, None, f"the header line is longer than {HEADER_MAX_BYTES:,} bytes")
    try:
        text = line.decode("utf-8").lstrip("\ufeff").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), 0, None, f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at line 1); "
                                             "save the file as UTF-8") from None
    # cheap upper bound first: a 100,000-column header must not be split four ways
    most = max(text.count(d) + 1 for d in CSV_DELIMITERS)
    if most > limits.max_columns * 4 + 4:
        raise _over(path, "columns", f"about {most:,}", limits.max_columns, "import_max_columns", 0)
    best: tuple[list[str], str] | None = None
    for delim in CSV_DELIMITERS:
        try:
            cols = next(csv.reader([text], delimiter=delim, strict=True), [])
        except csv.Error as exc:
            if delim == ",":
                raise InputError(str(path), 0, None, f"cannot parse the header: {exc}") from None
            continue
        if best is None or len(cols) > len(best[0]):
            best = (cols, delim)
    assert best is not None
    header = [h.strip() for h in best[0]]
    check_columns(path, header, limits)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(str(path), 0, dup, "the column name appears twice in the header")
    if any(not h for h in header):
        raise InputError(str(path), 0, None, f"column {header.index('') + 1} of the header has no name")
    return header, best[1]


def _csv_sql(path: Path, header: list[str], delim: str, rejects: bool) -> str:
    cols = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
    extra = ", store_rejects = true, rejects_table = '_rej', rejects_scan = '_rej_scan'" if rejects else ""
    return (f"read_csv({_lit(str(path))}, header = true, auto_detect = false, columns = {cols}, "
            f"delim = {_lit(delim)}, quote = '\"', escape = '\"', strict_mode = true, null_padding = false, "
            f"max_line_size = 33554432{extra})")


def _data_row_at_line(path: Path, delim: str, line: int) -> int:
    """The data row (header = row 0, blank lines skipped) of a physical line: error path only."""
    row = 0
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delim)
        try:
            next(reader)
            for rec in reader:
                if rec and rec != [""]:
                    row += 1
                if reader.line_num >= line:
                    return row
        except csv.Error:
            return row + 1
    return row + 1


def _csv_reject(path: Path, con, header: list[str], delim: str) -> None:
    """Raise the first rejected line (ragged, bad UTF-8, bad quoting) as a one-line error."""
    rej = con.execute("SELECT line, column_name, error_type, error_message, csv_line FROM _rej "
                      "ORDER BY line, column_idx LIMIT 1").fetchone()
    if rej is None:
        return
    line, column, etype, message, text = rej
    row = _data_row_at_line(path, delim, int(line))
    shown = f" (line {line})" if line != row + 1 else ""
    if etype in ("TOO MANY COLUMNS", "MISSING COLUMNS"):
        found = re.search(r"Found: (\d+)", message or "")  # DuckDB stops counting one past the header
        n = found.group(1) if found else "a different number of"
        if etype == "TOO MANY COLUMNS" and text and "\n" not in text:
            try:
                n = str(len(next(csv.reader([text], delimiter=delim))))
            except (csv.Error, StopIteration):
                pass
        hint = ""
        if delim == "," and len(header) == 1:
            hint = "; the header has no comma: is the file separated by another character?"
        raise InputError(str(path), row, column if etype == "MISSING COLUMNS" else None,
                         f"has {n} fields but the header has {len(header)}{shown}{hint}")
    if "ENCODING" in (etype or "") or "unicode" in (message or "").lower():
        raise InputError(str(path), row, column, f"not valid UTF-8{shown}; save the file as UTF-8")
    first = (message or etype or "unreadable").splitlines()[0]
    raise InputError(str(path), row, column, f"cannot parse CSV: {first}{shown}")


def _csv_error(path: Path, header: list[str], delim: str, exc: duckdb.Error) -> InputError:
    """A DuckDB CSV error (bad UTF-8 is raised, not rejected) as a one-line error with row and column."""
    text = str(exc)
    m = re.search(r"Line: (\d+)", text)
    if not m:
        return InputError(str(path), None, None, f"cannot read the CSV file: {_first_line(exc)}")
    line = int(m.group(1))
    row = _data_row_at_line(path, delim, line)
    shown = f" (line {line})" if line != row + 1 else ""
    if "unicode" in text.lower() or "utf-8" in text.lower():
        column, byte = None, ""
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno < line:
                    continue
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    prefix = raw[: err.start].decode("utf-8", errors="replace")
                    idx = len(next(csv.reader([prefix], delimiter=delim))) - 1 if prefix else 0
                    column = header[idx] if 0 <= idx < len(header) else None
                    byte = f" (byte 0x{raw[err.start]:02x} at line {lineno})"
                    break
        return InputError(str(path), row, column, f"not valid UTF-8{byte or shown}; save the file as UTF-8")
    detail = next((ln for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith(("Original Line", "  "))),
                  _first_line(exc))
    return InputError(str(path), row, None, f"cannot parse CSV: {detail.strip()[:200]}{shown}")


def _prepare_csv(path: Path, out: Path, con, limits: Limits) -> tuple[list[str], list[str]]:
    header, delim = _header(path, limits)
    try:
        n = _check_rows(path, con, _csv_sql(path, header, delim, rejects=True), limits, header_lines=1,
                        csv_quotes=True)
        _csv_reject(path, con, header, delim)
        if n == 0:
            raise _empty(path)
        # the count pass read every line (the row count is within the limit): no line is rejected now
        con.execute(f"COPY (SELECT *, row_number() OVER () AS _row FROM {_csv_sql(path, header, delim, False)}) "
                    f"TO {_lit(str(out))} (FORMAT PARQUET)")
    except duckdb.Error as exc:
        raise _csv_error(path, header, delim, exc) from None
    notes = [] if delim == "," else [f"read as {CSV_DELIMITERS[delim]}-separated (the header splits on "
                                     f"{delim!r} into {len(header)} columns)"]
    return header, notes


# --------------------------------------------------------------------------- JSONL


def depth_regex(depth: int) -> str:
    """RE2 pattern matching bracket strings ({}[] only) nested at most ``depth`` deep.

    Nesting up to a fixed depth is a regular language, so DuckDB checks it per line in linear time
    without recursion (Python's json module would hit RecursionError on deep input)."""
    pat = ""
    for _ in range(depth):
        pat = r"(?:[\[{]" + pat + r"[\]}])*"
    return pat


def _json_sql(path: Path) -> str:
    return f"read_json_objects({_lit(str(path))}, format = 'newline_delimited')"


def _json_diagnose(path: Path, limits: Limits, fallback: str) -> InputError:
    """Find the exact line and key of a JSONL error (error path only: streams the file once)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                prefix = raw[: exc.start].decode("utf-8", errors="replace")
                keys = re.findall(r'"([^"\\]+)"\s*:', prefix)
                return InputError(str(path), lineno, keys[-1] if keys else None,
                                  f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {lineno}); "
                                  "save the file as UTF-8")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except RecursionError:
                return InputError(str(path), lineno, None, f"nested deeper than {limits.max_depth} levels "
                                  "(setting import_max_depth)")
            except json.JSONDecodeError as exc:
                return InputError(str(path), lineno, None, f"malformed JSON: {exc.msg} at character {exc.colno}")
            if not isinstance(obj, dict):
                return InputError(str(path), lineno, None, "each line must be a JSON object")
    return InputError(str(path), None, None, f"cannot read the JSONL file: {fallback}")


def _prepare_jsonl(path: Path, out: Path, con, limits: Limits) -> tuple[list[str], list[str]]:
    src = _json_sql(path)
    try:
        if _check_rows(path, con, f"{src} WHERE json IS NOT NULL", limits) == 0:
            raise _empty(path)
        strip = r"""regexp_replace(regexp_replace(json, '"(?:[^"\\]|\\.)*"', '', 'g'), '[^\[\]{}]', '', 'g')"""
        con.execute(f"CREATE TEMP TABLE _lines AS SELECT row_number() OVER () AS _row, json, "
                    f"json_type(json) AS t, regexp_full_match({strip}, {_lit(depth_regex(limits.max_depth))}) AS ok "
                    f"FROM {src} WHERE json IS NOT NULL")
    except duckdb.Error as exc:
        raise _json_diagnose(path, limits, _first_line(exc)) from None
    # rows are numbered by line: the physical line of each object (blank lines are rare in JSONL;
    # when present, the diagnosis above and the message below still name the object's row)
    bad = con.execute("SELECT _row, t, ok FROM _lines WHERE t <> 'OBJECT' OR NOT ok ORDER BY _row LIMIT 1").fetchone()
    if bad:
        if bad[1] != "OBJECT":
            raise InputError(str(path), bad[0], None, "each line must be a JSON object")
        raise InputError(str(path), bad[0], None, f"a value is nested deeper than {limits.max_depth} levels "
                         "(setting import_max_depth)")
    keys = [r[0] for r in con.execute(
        f"""SELECT k FROM (SELECT _row, unnest(json_keys(json)) AS k, generate_subscripts(json_keys(json), 1) AS i
            FROM _lines) GROUP BY k ORDER BY min(_row), min(i) LIMIT {limits.max_columns + 1}""").fetchall()]
    check_columns(path, keys, limits)
    # each value as text: strings as themselves, numbers/booleans as written, objects/arrays as JSON
    pointer = lambda k: "/" + k.replace("~", "~0").replace("/", "~1")  # noqa: E731 (RFC 6901)
    cols = ", ".join(f"json_extract_string(json, {_lit(pointer(k))}) AS \"{k.replace(chr(34), chr(34) * 2)}\""
                     for k in keys)
    try:
        con.execute(f"COPY (SELECT {cols}, _row FROM _lines ORDER BY _row) TO {_lit(str(out))} (FORMAT PARQUET)")
    finally:
        con.execute("DROP TABLE IF EXISTS _lines")
    return keys, []


# --------------------------------------------------------------------------- Parquet


def type_depth(type_name: str) -> int:
    """Nesting depth of a DuckDB type: INTEGER 0, INTEGER[] 1, STRUCT(a INTEGER[]) 2."""
    depth = best = 0
    opened: list[bool] = []
    for i, ch in enumerate(type_name):
        if ch == "(":
            nested = bool(re.search(r"(STRUCT|MAP|UNION)\s*$", type_name[:i]))
            opened.append(nested)
            depth += nested
        elif ch == ")" and opened:
            depth -= opened.pop()
        elif ch == "[":
            best = max(best, depth + 1)
        best = max(best, depth)
    return best


def parquet_columns(path: Path, con, limits: Limits) -> list[tuple[str, str]]:
    """(name, type) of a Parquet file's columns after checking every limit from its footer."""
    src = f"read_parquet({_lit(str(path))})"
    try:
        rows = con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({_lit(str(path))})").fetchone()[0]
        described = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
    except duckdb.Error as exc:
        raise InputError(str(path), None, None, f"not a readable Parquet file: {_first_line(exc)}") from None
    check_columns(path, [n for n, _ in described], limits)
    for name, typ in described:
        if type_depth(typ) > limits.max_depth:
            raise InputError(str(path), 0, name, f"its type is nested deeper than {limits.max_depth} levels "
                             "(setting import_max_depth)")
    if not rows:
        raise InputError(str(path), None, None, "the file is empty (no rows)")
    if rows > limits.max_rows:
        raise _over(path, "rows", f"{rows:,}", limits.max_rows, "import_max_rows")
    return described


def _prepare_parquet(path: Path, out: Path, con, limits: Limits) -> tuple[list[str], list[str]]:
    described = parquet_columns(path, con, limits)
    try:  # read every page once: a corrupt page (bad ZSTD frame) fails here, not inside the import
        con.execute(f"COPY (SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row FROM "
                    f"read_parquet({_lit(str(path))}, file_row_number = true)) TO {_lit(str(out))} (FORMAT PARQUET)")
    except duckdb.Error as exc:
        raise InputError(str(path), None, None, f"not a readable Parquet file: {_first_line(exc)}") from None
    return [n for n, _ in described], []


# --------------------------------------------------------------------------- entry point


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def prepare(path: str | Path, out: str | Path, limits: Limits | None = None,
            con: duckdb.DuckDBPyConnection | None = None) -> dict:
    """Check ``path`` against ``limits`` and write it to the Parquet file ``out`` (text columns as
    VARCHAR for CSV/JSONL, Parquet types kept) with a 1-based ``_row``; return its columns and notes."""
    path, out = Path(path), Path(out)
    limits = limits or Limits()
    kind = file_kind(path)
    check_size(path, limits)
    if path.stat().st_size == 0:
        raise InputError(str(path), None, None, "the file is empty (no header, no rows)")
    own = con is None
    con = con or reader_connection(out.parent)
    try:
        columns, notes = {"csv": _prepare_csv, "jsonl": _prepare_jsonl, "parquet": _prepare_parquet}[kind](
            path, out, con, limits)
    finally:
        if own:
            con.close()
    return {"columns": columns, "notes": notes}
