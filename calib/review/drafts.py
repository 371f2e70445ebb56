"""An SME's answers in progress on one unit of work (item, candidate), kept across a reload or a
new tab: the Label page saves them as they change and shows them again when the same unit comes
back; a submit, skip or flag deletes them.

Drafts are not labels: they live in their own table (``drafts``), which no fit, count, export or
agreement figure reads. Only answers a form can hold are kept (``answers`` maps question keys such
as ``correctness:left`` or ``preference`` to the option chosen, and ``note`` to the note typed).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb

MAX_NOTE = 5000  # characters kept of a note in progress (a label's note is free text too)


def _candidate(candidate: str | None) -> str:
    return candidate or ""  # NULL is not allowed in a primary key; '' stands for "the first candidate"


def _clean(answers: dict) -> dict[str, str]:
    """Text keys and text values only, none empty, the note capped."""
    out = {}
    for k, v in answers.items():
        if isinstance(k, str) and isinstance(v, str) and v != "":
            out[k] = v[:MAX_NOTE] if k == "note" else v
    return out


def save_draft(con: duckdb.DuckDBPyConnection, annotator: str, item_id: str, candidate: str | None,
               answers: dict, lease_id: int | None = None) -> bool:
    """Replace ``annotator``'s draft on the unit with ``answers`` (None or '' answers are dropped;
    no answer left deletes the draft). With ``lease_id``, only while that lease is still open: a
    change that reaches the server after the submit (quick clicks, then Ctrl+Enter) must not bring
    back a draft of a finished unit. Returns whether a draft is stored."""
    kept = _clean(answers)
    if lease_id is not None and not con.execute(
            "SELECT count(*) FROM leases WHERE lease_id = ? AND annotator = ? AND ended_at IS NULL",
            [lease_id, annotator]).fetchone()[0]:
        return False
    if not kept:
        clear_draft(con, annotator, item_id, candidate)
        return False
    con.execute("INSERT OR REPLACE INTO drafts VALUES (?, ?, ?, ?, ?)",
                [annotator, item_id, _candidate(candidate), json.dumps(kept),
                 datetime.now(timezone.utc).replace(tzinfo=None)])
    return True


def load_draft(con: duckdb.DuckDBPyConnection, annotator: str, item_id: str, candidate: str | None) -> dict[str, str]:
    """``annotator``'s answers in progress on the unit ({} when none)."""
    row = con.execute("SELECT answers FROM drafts WHERE annotator = ? AND item_id = ? AND candidate = ?",
                      [annotator, item_id, _candidate(candidate)]).fetchone()
    if row is None:
        return {}
    try:
        return _clean(json.loads(row[0]))
    except (TypeError, ValueError):
        return {}


def clear_draft(con: duckdb.DuckDBPyConnection, annotator: str, item_id: str, candidate: str | None) -> None:
    """Forget ``annotator``'s draft on the unit (after a submit, skip or flag)."""
    con.execute("DELETE FROM drafts WHERE annotator = ? AND item_id = ? AND candidate = ?",
                [annotator, item_id, _candidate(candidate)])
