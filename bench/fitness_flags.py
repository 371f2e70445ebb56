"""How often "the judge's quality differs between the models" flags each demo judge (slow; not in
the test suite).

Per replicate: a fresh demo project (2,000 items, generator seed = replicate), labelled either by
the simulated SME through the real queue (``--mode queue``) or as a uniform sample of items straight
from the hidden truth (``--mode uniform``). Reports, per judge, the share of projects where
``calib.insight.fitness.fitness_differences`` flags it on some dimension (judge-lenient, lenient to
the candidate only, should be flagged; judge-strict and judge-likert barely move), and the coverage
of the 95% intervals of the differences against the hidden truth.

    .venv/bin/python bench/fitness_flags.py [--mode queue|uniform] [--labels 400] [--reps 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from calib.data import demo, store  # noqa: E402
from calib.insight import fitness  # noqa: E402
from calib.review import simulate  # noqa: E402
from test_fitness import _label_uniform, _truth  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["queue", "uniform"], default="queue")
    ap.add_argument("--labels", type=int, default=400)
    ap.add_argument("--reps", type=int, default=8)
    a = ap.parse_args()
    flags = {j: 0 for j in demo.JUDGES}
    hits = total = 0
    t0 = time.time()
    for seed in range(1, a.reps + 1):
        c = duckdb.connect()
        store.migrate(c)
        demo.load_demo(c, 2000, seed=seed)
        if a.mode == "queue":
            simulate.simulate_sme(c, a.labels)
        else:
            _label_uniform(c, a.labels)
        truth = _truth(c)
        rows = fitness.fitness_differences(c)
        for j in {r["judge"] for r in rows if r["differs"]}:
            flags[j] += 1
        for r in rows:
            for short, m in [("j", "youden_j"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                             ("kappa", "kappa")]:
                t = truth[(r["judge"], r["dimension"], r["candidate"])][m] - truth[(r["judge"], r["dimension"], r["baseline"])][m]
                total += 1
                hits += r[f"{short}_difference_lo"] <= t <= r[f"{short}_difference_hi"]
        print(f"replicate {seed}: flagged {sorted(j for j in demo.JUDGES if any(r['differs'] and r['judge'] == j for r in rows))}",
              flush=True)
        c.close()
    print(f"\n{a.reps} projects, {a.labels} labelled items ({a.mode}), {time.time() - t0:.0f} s")
    for j, k in flags.items():
        print(f"  {j}: flagged in {k}/{a.reps}")
    print(f"  coverage of the 95% intervals of the differences: {hits / total:.3f} ({total} intervals)")


if __name__ == "__main__":
    main()
