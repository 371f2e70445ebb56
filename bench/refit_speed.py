"""Refit speed with 2,000 labelled items and a 5.3M-output store (slow; not in the test suite).

Uses the store made by bench/import_scale.py (run that first), copied to bench/out/refit.duckdb.
Labels 2,000 items (every dimension, both models; verdicts drawn from the strict judge's score,
since the timing does not depend on them), then times:
- the one-off cell build after an import (cold);
- the fast fit (`tiebreak fit --fast` path) after each of 20 single new labelled items: p50, p95;
- the authoritative NUTS fit: cold (first, compiles the model) and warm (after one more label);
and prints how far the fast fit's Delta intervals are from NUTS's, as a share of NUTS's width.

    .venv/bin/python bench/refit_speed.py [--store bench/out/scale.duckdb] [--no-nuts]

--no-nuts stops after the fast fits (the NUTS part adds a minute or two on the 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# bench/ holds coverage.py, which would shadow the `coverage` package numba probes: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import cells, store  # noqa: E402
from calib.stats import engine  # noqa: E402


def add_labels(con, n_items: int, seed: int) -> None:
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    con.execute(
        f"""INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, source)
            SELECT s.item_id, s.model, s.dimension, random() < s.score, 'bench', current_timestamp, 'bench'
            FROM judge_scores s
            WHERE s.judge = 'judge-strict' AND s.item_id IN (
                SELECT item_id FROM items WHERE item_id NOT IN (SELECT DISTINCT item_id FROM labels)
                USING SAMPLE {n_items} ROWS (reservoir, {seed}))"""
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(Path(__file__).parent / "out" / "scale.duckdb"))
    ap.add_argument("--labels", type=int, default=2000)
    ap.add_argument("--refits", type=int, default=20)
    ap.add_argument("--no-nuts", action="store_true", help="time the cell build and the fast fits only")
    args = ap.parse_args()
    src = Path(args.store)
    if not src.exists():
        raise SystemExit(f"{src} missing: run bench/import_scale.py first")
    db = src.with_name("refit.duckdb")
    shutil.copy(src, db)
    con = store.connect(db)
    n_out = con.execute("SELECT count(*) FROM outputs").fetchone()[0]
    add_labels(con, args.labels, 1)
    t = time.perf_counter()
    cells.ensure_cells(con)
    print(f"store: {n_out:,} outputs; {args.labels} labelled items")
    print(f"cell build (once per import):  {time.perf_counter() - t:6.2f} s")
    per_dim = con.execute("SELECT dimension, count(*) FROM model_cells GROUP BY ALL ORDER BY ALL").fetchall()
    print("cells per dimension:", ", ".join(f"{d} {n}" for d, n in per_dim))

    t = time.perf_counter()
    engine.fit_project(con, "fast")
    print(f"fast fit, first in process:    {time.perf_counter() - t:6.2f} s")
    times, cpu = [], []
    for i in range(args.refits):
        add_labels(con, 1, 100 + i)
        t, c = time.perf_counter(), time.process_time()
        fast = engine.fit_project(con, "fast")
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"fast fit after each new label: p50 {np.percentile(times, 50):.2f} s, p95 {np.percentile(times, 95):.2f} s "
          f"(n={len(times)}); CPU time (all threads) p50 {np.percentile(cpu, 50):.2f} s; load average {os.getloadavg()[0]:.2f}")
    if args.no_nuts:
        return

    t = time.perf_counter()
    engine.fit_project(con, "nuts")
    cold = time.perf_counter() - t
    warm = []
    for i in range(3):  # each after one more labelled item
        add_labels(con, 1, 999 + i)
        t = time.perf_counter()
        nuts = engine.fit_project(con, "nuts")
        warm.append(time.perf_counter() - t)
    print(f"NUTS fit: cold {cold:.1f} s (compiles), warm {', '.join(f'{w:.2f}' for w in warm)} s "
          f"(median {np.median(warm):.2f} s)")
    for dim, d in nuts["diagnostics"].items():
        print(f"  {dim}: max R-hat {d['max_rhat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}, divergences {d['divergences']}")
    fast = engine.fit_project(con, "fast", record=False, draws=4000)
    for a, b in zip(nuts["diffs"], fast["diffs"]):
        w = a["hi"] - a["lo"]
        gap = max(abs(a[k] - b[k]) for k in ("mean", "lo", "hi")) / w
        print(f"  {a['dimension']}: NUTS {a['mean']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}]  fast {b['mean']:+.4f} "
              f"[{b['lo']:+.4f}, {b['hi']:+.4f}]  max gap {gap:.1%} of the width")


if __name__ == "__main__":
    main()
