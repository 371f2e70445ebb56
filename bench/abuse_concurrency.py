"""Abuse bench, concurrency and exports (issue 25, problems 6, 7 and 9). Loopback only, no network.

The app serves every session from threads of ONE process sharing one DuckDB connection, a
``cursor()`` per use; this bench does the same with threads, calling what the pages call:

- 6: 8 and 30 SMEs open the Label page at once on a fresh demo project (no cells, empty queue):
  ``queue.lease_or_refill`` per SME (and, as the old page did, ``refill`` from every thread).
  Counts exceptions, units queued twice, batches, SMEs served.
- 7: a project whose item ids, model names, notes and annotator names are formulas (``=1+1``,
  ``=HYPERLINK(...)``, ``-2+3+cmd|...``, ``@SUM``, tab, CR): the cells of the labels CSV export (app
  and CLI), the fits history CSV and ``tiebreak queue``'s CSV that a spreadsheet would run.
- 9: four sessions press "Run NUTS" within a second (``dashboard.start_nuts``, the button's call):
  how many fits start, and this process's resident memory before and after (the sampler runs in the
  NUTS worker process, which exits when idle); then one in-process NUTS fit, as before, for scale.

    python bench/abuse_concurrency.py          # ~1-3 min on 2 busy cores (the first NUTS fit dominates)
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the repo instead of bench/ on the path: bench/coverage.py would shadow the coverage package numba imports
sys.path[:] = [str(Path(__file__).resolve().parents[1])] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from calib import safetext  # noqa: E402
from calib.data import demo, ingest, store  # noqa: E402

FORMULAS = ["=1+1", '=HYPERLINK("http://127.0.0.1:9/x","click")', "+SUM(A1)", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1)", "\t=1+1", "\r=1+1"]


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def at_once(n: int, fn) -> list[BaseException]:
    """``fn(i)`` on ``n`` threads released together; the exceptions raised."""
    barrier, errors = threading.Barrier(n), []

    def run(i):
        try:
            barrier.wait()
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - counted
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def fresh_demo(folder: Path, name: str, items: int = 600, labels: int = 0):
    con = store.connect(folder / f"{name}.duckdb")
    demo.load_demo(con, items, seed=11)
    if labels:
        from calib.review import simulate

        simulate.simulate_sme(con, labels)
    return con


def duplicate_units(con) -> int:
    return con.execute("SELECT count(*) - count(DISTINCT (item_id, coalesce(candidate, ''))) FROM queue").fetchone()[0]


def smes_start(folder: Path, n: int) -> dict:
    """``n`` Label pages opening at once on a fresh project."""
    from calib.review import queue

    con = fresh_demo(folder, f"start{n}")
    got: dict[int, object] = {}
    t0 = time.perf_counter()
    errors = at_once(n, lambda i: got.__setitem__(i, queue.lease_or_refill(con.cursor(), f"sme{i}", 20)))
    secs = time.perf_counter() - t0
    out = {"errors": len(errors), "kinds": sorted({type(e).__name__ for e in errors}), "dup": duplicate_units(con),
           "batches": con.execute("SELECT count(DISTINCT batch_id) FROM queue").fetchone()[0],
           "served": sum(v is not None for v in got.values()), "seconds": secs}
    con.close()
    return out


def refills_at_once(folder: Path, n: int) -> dict:
    """``refill`` from ``n`` threads at once (the old Label page's first load)."""
    from calib.review import queue

    con = fresh_demo(folder, f"refill{n}")
    batches = []
    errors = at_once(n, lambda i: batches.append(queue.refill(con.cursor(), 20, seed=i)))
    ids = [b.batch_id for b in batches]
    out = {"errors": len(errors), "dup": duplicate_units(con), "ids": len(ids), "unique_ids": len(set(ids))}
    con.close()
    return out


def formula_cells(text: str) -> int:
    """CSV cells a spreadsheet would run: text starting with = + - @ tab CR that is not a number."""
    n = 0
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            if cell.startswith(safetext.CSV_FORMULA_START):
                try:
                    float(cell)
                except ValueError:
                    n += 1
    return n


def formula_project(path: Path, n_items: int = 40):
    """Item ids, model names, notes, annotators and a dimension-free pairwise row that are formulas."""
    out = demo.generate(n_items, seed=4).outputs
    ids = {old: FORMULAS[i % len(FORMULAS)] + f" i{i}" for i, old in enumerate(sorted(out.item_id.unique()))}
    out["item_id"] = out.item_id.map(ids)
    out["model"] = out.model.map({demo.BASELINE: "=base()", demo.CANDIDATE: "-cand"})
    f = path.parent / "formula_outputs.parquet"
    out.to_parquet(f, index=False)
    con = store.connect(path)
    ingest.import_file(con, f, baseline="=base()")
    items = sorted(ids.values())
    for k, item in enumerate(items[:20]):
        con.execute("""INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, note, source,
                                           duration_ms) VALUES (?, '-cand', 'correctness', ?, ?, now(), ?, 'app', ?)""",
                    [item, k % 2 == 0, FORMULAS[(k + 1) % len(FORMULAS)], FORMULAS[k % len(FORMULAS)], 1000 + k])
        con.execute("""INSERT INTO pair_labels (item_id, baseline, candidate, dimension, preference, annotator,
                                                created_at, note, source) VALUES (?, '=base()', '-cand', 'overall',
                                                'tie', '+lead', now(), '=1+1', 'app')""", [item])
    return con


def exports(folder: Path) -> dict:
    from calib import cli
    from calib.insight import tables
    from calib.stats import engine

    db = folder / "formula.duckdb"
    con = formula_project(db)
    engine.fit_project(con, "fast")
    out = {}
    ingest.export_labels(con, folder / "labels.csv")
    out["labels_csv"] = formula_cells((folder / "labels.csv").read_text())
    con.execute(f"COPY ({ingest.EXPORT_SQL}) TO '{folder / 'raw.csv'}' (FORMAT CSV, HEADER)")  # as before the fix
    out["raw_csv"] = formula_cells((folder / "raw.csv").read_text())
    ingest.export_labels(con, folder / "labels.parquet")
    import pandas as pd

    back = pd.read_parquet(folder / "labels.parquet")  # exact values: the formula-like text cells exported
    out["hostile"] = int(sum(back[c].dropna().astype(str).str.startswith(safetext.CSV_FORMULA_START).sum()
                             for c in back.columns
                             if pd.api.types.is_object_dtype(back[c]) or pd.api.types.is_string_dtype(back[c])))
    out["fits_csv"] = formula_cells(tables.fits_history_csv(engine.fits_history(con)).decode())
    con.close()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        cli.main(["queue", "--n", "10", "--db", str(db)])
        cli.main(["labels", "export", str(folder / "cli.csv"), "--db", str(db)])
    out["queue_csv"] = formula_cells(buf.getvalue())
    out["cli_csv"] = formula_cells((folder / "cli.csv").read_text())
    return out


def nuts_presses(folder: Path) -> dict:
    """Four sessions press Run NUTS at once; memory of this process (the app's role) and the worker."""
    from calib.insight import dashboard
    from calib.stats import engine, nuts_worker

    con = fresh_demo(folder, "nuts", items=1000, labels=40)
    engine.fit_project(con.cursor(), "fast")  # the dashboard's fast fit has run before anyone presses
    before = rss_mb()
    presses = []
    t0 = time.perf_counter()
    errors = at_once(4, lambda i: presses.append(dashboard.start_nuts(con)))  # the page passes the shared connection
    run = presses[0][0]
    peak, worker_peak = before, 0.0
    while run.running:
        peak = max(peak, rss_mb() or 0)
        pid = nuts_worker.worker_pid()
        worker_peak = max(worker_peak, (rss_mb(pid) or 0) if pid else 0)
        time.sleep(0.2)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    again, _ = dashboard.start_nuts(con)
    while again.running:
        time.sleep(0.1)
    out = {"presses": len(presses) + len(errors), "exceptions": len(errors), "started": sum(new for _, new in presses),
           "error": "; ".join(filter(None, [r.error for r, _ in presses] + [again.error])),
           "first_s": first, "warm_s": time.perf_counter() - t1,
           "fits": con.execute("SELECT count(*) FROM fits WHERE kind = 'nuts'").fetchone()[0],
           "before": before, "peak": peak, "after": rss_mb(), "worker_peak": worker_peak,
           "nutpie_loaded_here": "nutpie" in sys.modules}
    pid = nuts_worker.worker_pid()
    nuts_worker.shutdown()
    out["worker_after_idle"] = rss_mb(pid) if pid else None
    # as before: the sampler in this process
    t2 = time.perf_counter()
    engine.fit_project(con.cursor(), "nuts")
    out["inproc_s"], out["inproc_after"] = time.perf_counter() - t2, rss_mb()
    con.close()
    return out


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in (8, 30):
            r = smes_start(folder, n)
            rows.append({"problem": "6", "attack": f"{n} SMEs open the Label page at once on a fresh demo project "
                                                    "(threads of one process, a cursor each)",
                         "figure": f"{r['errors']} exceptions{' ' + str(r['kinds']) if r['kinds'] else ''}, "
                                   f"{r['dup']} duplicate units, {r['served']}/{n} served, {r['batches']} batch(es), "
                                   f"{r['seconds']:.1f} s"})
        r = refills_at_once(folder, 30)
        rows.append({"problem": "6", "attack": "queue.refill from 30 threads at once (the old first load)",
                     "figure": f"{r['errors']} exceptions, {r['dup']} duplicate units, "
                               f"{r['unique_ids']}/{r['ids']} batch ids unique"})
        r = exports(folder)
        rows.append({"problem": "7", "attack": f"labels whose item ids, model names, notes and annotators are "
                                               f"formulas ({r['hostile']} such text cells, kept exactly in Parquet) "
                                               "exported as CSV",
                     "figure": f"formula cells: labels CSV {r['labels_csv']} (written raw, as before: "
                               f"{r['raw_csv']}), CLI labels export {r['cli_csv']}, "
                               f"fits history CSV {r['fits_csv']}, tiebreak queue CSV {r['queue_csv']}"})
        r = nuts_presses(folder)
        rows.append({"problem": "9", "attack": "4 sessions press Run NUTS at once (dashboard.start_nuts)",
                     "figure": f"{r['started']} fit started of {r['presses']} presses ({r['exceptions']} exceptions); "
                               f"{r['fits']} NUTS fits "
                               f"recorded after one more press; error: {r['error'] or 'none'}"})
        rows.append({"problem": "9", "attack": "memory of the app process around NUTS fits (sampler in the worker)",
                     "figure": f"app {r['before']:.0f} -> peak {r['peak']:.0f} -> {r['after']:.0f} MB "
                               f"(nutpie loaded in app: {r['nutpie_loaded_here']}); worker peak "
                               f"{r['worker_peak']:.0f} MB, gone after idle: {r['worker_after_idle'] is None}; "
                               f"first fit {r['first_s']:.0f} s, next {r['warm_s']:.1f} s"})
        rows.append({"problem": "9", "attack": "the same fit with the sampler in the app process (as before)",
                     "figure": f"app {r['after']:.0f} -> {r['inproc_after']:.0f} MB, stays; {r['inproc_s']:.0f} s"})
    return rows


if __name__ == "__main__":  # the NUTS worker is spawned: it imports this module, which must not run
    for row in run():
        print(f"[{row['problem']}] {row['attack']}: {row['figure']}")
