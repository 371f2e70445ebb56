"""Judge fitness on the 2,000-label, 5.3M-output store (slow; not in the test suite).

Times the labelled judgements' join, ``fitness.fitness_differences`` (the Decision page) and
``fitness.fitness_and_differences`` (the Judges page, the report), wall and CPU seconds with the load
average, and prints a digest of the rows: the same data and seed give the same digest run to run.

    .venv/bin/python bench/fitness_speed.py [--db bench/out/refit.duckdb] [--repeats 2]

Make the store with bench/import_scale.py then bench/refit_speed.py --no-nuts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

# bench/ holds coverage.py, which would shadow the `coverage` package numba probes: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import store  # noqa: E402
from calib.insight import diagnostics, fitness  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(label: str, f):
    """Run ``f``, print its wall and CPU seconds (all threads) and the load average; return its result."""
    w, c = time.perf_counter(), _cpu()
    out = f()
    print(f"{label}: {time.perf_counter() - w:.2f} s wall, {_cpu() - c:.2f} s CPU, load {os.getloadavg()[0]:.2f}",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(Path(__file__).parent / "out" / "refit.duckdb"))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.db).exists():
        raise SystemExit(f"{args.db} missing: run bench/import_scale.py then bench/refit_speed.py --no-nuts first")
    con = store.connect(args.db)
    n, latest = con.execute("SELECT count(*), max(label_id) FROM labels").fetchone()
    coarse, n_as_of = fitness.fitness_watermark(con)
    print(f"labels: {n:,} (newest id {latest}); the pages' judge fitness is as of id {coarse} ({n_as_of:,} labels)")
    for _ in range(args.repeats):
        timed("labelled judgements (the join)", lambda: diagnostics.labelled_judgements(con))
        rows = timed("fitness_differences", lambda: fitness.fitness_differences(con))
        timed("fitness_and_differences", lambda: fitness.fitness_and_differences(con))
    digest = hashlib.md5(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    print(f"{len(rows)} rows, {sum(r['differs'] for r in rows)} flagged; digest {digest}")


if __name__ == "__main__":
    main()
