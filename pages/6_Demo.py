"""Demo mode for stakeholders: a simulated SME labels items from the demo data's hidden truth at a
chosen pace while the decision refits live, and a replay animates how the interval shrank.
Layout only: calib.review.simulate labels and replays, calib.insight.dashboard refits."""

import time

import streamlit as st

from calib import safetext as safe
from calib.data import store
from calib.stats import engine
from calib.review import simulate
from calib.insight import dashboard, plots, tables
from calib.errors import TiebreakError
from pages.shared import ui

st.set_page_config(page_title="Demo · Tiebreak", page_icon="▶️", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Demo")
db = ui.db_path()
cur = ui.cursor()
ss = st.session_state
settings = store.get_settings(cur)

if not settings["demo_mode"]:
    st.info("Demo mode is off. It lets a simulated SME label items from a demo database's hidden truth "
            "(`tiebreak settings set demo_mode true`, or the button).")
    if st.button("Switch demo mode on", key="demo_switch_on"):
        store.set_settings(ui.cursor(), demo_mode=True)
        st.rerun()
    st.stop()
if not simulate.has_truth(cur):
    st.warning("This database has no hidden truth, so no simulated SME can label it: start the app on a demo "
               "database (`tiebreak demo --db demo.duckdb`).")
    st.stop()

ss.setdefault("demo_running", False)
ss.setdefault("demo_credit", 0.0)
ss.setdefault("demo_last", time.time())
ss.setdefault("demo_pace", float(settings["demo_pace"]))
c1, c2, c3 = st.columns([2, 1, 1])
c1.slider("Simulated SME pace (items per second)", 0.2, 5.0, step=0.2, key="demo_pace")
if c2.button("Start", type="primary", key="demo_start", disabled=ss["demo_running"]):
    ss["demo_running"], ss["demo_credit"], ss["demo_last"] = True, 1.0, time.time()
if c3.button("Stop", key="demo_stop", disabled=not ss["demo_running"]):
    ss["demo_running"] = False


def demo_live() -> None:
    """Each second: the simulated SME labels what its pace allows, then the decision refits."""
    cur = ui.cursor()
    if ss["demo_running"]:
        now = time.time()
        due = ss["demo_credit"] + ss["demo_pace"] * (now - ss["demo_last"])
        n = int(due)
        ss["demo_credit"], ss["demo_last"] = due - n, now
        if n and simulate.simulate_sme(cur, n, seed=int(now)) < n:
            ss["demo_running"] = False
            st.toast("Every item is labelled: the demo is over.")
    try:
        fit = dashboard.refresh(cur)
    except TiebreakError as exc:
        st.info(safe.md(exc))
        return
    if fit is None:
        st.caption("Press Start: the simulated SME begins labelling.")
        return
    st.caption(f"{fit['n_labels']} labelled items; the simulated SME is "
               + ("labelling." if ss["demo_running"] else "paused."))
    history = engine.fits_history(cur)
    fc = {(f["dimension"], f.get("candidate")): f for f in fit.get("forecasts", [])}
    cands = fit.get("candidates") or []
    many = len(cands) > 1  # several candidates: a row of cards and charts per candidate, named
    for c in cands if many else [None]:
        diffs = [d for d in fit["diffs"] if c is None or d["candidate"] == c]
        if c is not None:
            st.markdown(f"**{safe.md(safe.one_line(c, 60))}** vs the baseline")
        cols = st.columns(max(1, min(len(diffs), 4)))
        for k, d in enumerate(diffs):
            cols[k % len(cols)].metric(safe.md(safe.one_line(d["dimension"], 60)), safe.md(d["decision"].upper()),
                                       tables.card_delta(d), delta_color="off", delta_arrow="off", border=True)
        for k in range(0, len(diffs), 2):  # two charts a row: a third would squeeze titles and legends
            for j, (col, d) in enumerate(zip(st.columns(2), diffs[k:k + 2])):
                col.plotly_chart(plots.shrinkage_figure(history, d["dimension"], fc.get((d["dimension"], d["candidate"])),
                                                        fit["margin"], candidate=c),
                                 key=f"demo_shrink_{cands.index(c) if c is not None else 0}_{k + j}")


# Each second while the simulated SME labels; paused, every 5 s (labels from real SMEs still show):
# an idle Demo page redrew its six charts every second, a core's worth of work on a loaded server.
# Start and Stop rerun the whole page, so the pace follows them.
st.fragment(run_every=1.0 if ss["demo_running"] else 5.0)(demo_live)()


@st.cache_data(ttl=600, show_spinner="Replaying the label history (a fast fit per step) ...")
def _replay(path: str, watermark: int) -> list[dict]:
    return simulate.replay(ui._connection(path).cursor(), points=12)


st.subheader("Replay")
st.caption("Refits at 12 moments of this project's label history, each counting only the labels written by then; "
           "press Play on a chart to watch the interval shrink.")
if st.toggle("Replay the label history", key="demo_replay"):
    rows = _replay(db, engine.label_watermark(cur))
    margin = settings["margin"]
    cands = settings["candidates"] if len(settings["candidates"]) > 1 else [None]
    charts = [(dim, c) for c in cands for dim in settings["dimensions"]]
    for k in range(0, len(charts), 2):  # two a row; with several candidates, one figure per candidate
        for j, (col, (dim, c)) in enumerate(zip(st.columns(2), charts[k:k + 2])):
            col.plotly_chart(plots.replay_figure(rows, dim, margin, candidate=c), key=f"demo_replay_{k + j}")
