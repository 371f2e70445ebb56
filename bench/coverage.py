"""Coverage study of the calibration model against a known truth (slow; not in the test suite).

Simulation: the demo generator (calib.data.demo) makes a fresh project per replicate: 2,000 items in
six regions with different base rates, a judge lenient toward the candidate only, judge-to-human
links that are not logistic (a probit of a noisy latent, a thresholded latent, a rounded Likert).
Labels are drawn by the project's own sampler (calib.review.queue): the first 50 items by judge
disagreement, each later batch by the expected reduction of Var(Delta) under the current fit,
both with a 20% random share and a per-segment floor, each batch's inclusion probabilities kept
and the batches combined as the product does (`design.sequential_weights`) for the estimate and
the human-only and PPI++ cross-checks; sizes 50, 100, 200, 400 labelled
items are nested. Truth is the hidden SME verdict of every output.

Reports, per size: coverage of the 95% intervals (rates and Delta), the mean width of Delta
relative to the human-only and PPI++ intervals at the same labels, and the forecast's median
relative error (the sd of Delta forecast at n+k from the fit at n, for the batch the sampler is
about to draw, vs the sd actually obtained at n+k).

    .venv/bin/python bench/coverage.py [--reps 200] [--kind fast|nuts] [--items 2000]
    .venv/bin/python bench/coverage.py --summeval ../shared/datasets/summeval_flat_with_rouge.jsonl
    .venv/bin/python bench/coverage.py --pandalm ../shared/datasets/pandalm_merged.jsonl
    .venv/bin/python bench/coverage.py --candidates 3 --reps 6 --items 1000 [--seed 5000]

``--candidates K`` (K >= 2) runs the product path end to end instead: a demo project with K
candidates in DuckDB, the simulated SME labelling units (item, candidate) through the real queue
(``queue.refill`` then lease/submit), a recorded fast fit at each size (its decisions steer the
sampler), and the coverage of every candidate's Delta per dimension against the hidden truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this file's folder comes first on sys.path and would shadow the `coverage`
# package that numba probes; put the project root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import cells, demo  # noqa: E402
from calib.stats import engine, crosscheck, design, forecast, model, sampling  # noqa: E402
from calib.review import queue  # noqa: E402

SIZES = [50, 100, 200, 400]


def _project(seed: int, n_items: int):
    d = demo.generate(n_items, seed=seed)
    out = d.outputs
    items = out.item_id.unique()
    item_index = {it: i for i, it in enumerate(items)}
    truth = d.truth.set_index(["item_id", "model", "dimension"]).verdict
    per_dim = {}
    for dim in demo.DIMENSIONS:
        Z = cells.normal_scores(out[[f"judge:{j}:{dim}" for j in demo.JUDGES]].to_numpy(float))
        y = truth.loc[[(i, m, dim) for i, m in zip(out.item_id, out.model)]].to_numpy(float)
        f = np.mean([out[f"judge:{j}:{dim}"].to_numpy(float) >= (0.5 if j != "judge-likert" else 4)
                     for j in demo.JUDGES], axis=0)
        per_dim[dim] = (Z, y, f)
    om = out.model.map({m: i for i, m in enumerate(demo.MODELS)}).to_numpy()
    os_ = out.segment.map({s: i for i, s in enumerate(demo.REGIONS)}).to_numpy()
    oi = out.item_id.map(item_index).to_numpy()
    return out, per_dim, om, os_, oi, len(items)


def _fit(kind, data, seed):
    return model.fit_nuts(data, draws=500, tune=500, seed=seed) if kind == "nuts" else model.fit_laplace(data, 2000, seed)


def run_sim(reps: int, kind: str, n_items: int, seed0: int = 1000) -> dict:
    res = {n: {"rate_cover": [], "delta_cover": [], "w_bayes": [], "w_human": [], "w_ppi": [],
               "cover_human": [], "cover_ppi": [], "fc_err": []} for n in SIZES}
    t0 = time.time()
    mixes: dict[int, list[float]] = {}
    for r in range(reps):
        seed = seed0 + r
        out, per_dim, om, os_, oi, N = _project(seed, n_items)
        item_seg = np.zeros(N, dtype=object)
        item_seg[oi] = out.segment.to_numpy()
        # the project's sampler: disagreement first, then expected variance reduction of Delta under
        # the current fit, 20% random share, segment floor; each batch's inclusion probabilities kept
        Zall = np.stack([per_dim[d][0] for d in demo.DIMENSIONS], axis=1)  # (outputs, dims, judges)
        dis = sampling.disagreement_by_item(Zall, oi, om, N)
        rng = np.random.default_rng([seed, 0x5A3F])  # own stream, independent of the generator
        selected = np.zeros(N, bool)
        w_item = np.zeros(N)
        batch_item = np.full(N, -1)
        batches: list = []
        fits = {}
        for n in SIZES:
            mixes.setdefault(n, [])
            elig = np.flatnonzero(~selected)
            # the product's defensive mixture (queue.mixture_probabilities): the cold start within
            # 3x, then the priority part's weight from the labelled items' evidence
            if fits:
                prio, e2 = np.zeros(N), np.zeros(N)
                for dim, (data, post, out_cell, *_) in fits.items():
                    p = queue.pass_probability_by_cell(data, post)
                    prio += np.bincount(oi, weights=(p * (1 - p))[out_cell], minlength=N)
                    e2 += np.bincount(oi, weights=(per_dim[dim][1] - p[out_cell]) ** 2, minlength=N)
                prio = np.sqrt(prio)
                lab_items = np.flatnonzero(selected)
                r_pool, r_lab = sampling.relative_priorities(prio[elig], prio[lab_items])
                a, _ = sampling.evidence_mix(r_lab, e2[lab_items], w_item[lab_items], 0.8)
            else:
                r_pool, _ = sampling.relative_priorities(np.maximum(dis[elig], 1e-12))
                a = sampling.cold_start_mix(r_pool, 0.8)
            mixes[n].append(a)
            pi = queue.stratified_inclusion(r_pool, item_seg[elig], n - selected.sum(), 1 - a, clip=None)
            hit = rng.random(len(elig)) < pi
            new = elig[hit]
            # forecast check: from the previous fit, predict the sd after this batch
            if fits and kind == "fast":
                pi_item = np.zeros(N)
                pi_item[elig] = pi
                for dim, (pdata, ppost, pcell, psd, n_prev) in fits.items():
                    fsd = forecast.design_sd_function(psd, n_prev, N, 0.5)(len(new))
                    fits[dim] = (pdata, ppost, pcell, psd, n_prev, fsd)
            selected[new] = True
            w_item[new] = 1.0 / pi[hit]
            # each batch drawn from the items the earlier ones left: combined as the product does
            batch_item[new] = len(batches)
            batches.append(design.Batch(key=len(batches), whole=True, queued=len(new)))
            items = np.flatnonzero(selected)
            parts = design.sequential_weights(w_item[items], items, batch_item[items], batches, N)
            c_item, v_item, pi_item_w = np.zeros(N), np.zeros(N), np.ones(N)
            c_item[items], v_item[items], pi_item_w[items] = parts.c, parts.v, parts.pi
            lab_out = np.flatnonzero(selected[oi])
            for dim in demo.DIMENSIONS:
                Z, y, f = per_dim[dim]
                data, out_cell = cells.cells_from_arrays(demo.MODELS, demo.REGIONS, demo.JUDGES, om, os_, Z, lab_out,
                                                         y[lab_out], return_index=True)
                post = _fit(kind, data, seed)
                # the product's estimate: the model's projection corrected by the design (calib.stats.design)
                lab = engine.LabelledOutputs(
                    item_id=oi[lab_out].astype(str).astype(object), model=om[lab_out], y=y[lab_out], f=f[lab_out],
                    w=c_item[oi[lab_out]], cell=out_cell[lab_out].astype(np.int64), k=y[lab_out].astype(np.int64),
                    n=np.ones(len(lab_out), np.int64), wv=v_item[oi[lab_out]], pi=pi_item_w[oi[lab_out]])
                rates = engine.design_rates(data, post, lab, model.population_rate_draws(data, post, seed=seed), seed)
                for mi, m in enumerate(demo.MODELS):
                    _, lo, hi = model.posterior_interval(rates.overall[m])
                    res[n]["rate_cover"].append(lo <= y[om == mi].mean() <= hi)
                delta = rates.overall[demo.CANDIDATE] - rates.overall[demo.BASELINE]
                true_delta = y[om == 1].mean() - y[om == 0].mean()
                _, lo, hi = model.posterior_interval(delta)
                res[n]["delta_cover"].append(lo <= true_delta <= hi)
                res[n]["w_bayes"].append(hi - lo)
                # cross-checks on the same labels (paired by item), weighted by 1/pi
                b = lab_out[om[lab_out] == 0]
                c = lab_out[om[lab_out] == 1]
                b, c = b[np.argsort(oi[b])], c[np.argsort(oi[c])]
                w = c_item[oi[c]]
                _, hlo, hhi = crosscheck.human_only_diff(y[c], y[b], w)
                ppi = crosscheck.ppi_mean_interval(y[c] - y[b], f[c] - f[b], f[om == 1].mean() - f[om == 0].mean(), w)
                res[n]["w_human"].append(hhi - hlo)
                res[n]["w_ppi"].append(ppi["hi"] - ppi["lo"])
                res[n]["cover_human"].append(hlo <= true_delta <= hhi)
                res[n]["cover_ppi"].append(ppi["lo"] <= true_delta <= ppi["hi"])
                sd = float(np.std(delta))
                if dim in fits and len(fits[dim]) == 6:
                    res[n]["fc_err"].append(abs(fits[dim][5] - sd) / sd)
                fits[dim] = (data, post, out_cell, sd, int(selected.sum()))
        if (r + 1) % 10 == 0:
            print(f"  {r + 1}/{reps} replicates, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for n in SIZES:
        res[n]["mix"] = mixes.get(n, [])
    return res


def summarise(res: dict) -> list[dict]:
    rows = []
    for n, v in res.items():
        rows.append({
            "labelled items": n,
            "rate coverage": np.mean(v["rate_cover"]),
            "Delta coverage": np.mean(v["delta_cover"]),
            "Delta width": np.mean(v["w_bayes"]),
            "width / human-only": np.mean(v["w_bayes"]) / np.mean(v["w_human"]),
            "width / PPI++": np.mean(v["w_bayes"]) / np.mean(v["w_ppi"]),
            "human-only coverage": np.mean(v["cover_human"]),
            "PPI++ coverage": np.mean(v["cover_ppi"]),
            "forecast median rel. error": float(np.median(v["fc_err"])) if v["fc_err"] else float("nan"),
            "priority weight of the batch (mean)": float(np.mean(v["mix"])) if v.get("mix") else float("nan"),
        })
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n### {title}\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


# --------------------------------------------------------------------------- SummEval


def run_summeval(path: str, reps: int, sizes=(20, 40, 60), seed0: int = 0, kind: str = "fast") -> list[dict]:
    """Two SummEval systems as baseline and candidate (100 documents each), pass = human mean >= 4,
    ROUGE-1/2/L as judges, labels a random subsample of documents, truth = all human labels."""
    df = pd.read_json(path, lines=True)
    systems = sorted(df.system.unique())
    dims = ["coherence", "consistency", "fluency", "relevance"]
    judges = ["rouge1_f", "rouge2_f", "rougeL_f"]
    rng = np.random.default_rng(seed0)
    acc = {n: {"cover": [], "w": [], "wh": [], "wp": [], "rc": []} for n in sizes}
    for r in range(reps):
        a, b = rng.choice(systems, 2, replace=False)
        sub = df[df.system.isin([a, b])].sort_values(["doc_id", "system"])
        docs = sorted(sub.doc_id.unique())
        di = {d: i for i, d in enumerate(docs)}
        om = (sub.system == b).to_numpy().astype(int)
        oi = sub.doc_id.map(di).to_numpy()
        os_ = np.zeros(len(sub), int)
        Z = cells.normal_scores(sub[judges].to_numpy(float))
        perm = rng.permutation(len(docs))
        for n in sizes:
            chosen = perm[:n]
            lab_out = np.flatnonzero(np.isin(oi, chosen))
            for dim in dims:
                y = (sub[f"human_{dim}"].to_numpy() >= 4).astype(float)
                f = np.mean([(sub[j].to_numpy() >= np.median(sub[j])) for j in judges], axis=0)
                data = cells.cells_from_arrays([a, b], ["all"], judges, om, os_, Z, lab_out, y[lab_out])
                post = _fit(kind, data, r)
                rates = model.population_rate_draws(data, post, seed=r)
                delta = rates.overall[b] - rates.overall[a]
                true = y[om == 1].mean() - y[om == 0].mean()
                _, lo, hi = model.posterior_interval(delta)
                acc[n]["cover"].append(lo <= true <= hi)
                acc[n]["w"].append(hi - lo)
                for mi, m in enumerate([a, b]):
                    _, rlo, rhi = model.posterior_interval(rates.overall[m])
                    acc[n]["rc"].append(rlo <= y[om == mi].mean() <= rhi)
                bb = lab_out[om[lab_out] == 0]; cc = lab_out[om[lab_out] == 1]
                bb, cc = bb[np.argsort(oi[bb])], cc[np.argsort(oi[cc])]
                _, hlo, hhi = crosscheck.human_only_diff(y[cc], y[bb])
                ppi = crosscheck.ppi_mean_interval(y[cc] - y[bb], f[cc] - f[bb], f[om == 1].mean() - f[om == 0].mean())
                acc[n]["wh"].append(hhi - hlo)
                acc[n]["wp"].append(ppi["hi"] - ppi["lo"])
    return [{"labelled docs (of 100)": n, "rate coverage": np.mean(v["rc"]), "Delta coverage": np.mean(v["cover"]),
             "Delta width": np.mean(v["w"]), "width / human-only": np.mean(v["w"]) / np.mean(v["wh"]),
             "width / PPI++": np.mean(v["w"]) / np.mean(v["wp"])} for n, v in acc.items()]


# --------------------------------------------------------------------------- PandaLM


def run_pandalm(path: str, reps: int, sizes=(20, 40, 60), seed0: int = 0) -> list[dict]:
    """Pairwise win rate per model pair (~100 comparisons each): GPT-3.5 and PandaLM-7B verdicts as
    pairwise judges, human majority as truth, a random subsample labelled."""
    df = pd.read_json(path, lines=True)
    rng = np.random.default_rng(seed0)
    acc = {n: {"cover": [], "w": [], "wh": []} for n in sizes}
    pairs = df.groupby(["model_1", "model_2"]).size().index.tolist()
    code = {1: 0, 2: 2, 0: 1}  # response1 (baseline) better -> 0, response2 (candidate) better -> 2, tie -> 1

    def judge_feat(v):
        return np.where(pd.isna(v), 0.0, np.select([v == 2, v == 1], [1.0, -1.0], 0.0))

    for r in range(reps):
        m1, m2 = pairs[rng.integers(len(pairs))]
        sub = df[(df.model_1 == m1) & (df.model_2 == m2)]
        X = np.column_stack([judge_feat(sub.judge_gpt35.to_numpy()), judge_feat(sub.judge_pandalm7b.to_numpy())])
        y = np.array([code[int(v)] for v in sub.human_majority])
        true = np.mean(y / 2.0)
        for n in sizes:
            chosen = rng.permutation(len(sub))[:n]
            pdata = cells.pair_cells_from_arrays(["gpt35", "pandalm7b"], X, chosen, y[chosen], width=0)
            win = model.fit_pairwise(pdata, seed=r)
            _, lo, hi = model.posterior_interval(win)
            acc[n]["cover"].append(lo <= true <= hi)
            acc[n]["w"].append(hi - lo)
            _, hlo, hhi = crosscheck.weighted_mean_interval(y[chosen] / 2.0)
            acc[n]["wh"].append(hhi - hlo)
    return [{"labelled pairs (of ~100)": n, "win-rate coverage": np.mean(v["cover"]), "width": np.mean(v["w"]),
             "width / human-only": np.mean(v["w"]) / np.mean(v["wh"])} for n, v in acc.items()]


def run_multi(reps: int, n_items: int, k: int, sizes=(60, 150, 300), seed0: int = 2000) -> list[dict]:
    """Coverage of every candidate's Delta with ``k`` candidates, through the product (see the
    module docstring); ``sizes`` count labelled units (item, candidate) over all candidates."""
    import duckdb

    from calib.data import store
    from calib.review import simulate

    res = {n: {"cover": [], "width": [], "units": [], "decided_wrong": 0, "decided": 0} for n in sizes}
    per_cand = {n: {} for n in sizes}
    for r in range(reps):
        con = duckdb.connect()
        store.migrate(con)
        demo.load_demo(con, n_items, seed=seed0 + r, candidates=k)
        truth = {(m, d): v for m, d, v in con.execute(
            "SELECT model, dimension, avg(verdict::INT) FROM sim_truth GROUP BY ALL").fetchall()}
        done = 0
        for n in sizes:
            while done < n:
                queue.refill(con, min(40, n - done), seed=seed0 + r + done)
                got = simulate.simulate_sme(con, min(queue.servable_count(con, simulate.DEMO_SME), n - done),
                                            seed=seed0 + r + done)
                if got == 0:
                    break
                done += got
            fit = engine.fit_project(con, "fast", seed=r)
            for d in fit["diffs"]:
                true = truth[(d["candidate"], d["dimension"])] - truth[(demo.BASELINE, d["dimension"])]
                ok = d["lo"] <= true <= d["hi"]
                res[n]["cover"].append(ok)
                res[n]["width"].append(d["hi"] - d["lo"])
                per_cand[n].setdefault(d["candidate"], []).append(ok)
                if d["decision"] != "label more":
                    res[n]["decided"] += 1
                    wrong = (d["decision"] == "not worse") != (true >= -fit["margin"])
                    res[n]["decided_wrong"] += int(wrong)
            res[n]["units"].append(con.execute("SELECT count(*) FROM pair_labels").fetchone()[0])
        con.close()
        rows = _multi_rows(res, per_cand, sizes)
        # the table so far after every replicate (a run stopped early still reports)
        print_table(rows, f"after {r + 1} of {reps} replicates")
        sys.stdout.flush()
    return rows


def _multi_rows(res: dict, per_cand: dict, sizes) -> list[dict]:
    rows = []
    for n in sizes:
        x = res[n]
        w, cv = np.array(x["width"]), np.array(x["cover"], bool)
        narrow = w <= np.quantile(w, 0.25) if len(w) else np.zeros(0, bool)
        rows.append({"labelled units": n, "Delta coverage (all)": float(np.mean(x["cover"])),
                     # the quarter of intervals that came out narrowest: a variance small by chance
                     "narrowest quarter coverage": float(np.mean(cv[narrow])) if narrow.any() else float("nan"),
                     **{f"coverage {c}": float(np.mean(v)) for c, v in per_cand[n].items()},
                     "mean width": float(np.mean(x["width"])), "intervals": len(x["cover"]),
                     "decisions": x["decided"], "wrong decisions": x["decided_wrong"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--kind", default="fast", choices=["fast", "nuts"])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--summeval")
    ap.add_argument("--pandalm")
    ap.add_argument("--json", help="also write the tables as JSON here")
    ap.add_argument("--candidates", type=int, default=1, help="K >= 2: the multi-candidate study through the product")
    ap.add_argument("--seed", type=int, help="first replicate's seed (default: 1000 for the simulation, 2000 for "
                                             "--candidates, 0 for the real data): other seeds give independent runs")
    args = ap.parse_args()
    tables = {}
    if args.candidates > 1:
        t = time.time()
        tables["candidates"] = run_multi(args.reps, args.items, args.candidates,
                                         seed0=2000 if args.seed is None else args.seed)
        print_table(tables["candidates"], f"{args.candidates} candidates ({args.reps} replicates x 3 dimensions, "
                                          f"{args.items} items, fast fit, {time.time() - t:.0f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps(tables, indent=2, default=float))
        return
    if args.summeval:
        tables["summeval"] = run_summeval(args.summeval, args.reps, kind=args.kind, seed0=args.seed or 0)
        print_table(tables["summeval"], f"SummEval ({args.reps} replicates, {args.kind} fit)")
    if args.pandalm:
        tables["pandalm"] = run_pandalm(args.pandalm, args.reps, seed0=args.seed or 0)
        print_table(tables["pandalm"], f"PandaLM pairwise win rate ({args.reps} replicates)")
    if not (args.summeval or args.pandalm):
        t = time.time()
        tables["simulation"] = summarise(run_sim(args.reps, args.kind, args.items,
                                                        seed0=1000 if args.seed is None else args.seed))
        print_table(tables["simulation"], f"Simulation ({args.reps} replicates x 3 dimensions, {args.items} items, "
                                          f"{args.kind} fit, {time.time() - t:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=2, default=float))


if __name__ == "__main__":
    main()
