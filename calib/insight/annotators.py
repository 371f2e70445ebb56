"""SME diagnostics: inter-annotator agreement (Krippendorff's alpha with a bootstrap interval),
throughput and time per item, position bias (left-side preference) and drift over a session."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pandas as pd

from calib.data import store
from calib.stats.crosscheck import wilson_interval

BOOT = 500


def krippendorff_alpha_nominal(units: list[list]) -> float:
    """Krippendorff's alpha for nominal data; ``units`` holds each unit's values (one per coder,
    missing coders left out). Units with fewer than two values carry no information and are dropped.
    alpha = 1 - D_o / D_e from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability")."""
    o: Counter = Counter()
    for vals in units:
        m = len(vals)
        if m < 2:
            continue
        counts = Counter(vals)
        for c, nc in counts.items():
            for k, nk in counts.items():
                o[(c, k)] += nc * (nk - (c == k)) / (m - 1)
    if not o:
        return float("nan")
    cats = sorted({c for c, _ in o})
    n_c = {c: sum(o[(c, k)] for k in cats) for c in cats}
    n = sum(n_c.values())
    d_o = sum(o[(c, k)] for c in cats for k in cats if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in cats for k in cats if c != k) / (n * (n - 1))
    return float(1 - d_o / d_e) if d_e > 0 else float("nan")


def _latest_pointwise(con) -> pd.DataFrame:
    return con.execute(
        """SELECT item_id, model, dimension, annotator, verdict, created_at, duration_ms, label_id FROM labels
           QUALIFY row_number() OVER (PARTITION BY item_id, model, dimension, annotator
                                      ORDER BY created_at DESC, label_id DESC) = 1""").fetch_df()


def agreement(con: duckdb.DuckDBPyConnection, seed: int = 0) -> list[dict]:
    """Per dimension: Krippendorff's alpha over outputs labelled by two or more SMEs, with a 95%
    bootstrap interval (resampling those outputs), and how many such outputs exist."""
    df = _latest_pointwise(con)
    rng = np.random.default_rng(seed)
    out = []
    for dim, g in df.groupby("dimension", sort=True):
        units = [list(v) for v in g.groupby(["item_id", "model"]).verdict.agg(list) if len(v) >= 2]
        row = {"dimension": dim, "units": len(units), "alpha": float("nan"), "lo": float("nan"), "hi": float("nan")}
        if units:
            row["alpha"] = krippendorff_alpha_nominal(units)
            boots = [krippendorff_alpha_nominal([units[i] for i in rng.integers(0, len(units), len(units))])
                     for _ in range(BOOT)]
            boots = np.array([b for b in boots if not np.isnan(b)])
            if len(boots):
                row["lo"], row["hi"] = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
        out.append(row)
    return out


def throughput(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per SME: comparisons rated (``units``: distinct (item, candidate) units, what an SME rates
    once per submit; re-rated after an undo counts once) and per candidate (``by_candidate``), distinct
    items, label rows (one per item, model, dimension and rating), median and p90 seconds per rating
    (the form's timer), ratings per hour of rating time, hours of rating time, first and last rating.

    A label's candidate is its lease's (``leases.candidate``); a label without a lease (imported) or
    whose lease has none (from before units were (item, candidate)) counts for the first candidate,
    as ``labelling.undo_last`` does."""
    first = store.first_candidate(con)
    per_unit = con.execute(
        """SELECT l.annotator, l.item_id, coalesce(e.candidate, ?) AS candidate, l.lease_id,
                  max(l.duration_ms) AS ms, min(l.created_at) AS t_first, count(*) AS labels
           FROM labels l LEFT JOIN leases e ON e.lease_id = l.lease_id
           GROUP BY l.annotator, l.lease_id, l.item_id, 3""", [first]).fetch_df()
    if per_unit.empty:
        return []
    out = []
    for ann, g in per_unit.groupby("annotator", sort=False):
        units = g[["item_id", "candidate"]].drop_duplicates()
        ms = g.ms.dropna().to_numpy(float)
        seconds = ms.sum() / 1000
        out.append({
            "annotator": ann, "units": len(units), "items": int(g.item_id.nunique()),
            "by_candidate": {str(c): int(n) for c, n in units.candidate.value_counts(sort=False).items()},
            "labels": int(g.labels.sum()),
            "median_s": float(np.median(ms)) / 1000 if len(ms) else None,
            "p90_s": float(np.quantile(ms, 0.9)) / 1000 if len(ms) else None,
            "units_per_hour": 3600 * len(ms) / seconds if seconds > 0 else None,
            "hours": seconds / 3600 if len(ms) else None,
            "first_at": g.t_first.min(), "last_at": g.t_first.max()})
    rank = {c: i for i, c in enumerate(store.get_settings(con)["candidates"] or [])}
    key = lambda kv: (rank.get(kv[0], len(rank)), kv[0])  # noqa: E731 - the settings' order, then by name
    for r in out:
        r["by_candidate"] = dict(sorted(r["by_candidate"].items(), key=key))
    return sorted(out, key=lambda r: (-r["units"], r["annotator"]))


def position_bias(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per SME: how often the preferred answer was the one shown on the left (ties left out), with a
    Wilson 95% interval; 0.5 is no bias (sides are random per item, candidate and SME). Over every
    candidate's comparisons: position bias is the SME's, whichever pair they see."""
    rows = con.execute(
        """SELECT annotator,
                  count(*) FILTER (WHERE preference <> 'tie' AND left_model IS NOT NULL) AS decided,
                  count(*) FILTER (WHERE (preference = 'candidate' AND left_model = candidate)
                                      OR (preference = 'baseline' AND left_model = baseline)) AS left_chosen
           FROM pair_labels GROUP BY annotator ORDER BY annotator""").fetchall()
    out = []
    for ann, decided, left in rows:
        if decided:
            mean, lo, hi = wilson_interval(float(left), float(decided))
            out.append({"annotator": ann, "decided": decided, "left_rate": mean, "lo": lo, "hi": hi,
                        "biased": bool(lo > 0.5 or hi < 0.5)})
    return out


def drift(con: duckdb.DuckDBPyConnection, parts: int = 3) -> list[dict]:
    """Per SME and dimension: pass rate and median seconds per item in the first and the last
    ``parts``-th of their labels (in time order), and the change, to spot fatigue or a shifting bar."""
    df = _latest_pointwise(con).sort_values(["annotator", "created_at", "label_id"])
    out = []
    for (ann, dim), g in df.groupby(["annotator", "dimension"], sort=True):
        if len(g) < 2 * parts:
            continue
        k = len(g) // parts
        first, last = g.iloc[:k], g.iloc[-k:]
        out.append({"annotator": ann, "dimension": dim, "labels": len(g),
                    "pass_rate_first": float(first.verdict.mean()), "pass_rate_last": float(last.verdict.mean()),
                    "pass_rate_change": float(last.verdict.mean() - first.verdict.mean()),
                    "median_s_first": float(first.duration_ms.median() / 1000) if first.duration_ms.notna().any() else None,
                    "median_s_last": float(last.duration_ms.median() / 1000) if last.duration_ms.notna().any() else None})
    return out
