"""The design estimator's coverage gaps on real data (issue #23 part 2), old and new code on the same fits.

A full `bench/realdata.py` run refits the calibration model for every replicate, which is what
takes the time; the design-based interval on top of a fit takes milliseconds. This bench runs
`realdata.py`'s own replicates (the same projects, labels chosen at random or by the queue, the
product's fast fit at 10/20/40/60 labelled documents or pairs) but records, at every fit, the
arguments of each overall domain's `design._domain_estimate` call with the truth beside them.
`--evaluate` then recomputes the 95% interval from the recorded arguments with any version of
`calib/stats/design.py` (this worktree's, and one from a git revision, `--before main`), so
"before" and "after" are compared on identical fits and labels (paired: their difference has far
less Monte Carlo error than two independent runs).

    .venv/bin/python bench/coverage_gaps.py --capture summeval --design random --reps 40 --first-rep 0 --out cap_s_r0.pkl
    .venv/bin/python bench/coverage_gaps.py --capture pandalm --design queue --reps 30 --out cap_p_q.pkl
    .venv/bin/python bench/coverage_gaps.py --evaluate cap_*.pkl --before main

Per cell (data, design, n) it prints coverage and mean width of the rates (SummEval, each model's
pass rate), Delta (SummEval) and the win rate (PandaLM), pooled and in the worst scenario, and the
rate scenarios whose true rate is within 0.06 of 0 or 1 pooled separately ("near 0/1").
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import realdata  # noqa: E402
from calib.data import ingest, store  # noqa: E402
from calib.review import queue  # noqa: E402
from calib.stats import design, engine  # noqa: E402

_CALLS: list = []


def _install_capture() -> None:
    """Wrap design_rate_draws / _domain_estimate so each fit's overall-domain calls are recorded."""
    if getattr(design, "_capturing", False):  # once per process (a worker runs many replicates)
        return
    design._capturing = True
    orig_drd, orig_dom = design.design_rate_draws, design._domain_estimate
    state = {"first": False, "models": None}

    def drd(data, *a, **k):
        state["first"], state["models"] = True, list(data.models)
        try:
            return orig_drd(data, *a, **k)
        finally:
            state["first"] = False

    def dom(*a, **k):
        if state["first"] or state["models"] is None:
            _CALLS.append({"args": [None if x is None else np.array(x, copy=True) for x in a],
                           "models": state["models"]})
        state["first"] = False
        return orig_dom(*a, **k)

    design.design_rate_draws, design._domain_estimate = drd, dom


def _label(con, tmp, design_kind, done, n, rep, order, submit, import_rows):
    if design_kind == "random":
        new = list(order[len(done):n])
        path = Path(tmp) / f"l{n}.csv"
        import_rows(new).to_csv(path, index=False)
        ingest.import_labels(con, path)
        done += new
        return
    while len(done) < n:
        lease = queue.next_item(con, "sme")
        if lease is None:
            queue.refill(con, 10, seed=rep * 1000 + len(done))
            lease = queue.next_item(con, "sme")
        if lease is None:
            break
        submit(con, lease)
        done.append(lease.item_id)


def summeval_rep(args) -> list[dict]:
    base_db, base, cand, design_kind, rep, data_path = args
    _install_capture()
    df = pd.read_json(data_path, lines=True)
    truth = realdata._truth(df, base, cand)
    sub = df[df.system.isin([base, cand])]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.duckdb"
        shutil.copy(base_db, db)
        con = store.connect(db)
        order = np.random.default_rng([rep, 2024]).permutation(sorted({f"doc{i}" for i in sub.doc_id}))
        done: list[str] = []

        def submit(con, lease):
            v = {(m, d): (truth["verdict"][(lease.item_id, m, d)], None) for m in (base, cand) for d in realdata.DIMS}
            queue.submit(con, lease.lease_id, "sme", v)

        for n in realdata.SIZES:
            _label(con, tmp, design_kind, done, n, rep, order, submit,
                   lambda new: realdata._label_rows(new, base, cand, truth))
            _CALLS.clear()
            fit = engine.fit_project(con, "fast", record=False, seed=rep)
            dims = [r["dimension"] for r in fit["diffs"]]
            calls = [c for c in _CALLS if c["models"] is not None]
            assert len(calls) == len(dims), (len(calls), dims)
            for dim, c in zip(dims, calls):
                out.append({"data": "summeval", "design": design_kind, "n": n, "pair": f"{base}/{cand}", "dim": dim,
                            "rep": rep, "models": c["models"], "base": base, "cand": cand, "args": c["args"],
                            "truth": {m: truth["rate"][(m, dim)] for m in c["models"]}})
        con.close()
    return out


def pandalm_rep(args) -> list[dict]:
    base_db, base, cand, design_kind, rep, data_path = args
    _install_capture()
    sub = realdata._panda(pd.read_json(data_path, lines=True), base, cand)
    win = dict(zip(sub.item_id, sub.human_majority.map(realdata.WIN)))
    pref = dict(zip(sub.item_id, sub.human_majority.map(realdata.PREF)))
    truth = float(np.mean(list(win.values())))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "p.duckdb"
        shutil.copy(base_db, db)
        con = store.connect(db)
        order = list(np.random.default_rng([rep, 2025]).permutation(sorted(win)))
        done: list[str] = []

        def rows(new):
            return pd.DataFrame({"item_id": new, "baseline": base, "candidate": cand, "dimension": "overall",
                                 "preference": [pref[i] for i in new], "annotator": "human"})

        for n in realdata.SIZES:
            _label(con, tmp, design_kind, done, n, rep, order,
                   lambda con, lease: queue.submit(con, lease.lease_id, "sme", {}, preference=pref[lease.item_id]), rows)
            _CALLS.clear()
            engine.fit_project(con, "fast", record=False, seed=rep)
            calls = [c for c in _CALLS if c["models"] is None]
            assert len(calls) == 1, len(calls)
            out.append({"data": "pandalm", "design": design_kind, "n": n, "pair": f"{base}/{cand}", "dim": "win rate",
                        "rep": rep, "models": ["win"], "args": calls[0]["args"], "truth": {"win": truth}})
        con.close()
    return out


def _run(task):
    fn, a = task
    return fn(a)


def capture(which: str, design_kind: str, reps: int, first: int, jobs: int, out: Path) -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = []
        if which == "summeval":
            df = pd.read_json(realdata.DEFAULT, lines=True)
            for b, c in realdata.PAIRS:
                db = realdata.build_base(df, b, c, Path(tmp))
                tasks += [(summeval_rep, (str(db), b, c, design_kind, r, str(realdata.DEFAULT))) for r in range(first, first + reps)]
        else:
            pdf = pd.read_json(realdata.PANDALM, lines=True)
            for b, c in realdata.PANDA_PAIRS:
                (Path(tmp) / f"{b}_{c}").mkdir()
                db = realdata.build_panda_base(pdf, b, c, Path(tmp) / f"{b}_{c}")
                tasks += [(pandalm_rep, (str(db), b, c, design_kind, r, str(realdata.PANDALM))) for r in range(first, first + reps)]
        recs: list = []
        with ProcessPoolExecutor(jobs) as ex:
            for res in ex.map(_run, tasks):
                recs += res
    out.write_bytes(pickle.dumps(recs))
    print(f"{len(recs)} fits' domains recorded to {out} in {time.perf_counter() - t0:.0f} s")


# --------------------------------------------------------------------------- evaluation


def load_design(rev: str | None):
    """This worktree's design module, or the one at git revision ``rev`` loaded under another name."""
    if rev is None:
        return design
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:calib/stats/design.py"], capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"design_{rev.replace('/', '_')}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def intervals(mod, rec: dict, draws: int = 2000) -> list[dict]:
    """The 95% intervals of one recorded domain under design module ``mod``, exactly as the product
    forms them (``_domain_estimate``, ``_t_draws`` with ``t_df`` of the batch weights, equal-tailed
    quantiles of the draws)."""
    a = rec["args"]
    mean, cov, _ = mod._domain_estimate(*a)
    wv = a[9] if len(a) > 9 and a[9] is not None else a[7]
    rng = np.random.default_rng([rec["rep"], rec["n"], 7])
    dr = mod._t_draws(mean, cov, mod.t_df(wv), draws, rng)
    rows = []
    models = rec["models"]
    for j, m in enumerate(models):
        lo, hi = np.quantile(dr[:, j], [0.025, 0.975])
        t = rec["truth"][m]
        kind = "win rate" if rec["data"] == "pandalm" else "rate"
        rows.append({"kind": kind, "scenario": f"{rec['pair']} {rec['dim']} {m}", "truth": t, "lo": lo, "hi": hi})
    if rec["data"] == "summeval":
        ib, ic = models.index(rec["base"]), models.index(rec["cand"])
        d = dr[:, ic] - dr[:, ib]
        lo, hi = np.quantile(d, [0.025, 0.975])
        rows.append({"kind": "delta", "scenario": f"{rec['pair']} {rec['dim']}",
                     "truth": rec["truth"][rec["cand"]] - rec["truth"][rec["base"]], "lo": lo, "hi": hi})
    for r in rows:
        r.update(data=rec["data"], design=rec["design"], n=rec["n"], rep=rec["rep"],
                 covered=r["lo"] - 1e-12 <= r["truth"] <= r["hi"] + 1e-12, width=r["hi"] - r["lo"])
    return rows


def table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    rows = rows.assign(near=lambda x: (x.kind == "rate") & ((x.truth <= 0.06) | (x.truth >= 0.94)))
    for (data, des, n, kind), g in rows.groupby(["data", "design", "n", "kind"]):
        sc = g.groupby("scenario").covered.mean()
        nr = g[g.near]
        out.append({"data": data, "design": des, "n": n, "kind": kind, "intervals": len(g),
                    "coverage": g.covered.mean(), "worst scenario": sc.min(), "width": g.width.mean(),
                    "near0/1 cov": nr.covered.mean() if len(nr) else np.nan,
                    "near0/1 worst": nr.groupby("scenario").covered.mean().min() if len(nr) else np.nan,
                    "near0/1 width": nr.width.mean() if len(nr) else np.nan})
    return pd.DataFrame(out)


def evaluate(files: list[str], before: str | None) -> None:
    recs = []
    for f in files:
        recs += pickle.loads(Path(f).read_bytes())
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    tabs = {}
    for label, rev in (("before", before), ("after", None)):
        if label == "before" and rev is None:
            continue
        cache = Path(tempfile.gettempdir()) / f"coverage_gaps_{rev}_{abs(hash(tuple(sorted(files))))}.pkl"
        if label == "before" and cache.exists():
            rows = pd.read_pickle(cache)
        else:
            mod = load_design(rev)
            rows = pd.DataFrame([r for rec in recs for r in intervals(mod, rec)])
            if label == "before":
                rows.to_pickle(cache)
        tabs[label] = table(rows)
        if label == "after":
            worst = rows[rows.kind == "rate"].groupby(["data", "design", "n", "scenario"]).agg(
                cov=("covered", "mean"), truth=("truth", "first"), k=("covered", "size"), width=("width", "mean"))
            print("after: the ten worst rate scenarios")
            print(worst.sort_values("cov").head(10).round(3).to_string())
    keys = ["data", "design", "n", "kind", "intervals"]
    if "before" in tabs:
        m = tabs["before"].merge(tabs["after"], on=keys, suffixes=(" before", " after"))
        m["width ratio"] = m["width after"] / m["width before"]
        cols = keys + [c for b in ("coverage", "worst scenario", "width", "near0/1 cov", "near0/1 worst", "near0/1 width")
                       for c in (f"{b} before", f"{b} after")] + ["width ratio"]
        print(m[cols].round(3).to_string(index=False))
    else:
        print(tabs["after"].round(3).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", choices=["summeval", "pandalm"])
    ap.add_argument("--design", choices=["random", "queue"], default="random")
    ap.add_argument("--reps", type=int, default=20, help="replicates per pair")
    ap.add_argument("--first-rep", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="capture.pkl")
    ap.add_argument("--evaluate", nargs="*", help="recorded files to evaluate")
    ap.add_argument("--before", help="git revision of the 'before' design.py (e.g. main)")
    a = ap.parse_args()
    if a.capture:
        capture(a.capture, a.design, a.reps, a.first_rep, a.jobs, Path(a.out))
    if a.evaluate:
        evaluate(a.evaluate, a.before)


if __name__ == "__main__":
    main()
