"""The SME queue: choosing units of work (with recorded inclusion probabilities) and leasing them to SMEs.

The unit of SME work is (item, candidate): the baseline's and one candidate's output of an item,
blinded (``queue.candidate``, ``leases.candidate``; NULL in rows from before = the first candidate).
An item labelled for (baseline, candidate 1) stays eligible for (baseline, candidate 2).

Choosing (``refill``): every unlabelled, unqueued unit gets a priority, the square root of its
predicted residual variance (the model's p (1 - p) of the baseline's and the candidate's output,
summed over the dimensions where that candidate is undecided, from the current fast fit): the
Neyman allocation for each candidate's design-consistent Delta (``calib.stats.design``); before
any label, the item's judge disagreement. A candidate decided on every dimension by the latest fit
gets no priority share, only an exploration share of the uniform part (``EXPLORE``). Inclusion probabilities mix a uniform random share
with priority-proportional sampling (``calib.stats.sampling.inclusion_probabilities``), raised where a
segment would otherwise expect fewer than ``MIN_PER_SEGMENT`` items; items are then drawn by
Poisson sampling with a seeded generator, so each item's probability of selection is exactly
the recorded ``inclusion_prob`` of its batch. A share of the chosen items (``overlap_share``) is
marked for a second SME, for inter-annotator agreement. Leads can also queue a filtered set.

Serving (``next_item``): one queued unit to one SME at a time, oldest batch first and in a random
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
from calib.review import users

MIN_PER_SEGMENT = 2.0
# Weight of a decided candidate's units in the uniform (random) share, against 1 for an undecided
# one: a decided candidate needs no more labels, but a few keep its estimate honest as it moves.
EXPLORE = 0.25
_LEASE_LOCK = threading.Lock()


def _now() -> datetime:
    return datetime.now().replace(microsecond=(datetime.now().microsecond // 1000) * 1000)


# --------------------------------------------------------------------------- priorities


def unit_candidates(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The candidates a unit of work can pair with the baseline (as the fit: every model but the
    baseline, the settings' order first)."""
    base = store.get_settings(con)["baseline"]
    return [m for m in store.models(con) if m != base]


@dataclass
class Units:
    """Eligible units of SME work with their priority and their weight in the uniform share."""

    policy: str
    item_id: np.ndarray  # (U,) object
    candidate: np.ndarray  # (U,) object
    segment: np.ndarray  # (U,) object
    priority: np.ndarray  # (U,) float
    base_weight: np.ndarray  # (U,) float: 1, or EXPLORE for a decided candidate
    # the labelled units under the same fit, for the mixture's evidence (``sampling.evidence_mix``):
    # (priority, squared residual, design weight) arrays; None before any label
    evidence: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


# units (item, candidate) not yet labelled for that candidate nor queued, where both outputs exist
_ELIGIBLE_UNITS = """
    FROM item_disagreement d JOIN outputs o ON o.item_id = d.item_id JOIN _unit_cands u ON o.model = u.candidate
    JOIN outputs ob ON ob.item_id = d.item_id AND ob.model = u.baseline
    WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id = d.item_id AND l.model = u.candidate)
      AND NOT EXISTS (SELECT 1 FROM pair_labels p WHERE p.item_id = d.item_id AND p.baseline = ? AND p.candidate = u.candidate)
      AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.item_id = d.item_id AND coalesce(q.candidate, ?) = u.candidate)
"""


def unit_priorities(con: duckdb.DuckDBPyConnection) -> Units:
    """Every unlabelled, unqueued (item, candidate) unit with its priority (see the module docstring)."""
    import pandas as pd

    ensure_cells(con)
    s = store.get_settings(con)
    models = store.models(con)
    cands = unit_candidates(con)
    base = s["baseline"]
    n_labels = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    decided = decided_candidates(con, cands)
    pair = _pair_residual_variance(con, base, cands) if not s["dimensions"] and len(models) >= 2 else None
    tables = {"_unit_cands": pd.DataFrame({"candidate": pd.Series(cands, dtype=object),
                                           "baseline": pd.Series([base] * len(cands), dtype=object)})}
    evidence = None
    if pair is not None:
        policy, sql, params = "variance-reduction", _PAIR_NEYMAN, []
        tables["_pair_vr"], evidence = pair
    elif n_labels == 0 or len(models) < 2 or not s["dimensions"]:
        policy = "disagreement"
        sql, params = (_COLD_START_SEVERAL, [base, base]) if len(cands) > 1 and s["dimensions"] else (_COLD_START, [])
    else:
        policy, sql, params = "variance-reduction", _NEYMAN, [base]
        dim_w = unit_weights(con, s["dimensions"], cands)
        tables["_cell_vr"], out_ev = _cell_residual_variance(con, s["dimensions"], models)
        tables["_dim_w"] = pd.DataFrame([{"dimension": d, "candidate": c, "w": v} for (d, c), v in dim_w.items()])
        evidence = _unit_evidence(out_ev, base, cands, dim_w)
    for name, df in tables.items():
        store.register(con, name, df)
    try:
        rows = con.execute(sql.format(eligible=_ELIGIBLE_UNITS),
                           [base, store.first_candidate(con), *params]).fetch_df()
    finally:
        for name in tables:
            con.unregister(name)
    cand_arr = rows["candidate"].to_numpy(object)
    # Only while another candidate still needs labels: with every candidate decided (or a single
    # one) the 0.1-weighted priorities of ``unit_weights`` apply, as before units existed.
    is_decided = (np.isin(cand_arr, list(decided)) if decided and len(decided) < len(cands)
                  else np.zeros(len(rows), bool))
    prio = rows["prio"].to_numpy(float)
    # a decided candidate: no priority share, EXPLORE of an undecided one's uniform share; every
    # other unit keeps a positive priority (raised to the clip's floor by ``sampling``): a unit the
    # judges agree on is still worth a label (67-72% of PandaLM pairs had disagreement 0)
    prio = np.where(is_decided, 0.0, np.maximum(np.nan_to_num(prio), 1e-12))
    return Units(policy, rows["item_id"].to_numpy(object), cand_arr, rows["segment"].to_numpy(object), prio,
                 np.where(is_decided, EXPLORE, 1.0), evidence)


# The priority queries of ``unit_priorities``; ``{eligible}`` is ``_ELIGIBLE_UNITS`` (its two
# parameters come first), the rest of the parameters after.

# Before any label: the item's judge disagreement.
_COLD_START = "SELECT d.item_id, u.candidate, d.segment, d.score AS prio {eligible} ORDER BY d.item_id, u.candidate"

# Before any label, several candidates: the judges' spread plus how far the judges' consensus on
# this candidate's output is from the baseline's (``item_disagreement`` holds the furthest candidate's).
_COLD_START_SEVERAL = """
    WITH un AS (SELECT d.item_id, u.candidate, d.segment, d.within_judges, d.score {eligible}),
         z AS (SELECT oc.item_id, oc.model, oc.dimension, list_avg(mc.x) AS z
               FROM output_cells oc JOIN model_cells mc USING (dimension, cell_id)),
         bt AS (SELECT c.item_id, c.model AS candidate, avg(abs(c.z - b.z)) AS between_models
                FROM z c JOIN z b ON b.item_id = c.item_id AND b.dimension = c.dimension AND b.model = ?
                WHERE c.model <> ? GROUP BY ALL)
    SELECT un.item_id, un.candidate, un.segment,
           CASE WHEN bt.between_models IS NULL THEN un.score ELSE un.within_judges + bt.between_models END AS prio
    FROM un LEFT JOIN bt USING (item_id, candidate) ORDER BY un.item_id, un.candidate"""

# Neyman allocation for each candidate's design-consistent Delta: its variance is
# sum (1 - pi) / pi * E[r^2] over that candidate's units, minimised at fixed sample size by pi
# proportional to sqrt(E[r^2]), the unit's predicted residual variance (``_cell_vr``) summed over
# its two outputs (baseline and candidate) and the dimensions still undecided for it (``_dim_w``).
_NEYMAN = """
    WITH un AS (SELECT d.item_id, u.candidate, d.segment {eligible}),
         ov AS (SELECT oc.item_id, oc.model, oc.dimension, c.vr FROM output_cells oc
                JOIN _cell_vr c USING (dimension, cell_id) WHERE oc.item_id IN (SELECT item_id FROM un))
    SELECT un.item_id, un.candidate, un.segment, sqrt(coalesce(sum(w.w * ov.vr), 0)) AS prio
    FROM un LEFT JOIN ov ON ov.item_id = un.item_id AND (ov.model = ? OR ov.model = un.candidate)
    LEFT JOIN _dim_w w ON w.dimension = ov.dimension AND w.candidate = un.candidate
    GROUP BY ALL ORDER BY un.item_id, un.candidate"""

# Pairwise-only project with SME preferences: Neyman allocation for each candidate's win rate, pi
# proportional to the sd of a preference's residual in the unit's pair cell (``_pair_vr``; cells
# with no estimate get the mean): the judges' disagreement alone over-samples a few cells and made
# the queue's interval 1.5-1.7x random labels' on PandaLM.
_PAIR_NEYMAN = """
    WITH un AS (SELECT d.item_id, u.candidate, u.baseline, d.segment {eligible})
    SELECT un.item_id, un.candidate, un.segment, sqrt(coalesce(v.vr, (SELECT avg(vr) FROM _pair_vr))) AS prio
    FROM un LEFT JOIN item_pair_cells ic ON ic.item_id = un.item_id AND ic.baseline = un.baseline
                                        AND ic.candidate = un.candidate
    LEFT JOIN _pair_vr v ON v.candidate = un.candidate AND v.cell_id = ic.cell_id
    ORDER BY un.item_id, un.candidate"""


def _pair_residual_variance(con: duckdb.DuckDBPyConnection, base: str, cands: list[str]):
    """Per candidate and pair cell, the expected squared residual of one more SME preference under
    the preference model: within-cell variance plus the posterior variance of the cell's win
    score; with the labelled pairs' evidence for the mixture (priority sqrt(vr) of their cell,
    squared residual of their win score against the cell's, design weight 1 / pi). None when no
    candidate has SME preferences yet (the judges' disagreement starts)."""
    import pandas as pd

    parts, ev = [], []
    for c in cands:
        pdata = engine.load_pairs(con, base, c, "overall")
        if pdata is None:
            continue
        th, _ = model.pairwise_posterior(pdata, "fast", draws=200)
        win, var, _ = model.pairwise_cells(pdata, th)
        vr = var.mean(0) + win.var(0)
        cell_ids = con.execute("SELECT cell_id FROM pair_cells WHERE baseline = ? AND candidate = ? ORDER BY cell_id",
                               [base, c]).fetchall()
        parts.append(pd.DataFrame({"candidate": c, "cell_id": [r[0] for r in cell_ids], "vr": vr}))
        if pdata.item_id is not None and len(pdata.item_id):
            n_pop = int(np.sum(pdata.cell_n))
            parts_w, _ = engine.design_weight_parts(con, np.asarray(pdata.item_id, object), n_pop, c)
            ev.append((np.sqrt(vr[pdata.item_cell]), (pdata.item_win - win.mean(0)[pdata.item_cell]) ** 2,
                       1.0 / np.maximum(parts_w.pi, 1e-9)))
    if not parts:
        return None
    evidence = tuple(np.concatenate(x) for x in zip(*ev)) if ev else None
    return pd.concat(parts, ignore_index=True), evidence


def item_priorities(con: duckdb.DuckDBPyConnection) -> tuple[str, "np.ndarray", "np.ndarray", "np.ndarray"]:
    """(policy, item_ids, segments, priority) of every eligible unit (one per item with one candidate);
    ``unit_priorities`` also says which candidate."""
    u = unit_priorities(con)
    return u.policy, u.item_id, u.segment, u.priority


def _cell_residual_variance(con: duckdb.DuckDBPyConnection, dimensions: list[str], models: list[str]):
    """Per dimension and cell, the predicted residual variance of a label under the current fast
    fit; and per labelled output (dimension, item_id, model), its cell's predicted variance, its
    squared residual (mean verdict - p) and its design weight 1 / pi, the mixture's evidence."""
    import pandas as pd

    parts, ev = [], []
    for dim in dimensions:
        data, lab, _ = engine.load_dimension(con, dim, models)
        post = model.fit_laplace(data, draws=200)
        p = pass_probability_by_cell(data, post)
        vr = p * (1 - p)
        parts.append(pd.DataFrame({"dimension": dim, "cell_id": data.cell_ids, "vr": vr}))
        if len(lab.item_id):
            pi = lab.pi if lab.pi is not None else 1.0 / np.maximum(lab.w, 1.0)
            ev.append(pd.DataFrame({"dimension": dim, "item_id": lab.item_id,
                                    "model": np.asarray(models, object)[lab.model], "vr": vr[lab.cell],
                                    "e2": (lab.y - p[lab.cell]) ** 2, "d": 1.0 / np.maximum(pi, 1e-9)}))
    return pd.concat(parts, ignore_index=True), (pd.concat(ev, ignore_index=True) if ev else None)


def _unit_evidence(out_ev, base: str, cands: list[str], dim_w: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per labelled unit (item, candidate): its priority as ``_NEYMAN`` computes it (sqrt of the
    w-weighted predicted variance of the baseline's and the candidate's outputs over dimensions),
    its squared residual summed the same way, and its design weight."""
    import pandas as pd

    if out_ev is None or not len(out_ev):
        return None
    rows = []
    for c in cands:
        unit_items = out_ev.loc[out_ev["model"] == c, "item_id"].unique()
        sub = out_ev[out_ev["item_id"].isin(unit_items) & out_ev["model"].isin([base, c])]
        if not len(sub):
            continue
        w = sub["dimension"].map(lambda d: dim_w.get((d, c), 1.0)).to_numpy(float)
        rows.append(pd.DataFrame({"item_id": sub["item_id"].to_numpy(object), "vr": w * sub["vr"].to_numpy(float),
                                  "e2": w * sub["e2"].to_numpy(float), "d": sub["d"].to_numpy(float)})
                    .groupby("item_id", sort=True).agg(vr=("vr", "sum"), e2=("e2", "sum"), d=("d", "max")))
    if not rows:
        return None
    u = pd.concat(rows)
    return np.sqrt(u["vr"].to_numpy(float)), u["e2"].to_numpy(float), u["d"].to_numpy(float)


def pass_probability_by_cell(data: model.CellData, post: model.Posterior) -> np.ndarray:
    """Pass probability of an SME verdict in each cell at the posterior mode."""
    X = model._design(data, np.arange(len(data.cell_n)), post.mode_sigma, post.mode_tau)
    return expit(X @ post.mode)


def residual_variance_by_cell(data: model.CellData, post: model.Posterior) -> np.ndarray:
    """Predicted variance p (1 - p) of an SME verdict in each cell, at the posterior mode: the
    expected squared residual of a label there under the working model."""
    p = pass_probability_by_cell(data, post)
    return p * (1 - p)


def mixture_weight(u: Units, random_share: float) -> tuple[float, str]:
    """The weight of the priority part in this batch's mixture, and how it was chosen
    (``sampling``: the cold start keeps the batch within 3x; then the labels' evidence decides).
    ``random_share`` stays the least uniform share a lead asked for."""
    max_mix = 1.0 - random_share
    pool = u.priority[u.base_weight >= 1.0] if (u.base_weight >= 1.0).any() else u.priority
    if u.evidence is None:
        r, _ = sampling.relative_priorities(pool)
        return sampling.cold_start_mix(r, max_mix), "cold start"
    prio_lab, e2, d = u.evidence
    _, r_lab = sampling.relative_priorities(pool, prio_lab)
    a, what = sampling.evidence_mix(r_lab, e2, d, max_mix)
    return a, f"evidence from {what['units']} labelled units"


def mixture_probabilities(u: Units, n: float, random_share: float) -> tuple[np.ndarray, float]:
    """Inclusion probabilities (summing to about ``n``, at least ``MIN_PER_SEGMENT`` per segment)
    of the defensive mixture, and the priority part's weight."""
    a, _ = mixture_weight(u, random_share)
    pool = u.base_weight >= 1.0
    r = np.zeros(len(u.priority))
    if pool.any():
        r[pool], _ = sampling.relative_priorities(u.priority[pool])
    # a decided candidate's units (outside the pool) get no priority share, only their uniform one
    return stratified_inclusion(r, u.segment, n, 1.0 - a, u.base_weight, clip=None), a


def decided_candidates(con: duckdb.DuckDBPyConnection, candidates: list[str]) -> set[str]:
    """Candidates with a decision ("not worse" or "worse") on every dimension in the latest fit
    (the pairwise win rates when the project has no pointwise dimension)."""
    fit = engine.latest_fit(con)
    if not fit:
        return set()
    out = set()
    for c in candidates:
        rows = [r for r in fit.get("diffs", []) if r.get("candidate") == c] or \
               [r for r in fit.get("preference", []) if r.get("candidate") == c]
        if rows and all(r.get("decision") != "label more" for r in rows):
            out.add(c)
    return out


def unit_weights(con: duckdb.DuckDBPyConnection, dimensions: list[str], candidates: list[str]) -> dict[tuple[str, str], float]:
    """How much (dimension, candidate) still needs labels: 1 while that candidate is undecided there
    (or no fit exists yet), 0.1 once decided (a little, to keep the estimate honest as it moves)."""
    fit = engine.latest_fit(con)
    decided = {(r["dimension"], r.get("candidate")) for r in (fit or {}).get("diffs", [])
               if r.get("decision") != "label more"}
    return {(d, c): (0.1 if (d, c) in decided else 1.0) for d in dimensions for c in candidates}


def stratified_inclusion(priority: np.ndarray, segments: np.ndarray, n: float, random_share: float,
                         base_weight: np.ndarray | None = None, clip: float | None = sampling.PRIORITY_CLIP) -> np.ndarray:
    """Inclusion probabilities summing to n, with at least MIN_PER_SEGMENT expected per segment;
    ``base_weight`` spreads the uniform share unevenly (a decided candidate's units get less)."""
    pi = sampling.inclusion_probabilities(priority, n, random_share, base_weight, clip)
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
    """Choose about ``n`` more items by the adaptive policy and queue them with their inclusion probabilities.

    One refill at a time per database (``store.db_lock(con, "queue")``, held from the priorities to
    the insert): a batch's probabilities are computed on the units no other batch holds, and its
    ``batch_id`` (max + 1) is unique. Concurrent callers wait and then choose from what is left."""
    with store.db_lock(con, "queue"):
        return _refill(con, n, seed, random_share)


def _refill(con: duckdb.DuckDBPyConnection, n: float, seed: int, random_share: float | None) -> Batch:
    s = store.get_settings(con)
    r = s["random_share"] if random_share is None else random_share
    if not 0 <= r <= 1:
        raise TiebreakError(f"random share {r} must be between 0 and 1")
    u = unit_priorities(con)
    policy, ids, segs, prio = u.policy, u.item_id, u.segment, u.priority
    batch_id = _next_batch_id(con)
    if not len(ids):
        return Batch(batch_id, policy, 0, 0.0, 0)
    pi, a = mixture_probabilities(u, n, r)
    rng = np.random.default_rng([seed, batch_id, 0x9E37])
    chosen = np.flatnonzero(rng.random(len(ids)) < pi)
    overlap = rng.random(len(chosen)) < s["overlap_share"]
    # Which part of the mixture chose the unit: the uniform share with probability (its part) / pi.
    uniform_part = np.minimum((1 - a) * n * u.base_weight[chosen] / u.base_weight.sum(), pi[chosen])
    reasons = np.where(rng.random(len(chosen)) * pi[chosen] < uniform_part, "random share",
                       "judges disagree" if policy == "disagreement" else "shrinks the interval most")
    import pandas as pd

    rows = pd.DataFrame({"item_id": ids[chosen], "candidate": u.candidate[chosen], "inclusion_prob": pi[chosen],
                         "policy": f"{policy}+random{1 - a:.2f}", "reason": reasons, "priority": prio[chosen],
                         "batch_id": batch_id, "overlap": overlap})
    _insert_queue(con, rows)
    return Batch(batch_id, policy, len(ids), float(pi.sum()), len(chosen))


def queue_filtered(con: duckdb.DuckDBPyConnection, n: int | None = None, segment: str | None = None,
                   topic: str | None = None, judge_fail: str | None = None, seed: int = 0,
                   candidate: str | None = None) -> Batch:
    """Queue a lead-chosen subset (a segment, a topic, items a judge fails), recorded as such: a simple
    random sample of ``n`` of the matching units (all when n is None), inclusion_prob = n / matching.
    Units pair the baseline with ``candidate``, or with every candidate when it is None. One
    batch at a time per database, as ``refill``."""
    with store.db_lock(con, "queue"):
        return _queue_filtered(con, n, segment, topic, judge_fail, seed, candidate)


def _queue_filtered(con, n, segment, topic, judge_fail, seed, candidate) -> Batch:
    import pandas as pd

    ensure_cells(con)
    s = store.get_settings(con)
    cands = unit_candidates(con)
    if candidate is not None and candidate not in cands:
        raise TiebreakError(f"unknown candidate {candidate!r}")
    where, params, what = [], [], []
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
    chosen_cands = [candidate] if candidate else cands
    store.register(con, "_unit_cands", pd.DataFrame({"candidate": pd.Series(chosen_cands, dtype=object),
                                                     "baseline": pd.Series([s["baseline"]] * len(chosen_cands),
                                                                           dtype=object)}))
    try:
        found = con.execute(
            f"SELECT d.item_id, u.candidate {_ELIGIBLE_UNITS} AND {' AND '.join(where)} ORDER BY d.item_id, u.candidate",
            [s["baseline"], store.first_candidate(con), *params]).fetchall()
    finally:
        con.unregister("_unit_cands")
    ids = np.array([r[0] for r in found], dtype=object)
    unit_cand = np.array([r[1] for r in found], dtype=object)
    batch_id = _next_batch_id(con)
    if not len(ids):
        return Batch(batch_id, "filtered", 0, 0.0, 0)
    k = len(ids) if n is None else min(n, len(ids))
    rng = np.random.default_rng([seed, batch_id, 0x7F4A])
    chosen = rng.choice(len(ids), k, replace=False)
    rows = pd.DataFrame({"item_id": ids[chosen], "candidate": unit_cand[chosen], "inclusion_prob": k / len(ids),
                         "policy": "filtered", "reason": "lead filter: " + ", ".join(what), "priority": 0.0,
                         "batch_id": batch_id, "overlap": rng.random(k) < s["overlap_share"]})
    _insert_queue(con, rows)
    return Batch(batch_id, "filtered", len(ids), float(k), k)


def lease_or_refill(con: duckdb.DuckDBPyConnection, annotator: str, n: float = 20, seed: int = 0,
                    session: users.Session | None = None) -> Lease | None:
    """What the Label page does on load: this SME's lease (their active one, else the next unit),
    refilling the queue by about ``n`` units when nothing is servable; None when nothing is left.

    Many SMEs signing in at once on a fresh project all find the queue empty: the refill happens
    under the queue lock and each caller first looks again, so the first one refills and the others
    are served from its batch (a refill per caller would stack batches and, before the lock,
    queued units twice). A page passes its ``session``: an ended one gets nothing and refills
    nothing (``users.SessionEnded``)."""
    lease = next_item(con, annotator, session=session)
    if lease is not None:
        return lease
    with store.db_lock(con, "queue"):
        lease = next_item(con, annotator, session=session)  # another session may have refilled meanwhile
        if lease is None:
            refill(con, n, seed=seed)
            lease = next_item(con, annotator, session=session)
    return lease


def _next_batch_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM queue").fetchone()[0])


def _insert_queue(con, rows) -> None:
    """Append chosen units (``rows``: item_id, candidate, inclusion_prob, policy, reason, priority,
    batch_id, overlap; no candidate column = the first candidate); a unit already queued is not
    queued twice."""
    first = store.first_candidate(con)
    if "candidate" not in rows:
        rows = rows.assign(candidate=first)
    store.register(con, "_new_queue", rows)
    try:
        with store.transaction(con):
            con.execute(
                """INSERT INTO queue (item_id, candidate, inclusion_prob, policy, reason, priority, batch_id, overlap,
                                      created_at)
                   SELECT n.item_id, n.candidate, n.inclusion_prob, n.policy, n.reason, n.priority, n.batch_id,
                          n.overlap, current_timestamp
                   FROM _new_queue n WHERE NOT EXISTS (
                       SELECT 1 FROM queue q WHERE q.item_id = n.item_id AND coalesce(q.candidate, ?) = n.candidate)""",
                [first])
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
        SELECT *, coalesce(candidate, ?) AS unit_cand FROM queue WHERE n_done < CASE WHEN overlap THEN 2 ELSE 1 END
        ORDER BY (n_done > 0) DESC, batch_id NULLS LAST, hash(queue_id), queue_id {head}),
    st AS (
        SELECT item_id, coalesce(candidate, ?) AS unit_cand,
               count(*) FILTER (WHERE ended_at IS NULL AND expires_at > ?) AS active,
               bool_or(annotator = ? AND (outcome IN ('labelled', 'skipped', 'flagged')
                                          OR (ended_at IS NULL AND expires_at > ?))) AS mine
        FROM leases WHERE item_id IN (SELECT item_id FROM cand) GROUP BY ALL),
    blocked AS (
        SELECT DISTINCT item_id FROM leases
        WHERE item_id IN (SELECT item_id FROM cand) AND outcome = 'flagged'
          AND lease_id NOT IN (SELECT lease_id FROM flag_reviews WHERE decision = 'return'))
    SELECT q.item_id, q.inclusion_prob, q.reason, q.priority, q.overlap, q.queue_id, q.unit_cand
    FROM cand q LEFT JOIN st USING (item_id, unit_cand)
    WHERE NOT coalesce(st.mine, FALSE) AND q.item_id NOT IN (SELECT item_id FROM blocked)
      AND q.n_done + coalesce(st.active, 0) < CASE WHEN q.overlap THEN 2 ELSE 1 END
    ORDER BY (q.n_done > 0) DESC, q.batch_id NULLS LAST, hash(q.queue_id), q.queue_id
"""
# A flag blocks every unit of the item (it may concern the prompt); "mine" and the active leases are
# per unit: an SME who labelled (item, candidate 1) may be served (item, candidate 2).
HEAD = 200
SERVABLE_HEAD = _SERVABLE_TEMPLATE.format(head=f"LIMIT {HEAD}")
SERVABLE = _SERVABLE_TEMPLATE.format(head="")


def _params(con, annotator: str, now: datetime, first: str | None = None) -> list:
    first = store.first_candidate(con) if first is None else first
    return [first, first, now, annotator, now]


def _first_servable(con, annotator: str, now: datetime, first: str | None = None):
    params = _params(con, annotator, now, first)
    row = con.execute(SERVABLE_HEAD + " LIMIT 1", params).fetchone()
    if row is None:
        row = con.execute(SERVABLE + " LIMIT 1", params).fetchone()
    return row


_SWEEP_EVERY_S = 60.0
_last_sweep = [0.0]


def servable_count(con: duckdb.DuckDBPyConnection, annotator: str = "", now: datetime | None = None) -> int:
    """How many items this annotator could still be served (a count, not the list)."""
    now = now or _now()
    return con.execute(f"SELECT count(*) FROM ({SERVABLE})", _params(con, annotator, now)).fetchone()[0]


def servable(con: duckdb.DuckDBPyConnection, annotator: str = "", limit: int = 10, now: datetime | None = None) -> list[dict]:
    """The next items this annotator would be served, in order (second-opinion overlap items first)."""
    now = now or _now()
    rows = con.execute(SERVABLE + " LIMIT ?", [*_params(con, annotator, now), limit]).fetchall()
    return [{"item_id": r[0], "inclusion_prob": r[1], "reason": r[2], "priority": r[3], "overlap": r[4],
             "candidate": r[6]} for r in rows]


@dataclass
class Lease:
    lease_id: int
    item_id: str
    annotator: str
    leased_at: datetime
    expires_at: datetime
    candidate: str | None = None  # the unit's candidate (never shown to the SME)


def _check_labeller(con, session: users.Session | None, annotator: str) -> None:
    """A page's write: its session must still be valid, be the annotator's, and allow labelling
    (``users.require_session``); None is a trusted caller (the CLI, a simulation)."""
    if session is None:
        return
    if session.user != annotator:
        raise users.SessionEnded(f"this page is signed in as {session.user}, not {annotator}")
    users.require_session(con, session, users.LABELLERS)


def next_item(con: duckdb.DuckDBPyConnection, annotator: str, now: datetime | None = None,
              lease_minutes: float | None = None, reuse_active: bool = True,
              session: users.Session | None = None) -> Lease | None:
    """Lease the next item to ``annotator``; None when nothing is left. With ``reuse_active`` an
    active lease of theirs is returned first (a reloaded page shows the same item again). A page
    passes its ``session``: an ended one gets no item (``users.SessionEnded``)."""
    if not annotator:
        raise TiebreakError("an annotator name is required")
    given = now
    with _LEASE_LOCK:
        _check_labeller(con, session, annotator)
        now = given or _now()  # stamped after the lock: lease times follow the order of the leases
        s = store.get_settings(con)  # once per lease: serving is on every SME's hot path
        first = store.first_candidate(con, s)
        mine = con.execute(
            """SELECT lease_id, item_id, leased_at, expires_at, coalesce(candidate, ?) FROM leases
               WHERE annotator = ? AND ended_at IS NULL AND expires_at > ? ORDER BY lease_id LIMIT 1""",
            [first, annotator, now]).fetchone() if reuse_active else None
        if mine:
            return Lease(mine[0], mine[1], annotator, mine[2], mine[3], mine[4])
        minutes = s["lease_minutes"] if lease_minutes is None else lease_minutes
        with store.transaction(con):
            _check_labeller(con, session, annotator)  # again, in the transaction that writes the lease
            # record expiries now and then (serving already ignores expired leases)
            if given is not None or time.monotonic() - _last_sweep[0] > _SWEEP_EVERY_S:
                con.execute("UPDATE leases SET ended_at = expires_at, outcome = 'expired' "
                            "WHERE ended_at IS NULL AND expires_at <= ?", [now])
                _last_sweep[0] = time.monotonic()
            row = _first_servable(con, annotator, now, first)
            if row is None:
                return None
            expires = now + timedelta(minutes=minutes)
            lease_id = con.execute(
                "INSERT INTO leases (item_id, candidate, annotator, leased_at, expires_at) VALUES (?, ?, ?, ?, ?) "
                "RETURNING lease_id", [row[0], row[6], annotator, now, expires]).fetchone()[0]
        return Lease(lease_id, row[0], annotator, now, expires, row[6])


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


def skip(con: duckdb.DuckDBPyConnection, lease_id: int, annotator: str, reason: str, now: datetime | None = None,
         session: users.Session | None = None) -> None:
    """Return the item to the queue (for other SMEs) and record the skip and its reason."""
    if not reason:
        raise TiebreakError("a skip needs a reason")
    with _LEASE_LOCK, store.transaction(con):
        _check_labeller(con, session, annotator)
        _end_lease(con, lease_id, annotator, "skipped", reason, now or _now())


def flag(con: duckdb.DuckDBPyConnection, lease_id: int, annotator: str, reason: str, now: datetime | None = None,
         session: users.Session | None = None) -> None:
    """Send the item to the leads' review list; it is not served again until a lead returns it."""
    if not reason:
        raise TiebreakError("a flag needs a reason")
    with _LEASE_LOCK, store.transaction(con):
        _check_labeller(con, session, annotator)
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
           left_model: str | None = None, now: datetime | None = None, source: str = "app",
           session: users.Session | None = None) -> int:
    """Write one SME's rating of a leased unit (item, candidate) in one transaction: a label per
    (model, dimension) of the two outputs shown (the baseline's and that candidate's), ONE pairwise
    preference for that candidate, and the lease closed. A late submission (lease expired) is still
    kept: a rating is never lost. A baseline verdict identical to this SME's latest one on the same
    output, given in a unit of another candidate, is not written again (it adds nothing: the newest
    label per SME counts). Returns the number of label rows written. A page passes its ``session``:
    an ended one (or a role that may not label) writes nothing (``users.SessionEnded``)."""
    s = store.get_settings(con)
    first = store.first_candidate(con, s)
    with _LEASE_LOCK, store.transaction(con):
        _check_labeller(con, session, annotator)
        now = now or _now()
        row = con.execute("SELECT item_id, annotator, outcome, coalesce(candidate, ?) FROM leases WHERE lease_id = ?",
                          [first, lease_id]).fetchone()
        if row is None:
            raise TiebreakError(f"no lease {lease_id}")
        item_id, owner, outcome, cand = row
        if owner != annotator:
            raise TiebreakError(f"lease {lease_id} belongs to {owner}, not {annotator}")
        if outcome == "labelled":
            raise TiebreakError(f"lease {lease_id} was already submitted")
        models = {m for (m,) in con.execute("SELECT model FROM outputs WHERE item_id = ?", [item_id]).fetchall()}
        shown = {s["baseline"], cand}
        latest = _latest_baseline_verdicts(con, item_id, s["baseline"], annotator, first)
        rows = []
        for (m, dim), (verdict, kind) in verdicts.items():
            if m not in models or dim not in s["dimensions"]:
                raise TiebreakError(f"unknown model/dimension {m}/{dim} for item {item_id}")
            if m not in shown:
                raise TiebreakError(f"model {m} was not shown in lease {lease_id}")
            if m == s["baseline"] and _same_as_other_unit(latest.get(dim), bool(verdict), kind, cand):
                continue
            side = None if left_model is None else ("left" if m == left_model else "right")
            rows.append([item_id, m, dim, bool(verdict), kind, annotator, now, note, source, duration_ms, lease_id, side])
        if rows:
            con.execute(
                "INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, note, source, "
                "duration_ms, lease_id, side) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows)),
                [v for r in rows for v in r])
        if preference is not None:
            if preference not in ("candidate", "baseline", "tie"):
                raise TiebreakError(f"preference {preference!r} must be candidate, baseline or tie")
            if cand is not None:
                con.execute(
                    """INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, strength, annotator,
                           created_at, note, source, duration_ms, lease_id, left_model)
                       VALUES (?, ?, ?, 'overall', ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [item_id, s["baseline"], cand, preference, strength, annotator, now, note, source, duration_ms,
                     lease_id, left_model])
        con.execute("UPDATE leases SET ended_at = ?, outcome = 'labelled' WHERE lease_id = ?", [now, lease_id])
        con.execute(
            """UPDATE queue SET n_done = (SELECT count(DISTINCT annotator) FROM leases
                                          WHERE item_id = ? AND coalesce(candidate, ?) = ? AND outcome = 'labelled')
               WHERE item_id = ? AND coalesce(candidate, ?) = ?""", [item_id, first, cand, item_id, first, cand])
    return len(rows)


def _latest_baseline_verdicts(con, item_id: str, baseline: str, annotator: str,
                              first: str | None) -> dict[str, tuple]:
    """This SME's latest (verdict, kind, unit's candidate) on the item's baseline output, per
    dimension: one query for the whole submit."""
    rows = con.execute(
        """SELECT dimension, verdict, kind, cand FROM (
               SELECT l.dimension, l.verdict, l.kind, coalesce(e.candidate, ?) AS cand,
                      row_number() OVER (PARTITION BY l.dimension ORDER BY l.created_at DESC, l.label_id DESC) AS rn
               FROM labels l LEFT JOIN leases e USING (lease_id)
               WHERE l.item_id = ? AND l.model = ? AND l.annotator = ?) WHERE rn = 1""",
        [first, item_id, baseline, annotator]).fetchall()
    return {r[0]: r[1:] for r in rows}


def _same_as_other_unit(latest: tuple | None, verdict: bool, kind: str | None, cand: str) -> bool:
    """Whether this SME's latest verdict on the output (``latest``: verdict, kind, unit's candidate)
    is this one, given in a unit of another candidate."""
    return latest is not None and latest[2] != cand and bool(latest[0]) == verdict and latest[1] == kind
