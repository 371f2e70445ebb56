"""The queue's first batches on PandaLM (issue #23): are the first labels worth random ones?

For each PandaLM model pair, R replicates of each design (random labels; Tiebreak's queue, through
refill / lease / submit as an SME would) are fitted after the first 10 and 20 comparisons (the
product's fast fit). Prints per design and n: the win rate's coverage, mean width, the share of
intervals at least 0.95 wide (uninformative), and for the queue the spread (max / min) of the
first batch's recorded inclusion probabilities.

    .venv/bin/python bench/first_batch.py --reps 20        # ~5 min on 2 free cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import realdata  # noqa: E402
from calib.data import store  # noqa: E402

realdata.SIZES = (10, 20)


def _run(args):
    rows = realdata.panda_replicate(args)
    return [r for r in rows if r["method"] in ("tiebreak", "human-only")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pandalm", default=str(realdata.PANDALM))
    a = ap.parse_args()
    t0 = time.time()
    df = pd.read_json(a.pandalm, lines=True)
    with tempfile.TemporaryDirectory() as tmp:
        bases = {p: realdata.build_panda_base(df, *p, Path(tmp)) for p in realdata.PANDA_PAIRS}
        # the first batch's spread of inclusion probabilities, from a fresh copy per pair
        spreads = []
        from calib.review import queue
        import shutil
        for p, db in bases.items():
            c = Path(tmp) / "spread.duckdb"
            shutil.copy(db, c)
            con = store.connect(c)
            u = queue.unit_priorities(con)
            r = store.get_settings(con)["random_share"]
            pi = (queue.mixture_probabilities(u, 10, r)[0] if hasattr(queue, "mixture_probabilities")
                  else queue.stratified_inclusion(u.priority, u.segment, 10, r, u.base_weight))
            spreads.append((f"{p[0]}/{p[1]}", float(pi.max() / pi.min()), len(pi)))
            con.close()
            c.unlink()
        tasks = [(bases[p], *p, design, rep, a.pandalm) for p in realdata.PANDA_PAIRS
                 for design in ("random", "queue") for rep in range(a.reps)]
        with ProcessPoolExecutor(a.jobs) as ex:
            rows = [r for part in ex.map(_run, tasks) for r in part]
    d = pd.DataFrame(rows)
    d["wide"] = d.width >= 0.95
    s = d.groupby(["method", "design", "n"]).agg(intervals=("covered", "size"), coverage=("covered", "mean"),
                                                   width=("width", "mean"), share_width_ge_095=("wide", "mean"))
    print(s.round(3).to_string())
    print("\nfirst queue batch (refill of 10 on a fresh project): max/min inclusion probability over the eligible units")
    for name, sp, n in spreads:
        print(f"  {name}: {sp:.2f} ({n} units)")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
