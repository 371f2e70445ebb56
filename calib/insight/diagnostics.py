"""Judge diagnostics against the SMEs: agreement (Cohen's kappa with a bootstrap interval and the
confusion matrix), calibration curves, judge-judge disagreement, and whether a judge's bias
differs between the two models (the reason calibration is fitted per model).

A judge "passes" an output when its score reaches the judge's threshold in ``judge_scale`` (the
same threshold the judge-only cross-check uses). The SME verdict of an output is the majority
of its annotators' latest labels (ties count as fail).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from calib.data import cells, store
from calib.stats import engine
from calib.stats.crosscheck import wilson_interval

BOOT = 400


def labelled_judgements(con: duckdb.DuckDBPyConnection, max_label_id: int | None = None) -> pd.DataFrame:
    """One row per labelled (item, model, dimension, judge): SME verdict, judge score, judge pass.

    Sorted by (item, model, dimension, judge): a parallel hash join returns its rows in a different
    order from run to run, and the bootstraps that resample these rows (judge fitness, agreement)
    must give the same intervals on the same data. (Cutting judge_scores to the labelled items by
    a semi-join first gains nothing measurable: DuckDB already pushes the join's filter into the
    scan of every score, which is the floor of this query's cost.)"""
    cells.ensure_cells(con)
    return con.execute(
        """WITH latest AS (
               SELECT item_id, model, dimension, annotator, verdict FROM labels WHERE label_id <= ?
               QUALIFY row_number() OVER (PARTITION BY item_id, model, dimension, annotator
                                          ORDER BY created_at DESC, label_id DESC) = 1),
           sme AS (SELECT item_id, model, dimension, avg(verdict::INT) > 0.5 AS sme_pass
                   FROM latest GROUP BY ALL)
           SELECT s.item_id, s.model, s.dimension, j.judge, j.score, j.score >= k.threshold AS judge_pass, s.sme_pass
           FROM sme s JOIN judge_scores j USING (item_id, model, dimension)
           JOIN judge_scale k ON k.judge = j.judge AND k.dimension = j.dimension
           ORDER BY s.item_id, s.model, s.dimension, j.judge""",
        [engine.MAX_ID if max_label_id is None else max_label_id]).fetch_df()


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary raters (nan when agreement by chance is total)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    po = np.mean(a == b)
    pa, pb = a.mean(), b.mean()
    pe = pa * pb + (1 - pa) * (1 - pb)
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def _kappa_boot(a: np.ndarray, b: np.ndarray, rng) -> tuple[float, float]:
    n = len(a)
    idx = rng.integers(0, n, size=(BOOT, n))
    A, B = a[idx], b[idx]
    po = (A == B).mean(1)
    pa, pb = A.mean(1), B.mean(1)
    pe = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    k = k[~np.isnan(k)]
    if not len(k):
        return float("nan"), float("nan")
    lo, hi = np.quantile(k, [0.025, 0.975])
    return float(lo), float(hi)


def judge_agreement(con: duckdb.DuckDBPyConnection, seed: int = 0) -> list[dict]:
    """Per judge and dimension: labelled outputs, Cohen's kappa with a 95% bootstrap interval, the
    confusion matrix (judge pass/fail x SME pass/fail), accuracy."""
    df = labelled_judgements(con)
    rng = np.random.default_rng(seed)
    out = []
    for (judge, dim), g in df.groupby(["judge", "dimension"], sort=True):
        a, b = g.judge_pass.to_numpy(bool), g.sme_pass.to_numpy(bool)
        lo, hi = _kappa_boot(a, b, rng) if len(g) >= 5 else (float("nan"), float("nan"))
        out.append({"judge": judge, "dimension": dim, "n": len(g), "kappa": cohen_kappa(a, b), "kappa_lo": lo,
                    "kappa_hi": hi, "accuracy": float(np.mean(a == b)),
                    "judge_pass_sme_pass": int(np.sum(a & b)), "judge_pass_sme_fail": int(np.sum(a & ~b)),
                    "judge_fail_sme_pass": int(np.sum(~a & b)), "judge_fail_sme_fail": int(np.sum(~a & ~b))})
    return out


def _model_order(con: duckdb.DuckDBPyConnection):
    """A sort key for model names: the baseline, then the candidates in the settings' order, then any
    other model by name (so every per-model table and plot lists them the same way)."""
    rank = {m: i for i, m in enumerate(store.models(con))}
    return lambda m: (rank.get(m, len(rank)), m)


def _roles(con: duckdb.DuckDBPyConnection):
    """A function model -> 'baseline', 'candidate' or 'other' (a model the settings name as neither)."""
    s = store.get_settings(con)
    base, cands = s["baseline"], set(s["candidates"] or [])
    return lambda m: "baseline" if m == base else "candidate" if m in cands else "other"


def calibration_curve(con: duckdb.DuckDBPyConnection, judge: str, dimension: str, bins: int = 5) -> list[dict]:
    """SME pass rate (Wilson 95% interval) against the judge's score, in score-quantile bins, per
    model (every labelled model: the baseline first, then the candidates in the settings' order);
    ``role`` says which is the baseline, so a plot or table can name it."""
    df = labelled_judgements(con)
    df = df[(df.judge == judge) & (df.dimension == dimension)]
    if df.empty:
        return []
    values = np.unique(df.score)
    if len(values) <= bins:  # a pass/fail or Likert judge: one bin per score it gives
        edges = np.append(values, values[-1] + 1e-9)
    else:
        edges = np.unique(np.quantile(df.score, np.linspace(0, 1, bins + 1)))
    df = df.assign(bin=np.clip(np.searchsorted(edges, df.score, side="right") - 1, 0, len(edges) - 2))
    order, role = _model_order(con), _roles(con)
    out = []
    for (m, b), g in df.groupby(["model", "bin"], sort=True):
        mean, lo, hi = wilson_interval(float(g.sme_pass.sum()), float(len(g)))
        out.append({"model": m, "role": role(m), "bin": int(b), "score_mean": float(g.score.mean()),
                    "score_lo": float(edges[b]), "score_hi": float(edges[b + 1]), "n": len(g), "sme_pass_rate": mean,
                    "lo": lo, "hi": hi})
    return sorted(out, key=lambda r: (order(r["model"]), r["bin"]))


def judge_bias_by_model(con: duckdb.DuckDBPyConnection, seed: int = 0) -> list[dict]:
    """Per judge and dimension: the judge's bias (judge pass rate - SME pass rate on the same
    labelled outputs) for each model, and the candidate-minus-baseline difference of the bias with
    a 95% bootstrap interval; ``differs`` when that interval excludes 0 (the judge favours one model).
    One row per candidate of the settings (in their order) with 5 or more labelled outputs of it and
    of the baseline; a labelled model the settings no longer name as a candidate is left out."""
    s = store.get_settings(con)
    base, cands = s["baseline"], list(s["candidates"] or [])
    df = labelled_judgements(con)
    rng = np.random.default_rng(seed)
    out = []
    for (judge, dim), g in df.groupby(["judge", "dimension"], sort=True):
        err = (g.judge_pass.astype(int) - g.sme_pass.astype(int)).to_numpy(float)
        by = {m: err[(g.model == m).to_numpy()] for m in g.model.unique()}
        for cand in [m for m in cands if m in by and m != base]:
            if base not in by or len(by[base]) < 5 or len(by[cand]) < 5:
                continue
            eb, ec = by[base], by[cand]
            boot = (ec[rng.integers(0, len(ec), (BOOT, len(ec)))].mean(1)
                    - eb[rng.integers(0, len(eb), (BOOT, len(eb)))].mean(1))
            lo, hi = np.quantile(boot, [0.025, 0.975])
            out.append({"judge": judge, "dimension": dim, "baseline": base, "candidate": cand,
                        "bias_baseline": float(eb.mean()), "bias_candidate": float(ec.mean()),
                        "bias_difference": float(ec.mean() - eb.mean()), "lo": float(lo), "hi": float(hi),
                        "differs": bool(lo > 0 or hi < 0), "n_baseline": len(eb), "n_candidate": len(ec)})
    return out


def judge_disagreement(con: duckdb.DuckDBPyConnection, sample: int = 200_000) -> list[dict]:
    """Per dimension, pair of judges and model, over (a uniform sample of up to ``sample``) outputs:
    how often their pass/fail verdicts differ, and Cohen's kappa between them. Per model (the
    baseline first, then the candidates), because judges that agree on the baseline's outputs and
    not on a candidate's are one reason to trust them less on that candidate; ``role`` names the
    baseline."""
    cells.ensure_cells(con)
    n = con.execute("SELECT count(*) FROM outputs").fetchone()[0]
    pct = min(100.0, 100.0 * sample / max(n, 1))
    df = con.execute(
        f"""WITH o AS (SELECT item_id, model FROM outputs USING SAMPLE {pct:.6f} PERCENT (bernoulli, 7))
            SELECT j.item_id, j.model, j.dimension, j.judge, j.score >= k.threshold AS p
            FROM judge_scores j JOIN o USING (item_id, model)
            JOIN judge_scale k ON k.judge = j.judge AND k.dimension = j.dimension""").fetch_df()
    order, role = _model_order(con), _roles(con)
    out = []
    for dim, g in df.groupby("dimension", sort=True):
        wide = g.pivot_table(index=["item_id", "model"], columns="judge", values="p", aggfunc="first")
        js = list(wide.columns)
        models = sorted(wide.index.get_level_values("model").unique(), key=order)
        for i in range(len(js)):
            for j in range(i + 1, len(js)):
                pair = wide[[js[i], js[j]]].dropna()
                for m in models:
                    both = pair[pair.index.get_level_values("model") == m]
                    if len(both) == 0:
                        continue
                    a, b = both[js[i]].to_numpy(bool), both[js[j]].to_numpy(bool)
                    out.append({"dimension": dim, "judge_a": js[i], "judge_b": js[j], "model": m,
                                "role": role(m), "n": len(both), "disagree_share": float(np.mean(a != b)),
                                "kappa": cohen_kappa(a, b)})
    return out
