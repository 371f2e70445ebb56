"""Phase 1 of a two-phase design: which items the judges score, and with what probability.

At production scale (millions of outputs a month) no lead has every output judged: the judges
score a probability sample (phase 1, the *judged sample*), and the SME queue draws its labels from
the judged items only (phase 2). The estimate of the population then needs each judged item's
phase-1 inclusion probability ``pi1`` (``calib.stats.twophase``): the judged sample's mean is not
the population's unless the sample was drawn with known probabilities.

A project is a **census** (every item judged, or imported with every judge score; ``pi1 = 1``)
until a phase-1 sample is recorded: by ``tiebreak judge run --sample N`` / ``--fraction F``
(optionally ``--strata segment``), or by an import in which only some items carry judge scores
and the file says how they were chosen (an inclusion-probability column, or declared uniform).

INTERFACE (the estimator codes against these signatures):

- table ``judge_sample`` (migration ``_m014_judge_sample``): one row per judged item and phase-1
  batch, with the item's inclusion probability and stratum; a later batch extends the sample.
- ``model_cells.n_pop`` / ``pair_cells.n_pop`` (DOUBLE): the cell's outputs expanded by 1 / pi1,
  the population count the cell stands for (equals ``n`` in a census).

Why ``pi1 = n1_h / N_h`` holds for a sample drawn in several batches: each batch draws uniformly
without replacement among the stratum's items not yet sampled, and the union of such sequential
draws is a simple random sample of the total size (after batch 1 the items drawn are an SRS of
n_1; given them, batch 2 is an SRS of n_2 of the rest, so every set of n_1 + n_2 items is equally
likely). So within stratum h the sample as it stands is an SRS of n1_h of the N_h items, whatever
the batches' sizes, and every item of the stratum had probability n1_h / N_h. A batch's sizes may
depend on the judges' scores of earlier batches (Neyman allocation): within a stratum the draw is
still uniform given the sizes. Items imported AFTER a draw were never eligible for it; the status
says so, and the sample should then be extended (they are drawn from with the rest).

A sample chosen outside Tiebreak and imported with its scores (``kind = 'import'``) keeps the
probabilities the file stated (or scored / items of the file for ``--judged-sample uniform``).
Such a sample cannot be extended by drawing (Tiebreak does not know its design), nor mixed with a
drawn one.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from calib.data import store
from calib.errors import TiebreakError

STRATA = (None, "segment")
ALLOCATIONS = ("proportional", "neyman")
MIN_PER_STRATUM = 2  # fewest judged items per non-empty stratum (a stratum's variance needs two)


@dataclass
class SampleReport:
    """What one draw added: the batch number, items drawn per stratum, and the sample's size after it."""

    batch: int
    added: dict[str, int]
    judged: int
    population: int
    # how the batch was allocated ('proportional' also when Neyman fell back to it), and why
    allocation: str = ""
    strata: str = ""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The CLI's line: ``judged sample: n1 of N items (x%), batch b, strata ...``."""
        pct = 100.0 * self.judged / self.population if self.population else 0.0
        new = sum(self.added.values())
        strata = (f"stratified by {self.strata} ({self.allocation})" if self.strata
                  else f"not stratified ({self.allocation})" if self.allocation else "not stratified")
        text = (f"judged sample: {self.judged:,} of {self.population:,} items ({pct:.1f}%), batch {self.batch}, "
                f"strata: {strata}; " + (f"{new:,} items added" if new else "nothing added (already that size)"))
        return "; ".join([text, *self.notes])


# --------------------------------------------------------------------------- reading the sample


def is_census(con: duckdb.DuckDBPyConnection) -> bool:
    """True when no phase-1 sample is recorded: every item counts as judged with probability 1."""
    # a database opened read-only before migration 14 has no judge_sample table: a census
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'judge_sample'").fetchone()[0]
    return not has or con.execute("SELECT count(*) FROM judge_sample").fetchone()[0] == 0


def _kind(con) -> str | None:
    """'draw', 'import' or None (a census): how the project's sample was made."""
    if is_census(con):
        return None
    return con.execute("SELECT any_value(kind) FROM judge_sample").fetchone()[0]


def _strata(con) -> str:
    """The recorded draws' strata ('' or 'segment'; fixed by the first batch)."""
    row = con.execute("SELECT strata FROM judge_sample ORDER BY batch LIMIT 1").fetchone()
    return row[0] if row else ""


def recorded_strata(con: duckdb.DuckDBPyConnection) -> str | None:
    """The strata of the project's drawn sample ('segment' or None), None too in a census: what an
    extension uses when the command does not name strata."""
    return (_strata(con) or None) if _kind(con) == "draw" else None


def _stratum_sql(strata: str, alias: str = "i") -> str:
    return f"{alias}.segment" if strata == "segment" else "''"


def _read_inclusion(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every judged item's phase-1 inclusion probability of the sample as it stands (all batches):
    columns ``item_id`` (str), ``pi1`` (float in (0, 1]), ``stratum`` (str; the segment when drawn
    by segment, else ``""``). Empty in a census.

    A drawn sample: pi1 = n1_h / N_h with n1_h the judged items of stratum h over all batches and
    N_h the stratum's items now (see the module docstring for why the union of batches is an SRS).
    An imported sample: the probability the file stated (the item's latest import batch)."""
    kind = _kind(con)
    if kind is None:
        return pd.DataFrame({"item_id": pd.Series([], dtype=object), "pi1": pd.Series([], dtype=float),
                             "stratum": pd.Series([], dtype=object)})
    if kind == "import":
        return con.execute(
            """SELECT item_id, arg_max(inclusion_prob, batch) AS pi1, '' AS stratum
               FROM judge_sample GROUP BY item_id ORDER BY item_id""").fetch_df()
    st = _stratum_sql(_strata(con))
    return con.execute(
        f"""WITH s AS (SELECT DISTINCT j.item_id, {st} AS stratum FROM judge_sample j JOIN items i USING (item_id)),
                 pop AS (SELECT {st} AS stratum, count(*) AS N FROM items i GROUP BY ALL),
                 n1 AS (SELECT stratum, count(*) AS n1 FROM s GROUP BY ALL)
            SELECT s.item_id, least(1.0, n1.n1 / pop.N) AS pi1, s.stratum
            FROM s JOIN n1 USING (stratum) JOIN pop USING (stratum) ORDER BY s.item_id""").fetch_df()


# One fit reads the sample once (``read_once``): a fit reads it per dimension and per pair, and at
# 5.3M items a 2% sample is ~100,000 rows; reading it once also keeps every estimate of one fit on
# the same sample should a lead extend it meanwhile.
_ONCE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("phase1_once", default=None)


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within the block, ``item_inclusion`` and ``inverse_pi1`` read the judged sample once (per
    connection object) and reuse it."""
    token = _ONCE.set({})
    try:
        yield
    finally:
        _ONCE.reset(token)


def item_inclusion(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every judged item's phase-1 inclusion probability of the sample as it stands (all batches):
    columns ``item_id`` (str), ``pi1`` (float in (0, 1]), ``stratum`` (str; the segment when drawn
    by segment, else ``""``). Empty in a census. See ``_read_inclusion``; read once inside
    ``read_once``."""
    memo = _ONCE.get()
    if memo is None:
        return _read_inclusion(con)
    key = ("inclusion", id(con))
    if key not in memo:
        memo[key] = _read_inclusion(con)
    return memo[key].copy()


def _pi1_by_item(con) -> dict[str, float]:
    memo = _ONCE.get()
    key = ("pi1", id(con))
    if memo is not None and key in memo:
        return memo[key]
    inc = item_inclusion(con)
    pi1 = dict(zip(inc["item_id"].astype(str), inc["pi1"].astype(float)))
    if memo is not None:
        memo[key] = pi1
    return pi1


def inverse_pi1(con: duckdb.DuckDBPyConnection, item_ids) -> np.ndarray:
    """1 / pi1 of each of ``item_ids`` (``item_inclusion``), the weight each judged item carries for the
    population; 1 for an item outside the sample (a census, or labels given before the draw)."""
    pi1 = _pi1_by_item(con)
    return np.array([1.0 / pi1.get(str(i), 1.0) for i in item_ids], float)


def population_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Items per stratum in the population and in the judged sample: columns ``stratum``, ``N``,
    ``n1`` (a census: one row per segment with ``n1 = N``)."""
    kind = _kind(con)
    if kind is None:
        df = con.execute("SELECT segment AS stratum, count(*) AS N, count(*) AS n1 FROM items GROUP BY ALL ORDER BY 1"
                         ).fetch_df()
    else:
        st = _stratum_sql(_strata(con) if kind == "draw" else "")
        df = con.execute(
            f"""SELECT {st} AS stratum, count(*) AS N,
                       count(*) FILTER (WHERE i.item_id IN (SELECT item_id FROM judge_sample)) AS n1
                FROM items i GROUP BY ALL ORDER BY 1""").fetch_df()
    return df.astype({"N": "int64", "n1": "int64"})


def summary(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The judged sample for ``tiebreak status``: None in a census, else its size, the population,
    batches, strata and allocations, and how many items were imported after the last draw (never
    eligible for it)."""
    kind = _kind(con)
    if kind is None:
        return None
    n1, batches, last = con.execute(
        "SELECT count(DISTINCT item_id), count(DISTINCT batch), max(drawn_at) FROM judge_sample").fetchone()
    N = con.execute("SELECT count(*) FROM items").fetchone()[0]
    allocs = [r[0] for r in con.execute(
        "SELECT allocation FROM judge_sample GROUP BY allocation ORDER BY min(batch)").fetchall()]
    later = con.execute("SELECT count(*) FROM items WHERE imported_at > ?", [last]).fetchone()[0] if kind == "draw" else 0
    return {"kind": kind, "judged": n1, "items": N, "batches": batches,
            "strata": _strata(con) if kind == "draw" else "", "allocations": allocs, "imported_after": later}


def summary_line(s: dict) -> str:
    """``judged sample: 2,000 of 100,000 items (2.0%), 2 batches, stratified by segment (proportional)``."""
    pct = 100.0 * s["judged"] / s["items"] if s["items"] else 0.0
    how = ", ".join(s["allocations"])
    if s["kind"] == "import":
        design = f"imported ({how})"
    else:
        design = f"stratified by {s['strata']} ({how})" if s["strata"] else f"not stratified ({how})"
    text = (f"judged sample: {s['judged']:,} of {s['items']:,} items ({pct:.1f}%), {s['batches']} "
            f"batch{'es' if s['batches'] != 1 else ''}, {design}")
    if s["imported_after"]:
        text += (f"; {s['imported_after']:,} items imported after the last draw were never eligible: extend the "
                 "sample (`tiebreak judge run --sample N`) so they can be drawn")
    return text


def sampled_items_sql() -> str:
    """SQL for the judged items' ids (for ``WHERE item_id IN (...)``)."""
    return "SELECT DISTINCT item_id FROM judge_sample"


# --------------------------------------------------------------------------- drawing


def _apportion(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """``total`` split in integers proportional to ``weights`` (largest remainder), none above its
    cap; what a capped stratum cannot take goes to the others (until every cap is reached)."""
    out = np.zeros(len(weights), np.int64)
    weights = np.asarray(weights, float)
    caps = np.asarray(caps, np.int64)
    left = int(min(total, caps.sum()))
    while left > 0:
        room = caps - out
        w = np.where(room > 0, weights, 0.0)
        if w.sum() <= 0:
            w = (room > 0).astype(float)  # weights all zero where there is room: spread evenly
        share = left * w / w.sum()
        k = np.minimum(np.floor(share).astype(np.int64), room)
        rest = left - int(k.sum())
        if rest > 0:  # largest remainders first (ties: the first stratum), within the room left
            frac = np.where(room - k > 0, share - np.floor(share), -1.0)
            for i in np.argsort(-frac, kind="stable")[:rest]:
                if room[i] - k[i] > 0:
                    k[i] += 1
        if k.sum() == 0:
            break
        out += k
        left -= int(k.sum())
    return out


def _stratum_sd(con, strata: str) -> dict[str, float]:
    """S_h for Neyman allocation: per stratum, the sd over judged items of the item's mean
    standardised judge score (each judge and dimension scaled by its sd over the judged items, so
    a 0-100 judge does not outweigh a 0-1 one). Only strata with two judged items or more."""
    st = _stratum_sql(strata)
    rows = con.execute(
        f"""WITH s AS (SELECT js.item_id, js.judge, js.dimension, js.score FROM judge_scores js
                       WHERE js.item_id IN (SELECT item_id FROM judge_sample)),
                 k AS (SELECT judge, dimension, avg(score) AS m, coalesce(nullif(stddev_pop(score), 0), 1) AS sd
                       FROM s GROUP BY ALL),
                 it AS (SELECT s.item_id, avg((s.score - k.m) / k.sd) AS v FROM s JOIN k USING (judge, dimension)
                        GROUP BY s.item_id)
            SELECT {st} AS stratum, stddev_samp(it.v), count(*) FROM it JOIN items i USING (item_id)
            GROUP BY ALL HAVING count(*) >= 2""").fetchall()
    return {r[0]: float(r[1] or 0.0) for r in rows}


def _check_args(n, fraction, strata, allocation) -> None:
    if (n is None) == (fraction is None):
        raise TiebreakError("give the judged sample's size as n (--sample N) or as a fraction (--fraction F), not both")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0):
        raise TiebreakError(f"--sample {n}: the judged sample's size must be a whole number > 0")
    if fraction is not None and not (isinstance(fraction, (int, float)) and math.isfinite(fraction)
                                     and 0 < fraction <= 1):
        raise TiebreakError(f"--fraction {fraction}: the judged share of the items must be in (0, 1]")
    if strata not in STRATA:
        raise TiebreakError(f"--strata {strata}: unknown strata; use segment (or leave it out for none)")
    if allocation not in ALLOCATIONS:
        raise TiebreakError(f"--allocation {allocation}: unknown allocation; use proportional or neyman")


def draw_sample(con: duckdb.DuckDBPyConnection, *, n: int | None = None, fraction: float | None = None,
                strata: str | None = None, allocation: str = "proportional", seed: int = 0) -> SampleReport:
    """Draw (or extend to) a judged sample of ``n`` items (or ``fraction`` of the items), uniformly or
    stratified by ``strata`` ("segment"), proportional or Neyman-allocated; recorded as a new phase-1
    batch in one transaction. Extending never removes an item already judged.

    Sizes: the target total is split over the strata (proportional: n_h ~ N_h; Neyman: n_h ~ N_h S_h
    with S_h from ``_stratum_sd``, falling back to proportional while nothing is judged), at least
    ``MIN_PER_STRATUM`` per non-empty stratum, capped at N_h; a batch then adds the missing items,
    as close to the target split as the items already drawn allow. A call for no more than the
    sample's size adds nothing (so re-running a command resumes it). Within a stratum the items are
    drawn uniformly without replacement from those not yet sampled, by positions from
    ``numpy.random.default_rng([seed, batch, stratum number])`` in the stratum's item-id order:
    the same call on the same project draws the same items."""
    _check_args(n, fraction, strata, allocation)
    strata_name = strata or ""
    with store.db_lock(con, "judge_sample"), store.transaction(con):
        kind = _kind(con)
        if kind == "import":
            raise TiebreakError("the judged sample was imported with its inclusion probabilities; Tiebreak cannot "
                                "extend it by drawing: import more scored items with their inclusion_prob")
        if kind == "draw" and _strata(con) != strata_name:
            rec = _strata(con)
            raise TiebreakError(f"the judged sample is {'stratified by ' + rec if rec else 'not stratified'}; extend "
                                f"it the same way ({'--strata ' + rec if rec else 'without --strata'})")
        st = _stratum_sql(strata_name)
        counts = con.execute(
            f"""SELECT {st} AS stratum, count(*) AS N,
                       count(*) FILTER (WHERE i.item_id IN (SELECT item_id FROM judge_sample)) AS n1
                FROM items i GROUP BY ALL ORDER BY 1""").fetch_df()
        N_tot = int(counts["N"].sum()) if len(counts) else 0
        if N_tot == 0:
            raise TiebreakError("the project has no items to sample: import outputs first")
        target = int(n) if n is not None else max(1, int(round(fraction * N_tot)))
        target = min(target, N_tot)
        current = int(counts["n1"].sum())
        batch = int(con.execute("SELECT coalesce(max(batch), 0) FROM judge_sample").fetchone()[0])
        notes: list[str] = []
        used = allocation
        if target <= current:
            return SampleReport(batch, {}, current, N_tot, allocation=used, strata=strata_name, notes=notes)
        N_h = counts["N"].to_numpy(np.int64)
        n1_h = counts["n1"].to_numpy(np.int64)
        names = counts["stratum"].astype(str).tolist()
        weights = N_h.astype(float)
        if allocation == "neyman":
            sd = _stratum_sd(con, strata_name)
            if not sd:
                used = "proportional"
                notes.append("Neyman allocation needs judged items: nothing is judged yet, so this batch is "
                             "proportional (extend the sample with --allocation neyman once these are judged)")
            else:
                # a stratum with fewer than two judged items: the largest S_h seen (cautious, never starved)
                s_max = max(sd.values()) or 1.0
                S = np.array([sd.get(h, s_max) for h in names])
                weights = N_h * np.where(S > 0, S, 0.0)
                if weights.sum() <= 0:
                    weights = N_h.astype(float)
        floor = np.minimum(MIN_PER_STRATUM, N_h)
        alloc = floor + _apportion(max(0, target - int(floor.sum())), weights, N_h - floor)  # the target split
        must = np.maximum(0, floor - n1_h)  # every non-empty stratum gets its two
        room = N_h - n1_h - must
        extra = _apportion(max(0, target - current - int(must.sum())),
                           np.maximum(0, alloc - n1_h - must).astype(float), room)
        left = max(0, target - current - int(must.sum()) - int(extra.sum()))
        if left:  # the target split is already met where items are left: the rest by the weights
            extra += _apportion(left, weights, room - extra)
        add = must + extra
        batch += 1
        picks = []
        for h, (name, k) in enumerate(zip(names, add)):
            if k <= 0:
                continue
            eligible = int(N_h[h] - n1_h[h])
            rng = np.random.default_rng([int(seed), batch, h])
            pos = np.sort(rng.choice(eligible, size=int(k), replace=False))
            picks.append(pd.DataFrame({"stratum": name, "pos": pos.astype(np.int64)}))
        pick = pd.concat(picks, ignore_index=True)
        sizes = pd.DataFrame({"stratum": names, "N": N_h})
        store.register(con, "_phase1_pick", pick)
        store.register(con, "_phase1_sizes", sizes)
        try:
            con.execute(
                f"""INSERT INTO judge_sample (item_id, batch, kind, strata, stratum, allocation, seed, stratum_size,
                                              inclusion_prob, drawn_at)
                    SELECT e.item_id, ?, 'draw', ?, e.stratum, ?, ?, z.N, NULL, current_timestamp
                    FROM (SELECT i.item_id, {st} AS stratum,
                                 row_number() OVER (PARTITION BY {st} ORDER BY i.item_id) - 1 AS pos
                          FROM items i WHERE i.item_id NOT IN (SELECT item_id FROM judge_sample)) e
                    JOIN _phase1_pick p ON p.stratum = e.stratum AND p.pos = e.pos
                    JOIN _phase1_sizes z ON z.stratum = e.stratum
                    ORDER BY e.item_id""",
                [batch, strata_name, used, int(seed)])
        finally:
            con.unregister("_phase1_pick")
            con.unregister("_phase1_sizes")
        added = {name: int(k) for name, k in zip(names, add) if k > 0}
        judged = current + int(add.sum())
        if judged > target:
            notes.append(f"{judged - target} more than asked: every stratum gets at least {MIN_PER_STRATUM}")
        return SampleReport(batch, added, judged, N_tot, allocation=used, strata=strata_name, notes=notes)


def record_import(con: duckdb.DuckDBPyConnection, scored: str, allocation: str) -> int:
    """Record an import's scored items as a phase-1 batch (kind 'import'; inside the import's
    transaction). ``scored`` is SQL giving (item_id, pi1); returns the batch number."""
    batch = int(con.execute("SELECT coalesce(max(batch), 0) + 1 FROM judge_sample").fetchone()[0])
    con.execute(
        f"""INSERT INTO judge_sample (item_id, batch, kind, strata, stratum, allocation, seed, stratum_size,
                                      inclusion_prob, drawn_at)
            SELECT item_id, ?, 'import', '', '', ?, NULL, NULL, pi1, current_timestamp FROM ({scored}) ORDER BY item_id""",
        [batch, allocation])
    return batch
