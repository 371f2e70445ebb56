"""Lead page: the items themselves. SME-confirmed regressions and improvements with both outputs, the
SMEs' notes, segment and topic; their rates per segment and topic; the likely regressions among the
unlabelled items, with a form that queues them for SMEs (a lead-chosen batch whose inclusion
probabilities are recorded, so the estimates stay valid); pairwise: where SMEs strongly preferred
the baseline. Layout only: every number comes from calib.insight.regressions and tables."""

import streamlit as st

from calib import safetext as safe
from calib.data import cells, store
from calib.errors import TiebreakError
from calib.insight import regressions, tables
from calib.stats import engine
from pages.shared import ui

st.set_page_config(page_title="Regressions · Tiebreak", page_icon="🔍", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Regressions and improvements")
st.caption("Aggregate Deltas hide regressions that matter (a refund policy, one region): read the items where the "
           "candidate got worse before signing.")
db = ui.db_path()
cur = ui.cursor()
settings = store.get_settings(cur)
SHOWN = 20  # flips shown with their outputs; the rest are counted
TOP = 25  # likely regressions listed (the queue form draws from all of them)
OUTPUT_HEIGHT = 260  # px: long outputs scroll inside their box

if not settings["baseline"] or not settings["candidates"]:
    st.info("No baseline and candidate yet: import the outputs of two models (Admin page, Imports tab, or "
            "`tiebreak import FILE`). Regressions are the items the baseline passed and the candidate failed.")
    st.stop()
if not settings["dimensions"]:
    st.info("No dimensions yet: import judge scores or labels, or set the dimensions on the Admin page.")
    st.stop()


@st.cache_data(ttl=600, show_spinner="Ranking the unlabelled items ...")
def _likely(path: str, dimension: str, candidate: str, watermark: int, version: str) -> list[dict]:
    """The fast fit's ranking of unlabelled items (refitted only when labels or data change)."""
    return regressions.likely_regressions(ui._connection(path).cursor(), dimension, candidate).to_dict("records")


c1, c2 = st.columns(2)
dimension = c1.selectbox("Dimension", settings["dimensions"], key="regr_dimension", format_func=safe.one_line)
candidates = settings["candidates"]
candidate = (c2.selectbox("Candidate", candidates, key="regr_candidate", format_func=safe.one_line)
             if len(candidates) > 1 else candidates[0])
st.caption(safe.md(f"Baseline {safe.one_line(settings['baseline'], 80)} against candidate "
                   f"{safe.one_line(candidate, 80)} on {safe.one_line(dimension, 60)}. An output's SME verdict is the "
                   "majority of its SMEs' latest labels (a tie counts as fail)."))

# ---- SME-confirmed flips
summary = regressions.flip_summary(cur, dimension, candidate)
st.subheader("SME-confirmed regressions and improvements")
m1, m2, m3 = st.columns(3)
m1.metric("Items labelled for both models", f"{summary['items']:,}")
m2.metric("Regressions (baseline pass, candidate fail)", f"{summary['regressions']:,}")
m3.metric("Improvements (baseline fail, candidate pass)", f"{summary['improvements']:,}")
flips = regressions.sme_flips(cur, dimension, candidate).to_dict("records")
if summary["items"] == 0:
    st.info("No item has SME labels for both models on this dimension yet: flips appear as SMEs rate items on the "
            "Label page (or use the likely regressions below to decide what to send them).")
else:
    tabs = st.tabs([f"Regressions ({summary['regressions']:,})", f"Improvements ({summary['improvements']:,})"])
    for tab, kind in zip(tabs, ("regression", "improvement")):
        rows = [f for f in flips if f["flip"] == kind]
        with tab:
            if not rows:
                st.info(f"No SME-confirmed {kind} among the {summary['items']:,} items labelled for both models.")
                continue
            if len(rows) > SHOWN:
                st.caption(f"The first {SHOWN} of {len(rows):,}, by item id (`tiebreak regressions --json` lists all).")
            for k, f in enumerate(rows[:SHOWN]):
                title = (f"{safe.one_line(f['item_id'], 40)} · segment {safe.one_line(f['segment'], 30)} · "
                         f"topic {safe.one_line(f['topic'], 40)}")
                with st.expander(safe.md(title), expanded=k < 2):
                    left, right = st.columns(2)
                    for col, side, model in ((left, "baseline", settings["baseline"]), (right, "candidate", candidate)):
                        verdict = "pass" if (side == "baseline") == (kind == "regression") else "fail"
                        col.markdown(f"**{side.capitalize()}** ({safe.md(safe.one_line(model, 60))}): SMEs say "
                                     f"**{verdict}**")
                        ui.scroll_text(f[f"{side}_output"] or "(no output)", OUTPUT_HEIGHT, col)
                        note = f[f"{side}_notes"]
                        col.caption("SME notes: " + (safe.md(note) if note else "none"))

    st.subheader("Rates per segment and per topic")
    st.caption("Among the items SMEs labelled for both models; the queue over-samples informative items, so these "
               "are rates among labelled items, not population rates (the Decision page has those).")
    for by in ("segment", "topic"):
        rates = regressions.flip_rates(cur, dimension, by, candidate).to_dict("records")
        st.dataframe(safe.rows(tables.flip_rate_table(rates, by)), hide_index=True, width="stretch",
                     height="content")

# ---- likely regressions among the unlabelled items
st.subheader("Likely regressions among the unlabelled items")
st.caption("Ranked by P(regression) = P(baseline passes) x (1 - P(candidate passes)) from the fast fit's judge "
           "calibration. It ranks items; it is not a calibrated per-item probability (the item's effect shared by "
           "both models is ignored).")
try:
    likely = _likely(db, dimension, candidate, engine.label_watermark(cur), cells.fingerprint(cur))
except TiebreakError as exc:
    likely = None
    st.info("No ranking yet: " + safe.md(exc))
if likely is not None and not likely:
    st.info("Every item is labelled on this dimension: nothing left to rank.")
elif likely:
    st.dataframe(safe.rows(tables.likely_table(likely[:TOP])), hide_index=True, width="stretch", height="content")
    st.caption(f"The top {min(TOP, len(likely))} of {len(likely):,} unlabelled items.")
    with st.form("regr_queue_form"):
        st.markdown("**Queue these for SMEs**")
        k = st.number_input("Expected number of items to queue", min_value=1, max_value=max(1, min(500, len(likely))),
                            value=min(20, len(likely)), step=1, key="regr_queue_k")
        st.caption("A lead-chosen batch: each unlabelled, not yet queued item is drawn with probability proportional "
                   "to its P(regression) (at most 1), and that inclusion probability is recorded with the item, so "
                   "the design-weighted estimates stay unbiased.")
        if st.form_submit_button("Queue these for SMEs", type="primary"):
            try:
                batch = regressions.queue_likely_regressions(ui.cursor(), dimension, int(k), candidate)
            except TiebreakError as exc:
                st.error(safe.md(exc))
            else:
                st.session_state["regr_last_batch"] = {"batch_id": batch.batch_id, "selected": batch.selected,
                                                       "expected": batch.expected, "eligible": batch.eligible,
                                                       "dimension": dimension}
    last = st.session_state.get("regr_last_batch")
    if last:
        if last["selected"]:
            st.success(f"Queued batch {last['batch_id']}: {last['selected']:,} items drawn (expected size "
                       f"{last['expected']:.1f} of {last['eligible']:,} eligible items); each item's inclusion "
                       "probability is recorded in the queue. SMEs get them on the Label page.")
            recorded = regressions.queued_batch(cur, last["batch_id"]).to_dict("records")
            st.dataframe(safe.rows(tables.present(recorded, [
                ("item_id", "Item", None), ("segment", "Segment", None), ("topic", "Topic", None),
                ("inclusion_prob", "Inclusion probability", tables.pct), ("reason", "Reason", None)])),
                hide_index=True, width="stretch")
        else:
            st.info(f"Batch {last['batch_id']}: nothing queued ({last['eligible']:,} eligible items: every "
                    "unlabelled item may already be in the queue).")

# ---- pairwise
st.subheader("Pairwise: SMEs strongly preferred the baseline")
if cur.execute("SELECT count(*) FROM pair_labels").fetchone()[0] == 0:
    st.info("No side-by-side preferences from SMEs yet: they give one per item on the Label page.")
else:
    strong = regressions.pairwise_baseline_preferred(cur, candidate, min_strength=2).to_dict("records")
    any_base = len(regressions.pairwise_baseline_preferred(cur, candidate))
    st.caption(f"{len(strong):,} items where an SME found the baseline's answer much better "
               f"({any_base:,} where it was better at all). Latest preference per SME"
               + (f"; the first {TOP} are listed." if len(strong) > TOP else "."))
    if strong:
        st.dataframe(safe.rows(tables.present(strong[:TOP], [
            ("item_id", "Item", None), ("segment", "Segment", None), ("topic", "Topic", None),
            ("dimension", "Question", None), ("annotator", "SME", None), ("note", "Note", None)])),
            hide_index=True, width="stretch", height="content")
