"""Fits over a Tiebreak project: loads cells and labels, fits, cross-checks, forecasts, fit history.

Population cells are built in DuckDB once per data version by ``calib.data.cells.ensure_cells`` and
kept in ``model_cells``/``output_cells``; a fit then reads only the cells and the labels, so its
cost does not grow with the number of unlabelled outputs.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass

import duckdb
import numpy as np
from threadpoolctl import threadpool_limits

from calib.data import phase1, store
from calib.data.cells import ensure_cells
from calib.stats import crosscheck, design, forecast, model, sequential, twophase
from calib.errors import TiebreakError

PREF_CODE = {"baseline": 0, "tie": 1, "candidate": 2}


# --------------------------------------------------------------------------- loading a dimension


@dataclass
class LabelledOutputs:
    """Per labelled output (for cross-checks): item, model index, mean verdict, judge consensus f, weight."""

    item_id: np.ndarray
    model: np.ndarray
    y: np.ndarray
    f: np.ndarray
    w: np.ndarray
    cell: np.ndarray | None = None  # position of the output's cell in CellData
    k: np.ndarray | None = None  # passes among the output's latest labels (one per SME)
    n: np.ndarray | None = None  # labels (SMEs) of the output
    design_note: str = "none"  # how the labelled items were chosen (see ``design_weights``)
    wv: np.ndarray | None = None  # the random part of w, and the inclusion probability within its
    pi: np.ndarray | None = None  # batch (``design.Weights``; None: a single sample, w and 1 / w)
    w1: np.ndarray | None = None  # 1 / pi1 of a two-phase design's judged sample (None: a census)

    def labelled_set(self) -> design.LabelledSet:
        return design.LabelledSet(item_id=self.item_id, model=self.model, cell=self.cell, k=self.k.astype(float),
                                  n=self.n.astype(float), w=self.w, wv=self.wv, pi=self.pi, w1=self.w1)


LATEST_LABELS = """
    SELECT item_id, model, annotator, verdict FROM labels WHERE dimension = ? AND label_id <= ?
    QUALIFY row_number() OVER (PARTITION BY item_id, model, annotator ORDER BY created_at DESC, label_id DESC) = 1
"""


MAX_ID = 2 ** 62


def design_weights(con, item_ids: np.ndarray, n_pop: int, candidate: str | None = None) -> tuple[np.ndarray, str]:
    """Each labelled item's weight in a population estimate (``design_weight_parts``' ``c``: a
    weighted mean with them estimates the population mean), and a description of the design."""
    parts, how = design_weight_parts(con, item_ids, n_pop, candidate)
    return parts.c, how


def design_weight_parts(con, item_ids: np.ndarray, n_pop: int, candidate: str | None = None
                        ) -> tuple[design.Weights, str]:
    """Design weights of labelled items for the units (item, ``candidate``; None = the first
    candidate), with their random part and inclusion probabilities, and a description of the design.

    A unit chosen by the queue has the inclusion probability its batch recorded (Poisson sampling
    over the units no earlier batch took); a batch is served in a random order, so the labelled
    part of a partly served batch is a uniform subsample of it. Labels with no queue record
    (imported, or labelled outside the queue) are declared a uniform sample of the items, one
    batch placed at their first label's time. The batches are combined as sequential samples
    (``design.sequential_weights``): each estimates the population from its own pool, and these
    estimates are combined inversely to their planned variances; a lead's subset batch (policy ``filtered``) has no population estimate of its own."""
    if not len(item_ids):
        return design.Weights(np.zeros(0), np.zeros(0), np.zeros(0)), "none"
    s = store.get_settings(con)
    first = store.first_candidate(con)
    cand = candidate or first
    q_cte = """WITH q AS (SELECT item_id, arg_max(inclusion_prob, queue_id) AS pi, arg_max(coalesce(batch_id, 0), queue_id) AS b,
                                 arg_max(policy, queue_id) AS pol, min(created_at) AS t
                          FROM queue WHERE coalesce(candidate, ?) = ? GROUP BY item_id)"""
    rows = {r[0]: (r[1], r[2]) for r in con.execute(q_cte + " SELECT item_id, pi, b FROM q", [first, cand]).fetchall()}
    batch_rows = con.execute(
        q_cte + " SELECT b, arg_max(pol, t) = 'filtered', count(*), min(t) FROM q GROUP BY b ORDER BY b",
        [first, cand]).fetchall()
    uniq = set(item_ids.tolist())
    outside = [i for i in uniq if i not in rows]
    batches = [design.Batch(key=b, whole=not filt, queued=int(k)) for b, filt, k, _ in batch_rows]
    if outside:
        # the labels from outside the queue: one batch, placed at their first label's time
        t_out = con.execute(
            q_cte + """, done AS (SELECT l.item_id, l.created_at AS t FROM labels l LEFT JOIN leases e USING (lease_id)
                                  WHERE l.model = ? OR (l.model = ? AND coalesce(e.candidate, ?) = ?)
                                  UNION ALL SELECT item_id, created_at FROM pair_labels WHERE candidate = ?)
                       SELECT min(t) FROM done WHERE item_id NOT IN (SELECT item_id FROM q)""",
            [first, cand, cand, s["baseline"], first, cand, cand]).fetchone()[0]
        at = sum(1 for *_, t in batch_rows if t_out is not None and t is not None and t <= t_out)
        batches.insert(at, design.Batch(key=-1, whole=True, queued=len(outside)))
    pi = np.array([rows[i][0] if i in rows else len(outside) / max(n_pop, 1) for i in item_ids], float)
    w = 1.0 / np.clip(pi, 1e-6, 1.0)
    batch = np.array([rows[i][1] if i in rows else -1 for i in item_ids])
    parts = design.sequential_weights(w, item_ids, batch, batches, n_pop)
    kinds = []
    if len(outside) < len(uniq):
        kinds.append("queue (sequential batches, inclusion probabilities recorded per batch)")
    if outside:
        kinds.append(f"{len(outside)} items labelled outside the queue, taken as a uniform random sample")
    return parts, "; ".join(kinds)


def load_dimension(con, dimension: str, models: list[str], max_label_id: int | None = None
                   ) -> tuple[model.CellData, LabelledOutputs, dict]:
    """CellData for one dimension (cells from DuckDB, labels joined), with cross-check inputs;
    ``max_label_id`` counts only the labels written up to that one (a replay of the history)."""
    # column arrays, not a Python tuple per cell (thousands of cells: a third of the load's time)
    census = phase1.is_census(con)
    mc = con.execute(
        "SELECT cell_id, model, segment, x, n, sum_f" + ("" if census else ", n_pop") +
        " FROM model_cells WHERE dimension = ? ORDER BY cell_id", [dimension]).fetchnumpy()
    if not len(mc["cell_id"]):
        raise TiebreakError(f"no judge scores for dimension {dimension!r}")
    judges = [r[0] for r in con.execute(
        "SELECT judge FROM judge_scale WHERE dimension = ? ORDER BY judge", [dimension]).fetchall()]
    segments = sorted(set(mc["segment"].tolist()))
    mi = {m: i for i, m in enumerate(models)}
    si = {s: i for i, s in enumerate(segments)}
    code = np.array([mi.get(m, -1) for m in mc["model"].tolist()], np.int64)
    keep = code >= 0
    C = int(keep.sum())
    cell_model = code[keep]
    cell_segment = np.array([si[s] for s in mc["segment"].tolist()], np.int64)[keep]
    cell_x = np.array(mc["x"][keep].tolist(), float).reshape(C, len(judges))
    cell_n = np.asarray(mc["n"][keep], np.int64)
    cell_ids_all = np.asarray(mc["cell_id"][keep], np.int64)
    sum_f = np.asarray(mc["sum_f"][keep], float)
    cell_pop = None if census else np.asarray(mc["n_pop"][keep], float)
    if cell_pop is None:
        # Python's sum over the cells in order, as before (not numpy's pairwise sum)
        f_pop = {m: sum(sum_f[cell_model == mi[m]].tolist()) / max(1, int(cell_n[cell_model == mi[m]].sum())) for m in models}
    else:
        # a two-phase design: the judges' pass share of the population, each cell expanded by 1 / pi1
        fx = sum_f * cell_pop / np.maximum(cell_n, 1)
        f_pop = {m: float(fx[cell_model == mi[m]].sum() / max(cell_pop[cell_model == mi[m]].sum(), 1e-12)) for m in models}

    # labelled outputs: mean verdict over annotators, cell, judge consensus (aggregated in DuckDB)
    per_out = con.execute(
        f"""SELECT l.item_id, l.model, avg(l.verdict::INT) AS y, sum(l.verdict::INT) AS k, count(*) AS n,
                   any_value(c.cell_id) AS cell_id, any_value(c.f) AS f
            FROM ({LATEST_LABELS}) l JOIN label_cells c
              ON c.item_id = l.item_id AND c.model = l.model AND c.dimension = ?
            GROUP BY l.item_id, l.model ORDER BY l.item_id, l.model""",
        [dimension, MAX_ID if max_label_id is None else int(max_label_id), dimension]).fetch_df()
    per_out = per_out[per_out["model"].isin(list(mi))]
    pos = np.full(int(cell_ids_all.max()) + 1 if len(cell_ids_all) else 1, -1, np.int64)
    pos[cell_ids_all] = np.arange(C)
    ci = pos[per_out["cell_id"].to_numpy(np.int64)] if len(per_out) else np.zeros(0, np.int64)
    cell_lab_items = np.bincount(ci, minlength=C).astype(np.int64)
    cell_lab_y = np.bincount(ci, weights=per_out["y"].to_numpy(float), minlength=C)
    k_out = per_out["k"].to_numpy(np.int64)
    n_out = per_out["n"].to_numpy(np.int64)
    uniq, inv = np.unique(ci, return_inverse=True)
    data = model.CellData(
        models=models, segments=segments, judges=judges, cell_model=cell_model, cell_segment=cell_segment,
        cell_x=cell_x, cell_n=cell_n, cell_lab_items=cell_lab_items, cell_lab_y=cell_lab_y,
        obs_cell=uniq.astype(np.int64),
        obs_k=np.bincount(inv, weights=k_out).astype(np.int64) if len(uniq) else np.zeros(0, np.int64),
        obs_n=np.bincount(inv, weights=n_out).astype(np.int64) if len(uniq) else np.zeros(0, np.int64),
        cell_ids=cell_ids_all, cell_pop=cell_pop,
    )
    item_ids = per_out["item_id"].to_numpy(object)
    w1 = None if cell_pop is None else phase1.inverse_pi1(con, item_ids)
    n_pop = int(cell_n[cell_model == 0].sum()) if C else 0
    parts, how = design_weight_parts(con, item_ids, n_pop)
    lab = LabelledOutputs(
        item_id=item_ids, model=per_out["model"].map(mi).to_numpy(np.int64),
        y=per_out["y"].to_numpy(float), f=per_out["f"].to_numpy(float), w=parts.c,
        cell=ci.astype(np.int64), k=k_out, n=n_out, design_note=how, wv=parts.v, pi=parts.pi, w1=w1,
    )
    return data, lab, f_pop


def load_pairs(con, baseline: str, candidate: str, dimension: str) -> model.PairData | None:
    if not con.execute("SELECT count(*) FROM pair_labels WHERE baseline = ? AND candidate = ? AND dimension = ?",
                       [baseline, candidate, dimension]).fetchone()[0]:
        return None
    census = phase1.is_census(con)
    rows = con.execute(
        "SELECT cell_id, x, n" + ("" if census else ", n_pop") +
        " FROM pair_cells WHERE baseline = ? AND candidate = ? ORDER BY cell_id", [baseline, candidate]).fetchall()
    if not rows:
        return None
    labs = con.execute(
        """SELECT l.item_id, l.preference, c.cell_id FROM (
              SELECT item_id, annotator, preference FROM pair_labels
              WHERE baseline = ? AND candidate = ? AND dimension = ?
              QUALIFY row_number() OVER (PARTITION BY item_id, annotator ORDER BY created_at DESC, label_id DESC) = 1) l
           JOIN item_pair_cells c ON c.item_id = l.item_id AND c.baseline = ? AND c.candidate = ?""",
        [baseline, candidate, dimension, baseline, candidate]).fetchall()
    if not labs:
        return None
    C = len(rows)
    F = len(rows[0][1])
    per_item: dict[str, list] = {}
    for item, pref, cid in labs:
        per_item.setdefault(item, [cid, []])[1].append(PREF_CODE[pref] / 2.0)
    lab_items = np.zeros(C, np.int64)
    lab_win = np.zeros(C)
    for cid, wins in per_item.values():
        lab_items[cid] += 1
        lab_win[cid] += np.mean(wins)
    cell_pop = item_w1 = None
    if not census:
        cell_pop = np.array([r[3] for r in rows], float)
        item_w1 = phase1.inverse_pi1(con, list(per_item))
    return model.PairData(
        cell_pop=cell_pop, item_w1=item_w1,
        features=[f"f{i}" for i in range(F)], cell_x=np.array([r[1] for r in rows], float).reshape(C, F),
        cell_n=np.array([r[2] for r in rows], np.int64), cell_lab_items=lab_items, cell_lab_win=lab_win,
        obs_cell=np.array([r[2] for r in labs], np.int64), obs_y=np.array([PREF_CODE[r[1]] for r in labs], np.int64),
        item_id=np.array(list(per_item), dtype=object),
        item_cell=np.array([v[0] for v in per_item.values()], np.int64),
        item_win=np.array([np.mean(v[1]) for v in per_item.values()], float),
        item_counts=np.array([np.bincount(np.rint(np.array(v[1]) * 2).astype(int), minlength=3)
                              for v in per_item.values()], float).reshape(-1, 3),
    )


def pairwise_rate(con, pdata: model.PairData, seed: int = 0, kind: str = "fast",
                  candidate: str | None = None) -> tuple[np.ndarray, dict]:
    """Win-rate draws of the candidate over the baseline: the pairwise model's projection corrected
    by the labelled items' residuals, weighted by the design (as ``design_rates``). Residuals are
    honest, against each item's leave-one-out prediction (``design.loo_pair_predictions``): the
    in-sample ones are shrunk by the fit and covered 89-92% on PandaLM at 20-60 labelled pairs.
    ``kind``: the preference model fitted fast (Laplace) or by NUTS; ``how["diagnostics"]`` has
    NUTS's convergence."""
    th, diagnostics = model.pairwise_posterior(pdata, kind, seed=seed)
    win_c, var_c, probs = model.pairwise_cells(pdata, th)
    p = win_c.mean(0)
    v = np.clip(var_c.mean(0), 1e-6, None)
    n_judged = float(pdata.cell_n.sum())
    two_phase = pdata.cell_pop is not None and pdata.item_w1 is not None and pdata.item_id is not None
    if two_phase:
        # a two-phase design (``calib.stats.twophase``): the judged pairs expanded by 1 / pi1
        C = len(pdata.cell_n)
        w1 = np.asarray(pdata.item_w1, float)
        lab_pop = np.bincount(pdata.item_cell, weights=w1, minlength=C)
        cell_pop = np.maximum(np.asarray(pdata.cell_pop, float), lab_pop)
        lab_win_total = float((pdata.item_win * w1).sum())
    else:
        lab_pop, cell_pop, lab_win_total = pdata.cell_lab_items, pdata.cell_n, float(pdata.cell_lab_win.sum())
    N = float(cell_pop.sum())
    unl = np.maximum(cell_pop - lab_pop, 0).astype(float)
    if pdata.item_id is None or len(pdata.item_id) < design.MIN_ITEMS:
        rng = np.random.default_rng([seed, 0xA2])
        mean = (win_c * unl).sum(1) + lab_win_total
        sd = np.sqrt(np.maximum((var_c * unl).sum(1), 0))
        draws = np.clip((mean + sd * rng.standard_normal(len(th))) / N, 0, 1)
        return draws, {"estimator": "model", "items": 0 if pdata.item_id is None else len(pdata.item_id),
                       "diagnostics": diagnostics}
    parts, how = design_weight_parts(con, pdata.item_id, int(n_judged), candidate)
    p_loo = design.loo_pair_predictions(probs[:, pdata.item_cell], pdata.item_counts)
    e = (pdata.item_win - p_loo)[:, None]
    ylab, n_unl, c, cv = np.array([lab_win_total]), np.array([unl.sum()]), parts.c, parts.v
    if two_phase:
        # as ``design.design_rate_draws``: the labelled residuals expanded by 1 / pi1 too
        ylab, n_unl, c, cv = twophase.expanded_domain_inputs(ylab, np.array([N]), e, np.ones_like(e), w1, c, cv)
    var_parts: dict = {}
    c_err = win_c[:, pdata.item_cell].var(0)[:, None, None]  # the posterior variance of each pair's prediction
    mean, cov, n = design._domain_estimate(
        ylab, np.array([(unl * p).sum()]), np.array([N]), n_unl,
        e, v[pdata.item_cell][:, None], np.ones_like(e), c, pdata.item_win[:, None], cv, parts.pi,
        parts=var_parts, c_err=c_err)
    if two_phase:
        cov = cov + twophase.phase1_cov(pdata.item_win[:, None], np.ones_like(e), parts.c, w1, n_judged) / N ** 2
    draws = design._t_draws(mean, cov, design.t_df(parts.v), len(win_c), np.random.default_rng([seed, 0xA1]))[:, 0]
    return draws, {"estimator": "design", "items": n, "sd": float(np.sqrt(cov[0, 0])), "design": how,
                   "diagnostics": diagnostics,
                   # the phase-2 variance's pieces, for the planner (as a Delta's ``var_parts``)
                   "var_parts": {k: float(m_[0, 0]) for k, m_ in var_parts.items()}}


# --------------------------------------------------------------------------- fit


def one_blas_thread(fn):
    """Run ``fn`` with BLAS (OpenBLAS) on one thread. A fit's matrices are small (tens of
    parameters by a few thousand cells): a second BLAS thread saves little on an idle machine, and
    on a busy one (the app's sessions, the NUTS thread, other work on 2 cores) its threads spin
    waiting for a core: the dashboard's fast refit took 2.9 s with two threads against 1.5 s with
    one at load 3.6 (bench/profile_refresh.py). The limit is process-wide while ``fn`` runs and
    restored after; results are the same up to float round-off."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return inner


def _interval_dict(draws, mass):
    mean, lo, hi = model.posterior_interval(draws, mass)
    return {"mean": mean, "lo": lo, "hi": hi}


def _rate_interval(draws, mass, domain: dict | None, m: str) -> dict:
    """A pass rate's interval, its bound closed at 1 (or 0) where the domain's labelled outputs of
    the model all pass (or all fail): ``design.boundary_closures``."""
    row = _interval_dict(draws, mass)
    if domain and domain.get("estimator") == "design":
        row["lo"], row["hi"] = design.closed_interval(row["lo"], row["hi"], (domain.get("closed") or {}).get(m))
    return row


class FitRunning(TiebreakError):
    """A NUTS fit of this database is already running in this process."""


def fit_project(con: duckdb.DuckDBPyConnection, kind: str = "fast", margin: float | None = None,
                seed: int = 0, record: bool = True, draws: int | None = None,
                max_label_id: int | None = None, forecast_extra: list[int] | None = None) -> dict:
    """Fit every dimension (``kind`` = "fast" Laplace or "nuts"), compute estimands, cross-checks and
    decisions, and record the fit in ``fits``. Returns the JSON-able result (as ``tiebreak fit --json``).

    One NUTS fit per database at a time in this process (``store.db_lock(con, "nuts")``, not
    waited for: a second caller gets ``FitRunning``): a NUTS fit takes seconds to minutes and
    two at once only compete for the same cores and memory. Another process cannot open the
    database while the app holds it (DuckDB's single writer), so in-process is the whole scope."""
    args = (con, kind, margin, seed, record, draws, max_label_id, forecast_extra)
    if kind != "nuts":
        with phase1.read_once():
            return _fit_project(*args)
    lock = store.db_lock(con, "nuts")
    if not lock.acquire(blocking=False):
        raise FitRunning("a NUTS fit of this database is already running; wait for it to finish")
    try:
        with phase1.read_once():
            return _fit_project(*args)
    finally:
        lock.release()


@one_blas_thread
def _fit_project(con: duckdb.DuckDBPyConnection, kind: str = "fast", margin: float | None = None,
                seed: int = 0, record: bool = True, draws: int | None = None,
                max_label_id: int | None = None, forecast_extra: list[int] | None = None) -> dict:
    t0 = time.perf_counter()
    s = store.get_settings(con)
    margin = s["margin"] if margin is None else margin
    mass, threshold = s["interval"], s["decide_prob"]
    models = store.models(con)
    base = s["baseline"]
    if not base or base not in models or len(models) < 2:
        raise TiebreakError("need a baseline and at least one candidate model (import outputs of two models)")
    cands = [m for m in models if m != base]
    ensure_cells(con)
    label_high_water = label_watermark(con)
    # several candidates at once: each decision needs a Bonferroni-adjusted probability
    threshold_k = decide_prob_per_candidate(threshold, len(cands))
    # the sign-off rule (fixed-n interval or anytime-valid confidence sequence), same Bonferroni alpha
    signoff = _signoff_rule(s, threshold_k, margin)
    result = {"kind": kind, "interval": mass, "margin": margin, "decide_prob": threshold,
              "decide_prob_per_candidate": threshold_k,
              "multiplicity": ("none (one candidate)" if len(cands) == 1 else
                               f"Bonferroni over {len(cands)} candidates: each decision needs "
                               f"P >= 1 - (1 - {threshold:g}) / {len(cands)} = {threshold_k:.4g}"),
              "baseline": base, "candidates": cands, "rates": [], "diffs": [],
              "segment_diffs": [], "preference": [], "p_best": [], "cross_checks": [], "warnings": [],
              "diagnostics": {}, "estimator": {}, **signoff["record"]}
    labelled_items: set = set()
    n_label_rows = 0
    for dim in s["dimensions"]:
        data, lab, f_pop = load_dimension(con, dim, models, max_label_id)
        labelled_items |= set(lab.item_id.tolist())
        n_label_rows += data.n_labels
        if data.n_labels == 0:
            result["warnings"].append(f"{dim}: no SME labels yet: intervals are the priors projected through the judges")
        if kind == "nuts":
            post = model.fit_nuts(data, draws=draws or 800, seed=seed)
        else:
            post = model.fit_laplace(data, draws=draws or 1000, seed=seed)
        result["warnings"] += [f"{dim}: {w}" for w in post.diagnostics.get("warnings", [])]
        result["diagnostics"][dim] = post.diagnostics
        # in a two-phase design the model's own projection is of the population too (counts x 1 / pi1)
        model_rates = model.population_rate_draws(
            data if lab.w1 is None else twophase.expanded_cells(data, lab.cell, lab.y, lab.w1), post, seed=seed)
        per_cand = candidate_rates(con, data, post, lab, model_rates, models, base, cands, seed)
        # the baseline's reported rate: from the pair with the most labelled items
        primary = max(cands, key=lambda c: (int(per_cand[c][0].info.get("labelled_items", 0)), -cands.index(c)))
        rates = per_cand[primary][0]
        result["estimator"][dim] = {**rates.info, "design": per_cand[primary][1].design_note}
        if len(cands) > 1:
            result["estimator"][dim]["by_candidate"] = {
                c: {"estimator": r.info.get("estimator"), "labelled_items": r.info.get("labelled_items"),
                    "design": lc.design_note} for c, (r, lc) in per_cand.items()}
        if forecast_extra is not None and post.mode is not None:
            result.setdefault("forecasts", []).extend(_forecast_dimension(
                dim, data, post, rates, models, base, forecast_extra, s["target_width"], margin, threshold_k,
                crosscheck._z(mass), s["min_decision_items"], s["forecast_prior_sd"],
                rates_by_cand={c: r for c, (r, _) in per_cand.items()}, anytime=signoff["anytime"]))
        for m in models:
            mr = rates if m == base or m not in per_cand else per_cand[m][0]
            doms = (mr.info or {}).get("domains", {})
            result["rates"].append({"dimension": dim, "model": m, "segment": None,
                                    **_rate_interval(mr.overall[m], mass, doms.get("overall"), m)})
            for seg, d in mr.by_segment[m].items():
                result["rates"].append({"dimension": dim, "model": m, "segment": seg,
                                        **_rate_interval(d, mass, doms.get(f"segment:{seg}"), m)})
        deltas = {}
        for c in cands:
            rates_c, lab_c = per_cand[c]
            delta = rates_c.overall[c] - rates_c.overall[base]
            deltas[c] = delta
            pn = model.p_noninferior(delta, margin)
            row = {"dimension": dim, "baseline": base, "candidate": c, **_interval_dict(delta, mass),
                   "sd": float(np.std(delta)), "p_noninferior": pn, "decision": model.decide(pn, threshold_k)}
            _hold_on_few(row, _items_labelled_for_both(lab_c, models.index(base), models.index(c)),
                         s["min_decision_items"], "items labelled for both models")
            signoff["apply"](row, -margin)
            vp = rates_c.info.get("domains", {}).get("overall", {}).get("var_parts")
            if vp:
                # Delta's phase-2 variance by piece (``design._domain_estimate``): how the planner
                # lets each fade with more labels
                row["var_parts"] = {k: m_[c][c] + m_[base][base] - 2 * m_[base][c] for k, m_ in vp.items()
                                    if c in m_ and base in m_}
            result["diffs"].append(row)
            md = model_rates.overall[c] - model_rates.overall[base]
            result["cross_checks"].append({"dimension": dim, "baseline": base, "candidate": c, "method": "model-only",
                                           **_interval_dict(md, mass),
                                           "note": "the calibration model's posterior alone (no design correction)"})
            for seg in data.segments:
                if seg in rates_c.by_segment[c] and seg in rates_c.by_segment[base]:
                    sd = rates_c.by_segment[c][seg] - rates_c.by_segment[base][seg]
                    result["segment_diffs"].append({"dimension": dim, "baseline": base, "candidate": c, "segment": seg,
                                                    **_interval_dict(sd, mass), "p_noninferior": model.p_noninferior(sd, margin)})
            checks = _cross_checks(con, dim, data, lab_c, f_pop, models, base, c, mass)
            result["cross_checks"] += checks
            for ch in checks:
                if ch["method"] in ("human-only", "ppi++") and ch.get("lo") is not None and \
                        crosscheck.intervals_disagree((row["lo"], row["hi"]), (ch["lo"], ch["hi"])):
                    result["warnings"].append(
                        f"{dim}: the Bayesian interval [{row['lo']:.3f}, {row['hi']:.3f}] and the {ch['method']} "
                        f"interval [{ch['lo']:.3f}, {ch['hi']:.3f}] do not overlap: check the judges and labels")
        if deltas:
            for m, p in p_best(deltas, base).items():
                result["p_best"].append({"dimension": dim, "model": m, "p_best": p})
    for c in cands:
        for dim in ["overall", *s["dimensions"]]:
            pdata = load_pairs(con, base, c, dim)
            if pdata is None:
                continue
            win, how = pairwise_rate(con, pdata, seed=seed, kind=kind, candidate=c)
            diag = how.pop("diagnostics", {})
            if diag:
                result["diagnostics"][f"win rate {c} {dim}"] = diag
                result["warnings"] += [f"win rate of {c} on {dim}: {w}" for w in diag.get("warnings", [])]
            # the side-by-side decision: the win rate (ties half) not below 1/2 by more than the margin
            pn = float(np.mean(win >= 0.5 - margin))
            row = {"dimension": dim, "baseline": base, "candidate": c, **_interval_dict(win, mass),
                   "n_labels": int(len(pdata.obs_y)), "estimator": how, "p_noninferior": pn,
                   "decision": model.decide(pn, threshold_k)}
            _hold_on_few(row, int(how.get("items", 0)) if how.get("estimator") == "design" else 0,
                         s["min_decision_items"], "pairs compared by SMEs")
            row["sd"] = float(np.std(win))
            if how.get("var_parts"):
                row["var_parts"] = how.pop("var_parts")
            signoff["apply"](row, 0.5 - margin)
            result["preference"].append(row)
            result["cross_checks"] += _pair_cross_checks(con, pdata, base, c, dim, mass)
            n_label_rows += int(len(pdata.obs_y))
            labelled_items |= set(pdata.item_id.tolist()) if pdata.item_id is not None else set()
    if not s["dimensions"] and not result["preference"]:
        # a pairwise-only project before any SME comparison: say what the fit is waiting for
        result["warnings"].append("no SME preferences yet: the win rate and its decision appear once SMEs "
                                  "compare pairs (the Label page, `tiebreak queue --lease`, or `tiebreak labels import`)")
    result["n_labels"] = len(labelled_items)
    sample = phase1.summary(con)
    if sample is not None:
        # a two-phase design: the intervals include which items were judged (``calib.stats.twophase``)
        result["judged_sample"] = {**sample, "line": phase1.summary_line(sample)}
    result["interval_kind"] = interval_kind(result)
    result["max_label_id"] = max_label_id if max_label_id is not None else label_high_water
    result["n_label_rows"] = n_label_rows
    result["seconds"] = time.perf_counter() - t0
    if record:
        con.execute("INSERT INTO fits (created_at, kind, n_labels, seconds, result) VALUES (current_timestamp, ?, ?, ?, ?)",
                    [kind, result["n_labels"], result["seconds"], json.dumps(result)])
    return result


def _signoff_rule(s: dict, threshold_k: float, margin: float) -> dict:
    """The sign-off mode's record for the fit result and a function adding each row's confidence
    sequence (``calib.stats.sequential``; in mode "anytime" it takes the decision)."""
    mode = sequential.check_mode(str(s["signoff_mode"]))
    alpha, target = 1.0 - threshold_k, int(s["anytime_target_items"])
    record = {"signoff_mode": mode, "signoff_words": sequential.MODE_WORDS[mode], "anytime_target_items": target,
              "watch_cost": sequential.watch_cost(target, alpha, target)}
    return {"record": record, "anytime": (alpha, target) if mode == "anytime" else None, "apply": lambda row, null: sequential.apply(row, mode, alpha, target, null,
                                                                          int(s["min_decision_items"]))}


def _hold_on_few(row: dict, n: int, min_items: int, what: str) -> None:
    """Record ``n`` in ``row``; below ``min_items`` no decision is announced, and the note says why."""
    row["n_items"] = n
    if n < min_items and row["decision"] != "label more":
        row["decision"] = "label more"
        row["note"] = f"only {n} {what}: a decision needs at least {min_items} (setting min_decision_items)"


def design_rates(data: model.CellData, post: model.Posterior, lab: LabelledOutputs, model_rates: model.RateDraws,
                 seed: int = 0, only: list[int] | None = None) -> design.DesignRates:
    """The reported rates: the model's projection corrected by the labelled items' honest residuals,
    weighted by the design (``calib.stats.design``); domains with too few labels keep the model's draws."""
    sub = min(len(post.theta), 250)  # posterior means (per cell, and leave-one-out) need few draws
    small = model.Posterior(theta=post.theta[:sub], sigma=post.sigma[:sub], tau=post.tau[:sub], kind=post.kind)
    p_cells = design.cell_probabilities(data, model.eta_draws(data, small))
    cells = lab.cell if lab.cell is not None else np.zeros(0, np.int64)
    p_lab = model.expit_fast(model.eta_draws(data, small, cells=cells)) if len(cells) else np.zeros((sub, 0))
    return design.design_rate_draws(data, p_cells, p_lab, lab.labelled_set(), model_rates.overall,
                                    model_rates.by_segment, seed=seed, only=only)


def candidate_rates(con, data: model.CellData, post: model.Posterior, lab: LabelledOutputs,
                    model_rates: model.RateDraws, models: list[str], base: str, cands: list[str], seed: int = 0
                    ) -> dict[str, tuple[design.DesignRates, LabelledOutputs]]:
    """Per candidate, the design-consistent rates of the pair (baseline, candidate) and the labelled
    set they rest on.

    The unit of SME work is (item, candidate), sampled with inclusion probabilities recorded per
    unit: the items labelled for candidate c are c's probability sample (known pi), so c's pair is
    estimated on those items only (their baseline and c outputs), weighted by 1/pi of (item, c).
    Items labelled for another candidate only do not enter c's estimate. Each pair draws its
    Student-t noise from its own stream (independent errors across candidates). With one candidate
    this is the single joint estimate, exactly as before units existed."""
    if len(cands) == 1:
        return {cands[0]: (design_rates(data, post, lab, model_rates, seed), lab)}
    bi = models.index(base)
    n_pop = int(data.cell_n[data.cell_model == 0].sum()) if len(data.cell_n) else 0
    out = {}
    for c in cands:
        ci = models.index(c)
        items_c = set(lab.item_id[lab.model == ci].tolist())
        mask = np.isin(lab.item_id, list(items_c)) & np.isin(lab.model, [bi, ci])
        parts, how = design_weight_parts(con, lab.item_id[mask], n_pop, c)
        lab_c = LabelledOutputs(item_id=lab.item_id[mask], model=lab.model[mask], y=lab.y[mask], f=lab.f[mask],
                                w=parts.c, cell=lab.cell[mask], k=lab.k[mask], n=lab.n[mask], design_note=how,
                                wv=parts.v, pi=parts.pi, w1=None if lab.w1 is None else lab.w1[mask])
        out[c] = (design_rates(data, post, lab_c, model_rates, seed + 104_729 * ci, only=[bi, ci]), lab_c)
    return out


def decide_prob_per_candidate(decide_prob: float, k: int) -> float:
    """The posterior probability each candidate's decision needs when ``k`` candidates are compared
    at once: Bonferroni, 1 - (1 - decide_prob) / k. A lead signs off whichever candidate passes, so
    with k chances the probability that some announced decision is wrong is bounded by
    1 - decide_prob (as for one candidate); with one candidate nothing changes."""
    return 1.0 - (1.0 - decide_prob) / max(int(k), 1)


def p_best(delta_draws: dict[str, np.ndarray], baseline: str) -> dict[str, float]:
    """Posterior probability that each model (the baseline, Delta = 0, and every candidate) has the
    highest pass rate, from the candidates' Delta draws (ties split evenly)."""
    names = [baseline, *delta_draws]
    D = len(next(iter(delta_draws.values())))
    mat = np.column_stack([np.zeros(D), *delta_draws.values()])
    top = mat == mat.max(axis=1, keepdims=True)
    share = (top / top.sum(axis=1, keepdims=True)).mean(0)
    return {m: float(v) for m, v in zip(names, share)}


def _items_labelled_for_both(lab: LabelledOutputs, bi: int, ci: int) -> int:
    return len(set(lab.item_id[lab.model == bi].tolist()) & set(lab.item_id[lab.model == ci].tolist()))


def interval_kind(fit: dict) -> str:
    """What the fit's intervals are, in the words a lead signs: "confidence" where every reported
    estimate is design-based (``calib.stats.design``: a frequentist interval, valid whatever the
    model), "credible" where every one is the calibration model's posterior (too few labelled
    items), "mixed" otherwise."""
    kinds = {str(v.get("estimator")) for v in (fit.get("estimator") or {}).values()}
    kinds |= {str((p.get("estimator") or {}).get("estimator")) for p in fit.get("preference", [])}
    kinds.discard("None")
    if kinds == {"design"}:
        return "confidence"
    if kinds <= {"model"}:
        return "credible"
    return "mixed"


INTERVAL_WORDS = {"confidence": "confidence intervals (design-based)",
                  "credible": "credible intervals (model-based: too few labelled items for the design-based estimate)",
                  "mixed": "intervals (design-based where enough items are labelled, else model-based credible)"}


def interval_words(fit: dict) -> str:
    """'95% confidence intervals (design-based)' and the like, for captions, the CLI and the report."""
    kind = fit.get("interval_kind") or interval_kind(fit)
    words = f"{fit.get('interval', 0.95):.0%} {INTERVAL_WORDS[kind]}"
    js = fit.get("judged_sample")
    if js:
        pct = 100.0 * js["judged"] / js["items"] if js.get("items") else 0.0
        words += (f", two-phase: judges on a {pct:.1f}% sample ({js['judged']:,} of {js['items']:,} items), "
                  "the intervals include that sampling")
    return words


def _pair_cross_checks(con, pdata: model.PairData, base: str, cand: str, dim: str, mass: float) -> list[dict]:
    """The win rate by other estimators, on the same SME preferences: each judge alone (its mean
    preference over every pair: no interval), human-only (the labelled pairs' design-weighted mean
    win score) and PPI++ (the judges' mean preference as the prediction, power-tuned); both
    intervals with the finite-population correction sqrt(1 - n / N), as the design estimate has."""
    import pandas as pd

    q = """SELECT ic.item_id, p.judge, p.preference FROM item_pair_cells ic
           LEFT JOIN pair_judge_prefs p ON p.item_id = ic.item_id AND p.baseline = ic.baseline
                AND p.candidate = ic.candidate AND p.dimension = ?
           WHERE ic.baseline = ? AND ic.candidate = ?"""
    prefs = con.execute(q, [dim, base, cand]).fetch_df()
    out = []
    for j, g in prefs.dropna(subset=["judge"]).groupby("judge", sort=True):
        out.append({"dimension": dim, "baseline": base, "candidate": cand, "estimand": "win rate",
                    "method": f"judge-only:{j}", "mean": float(g["preference"].mean()), "lo": None, "hi": None,
                    "note": "no interval: a judge's error is bias, which more data does not shrink"})
    if pdata.item_id is None or len(pdata.item_id) < 2:
        return out
    # an item no judge compared is predicted a tie
    f_item = prefs.groupby("item_id", sort=True)["preference"].mean().fillna(0.5)
    N, n = len(f_item), len(pdata.item_id)
    f_lab = pd.Series(pdata.item_id).map(f_item).fillna(0.5).to_numpy(float)
    w, _ = design_weights(con, pdata.item_id, N, cand)
    f_mean, f_var = float(f_item.mean()), 0.0
    if pdata.item_w1 is not None and pdata.cell_pop is not None:
        # a two-phase design: each labelled pair stands for 1 / (pi1 pi2) pairs of the population,
        # and the judges' mean preference is itself estimated from the judged sample
        N_pop = float(np.sum(pdata.cell_pop))
        w = w * np.asarray(pdata.item_w1, float)
        w1_all = phase1.inverse_pi1(con, f_item.index)
        f_mean = float(np.sum(w1_all * f_item.to_numpy(float)) / np.sum(w1_all))
        f_var = max(1.0 / max(N, 1) - 1.0 / max(N_pop, 1.0), 0.0) * float(np.var(f_item.to_numpy(float)))
        N = int(round(N_pop))
    fpc = float(np.sqrt(max(1.0 - n / max(N, 1), 0.0)))
    y = np.asarray(pdata.item_win, float)

    def shrunk(mean, lo, hi):
        return {"mean": mean, "lo": mean - (mean - lo) * fpc, "hi": mean + (hi - mean) * fpc}

    mean, lo, hi = crosscheck.weighted_mean_interval(y, w, mass)
    out.append({"dimension": dim, "baseline": base, "candidate": cand, "estimand": "win rate",
                "method": "human-only", **shrunk(mean, lo, hi), "n": n})
    ppi = crosscheck.ppi_mean_interval(y, f_lab, f_mean, w, mass, f_pop_var=f_var)
    out.append({"dimension": dim, "baseline": base, "candidate": cand, "estimand": "win rate", "method": "ppi++",
                **shrunk(ppi["mean"], ppi["lo"], ppi["hi"]), "lambda": ppi["lam"], "n": n})
    return out


def _cross_checks(con, dim, data, lab, f_pop, models, base, cand, mass) -> list[dict]:
    bi, ci = models.index(base), models.index(cand)
    out = []
    # judge-only: each judge's pass share, no human
    naive = {(j, m): r for j, m, r in con.execute(
        "SELECT judge, model, pass_rate FROM judge_naive WHERE dimension = ?", [dim]).fetchall()}
    for j in data.judges:
        if (j, cand) in naive and (j, base) in naive:
            out.append({"dimension": dim, "baseline": base, "candidate": cand, "method": f"judge-only:{j}",
                        "mean": naive[(j, cand)] - naive[(j, base)], "lo": None, "hi": None,
                        "note": "no interval: a judge's error is bias, which more data does not shrink"})
    # paired items labelled for both models
    import pandas as pd

    # a two-phase design: each labelled item stands for 1 / (pi1 pi2) items of the population
    w_all = lab.w if lab.w1 is None else lab.w * lab.w1
    df = pd.DataFrame({"item": lab.item_id, "m": lab.model, "y": lab.y, "f": lab.f, "w": w_all})
    b = df[df.m == bi].set_index("item")
    c = df[df.m == ci].set_index("item")
    both = b.index.intersection(c.index)
    if len(both) >= 2:
        b, c = b.loc[both], c.loc[both]
        yc, yb, fc, fb, w = (c.y.to_numpy(), b.y.to_numpy(), c.f.to_numpy(), b.f.to_numpy(), c.w.to_numpy())
        mean, lo, hi = crosscheck.human_only_diff(yc, yb, w, mass)
        out.append({"dimension": dim, "baseline": base, "candidate": cand, "method": "human-only",
                    "mean": mean, "lo": lo, "hi": hi, "n": len(both)})
        f_var = 0.0
        if lab.w1 is not None:
            # the judges' population mean is itself estimated from the judged sample (phase 1)
            n1 = float(data.cell_n[data.cell_model == bi].sum())
            N = float(data.cell_pop[data.cell_model == bi].sum()) if data.cell_pop is not None else n1
            d = fc - fb
            dbar = np.sum(w * d) / np.sum(w)
            f_var = max(1.0 / max(n1, 1.0) - 1.0 / max(N, 1.0), 0.0) * float(np.sum(w * (d - dbar) ** 2) / np.sum(w))
        ppi = crosscheck.ppi_mean_interval(yc - yb, fc - fb, f_pop[cand] - f_pop[base], w, mass, f_pop_var=f_var)
        out.append({"dimension": dim, "baseline": base, "candidate": cand, "method": "ppi++",
                    "mean": ppi["mean"], "lo": ppi["lo"], "hi": ppi["hi"], "lambda": ppi["lam"], "n": len(both)})
    return out


# --------------------------------------------------------------------------- forecast


def label_watermark(con: duckdb.DuckDBPyConnection) -> int:
    """The newest label id (pointwise or pairwise): a fit records it, so a page knows whether
    labels arrived since."""
    return int(con.execute("SELECT coalesce(max(label_id), 0) FROM labels").fetchone()[0]
               + con.execute("SELECT coalesce(max(label_id), 0) FROM pair_labels").fetchone()[0])


@one_blas_thread
def forecast_project(con: duckdb.DuckDBPyConnection, extra: list[int], target_width: float | None = None,
                     margin: float | None = None, seed: int = 0) -> dict:
    """Expected interval width of Delta after each number of extra labelled items, the chance of a
    decision, and the labels needed to reach the target width, per dimension and candidate."""
    s = store.get_settings(con)
    margin = s["margin"] if margin is None else margin
    target = s["target_width"] if target_width is None else target_width
    models = store.models(con)
    base = s["baseline"]
    ensure_cells(con)
    z = crosscheck._z(s["interval"])
    out = {"extra": extra, "target_width": target, "margin": margin, "forecasts": []}
    for dim in s["dimensions"]:
        data, lab, _ = load_dimension(con, dim, models)
        post = model.fit_laplace(data, draws=2000, seed=seed)
        cands = [m for m in models if m != base]
        per_cand = candidate_rates(con, data, post, lab, model.population_rate_draws(data, post, seed=seed), models,
                                   base, cands, seed)
        out["forecasts"] += _forecast_dimension(dim, data, post, per_cand[cands[0]][0], models, base, extra, target,
                                                margin, decide_prob_per_candidate(s["decide_prob"], len(cands)), z,
                                                s["min_decision_items"], s["forecast_prior_sd"],
                                                rates_by_cand={c: r for c, (r, _) in per_cand.items()},
                                                anytime=_signoff_rule(s, decide_prob_per_candidate(
                                                    s["decide_prob"], len(cands)), margin)["anytime"])
    return out


def _forecast_dimension(dim, data, post, rates, models, base, extra, target, margin, decide_prob, z,
                        min_items: int = 0, prior_sd: float = 0.1, rates_by_cand: dict | None = None,
                        anytime: tuple[float, int] | None = None) -> list[dict]:
    """Forecast entries of one dimension (see ``forecast_project``): the design-consistent Delta's
    sd after k more labelled items (``forecast.design_sd_function``), and the chance of a decision
    (preposterior normal; none before ``min_items`` labelled items, the decision rule's minimum)."""
    out = []
    N = int(data.cell_n[data.cell_model == 0].sum())
    unl_items = int((data.cell_n - data.cell_lab_items)[data.cell_model == 0].sum())
    # the residual variance of a label once the calibration is learnt: E over the posterior of
    # p(1-p) (with no labels the posterior is the prior, whose draws are far from 1/2 in most
    # cells; p-bar(1-p-bar) at the posterior mean would say 0.25 everywhere)
    pe = model.expit_fast(model.eta_draws(data, model.Posterior(
        theta=post.theta[:200], sigma=post.sigma[:200], tau=post.tau[:200], kind=post.kind)))
    v = (pe * (1 - pe)).mean(0)
    for c in [m for m in models if m != base]:
        bi, ci = models.index(base), models.index(c)
        rc = (rates_by_cand or {}).get(c, rates)  # each candidate's own pair estimate and labelled items
        info = getattr(rc, "info", {}) or {}
        overall = info.get("domains", {}).get("overall", {})
        n_now = int(overall.get("items", 0)) if overall.get("estimator") == "design" else 0
        delta = rc.overall[c] - rc.overall[base]
        mean, sd = float(delta.mean()), float(delta.std())
        s2_model = sum(float((v * data.cell_n)[data.cell_model == m].sum() / max(data.cell_n[data.cell_model == m].sum(), 1))
                       for m in (bi, ci))
        pc = overall.get("phase1_cov") or {}
        fixed = (pc[c][c] + pc[base][base] - 2 * pc[base][c]) if c in pc and base in pc else 0.0
        sd_fn = forecast.design_sd_function(sd, n_now, N, s2_model, design.MIN_ITEMS,
                                            forecast.sampler_mixture(data, post, bi, ci)["ratio"],  # the queue's mixture
                                            fixed_var=fixed)

        def p_decision(k: int) -> float:
            if n_now + k < min_items:
                return 0.0
            # in anytime mode the decision needs the confidence sequence's wider bound at n_now + k
            need = decide_prob if anytime is None else sequential.equivalent_threshold(n_now + k, *anytime)
            return forecast.preposterior_decision_probability(mean, sd, n_now, k, sd_fn.s2, sd_fn(k), margin,
                                                              need, prior_sd)
        out.append({
            "dimension": dim, "baseline": base, "candidate": c, "mean": mean, "width_now": 2 * z * sd,
            "target_width": target, "labelled_items": n_now,
            "basis": "labels and judges" if n_now else "the judges alone (no design estimate before labels)",
            "steps": [{"extra": k, "width": 2 * z * sd_fn(k), "p_decision": p_decision(k)} for k in extra],
            "labels_for_target_width": forecast.labels_for_width(sd_fn, target, unl_items, z),
        })
    return out


# Parsed ``fits_history`` rows per recorded fit, by (fit_id, created_at, kind, n_labels, seconds):
# fits are written once and never changed, and the time to the microsecond with the fit's own
# run time tells two databases' fits apart. A live dashboard refits after every labelled item, so
# at 2,000 labels it has ~2,000 fits of ~21 kB of JSON each: parsing them all took 0.8-1.0 s on
# every refresh; now only the new fit is read.
_HISTORY_ROWS: dict[tuple, list[dict]] = {}
_HISTORY_LOCK = threading.Lock()
_HISTORY_FIELDS = ("dimension", "candidate", "mean", "lo", "hi", "p_noninferior", "decision")


def _history_rows(head: tuple, result: str) -> list[dict]:
    fid, at, kind, n, secs = head
    return [{"fit_id": fid, "created_at": at, "kind": kind, "n_labels": n, "seconds": secs,
             **{k: d[k] for k in _HISTORY_FIELDS}} for d in json.loads(result)["diffs"]]


def fits_history(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Every recorded fit, oldest first: id, time, kind, labels and the Delta intervals (one row
    per fit and Delta). Fits already read in this process are not parsed again."""
    heads = [tuple(h) for h in con.execute(
        "SELECT fit_id, created_at, kind, n_labels, seconds FROM fits ORDER BY fit_id").fetchall()]
    with _HISTORY_LOCK:
        missing = [h for h in heads if h not in _HISTORY_ROWS]
    if missing:
        new = con.execute("SELECT fit_id, created_at, kind, n_labels, seconds, result FROM fits "
                          "WHERE fit_id IN (SELECT unnest(?::BIGINT[]))", [[h[0] for h in missing]]).fetchall()
        parsed = {tuple(r[:5]): _history_rows(tuple(r[:5]), r[5]) for r in new}
        with _HISTORY_LOCK:
            _HISTORY_ROWS.update(parsed)
    with _HISTORY_LOCK:
        return [dict(r) for h in heads for r in _HISTORY_ROWS[h]]  # copies: a caller may change its rows


def latest_fit(con: duckdb.DuckDBPyConnection, kind: str | None = None) -> dict | None:
    """The newest recorded fit's result (of ``kind`` when given), or None."""
    sql = "SELECT result FROM fits" + (" WHERE kind = ?" if kind else "") + " ORDER BY fit_id DESC LIMIT 1"
    row = con.execute(sql, [kind] if kind else []).fetchall()
    return json.loads(row[0][0]) if row else None
