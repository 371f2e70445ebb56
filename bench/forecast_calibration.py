"""Is the forecast of P(decision) calibrated? (issue #12)

For each of ``--projects`` demo projects (2,000 items, the demo generator's hidden truth), a
simulated SME labels items through the real queue (`calib.review.simulate`); at 0, 10, 25 and 50
labelled items the product's fit (`engine.fit_project(con, "fast", forecast_extra=[25, 50, 100])`)
forecasts the chance of a decision after k more labels, per dimension; the labelling then goes on
and the fit at n + k says whether a decision ("not worse" or "worse") was reached. Prints, per
labels-now x k, the mean forecast against the observed share (3 dimensions per project).

    .venv/bin/python bench/forecast_calibration.py --projects 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
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

STARTS = (0, 10, 25, 50)
EXTRA = (25, 50, 100)


def project(seed: int) -> list[dict]:
    checkpoints = sorted({s for s in STARTS} | {s + k for s in STARTS for k in EXTRA})
    with tempfile.TemporaryDirectory() as tmp:
        con = store.connect(Path(tmp) / "p.duckdb")
        demo.load_demo(con, 2000, seed=10_000 + seed)
        forecasts: dict[int, list[dict]] = {}
        decided: dict[int, dict[str, bool]] = {}
        widths: dict[int, dict[str, float]] = {}
        done = 0
        for cp in checkpoints:
            if cp > done:
                done += simulate.simulate_sme(con, cp - done, seed=seed * 7919 + done)
            fit = engine.fit_project(con, "fast", seed=seed, forecast_extra=list(EXTRA) if cp in STARTS else None)
            decided[cp] = {d["dimension"]: d["decision"] != "label more" for d in fit["diffs"]}
            widths[cp] = {d["dimension"]: d["hi"] - d["lo"] for d in fit["diffs"]}
            if cp in STARTS:
                forecasts[cp] = fit.get("forecasts", [])
                for f in forecasts[cp]:
                    mo = [c for c in fit["cross_checks"] if c["method"] == "model-only" and c["dimension"] == f["dimension"]]
                    f["model_only"] = (mo[0]["mean"], mo[0]["hi"] - mo[0]["lo"]) if mo else None
        con.close()
    rows = []
    for s in STARTS:
        for f in forecasts[s]:
            for step in f["steps"]:
                rows.append({"project": seed, "labels_now": s, "k": step["extra"], "dimension": f["dimension"],
                             "forecast": step["p_decision"], "observed": decided[s + step["extra"]][f["dimension"]],
                             "width forecast": step["width"], "width observed": widths[s + step["extra"]][f["dimension"]],
                             "mean": f["mean"], "width_now": f["width_now"], "model_only": f.get("model_only"),
                             "labelled_items": f.get("labelled_items")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", help="write every forecast and outcome as JSON lines here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows: list[dict] = []
    with ProcessPoolExecutor(args.jobs) as ex:
        for r in ex.map(project, range(args.projects)):
            rows += r
    df = pd.DataFrame(rows)
    if args.out:
        df.to_json(args.out, orient="records", lines=True)
    t = df.groupby(["labels_now", "k"]).agg(forecast=("forecast", "mean"), observed=("observed", "mean"),
                                            n=("observed", "size"), **{"width forecast": ("width forecast", "mean"),
                                            "width observed": ("width observed", "mean")}).reset_index()
    t["|forecast - observed|"] = (t.forecast - t.observed).abs()
    print(f"forecast calibration: {args.projects} demo projects x 3 dimensions ({time.perf_counter() - t0:.0f} s)")
    print(t.round(3).to_string(index=False))
    print(f"max |forecast - observed| = {t['|forecast - observed|'].max():.3f}")


if __name__ == "__main__":
    main()
