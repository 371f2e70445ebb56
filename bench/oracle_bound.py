"""How narrow could any design-consistent interval be with these judges? (issue #12's width bars)

Every estimator Tiebreak, PPI++ and CJE report on real data is of one family: a prediction from the
judges over the whole population plus a (weighted) mean of the labelled items' residuals. Its
standard error is, to first order, sd(residual) / sqrt(n) x sqrt(1 - n/N), whatever the working
model; so the ratio of two such estimators' widths at equal coverage is the ratio of their residual
sds. This script computes those sds with the truth of every item known (an oracle no method has):

- human-only: sd(y), the residual of predicting nothing;
- PPI++ (best lambda): min over lambda of sd(y - lambda f), f = the judges' consensus (the mean
  judge score: SummEval, the mean of ROUGE-1/2/L; PandaLM, the judges' mean win score), lambda tuned
  on ALL items (PPI++ tunes it on the labelled ones, so it does worse than this);
- flexible (in-sample): sd(y - E[y | judges]) with E fitted on ALL items: SummEval, a logistic
  regression of each system's pass on its three ROUGE scores (and their squares); PandaLM, the mean
  win score in each cell of the two judges' verdicts. Fitted in-sample on every item, this is
  optimistic for any model fitted on 10-60 labels (Tiebreak's included);
- flexible, 5-fold cross-fitted: the same, each item predicted from the other folds (what a model
  fitted on 80 labels could do).

It also bounds what a sampler can buy. With inclusion probabilities proportional to the residual's
conditional sd s(x) (Neyman allocation, the optimum for a fixed n), the variance is E[s]^2 / E[s^2]
times the uniform design's: sqrt of that is the best queue/random width ratio, with s from the
in-sample flexible fit (optimistic: the sampler must estimate s from few labels).

Prints per scenario and pooled: the width ratios flexible/PPI++ (the bar: <= 0.9) and the Neyman
queue/random ratio (the bar: <= 0.9).

    .venv/bin/python bench/oracle_bound.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "datasets"
PAIRS = [("M11", "M20"), ("M10", "M12"), ("M11", "M23")]
DIMS = ["coherence", "consistency", "fluency", "relevance"]
ROUGE = ["rouge1_f", "rouge2_f", "rougeL_f"]
PANDA_PAIRS = [("bloom-7b", "pythia-6.9b"), ("cerebras-gpt-6.7B", "opt-7b"), ("llama-7b", "pythia-6.9b"),
               ("bloom-7b", "llama-7b")]
WIN = {1: 0.0, 2: 1.0, 0: 0.5}


def _logit_fit(X: np.ndarray, y: np.ndarray, ridge: float = 0.1, iters: int = 50) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton's method (coefficients, intercept first)."""
    Z = np.column_stack([np.ones(len(X)), X])
    b = np.zeros(Z.shape[1])
    pen = ridge * np.eye(Z.shape[1])
    pen[0, 0] = 1e-6  # keeps an all-pass fold finite
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Z @ b))
        g = Z.T @ (y - p) - pen @ b
        H = (Z * (p * (1 - p))[:, None]).T @ Z + pen
        step = np.linalg.solve(H, g)
        b += step
        if np.abs(step).max() < 1e-8:
            break
    return b


def _logit_predict(b: np.ndarray, X: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.column_stack([np.ones(len(X)), X]) @ b)))


def _features(sub: pd.DataFrame) -> np.ndarray:
    X = sub[ROUGE].to_numpy(float)
    X = (X - X.mean(0)) / X.std(0)
    return np.column_stack([X, X ** 2])


def _ppi_sd(y: np.ndarray, f: np.ndarray) -> float:
    c = np.cov(y, f)
    lam = c[0, 1] / c[1, 1] if c[1, 1] > 0 else 0.0
    return float(np.std(y - lam * f))


def summeval_rows(df: pd.DataFrame) -> list[dict]:
    rows = []
    for base, cand in PAIRS:
        b = df[df.system == base].sort_values("doc_id").reset_index(drop=True)
        c = df[df.system == cand].sort_values("doc_id").reset_index(drop=True)
        assert (b.doc_id.to_numpy() == c.doc_id.to_numpy()).all()
        for d in DIMS:
            yb = (b[f"human_{d}"] >= 4).to_numpy(float)
            yc = (c[f"human_{d}"] >= 4).to_numpy(float)
            y = yc - yb
            f = c[ROUGE].mean(axis=1).to_numpy() - b[ROUGE].mean(axis=1).to_numpy()
            Xb, Xc = _features(b), _features(c)
            # in-sample flexible fit per system
            pb = _logit_predict(_logit_fit(Xb, yb), Xb)
            pc = _logit_predict(_logit_fit(Xc, yc), Xc)
            resid = y - (pc - pb)
            # 5-fold cross-fitted
            folds = np.arange(len(y)) % 5
            cf = np.zeros(len(y))
            for k in range(5):
                tr, te = folds != k, folds == k
                cf[te] = (_logit_predict(_logit_fit(Xc[tr], yc[tr]), Xc[te])
                          - _logit_predict(_logit_fit(Xb[tr], yb[tr]), Xb[te]))
            s = np.sqrt(pc * (1 - pc) + pb * (1 - pb))  # conditional sd of the paired residual
            rows.append({"data": "SummEval", "scenario": f"{base}/{cand} {d}", "n_items": len(y),
                         "human_sd": float(np.std(y)), "ppi_sd": _ppi_sd(y, f),
                         "flex_sd": float(np.std(resid - resid.mean())),
                         "flex_cv_sd": float(np.std(y - cf)),
                         "neyman": float(np.mean(s) / np.sqrt(np.mean(s ** 2)))})
    return rows


def pandalm_rows(df: pd.DataFrame) -> list[dict]:
    rows = []
    for base, cand in PANDA_PAIRS:
        sub = df[(df.model_1 == base) & (df.model_2 == cand)]
        y = sub.human_majority.map(WIN).to_numpy(float)
        jg = sub.judge_gpt35.map(WIN)
        jp = sub.judge_pandalm7b.map(WIN)
        f = pd.concat([jg, jp], axis=1).mean(axis=1).fillna(0.5).to_numpy()
        key = jg.fillna(-1).astype(str) + "|" + jp.fillna(-1).astype(str)
        t = pd.DataFrame({"y": y, "key": key.to_numpy()})
        mean = t.groupby("key").y.transform("mean").to_numpy()
        var = t.groupby("key").y.transform(lambda v: v.var(ddof=0)).to_numpy()
        folds = np.arange(len(y)) % 5
        cf = np.zeros(len(y))
        for k in range(5):
            tr = t[folds != k]
            m = tr.groupby("key").y.mean()
            cf[folds == k] = t[folds == k].key.map(m).fillna(tr.y.mean()).to_numpy()
        s = np.sqrt(var)
        rows.append({"data": "PandaLM", "scenario": f"{base}/{cand}", "n_items": len(y),
                     "human_sd": float(np.std(y)), "ppi_sd": _ppi_sd(y, f),
                     "flex_sd": float(np.std(y - mean)), "flex_cv_sd": float(np.std(y - cf)),
                     "neyman": float(np.mean(s) / np.sqrt(np.mean(s ** 2))) if np.mean(s ** 2) > 0 else 1.0})
    return rows


def main() -> None:
    se = pd.read_json(DATA / "summeval_flat_with_rouge.jsonl", lines=True)
    pl = pd.read_json(DATA / "pandalm_merged.jsonl", lines=True)
    t = pd.DataFrame(summeval_rows(se) + pandalm_rows(pl))
    t["flex/ppi"] = t.flex_sd / t.ppi_sd
    t["flex_cv/ppi"] = t.flex_cv_sd / t.ppi_sd
    t["ppi/human"] = t.ppi_sd / t.human_sd
    pd.set_option("display.width", 200)
    print(t.round(3).to_string(index=False))
    print()
    for name, g in t.groupby("data"):
        # pooled: the ratio of root-mean-square sds (the pooled width at equal coverage)
        rms = lambda c: float(np.sqrt(np.mean(g[c] ** 2)))  # noqa: E731
        print(f"{name}: pooled width ratio, best flexible in-sample / best-lambda PPI++ = "
              f"{rms('flex_sd') / rms('ppi_sd'):.3f}; cross-fitted = {rms('flex_cv_sd') / rms('ppi_sd'):.3f}; "
              f"PPI++ / human-only = {rms('ppi_sd') / rms('human_sd'):.3f}; "
              f"best sampler (Neyman, in-sample sd) / uniform = {g.neyman.mean():.3f}")


if __name__ == "__main__":
    main()
