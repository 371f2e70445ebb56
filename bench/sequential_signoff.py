"""Sign-off under continuous monitoring: wrong sign-offs of the fixed-n and anytime-valid modes.

A lead watches the Decision page and signs the moment it says "not worse". This study simulates
projects with a known true Delta (the finite population's candidate pass rate minus the
baseline's) and a lead who looks after every labelled item (and, separately, after every 10), and
counts:

- the wrong-sign-off rate: projects ever shown "not worse" while the true Delta is at the margin
  (Delta = -margin: the boundary, where the nominal rate 1 - decide_prob applies) or beyond it
  (-2 margins);
- for a candidate that is truly fine (Delta = 0 and +margin): the share signed off within the
  label budget and the median labels to the sign-off.

Each look runs the product's own design estimate (``calib.stats.design._domain_estimate``, the
same function ``fit_project`` uses, with its finite-population correction, pooled model variance
and floor; Student-t with Kish's degrees of freedom) and the product's two decision rules
(fixed-n: P(Delta > -margin) >= decide_prob from that t; anytime: ``calib.stats.sequential``'s
``anytime_decision``, with its standard error floored at the null's least variance; the column
"no floor" is the same sequence without that floor, as it was before, for comparison).
What is simplified, so that 1,600 projects x hundreds of looks run in minutes on a shared core:
the calibration model's predictions of each output are fixed per project (from a deliberately
miscalibrated "judge model"), not refitted after every label with leave-one-out residuals; labels
come as a uniform random sample one item at a time (both models' outputs labelled), as labels
from outside the queue are weighted. ``--product K`` also runs K demo projects through
``fit_project`` itself (looks every 10 labels), as a check that the product path behaves alike.

    nice -n 10 python bench/sequential_signoff.py --jobs 2       # 400 projects per row, ~4 min CPU
    nice -n 10 python bench/sequential_signoff.py --jobs 2 --level 3.5 --margin 0.03   # pass rates ~0.93
    nice -n 10 python bench/sequential_signoff.py --projects 20 --product 6   # + 6 demo projects via fit_project
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.special import expit, logit
from scipy.stats import t as student_t

from calib.stats import design, sequential


def population(n_items: int, delta: float, rng: np.random.Generator, level: float = 1.2) -> dict:
    """One project's finite population: both models' true verdicts with Delta exactly ``delta``
    (to 1 / n_items), and the judge model's (miscalibrated) pass probabilities. ``level``: the
    logit of a typical item's pass probability (1.2: rates ~0.7; 3.5: ~0.93, failures rare)."""
    z = rng.normal(0.0, 1.2, n_items)
    q_b = expit(level + z)
    q_c = expit(level + z + rng.normal(0.0, 0.4, n_items))
    u = rng.random(n_items)  # shared: the two outputs of an item are mostly right or wrong together
    y_b = (u < q_b).astype(float)
    y_c = (u < q_c).astype(float)
    redo = rng.random(n_items) < 0.15
    y_c[redo] = (rng.random(redo.sum()) < q_c[redo]).astype(float)
    need = int(round((delta - (y_c.mean() - y_b.mean())) * n_items))
    pool = np.flatnonzero(y_c == (0.0 if need > 0 else 1.0))
    y_c[rng.choice(pool, size=min(abs(need), len(pool)), replace=False)] = 1.0 if need > 0 else 0.0
    # the judge model: shrunk, shifted and noisy on the logit scale (a wrong model costs width, not coverage)
    p_b = expit(0.8 * logit(np.clip(q_b, 1e-3, 1 - 1e-3)) + 0.3 + rng.normal(0, 0.5, n_items))
    p_c = expit(0.8 * logit(np.clip(q_c, 1e-3, 1 - 1e-3)) + 0.3 + rng.normal(0, 0.5, n_items))
    return {"y": np.column_stack([y_b, y_c]), "p": np.column_stack([p_b, p_c]),
            "delta": float(y_c.mean() - y_b.mean())}


def estimate(pop: dict, lab: np.ndarray) -> tuple[float, float, int]:
    """The product's design estimate of Delta from the labelled items ``lab``: mean, t scale, df."""
    y, p = pop["y"], pop["p"]
    N, n = len(y), len(lab)
    unl = np.ones(N, bool)
    unl[lab] = False
    w = np.full(n, N / n)  # a uniform sample: pi = n / N
    mean, cov, _ = design._domain_estimate(
        y[lab].sum(0), p[unl].sum(0), np.array([N, N], float), np.array([N - n, N - n], float),
        y[lab] - p[lab], np.clip(p[lab] * (1 - p[lab]), 1e-6, None), np.ones((n, 2)), w, y[lab])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return float(mean[1] - mean[0]), float(np.sqrt(max(var, 1e-12))), design.t_df(w)


def run_project(pop: dict, margin: float, decide_prob: float, n_max: int, min_items: int, target: int,
                rng: np.random.Generator) -> dict:
    """Label items in a random order; after each label take each mode's decision. The lead acts on
    the first verdict shown ("not worse": signs off; "worse": drops the candidate). Returns, per
    (mode, looks every 1 or 10 labels), that first verdict and its n (None: no verdict by
    ``n_max``), and the fixed-n decision of a single look at ``n_max``."""
    order = rng.permutation(len(pop["y"]))[:n_max]
    alpha = 1.0 - decide_prob

    def decisions(n: int) -> dict:
        mean, scale, df = estimate(pop, order[:n])
        pn = float(student_t.cdf((mean + margin) / scale, df))
        fixed = "not worse" if pn >= decide_prob else "worse" if 1 - pn >= decide_prob else "label more"
        sd = scale * np.sqrt(df / (df - 2)) if df > 2 else np.inf  # the sd of the product's t draws
        return {"fixed": fixed, "anytime": sequential.anytime_decision(mean, sd, n, alpha, target, -margin),
                # the sequence as it was before its variance floor at the null (for comparison)
                "anytime_nofloor": sequential.anytime_decision(mean, sd, n, alpha, target, -margin, floor=False)}

    first: dict = {(mode, every): None for mode in (*sequential.MODES, "anytime_nofloor") for every in (1, 10)}
    for n in range(max(min_items, 3), n_max + 1):
        d = decisions(n)
        for (mode, every), v in first.items():
            if v is None and n % every == 0 and d[mode] != "label more":
                first[(mode, every)] = (d[mode], n)
        if all(v is not None for v in first.values()):
            break
    first["fixed_single_look"] = decisions(n_max)["fixed"]
    return first


def _row_projects(a: tuple) -> list[dict]:
    """One row's projects (its own seeded stream [seed, k], whatever runs it)."""
    k, dm, projects, n_items, margin, decide_prob, n_max, min_items, target, seed, level = a
    rng = np.random.default_rng([seed, k])
    return [run_project(population(n_items, dm * margin, rng, level), margin, decide_prob, n_max, min_items, target, rng)
            for _ in range(projects)]


def study(projects: int = 400, n_items: int = 1000, margin: float = 0.05, decide_prob: float = 0.95,
          n_max: int = 600, min_items: int = 20, target: int = 100, seed: int = 0,
          deltas: tuple[float, ...] | None = None, level: float = 1.2, jobs: int = 1) -> list[dict]:
    """Rows per true Delta (in margins): wrong sign-off rates and labels to a sign-off per mode
    (and "anytime_nofloor": the sequence without its variance floor at the null, for comparison)."""
    deltas = deltas if deltas is not None else (-2.0, -1.0, 0.0, 1.0)
    args = [(k, dm, projects, n_items, margin, decide_prob, n_max, min_items, target, seed, level)
            for k, dm in enumerate(deltas)]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(args))) as ex:
            results = list(ex.map(_row_projects, args))
    else:
        results = [_row_projects(a) for a in args]
    rows = []
    for dm, res in zip(deltas, results):
        row = {"delta_margins": dm, "projects": projects}
        for mode in (*sequential.MODES, "anytime_nofloor"):
            for every in (1, 10):
                firsts = np.array([r[(mode, every)][1] if r[(mode, every)] and r[(mode, every)][0] == "not worse"
                                   else np.inf for r in res], float)
                row[f"{mode}_every{every}_signoff"] = float(np.isfinite(firsts).mean())
                med = float(np.median(firsts))
                row[f"{mode}_every{every}_median_n"] = med if np.isfinite(med) else None
        row["fixed_single_look_signoff"] = float(np.mean([r["fixed_single_look"] == "not worse" for r in res]))
        rows.append(row)
    return rows


def product_check(k: int, margin_items: int = 120, every: int = 10, seed: int = 0) -> list[dict]:
    """``k`` demo projects (400 items) through ``fit_project`` itself: the dimension where the
    candidate is truly worst, the margin set to its true -Delta (the truth at the margin), the
    simulated SME labelling through the queue, a fit every ``every`` items up to ``margin_items``.
    Returns per project each mode's first verdict and its n ("not worse" is a wrong sign-off)."""
    import tempfile
    from pathlib import Path

    from calib.data import demo, store
    from calib.review import simulate
    from calib.stats import engine

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for j in range(k):
            con = store.connect(Path(tmp) / f"p{j}.duckdb")
            demo.load_demo(con, 400, seed=seed + j)
            s = store.get_settings(con)
            base, cand = s["baseline"], s["candidates"][0]
            # the first dimension on which the candidate is truly worse: the margin is set to the truth
            worst = None
            for dim in s["dimensions"]:
                rate = dict(con.execute("SELECT model, avg(verdict::INT) FROM sim_truth WHERE dimension = ? "
                                        "GROUP BY model", [dim]).fetchall())
                d = float(rate[cand] - rate[base])
                if worst is None or d < worst[1]:
                    worst = (dim, d)
            dim, true_delta = worst
            store.set_settings(con, margin=max(-true_delta, 0.0))
            first = {"fixed": None, "anytime": None}
            for n0 in range(0, margin_items, every):
                simulate.simulate_sme(con, every, seed=seed + j * 1000 + n0)
                fit = engine.fit_project(con, record=False, draws=1000, seed=j)
                row = next(d for d in fit["diffs"] if d["candidate"] == cand and d["dimension"] == dim)
                for mode, dec in (("fixed", row["decision_fixed"]), ("anytime", row["decision"])):
                    if first[mode] is None and dec != "label more":
                        first[mode] = (dec, row["n_items"])
            out.append({"project": j, "dimension": dim, "true_delta": true_delta,
                        **{f"first_{m}": v for m, v in first.items()}})
            con.close()
    return out


def _fmt_rate(x: float) -> str:
    return f"{x:6.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=400)
    ap.add_argument("--items", type=int, default=1000, help="items per project (the population)")
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--max-labels", type=int, default=600)
    ap.add_argument("--target", type=int, default=100, help="anytime_target_items")
    ap.add_argument("--level", type=float, default=1.2, help="logit of a typical pass rate (3.5: rates ~0.93)")
    ap.add_argument("--deltas", default="-2,-1,0,1", help="true Delta in margins, comma-separated")
    ap.add_argument("--product", type=int, default=0, help="also run this many demo projects through fit_project")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="rows run in parallel processes (same figures)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = study(a.projects, a.items, a.margin, n_max=a.max_labels, target=a.target, seed=a.seed,
                 deltas=tuple(float(x) for x in a.deltas.split(",")), level=a.level, jobs=a.jobs)
    print(f"{a.projects} projects per row, {a.items} items each (pass-rate level {a.level:g} on the logit scale), "
          f"margin {a.margin}, decide_prob 0.95 "
          f"(nominal wrong sign-off at the margin: 5.0%), looks from 20 labelled items to {a.max_labels}, "
          f"anytime bound tightest at {a.target}\n")
    print("true Delta | signed off (share of projects)                                                 "
          "| median labels to sign-off")
    print("  /margin  | fixed 1 look | fixed every 10 | fixed every 1 | anytime 10 | anytime 1 | no floor 1 "
          "| fixed 10 | fixed 1 | anytime 10 | anytime 1 | no floor 1")
    for r in rows:
        med = [r[f"{m}_every{e}_median_n"] for m, e in (("fixed", 10), ("fixed", 1), ("anytime", 10), ("anytime", 1),
                                                          ("anytime_nofloor", 1))]
        print(f"  {r['delta_margins']:+5.1f}    |    {_fmt_rate(r['fixed_single_look_signoff'])}    |"
              f"     {_fmt_rate(r['fixed_every10_signoff'])}     |    {_fmt_rate(r['fixed_every1_signoff'])}     |"
              f"   {_fmt_rate(r['anytime_every10_signoff'])}   |  {_fmt_rate(r['anytime_every1_signoff'])}   |"
              f"  {_fmt_rate(r['anytime_nofloor_every1_signoff'])}   | "
              + " | ".join(f"{'>' + str(a.max_labels) if m is None else int(m):>7}" for m in med))
    print("('no floor': the anytime sequence without its variance floor at the null, as before issue #23's fix)")
    print(f"\n(rows with Delta <= -margin: every sign-off is wrong; 'fixed 1 look' decides once, at {a.max_labels} labels)")
    print(f"simulation: {time.perf_counter() - t0:.0f} s")
    if a.product:
        t1 = time.perf_counter()
        res = product_check(a.product)
        for r in res:
            print(f"product path, demo seed {r['project']} ({r['dimension']}): true Delta {r['true_delta']:+.3f} = "
                  f"-margin; first verdict fixed: {r['first_fixed']}, anytime: {r['first_anytime']}")
        wf = np.mean([bool(r["first_fixed"]) and r["first_fixed"][0] == "not worse" for r in res])
        wa = np.mean([bool(r["first_anytime"]) and r["first_anytime"][0] == "not worse" for r in res])
        print(f"product path: wrong sign-offs with looks every 10 labels: fixed {wf:.0%}, anytime {wa:.0%} "
              f"of {len(res)} projects ({time.perf_counter() - t1:.0f} s)")


if __name__ == "__main__":
    main()
