"""Two-phase design study (issue #22): the judges score a probability sample, SMEs label a sample of it.

Demo projects (``calib.data.demo``: six regions of different size and level, three judges per
dimension with non-logistic links, one lenient toward the candidate): phase 1 judges a stratified
(by region, proportional) simple random sample of the items; phase 2 labels a simple random sample
of the judged items; the product's estimator (``calib.stats.engine.design_rates`` with the phase-1
weights, ``calib.stats.twophase``) after a fast (Laplace) fit on the judged cells. Beside it, the
census design: every item judged, the same number of labels drawn from all items. Truth: the
hidden SME verdict of every output of the population. Populations are drawn afresh every
``--reps-per-pop`` projects (coverage is over both the population and the samples).

SummEval (real data, ``--summeval``): two systems as baseline and candidate over the 100
documents, ROUGE-1/2/L as judges, pass = mean human score >= 4; phase 1 judges 50 of the 100
documents, labels 20/30/40 of those; truth: all human labels.

    .venv/bin/python bench/two_phase.py [--projects 200] [--items 100000] [--fraction 0.02] [--labels 200 400]
    .venv/bin/python bench/two_phase.py --summeval ../shared/datasets/summeval_flat_with_rouge.jsonl [--projects 200]
    .venv/bin/python bench/two_phase.py --scale 5300000     # one 5.3M-item project: the time of each step
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import cells, demo  # noqa: E402
from calib.stats import crosscheck, design, engine, model, twophase  # noqa: E402


def _population(seed: int, n_items: int):
    d = demo.generate(n_items, seed=seed, texts=False)
    out = d.outputs
    items = out.item_id.unique()
    oi = out.item_id.map({it: i for i, it in enumerate(items)}).to_numpy()
    om = out.model.map({m: i for i, m in enumerate(demo.MODELS)}).to_numpy()
    os_ = out.segment.map({s: i for i, s in enumerate(demo.REGIONS)}).to_numpy()
    truth = d.truth.pivot_table(index=["item_id", "model"], columns="dimension", values="verdict", aggfunc="first")
    truth = truth.reindex(pd.MultiIndex.from_arrays([out.item_id, out.model])).astype(float)
    per_dim = {}
    for dim in demo.DIMENSIONS:
        raw = out[[f"judge:{j}:{dim}" for j in demo.JUDGES]].to_numpy(float)
        f = np.mean([raw[:, k] >= (0.5 if j != "judge-likert" else 4) for k, j in enumerate(demo.JUDGES)], axis=0)
        per_dim[dim] = (raw, truth[dim].to_numpy(float), f)
    item_seg = np.zeros(len(items), np.int64)
    item_seg[oi] = os_
    return per_dim, om, os_, oi, item_seg


def _phase1(rng, item_seg: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A stratified (by region), proportionally allocated simple random sample: items and pi1."""
    s1, pi1 = [], []
    for h in np.unique(item_seg):
        pool = np.flatnonzero(item_seg == h)
        n_h = max(2, int(round(fraction * len(pool))))
        s1.append(rng.choice(pool, n_h, replace=False))
        pi1.append(np.full(n_h, n_h / len(pool)))
    return np.concatenate(s1), np.concatenate(pi1)


def _rate_interval(rates, m: str) -> tuple[float, float]:
    """A pass rate's 95% interval as the fit reports it (``engine._rate_interval``: the bound closed
    at 1 or 0 where every labelled output of the model passes or fails)."""
    lo, hi = np.quantile(rates.overall[m], [0.025, 0.975])
    dom = rates.info.get("domains", {}).get("overall", {})
    return design.closed_interval(lo, hi, (dom.get("closed") or {}).get(m)) if dom.get("estimator") == "design" else (lo, hi)


def _estimate(per_dim, om, os_, oi, judged_items, w1_item, lab_items, n_judged, seed):
    """Per dimension: (rates dict, Delta draws, human-only (lo, hi)) from the product's estimator on
    the judged outputs (``w1_item`` None: a census) with ``lab_items`` labelled by simple random
    sampling from the judged items."""
    judged_out = np.flatnonzero(np.isin(oi, judged_items))
    lab_mask = np.isin(oi[judged_out], lab_items)
    lab_out = np.flatnonzero(lab_mask)  # positions within the judged outputs
    n2 = len(lab_items)
    res = {}
    for dim, (raw, y, f) in per_dim.items():
        Z = cells.normal_scores(raw[judged_out])
        yj, fj = y[judged_out], f[judged_out]
        data, out_cell = cells.cells_from_arrays(demo.MODELS, demo.REGIONS, demo.JUDGES, om[judged_out],
                                                 os_[judged_out], Z, lab_out, yj[lab_out], return_index=True)
        w1_out = None
        if w1_item is not None:
            w1_out = w1_item[oi[judged_out]]
            data.cell_pop = np.bincount(out_cell, weights=w1_out, minlength=len(data.cell_n))
        post = model.fit_laplace(data, 1000, seed)
        lab = engine.LabelledOutputs(
            item_id=oi[judged_out][lab_out].astype(str).astype(object), model=om[judged_out][lab_out],
            y=yj[lab_out], f=fj[lab_out], w=np.full(len(lab_out), n_judged / n2),
            cell=out_cell[lab_out].astype(np.int64), k=yj[lab_out].astype(np.int64), n=np.ones(len(lab_out), np.int64),
            wv=np.full(len(lab_out), n_judged / n2), pi=np.full(len(lab_out), n2 / n_judged),
            w1=None if w1_out is None else w1_out[lab_out])
        pop = data if lab.w1 is None else twophase.expanded_cells(data, lab.cell, lab.y, lab.w1)
        rates = engine.design_rates(data, post, lab, model.population_rate_draws(pop, post, seed=seed), seed)
        delta = rates.overall[demo.CANDIDATE] - rates.overall[demo.BASELINE]
        # human-only on the same labels, each standing for 1 / (pi1 pi2) items
        mo = om[judged_out][lab_out]
        it = oi[judged_out][lab_out]
        b, c = np.argsort(it[mo == 0]), np.argsort(it[mo == 1])
        wts = lab.w if lab.w1 is None else lab.w * lab.w1
        _, hlo, hhi = crosscheck.human_only_diff(yj[lab_out][mo == 1][c], yj[lab_out][mo == 0][b], wts[mo == 1][c])
        res[dim] = (rates, delta, (hlo, hhi))
    return res


def run_demo(projects: int, n_items: int, fraction: float, sizes: list[int], reps_per_pop: int,
             census_every: int, seed0: int = 7000) -> None:
    acc = {(arm, n): {"rate": [], "delta": [], "w": [], "wh": []} for arm in ("two-phase", "census") for n in sizes}
    t0 = time.time()
    truth_cache = None
    for r in range(projects):
        if r % reps_per_pop == 0:
            per_dim, om, os_, oi, item_seg = _population(seed0 + r, n_items)
            N = len(item_seg)
            truth_cache = {dim: (y[om == 0].mean(), y[om == 1].mean()) for dim, (_, y, _) in per_dim.items()}
        rng = np.random.default_rng([seed0, r, 0x2F])
        s1, pi1 = _phase1(rng, item_seg, fraction)
        w1_item = np.zeros(N)
        w1_item[s1] = 1.0 / pi1
        perm = rng.permutation(s1)
        arms = [("two-phase", s1, w1_item, perm, len(s1))]
        if r % census_every == 0:
            arms.append(("census", np.arange(N), None, rng.permutation(N), N))
        for arm, judged, w1, order, n_judged in arms:
            for n in sizes:
                est = _estimate(per_dim, om, os_, oi, judged, w1, order[:n], n_judged, seed=r)
                for dim, (rates, delta, (hlo, hhi)) in est.items():
                    tb, tc = truth_cache[dim]
                    a = acc[(arm, n)]
                    for m, t in ((demo.BASELINE, tb), (demo.CANDIDATE, tc)):
                        lo, hi = _rate_interval(rates, m)
                        a["rate"].append(lo <= t <= hi)
                    lo, hi = np.quantile(delta, [0.025, 0.975])
                    a["delta"].append(lo <= tc - tb <= hi)
                    a["w"].append(hi - lo)
                    a["wh"].append(hhi - hlo)
        if (r + 1) % 10 == 0:
            print(f"  {r + 1}/{projects} projects, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"\nDemo projects of {n_items:,} items, phase 1 = {fraction:.1%} stratified by region (proportional), "
          f"{projects} projects ({reps_per_pop} per population), 3 dimensions each; census arm every "
          f"{census_every} projects. 95% intervals.")
    print(f"{'labels':>6} {'design':<10} {'intervals':>9} {'Delta cov':>9} {'rate cov':>8} {'Delta width':>11} "
          f"{'human-only width':>16} {'width / census':>14}")
    for n in sizes:
        for arm in ("two-phase", "census"):
            a = acc[(arm, n)]
            if not a["delta"]:
                continue
            ratio = np.mean(a["w"]) / np.mean(acc[("census", n)]["w"]) if acc[("census", n)]["w"] else float("nan")
            print(f"{n:>6} {arm:<10} {len(a['delta']):>9} {np.mean(a['delta']):>9.3f} {np.mean(a['rate']):>8.3f} "
                  f"{np.mean(a['w']):>11.4f} {np.mean(a['wh']):>16.4f} {ratio:>14.3f}")
    k = len(acc[("two-phase", sizes[0])]["delta"])
    print(f"(Monte Carlo sd of a coverage near 0.95 over {k} intervals: {np.sqrt(0.95 * 0.05 / max(k, 1)):.3f})")


def run_summeval(path: str, projects: int, sizes=(20, 30, 40), judged_docs: int = 50, seed0: int = 0) -> None:
    df = pd.read_json(path, lines=True)
    systems = sorted(df.system.unique())
    dims = ["coherence", "consistency", "fluency", "relevance"]
    judges = ["rouge1_f", "rouge2_f", "rougeL_f"]
    rng = np.random.default_rng(seed0)
    acc = {(arm, n): {"delta": [], "rate": [], "w": []} for arm in ("two-phase", "census") for n in sizes}
    for r in range(projects):
        a, b = rng.choice(systems, 2, replace=False)
        sub = df[df.system.isin([a, b])].sort_values(["doc_id", "system"])
        docs = sorted(sub.doc_id.unique())
        di = {d: i for i, d in enumerate(docs)}
        om = (sub.system == b).to_numpy().astype(int)
        oi = sub.doc_id.map(di).to_numpy()
        os_ = np.zeros(len(sub), int)
        N = len(docs)
        s1 = rng.choice(N, judged_docs, replace=False)
        for arm in ("two-phase", "census"):
            judged = s1 if arm == "two-phase" else np.arange(N)
            w1_item = np.full(N, N / judged_docs) if arm == "two-phase" else None
            order = rng.permutation(judged)
            jo = np.flatnonzero(np.isin(oi, judged))
            Z = cells.normal_scores(sub[judges].to_numpy(float)[jo])
            for n in sizes:
                lab_out = np.flatnonzero(np.isin(oi[jo], order[:n]))
                for dim in dims:
                    y = (sub[f"human_{dim}"].to_numpy() >= 4).astype(float)
                    f = np.mean([(sub[j].to_numpy() >= np.median(sub[j])) for j in judges], axis=0)
                    data, out_cell = cells.cells_from_arrays([a, b], ["all"], judges, om[jo], os_[jo], Z, lab_out,
                                                             y[jo][lab_out], return_index=True)
                    w1_out = None if w1_item is None else w1_item[oi[jo]]
                    if w1_out is not None:
                        data.cell_pop = np.bincount(out_cell, weights=w1_out, minlength=len(data.cell_n))
                    post = model.fit_laplace(data, 1000, r)
                    nj = len(judged)
                    lab = engine.LabelledOutputs(
                        item_id=oi[jo][lab_out].astype(str).astype(object), model=om[jo][lab_out], y=y[jo][lab_out],
                        f=f[jo][lab_out], w=np.full(len(lab_out), nj / n), cell=out_cell[lab_out].astype(np.int64),
                        k=y[jo][lab_out].astype(np.int64), n=np.ones(len(lab_out), np.int64),
                        wv=np.full(len(lab_out), nj / n), pi=np.full(len(lab_out), n / nj),
                        w1=None if w1_out is None else w1_out[lab_out])
                    pop = data if lab.w1 is None else twophase.expanded_cells(data, lab.cell, lab.y, lab.w1)
                    rates = engine.design_rates(data, post, lab, model.population_rate_draws(pop, post, seed=r), r)
                    delta = rates.overall[b] - rates.overall[a]
                    true = y[om == 1].mean() - y[om == 0].mean()
                    lo, hi = np.quantile(delta, [0.025, 0.975])
                    acc[(arm, n)]["delta"].append(lo <= true <= hi)
                    acc[(arm, n)]["w"].append(hi - lo)
                    for mi, m in enumerate([a, b]):
                        rlo, rhi = _rate_interval(rates, m)
                        acc[(arm, n)]["rate"].append(rlo <= y[om == mi].mean() <= rhi)
        if (r + 1) % 20 == 0:
            print(f"  {r + 1}/{projects} projects", file=sys.stderr, flush=True)
    print(f"\nSummEval: two systems x 100 documents, phase 1 = {judged_docs} documents judged (ROUGE), "
          f"{projects} projects x 4 dimensions, 95% intervals")
    print(f"{'labelled docs':>13} {'design':<10} {'Delta cov':>9} {'rate cov':>8} {'Delta width':>11} {'width / census':>14}")
    for n in sizes:
        for arm in ("two-phase", "census"):
            v = acc[(arm, n)]
            print(f"{n:>13} {arm:<10} {np.mean(v['delta']):>9.3f} {np.mean(v['rate']):>8.3f} {np.mean(v['w']):>11.4f} "
                  f"{np.mean(v['w']) / np.mean(acc[('census', n)]['w']):>14.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=200)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--fraction", type=float, default=0.02)
    ap.add_argument("--labels", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--reps-per-pop", type=int, default=20)
    ap.add_argument("--census-every", type=int, default=4)
    ap.add_argument("--summeval", default=None)
    ap.add_argument("--seed", type=int, default=7000)
    args = ap.parse_args()
    if args.summeval:
        run_summeval(args.summeval, args.projects, seed0=args.seed)
    else:
        run_demo(args.projects, args.items, args.fraction, args.labels, args.reps_per_pop, args.census_every, args.seed)


if __name__ == "__main__":
    main()
