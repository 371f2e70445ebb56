"""Tiebreak home page: the loaded project and its counts. Layout only; numbers come from calib."""

import streamlit as st

from calib import safetext as safe
from calib.data import store
from calib.insight import tables
from calib.review import queue
from pages.shared import ui

st.set_page_config(page_title="Tiebreak", page_icon="⚖️", layout="wide")
if st.session_state.get("auth_role") == "sme":
    st.switch_page("pages/1_Label.py")
user, role = ui.require("lead", "admin")
cur = ui.cursor()
st.title("Tiebreak")
st.caption("Replace a production LLM with statistical confidence: automated judges, calibrated on SME labels.")

s = ui.cached_status(ui.db_path())
settings = store.get_settings(cur)
st.subheader("Project")
left, right = st.columns(2)
with left:
    st.markdown(f"**Database** {safe.md(ui.db_path())}")
    st.text(f"Baseline (production): {safe.clean(s['baseline']) or '-'}")
    st.text(f"Candidate(s): {safe.clean(', '.join(s['candidates'])) or '-'}")
    st.text(f"Dimensions: {safe.clean(', '.join(s['dimensions'])) or '-'}")
    st.text(f"Non-inferiority margin: {settings['margin']:.3f}")
with right:
    c1, c2, c3 = st.columns(3)
    c1.metric("Items", f"{s['items']:,}")
    c2.metric("Outputs", f"{s['outputs']:,}")
    c3.metric("Segments", s["segments"])
    c1.metric("Judge scores", f"{s['judge_scores'] + s['pair_judge_prefs']:,}",
              help=f"{s['judge_scores']:,} pointwise scores and {s['pair_judge_prefs']:,} side-by-side preferences")
    c2.metric("Labelled items", f"{s['labelled_items']:,}",
              help=f"{sum(x['labels'] for x in s['labels'] + s['pair_labels']):,} label rows: one per item, model "
                   "(or pair), dimension and SME (the Decision page counts labelled items too)")
    c3.metric("Fits", s["fits"])

st.subheader("Judges")
if s["judges"]:
    st.dataframe(safe.rows(tables.judge_count_table(s["judges"])), hide_index=True, width="stretch")
else:
    st.info("No judge scores yet: import a file on the Admin page or with `tiebreak import FILE`.")

st.subheader("Labels by dimension")
if s["labels"] or s["pair_labels"]:
    st.dataframe(safe.rows(tables.present(
        s["labels"] + [{**x, "dimension": f"{x['dimension']} (side by side)"} for x in s["pair_labels"]],
        [("dimension", "Dimension", None), ("items", "Labelled items", tables.integer),
         ("labels", "Label rows", tables.integer), ("annotators", "SMEs", tables.integer)])),
        hide_index=True, width="stretch")
else:
    st.info("No SME labels yet.")

st.subheader("Queue")
# one table under the other: side by side, each got half the width and cut its last column at 1280 px
st.markdown("**Queued items by reason**")
summary = queue.queue_summary(cur)
if summary:
    st.dataframe(safe.rows(tables.queue_table(summary)), hide_index=True, width="stretch")
else:
    st.info("Nothing queued yet: the labelling page fills the queue, or run `tiebreak queue`.")
st.markdown("**Where the judges disagree most**")
st.caption("Judges disagree: the spread of the judges' normalised scores on the same output (standard deviation, "
           "averaged over the item's outputs and dimensions). Models differ: how far the judges' consensus on a "
           "candidate's output is from the baseline's (the candidate that differs most). Score: their sum.")
st.dataframe(safe.rows(tables.disagreement_table(ui.cached_disagreements(ui.db_path(), 15))), hide_index=True,
             width="stretch", height="content")

st.subheader("Flagged by SMEs")
flagged = queue.review_list(cur)
if not flagged:
    st.caption("No flagged items waiting.")
for f in flagged:
    c1, c2, c3 = st.columns([4, 1, 1])
    c1.text(safe.clean(f"{f['item_id']} flagged by {f['annotator']}: {f['reason']}"))
    if c2.button("Return to queue", key=f"home_return_{f['lease_id']}"):
        queue.review_flag(ui.cursor(), f["lease_id"], user, "return")
        st.rerun()
    if c3.button("Drop", key=f"home_drop_{f['lease_id']}"):
        queue.review_flag(ui.cursor(), f["lease_id"], user, "drop")
        st.rerun()
