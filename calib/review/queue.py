"""The SME queue: choosing items (with recorded inclusion probabilities) and leasing them to SMEs.

Choosing (``refill``): every unlabelled, unqueued item gets a priority, the square root of its
predicted residual variance (the model's p (1 - p) summed over its outputs and the undecided
dimensions, from the current fast fit): the Neyman allocation for the design-consistent estimate
(``calib.stats.design``); before any label, its judge disagreement. Inclusion probabilities mix a uniform random share
with priority-proportional sampling (``calib.stats.sampling.inclusion_probabilities``), raised where a
segment would otherwise expect fewer than ``MIN_PER_SEGMENT`` items; items are then drawn by
Poisson sampling with a seeded generator, so each item's probability of selection is exactly
the recorded ``inclusion_prob`` of its batch. A share of the chosen items (``overlap_share``) is
marked for a second SME, for inter-annotator agreement. Leads can also queue a filtered set.

Serving (``next_item``): one queued item to one SME at a time, oldest batch first and in a random
order within a batch (so the labelled part of a batch is a uniform subsample of it); a lease expires after
``lease_minutes`` and the item returns; an item goes to a second SME only when chosen for
overlap; skipped items return to the queue for others; flagged items wait for a lead's review.
Lease operations hold a process-wide lock (DuckDB allows one writing process), so concurrent SMEs
in the app never get the same item.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
from scipy.special import expit

from calib.data import store
from calib.data.cells import ensure_cells
from calib.stats import engine, model, sampling
from calib.errors import TiebreakError

MIN_PER_SEGMENT = 2.0
_LEASE_LOCK = threading.Lock()


def _now() -> datetime:
    return datetime.now().replace(microsecond=(datetime.now().microsecond // 1000) * 1000)


# --------------------------------------------------------------------------- priorities


def variance_reduction_by_cell(data: model.CellData, post: model.Posterior, baseline: int, candidate: int) -> np.ndarray:
    """Expected reduction of Var(Delta) from one more label in each cell (Laplace, rank-one update),
    plus the predictive variance the label removes."""
    cells = np.arange(len(data.cell_n))
    X = model._design(data, cells, post.mode_sigma, post.mode_tau)
    p = expit(X @ post.mode)
    w = p * (1 - p)
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0).astype(float)
    N = {m: max(1, data.cell_n[data.cell_model == m].sum()) for m in (baseline, candidate)}
    sign = np.where(data.cell_model == candidate, 1.0 / N[candidate],
                    np.where(data.cell_model == baseline, -1.0 / N[baseline], 0.0))
    g = X.T @ (sign * unl * w)
    cov = np.linalg.inv(post.hessian)
    cg = X @ (cov @ g)  # x_c' Sigma g
    xsx = np.einsum("ij,jk,ik->i", X, cov, X)
    return w * cg ** 2 / (1 + w * xsx) + sign ** 2 * w


def item_priorities(con: duckdb.DuckDBPyConnection) -> tuple[str, "np.ndarray", "np.ndarray", "np.ndarray"]:
    """(policy, item_ids, segments, priority) for every unlabelled item not yet queued."""
    ensure_cells(con)
    s = store.get_settings(con)
    models = store.models(con)
    n_labels = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    eligible = """FROM item_disagreement d
                  WHERE d.item_id NOT IN (SELECT item_id FROM labels)
                    AND d.item_id NOT IN (SELECT item_id FROM pair_labels)
                    AND d.item_id NOT IN (SELECT item_id FROM queue)"""
    if n_labels == 0 or len(models) < 2 or not s["dimensions"]:
        rows = con.execute(f"SELECT d.item_id, d.segment, d.score {eligible} ORDER BY d.item_id").fetch_df()
        return ("disagreement", rows["item_id"].to_numpy(object), rows["segment"].to_numpy(object),
                rows["score"].to_numpy(float))
    parts = []
    weight = dimension_weights(con, s["dimensions"])
    for dim in s["dimensions"]:
        data, _, _ = engine.load_dimension(con, dim, models)
        post = model.fit_laplace(data, draws=200)
        parts.append({"dimension": dim, "cell_id": data.cell_ids,
                      "vr": weight[dim] * residual_variance_by_cell(data, post)})
    import pandas as pd

    cell_scores = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    store.register(con, "_cell_vr", cell_scores)
    try:
        rows = con.execute(
            f"""SELECT d.item_id, d.segment, coalesce(v.vr, 0) AS vr {eligible.replace('FROM item_disagreement d',
                'FROM item_disagreement d LEFT JOIN (SELECT oc.item_id, sum(c.vr) AS vr FROM output_cells oc '
                'JOIN _cell_vr c USING (dimension, cell_id) GROUP BY oc.item_id) v USING (item_id)')}
                ORDER BY d.item_id"""
        ).fetch_df()
    finally:
        con.unregister("_cell_vr")
    # Neyman allocation for the design-consistent estimate: its variance is sum (1 - pi) / pi * E[r^2]
    # over items, minimised at fixed sample size by pi proportional to sqrt(E[r^2]), the item's
    # predicted residual variance summed over its outputs and the (undecided) dimensions.
    return ("variance-reduction", rows["item_id"].to_numpy(object), rows["segment"].to_numpy(object),
            np.sqrt(rows["vr"].to_numpy(float)))


def residual_variance_by_cell(data: model.CellData, post: model.Posterior) -> np.ndarray:
    """Predicted variance p (1 - p) of an SME verdict in each cell, at the posterior mode: the
    expected squared residual of a label there under the working model."""
    X = model._design(data, np.arange(len(data.cell_n)), post.mode_sigma, post.mode_tau)
    p = expit(X @ post.mode)
    return p * (1 - p)


def dimension_weights(con: duckdb.DuckDBPyConnection, dimensions: list[str]) -> dict[str, float]:
    """How much each dimension still needs labels: 1 while any candidate is undecided there (or no
    fit exists yet), 0.1 once every candidate has a decision (a little, to keep the estimate
    honest as it moves)."""
    fit = engine.latest_fit(con)
    if not fit:
        return {d: 1.0 for d in dimensions}
    undecided = {r["dimension"] for r in fit.get("diffs", []) if r.get("decision") == "label more"}
    decided = {r["dimension"] for r in fit.get("diffs", [])} - undecided
    return {d: (0.1 if d in decided else 1.0) for d in dimensions}


def stratified_inclusion(priority: np.ndarray, segments: np.ndarray, n: float, random_share: float) -> np.ndarray:
    """Inclusion probabilities summing to n, with at least MIN_PER_SEGMENT expected per segment."""
    pi = sampling.inclusion_probabilities(priority, n, random_share)
    for seg in np.unique(segments):
        idx = segments == seg
        want = min(MIN_PER_SEGMENT, idx.sum())
        have = pi[idx].sum()
        if have < want:
            pi[idx] = np.minimum(1.0, pi[idx] * want / have if have > 0 else want / idx.sum())
    return pi


# --------------------------------------------------------------------------- choosing


@dataclass
class Batch:
    batch_id: int
    policy: str
    eligible: int
    expected: float
    selected: int


def refill(con: duckdb.DuckDBPyConnection, n: float, seed: int = 0, random_share: float | None = None) -> Batch:
    """Choose about ``n`` more items by the adaptive policy and queue them with their inclusion probabilities."""
    s = store.get_settings(con)
    r = s["random_share"] if random_share is None else random_share
    if not 0 <= r <= 1:
        raise TiebreakError(f"random share {r} must be between 0 and 1")
    policy, ids, segs, prio = item_priorities(con)
    batch_id = _next_batch_id(con)
    if not len(ids):
        return Batch(batch_id, policy, 0, 0.0, 0)
    pi = stratified_inclusion(prio, segs, n, r)
    rng = np.random.default_rng([seed, batch_id, 0x9E37])
    chosen = np.flatnonzero(rng.random(len(ids)) < pi)
    overlap = rng.random(len(chosen)) < s["overlap_share"]
    # Which part of the mixture chose the item: the uniform share with probability (its part) / pi.
    uniform_part = np.minimum(r * n / len(ids), pi[chosen])
    reasons = np.where(rng.random(len(chosen)) * pi[chosen] < uniform_part, "random share",
                       "judges disagree" if policy == "disagreement" else "shrinks the interval most")
    import pandas as pd

    rows = pd.DataFrame({"item_id": ids[chosen], "inclusion_prob": pi[chosen], "policy": f"{policy}+random{r:g}",
                         "reason": reasons, "priority": prio[chosen], "batch_id": batch_id, "overlap": overlap})
    _insert_queue(con, rows)
    return Batch(batch_id, policy, len(ids), float(pi.sum()), len(chosen))


def queue_filtered(con: duckdb.DuckDBPyConnection, n: int | None = None, segment: str | None = None,
                   topic: str | None = None, judge_fail: str | None = None, seed: int = 0) -> Batch:
    """Queue a lead-chosen subset (a segment, a topic, items a judge fails), recorded as such: a simple
    random sample of ``n`` of the matching items (all when n is None), inclusion_prob = n / matching."""
    ensure_cells(con)
    where, params, what = ["d.item_id NOT IN (SELECT item_id FROM labels)",
                           "d.item_id NOT IN (SELECT item_id FROM pair_labels)", "d.item_id NOT IN (SELECT item_id FROM queue)"], [], []
    if segment:
        where.append("d.segment = ?"); params.append(segment); what.append(f"segment={segment}")  # noqa: E702
    if topic:
        where.append("d.topic = ?"); params.append(topic); what.append(f"topic={topic}")  # noqa: E702
    if judge_fail:
        where.append("""d.item_id IN (SELECT s.item_id FROM judge_scores s JOIN judge_scale k USING (judge, dimension)
                        WHERE s.judge = ? AND s.score < k.threshold)""")
        params.append(judge_fail); what.append(f"{judge_fail} fails")  # noqa: E702
    if not what:
        raise TiebreakError("give a filter: segment, topic or judge_fail")
    ids = np.array([r[0] for r in con.execute(
        f"SELECT d.item_id FROM item_disagreement d WHERE {' AND '.join(where)} ORDER BY d.item_id", params).fetchall()])
    batch_id = _next_batch_id(con)
    if not len(ids):
        return Batch(batch_id, "filtered", 0, 0.0, 0)
    k = len(ids) if n is None else min(n, len(ids))
    rng = np.random.default_rng([seed, batch_id, 0x7F4A])
    chosen = rng.choice(len(ids), k, replace=False)
    import pandas as pd

    s = store.get_settings(con)
    rows = pd.DataFrame({"item_id": ids[chosen], "inclusion_prob": k / len(ids), "policy": "filtered",
                         "reason": "lead filter: " + ", ".join(what), "priority": 0.0, "batch_id": batch_id,
                         "overlap": rng.random(k) < s["overlap_share"]})
    _insert_queue(con, rows)
    return Batch(batch_id, "filtered", len(ids), float(k), k)


def _next_batch_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM queue").fetchone()[0])


def _insert_queue(con, rows) -> None:
    store.register(con, "_new_queue", rows)
    try:
        with store.transaction(con):
            con.execute(
                """INSERT INTO queue (item_id, inclusion_prob, policy, reason, priority, batch_id, overlap, created_at)
                   SELECT item_id, inclusion_prob, policy, reason, priority, batch_id, overlap, current_timestamp
                   FROM _new_queue WHERE item_id NOT IN (SELECT item_id FROM queue)"""
            )
    finally:
        con.unregister("_new_queue")


# --------------------------------------------------------------------------- serving

# Serving looks at the open head of the queue (items still needing an SME, second opinions first,
# then the oldest batch first, in a random order within the batch: served highest priority first, a
# partly served batch would over-represent its top items, and the labelled items would no longer be
# a probability sample at the recorded inclusion probabilities) and, for those only, at the leases: who holds the item now, whether this SME
# has seen it, whether it awaits a lead's review. HEAD rows are enough unless this SME has skipped
# or holds them all; then the whole queue is searched.
_SERVABLE_TEMPLATE = """
    WITH cand AS (
        SELECT * FROM queue WHERE n_done < CASE WHEN overlap THEN 2 ELSE 1 END
        ORDER BY (n_done > 0) DESC, batch_id NULLS LAST, hash(queue_id), queue_id {head}),
    st AS (
        SELECT item_id,
               count(*) FILTER (WHERE ended_at IS NULL AND expires_at > ?) AS active,
               bool_or(annotator = ? AND (outcome IN ('labelled', 'skipped', 'flagged')
                                          OR (ended_at IS NULL AND expires_at > ?))) AS mine,
               bool_or(outcome = 'flagged' AND lease_id NOT IN (
                   SELECT lease_id FROM flag_reviews WHERE decision = 'return')) AS blocked
        FROM leases WHERE item_id IN (SELECT item_id FROM cand) GROUP BY item_id)
    SELECT q.item_id, q.inclusion_prob, q.reason, q.priority, q.overlap, q.queue_id
    FROM cand q LEFT JOIN st USING (item_id)
    WHERE NOT coalesce(st.mine, FALSE) AND NOT coalesce(st.blocked, FALSE)
      AND q.n_done + coalesce(st.active, 0) < CASE WHEN q.overlap THEN 2 ELSE 1 END
    ORDER BY (q.n_done > 0) DESC, q.batch_id NULLS LAST, hash(q.queue_id), q.queue_id
"""
HEAD = 200
SERVABLE_HEAD = _SERVABLE_TEMPLATE.format(head=f"LIMIT {HEAD}")
SERVABLE = _SERVABLE_TEMPLATE.format(head="")


def _first_servable(con, annotator: str, now: datetime):
    row = con.execute(SERVABLE_HEAD + " LIMIT 1", [now, annotator, now]).fetchone()
    if row is None:
        row = con.execute(SERVABLE + " LIMIT 1", [now, annotator, now]).fetchone()
    return row


_SWEEP_EVERY_S = 60.0
_last_sweep = [0.0]


def servable_count(con: duckdb.DuckDBPyConnection, annotator: str = "", now: datetime | None = None) -> int:
    """How many items this annotator could still be served (a count, not the list)."""
    now = now or _now()
    return con.execute(f"SELECT count(*) FROM ({SERVABLE})", [now, annotator, now]).fetchone()[0]


def servable(con: duckdb.DuckDBPyConnection, annotator: str = "", limit: int = 10, now: datetime | None = None) -> list[dict]:
    """The next items this annotator would be served, in order (second-opinion overlap items first)."""
    now = now or _now()
    rows = con.execute(SERVABLE + " LIMIT ?", [now, annotator, now, limit]).fetchall()
    return [{"item_id": r[0], "inclusion_prob": r[1], "reason": r[2], "priority": r[3], "overlap": r[4]} for r in rows]


@dataclass
class Lease:
    lease_id: int
    item_id: str
    annotator: str
    leased_at: datetime
    expires_at: datetime


def next_item(con: duckdb.DuckDBPyConnection, annotator: str, now: datetime | None = None,
              lease_minutes: float | None = None, reuse_active: bool = True) -> Lease | None:
    """Lease the next item to ``annotator``; None when nothing is left. With ``reuse_active`` an
    active lease of theirs is returned first (a reloaded page shows the same item again)."""
    if not annotator:
        raise TiebreakError("an annotator name is required")
    given = now
    with _LEASE_LOCK:
        now = given or _now()  # stamped after the lock: lease times follow the order of the leases
        mine = con.execute(
            """SELECT lease_id, item_id, leased_at, expires_at FROM leases
               WHERE annotator = ? AND ended_at IS NULL AND expires_at > ? ORDER BY lease_id LIMIT 1""",
            [annotator, now]).fetchone() if reuse_active else None
        if mine:
            return Lease(mine[0], mine[1], annotator, mine[2], mine[3])
        minutes = store.get_settings(con)["lease_minutes"] if lease_minutes is None else lease_minutes
        with store.transaction(con):
            # record expiries now and then (serving already ignores expired leases)
            if given is not None or time.monotonic() - _last_sweep[0] > _SWEEP_EVERY_S:
                con.execute("UPDATE leases SET ended_at = expires_at, outcome = 'expired' "
                            "WHERE ended_at IS NULL AND expires_at <= ?", [now])
                _last_sweep[0] = time.monotonic()
            row = _first_servable(con, annotator, now)
            if row is None:
                return None
            expires = now + timedelta(minutes=minutes)
            lease_id = con.execute(
                "INSERT INTO leases (item_id, annotator, leased_at, expires_at) VALUES (?, ?, ?, ?) RETURNING lease_id",
                [row[0], annotator, now, expires]).fetchone()[0]
        return Lease(lease_id, row[0], annotator, now, expires)


def _end_lease(con, lease_id: int, annotator: str, outcome: str, reason: str | None, now: datetime) -> None:
    row = con.execute("SELECT annotator, outcome FROM leases WHERE lease_id = ?", [lease_id]).fetchone()
    if row is None:
        raise TiebreakError(f"no lease {lease_id}")
    if row[0] != annotator:
        raise TiebreakError(f"lease {lease_id} belongs to {row[0]}, not {annotator}")
    if row[1] in ("labelled", "skipped", "flagged"):
        raise TiebreakError(f"lease {lease_id} is already closed ({row[1]})")
    con.execute("UPDATE leases SET ended_at = ?, outcome = ?, reason = ? WHERE lease_id = ?",
                [now, outcome, reason, lease_id])


def skip(con: duckdb.DuckDBPyConnection, lease_id: int, annotator: str, reason: str, now: datetime | None = None) -> None:
    """Return the item to the queue (for other SMEs) and record the skip and its reason."""
    if not reason:
        raise TiebreakError("a skip needs a reason")
    with _LEASE_LOCK, store.transaction(con):
        _end_lease(con, lease_id, annotator, "skipped", reason, now or _now())


def flag(con: duckdb.DuckDBPyConnection, lease_id: int, annotator: str, reason: str, now: datetime | None = None) -> None:
    """Send the item to the leads' review list; it is not served again until a lead returns it."""
    if not reason:
        raise TiebreakError("a flag needs a reason")
    with _LEASE_LOCK, store.transaction(con):
        _end_lease(con, lease_id, annotator, "flagged", reason, now or _now())


def review_flag(con: duckdb.DuckDBPyConnection, lease_id: int, reviewer: str, decision: str, note: str | None = None) -> None:
    """A lead's decision on a flagged item: 'return' (serve it again) or 'drop' (never serve it)."""
    if decision not in ("return", "drop"):
        raise TiebreakError("decision must be 'return' or 'drop'")
    with store.transaction(con):
        con.execute("INSERT INTO flag_reviews VALUES (?, ?, ?, ?, current_timestamp)", [lease_id, reviewer, decision, note])


def top_disagreements(con: duckdb.DuckDBPyConnection, n: int = 20) -> list[dict]:
    """The items where the judges disagree most (within an output, or between the two models)."""
    ensure_cells(con)
    rows = con.execute(
        """SELECT item_id, segment, topic, within_judges, between_models, score FROM item_disagreement
           ORDER BY score DESC, item_id LIMIT ?""", [n]).fetchall()
    return [{"item_id": r[0], "segment": r[1], "topic": r[2], "judges_disagree": round(r[3], 3),
             "models_differ": round(r[4], 3), "score": round(r[5], 3)} for r in rows]


def queue_summary(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Queued items by reason: how many, how many done, mean inclusion probability."""
    rows = con.execute(
        """SELECT reason, count(*), count(*) FILTER (WHERE n_done >= CASE WHEN overlap THEN 2 ELSE 1 END),
                  avg(inclusion_prob), count(*) FILTER (WHERE overlap)
           FROM queue GROUP BY reason ORDER BY 2 DESC""").fetchall()
    return [{"reason": r[0], "queued": r[1], "done": r[2], "mean_inclusion_prob": round(r[3], 5), "overlap": r[4]}
            for r in rows]


def review_list(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Flagged items awaiting a lead's decision."""
    rows = con.execute(
        """SELECT l.lease_id, l.item_id, l.annotator, l.ended_at, l.reason FROM leases l
           WHERE l.outcome = 'flagged' AND l.lease_id NOT IN (SELECT lease_id FROM flag_reviews)
           ORDER BY l.ended_at""").fetchall()
    return [{"lease_id": r[0], "item_id": r[1], "annotator": r[2], "flagged_at": r[3], "reason": r[4]} for r in rows]


def submit(con: duckdb.DuckDBPyConnection, lease_id: int, annotator: str,
           verdicts: dict[tuple[str, str], tuple[bool, str | None]], preference: str | None = None,
           strength: int | None = None, note: str | None = None, duration_ms: int | None = None,
           left_model: str | None = None, now: datetime | None = None, source: str = "app") -> int:
    """Write one SME's rating of a leased item in one transaction: a label per (model, dimension),
    the pairwise preference, and the lease closed. A late submission (lease expired) is still kept:
    a rating is never lost. Returns the number of label rows written."""
    s = store.get_settings(con)
    with _LEASE_LOCK, store.transaction(con):
        now = now or _now()
        row = con.execute("SELECT item_id, annotator, outcome FROM leases WHERE lease_id = ?", [lease_id]).fetchone()
        if row is None:
            raise TiebreakError(f"no lease {lease_id}")
        item_id, owner, outcome = row
        if owner != annotator:
            raise TiebreakError(f"lease {lease_id} belongs to {owner}, not {annotator}")
        if outcome == "labelled":
            raise TiebreakError(f"lease {lease_id} was already submitted")
        models = {m for (m,) in con.execute("SELECT model FROM outputs WHERE item_id = ?", [item_id]).fetchall()}
        rows = []
        for (m, dim), (verdict, kind) in verdicts.items():
            if m not in models or dim not in s["dimensions"]:
                raise TiebreakError(f"unknown model/dimension {m}/{dim} for item {item_id}")
            side = None if left_model is None else ("left" if m == left_model else "right")
            rows += [item_id, m, dim, bool(verdict), kind, annotator, now, note, duration_ms, lease_id, side]
        if rows:
            con.execute(
                "INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, note, source, "
                "duration_ms, lease_id, side) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(verdicts)),
                [v for i in range(0, len(rows), 11) for v in (*rows[i:i + 8], source, *rows[i + 8:i + 11])])
        if preference is not None:
            if preference not in ("candidate", "baseline", "tie"):
                raise TiebreakError(f"preference {preference!r} must be candidate, baseline or tie")
            for cand in s["candidates"]:
                con.execute(
                    """INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, strength, annotator,
                           created_at, note, source, duration_ms, lease_id, left_model)
                       VALUES (?, ?, ?, 'overall', ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [item_id, s["baseline"], cand, preference, strength, annotator, now, note, source, duration_ms,
                     lease_id, left_model])
        con.execute("UPDATE leases SET ended_at = ?, outcome = 'labelled' WHERE lease_id = ?", [now, lease_id])
        con.execute(
            """UPDATE queue SET n_done = (SELECT count(DISTINCT annotator) FROM leases
                                          WHERE item_id = ? AND outcome = 'labelled')
               WHERE item_id = ?""", [item_id, item_id])
    return len(verdicts)
