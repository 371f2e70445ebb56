"""The judged sample at production scale: draw a 2% stratified sample and build the cells from it.

A demo-like project of ``--outputs`` output rows (2 models per item, six regions; the generator of
``bench/import_scale.py``, short stand-in texts) is imported WITHOUT judge scores (the population;
in files of at most 6M rows);
then, timed in this process:

1. ``phase1.draw_sample(fraction=0.02, strata="segment")`` (what ``tiebreak judge run --fraction
   0.02 --strata segment`` does before its first call), and the same call again (idempotent);
2. the judges' scores of the sampled items are imported (standing in for ``judge run``: a file
   of the sampled items, every one scored, so it imports as usual), and
3. ``cells.ensure_cells`` (the cell build after it: only the judged items enter, with n_pop).

    nice -n 10 .venv/bin/python bench/phase1_scale.py [--outputs 5300000] [--workdir /tmp/phase1_bench]
    (--outputs 10600000: 5.3M items)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import cells, demo, ingest, phase1, store  # noqa: E402


def make_parquet(path: Path, n_outputs: int, chunk_items: int = 250_000) -> None:
    """The demo generator's outputs with judge scores (as bench/import_scale.py)."""
    n_items = n_outputs // 2
    writer = None
    for start in range(0, n_items, chunk_items):
        k = min(chunk_items, n_items - start)
        table = pa.Table.from_pandas(demo.generate(k, seed=7, start=start, texts=False).outputs, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", type=int, default=5_300_000)
    ap.add_argument("--fraction", type=float, default=0.02)
    ap.add_argument("--workdir", default=str(Path(__file__).parent / "out"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    full = work / f"outputs_{args.outputs}.parquet"
    if not full.exists():
        t = time.perf_counter()
        make_parquet(full, args.outputs)
        print(f"generated {full} ({full.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    pop = work / f"population_{args.outputs}.parquet"
    scored = work / f"sampled_scores_{args.outputs}.parquet"
    db = work / "phase1_scale.duckdb"
    for p in (db, Path(str(db) + ".wal"), pop, scored):
        p.unlink(missing_ok=True)
    con = store.connect(db)
    cols = [c for c in pq.read_schema(full).names if not c.startswith("judge:")]
    # files of at most ~6M rows (the import's row limit is 8M per file), whole items in each
    parts = max(1, -(-args.outputs // 6_000_000))
    t_import = 0.0
    for k in range(parts):
        con.execute(f"COPY (SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM read_parquet('{full}') "
                    f"WHERE hash(item_id) % {parts} = {k}) TO '{pop}' (FORMAT parquet)")
        t = time.perf_counter()
        ingest.import_file(con, pop)
        t_import += time.perf_counter() - t
        pop.unlink()
    n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    n_out = con.execute("SELECT count(*) FROM outputs").fetchone()[0]
    print(f"population: {n_items:,} items, {n_out:,} outputs imported without judge scores in {t_import:.1f} s")

    t = time.perf_counter()
    rep = phase1.draw_sample(con, fraction=args.fraction, strata="segment", seed=1)
    t_draw = time.perf_counter() - t
    print(rep.line())
    print(f"draw_sample --fraction {args.fraction} --strata segment: {t_draw:.2f} s wall")
    t = time.perf_counter()
    again = phase1.draw_sample(con, fraction=args.fraction, strata="segment", seed=1)
    print(f"the same call again (idempotent, adds {sum(again.added.values())}): {time.perf_counter() - t:.2f} s wall")

    con.execute(f"""COPY (SELECT f.* FROM read_parquet('{full}') f
                          WHERE f.item_id IN (SELECT item_id FROM judge_sample)) TO '{scored}' (FORMAT parquet)""")
    t = time.perf_counter()
    ingest.import_file(con, scored)
    n_scores = con.execute("SELECT count(*) FROM judge_scores").fetchone()[0]
    print(f"judge scores of the sampled items imported: {n_scores:,} scores in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    cells.ensure_cells(con)
    t_cells = time.perf_counter() - t
    n, n_pop = con.execute("SELECT sum(n), sum(n_pop) FROM model_cells WHERE dimension = 'correctness'").fetchone()
    k = con.execute("SELECT count(*) FROM model_cells").fetchone()[0]
    print(f"cell build after the draw: {t_cells:.1f} s wall ({k:,} cells; correctness: n = {n:,} judged outputs, "
          f"n_pop = {n_pop:,.0f} = every output)")
    t = time.perf_counter()
    rep2 = phase1.draw_sample(con, fraction=2 * args.fraction, strata="segment", allocation="neyman", seed=1)
    print(rep2.line())
    print(f"extension to {2 * args.fraction} (Neyman): {time.perf_counter() - t:.2f} s wall")
    print(f"cores={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    con.close()


if __name__ == "__main__":
    main()
