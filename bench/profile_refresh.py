"""Where the dashboard's live refresh spends its time (slow; not in the test suite).

Uses a copy of bench/out/refit.duckdb (made by bench/refit_speed.py). After each of N new labelled
items it runs the live refresh of bench/dashboard_refresh.py with the refresh's stages wrapped in
timers (inclusive wall time per call: a stage's time includes the stages it calls), and prints
per stage the median time per refresh; with --cprofile, cProfile's top functions as well.

    .venv/bin/python bench/profile_refresh.py [--db bench/out/refit.duckdb] [--n 5] [--cprofile] [--history 2000]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib.util
import io
import os
import pstats
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
from calib.data import cells, store  # noqa: E402
from calib.insight import dashboard, plots  # noqa: E402
from calib.stats import design, engine, forecast, model  # noqa: E402

_spec = importlib.util.spec_from_file_location("dashboard_refresh", Path(__file__).with_name("dashboard_refresh.py"))
dashboard_refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard_refresh)

# (module, attribute): every place a stage is looked up from (a name imported into another module
# is wrapped there too)
STAGES = [
    (cells, "ensure_cells"), (engine, "ensure_cells"), (cells, "fingerprint"),
    (engine, "label_watermark"), (engine, "load_dimension"), (engine, "design_weight_parts"),
    (design, "sequential_weights"), (engine, "load_pairs"), (engine, "pairwise_rate"),
    (model, "fit_laplace"), (model, "population_rate_draws"), (engine, "candidate_rates"),
    (engine, "design_rates"), (design, "loo_predictions"), (design, "design_rate_draws"),
    (design, "_domain_estimate"), (model, "eta_draws"), (engine, "_forecast_dimension"),
    (engine, "_cross_checks"), (engine, "fit_project"), (engine, "fits_history"), (engine, "latest_fit"),
    (dashboard, "refit_due"), (dashboard, "signoff"), (dashboard, "with_pass_rates"),
    (plots, "shrinkage_figure"), (plots, "forest_figure"),
]
TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def wrap(mod, name: str) -> None:
    fn = getattr(mod, name)
    label = f"{fn.__module__.rsplit('.', 1)[-1]}.{name}"
    inner = fn

    @functools.wraps(inner)
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            TIMES[label] += time.perf_counter() - t
            CALLS[label] += 1

    setattr(mod, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(ROOT / "bench" / "out" / "refit.duckdb"))
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--history", type=int, default=0, help="pad the fits table to this many fits first")
    args = ap.parse_args()
    src = Path(args.db)
    if not src.exists():
        raise SystemExit(f"{src} missing: run bench/import_scale.py then bench/refit_speed.py first")
    db = src.with_name("profile.duckdb")
    shutil.copy(src, db)
    con = store.connect(db)
    cells.ensure_cells(con)
    have = con.execute("SELECT count(*) FROM fits").fetchone()[0]
    if have and args.history > have:  # as bench/dashboard_refresh.py --history
        con.execute("""INSERT INTO fits (created_at, kind, n_labels, seconds, result)
                       SELECT f.created_at, f.kind, f.n_labels, f.seconds, f.result FROM fits f, range(?) r
                       ORDER BY r.range, f.fit_id LIMIT ?""", [args.history // have + 1, args.history - have])
    comparison = dashboard.output_stats(con)
    dashboard_refresh.live_refresh(con, comparison)  # warm
    for mod, name in STAGES:
        wrap(mod, name)
    per_refresh: list[dict[str, float]] = []
    total, cpu = [], []
    prof = cProfile.Profile() if args.cprofile else None
    for i in range(args.n):
        dashboard_refresh.add_label(con, 700 + i)
        TIMES.clear()
        CALLS.clear()
        t, c = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        dashboard_refresh.live_refresh(con, comparison)
        if prof:
            prof.disable()
        total.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        per_refresh.append({k: (v, CALLS[k]) for k, v in TIMES.items()})
    con.close()
    db.unlink()
    print(f"live refresh: median {np.median(total):.3f} s wall, {np.median(cpu):.3f} s CPU (all threads) over {args.n} "
          f"(cProfile {'on' if prof else 'off'}); load average {os.getloadavg()[0]:.2f}")
    labels = sorted({k for r in per_refresh for k in r}, key=lambda k: -np.median([r.get(k, (0, 0))[0] for r in per_refresh]))
    print(f"{'stage (inclusive)':40s} {'median s':>9s} {'calls':>6s}")
    for k in labels:
        print(f"{k:40s} {np.median([r.get(k, (0, 0))[0] for r in per_refresh]):9.3f} "
              f"{int(np.median([r.get(k, (0, 0))[1] for r in per_refresh])):6d}")
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        print(s.getvalue())


if __name__ == "__main__":
    main()
