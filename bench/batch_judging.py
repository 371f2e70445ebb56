"""Batch judging at scale: N judge calls (default 100,000) through ``tiebreak judge run --batch``
against the OpenAI-compatible fake batch server (tests/fake_batch.py, in its own process, each
batch taking ``--batch-seconds`` to complete), with the runner SIGKILLed twice mid-run (once while
submitting, once while collecting the first finished batch) and resumed; then the rows are counted
(lost and duplicated must be 0), and the same calls timed in one clean in-process run, whose phase
times give the local side's calls/s (plan, serialise and upload, download, parse and write).
For comparison the online runner judges a slice of the same calls against tests/fake_llm.py
(200 ms per reply, concurrency 16) and its rate is extrapolated to N. Nothing leaves 127.0.0.1.

    nice .venv/bin/python bench/batch_judging.py [--calls 100000] [--batch-seconds 10] [--online-calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import calib  # noqa: E402,F401  (sets LITELLM_LOCAL_MODEL_COST_MAP and HF_HUB_OFFLINE)
from calib.data import demo, store  # noqa: E402
from calib.judges import batch, config as judge_config, run as judges  # noqa: E402

DIMS = 3  # the demo's dimensions; 2 models -> 6 pointwise calls per item


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1")
    return env


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/_stats", timeout=10) as r:
        return json.loads(r.read())


def _start_server(port: int, batch_seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_batch.py"), "--port", str(port),
                             "--batch-seconds", str(batch_seconds)], env=_env(), cwd=ROOT / "tests")
    for _ in range(100):
        try:
            _stats(port)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"fake batch server did not start on port {port}")


def _config(path: Path, api_base: str) -> Path:
    path.write_text(f"""
[[judge]]
name = "batch-judge"
model = "openai/bench"
api_base = "{api_base}"
input_cost_per_token = 1e-7
output_cost_per_token = 4e-7
dimensions = ["correctness", "refusal", "style"]
""")
    return path


def _runner(db: Path, cfg: Path, max_requests: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calib.cli", "judge", "run", "--batch", "--db", str(db),
                             "--config", str(cfg), "--poll-seconds", "0.5", "--max-batch-requests", str(max_requests)],
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _kill_when(proc: subprocess.Popen, port: int, cond, after: float, what: str) -> str:
    t0 = time.perf_counter()
    while proc.poll() is None:
        if cond(_stats(port)):
            time.sleep(after)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"killed {what} at {time.perf_counter() - t0:.1f} s"
            break
        time.sleep(0.05)
    raise SystemExit(f"the runner ended before it could be killed {what}: make --calls larger")


def _db_state(db: Path) -> str:
    con = store.connect(db)
    try:
        st = dict(con.execute("SELECT state, count(*) FROM judge_batches GROUP BY ALL").fetchall())
        rows = con.execute("SELECT count(*) FROM judge_calls").fetchone()[0]
    finally:
        con.close()
    return f"batches {st}, judge_calls rows {rows}"


def killed_twice(base: Path, tmp: Path, port: int, calls: int, max_requests: int, batch_seconds: float) -> None:
    db = tmp / "killed.duckdb"
    shutil.copy(base, db)
    server = _start_server(port, batch_seconds)
    try:
        cfg = _config(tmp / "judges.toml", f"http://127.0.0.1:{port}/v1")
        t = time.perf_counter()
        proc = _runner(db, cfg, max_requests)
        print(" ", _kill_when(proc, port, lambda s: s["batches"] >= 2, 0.0, "while submitting (2nd batch created)"),
              "->", _db_state(db))
        proc = _runner(db, cfg, max_requests)
        print(" ", _kill_when(proc, port, lambda s: s["calls"].get("GET /v1/files/{file}/content", 0) >= 1, 0.3,
                              "while collecting (0.3 s after it began downloading a finished batch's output)"),
              "->", _db_state(db))
        proc = _runner(db, cfg, max_requests)
        out, _ = proc.communicate()
        wall = time.perf_counter() - t
        st = _stats(port)
    finally:
        server.terminate()
        server.wait()
    for line in out.splitlines():
        print("   third run:", line.strip())
    con = store.connect(db)
    ok, distinct = con.execute("SELECT count(*), count(DISTINCT call_key) FROM judge_calls WHERE status = 'ok'").fetchone()
    scores, score_keys = con.execute("SELECT count(*), count(DISTINCT (item_id, model, dimension)) FROM judge_scores "
                                     "WHERE judge = 'batch-judge'").fetchone()
    failed = con.execute("SELECT count(*) FROM judge_calls WHERE status = 'failed'").fetchone()[0]
    batches = con.execute("SELECT state, count(*) FROM judge_batches GROUP BY ALL ORDER BY ALL").fetchall()
    con.close()
    print(f"  killed twice and resumed: {calls} calls in {wall:.1f} s wall (provider batch latency {batch_seconds:g} s); "
          f"ok rows {ok}, distinct keys {distinct}: lost {calls - distinct}, duplicated {ok - distinct}; "
          f"scores {scores} (duplicated {scores - score_keys}); failed rows {failed}; batches {dict(batches)}; "
          f"server: {st['batches']} batches created, {st['answered']} requests answered, "
          f"{st['answered_twice']} answered twice")


def clean_run(base: Path, tmp: Path, port: int, calls: int, max_requests: int, batch_seconds: float) -> None:
    db = tmp / "clean.duckdb"
    shutil.copy(base, db)
    server = _start_server(port, batch_seconds)
    try:
        cfg = judge_config.load_config(_config(tmp / "judges.toml", f"http://127.0.0.1:{port}/v1"))
        con = store.connect(db)
        t = time.perf_counter()
        p = batch.run_batch(con, cfg, options=batch.BatchOptions(max_requests=max_requests, poll_seconds=0.5,
                                                                  poll_max_seconds=2.0))
        wall = time.perf_counter() - t
        con.close()
    finally:
        server.terminate()
        server.wait()
    s = p.seconds
    local = sum(s.get(k, 0.0) for k in ("plan", "submit", "download", "collect"))
    print(f"  clean batch run: {p.ok} ok in {wall:.1f} s wall, {p.batches} batches; local side "
          f"{local:.1f} s = {p.ok / local:,.0f} calls/s (" + ", ".join(f"{k} {v:.1f} s" for k, v in s.items()) + ")")
    print(f"  per call on the local side: {local / max(p.ok, 1) * 1e3:.2f} ms")


def online_slice(base: Path, tmp: Path, calls: int, total: int) -> None:
    from fake_llm import serve_in_subprocess

    db = tmp / "online.duckdb"
    shutil.copy(base, db)
    proc, api_base = serve_in_subprocess(latency=0.2, seed=3)
    try:
        cfg = judge_config.load_config(_config(tmp / "online.toml", api_base))
        cfg.run.concurrency = 16
        con = store.connect(db)
        t = time.perf_counter()
        p = judges.run(con, cfg, limit=calls // (2 * DIMS))
        wall = time.perf_counter() - t
        con.close()
    finally:
        proc.terminate()
    rate = p.ok / wall
    print(f"  online runner (fake_llm, 200 ms per reply, concurrency 16): {p.ok} calls in {wall:.1f} s = "
          f"{rate:.0f} calls/s -> {total:,} calls would take ~{total / rate / 60:.0f} min (extrapolated)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--batch-seconds", type=float, default=10.0, help="simulated provider time per batch")
    ap.add_argument("--max-batch-requests", type=int, default=20_000)
    ap.add_argument("--online-calls", type=int, default=2_000)
    ap.add_argument("--port", type=int, default=8690)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: killed,clean,online")
    args = ap.parse_args()
    items = args.calls // (2 * DIMS)
    calls = items * 2 * DIMS
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base.duckdb"
        t = time.perf_counter()
        con = store.connect(base)
        demo.load_demo(con, items, seed=1)
        con.close()
        print(f"demo project: {items} items x 2 models x {DIMS} dimensions = {calls:,} judge calls "
              f"(built in {time.perf_counter() - t:.1f} s)")
        if "killed" not in skip:
            killed_twice(base, tmp, args.port, calls, args.max_batch_requests, args.batch_seconds)
        if "clean" not in skip:
            clean_run(base, tmp, args.port + 1, calls, args.max_batch_requests, args.batch_seconds)
        if "online" not in skip:
            online_slice(base, tmp, args.online_calls, calls)


if __name__ == "__main__":
    main()
