"""Import at production scale: 5.3M output rows (2 models x 2.65M items, six regions, 3 judges x 3 dimensions).

Generates the Parquet file with the demo generator (short stand-in texts), then times
`tiebreak import` and `tiebreak status` as separate processes and reports wall time and peak
resident memory of each (the child's ru_maxrss).

    .venv/bin/python bench/import_scale.py [--outputs 5300000] [--workdir bench/out]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# bench/ holds coverage.py, which would shadow the `coverage` package numba probes: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import demo  # noqa: E402


def make_parquet(path: Path, n_outputs: int, chunk_items: int = 250_000) -> None:
    n_items = n_outputs // 2
    writer = None
    for start in range(0, n_items, chunk_items):
        k = min(chunk_items, n_items - start)
        table = pa.Table.from_pandas(demo.generate(k, seed=7, start=start, texts=False).outputs, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command in a fresh process; return (seconds, peak RSS in GB, stdout)."""
    script = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "dt = time.perf_counter() - t;"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024;"
        "print(json.dumps({'s': dt, 'gb': rss, 'rc': r.returncode, 'out': r.stdout, 'err': r.stderr}))"
    )
    import json

    res = json.loads(subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True).stdout)
    if res["rc"]:
        raise SystemExit(f"{' '.join(cmd)} failed: {res['err']}")
    return res["s"], res["gb"], res["out"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", type=int, default=5_300_000)
    ap.add_argument("--workdir", default=str(Path(__file__).parent / "out"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pq_path = work / f"outputs_{args.outputs}.parquet"
    if not pq_path.exists():
        t = time.perf_counter()
        make_parquet(pq_path, args.outputs)
        print(f"generated {pq_path} ({pq_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    db = work / "scale.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    exe = str(Path(sys.executable).parent / "tiebreak")
    s, gb, out = timed([exe, "import", str(pq_path), "--db", str(db), "--new"])
    print(out.strip())
    print(f"import:    {s:6.1f} s wall, peak RSS {gb:.2f} GB  ({args.outputs:,} output rows, cores={os.cpu_count()})")
    s2, gb2, out = timed([exe, "import", str(pq_path), "--db", str(db)])
    print(f"re-import: {s2:6.1f} s wall, peak RSS {gb2:.2f} GB  (idempotent: adds nothing)")
    s3, gb3, out = timed([exe, "status", "--db", str(db)])
    print(f"status:    {s3:6.1f} s wall, peak RSS {gb3:.2f} GB")
    print(out)
    print(f"database file: {db.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
