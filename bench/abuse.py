"""Issue #25's attacks, each with its figure: runs every ``bench/abuse_<area>.py`` (imports,
concurrency, auth) and prints one table, problem by problem. Loopback only; a few minutes.

    .venv/bin/python bench/abuse.py                 # every area
    .venv/bin/python bench/abuse.py imports auth    # some areas
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/coverage.py would shadow the `coverage` package numba imports: bench/ goes last on the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

AREAS = ["imports", "concurrency", "auth"]


def main(argv: list[str]) -> int:
    areas = argv or [a for a in AREAS if (HERE / f"abuse_{a}.py").exists()]
    rows: list[dict] = []
    for area in areas:
        t0 = time.perf_counter()
        mod = importlib.import_module(f"abuse_{area}")
        got = mod.run()
        rows += [{**r, "area": area} for r in got]
        print(f"[{area}: {len(got)} attacks, {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

    def key(r: dict) -> tuple:
        p = str(r.get("problem", ""))
        return (int(p) if p.isdigit() else 99, p)

    print("| problem | attack | figure |")
    print("|---|---|---|")
    for r in sorted(rows, key=key):
        print(f"| {r.get('problem', '')} | {r.get('attack', '')} | {r.get('figure', '')} |")
    return 0


if __name__ == "__main__":  # the NUTS worker imports abuse_concurrency: nothing runs on import
    raise SystemExit(main(sys.argv[1:]))
