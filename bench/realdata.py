"""Honest intervals on real data, through the product's own path (issue #12).

SummEval (../shared/datasets/summeval_flat_with_rouge.jsonl): for each system pair (baseline,
candidate) the 100 documents' summaries of the two systems are imported as outputs with
ROUGE-1/2/L as judges of all four dimensions (`tiebreak import`'s code, `calib.data.ingest`); a
summary passes a dimension when its human mean is >= 4; the truth is every human rating.
Labels are chosen two ways:
- random: a uniform random sample of n documents, imported as SME labels (`labels import`: no
  queue record, so Tiebreak declares them a uniform sample);
- queue: Tiebreak's own queue (`calib.review.queue`: refill, lease, submit the true human verdicts
  of every dimension), exactly as an SME in the app.
At n = 10, 20, 40, 60 labelled documents (nested) the product's fit (`engine.fit_project(con,
"fast")`) gives Delta's 95% interval per dimension; beside it, on the same labels: human-only
(paired mean, weighted by the recorded inclusion probabilities), PPI++ with ppi_py (`ppi_mean_ci`,
power-tuned, on the judges' consensus pass share; queue design: our weighted PPI++), PPI++ with a
finite-population correction, and CJE (cje-eval `calibrated_mean_ci` per model on the mean ROUGE
score, cross-fitted isotonic calibration; Delta's SE combined as if the models were independent,
which is conservative for paired data; random design only, CJE assumes equal-probability labels).

Prints per design x size x method: coverage of Delta (pooled over pairs and dimensions), mean width,
Tiebreak's width over each method's, and each method's width at equal empirical coverage (intervals
rescaled about their midpoints until 95% of replicates cover).

    .venv/bin/python bench/realdata.py --reps 200 --queue-reps 60        # the full study
    .venv/bin/python bench/realdata.py --reps 20 --queue-reps 5          # a quick look

Needs the bench extra: `.venv/bin/pip install -e ".[bench]"` (ppi-python, cje-eval).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# bench/coverage.py would shadow the `coverage` package numba imports: drop bench/ from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calib.data import cells, ingest, store  # noqa: E402
from calib.review import queue  # noqa: E402
from calib.stats import crosscheck, engine  # noqa: E402

logging.getLogger("cje").setLevel(logging.ERROR)

SIZES = (10, 20, 40, 60)
PAIRS = [("M11", "M20"), ("M10", "M12"), ("M11", "M23")]
DIMS = ["coherence", "consistency", "fluency", "relevance"]
JUDGES = {"rouge1": "rouge1_f", "rouge2": "rouge2_f", "rougeL": "rougeL_f"}
DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "summeval_flat_with_rouge.jsonl"
PANDALM = DEFAULT.parent / "pandalm_merged.jsonl"
PANDA_PAIRS = [("bloom-7b", "pythia-6.9b"), ("cerebras-gpt-6.7B", "opt-7b"), ("llama-7b", "pythia-6.9b"),
               ("bloom-7b", "llama-7b")]
PANDA_JUDGES = {"gpt35": "judge_gpt35", "pandalm7b": "judge_pandalm7b"}
WIN = {1: 0.0, 2: 1.0, 0: 0.5}  # PandaLM verdict (1 = response1 = baseline better) -> candidate's win score
PREF = {1: "baseline", 2: "candidate", 0: "tie"}


# --------------------------------------------------------------------------- project building


def _outputs(df: pd.DataFrame, base: str, cand: str) -> pd.DataFrame:
    sub = df[df.system.isin([base, cand])]
    out = pd.DataFrame({"item_id": "doc" + sub.doc_id.astype(str), "model": sub.system,
                        "prompt": "Summarise the article.", "output": sub.summary.fillna("").replace("", "(empty)"),
                        "reference": sub.reference})
    for j, col in JUDGES.items():
        for d in DIMS:
            out[f"judge:{j}:{d}"] = sub[col].to_numpy(float)
    return out


def _truth(df: pd.DataFrame, base: str, cand: str) -> dict:
    """{(item_id, model, dim): pass} and the true Delta per dimension."""
    sub = df[df.system.isin([base, cand])]
    verdict = {}
    for r in sub.itertuples():
        for d in DIMS:
            verdict[(f"doc{r.doc_id}", r.system, d)] = bool(getattr(r, f"human_{d}") >= 4)
    delta, rate = {}, {}
    for d in DIMS:
        for m in (base, cand):
            rate[(m, d)] = float(sub[sub.system == m][f"human_{d}"].ge(4).mean())
        pc = sub[sub.system == cand][f"human_{d}"].ge(4).mean()
        pb = sub[sub.system == base][f"human_{d}"].ge(4).mean()
        delta[d] = float(pc - pb)
    return {"verdict": verdict, "delta": delta, "rate": rate}


def build_base(df: pd.DataFrame, base: str, cand: str, folder: Path, random_share: float | None = None) -> Path:
    db = folder / f"{base}_{cand}.duckdb"
    path = folder / f"{base}_{cand}.parquet"
    _outputs(df, base, cand).to_parquet(path, index=False)
    con = store.connect(db)
    ingest.import_file(con, path, baseline=base)
    cells.ensure_cells(con)
    if random_share is not None:  # 1.0: the queue's batches uniform (the sampler's mixture off)
        store.set_settings(con, random_share=random_share)
    con.close()
    return db


def _panda(df: pd.DataFrame, base: str, cand: str) -> pd.DataFrame:
    return df[(df.model_1 == base) & (df.model_2 == cand)].assign(item_id=lambda x: "p" + x.idx.astype(str))


def build_panda_base(df: pd.DataFrame, base: str, cand: str, folder: Path) -> Path:
    """A pairwise-only project: the two responses as outputs (an empty response stays empty), each
    automated judge's verdicts as ``pref:<judge>:overall``; no pointwise judge."""
    sub = _panda(df, base, cand)
    db = folder / f"panda_{base}_{cand}.duckdb"
    prompt = (sub.instruction.fillna("") + "\n\n" + sub.input.fillna("")).str.strip()
    outs = pd.concat([pd.DataFrame({"item_id": sub.item_id, "model": base, "prompt": prompt, "output": sub.response1.fillna("").astype(str)}),
                      pd.DataFrame({"item_id": sub.item_id, "model": cand, "prompt": prompt, "output": sub.response2.fillna("").astype(str)})])
    con = store.connect(db)
    outs.to_parquet(folder / "o.parquet", index=False)
    ingest.import_file(con, folder / "o.parquet", baseline=base)
    for j, col in PANDA_JUDGES.items():
        js = sub[sub[col].notna()]
        prefs = pd.DataFrame({"item_id": js.item_id, "baseline": base, "candidate": cand,
                              f"pref:{j}:overall": js[col].astype(int).map(WIN)})
        prefs.to_parquet(folder / f"{j}.parquet", index=False)
        ingest.import_file(con, folder / f"{j}.parquet", add_judge=True)
    cells.ensure_cells(con)
    con.close()
    return db


def panda_replicate(args) -> list[dict]:
    """One replicate of the win rate on one PandaLM model pair: labels (the human majority) chosen at
    random (`labels import`) or by the queue (lease/submit the preference), fit at each size."""
    base_db, base, cand, design, rep, data_path = args
    sub = _panda(pd.read_json(data_path, lines=True), base, cand)
    win = dict(zip(sub.item_id, sub.human_majority.map(WIN)))
    pref = dict(zip(sub.item_id, sub.human_majority.map(PREF)))
    truth = float(np.mean(list(win.values())))
    jmean = sub[[*PANDA_JUDGES.values()]].apply(lambda c: c.map(WIN)).mean(axis=1).fillna(0.5)
    judge = dict(zip(sub.item_id, jmean))
    N = len(sub)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.duckdb"
        shutil.copy(base_db, db)
        con = store.connect(db)
        rng = np.random.default_rng([rep, 2025])
        order = list(rng.permutation(sorted(win)))
        done: list[str] = []
        for n in SIZES:
            if design == "random":
                new = order[len(done):n]
                path = Path(tmp) / f"l{n}.csv"
                pd.DataFrame({"item_id": new, "baseline": base, "candidate": cand, "dimension": "overall",
                              "preference": [pref[i] for i in new], "annotator": "human"}).to_csv(path, index=False)
                ingest.import_labels(con, path)
                done += new
            else:
                while len(done) < n:
                    lease = queue.next_item(con, "sme")
                    if lease is None:
                        queue.refill(con, 10, seed=rep * 1000 + len(done))
                        lease = queue.next_item(con, "sme")
                    if lease is None:
                        break
                    queue.submit(con, lease.lease_id, "sme", {}, preference=pref[lease.item_id])
                    done.append(lease.item_id)
            fit = engine.fit_project(con, "fast", record=False, seed=rep)
            pr = [p for p in fit["preference"] if p["candidate"] == cand and p["dimension"] == "overall"]
            rows = [{"method": "tiebreak", "lo": pr[0]["lo"], "hi": pr[0]["hi"]}] if pr else []
            y = np.array([win[i] for i in done])
            f = np.array([judge[i] for i in done])
            w = _panda_weights(con, done, N)
            m = np.sum(w * y) / np.sum(w)
            se = np.sqrt(np.sum((w / w.sum()) ** 2 * (y - m) ** 2) * len(y) / max(len(y) - 1, 1) * (1 - len(y) / N))
            q = _t(len(y))
            rows.append({"method": "human-only", "lo": m - q * se, "hi": m + q * se})
            if design == "random" and len(y) >= 3:
                from ppi_py import ppi_mean_ci

                fu = np.array([judge[i] for i in win if i not in set(done)])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    lo, hi = ppi_mean_ci(y, f, fu, alpha=0.05)
                rows.append({"method": "ppi++ (ppi_py)", "lo": float(np.ravel(lo)[0]), "hi": float(np.ravel(hi)[0])})
                mid, half = (rows[-1]["lo"] + rows[-1]["hi"]) / 2, (rows[-1]["hi"] - rows[-1]["lo"]) / 2
                half *= np.sqrt(1 - len(y) / N)
                rows.append({"method": "ppi++ fpc", "lo": mid - half, "hi": mid + half})
                from cje import calibrated_mean_ci

                ids = sorted(win)
                oracle = np.array([win[i] if i in set(done) else np.nan for i in ids])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        r = calibrated_mean_ci(np.array([judge[i] for i in ids]), oracle, alpha=0.05, seed=0)
                rows.append({"method": "cje", "lo": float(r.ci[0]), "hi": float(r.ci[1])})
            for r in rows:
                out.append({"data": "pandalm", "design": design, "n": n, "pair": f"{base}/{cand}", "rep": rep, "dim": "win rate", **r,
                            "width": r["hi"] - r["lo"], "covered": r["lo"] <= truth <= r["hi"],
                            "scaled_err": abs(truth - (r["lo"] + r["hi"]) / 2) / max((r["hi"] - r["lo"]) / 2, 1e-9)})
        con.close()
    return out


def _panda_weights(con, items: list[str], N: int) -> np.ndarray:
    w, _ = engine.design_weights(con, np.array(items, dtype=object), N)
    return np.asarray(w, float)


def _t(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, max(n - 1, 1)))


# --------------------------------------------------------------------------- peers


def _peer_intervals(con, fit: dict, truth: dict, design: str, df_scores: pd.DataFrame, base: str, cand: str) -> list[dict]:
    """Human-only and PPI++ from the fit's cross-checks; ppi_py, PPI++ with FPC and CJE computed here."""
    rows = []
    N = 100
    for d in DIMS:
        dd = [x for x in fit["diffs"] if x["dimension"] == d][0]
        rows.append({"method": "tiebreak", "dim": d, "lo": dd["lo"], "hi": dd["hi"]})
        for ch in fit["cross_checks"]:
            if ch["dimension"] == d and ch["method"] in ("human-only", "model-only") and ch.get("lo") is not None:
                rows.append({"method": ch["method"], "dim": d, "lo": ch["lo"], "hi": ch["hi"]})
        data, lab, f_pop = engine.load_dimension(con, d, [base, cand])
        t = pd.DataFrame({"item": lab.item_id, "m": lab.model, "y": lab.y, "f": lab.f, "w": lab.w})
        b, c = t[t.m == 0].set_index("item"), t[t.m == 1].set_index("item")
        both = b.index.intersection(c.index)
        b, c = b.loc[both], c.loc[both]
        n = len(both)
        if n < 3:
            continue
        y = c.y.to_numpy() - b.y.to_numpy()
        f = c.f.to_numpy() - b.f.to_numpy()
        fpop = f_pop[cand] - f_pop[base]
        w = c.w.to_numpy()
        ppi = crosscheck.ppi_mean_interval(y, f, fpop, w, 0.95)
        half = (ppi["hi"] - ppi["lo"]) / 2 * np.sqrt(max(1 - n / N, 0.0))
        rows.append({"method": "ppi++ fpc", "dim": d, "lo": ppi["mean"] - half, "hi": ppi["mean"] + half})
        if design == "random":
            from ppi_py import ppi_mean_ci

            fu = df_scores.loc[(d, cand)].to_numpy() - df_scores.loc[(d, base)].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lo, hi = ppi_mean_ci(y, f, fu, alpha=0.05)
            rows.append({"method": "ppi++ (ppi_py)", "dim": d, "lo": float(np.ravel(lo)[0]), "hi": float(np.ravel(hi)[0])})
            rows.append(_cje(con, d, base, cand, set(both), truth))
        else:
            rows.append({"method": "ppi++ (weighted)", "dim": d, "lo": ppi["lo"], "hi": ppi["hi"]})
    return rows


def _cje(con, d, base, cand, labelled: set, truth: dict) -> dict:
    from cje import calibrated_mean_ci

    est = {}
    for m in (base, cand):
        rows = con.execute("""SELECT item_id, avg(score) FROM judge_scores s
                              JOIN judge_scale k USING (judge, dimension)
                              WHERE model = ? AND dimension = ? GROUP BY item_id ORDER BY item_id""", [m, d]).fetchall()
        ids = [r[0] for r in rows]
        score = np.array([r[1] for r in rows], float)
        oracle = np.array([float(truth["verdict"][(i, m, d)]) if i in labelled else np.nan for i in ids])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                r = calibrated_mean_ci(score, oracle, alpha=0.05, seed=0)
        est[m] = (float(r.estimate), float(r.se) if hasattr(r, "se") else (float(r.ci_upper) - float(r.ci_lower)) / 3.92)
    mean = est[cand][0] - est[base][0]
    se = np.hypot(est[cand][1], est[base][1])
    return {"method": "cje", "dim": d, "lo": mean - 1.96 * se, "hi": mean + 1.96 * se}


# --------------------------------------------------------------------------- one replicate


def _label_rows(items, base, cand, truth) -> pd.DataFrame:
    rows = []
    for it in items:
        for m in (base, cand):
            for d in DIMS:
                rows.append({"item_id": it, "model": m, "dimension": d,
                             "verdict": "pass" if truth["verdict"][(it, m, d)] else "fail", "annotator": "human"})
    return pd.DataFrame(rows)


def replicate(args) -> list[dict]:
    base_db, base, cand, design, rep, data_path = args
    df = pd.read_json(data_path, lines=True)
    truth = _truth(df, base, cand)
    sub = df[df.system.isin([base, cand])]
    # the judges' consensus pass share per output (for ppi_py's unlabelled predictions)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.duckdb"
        shutil.copy(base_db, db)
        con = store.connect(db)
        f_tab = con.execute("SELECT dimension, model, item_id, f FROM output_cells ORDER BY dimension, model, item_id").fetch_df()
        df_scores = f_tab.set_index(["dimension", "model"]).f
        out = []
        rng = np.random.default_rng([rep, 2024])
        order = rng.permutation(sorted({f"doc{i}" for i in sub.doc_id}))
        done: list[str] = []
        for n in SIZES:
            if design == "random":
                new = list(order[len(done):n])
                path = Path(tmp) / f"l{n}.csv"
                _label_rows(new, base, cand, truth).to_csv(path, index=False)
                ingest.import_labels(con, path)
                done += new
            else:
                while len(done) < n:
                    lease = queue.next_item(con, "sme")
                    if lease is None:
                        queue.refill(con, 10, seed=rep * 1000 + len(done))
                        lease = queue.next_item(con, "sme")
                    if lease is None:
                        break
                    verdicts = {(m, d): (truth["verdict"][(lease.item_id, m, d)], None) for m in (base, cand) for d in DIMS}
                    queue.submit(con, lease.lease_id, "sme", verdicts)
                    done.append(lease.item_id)
            fit = engine.fit_project(con, "fast", record=False, seed=rep)
            for r in fit["rates"]:  # each model's pass rate: the other estimand the lead reads
                if r["segment"] is None:
                    t = truth["rate"][(r["model"], r["dimension"])]
                    out.append({"data": "summeval", "design": design, "n": n, "pair": f"{base}/{cand}", "rep": rep,
                                "method": "tiebreak (rate)", "dim": r["dimension"], "model": r["model"],
                                "truth": t, "lo": r["lo"], "hi": r["hi"],
                                "width": r["hi"] - r["lo"], "covered": r["lo"] <= t <= r["hi"],
                                "scaled_err": abs(t - (r["lo"] + r["hi"]) / 2) / max((r["hi"] - r["lo"]) / 2, 1e-9)})
            for r in _peer_intervals(con, fit, truth, design, df_scores, base, cand):
                t = truth["delta"][r["dim"]]
                out.append({"data": "summeval", "design": design, "n": n, "pair": f"{base}/{cand}", "rep": rep, **r,
                            "width": r["hi"] - r["lo"], "covered": r["lo"] <= t <= r["hi"],
                            "scaled_err": abs(t - (r["lo"] + r["hi"]) / 2) / max((r["hi"] - r["lo"]) / 2, 1e-9)})
        con.close()
    return out


# --------------------------------------------------------------------------- summary


def _run(task):
    fn, args = task
    return fn(args)


def summarise(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    out = []
    for (data, design, n, method), g in df.groupby(["data", "design", "n", "method"]):
        kappa = float(np.quantile(g.scaled_err, 0.95))
        out.append({"data": data, "design": design, "n": n, "method": method, "reps": len(g), "coverage": g.covered.mean(),
                    "worst pair/dim coverage": g.groupby(["pair", "dim"]).covered.mean().min(),
                    "width": g.width.mean(), "width at 95% coverage": kappa * g.width.mean()})
    s = pd.DataFrame(out)
    tb = {(r["data"], r["design"], r["n"]): r for r in out if r["method"] == "tiebreak"}
    nan = {"width": np.nan, "width at 95% coverage": np.nan}
    s["tiebreak width / this"] = [tb.get((a, d, n), nan)["width"] / w for a, d, n, w in zip(s.data, s.design, s.n, s.width)]
    s["tiebreak eq-cov width / this"] = [tb.get((a, d, n), nan)["width at 95% coverage"] / w
                                         for a, d, n, w in zip(s.data, s.design, s.n, s["width at 95% coverage"])]
    # the sampler's worth: the queue's equal-coverage width over the random design's, same data and n
    rnd = {(r["data"], r["n"]): r["width at 95% coverage"] for r in out if r["method"] == "tiebreak" and r["design"] == "random"}
    s["queue / random (eq-cov)"] = [tb[(a, "queue", n)]["width at 95% coverage"] / rnd[(a, n)]
                                    if m == "tiebreak" and d == "queue" and (a, n) in rnd else np.nan
                                    for a, d, n, m in zip(s.data, s.design, s.n, s.method)]
    return s


def _eq_cov_width(g: pd.DataFrame) -> float:
    return float(np.quantile(g.scaled_err, 0.95) * g.width.mean())


def _clusters(df: pd.DataFrame) -> pd.Series:
    """Each row's replicate (data, design, pair, replicate): the unit a bootstrap resamples, since a
    replicate's intervals (dimensions, sizes) share its labels. Rows written before the ``rep`` field
    get it from their order (a replicate's rows run through the sizes; a new one starts when n drops)."""
    if "rep" in df and df["rep"].notna().all():
        return df.data + "/" + df.design + "/" + df.pair + "/" + df["rep"].astype(int).astype(str) + "/" + df.get("file", "")
    start = (df.n.diff().fillna(-1) < 0) | (df.design != df.design.shift()) | (df.pair != df.pair.shift())
    return df.get("file", "") + "/" + start.cumsum().astype(str)


def sampler_table(rows: list[dict] | pd.DataFrame, boots: int = 400) -> pd.DataFrame:
    """The queue against random labels (Tiebreak's interval), per data set and n: the mean-width
    ratio (both designs cover 0.93-0.99, so widths compare directly), the equal-coverage ratio with
    a bootstrap 90% interval over replicates (the 95th percentile of the scaled errors is noisy:
    +-0.08 at 300 replicates; a replicate's intervals share its labels, so it is the unit resampled),
    the RMSE ratio (the width at equal coverage for normal errors, less noisy), and the largest
    per-cell (pair x dimension) mean-width ratio."""
    df = pd.DataFrame(rows).reset_index(drop=True)
    df["cluster"] = _clusters(df)
    df = df[df.method == "tiebreak"].copy()
    df["err2"] = (df.scaled_err * df.width / 2) ** 2
    rng = np.random.default_rng(0)
    out = []
    for (data, n), g in df.groupby(["data", "n"]):
        q, r = g[g.design == "queue"], g[g.design == "random"]
        if not len(q) or not len(r):
            continue
        # per replicate: its rows' (scaled error, width, squared error), resampled as a whole
        qg = [x[["scaled_err", "width", "err2"]].to_numpy() for _, x in q.groupby("cluster")]
        rg = [x[["scaled_err", "width", "err2"]].to_numpy() for _, x in r.groupby("cluster")]

        def draw(groups):
            a = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
            return np.quantile(a[:, 0], 0.95) * a[:, 1].mean(), a[:, 2].mean()

        bs, bs_rmse = [], []
        for _ in range(boots):
            (qe, qm), (re_, rm) = draw(qg), draw(rg)
            bs.append(qe / re_)
            bs_rmse.append(np.sqrt(qm / rm))
        cell = (q.groupby(["pair", "dim"]).width.mean() / r.groupby(["pair", "dim"]).width.mean()).dropna()
        out.append({"data": data, "n": n, "queue cov": q.covered.mean(), "random cov": r.covered.mean(),
                    "width ratio": q.width.mean() / r.width.mean(), "largest cell width ratio": cell.max(),
                    "eq-cov ratio": _eq_cov_width(q) / _eq_cov_width(r),
                    "eq-cov 90% lo": np.quantile(bs, 0.05), "eq-cov 90% hi": np.quantile(bs, 0.95),
                    "rmse ratio": np.sqrt(q.err2.mean() / r.err2.mean()),
                    "rmse 90% lo": np.quantile(bs_rmse, 0.05), "rmse 90% hi": np.quantile(bs_rmse, 0.95)})
    return pd.DataFrame(out)


def srs_table(rows: list[dict] | pd.DataFrame, data_path: str | Path = DEFAULT) -> pd.DataFrame:
    """The labels' worth without any model: the human-only estimate's RMSE of Delta over the RMSE a
    simple random sample of the same n has in theory, sqrt(S^2 (1 - n/N) / n) from the full data
    (SummEval). A noise-free yardstick for each design: random labels should sit at 1, and a queue
    that costs nothing at 1 too; comparing the two designs' ratios splits the queue / random ratio
    into each arm's luck."""
    df = pd.DataFrame(rows)
    df = df[(df.data == "summeval") & (df.method == "human-only")].copy()
    if not len(df):
        return pd.DataFrame()
    src = pd.read_json(data_path, lines=True)
    theory = {}
    for b, c in PAIRS:
        t = _truth(src, b, c)
        docs = sorted({k[0] for k in t["verdict"]})
        for dim in DIMS:
            y = np.array([t["verdict"][(d, c, dim)] - t["verdict"][(d, b, dim)] for d in docs], float)
            for n in SIZES:
                theory[(f"{b}/{c}", dim, n)] = y.var(ddof=1) * (1 - n / len(docs)) / n
    df["err2"] = (df.scaled_err * df.width / 2) ** 2
    df["srs"] = [theory[k] for k in zip(df.pair, df.dim, df.n)]
    return (df.groupby(["design", "n"]).apply(lambda g: np.sqrt(g.err2.mean() / g.srs.mean()), include_groups=False)
            .unstack("design").rename(columns=lambda d: f"{d}: human-only RMSE / SRS theory"))


def _print_tables(rows: list[dict]) -> None:
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    print(summarise(rows).round(3).to_string(index=False))
    print("\nqueue / random (Tiebreak's interval):")
    print(sampler_table(rows).round(3).to_string(index=False))
    srs = srs_table(rows)
    if len(srs):
        print("\neach design's labels against a simple random sample in theory (SummEval Delta, human-only):")
        print(srs.round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--reps", type=int, default=200, help="replicates per pair, random design")
    ap.add_argument("--queue-reps", type=int, default=60, help="replicates per pair, queue design")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pandalm", default=str(PANDALM), help="PandaLM file ('' to skip the win-rate study)")
    ap.add_argument("--only", choices=["summeval", "pandalm"], help="run one data set only")
    ap.add_argument("--out", help="write every interval as JSON lines here")
    ap.add_argument("--summarise", nargs="+", help="print the tables from --out files of earlier runs (no run)")
    ap.add_argument("--random-share", type=float, help="the queue's least uniform share (1.0: uniform batches; "
                    "separates the sampler's mixture from the queue's mechanics)")
    ap.add_argument("--first-rep", type=int, default=0, help="first replicate's index (independent runs: 0, then --reps)")
    args = ap.parse_args()
    if args.summarise:
        _print_tables([{**json.loads(line), "file": f} for f in args.summarise for line in Path(f).read_text().splitlines() if line])
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tasks: list = []
        if args.only != "pandalm":
            df = pd.read_json(args.data, lines=True)
            bases = {(b, c): build_base(df, b, c, Path(tmp), args.random_share) for b, c in PAIRS}
            tasks += [(replicate, (str(bases[(b, c)]), b, c, "random", r, args.data)) for r in range(args.first_rep, args.first_rep + args.reps) for b, c in PAIRS]
            tasks += [(replicate, (str(bases[(b, c)]), b, c, "queue", r, args.data))
                      for r in range(args.first_rep, args.first_rep + args.queue_reps) for b, c in PAIRS]
        if args.pandalm and args.only != "summeval":
            pdf = pd.read_json(args.pandalm, lines=True)
            pb = {}
            for b, c in PANDA_PAIRS:
                (Path(tmp) / f"{b}_{c}").mkdir()
                pb[(b, c)] = build_panda_base(pdf, b, c, Path(tmp) / f"{b}_{c}")
            tasks += [(panda_replicate, (str(pb[(b, c)]), b, c, "random", r, args.pandalm))
                      for r in range(args.first_rep, args.first_rep + args.reps) for b, c in PANDA_PAIRS]
            tasks += [(panda_replicate, (str(pb[(b, c)]), b, c, "queue", r, args.pandalm))
                      for r in range(args.first_rep, args.first_rep + args.queue_reps) for b, c in PANDA_PAIRS]
        rows: list[dict] = []
        with ProcessPoolExecutor(args.jobs) as ex:
            for res in ex.map(_run, tasks, chunksize=2):
                rows += res
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r, default=lambda o: o.item()) for r in rows) + "\n")
    print(f"SummEval: {len(PAIRS)} system pairs x {len(DIMS)} dimensions (Delta; 'tiebreak (rate)' = each model's "
          f"pass rate); PandaLM: {len(PANDA_PAIRS)} model pairs (win rate); {args.reps} random / {args.queue_reps} "
          f"queue replicates per pair; {time.perf_counter() - t0:.0f} s")
    _print_tables(rows)


if __name__ == "__main__":
    main()
