"""Lead page: the live decision per dimension, how the interval has shrunk and will shrink, the
models side by side on quality, latency and cost, the authoritative fit, and the exports.
Layout only: every number comes from calib (engine, dashboard, plots, report)."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from calib import safetext as safe
from calib.data import cells, ingest, store
from calib.stats import engine
from calib.insight import dashboard, fitness, plots, report
from calib.errors import TiebreakError
from pages.shared import ui

st.set_page_config(page_title="Decision · Tiebreak", page_icon="🧮", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Decision")
db = ui.db_path()


@st.cache_resource
def _nuts_runs() -> dict:
    """The background NUTS fit per database, shared by every session of this process."""
    return {}


@st.cache_data(ttl=600, show_spinner=False)
def _output_stats(path: str, version: str) -> list[dict]:
    """Latency, tokens and cost per model (scans every output: cached per data version)."""
    return dashboard.output_stats(ui._connection(path).cursor())


@st.cache_data(ttl=600, show_spinner=False)
def _forecast(path: str, watermark: int) -> dict:
    return engine.forecast_project(ui._connection(path).cursor(), dashboard.FORECAST_EXTRA)


@st.cache_data(ttl=60, show_spinner=False)
def _judge_transport(path: str, watermark: int) -> list[str]:
    """Judges whose quality differs between the models (calib.insight.fitness), per label watermark."""
    return fitness.fitness_warnings(fitness.fitness_differences(ui._connection(path).cursor()))


_transport = _judge_transport(db, engine.label_watermark(ui.cursor()))
if _transport:  # one box, one line per judge and dimension: the recommendation stays in view
    st.warning("A judge's quality differs between the models (see the Judges page):\n"
               + "\n".join(f"- {safe.md(w)}" for w in _transport), icon="⚖️")


@st.fragment(run_every=5)
def live() -> None:
    """Refits (fast) when labels arrived since the last fit, then redraws: runs every 5 s."""
    cur = ui.cursor()
    try:
        fit = dashboard.refresh(cur)
    except TiebreakError as exc:  # e.g. an empty project: say what is missing
        st.info(safe.md(exc))
        return
    if fit is None:
        st.info("No labels and no fit yet.")
        return
    settings = store.get_settings(cur)
    comparison = dashboard.with_pass_rates(_output_stats(db, cells.fingerprint(cur)), fit)
    sign = dashboard.signoff(fit, comparison, settings)
    colour = {"sign off": "green", "do not sign off": "red", "label more": "orange"}[sign["recommendation"]]
    st.markdown(f"### Recommendation: :{colour}[{sign['recommendation'].upper()}]")
    st.caption(f"{safe.md(fit['kind'])} fit on {fit['n_labels']} labelled items; {fit['interval']:.0%} credible intervals; "
               f"margin {fit['margin']}; a decision needs P >= {fit['decide_prob']}. Refreshes every 5 s; "
               f"refits (fast) when labels arrive.")
    cols = st.columns(max(1, len(fit["diffs"])))
    for col, d in zip(cols, fit["diffs"]):
        col.metric(safe.md(safe.one_line(d["dimension"], 60)), safe.md(d["decision"].upper()),
                   f"Delta {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]", delta_color="off",
                   delta_arrow="off", border=True)
        col.caption(f"P(not worse by more than {fit['margin']}) = {d['p_noninferior']:.3f}")
    for w in fit["warnings"]:
        st.warning(safe.md(w))

    forecasts = fit.get("forecasts") or _forecast(db, engine.label_watermark(cur))["forecasts"]
    fc = {f["dimension"]: f for f in forecasts}
    history = engine.fits_history(cur)
    for i, d in enumerate(fit["diffs"]):
        left, right = st.columns(2)
        left.plotly_chart(plots.shrinkage_figure(history, d["dimension"], fc.get(d["dimension"]), fit["margin"]),
                          key=f"decision_shrink_{i}")
        right.plotly_chart(plots.forest_figure(fit.get("segment_diffs", []), d["dimension"], fit["margin"]),
                           key=f"decision_forest_{i}")
        f = fc.get(d["dimension"])
        if f:
            need = f["labels_for_target_width"]
            left.caption(f"Forecast: width {f['width_now']:.3f} now; "
                         + (f"about {need} more labelled items reach the target width {f['target_width']:g}; "
                            if need is not None else f"the target width {f['target_width']:g} is out of reach; ")
                         + "chance of a decision after " + ", ".join(
                             f"{s['extra']}: {s['p_decision']:.0%}" for s in f["steps"][:4]))

    st.subheader("Quality, latency and cost")
    st.dataframe(safe.rows(comparison), hide_index=True, width="stretch")
    lat, cost = settings["signoff_max_p95_latency_ms"], settings["signoff_max_cost_per_1k_usd"]
    st.caption("Sign-off thresholds for the candidate (settings `signoff_max_p95_latency_ms`, "
               "`signoff_max_cost_per_1k_usd`): p95 latency " + (f"<= {lat:g} ms" if lat else "no limit")
               + safe.md(", cost per 1,000 requests " + (f"<= ${cost:g}" if cost else "no limit") + ". "
                         + " · ".join(sign["blockers"])))
    if fit.get("preference"):
        st.subheader("Pairwise win rate of the candidate")
        st.dataframe(safe.rows(fit["preference"]), hide_index=True, width="stretch")
    st.subheader("Cross-checks")
    st.dataframe(safe.rows(fit["cross_checks"]), hide_index=True, width="stretch")


live()

st.subheader("Authoritative fit (NUTS)")
run = _nuts_runs().get(db)
st.session_state["decision_nuts_busy"] = bool(run and run.running)
c1, c2 = st.columns([1, 3])
if c1.button("Run NUTS in the background", key="decision_nuts", disabled=st.session_state["decision_nuts_busy"]):
    _nuts_runs()[db] = dashboard.BackgroundFit(ui._connection(db), "nuts")
    st.rerun()


@st.fragment(run_every=2)
def nuts_status() -> None:
    run = _nuts_runs().get(db)
    if run is not None and run.running:
        st.info("NUTS is running in the background (about 5 s warm, 25 s the first time in a process); "
                "this page stays usable.")
    elif run is not None and run.error:
        st.error(f"NUTS failed: {safe.md(run.error)}")
    if run is not None and not run.running and st.session_state.get("decision_nuts_busy"):
        st.session_state["decision_nuts_busy"] = False  # finished: redraw the page (button, verdicts)
        st.rerun(scope="app")
    last = engine.latest_fit(ui.cursor(), kind="nuts")
    if last is None:
        st.caption("No NUTS fit yet.")
        return
    rows = [{"dimension": dim, "max R-hat": d.get("max_rhat"), "min bulk ESS": d.get("min_ess_bulk"),
             "divergences": d.get("divergences"), "ok": not d.get("warnings")} for dim, d in last["diagnostics"].items()]
    st.caption(f"Latest NUTS fit: {last['n_labels']} labelled items, {last.get('seconds', 0):.1f} s. "
               "Converged when R-hat < 1.01, bulk ESS > 400 and no divergences.")
    st.dataframe(safe.rows(rows), hide_index=True, width="stretch")


with c2:
    nuts_status()

@st.cache_data(ttl=300, show_spinner=False)
def _exports(path: str, watermark: int, n_fits: int) -> dict[str, bytes]:
    """Labels (CSV, Parquet) and the fits history (CSV), rebuilt only when labels or fits change."""
    cur = ui._connection(path).cursor()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".csv", ".parquet"):
            f = Path(tmp) / f"labels{suffix}"
            ingest.export_labels(cur, f)
            out[f"labels{suffix}"] = f.read_bytes()
    out["fits.csv"] = pd.DataFrame(engine.fits_history(cur)).to_csv(index=False).encode()
    return out


with st.expander("Exports"):
    cur = ui.cursor()
    files = _exports(db, engine.label_watermark(cur), cur.execute("SELECT count(*) FROM fits").fetchone()[0])
    st.download_button("Labels (csv)", files["labels.csv"], file_name="tiebreak-labels.csv", mime="text/csv",
                       key="decision_dl_labels.csv")
    st.download_button("Labels (parquet)", files["labels.parquet"], file_name="tiebreak-labels.parquet",
                       mime="application/octet-stream", key="decision_dl_labels.parquet")
    st.download_button("Fits history (csv)", files["fits.csv"], file_name="tiebreak-fits.csv", mime="text/csv",
                       key="decision_dl_fits")
    if st.button("Build the sign-off report", key="decision_build_report"):
        with st.spinner("Building the report ..."):
            st.session_state["decision_report"] = report.build_report(ui.cursor(), db_label=db)
    if st.session_state.get("decision_report"):
        st.download_button("Sign-off report (HTML)", st.session_state["decision_report"],
                           file_name="tiebreak-report.html", mime="text/html", key="decision_dl_report")
