"""Demo mode: a simulated SME who answers from the demo data's hidden truth, and a replay of a
project's label history.

The simulated SME goes through the real queue (lease, then submit in one transaction), so the
demo exercises exactly the code a human SME does; its labels carry ``source = 'demo'``.
"""

from __future__ import annotations

import numpy as np
import duckdb

from calib.data import store
from calib.stats import engine
from calib.review import labelling, queue
from calib.errors import TiebreakError

DEMO_SME = "demo-sme"


def has_truth(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT count(*) FROM sim_truth").fetchone()[0] > 0


def simulate_sme(con: duckdb.DuckDBPyConnection, n_items: int, annotator: str = DEMO_SME, seed: int = 0) -> int:
    """Label up to ``n_items`` items as a simulated SME (hidden truth, 20-90 s per item recorded as
    the duration); returns how many were labelled."""
    if not has_truth(con):
        raise TiebreakError("demo mode needs hidden truth: use a demo database (`tiebreak demo --db FILE`)")
    rng = np.random.default_rng(seed)
    models = store.models(con)
    base = store.get_settings(con)["baseline"]
    done = 0
    for _ in range(n_items):
        lease = queue.next_item(con, annotator)
        if lease is None:
            queue.refill(con, 20, seed=seed + done)
            lease = queue.next_item(con, annotator)
        if lease is None:
            break
        # the unit shows the baseline's and one candidate's output: answer for those two only
        pair = [base, lease.candidate or store.first_candidate(con)]
        truth = con.execute("SELECT model, dimension, verdict, kind FROM sim_truth WHERE item_id = ?",
                            [lease.item_id]).fetchall()
        verdicts = {(m, d): (bool(v), k) for m, d, v, k in truth if m in pair and m in models}
        pref = con.execute("SELECT preference, strength FROM sim_truth_pairs WHERE item_id = ? AND dimension = 'overall' "
                           "AND baseline = ? AND candidate = ? LIMIT 1", [lease.item_id, *pair]).fetchone()
        left, _ = labelling.blind_order(lease.item_id, annotator, pair)
        queue.submit(con, lease.lease_id, annotator, verdicts, preference=pref[0] if pref else None,
                     strength=pref[1] if pref else None, duration_ms=int(rng.uniform(20_000, 90_000)),
                     left_model=left, source="demo")
        done += 1
    return done


def replay(con: duckdb.DuckDBPyConnection, points: int = 12) -> list[dict]:
    """The project's label history replayed: a fast fit (not recorded) at ``points`` evenly spaced
    moments of the label log, each counting only the labels written by then. Rows as
    ``engine.fits_history`` (``step`` instead of ``fit_id``), oldest first."""
    ids = [r[0] for r in con.execute(
        """SELECT max(label_id) FROM labels GROUP BY item_id ORDER BY max(label_id)""").fetchall()]
    if not ids:
        return []
    cut_at = sorted({ids[min(len(ids) - 1, int(round(q)))] for q in np.linspace(0, len(ids) - 1, points)})
    out = []
    for step, cutoff in enumerate(cut_at):
        fit = engine.fit_project(con, "fast", record=False, max_label_id=int(cutoff))
        for d in fit["diffs"]:
            out.append({"step": step, "n_labels": fit["n_labels"], **{k: d[k] for k in (
                "dimension", "candidate", "mean", "lo", "hi", "p_noninferior", "decision")}})
    return out
