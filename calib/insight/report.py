"""The self-contained HTML sign-off report: the decision per dimension, the plots, the settings,
the number of labels, a fingerprint of the data and the date. One file, plotly.js inlined, no
network needed to open it; every text from the data goes through ``safetext.html`` (escaped, bidi
controls shown), in the tables and in the plots."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import duckdb

from calib.data import cells, store
from calib.safetext import html as _esc
from calib.stats import engine
from calib.insight import dashboard, plots


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A short hash of what the decision rests on: the data version and every label row."""
    base = cells.fingerprint(con)
    labels = con.execute("SELECT count(*), coalesce(max(label_id), 0), coalesce(sum(hash(item_id, model, dimension, "
                         "verdict, annotator)), 0) FROM labels").fetchone()
    pairs = con.execute("SELECT count(*), coalesce(max(label_id), 0) FROM pair_labels").fetchone()
    return hashlib.sha256(json.dumps([base, labels, pairs], default=str).encode()).hexdigest()[:16]


def _table(rows: list[dict], cols: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for c in cols:
            v = r.get(c)
            text = "" if v is None else (fmt[c](v) if c in fmt else (f"{v:.4f}" if isinstance(v, float) else str(v)))
            tds.append(f"<td>{_esc(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.card{display:inline-block;border:1px solid #ccc;border-radius:8px;padding:10px 16px;margin:4px}
.rec{font-size:1.4em;font-weight:bold}.worse{color:#b00}.notworse{color:#070}.more{color:#a60}"""


def build_report(con: duckdb.DuckDBPyConnection, fit: dict | None = None, db_label: str = "") -> str:
    """The report as one HTML string (``fit``: the fit to report; default the latest, refitted
    fast when labels arrived since)."""
    fit = fit or dashboard.refresh(con)
    settings = store.get_settings(con)
    history = engine.fits_history(con)
    comparison = dashboard.model_comparison(con, fit)
    sign = dashboard.signoff(fit, comparison, settings)
    try:
        fc = {(f["dimension"], f.get("candidate")): f
              for f in engine.forecast_project(con, dashboard.FORECAST_EXTRA)["forecasts"]}
    except Exception:  # noqa: BLE001 - a report without a forecast beats no report
        fc = {}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    e = _esc
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Tiebreak sign-off report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Tiebreak sign-off report</h1>",
             f"<p>Date: {e(now)}<br>Database: {e(db_label)}<br>Data fingerprint: <code>{e(data_fingerprint(con))}</code><br>"
             f"Baseline: {e(str(fit['baseline']))}; candidate(s): {e(', '.join(fit['candidates']))}<br>"
             f"Labelled items: {fit['n_labels']} ({e(fit['kind'])} fit); {fit['interval']:.0%} credible intervals; "
             f"non-inferiority margin {fit['margin']:g}; decision when the posterior probability is at least "
             f"{fit.get('decide_prob_per_candidate', fit['decide_prob']):.4g}"
             + (f" ({e(fit['multiplicity'])})" if len(fit["candidates"]) > 1 else "") + "</p>"]
    many = len(fit["candidates"]) > 1
    signs = dashboard.signoff_by_candidate(fit, comparison, settings) if many else {None: sign}
    for cand, sg in signs.items():  # several candidates: one recommendation each
        cls = {"sign off": "notworse", "do not sign off": "worse", "label more": "more"}[sg["recommendation"]]
        parts.append(f"<h2>Recommendation{' for ' + e(cand) if cand else ''}</h2>"
                     f"<p class='rec {cls}'>{e(sg['recommendation'].upper())}</p><ul>"
                     + "".join(f"<li>{e(r)}</li>" for r in sg["reasons"]) + "</ul>")
    if many and fit.get("p_best"):
        parts.append("<h2>Which model is best (posterior probability of the highest pass rate)</h2>")
        parts.append(_table(dashboard.p_best_rows(fit), ["Dimension", "Model", "Role", "P(highest pass rate)"]))
    parts.append("<h2>Decision per dimension</h2>")
    for d in fit["diffs"]:
        c = {"not worse": "notworse", "worse": "worse"}.get(d["decision"], "more")
        parts.append(f"<div class='card'><b>{e(d['dimension'])}</b> ({e(d['candidate'])} vs {e(d['baseline'])})<br>"
                     f"<span class='rec {c}'>{e(d['decision'].upper())}</span><br>Delta {d['mean']:+.4f} "
                     f"[{d['lo']:+.4f}, {d['hi']:+.4f}]<br>P(Delta &ge; -{fit['margin']:g}) = {d['p_noninferior']:.3f}</div>")
    parts.append(_table(fit["diffs"], ["dimension", "baseline", "candidate", "mean", "lo", "hi", "p_noninferior", "decision"]))
    parts.append("<h2>Quality, latency and cost</h2>")
    cols = ["model", "role"] + [k for k in comparison[0] if k.startswith("pass_") and not k.endswith(("_lo", "_hi"))] \
        + ["latency_p50_ms", "latency_p95_ms", "cost_per_1k_usd", "outputs"] if comparison else []
    parts.append(_table(comparison, cols))
    parts.append("<h2>Population pass rates</h2>")
    parts.append(_table([r for r in fit["rates"] if r["segment"] is None], ["dimension", "model", "mean", "lo", "hi"]))
    if fit.get("preference"):
        parts.append("<h2>Pairwise win rate of the candidate</h2>")
        parts.append(_table(fit["preference"], ["dimension", "baseline", "candidate", "mean", "lo", "hi"]))
    parts.append("<h2>Cross-checks</h2>")
    parts.append(_table(fit["cross_checks"], ["dimension", "candidate", "method", "mean", "lo", "hi", "n"]))
    if fit.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in fit["warnings"]) + "</ul>")
    parts.append("<h2>Plots</h2>")
    first = True
    for d in fit["diffs"]:
        c = d["candidate"] if many else None
        for fig in (plots.shrinkage_figure(history, d["dimension"], fc.get((d["dimension"], d["candidate"])),
                                           fit["margin"], candidate=c),
                    plots.forest_figure(fit.get("segment_diffs", []), d["dimension"], fit["margin"], candidate=c)):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
    parts.append("<h2>Settings</h2>")
    parts.append(_table([{"setting": k, "value": json.dumps(v)} for k, v in sorted(settings.items())], ["setting", "value"]))
    parts.append("</body></html>")
    return "\n".join(parts)
