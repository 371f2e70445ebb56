"""Tiebreak home page: the loaded project and its counts. Layout only; numbers come from calib."""

import streamlit as st

from calib import store
from pages.shared import ui

st.set_page_config(page_title="Tiebreak", page_icon=":material/balance:", layout="wide")
if st.session_state.get("auth_role") == "sme":
    st.switch_page("pages/1_Label.py")
ui.require("lead", "admin")
cur = ui.cursor()
st.title("Tiebreak")
st.caption("Replace a production LLM with statistical confidence: automated judges, calibrated on SME labels.")

s = store.status(cur)
settings = store.get_settings(cur)
st.subheader("Project")
left, right = st.columns(2)
with left:
    st.markdown(f"**Database** `{ui.db_path()}`")
    st.text(f"Baseline (production): {s['baseline'] or '-'}")
    st.text(f"Candidate(s): {', '.join(s['candidates']) or '-'}")
    st.text(f"Dimensions: {', '.join(s['dimensions']) or '-'}")
    st.text(f"Non-inferiority margin: {settings['margin']:.3f}")
with right:
    c1, c2, c3 = st.columns(3)
    c1.metric("Items", f"{s['items']:,}")
    c2.metric("Outputs", f"{s['outputs']:,}")
    c3.metric("Segments", s["segments"])
    c1.metric("Judge scores", f"{s['judge_scores']:,}")
    c2.metric("SME labels", f"{sum(x['labels'] for x in s['labels']):,}")
    c3.metric("Fits", s["fits"])

st.subheader("Judges")
if s["judges"]:
    st.dataframe(s["judges"], hide_index=True, width="stretch")
else:
    st.info("No judge scores yet: import a file with `tiebreak import FILE`.")

st.subheader("Labels by dimension")
if s["labels"] or s["pair_labels"]:
    st.dataframe(s["labels"] + s["pair_labels"], hide_index=True, width="stretch")
else:
    st.info("No SME labels yet.")
