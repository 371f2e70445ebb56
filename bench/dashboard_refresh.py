"""Dashboard refresh time with 2,000 labelled items on the 5.3M-output store (issue target <= 1.5 s).

Uses bench/out/refit.duckdb (made by bench/refit_speed.py: the 5.3M store plus 2,000 labelled items).
After each of N new labelled items it times:
- the live refresh: what the decision page's 5-second fragment does (a fast refit with the forecast
  from the same posterior, the fits history, the sign-off, and the plotly figures for three dimensions);
  the latency/cost scan of the outputs is cached per data version, and is timed once separately;
- a full rerun of pages/2_Decision.py through Streamlit's AppTest (script, widgets, exports, charts).

    .venv/bin/python bench/dashboard_refresh.py [--db bench/out/refit.duckdb] [--n 10] [--history 2000] [--no-page]

--history N first pads the fits table to N recorded fits (copies of the fits already there): a live
dashboard refits after each labelled item, so a project at 2,000 labels has about 2,000 fits, and
the refresh reads the fits history (the copy of refit.duckdb has only the bench's few dozen).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
from calib.data import cells, store  # noqa: E402
from calib.stats import engine  # noqa: E402
from calib.insight import dashboard, plots  # noqa: E402

_spec = importlib.util.spec_from_file_location("refit_speed", Path(__file__).with_name("refit_speed.py"))
refit_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refit_speed)


def add_label(con, seed: int) -> None:
    """One more labelled item, as bench/refit_speed.py adds them."""
    refit_speed.add_labels(con, 1, seed)


def live_refresh(con, output_stats) -> None:
    fit = dashboard.refresh(con)
    history = engine.fits_history(con)
    dashboard.signoff(fit, dashboard.with_pass_rates(output_stats, fit), store.get_settings(con))
    fc = {f["dimension"]: f for f in fit.get("forecasts", [])}
    for d in fit["diffs"]:
        plots.shrinkage_figure(history, d["dimension"], fc.get(d["dimension"]), fit["margin"]).to_plotly_json()
        plots.forest_figure(fit["segment_diffs"], d["dimension"], fit["margin"]).to_plotly_json()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(ROOT / "bench" / "out" / "refit.duckdb"))
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--history", type=int, default=0, help="pad the fits table to this many fits first")
    ap.add_argument("--no-page", action="store_true", help="skip the full page reruns (AppTest)")
    args = ap.parse_args()
    src = Path(args.db)
    if not src.exists():
        raise SystemExit(f"{src} missing: run bench/import_scale.py then bench/refit_speed.py first")
    db = src.with_name("dashboard.duckdb")
    shutil.copy(src, db)
    con = store.connect(db)
    n_out = con.execute("SELECT count(*) FROM outputs").fetchone()[0]
    n_lab = con.execute("SELECT count(DISTINCT item_id) FROM labels").fetchone()[0]
    print(f"store: {n_out:,} outputs, {n_lab:,} labelled items")
    cells.ensure_cells(con)
    have = con.execute("SELECT count(*) FROM fits").fetchone()[0]
    if have and args.history > have:
        con.execute("""INSERT INTO fits (created_at, kind, n_labels, seconds, result)
                       SELECT f.created_at, f.kind, f.n_labels, f.seconds, f.result FROM fits f, range(?) r
                       ORDER BY r.range, f.fit_id LIMIT ?""", [args.history // have + 1, args.history - have])
    print(f"fits recorded: {con.execute('SELECT count(*) FROM fits').fetchone()[0]:,}")
    t = time.perf_counter()
    comparison = dashboard.output_stats(con)
    print(f"latency/cost scan of every output (cached per data version): {time.perf_counter() - t:.2f} s")
    live_refresh(con, comparison)  # warm: first fit in the process
    times, cpu = [], []
    for i in range(args.n):
        add_label(con, 500 + i)
        t, c = time.perf_counter(), time.process_time()
        live_refresh(con, comparison)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"live refresh after each new label: p50 {np.percentile(times, 50):.2f} s, p95 {np.percentile(times, 95):.2f} s, "
          f"max {max(times):.2f} s (n={len(times)}); CPU time (all threads) p50 {np.percentile(cpu, 50):.2f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    live_refresh(con, comparison)
    print(f"live refresh with no new label (no refit): {time.perf_counter() - t:.3f} s")
    con.close()
    if args.no_page:
        return

    from streamlit.testing.v1 import AppTest

    os.environ["TIEBREAK_DB"] = str(db)
    # the page takes --db from the command line before $TIEBREAK_DB (ui.db_path): with this
    # script's own --db it opened the source store, never saw the new labels and measured a page
    # with nothing to redo; it must open the copy the labels go to
    sys.argv = sys.argv[:1]
    os.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Decision.py"), default_timeout=300)
    at.run()
    from pages.shared import ui

    cur = ui._connection(str(db)).cursor()
    page = []
    for i in range(5):
        add_label(cur, 900 + i)
        t = time.perf_counter()
        at.run()
        page.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    print(f"full page rerun (AppTest) after each new label: p50 {np.percentile(page, 50):.2f} s, "
          f"max {max(page):.2f} s (n={len(page)}); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
