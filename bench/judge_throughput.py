"""Judge throughput: 1,000 litellm judge calls at concurrency 16 against the local OpenAI-compatible
fake server (tests/fake_llm.py) answering after 200 ms; the issue's target is <= 20 s.

Also runs the same 1,000 calls with faults (10% 429, 5% 500, 2% slower than the 2 s timeout)
to show what retries cost. Nothing leaves 127.0.0.1.

    .venv/bin/python bench/judge_throughput.py [--calls 1000] [--concurrency 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import calib  # noqa: E402,F401  (sets LITELLM_LOCAL_MODEL_COST_MAP and HF_HUB_OFFLINE)
from calib.data import demo, store  # noqa: E402
from calib.judges import config as judge_config, run as judges  # noqa: E402
from fake_llm import serve_in_subprocess  # noqa: E402


def one_run(calls: int, concurrency: int, latency: float, faults: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        con = store.connect(Path(tmp) / "j.duckdb")
        demo.load_demo(con, calls // 2, seed=1)  # 2 models -> `calls` pointwise calls on one dimension
        kw = dict(p429=0.10, p500=0.05, phang=0.02, hang_seconds=3.0) if faults else {}
        proc, api_base = serve_in_subprocess(latency=latency, seed=3, **kw)  # its own process, as a real server
        try:
            cfg_path = Path(tmp) / "j.toml"
            cfg_path.write_text(f"""
[run]
concurrency = {concurrency}
max_retries = 6
backoff_seconds = 0.25
[[judge]]
name = "bench-judge"
model = "openai/bench"
api_base = "{api_base}"
timeout = 2.0
input_cost_per_token = 1e-7
output_cost_per_token = 4e-7
dimensions = ["correctness"]
""")
            cfg = judge_config.load_config(cfg_path)
            t = time.perf_counter()
            p = judges.run(con, cfg)
            wall = time.perf_counter() - t
            lat = con.execute("SELECT median(latency_ms), quantile_cont(latency_ms, 0.95), max(attempts) "
                              "FROM judge_calls WHERE status = 'ok'").fetchone()
            label = "with faults" if faults else "clean"
            print(f"{label:<12} {p.total} calls, concurrency {concurrency}, server latency {latency * 1000:.0f} ms: "
                  f"{wall:.1f} s ({p.total / wall:.0f} calls/s), {p.ok} ok, {p.failed} failed; "
                  f"call latency p50 {lat[0]:.0f} ms, p95 {lat[1]:.0f} ms, max attempts {lat[2]}; "
                  f"{con.execute('SELECT count(*) FROM judge_calls WHERE attempts > 1').fetchone()[0]} calls retried")
        finally:
            proc.terminate()
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    t = time.perf_counter()
    import litellm  # noqa: F401  (a one-off per process, not part of the throughput)

    print(f"litellm import (once per process): {time.perf_counter() - t:.1f} s")
    one_run(args.calls, args.concurrency, args.latency, faults=False)
    one_run(args.calls, args.concurrency, args.latency, faults=True)


if __name__ == "__main__":
    main()
