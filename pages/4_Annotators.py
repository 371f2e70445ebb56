"""Lead page: the SMEs as raters: agreement, throughput, position bias and drift. Layout only: the
numbers come from calib.insight.annotators."""

import streamlit as st

from calib import safetext as safe
from calib.stats import engine
from calib.insight import annotators, tables
from pages.shared import ui

st.set_page_config(page_title="Annotators · Tiebreak", page_icon="👥", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Annotators")
db = ui.db_path()
cur = ui.cursor()


@st.cache_data(ttl=60, show_spinner="Computing agreement ...")
def _agreement(path: str, watermark: int) -> list[dict]:
    return annotators.agreement(ui._connection(path).cursor())


st.subheader("Inter-annotator agreement")
st.caption("Krippendorff's alpha (nominal) per dimension over outputs rated by two or more SMEs (the queue's overlap "
           "share), with a 95% bootstrap interval. Above 0.8 is good agreement; below 0.67, revisit the guidelines.")
st.dataframe(safe.rows(_agreement(db, engine.label_watermark(cur))), hide_index=True, width="stretch")

st.subheader("Throughput")
st.caption("Labelled items are distinct items (re-rated after an undo: counted once); a label row is one verdict "
           "on one output, dimension and SME. Times come from the labelling form's timer.")
st.dataframe(safe.rows(tables.annotator_table(annotators.throughput(cur))), hide_index=True, width="stretch")

st.subheader("Position bias")
st.caption("Share of decided preferences that went to the answer shown on the left (sides are random per item and "
           "SME, so 0.5 is no bias). A Wilson interval excluding 0.5 is flagged.")
bias = annotators.position_bias(cur)
for b in bias:
    if b["biased"]:
        st.warning(f"{safe.md(b['annotator'])} prefers the left answer in {b['left_rate']:.0%} "
                   f"[{b['lo']:.0%}, {b['hi']:.0%}] of {b['decided']} decided items")
st.dataframe(safe.rows(bias), hide_index=True, width="stretch")

st.subheader("Drift over the session")
st.caption("Pass rate and seconds per item in the first and the last third of each SME's labels.")
st.dataframe(safe.rows(annotators.drift(cur)), hide_index=True, width="stretch")
