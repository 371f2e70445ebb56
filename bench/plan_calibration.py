"""Is the budget planner's predicted width the width a lead then gets? (issue #22 part 3)

On ``--projects`` demo projects (``calib.data.demo``: ``--items`` items, judge scores for every
output) a pilot of ``--pilot`` labels goes through the queue with the simulated SME
(``calib.review.simulate``), a fast fit is recorded, and ``tiebreak plan`` (``calib.insight.plan``)
plans each budget. Each plan is then followed: the simulated SME labels up to the plan's ``n2``
through the queue, the project is fitted again (fast), and the obtained width of every Delta is
set against the predicted one. The budgets are followed in increasing order on the same project
(the labels of a smaller budget are the first labels of a larger one: the same queue, drawing on),
each plan made from the pilot's fit alone.

Plans that judge fewer items than the population (``--from-scratch`` arm, dearer judges) need
the two-phase sample: ``phase1.draw_sample(con, n=n1)``, then the judge scores of the items
outside the sample are deleted (as if only the sample had been judged). While ``draw_sample`` is
the interface's stub this arm is skipped with a message.

    nice -n 10 python bench/plan_calibration.py --projects 10 --first 0 --out /tmp/plan_a.json
    nice -n 10 python bench/plan_calibration.py --projects 10 --first 10 --out /tmp/plan_b.json
    python bench/plan_calibration.py --summarise /tmp/plan_a.json /tmp/plan_b.json

(two runs of 10 projects keep each under ~10 minutes on a shared 2-core machine; ``--summarise``
prints the table over both).

Prints per budget: labels planned, predicted and obtained width of the binding Delta, and the
ratio predicted / obtained over projects (mean, 10th-90th percentile), for the binding quantity,
for every planned quantity (each Delta and the side-by-side win rate) and for the win rates alone;
the bar is a mean ratio in 0.85-1.15 for every budget.

Measured (20 projects of 2,000 items, 2 runs of 10, ~6 min each on the shared machine): mean
ratio of the binding Delta 1.002 / 1.020 / 1.065 / 1.088 at $20 / $40 / $80 / $160 (60 / 80 / 120
/ 200 labels from a 40-label pilot), every Delta 1.03 / 1.01 / 1.03 / 1.06; the from-scratch arm
($150, gpt-4o judges: judge a sample of the 2,000 items, label ~130) 1.028. Bar met at every budget.
Before the plan faded the pilot's model error and small-sample protections with labels
(``Quantity.s2_e_at``): 1.06 / 1.07 / 1.13 / 1.17.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from calib.data import demo, phase1, store  # noqa: E402
from calib.insight import plan  # noqa: E402
from calib.review import simulate  # noqa: E402
from calib.stats import engine  # noqa: E402

LABEL_USD = 1.0  # an SME label (the bench's round figure; the planner's cost model is tested in tests/test_plan.py)


def judge_only_sample(con, n1: int, seed: int = 0) -> str | None:
    """Simulate having judged only a phase-1 sample of ``n1`` items: draw it, then delete the judge
    scores of every item outside it. Returns None when done, else why it was skipped."""
    try:
        phase1.draw_sample(con, n=n1, seed=seed)
    except NotImplementedError:
        return "skipped: phase1.draw_sample is not built yet (the two-phase sampling work)"
    keep = phase1.item_inclusion(con)["item_id"].tolist()
    with store.transaction(con):
        for table in ("judge_scores", "pair_judge_prefs"):
            con.execute(f"DELETE FROM {table} WHERE item_id NOT IN (SELECT unnest(?::VARCHAR[]))", [keep])
    return None


def label_to(con, n2: int, seed: int) -> int:
    """Label through the queue until ``n2`` items are labelled for both models."""
    have = con.execute("SELECT count(DISTINCT item_id) FROM labels").fetchone()[0]
    if n2 > have:
        simulate.simulate_sme(con, n2 - have, seed=seed)
    return con.execute("SELECT count(DISTINCT item_id) FROM labels").fetchone()[0]


def widths(fit: dict) -> dict[tuple[str, str, str], float]:
    """Every planned quantity's obtained width: (dimension, candidate, estimand) -> width."""
    out = {(d["dimension"], d["candidate"], "Delta"): d["hi"] - d["lo"] for d in fit["diffs"]}
    out.update({(p["dimension"], p["candidate"], "win rate"): p["hi"] - p["lo"] for p in fit.get("preference", [])})
    return out


def _key(d: dict) -> tuple[str, str, str]:
    return d["dimension"], d["candidate"], d.get("estimand", "Delta")


def _halves(fit: dict) -> dict:
    """Per Delta (key "dimension|candidate"): items, Tiebreak's, human-only's and PPI++'s half-widths
    (for studying what predicts the width; not used by the bar)."""
    out = {}
    for d in fit["diffs"]:
        key = f"{d['dimension']}|{d['candidate']}"
        out[key] = {"n": d.get("n_items"), "tiebreak": (d["hi"] - d["lo"]) / 2}
    for c in fit["cross_checks"]:
        if c.get("method") in ("human-only", "ppi++") and c.get("estimand", "Delta") == "Delta" and c.get("lo") is not None:
            out.setdefault(f"{c['dimension']}|{c['candidate']}", {})[c["method"]] = (c["hi"] - c["lo"]) / 2
    return out


def one_project(k: int, args, budgets: list[float], folder: Path) -> list[dict]:
    path = folder / f"p{k}.duckdb"
    con = store.connect(path, create=True)
    demo.load_demo(con, args.items, seed=1000 + k)
    label_to(con, args.pilot, seed=k)
    pilot_fit = engine.fit_project(con, "fast", seed=k)
    plans = {b: plan.plan_project(con, budget=b, sme_cost_per_label=LABEL_USD, judge_model=args.judge_model)
             for b in budgets}
    rows = []
    for b in budgets:  # increasing: each plan's labels extend the previous one's
        p = plans[b]["plan"]
        got_n = label_to(con, p["labelled_items"], seed=100_000 + k * 100 + int(b))
        fit = engine.fit_project(con, "fast", seed=k, record=False)
        obtained = widths(fit)
        rows.append({"project": k, "budget": b, "n2": p["labelled_items"], "labelled": got_n,
                     "predicted": p["width"], "obtained": obtained[_key(p["binding"])],
                     "all": [(w["width"], obtained[_key(w)]) for w in p["widths"]],
                     "win": [(w["width"], obtained[_key(w)]) for w in p["widths"] if w.get("estimand") == "win rate"],
                     "pilot": _halves(pilot_fit), "after": _halves(fit)})
    if args.from_scratch_budget:
        fresh = folder / f"f{k}.duckdb"
        con2 = store.connect(fresh, create=True)
        demo.load_demo(con2, args.items, seed=1000 + k)
        fp = plan.plan_project(con, budget=args.from_scratch_budget, sme_cost_per_label=LABEL_USD,
                               judge_model=args.dear_judge_model, from_scratch=True)["plan"]
        if fp["judged_items"] < args.items:
            why = judge_only_sample(con2, fp["judged_items"], seed=k)
            if why:
                rows.append({"project": k, "from_scratch": why})
            else:
                label_to(con2, fp["labelled_items"], seed=k)
                fit = engine.fit_project(con2, "fast", seed=k, record=False)
                rows.append({"project": k, "budget": f"scratch {args.from_scratch_budget:g}",
                             "n1": fp["judged_items"], "n2": fp["labelled_items"],
                             "predicted": fp["width"], "obtained": widths(fit)[_key(fp["binding"])], "all": []})
        con2.close()
    con.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--pilot", type=int, default=40)
    ap.add_argument("--budgets", default="20,40,80,160", help="USD still to spend, comma-separated")
    ap.add_argument("--judge-model", default="gpt-4o-mini")
    ap.add_argument("--from-scratch-budget", type=float, default=150.0,
                    help="a from-scratch plan with --dear-judge-model (n1 < N); 0: none")
    ap.add_argument("--dear-judge-model", default="gpt-4o")
    ap.add_argument("--first", type=int, default=0, help="first project's number (seeds follow it)")
    ap.add_argument("--out", help="write the rows (JSON) here, for --summarise")
    ap.add_argument("--summarise", nargs="+", metavar="JSON", help="print the table over earlier runs' rows")
    args = ap.parse_args()
    print("command: nice -n 10 python bench/plan_calibration.py " + " ".join(sys.argv[1:]), flush=True)
    t0 = time.time()
    if args.summarise:
        meta, rows = None, []
        for f in args.summarise:
            got = json.loads(Path(f).read_text())
            meta, rows = got["meta"], rows + got["rows"]
        summarise(rows, meta, t0)
        return
    budgets = sorted(float(b) for b in args.budgets.split(","))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="plan-cal-") as tmp:
        for k in range(args.first, args.first + args.projects):
            rows += one_project(k, args, budgets, Path(tmp))
            for f in Path(tmp).glob("*.duckdb*"):
                f.unlink()
            print(f"  project {k + 1 - args.first}/{args.projects} done ({time.time() - t0:.0f} s)", flush=True)
    meta = {"items": args.items, "pilot": args.pilot, "judge_model": args.judge_model, "budgets": budgets}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}))
    summarise(rows, meta, t0)


def summarise(rows: list[dict], meta: dict, t0: float) -> None:
    budgets = meta["budgets"]
    projects = len({r["project"] for r in rows})
    skipped = {r["from_scratch"] for r in rows if "from_scratch" in r}
    for why in skipped:
        print(f"from-scratch arm (n1 < N): {why}")
    print(f"\n{projects} demo projects of {meta['items']:,} items, pilot {meta['pilot']} labels, "
          f"SME label ${LABEL_USD:g}, judges priced as {meta['judge_model']} (census: judging is sunk)")
    print(f"{'budget':>12} {'labels':>8} {'pred. width':>12} {'obt. width':>11} {'ratio mean':>11} "
          f"{'p10-p90':>12} {'every qty':>11} {'p10-p90':>12} {'win rates':>10}")
    ok = True
    for b in [*budgets, *sorted({r['budget'] for r in rows if isinstance(r.get('budget'), str)})]:
        rs = [r for r in rows if r.get("budget") == b]
        if not rs:
            continue
        ratio = np.array([r["predicted"] / r["obtained"] for r in rs])
        allr = np.array([p / o for r in rs for p, o in r["all"]]) if rs[0]["all"] else ratio
        winr = np.array([p / o for r in rs for p, o in r.get("win", [])])
        ok &= 0.85 <= ratio.mean() <= 1.15
        label = f"${b:g}" if not isinstance(b, str) else b
        print(f"{label:>12} {np.mean([r['n2'] for r in rs]):8.0f} {np.mean([r['predicted'] for r in rs]):12.4f} "
              f"{np.mean([r['obtained'] for r in rs]):11.4f} {ratio.mean():11.3f} "
              f"{np.quantile(ratio, 0.1):5.2f}-{np.quantile(ratio, 0.9):<5.2f} {allr.mean():11.3f} "
              f"{np.quantile(allr, 0.1):5.2f}-{np.quantile(allr, 0.9):<5.2f} "
              + (f"{winr.mean():10.3f}" if len(winr) else f"{'':>10}"))
    print(f"bar (mean ratio 0.85-1.15 for every budget): {'met' if ok else 'NOT met'}; "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
