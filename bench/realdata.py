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
import json
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

SIZES = (10, 20, 40, 60)
PAIRS = [("M11", "M20"), ("M10", "M12"), ("M11", "M23")]
DIMS = ["coherence", "consistency", "fluency", "relevance"]
JUDGES = {"rouge1": "rouge1_f", "rouge2": "rouge2_f", "rougeL": "rougeL_f"}
DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "summeval_flat_with_rouge.jsonl"


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
    delta = {}
    for d in DIMS:
        pc = sub[sub.system == cand][f"human_{d}"].ge(4).mean()
        pb = sub[sub.system == base][f"human_{d}"].ge(4).mean()
        delta[d] = float(pc - pb)
    return {"verdict": verdict, "delta": delta}


def build_base(df: pd.DataFrame, base: str, cand: str, folder: Path) -> Path:
    db = folder / f"{base}_{cand}.duckdb"
    path = folder / f"{base}_{cand}.parquet"
    _outputs(df, base, cand).to_parquet(path, index=False)
    con = store.connect(db)
    ingest.import_file(con, path, baseline=base)
    cells.ensure_cells(con)
    con.close()
    return db


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
            for r in _peer_intervals(con, fit, truth, design, df_scores, base, cand):
                t = truth["delta"][r["dim"]]
                out.append({"design": design, "n": n, "pair": f"{base}/{cand}", **r,
                            "width": r["hi"] - r["lo"], "covered": r["lo"] <= t <= r["hi"],
                            "scaled_err": abs(t - (r["lo"] + r["hi"]) / 2) / max((r["hi"] - r["lo"]) / 2, 1e-9)})
        con.close()
    return out


# --------------------------------------------------------------------------- summary


def summarise(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    out = []
    for (design, n, method), g in df.groupby(["design", "n", "method"]):
        kappa = float(np.quantile(g.scaled_err, 0.95))
        out.append({"design": design, "n": n, "method": method, "reps": len(g), "coverage": g.covered.mean(),
                    "worst pair/dim coverage": g.groupby(["pair", "dim"]).covered.mean().min(),
                    "width": g.width.mean(), "width at 95% coverage": kappa * g.width.mean()})
    s = pd.DataFrame(out)
    tb = s[s.method == "tiebreak"].set_index(["design", "n"])
    tb = {(r["design"], r["n"]): r for r in out if r["method"] == "tiebreak"}
    s["tiebreak width / this"] = [tb[(d, n)]["width"] / w for d, n, w in zip(s.design, s.n, s.width)]
    s["tiebreak eq-cov width / this"] = [tb[(d, n)]["width at 95% coverage"] / w
                                         for d, n, w in zip(s.design, s.n, s["width at 95% coverage"])]
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--reps", type=int, default=200, help="replicates per pair, random design")
    ap.add_argument("--queue-reps", type=int, default=60, help="replicates per pair, queue design")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", help="write every interval as JSON lines here")
    args = ap.parse_args()
    df = pd.read_json(args.data, lines=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bases = {(b, c): build_base(df, b, c, Path(tmp)) for b, c in PAIRS}
        tasks = [(str(bases[(b, c)]), b, c, "random", r, args.data) for r in range(args.reps) for b, c in PAIRS]
        tasks += [(str(bases[(b, c)]), b, c, "queue", r, args.data) for r in range(args.queue_reps) for b, c in PAIRS]
        rows: list[dict] = []
        with ProcessPoolExecutor(args.jobs) as ex:
            for res in ex.map(replicate, tasks, chunksize=2):
                rows += res
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = summarise(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    print(f"SummEval, {len(PAIRS)} system pairs x {len(DIMS)} dimensions; {args.reps} random / {args.queue_reps} "
          f"queue replicates per pair; {time.perf_counter() - t0:.0f} s")
    print(s.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
