"""Do the fast fit and NUTS report the same design-consistent estimate? (issue #12)

On ``--projects`` demo projects (2,000 items, the simulated SME labelling through the queue), at
25, 100 and 400 labelled items both fits (`engine.fit_project(con, "fast")` and `"nuts"`) give
Delta's 95% interval per dimension; prints, per size, the largest and the median distance between
the two intervals' ends as a share of the NUTS interval's width (the bar: within 10%).

    .venv/bin/python bench/nuts_agreement.py --projects 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calib.data import demo, store  # noqa: E402
from calib.review import simulate  # noqa: E402
from calib.stats import engine  # noqa: E402

SIZES = (25, 100, 400)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=3)
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for p in range(args.projects):
        with tempfile.TemporaryDirectory() as tmp:
            con = store.connect(Path(tmp) / "p.duckdb")
            demo.load_demo(con, 2000, seed=20_000 + p)
            done = 0
            for n in SIZES:
                done += simulate.simulate_sme(con, n - done, seed=p * 31 + done)
                fast = engine.fit_project(con, "fast", record=False, seed=p)
                nuts = engine.fit_project(con, "nuts", record=False, seed=p)
                for a, b in zip(fast["diffs"], nuts["diffs"]):
                    w = b["hi"] - b["lo"]
                    rows.append({"project": p, "n": n, "dimension": a["dimension"], "nuts width": w,
                                 "fast width": a["hi"] - a["lo"],
                                 "ends apart / width": max(abs(a["lo"] - b["lo"]), abs(a["hi"] - b["hi"])) / w})
            con.close()
    df = pd.DataFrame(rows)
    t = df.groupby("n").agg(intervals=("dimension", "size"), nuts_width=("nuts width", "mean"),
                            fast_width=("fast width", "mean"), median_apart=("ends apart / width", "median"),
                            max_apart=("ends apart / width", "max")).reset_index()
    print(f"fast vs NUTS: {args.projects} demo projects x 3 dimensions ({time.perf_counter() - t0:.0f} s)")
    print(t.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
