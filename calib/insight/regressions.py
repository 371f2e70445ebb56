"""Regressions and improvements a lead reads before signing (issue 15, first part).

- ``sme_flips``: SME-confirmed flips per dimension. An output's SME verdict is the majority over
  annotators of each annotator's latest label (ties count as fail, the cautious side); a
  regression is an item the baseline passed and the candidate failed, an improvement the reverse.
- ``flip_rates``: counts and rates of those flips per segment and topic (over items labelled for
  both models).
- ``likely_regressions``: for unlabelled items, P(regression) = p_base_cell * (1 - p_cand_cell)
  from the fast fit's posterior-mean cell pass probabilities. This ASSUMES the two outputs'
  verdicts are independent given their cells (the item effect shared by both models is ignored),
  so it ranks items; it is not a calibrated per-item probability.
- ``queue_likely_regressions``: a lead-chosen Poisson batch with pi proportional to P(regression)
  (capped at 1) and the honest pi recorded, so design-weighted estimates stay valid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calib.data import store
from calib.data.cells import ensure_cells
from calib.review import queue
from calib.stats import design, engine, model

VERDICTS = """
    SELECT item_id, model, avg(verdict::INT) > 0.5 AS passed, string_agg(note, ' | ') AS notes
    FROM (SELECT item_id, model, verdict, note FROM labels WHERE dimension = ?
          QUALIFY row_number() OVER (PARTITION BY item_id, model, annotator
                                     ORDER BY created_at DESC, label_id DESC) = 1)
    GROUP BY item_id, model
"""


def _models(con, candidate: str | None) -> tuple[str, str]:
    s = store.get_settings(con)
    return s["baseline"], candidate or s["candidates"][0]


def sme_flips(con, dimension: str, candidate: str | None = None) -> pd.DataFrame:
    """Items where the SME verdicts differ between the models: one row per item with ``flip``
    (regression / improvement), both outputs, the SMEs' notes, segment and topic."""
    base, cand = _models(con, candidate)
    return con.execute(
        f"""WITH v AS ({VERDICTS})
            SELECT b.item_id, i.segment, i.topic, ?::VARCHAR AS dimension,
                   CASE WHEN b.passed THEN 'regression' ELSE 'improvement' END AS flip,
                   ob.output AS baseline_output, oc.output AS candidate_output,
                   b.notes AS baseline_notes, c.notes AS candidate_notes
            FROM v b JOIN v c ON c.item_id = b.item_id AND b.model = ? AND c.model = ?
            JOIN items i ON i.item_id = b.item_id
            LEFT JOIN outputs ob ON ob.item_id = b.item_id AND ob.model = b.model
            LEFT JOIN outputs oc ON oc.item_id = c.item_id AND oc.model = c.model
            WHERE b.passed <> c.passed ORDER BY flip DESC, b.item_id""",
        [dimension, dimension, base, cand]).fetch_df()


def flip_summary(con, dimension: str, candidate: str | None = None) -> dict:
    """Counts for a headline: items labelled (by SMEs) for both models, regressions, improvements."""
    base, cand = _models(con, candidate)
    n, reg, imp = con.execute(
        f"""WITH v AS ({VERDICTS})
            SELECT count(*), count(*) FILTER (WHERE b.passed AND NOT c.passed),
                   count(*) FILTER (WHERE c.passed AND NOT b.passed)
            FROM v b JOIN v c ON c.item_id = b.item_id AND b.model = ? AND c.model = ?""",
        [dimension, base, cand]).fetchone()
    return {"dimension": dimension, "baseline": base, "candidate": cand, "items": int(n),
            "regressions": int(reg), "improvements": int(imp)}


def flip_rates(con, dimension: str, by: str = "segment", candidate: str | None = None) -> pd.DataFrame:
    """Per segment or topic: items labelled for both models, regressions, improvements and their rates."""
    if by not in ("segment", "topic"):
        raise ValueError("by must be segment or topic")
    base, cand = _models(con, candidate)
    return con.execute(
        f"""WITH v AS ({VERDICTS})
            SELECT i.{by} AS {by}, count(*) AS items,
                   count(*) FILTER (WHERE b.passed AND NOT c.passed) AS regressions,
                   count(*) FILTER (WHERE c.passed AND NOT b.passed) AS improvements,
                   regressions / count(*) AS regression_rate, improvements / count(*) AS improvement_rate
            FROM v b JOIN v c ON c.item_id = b.item_id AND b.model = ? AND c.model = ?
            JOIN items i ON i.item_id = b.item_id GROUP BY 1 ORDER BY 1""",
        [dimension, base, cand]).fetch_df()


def likely_regressions(con, dimension: str, candidate: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Unlabelled items ranked by P(regression) = p_base_cell * (1 - p_cand_cell) (see module doc)."""
    base, cand = _models(con, candidate)
    ensure_cells(con)
    data, _lab, _f = engine.load_dimension(con, dimension, [base, cand])
    post = model.fit_laplace(data, seed=seed)
    p = design.cell_probabilities(data, model.eta_draws(data, post))
    cell_p = pd.DataFrame({"cell_id": data.cell_ids, "p": p})
    store.register(con, "_cell_p", cell_p)
    try:
        df = con.execute(
            """SELECT ob.item_id, i.segment, i.topic, pb.p AS p_baseline, pc.p AS p_candidate,
                      pb.p * (1 - pc.p) AS p_regression
               FROM output_cells ob JOIN output_cells oc
                 ON oc.item_id = ob.item_id AND ob.model = ? AND oc.model = ?
                    AND ob.dimension = ? AND oc.dimension = ob.dimension
               JOIN _cell_p pb ON pb.cell_id = ob.cell_id JOIN _cell_p pc ON pc.cell_id = oc.cell_id
               JOIN items i ON i.item_id = ob.item_id
               WHERE ob.item_id NOT IN (SELECT item_id FROM labels WHERE dimension = ?)
               ORDER BY p_regression DESC, ob.item_id""",
            [base, cand, dimension, dimension]).fetch_df()
    finally:
        con.unregister("_cell_p")
    return df


def queue_likely_regressions(con, dimension: str, k: int, candidate: str | None = None, seed: int = 0) -> queue.Batch:
    """Queue about ``k`` likely regressions for SMEs: Poisson sampling with pi = min(1, c * P(regression)),
    c chosen so sum(pi) = k over the not-yet-queued unlabelled items; each pi is recorded. One batch
    at a time per database, as ``queue.refill`` (its own batch id, no unit queued twice)."""
    with store.db_lock(con, "queue"):
        return _queue_likely_regressions(con, dimension, k, candidate, seed)


def _queue_likely_regressions(con, dimension: str, k: int, candidate: str | None, seed: int) -> queue.Batch:
    df = likely_regressions(con, dimension, candidate, seed)
    _, cand = _models(con, candidate)
    queued = {r[0] for r in con.execute("SELECT item_id FROM queue WHERE coalesce(candidate, ?) = ?",
                                        [store.first_candidate(con), cand]).fetchall()}
    df = df[~df["item_id"].isin(queued)]
    batch_id = queue._next_batch_id(con)
    if df.empty or k <= 0:
        return queue.Batch(batch_id, "filtered", len(df), 0.0, 0)
    w = np.clip(df["p_regression"].to_numpy(float), 1e-9, None)
    pi = _capped_pi(w, min(k, len(w)))
    rng = np.random.default_rng([seed, batch_id, 0x5E6A])
    chosen = rng.random(len(w)) < pi
    s = store.get_settings(con)
    rows = pd.DataFrame({"item_id": df["item_id"].to_numpy(object)[chosen], "candidate": cand, "inclusion_prob": pi[chosen],
                         "policy": "filtered", "reason": f"lead: likely regressions ({dimension})",
                         "priority": w[chosen], "batch_id": batch_id,
                         "overlap": rng.random(int(chosen.sum())) < s["overlap_share"]})
    queue._insert_queue(con, rows)
    return queue.Batch(batch_id, "filtered", len(w), float(pi.sum()), int(chosen.sum()))


def _capped_pi(w: np.ndarray, k: float) -> np.ndarray:
    """pi proportional to w with sum k, capped at 1 (the excess is redistributed)."""
    pi = np.zeros_like(w)
    free = np.ones(len(w), bool)
    for _ in range(len(w)):
        rest = k - (~free).sum()
        pi[free] = rest * w[free] / w[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            break
        pi[over] = 1.0
        free &= ~over
    return np.clip(pi, 0, 1)


def queued_batch(con, batch_id: int) -> pd.DataFrame:
    """What a queued batch recorded: each item with its inclusion probability and reason."""
    return con.execute(
        """SELECT q.item_id, i.segment, i.topic, q.inclusion_prob, q.reason FROM queue q
           JOIN items i USING (item_id) WHERE q.batch_id = ? ORDER BY q.inclusion_prob DESC, q.item_id""",
        [batch_id]).fetch_df()


def pairwise_baseline_preferred(con, candidate: str | None = None, min_strength: int = 0) -> pd.DataFrame:
    """Items where an SME preferred the baseline (latest label per annotator), strongest first;
    ``min_strength`` 2 keeps "much better" only (1 is "slightly better")."""
    base, cand = _models(con, candidate)
    return con.execute(
        """SELECT p.item_id, i.segment, i.topic, p.dimension, p.strength, p.annotator, p.note
           FROM (SELECT * FROM pair_labels WHERE baseline = ? AND candidate = ?
                 QUALIFY row_number() OVER (PARTITION BY item_id, dimension, annotator
                                            ORDER BY created_at DESC, label_id DESC) = 1) p
           JOIN items i USING (item_id) WHERE p.preference = 'baseline' AND coalesce(p.strength, 0) >= ?
           ORDER BY p.strength DESC NULLS LAST, p.item_id""", [base, cand, min_strength]).fetch_df()
