"""Lead page: the SMEs as raters: agreement, throughput, position bias and drift. Layout only: the
numbers come from calib.insight.annotators."""

import streamlit as st

from calib import safetext as safe
from calib.data import store
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
agree = _agreement(db, engine.label_watermark(cur))
if not any(a["units"] for a in agree):
    st.info(f"No overlap yet: agreement needs outputs rated by two or more SMEs. The queue sends a share of items "
            f"({store.get_settings(cur)['overlap_share']:.0%}, setting on the Admin page) to a second SME; alpha "
            "appears once they have rated some.")
else:
    st.dataframe(safe.rows(tables.agreement_table(agree)), hide_index=True, width="stretch")

st.subheader("Throughput")
st.caption("A comparison is what an SME rates in one submit: one item's baseline answer against one candidate's "
           "answer, so with several candidates an item can be several comparisons (re-rated after an undo: counted "
           "once); distinct items count each item once. A label row is one verdict on one output, dimension and "
           "SME. Rating time comes from the labelling form's timer, per comparison.")
thr = annotators.throughput(cur)
if thr:
    # the same rows in parts (the work, per candidate, the time it took): one table would be too wide
    for title, part in tables.annotator_tables(thr).items():
        st.markdown(f"**{title}**")
        st.dataframe(safe.rows(part), hide_index=True, width="stretch")
else:
    st.info("No SME labels yet: throughput appears once SMEs rate items on the Label page.")

st.subheader("Position bias")
st.caption("Share of decided preferences that went to the answer shown on the left, over every candidate's "
           "comparisons (sides are random per item, candidate and SME, so 0.5 is no bias). A Wilson interval "
           "excluding 0.5 is flagged.")
bias = annotators.position_bias(cur)
for b in bias:
    if b["biased"]:
        st.warning(f"{safe.md(b['annotator'])} prefers the left answer in {b['left_rate']:.0%} "
                   f"[{b['lo']:.0%}, {b['hi']:.0%}] of {b['decided']} decided comparisons")
if bias:
    st.dataframe(safe.rows(tables.position_bias_table(bias)), hide_index=True, width="stretch")
else:
    st.info("No decided side-by-side preferences yet (ties are left out).")

st.subheader("Drift over the session")
st.caption("Pass rate (over the outputs of every model the SME rated) and seconds per comparison in the first and "
           "the last third of each SME's labels.")
drift = annotators.drift(cur)
if drift:
    st.dataframe(safe.rows(tables.drift_table(drift)), hide_index=True, width="stretch")
else:
    st.info("Too few labels per SME and dimension to compare the first and last third (6 or more needed).")
