"""Queue under load: 8 SMEs lease and label for 5 minutes against one DuckDB file (slow; not a test).

Each SME is a thread with its own cursor on the one process-wide connection (as the app does),
going through calib.review.queue: next_item (lease), read the item and both outputs (what the page
shows), a short think time, then submit a rating of every dimension and a preference; 5% of the
time a skip, 2% a flag. Checks at the end:
- labels lost: label rows in the database vs what the SMEs submitted (must be 0);
- double leases: items leased to two SMEs at once, or labelled by two, outside overlap (must be 0);
- errors raised in any SME (must be 0);
and reports the next-item latency (lease + reading the item), p50 / p95 / max.

    .venv/bin/python bench/queue_load.py [--store bench/out/scale.duckdb] [--seconds 300] [--smes 8]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

# bench/ holds coverage.py, which would shadow the `coverage` package numba probes: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib.data import store  # noqa: E402
from calib.review import queue  # noqa: E402


def read_item(cur, item_id: str):
    """What the labelling page reads for an item: the prompt, context, reference and both outputs."""
    item = cur.execute("SELECT prompt, context, reference, segment FROM items WHERE item_id = ?", [item_id]).fetchall()
    outs = cur.execute("SELECT model, output FROM outputs WHERE item_id = ?", [item_id]).fetchall()
    return item, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(Path(__file__).parent / "out" / "scale.duckdb"))
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--smes", type=int, default=8)
    ap.add_argument("--think", type=float, default=2.0, help="mean think time per item, seconds (0.2 = stress)")
    args = ap.parse_args()
    src = Path(args.store)
    if not src.exists():
        raise SystemExit(f"{src} missing: run bench/import_scale.py first")
    db = src.with_name("queue_load.duckdb")
    shutil.copy(src, db)
    con = store.connect(db)
    n_out = con.execute("SELECT count(*) FROM outputs").fetchone()[0]
    s = store.get_settings(con)
    t = time.perf_counter()
    batch = queue.refill(con, 30_000, seed=1)
    print(f"store: {n_out:,} outputs; queued {batch.selected} items in {time.perf_counter() - t:.1f} s "
          f"(policy {batch.policy}, overlap share {s['overlap_share']})")
    verdicts = {(m, d): (True, None) for m in [s["baseline"], *s["candidates"]] for d in s["dimensions"]}

    submitted = {}
    latencies: list[float] = []
    lease_only: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + args.seconds

    def sme(name: str, seed: int) -> None:
        rng = random.Random(seed)
        cur = con.cursor()
        n = 0
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                lease = queue.next_item(cur, name)
                t1 = time.perf_counter()
                if lease is None:
                    time.sleep(0.05)
                    continue
                read_item(cur, lease.item_id)
                t2 = time.perf_counter()
                with lock:
                    lease_only.append(t1 - t0)
                    latencies.append(t2 - t0)
                time.sleep(rng.expovariate(1 / args.think))
                u = rng.random()
                if u < 0.05:
                    queue.skip(cur, lease.lease_id, name, "not sure")
                elif u < 0.07:
                    queue.flag(cur, lease.lease_id, name, "looks broken")
                else:
                    v = {k: (rng.random() < 0.8, None) for k in verdicts}
                    n += queue.submit(cur, lease.lease_id, name, v, preference=rng.choice(["candidate", "baseline", "tie"]),
                                      strength=1, duration_ms=int(1000 * (t2 - t0)))
        except Exception as exc:  # counted, the check below fails
            errors.append(f"{name}: {exc!r}")
        submitted[name] = n

    threads = [threading.Thread(target=sme, args=(f"sme{i}", i)) for i in range(args.smes)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    stored = dict(con.execute("SELECT annotator, count(*) FROM labels GROUP BY annotator").fetchall())
    lost = sum(submitted.values()) - sum(stored.get(k, 0) for k in submitted)
    # two SMEs on one item at the same time, or labels by two SMEs, outside overlap
    double = con.execute(
        """SELECT count(*) FROM (
              SELECT a.item_id FROM leases a JOIN leases b ON a.item_id = b.item_id AND a.lease_id < b.lease_id
                   AND a.annotator <> b.annotator
                   AND a.leased_at < coalesce(b.ended_at, b.expires_at) AND b.leased_at < coalesce(a.ended_at, a.expires_at)
              JOIN queue q ON q.item_id = a.item_id WHERE NOT q.overlap
              UNION ALL
              SELECT l.item_id FROM labels l JOIN queue q USING (item_id) WHERE NOT q.overlap
              GROUP BY l.item_id HAVING count(DISTINCT l.annotator) > 1)"""
    ).fetchone()[0]
    over2 = con.execute(
        """SELECT count(*) FROM (SELECT item_id FROM labels GROUP BY item_id HAVING count(DISTINCT annotator) > 2)"""
    ).fetchone()[0]
    lat = np.array(latencies) * 1000
    lo = np.array(lease_only) * 1000
    outcomes = dict(con.execute("SELECT coalesce(outcome, 'open'), count(*) FROM leases GROUP BY ALL").fetchall())
    print(f"{args.smes} SMEs for {args.seconds:.0f} s: {len(lat)} items served, leases {outcomes}")
    print(f"labels submitted {sum(submitted.values())}, stored {sum(stored.values())}: lost {lost}")
    print(f"items with two SMEs outside overlap: {double}; items with more than two SMEs: {over2}; errors: {len(errors)}")
    for e in errors[:5]:
        print("  ", e)
    print(f"next item (lease + read item and outputs): p50 {np.percentile(lat, 50):.1f} ms, "
          f"p95 {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms")
    print(f"  lease alone: p50 {np.percentile(lo, 50):.1f} ms, p95 {np.percentile(lo, 95):.1f} ms")


if __name__ == "__main__":
    main()
