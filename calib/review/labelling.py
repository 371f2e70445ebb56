"""What the SME labelling page shows and stores, without Streamlit: blinding, form values to labels,
progress, undo.

Blinding: a unit of work is (item, candidate): the baseline's and one candidate's output, shown
in a left/right order drawn per (item, candidate, annotator) from a hash, so the order is random
across items, candidates and annotators yet stable when a page reloads; model names are never
shown (nor which of the candidates this is); the true mapping is stored with every label
(``labels.side``, ``pair_labels.left_model``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from calib.data import store
from calib.review import queue, users
from calib.errors import TiebreakError

PASS_FAIL = ["Pass", "Fail"]
REFUSAL = ["Appropriate", "Over-refusal", "Under-refusal"]
PREFERENCE_SCALE = ["Left much better", "Left better", "About the same", "Right better", "Right much better"]


def shown_output(text: str | None) -> str:
    """An output as shown to an SME: a blank answer is a real answer and is named, not left invisible."""
    return text if text and text.strip() else "(empty answer)"


def options_for(dimension: str) -> list[str]:
    """The answer options for a dimension: refusal has kinds, the others pass/fail."""
    return REFUSAL if dimension == "refusal" else PASS_FAIL


def blind_order(item_id: str, annotator: str, models: list[str]) -> tuple[str, str]:
    """(left model, right model) of the pair ``models`` (the baseline and one candidate), random per
    item, pair and annotator, stable across reloads."""
    a, b = sorted(models)[:2]
    h = hashlib.sha256(f"{item_id}\x1f{annotator}\x1f{a}\x1f{b}".encode()).digest()[0]
    return (a, b) if h % 2 == 0 else (b, a)


@dataclass
class ItemView:
    item_id: str
    segment: str
    prompt: str
    context: str | None
    reference: str | None
    left_model: str
    right_model: str
    left_output: str
    right_output: str
    judges: dict[str, dict[str, dict[str, float]]] | None  # side -> dimension -> judge -> score


def item_view(con: duckdb.DuckDBPyConnection, item_id: str, annotator: str, show_judges: bool = False,
              candidate: str | None = None) -> ItemView:
    """Everything the page shows for a unit (item, ``candidate``; None = the first candidate), model
    names only in the fields the page never prints."""
    row = con.execute("SELECT segment, prompt, context, reference FROM items WHERE item_id = ?", [item_id]).fetchall()
    if not row:
        raise TiebreakError(f"unknown item {item_id}")
    outs = dict(con.execute("SELECT model, output FROM outputs WHERE item_id = ?", [item_id]).fetchall())
    s = store.get_settings(con)
    cand = candidate or store.first_candidate(con)
    pair = [m for m in [s["baseline"], cand] if m in outs]
    if len(pair) < 2:
        raise TiebreakError(f"item {item_id} lacks an output of the baseline or the candidate")
    left, right = blind_order(item_id, annotator, pair)
    judges = None
    if show_judges:
        judges = {"left": {}, "right": {}}
        for m, j, d, sc in con.execute(
                "SELECT model, judge, dimension, score FROM judge_scores WHERE item_id = ? ORDER BY ALL", [item_id]).fetchall():
            side = "left" if m == left else "right" if m == right else None
            if side:
                judges[side].setdefault(d, {})[j] = sc
    seg, prompt, context, reference = row[0]
    return ItemView(item_id, seg, prompt, context, reference, left, right, outs[left], outs[right], judges)


def missing_answers(values: dict[str, str | None], dimensions: list[str]) -> list[str]:
    """Names of the questions left unanswered (the form refuses a half-filled submission)."""
    missing = [f"{d} ({side})" for d in dimensions for side in ("left", "right") if not values.get(f"{d}:{side}")]
    if not values.get("preference"):
        missing.append("overall preference")
    return missing


def to_labels(values: dict[str, str | None], view: ItemView, dimensions: list[str], baseline: str
              ) -> tuple[dict[tuple[str, str], tuple[bool, str | None]], str, int]:
    """Form values -> ({(model, dimension): (pass, kind)}, preference, strength), unblinded."""
    missing = missing_answers(values, dimensions)
    if missing:
        raise TiebreakError("please answer: " + ", ".join(missing))
    verdicts = {}
    for d in dimensions:
        for side, m in (("left", view.left_model), ("right", view.right_model)):
            ans = values[f"{d}:{side}"]
            if d == "refusal":
                verdicts[(m, d)] = (ans == "Appropriate", ans.lower())
            else:
                verdicts[(m, d)] = (ans == "Pass", None)
    k = PREFERENCE_SCALE.index(values["preference"])  # 0 left much better ... 4 right much better
    if k == 2:
        return verdicts, "tie", 0
    better = view.left_model if k < 2 else view.right_model
    return verdicts, ("baseline" if better == baseline else "candidate"), (2 if k in (0, 4) else 1)


def progress(con: duckdb.DuckDBPyConnection, annotator: str) -> dict:
    """Comparisons labelled today, units left in the queue for this annotator, own agreement with
    others on overlap.

    ``comparisons_today`` counts units of work, distinct (item, candidate): with several candidates
    an SME compares the same item's baseline answer with each candidate's, and each comparison is
    work done (a re-rating after an undo counts once). A label's candidate is its lease's; a label
    without one (imported, or from before units were (item, candidate)) counts for the first
    candidate, as ``undo_last`` reads it."""
    today = con.execute(
        """SELECT count(*) FROM (
               SELECT DISTINCT l.item_id, coalesce(e.candidate, ?) FROM labels l
               LEFT JOIN leases e ON e.lease_id = l.lease_id
               WHERE l.annotator = ? AND l.created_at >= current_date)""",
        [store.first_candidate(con), annotator]).fetchone()[0]
    left = queue.servable_count(con, annotator)
    agree = con.execute(
        """WITH latest AS (
               SELECT item_id, model, dimension, annotator, verdict FROM labels
               QUALIFY row_number() OVER (PARTITION BY item_id, model, dimension, annotator
                                          ORDER BY created_at DESC, label_id DESC) = 1)
           SELECT avg((a.verdict = b.verdict)::INT), count(*) FROM latest a JOIN latest b
             ON a.item_id = b.item_id AND a.model = b.model AND a.dimension = b.dimension AND a.annotator <> b.annotator
           WHERE a.annotator = ?""", [annotator]).fetchone()
    return {"comparisons_today": today, "left_in_queue": left,
            "agreement": agree[0], "agreement_pairs": agree[1]}


def undo_last(con: duckdb.DuckDBPyConnection, annotator: str, minutes: float | None = None,
              session: users.Session | None = None) -> queue.Lease | None:
    """Re-open the annotator's previous item: a new lease on it; the corrected rating is appended
    as new rows (the newest counts, the history stays). A page passes its ``session`` (see
    ``queue.submit``)."""
    row = con.execute(
        """SELECT l.item_id, coalesce(e.candidate, ?) FROM labels l LEFT JOIN leases e USING (lease_id)
           WHERE l.annotator = ? AND l.source = 'app'
           ORDER BY l.created_at DESC, l.label_id DESC LIMIT 1""", [store.first_candidate(con), annotator]).fetchall()
    if not row:
        return None
    item_id, cand = row[0]
    minutes = store.get_settings(con)["lease_minutes"] if minutes is None else minutes
    now = datetime.now()
    with queue._LEASE_LOCK, store.transaction(con):
        queue._check_labeller(con, session, annotator)
        # close the annotator's open lease first, so the item they were on returns to the queue
        con.execute("UPDATE leases SET ended_at = ?, outcome = 'released' WHERE annotator = ? AND ended_at IS NULL",
                    [now, annotator])
        lease_id = con.execute(
            "INSERT INTO leases (item_id, candidate, annotator, leased_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "RETURNING lease_id", [item_id, cand, annotator, now, now + timedelta(minutes=minutes)]).fetchone()[0]
    return queue.Lease(lease_id, item_id, annotator, now, now + timedelta(minutes=minutes), cand)
