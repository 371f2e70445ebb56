"""Lead page: the decision per dimension from the latest fit, and how the interval has shrunk.
Layout only: fits, estimates and figures come from calib.engine and calib.plots."""

import streamlit as st

from calib import engine, plots
from pages.shared import ui

st.set_page_config(page_title="Decision · Tiebreak", page_icon=":material/gavel:", layout="wide")
user, role = ui.require("lead", "admin")
cur = ui.cursor()
st.title("Decision")

if st.button("Refit now (fast)", key="decision_refit"):
    with st.spinner("Fitting ..."):
        engine.fit_project(ui.cursor(), "fast")
fit = engine.latest_fit(cur)
if fit is None:
    st.info("No fit yet: label some items, then press Refit (or run `tiebreak fit`).")
    st.stop()

st.caption(f"{fit['kind']} fit on {fit['n_labels']} labelled items; {fit['interval']:.0%} credible intervals; "
           f"margin {fit['margin']}; decision when P >= {fit['decide_prob']}")
cols = st.columns(max(1, len(fit["diffs"])))
for col, d in zip(cols, fit["diffs"]):
    col.metric(d["dimension"], d["decision"].upper(),
               f"Delta {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]", delta_color="off")
    col.caption(f"P(not worse by more than {fit['margin']}) = {d['p_noninferior']:.3f}")
for w in fit["warnings"]:
    st.warning(w)

history = engine.fits_history(cur)
for d in fit["diffs"]:
    left, right = st.columns(2)
    left.plotly_chart(plots.shrinkage_figure(history, d["dimension"]), key=f"decision_shrink_{d['dimension']}")
    right.plotly_chart(plots.forest_figure(fit.get("segment_diffs", []), d["dimension"], fit["margin"]),
                       key=f"decision_forest_{d['dimension']}")

st.subheader("Pass rates")
st.dataframe([r for r in fit["rates"] if r["segment"] is None], hide_index=True, width="stretch")
st.subheader("Cross-checks")
st.dataframe(fit["cross_checks"], hide_index=True, width="stretch")
