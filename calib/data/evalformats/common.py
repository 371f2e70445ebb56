"""Shared by the eval-tool readers: the converted rows (``Row``, ``Converted``), JSON reading with
size caps, and small value helpers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from calib.errors import InputError

FORMATS = ("promptfoo", "inspect", "deepeval")
DEFAULT_DIMENSION = "quality"
MAX_JSON_BYTES = 512 * 1024 * 1024  # one JSON document read whole; promptfoo JSONL and .eval stream
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


def stable_id(*parts: Any) -> str:
    """A short stable id from JSON-able parts (the same test in another file gets the same id)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def as_text(v: Any) -> str | None:
    """A value as text for a text column: strings as they are, anything else as JSON."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def as_number(v: Any) -> float | None:
    """A number, or None (booleans and text are not numbers here: the importer refuses them)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def first_key(obj: Any, *names: str) -> Any:
    """The first present key of ``names`` in a dict (snake_case and camelCase spellings)."""
    if not isinstance(obj, dict):
        return None
    for n in names:
        if n in obj and obj[n] is not None:
            return obj[n]
    return None


def dimension_name(name: str) -> str:
    """A dimension cannot hold ':' (it ends the ``judge:<judge>:<dimension>`` column)."""
    return name.replace(":", "-").strip() or DEFAULT_DIMENSION


def as_score(raw: Any) -> float | None:
    """A tool's score as a Tiebreak judge score: numbers as they are, pass/fail as 1/0."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    return as_number(raw)


def _loads(text: str, path: Path) -> Any:
    """One JSON document (no record to name yet: the error gives its line and character)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(path), None, None,
                         f"malformed JSON: {exc.msg} (line {exc.lineno}, character {exc.colno})") from None
    except RecursionError:
        raise InputError(str(path), None, None, "JSON nested too deeply to read") from None


def read_json_document(path: Path) -> Any:
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


def json_values(path: Path) -> Iterator[tuple[int, Any]]:
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
