"""Cells: the population aggregated by (model, segment, binned standardised judge scores).

Two builders give the same ``CellData``: ``cells_from_arrays`` (numpy, item-level arrays; used by
tests and by benchmarks on external data) and ``ensure_cells`` (SQL in DuckDB, for millions of
outputs: the cell tables are rebuilt once per data version, a fingerprint of the outputs and judge
tables; ``calib.stats.engine`` loads them for a fit). Judge scores are put on a common scale, z = (score - mean) / sd over all outputs of the
judge and dimension, and rounded to ``BIN`` standard deviations; a missing score is z = 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
from scipy import stats
from scipy.special import ndtri

from calib.data import phase1, store


BIN = 0.1  # bin width in standard deviations of each judge's score
PAIR_BIN = 0.25


@dataclass
class CellData:
    """One dimension's population cells and labels (arrays indexed by cell c or observation o)."""

    models: list[str]
    segments: list[str]
    judges: list[str]
    cell_model: np.ndarray  # (C,) int
    cell_segment: np.ndarray  # (C,) int
    cell_x: np.ndarray  # (C, J) standardised, binned judge scores
    cell_n: np.ndarray  # (C,) outputs in the population
    cell_lab_items: np.ndarray  # (C,) labelled outputs
    cell_lab_y: np.ndarray  # (C,) sum over labelled outputs of their mean verdict
    obs_cell: np.ndarray  # (K,) labelled cells (likelihood)
    obs_k: np.ndarray  # (K,) passes
    obs_n: np.ndarray  # (K,) labels
    cell_ids: np.ndarray | None = None  # (C,) the cells' ids in DuckDB's model_cells, when loaded from there
    # (C,) the population outputs each cell stands for in a two-phase design: its judged outputs
    # expanded by 1 / pi1 (``calib.data.phase1``; ``model_cells.n_pop``); None in a census (= cell_n)
    cell_pop: np.ndarray | None = None

    @property
    def n_params(self) -> int:
        M, S, J = len(self.models), len(self.segments), len(self.judges)
        return M + J + (M - 1) * J + M * (S - 1)

    @property
    def n_labels(self) -> int:
        return int(self.obs_n.sum())


@dataclass
class PairData:
    """Pairwise cells for one (baseline, candidate, dimension): features, population, labels."""

    features: list[str]
    cell_x: np.ndarray  # (C, F)
    cell_n: np.ndarray  # (C,)
    cell_lab_items: np.ndarray  # (C,)
    cell_lab_win: np.ndarray  # (C,) sum of labelled items' win score (1 candidate, 0.5 tie, 0 baseline)
    obs_cell: np.ndarray  # (K,)
    obs_y: np.ndarray  # (K,) 0 baseline better, 1 tie, 2 candidate better
    # per labelled item (for the design-consistent estimate), when loaded from a project
    item_id: np.ndarray | None = None  # (I,)
    item_cell: np.ndarray | None = None  # (I,)
    item_win: np.ndarray | None = None  # (I,) mean over SMEs of 1 / 0.5 / 0
    item_counts: np.ndarray | None = None  # (I, 3) the item's SME preferences: baseline, tie, candidate
    # a two-phase design (``calib.data.phase1``): each cell's judged pairs expanded by 1 / pi1
    # (``pair_cells.n_pop``) and each labelled item's 1 / pi1; None in a census
    cell_pop: np.ndarray | None = None  # (C,)
    item_w1: np.ndarray | None = None  # (I,)


def normal_scores(scores: np.ndarray) -> np.ndarray:
    """Column-wise rank-based normal scores (ties share their mid-rank; NaN -> 0)."""
    scores = np.asarray(scores, float)
    z = np.zeros_like(scores)
    for j in range(scores.shape[1]):
        ok = ~np.isnan(scores[:, j])
        r = stats.rankdata(scores[ok, j], method="average")
        z[ok, j] = stats.norm.ppf(r / (ok.sum() + 1))
    return z


def binned(z: np.ndarray, width: float = BIN) -> np.ndarray:
    return np.round(z / width) * width if width else z


def cells_from_arrays(
    models: list[str], segments: list[str], judges: list[str],
    out_model: np.ndarray, out_segment: np.ndarray, out_z: np.ndarray,
    lab_out: np.ndarray, lab_y: np.ndarray, width: float = BIN, return_index: bool = False,
) -> CellData | tuple[CellData, np.ndarray]:
    """Aggregate outputs into cells; ``lab_out``/``lab_y`` are the output index and verdict of each label.

    ``width=0`` keeps exact scores (one cell per distinct score vector), for the binning test.
    ``return_index`` also returns each output's cell index.
    """
    x = binned(out_z, width)
    key = np.column_stack([out_model, out_segment, x])
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    C = len(uniq)
    cell_n = np.bincount(inv, minlength=C)
    lab_out = np.asarray(lab_out, dtype=np.int64)
    lab_y = np.asarray(lab_y, dtype=float)
    # per labelled output: mean verdict over its labels
    outs, out_inv = np.unique(lab_out, return_inverse=True)
    mean_y = np.bincount(out_inv, weights=lab_y) / np.bincount(out_inv)
    cell_lab_items = np.bincount(inv[outs], minlength=C) if len(outs) else np.zeros(C, int)
    cell_lab_y = np.bincount(inv[outs], weights=mean_y, minlength=C) if len(outs) else np.zeros(C)
    lab_cells = inv[lab_out]
    obs_cell, obs_inv = np.unique(lab_cells, return_inverse=True)
    obs_k = np.bincount(obs_inv, weights=lab_y).astype(np.int64) if len(lab_cells) else np.zeros(0, np.int64)
    obs_n = np.bincount(obs_inv).astype(np.int64) if len(lab_cells) else np.zeros(0, np.int64)
    data = CellData(
        models=list(models), segments=list(segments), judges=list(judges),
        cell_model=uniq[:, 0].astype(np.int64), cell_segment=uniq[:, 1].astype(np.int64),
        cell_x=uniq[:, 2:].astype(float), cell_n=cell_n.astype(np.int64),
        cell_lab_items=cell_lab_items.astype(np.int64), cell_lab_y=cell_lab_y.astype(float),
        obs_cell=obs_cell.astype(np.int64), obs_k=obs_k, obs_n=obs_n,
    )
    return (data, inv) if return_index else data


def pair_cells_from_arrays(
    features: list[str], item_x: np.ndarray, lab_item: np.ndarray, lab_pref: np.ndarray, width: float = PAIR_BIN,
) -> PairData:
    """Aggregate items into pairwise cells; ``lab_pref`` is 0 baseline better, 1 tie, 2 candidate better."""
    x = binned(item_x, width)
    uniq, inv = np.unique(x, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    C = len(uniq)
    lab_item = np.asarray(lab_item, dtype=np.int64)
    lab_pref = np.asarray(lab_pref, dtype=np.int64)
    items, item_inv = np.unique(lab_item, return_inverse=True)
    win = np.bincount(item_inv, weights=lab_pref / 2.0) / np.maximum(np.bincount(item_inv), 1) if len(items) else np.zeros(0)
    return PairData(
        features=list(features), cell_x=uniq.astype(float), cell_n=np.bincount(inv, minlength=C).astype(np.int64),
        cell_lab_items=np.bincount(inv[items], minlength=C).astype(np.int64) if len(items) else np.zeros(C, np.int64),
        cell_lab_win=np.bincount(inv[items], weights=win, minlength=C) if len(items) else np.zeros(C),
        obs_cell=inv[lab_item].astype(np.int64), obs_y=lab_pref,
    )


# --------------------------------------------------------------------------- cells in DuckDB


def fingerprint(con) -> str:
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    s = store.get_settings(con)
    return json.dumps([one("SELECT count(*) FROM outputs"), one("SELECT count(*) FROM judge_scores"),
                       one("SELECT count(*) FROM items"), one("SELECT count(*) FROM pair_judge_prefs"),
                       # the judged sample: an extension (new batch) or an imported sample changes the cells
                       *((0, 0) if phase1.is_census(con) else (one("SELECT count(*) FROM judge_sample"),
                                                                  one("SELECT max(batch) FROM judge_sample"))),
                       s["baseline"], s["candidates"], BIN, PAIR_BIN, 6])


def ensure_cells(con: duckdb.DuckDBPyConnection) -> bool:
    """Rebuild the cell tables if the data changed since they were built, and look up the cells of
    newly labelled outputs; True when the cells were rebuilt.

    Safe under concurrent callers (many sessions' first page loads at once): the look is repeated
    under ``store.db_lock(con, "cells")``, so one thread builds and the others find them built
    (before, two builds raced to a primary-key conflict on ``cache_state`` or doubled ``label_cells``)."""
    if _cells_current(con, fingerprint(con)):
        return False  # the common case: no lock taken
    with store.db_lock(con, "cells"):
        fp = fingerprint(con)
        row = con.execute("SELECT value FROM cache_state WHERE key = 'cells'").fetchone()
        rebuilt = not (row and row[0] == fp)
        if rebuilt:
            with store.transaction(con):
                _build_cells(con)
                con.execute("INSERT OR REPLACE INTO cache_state VALUES ('cells', ?)", [fp])
        if _new_labelled_outputs(con):
            with store.transaction(con):
                con.execute(
                    """INSERT INTO label_cells
                       SELECT c.item_id, c.model, c.dimension, c.cell_id, c.f FROM output_cells c
                       SEMI JOIN (SELECT DISTINCT item_id, model FROM labels
                                  EXCEPT SELECT item_id, model FROM label_cells) n
                         ON c.item_id = n.item_id AND c.model = n.model""")
    return rebuilt


def _new_labelled_outputs(con) -> int:
    """How many labelled outputs have no row in ``label_cells`` yet."""
    return con.execute(
        """SELECT count(*) FROM (SELECT DISTINCT item_id, model FROM labels
                                 EXCEPT SELECT item_id, model FROM label_cells)""").fetchone()[0]


def _cells_current(con, fp: str) -> bool:
    row = con.execute("SELECT value FROM cache_state WHERE key = 'cells'").fetchone()
    return bool(row and row[0] == fp) and not _new_labelled_outputs(con)


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _judged_sample(con) -> bool:
    """Set up the scores the cells are built from: the temp view ``_js`` (the judge scores of the
    judged sample's items; every score in a census) and, with a sample, the temp table ``_pi``
    (item_id, w = 1 / pi1). True when a phase-1 sample is recorded. Scores of items outside the
    sample (stray scores, e.g. from a run before the sample was drawn) are ignored: they are no
    probability sample, and mixing them in would bias the cells toward whatever was judged."""
    if phase1.is_census(con):
        con.execute("CREATE OR REPLACE TEMP VIEW _js AS SELECT * FROM judge_scores")
        return False
    store.register(con, "_pi_df", phase1.item_inclusion(con)[["item_id", "pi1"]])
    con.execute("CREATE OR REPLACE TEMP TABLE _pi AS SELECT item_id, 1.0 / pi1 AS w FROM _pi_df")
    con.unregister("_pi_df")
    con.execute("CREATE OR REPLACE TEMP VIEW _js AS SELECT s.* FROM judge_scores s SEMI JOIN _pi USING (item_id)")
    return True


def _build_cells(con) -> None:
    for t in ("judge_scale", "judge_naive", "model_cells", "output_cells", "pair_cells", "item_pair_cells",
              "item_disagreement", "label_cells"):
        con.execute(f"DELETE FROM {t}")
    sampled = _judged_sample(con)
    # each output's population weight: 1 / pi1 of its item (1 in a census)
    w_sql, w_join = ("_pi.w", "JOIN _pi USING (item_id)") if sampled else ("1.0", "")
    con.execute(
        """INSERT INTO judge_scale
           SELECT judge, dimension, avg(score), coalesce(nullif(stddev_pop(score), 0), 1), min(score), max(score),
                  CASE WHEN max(score) <= 1 THEN 0.5 ELSE min(score) + 0.75 * (max(score) - min(score)) END
           FROM _js GROUP BY judge, dimension"""
    )
    # the judges' naive pass rates, of the population (weighted by 1 / pi1 with a judged sample)
    con.execute(
        f"""INSERT INTO judge_naive
           SELECT s.judge, s.dimension, s.model,
                  sum({w_sql} * CASE WHEN s.score >= k.threshold THEN 1.0 ELSE 0.0 END) / sum({w_sql})
           FROM _js s JOIN judge_scale k USING (judge, dimension) {w_join} GROUP BY ALL"""
    )
    # Common scale: rank-based normal scores, computed on the distinct scores (a small table) in numpy,
    # since DuckDB has no inverse normal CDF; ties share their mid-rank.
    ns = con.execute(
        "SELECT judge, dimension, score, count(*) AS cnt FROM _js GROUP BY ALL ORDER BY judge, dimension, score"
    ).fetch_df()
    if len(ns):
        grp = ns.groupby(["judge", "dimension"], sort=False)["cnt"]
        before = grp.cumsum() - ns["cnt"]
        total = grp.transform("sum")
        ns["z"] = ndtri((before + (ns["cnt"] + 1) / 2) / (total + 1))
    else:
        ns["z"] = []
    store.register(con, "_normal_scores", ns[["judge", "dimension", "score", "z"]])
    dims = [r[0] for r in con.execute("SELECT DISTINCT dimension FROM judge_scale ORDER BY 1").fetchall()]
    for dim in dims:
        judges = [r[0] for r in con.execute(
            "SELECT judge FROM judge_scale WHERE dimension = ? ORDER BY judge", [dim]).fetchall()]
        cols = ", ".join(
            f"coalesce(max(b) FILTER (WHERE judge = {_q(j)}), 0) AS b{i}" for i, j in enumerate(judges))
        bcols = ", ".join(f"b{i}" for i in range(len(judges)))
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _w AS
                SELECT w.*, i.segment, {w_sql} AS wt,
                       dense_rank() OVER (ORDER BY w.model, i.segment, {bcols}) - 1 AS cell_id
                FROM (SELECT item_id, model, {cols}, avg(pass) AS f FROM (
                        SELECT s.item_id, s.model, s.judge,
                               round(z.z / {BIN})::INTEGER AS b,
                               CASE WHEN s.score >= k.threshold THEN 1.0 ELSE 0.0 END AS pass
                        FROM _js s JOIN judge_scale k USING (judge, dimension)
                        JOIN _normal_scores z USING (judge, dimension, score)
                        WHERE s.dimension = {_q(dim)})
                      GROUP BY item_id, model) w
                JOIN items i USING (item_id) {w_join}"""
        )
        # sorted by item so look-ups of a few labelled items are pruned by DuckDB's zone maps
        con.execute(f"INSERT INTO output_cells SELECT item_id, model, {_q(dim)}, cell_id, f FROM _w ORDER BY item_id, model")
        xlist = "[" + ", ".join(f"b{i} * {BIN}" for i in range(len(judges))) + "]"
        con.execute(
            f"""INSERT INTO model_cells
                SELECT {_q(dim)}, cell_id, any_value(model), any_value(segment), any_value({xlist}::DOUBLE[]),
                       count(*), sum(f), sum(wt)
                FROM _w GROUP BY cell_id"""
        )
        con.execute("DROP TABLE _w")
    con.unregister("_normal_scores")
    _build_pair_cells(con, dims, sampled)
    _build_disagreement(con, sampled)
    con.execute("DROP VIEW _js")
    if sampled:
        con.execute("DROP TABLE _pi")


def _build_disagreement(con, sampled: bool = False) -> None:
    """Per item: spread of the judges on the same output (sd of their normal scores, averaged over
    outputs and dimensions) plus |consensus(candidate) - consensus(baseline)| averaged over
    dimensions (a possible regression), for the candidate whose judges' view differs most from the
    baseline's (with several candidates; the queue computes it per (item, candidate) unit).

    With a judged sample (``sampled``) only its items are listed: the SME queue's units come from
    this table, so phase 2 draws from the judged items only."""
    s = store.get_settings(con)
    base = s["baseline"]
    con.execute(
        """INSERT INTO item_disagreement
            WITH cons AS (SELECT oc.item_id, oc.dimension, oc.model, avg(list_avg(mc.x)) AS v
                          FROM output_cells oc JOIN model_cells mc USING (dimension, cell_id) GROUP BY ALL),
                 per_cand AS (SELECT c.item_id, c.model, avg(abs(c.v - b.v)) AS d
                              FROM cons c JOIN cons b ON b.item_id = c.item_id AND b.dimension = c.dimension
                                                     AND b.model = ?
                              WHERE list_contains(?, c.model) GROUP BY ALL)
            SELECT w.item_id, i.segment, i.topic, w.within_judges, coalesce(b.between_models, 0),
                   w.within_judges + coalesce(b.between_models, 0)
            FROM (SELECT oc.item_id, avg(CASE WHEN len(mc.x) > 1 THEN sqrt(list_var_pop(mc.x)) ELSE 0 END) AS within_judges
                  FROM output_cells oc JOIN model_cells mc USING (dimension, cell_id) GROUP BY oc.item_id) w
            JOIN items i USING (item_id)
            LEFT JOIN (SELECT item_id, max(d) AS between_models FROM per_cand GROUP BY item_id) b USING (item_id)""",
        [base or "", list(s["candidates"])])
    # Items with no pointwise score (a pairwise-only or not yet judged project): the pairwise judges'
    # disagreement as the cold-start priority, i.e. their spread plus how close their mean is to a tie
    # (0.5 for an item no judge compared), so every item with two outputs can be queued.
    con.execute(
        f"""INSERT INTO item_disagreement
            SELECT i.item_id, i.segment, i.topic, coalesce(p.spread, 0), coalesce(p.closeness, 0.5),
                   coalesce(p.spread, 0) + coalesce(p.closeness, 0.5)
            FROM items i
            LEFT JOIN (SELECT item_id, stddev_pop(preference) AS spread, 0.5 - abs(avg(preference) - 0.5) AS closeness
                       FROM pair_judge_prefs WHERE baseline = {_q(base or '')} GROUP BY item_id) p USING (item_id)
            WHERE i.item_id NOT IN (SELECT item_id FROM item_disagreement)
              {"AND i.item_id IN (SELECT item_id FROM _pi)" if sampled else ""}
              AND (SELECT count(DISTINCT model) FROM outputs o WHERE o.item_id = i.item_id) >= 2"""
    )


def _build_pair_cells(con, dims: list[str], sampled: bool = False) -> None:
    """Per (baseline, candidate): items binned by the judges' score differences and side-by-side
    preferences; ``n_pop`` sums the items' 1 / pi1 (judged-sample items only when ``sampled``)."""
    s = store.get_settings(con)
    base = s["baseline"]
    if not base:
        return
    for cand in s["candidates"]:
        prefs = con.execute(
            "SELECT DISTINCT judge, dimension FROM pair_judge_prefs WHERE baseline = ? AND candidate = ? ORDER BY ALL",
            [base, cand]).fetchall()
        feats = [
            f"""round((avg(list_avg(mc.x)) FILTER (WHERE oc.dimension = {_q(d)} AND oc.model = {_q(cand)})
                 - avg(list_avg(mc.x)) FILTER (WHERE oc.dimension = {_q(d)} AND oc.model = {_q(base)})) / {PAIR_BIN})
                 * {PAIR_BIN}""" for d in dims]
        pref_cols = [f"coalesce(round((p{i} - 0.5) * 4 / {PAIR_BIN}) * {PAIR_BIN}, 0)" for i in range(len(prefs))]
        pref_sel = ", ".join(
            f"max(preference) FILTER (WHERE judge = {_q(j)} AND dimension = {_q(d)}) AS p{i}"
            for i, (j, d) in enumerate(prefs))
        pref_join = (f"""LEFT JOIN (SELECT item_id, {pref_sel} FROM pair_judge_prefs
                         WHERE baseline = {_q(base)} AND candidate = {_q(cand)} GROUP BY item_id) p USING (item_id)"""
                     if prefs else "")
        nf = len(feats) + len(prefs)
        fcols = ", ".join(f"f{i}" for i in range(nf))
        sel = ["d.item_id"] + [f"coalesce(d.f{i}, 0) AS f{i}" for i in range(len(feats))]
        sel += [f"{c} AS f{len(feats) + i}" for i, c in enumerate(pref_cols)]
        if feats:  # pointwise judges: the difference of the two outputs' consensus scores per dimension
            d_sql = f"""SELECT oc.item_id, {', '.join(f'{f} AS f{i}' for i, f in enumerate(feats))}
                        FROM output_cells oc JOIN model_cells mc USING (dimension, cell_id)
                        WHERE oc.model IN ({_q(base)}, {_q(cand)})
                        GROUP BY oc.item_id
                        HAVING count(DISTINCT oc.model) = 2"""
        else:  # pairwise-only (or unjudged) project: every item with both outputs (of the judged sample)
            d_sql = f"""SELECT item_id FROM outputs WHERE model IN ({_q(base)}, {_q(cand)})
                        {"AND item_id IN (SELECT item_id FROM _pi)" if sampled else ""}
                        GROUP BY item_id HAVING count(DISTINCT model) = 2"""
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _pw AS
                SELECT item_id{''.join(f', f{i}' for i in range(nf))}, {'_pi.w' if sampled else '1.0'} AS wt,
                       {'dense_rank() OVER (ORDER BY ' + fcols + ') - 1' if fcols else '0'} AS cell_id FROM (
                  SELECT {', '.join(sel)}
                  FROM ({d_sql}) d
                  {pref_join}) {'JOIN _pi USING (item_id)' if sampled else ''}"""
        )
        con.execute(f"INSERT INTO item_pair_cells SELECT item_id, {_q(base)}, {_q(cand)}, cell_id FROM _pw")
        con.execute(
            f"""INSERT INTO pair_cells SELECT {_q(base)}, {_q(cand)}, cell_id, any_value([{fcols}]::DOUBLE[]), count(*),
                       sum(wt)
                FROM _pw GROUP BY cell_id"""
        )
        con.execute("DROP TABLE _pw")
