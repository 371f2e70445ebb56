"""What the lead's dashboard shows, computed without Streamlit: the models side by side (quality,
latency, cost), the sign-off recommendation, whether a refit is due, and the forecast curve."""

from __future__ import annotations

import contextlib
import threading
import time

import duckdb

from calib.data import store
from calib.stats import engine, nuts_worker, sequential
from calib.review import users


def output_stats(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per model, baseline first: latency median and p95, time to first token, mean tokens and cost
    per 1,000 requests, from the outputs' recorded figures (a scan of every output: cache it)."""
    rows = con.execute(
        """SELECT model, count(*), median(latency_ms), quantile_cont(latency_ms, 0.95), median(ttft_ms),
                  avg(input_tokens), avg(output_tokens), 1000 * avg(cost_usd), count(cost_usd)
           FROM outputs GROUP BY model""").fetchall()
    by = {r[0]: r for r in rows}
    base = store.get_settings(con)["baseline"]
    return [{"model": m, "role": "baseline" if m == base else "candidate", "outputs": r[1],
             "latency_p50_ms": r[2], "latency_p95_ms": r[3], "ttft_p50_ms": r[4], "input_tokens_mean": r[5],
             "output_tokens_mean": r[6], "cost_per_1k_usd": r[7] if r[8] else None}
            for m in store.models(con) if (r := by.get(m)) is not None]


def with_pass_rates(stats: list[dict], fit: dict | None) -> list[dict]:
    """``output_stats`` rows with each model's population pass rate per dimension from ``fit``
    (``pass_<dimension>`` and its ``_lo``/``_hi``)."""
    out = []
    for row in stats:
        row = dict(row)
        for x in (fit or {}).get("rates", []):
            if x["model"] == row["model"] and x["segment"] is None:
                row[f"pass_{x['dimension']}"] = x["mean"]
                row[f"pass_{x['dimension']}_lo"] = x["lo"]
                row[f"pass_{x['dimension']}_hi"] = x["hi"]
        out.append(row)
    return out


def model_comparison(con: duckdb.DuckDBPyConnection, fit: dict | None) -> list[dict]:
    """The models side by side: quality (pass rates from ``fit``), latency and cost."""
    return with_pass_rates(output_stats(con), fit)


def _basis(d: dict, fit: dict, pair: bool = False) -> str:
    """"; anytime-valid bound [..]" where the decision rests on the confidence sequence, else ""."""
    text = sequential.row_basis(d, fit, pair)
    return f"; {text}" if text else ""


def signoff(fit: dict, comparison: list[dict], settings: dict, candidate: str | None = None) -> dict:
    """The recommendation on all three axes: quality (every dimension 'not worse'), latency and cost
    (the candidate within the sign-off thresholds, where set). 'sign off', 'do not sign off' (a
    dimension is worse or a threshold is broken) or 'label more', with the reasons. ``candidate``
    limits it to one candidate (several candidates: one recommendation each, ``signoff_by_candidate``)."""
    if candidate is not None:
        fit = {**fit, "diffs": [d for d in fit["diffs"] if d["candidate"] == candidate],
               "preference": [d for d in fit.get("preference", []) if d["candidate"] == candidate]}
        comparison = [r for r in comparison if r["role"] != "candidate" or r["model"] == candidate]
    reasons, blockers, pending = [], [], []

    def add(line: str, decision: str) -> None:
        reasons.append(line)
        {"worse": blockers, "label more": pending}.get(decision, []).append(line)

    for d in fit["diffs"]:
        # percentage points, as the cards and tables show Delta
        add(f"{d['dimension']}: Delta {100 * d['mean']:+.1f} pp [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}], "
            f"P(not worse by more than {100 * fit['margin']:g} pp) = {d['p_noninferior']:.3f}"
            + _basis(d, fit) + f" -> {d['decision']}", d["decision"])
    for d in fit.get("preference", []):  # the side-by-side question: the win rate against the baseline
        if "decision" in d:
            add(f"{d['candidate']} vs {d['baseline']} side by side ({d['dimension']}): win rate {100 * d['mean']:.1f}% "
                f"[{100 * d['lo']:.1f}%, {100 * d['hi']:.1f}%], P(win rate >= {100 * (0.5 - fit['margin']):g}%) = "
                f"{d['p_noninferior']:.3f}" + _basis(d, fit, pair=True) + f" -> {d['decision']}", d["decision"])
    checks = (  # (setting, column, how a value reads)
        ("signoff_max_p95_latency_ms", "latency_p95_ms", lambda v: f"p95 latency {v:.0f} ms"),
        ("signoff_max_cost_per_1k_usd", "cost_per_1k_usd", lambda v: f"${v:.2f} per 1,000 requests"))
    for row in comparison:
        if row["role"] != "candidate":
            continue
        for key, col, show in checks:
            limit = settings.get(key) or 0
            if limit and row.get(col) is not None:
                ok = row[col] <= limit
                line = f"{row['model']}: {show(row[col])} ({'within' if ok else 'over'} the limit {show(limit)})"
                reasons.append(line)
                if not ok:
                    blockers.append(line)
    verdict = "do not sign off" if blockers else ("label more" if pending else "sign off")
    return {"recommendation": verdict, "reasons": reasons, "blockers": blockers, "pending": pending}


def signoff_by_candidate(fit: dict, comparison: list[dict], settings: dict) -> dict[str, dict]:
    """One recommendation per candidate (each decision already at the probability adjusted for
    comparing several candidates at once, ``fit['decide_prob_per_candidate']``)."""
    return {c: signoff(fit, comparison, settings, c) for c in fit.get("candidates", [])}


def p_best_rows(fit: dict) -> list[dict]:
    """The probability each model has the highest pass rate, per dimension, as table rows with
    human headers (models in the fit's order, baseline first)."""
    order = [fit.get("baseline"), *fit.get("candidates", [])]
    out = []
    for dim in dict.fromkeys(r["dimension"] for r in fit.get("p_best", [])):
        for m in order:
            r = next((x for x in fit["p_best"] if x["dimension"] == dim and x["model"] == m), None)
            if r is not None:
                out.append({"Dimension": dim, "Model": m, "Role": "baseline" if m == fit.get("baseline") else "candidate",
                            "P(highest pass rate)": f"{r['p_best']:.1%}"})
    return out


def refit_due(con: duckdb.DuckDBPyConnection) -> bool:
    """True when labels arrived since the latest recorded fit (or there is no fit yet)."""
    fit = engine.latest_fit(con)
    return fit is None or fit.get("max_label_id") != engine.label_watermark(con)


FORECAST_EXTRA = [25, 50, 100, 200, 400, 800]
_REFIT_LOCK = threading.Lock()


def next_steps(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """What to do on a project with no SME label yet (the Decision page says it instead of drawing
    a prior-only fit: cards, charts and tables of numbers no one measured); None once there are
    labels. Markdown lines naming the page or command for each way to get labels."""
    s = store.get_settings(con)
    if engine.label_watermark(con) > 0 or not s["baseline"] or not s["candidates"]:
        return None  # labels: the decision; no models yet: the fit's own error says what is missing
    from calib.review import simulate

    smes = con.execute("SELECT count(*) FROM users WHERE role = 'sme' AND coalesce(active, TRUE)").fetchone()[0]
    steps = ["SMEs label items on the **Label** page; the queue picks the items that narrow the interval most. "
             + (f"{smes} SME account{'s' if smes != 1 else ''} can sign in." if smes else
                "Add SME accounts first: Admin page (Users), or `tiebreak users add NAME --role sme`.")]
    steps.append("Labels you already have: import them on the Admin page (Imports) or with "
                 "`tiebreak labels import FILE`.")
    if simulate.has_truth(con):
        steps.append("This is a demo database: a simulated SME can label it on the **Demo** page, or run "
                     "`tiebreak simulate --items 40`.")
    steps.append(f"The decision appears here as labels arrive (a fast refit every 5 s); signing off needs at least "
                 f"{s['min_decision_items']} items labelled for both models on each dimension.")
    return steps


def refresh(con: duckdb.DuckDBPyConnection, session=None) -> dict:
    """One dashboard refresh: a fast fit (with the forecast, from the same posterior) if labels
    arrived since the latest fit, else the latest fit. Several open dashboards refit once. A page
    passes its ``calib.review.users.Session``: an ended one, or a role below lead, gets nothing
    (``users.SessionEnded``) and runs no fit."""
    if session is not None:
        users.require_session(con, session, users.LEADS)
    with _REFIT_LOCK:
        if refit_due(con):
            return engine.fit_project(con, "fast", forecast_extra=FORECAST_EXTRA)
    return engine.latest_fit(con)


class BackgroundFit:
    """The authoritative NUTS fit on its own thread (a page never waits for it); the fit is
    recorded in ``fits`` when done, ``error`` says why it failed. With ``isolate`` the sampler
    runs in the NUTS worker process (``calib.stats.nuts_worker``: the app keeps no sampler memory)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, kind: str = "nuts", isolate: bool = False):
        self.started = time.time()
        self.finished: float | None = None
        self.error: str | None = None
        self.result: dict | None = None
        self.isolate = isolate
        self._thread = threading.Thread(target=self._target, args=(con, kind), daemon=True)
        self._thread.start()

    def _target(self, con, kind) -> None:
        cur = con.cursor()
        try:
            with nuts_worker.in_worker() if self.isolate else contextlib.nullcontext():
                self.result = engine.fit_project(cur, kind)
        except Exception as exc:  # noqa: BLE001 - shown on the page
            self.error = str(exc)
        finally:
            self.finished = time.time()
            cur.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


# The background NUTS fit per database, shared by every session of this process.
_NUTS_RUNS: dict[str, BackgroundFit] = {}
_NUTS_GUARD = threading.Lock()


def nuts_run(con: duckdb.DuckDBPyConnection) -> BackgroundFit | None:
    """This database's latest background NUTS fit in this process (running or finished), or None."""
    return _NUTS_RUNS.get(store.db_key(con))


def start_nuts(con: duckdb.DuckDBPyConnection, isolate: bool = True) -> tuple[BackgroundFit, bool]:
    """Start the authoritative NUTS fit of ``con``'s database in the background unless one is
    already running in this process; returns (the run, whether this call started it).

    Every session of the app shares one process: four tabs pressing "Run NUTS" within seconds
    started three fits (the button was disabled per tab only), each holding its own sampler. The
    check and the start happen under one lock, so a second press just sees the running fit. The
    sampler runs in the NUTS worker process unless ``isolate`` is False."""
    key = store.db_key(con)
    with _NUTS_GUARD:
        run = _NUTS_RUNS.get(key)
        if run is not None and run.running:
            return run, False
        run = _NUTS_RUNS[key] = BackgroundFit(con, "nuts", isolate=isolate)
        return run, True
