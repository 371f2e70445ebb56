"""Lead page: how far each automated judge can be trusted, measured against the SMEs, per model.
Layout only: the numbers come from calib.insight.diagnostics and calib.insight.fitness."""

import streamlit as st

from calib import safetext as safe
from calib.data import cells
from calib.stats import engine
from calib.insight import diagnostics, fitness, plots, tables
from pages.shared import ui

st.set_page_config(page_title="Judges · Tiebreak", page_icon="🧑‍⚖️", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Judges")
db = ui.db_path()
cur = ui.cursor()


@st.cache_data(ttl=60, show_spinner="Comparing judges with SMEs ...")
def _agreement(path: str, watermark: int) -> tuple[list[dict], list[dict]]:
    c = ui._connection(path).cursor()
    return diagnostics.judge_agreement(c), diagnostics.judge_bias_by_model(c)


@st.cache_data(ttl=600, show_spinner="Measuring each judge's fitness per model ...")
def _fitness(path: str, as_of: int) -> tuple[list[dict], list[dict]]:
    """Judge fitness and its differences as of the labels up to ``as_of`` (fitness.fitness_watermark:
    refreshed every 25 labels or 5%, not on every label; seconds on a large store)."""
    return fitness.fitness_and_differences(ui._connection(path).cursor(), max_label_id=as_of)


@st.cache_data(ttl=600, show_spinner="Comparing judges with each other ...")
def _disagreement(path: str, version: str) -> list[dict]:
    return diagnostics.judge_disagreement(ui._connection(path).cursor())


@st.cache_data(ttl=60, show_spinner=False)
def _curve(path: str, watermark: int, judge: str, dimension: str) -> list[dict]:
    return diagnostics.calibration_curve(ui._connection(path).cursor(), judge, dimension)


wm = engine.label_watermark(cur)
agreement, bias = _agreement(db, wm)
if not agreement:
    st.info("No SME labels yet: agreement with SMEs appears once items are labelled.")
else:
    st.subheader("Agreement with SMEs")
    st.caption("Cohen's kappa of the judge's pass/fail (score >= its threshold) with the SME majority verdict on the "
               "labelled outputs of every model together (the baseline's and every candidate's; per model: the next "
               "table), 95% bootstrap interval; the confusion matrix counts outputs.")
    st.dataframe(safe.rows(tables.judge_agreement_table(agreement)), hide_index=True, width="stretch", height="content")

    st.subheader("Judge fitness per model")
    as_of, n_as_of = fitness.fitness_watermark(cur)
    per_model, differences = _fitness(db, as_of)
    st.caption(f"Judge fitness as of {n_as_of:,} labels (refreshed every {fitness.REFRESH_EVERY} new labels, or "
               f"{100 * fitness.REFRESH_SHARE:g}% once there are many). "
               f"Each judge against the SMEs on each model's labelled outputs, weighted by the queue's inclusion "
               f"probabilities (so they describe all outputs, not just the hard ones the queue picked). Sensitivity: "
               f"share of SME passes the judge passes; specificity: share of SME fails it fails (95% Wilson "
               f"intervals); Youden's J = sensitivity + specificity - 1; Cohen's kappa (95% bootstrap intervals); "
               f"each as estimate [95% interval]; the baseline first (marked), then every candidate. "
               f"Fitness band by kappa, a common convention rather than a law: below 0.4 exploration only, 0.4 to "
               f"0.7 monitoring, 0.7 and above release gating; 'too few labels' under {fitness.MIN_LABELS} labelled "
               f"outputs or under {fitness.MIN_PER_CLASS} SME passes or fails.")
    # one table per dimension, without its Dimension column: with the baseline and several candidates
    # per judge, one table of every dimension is too wide for the fitness band to show in full
    if not per_model:
        st.info(f"No judge fitness as of {n_as_of:,} labels: it needs at least {fitness.REFRESH_EVERY} SME labels "
                f"and pointwise judge scores.")
    fit_rows = fitness.fitness_table(per_model)
    for dimension in dict.fromkeys(r["Dimension"] for r in fit_rows):
        st.markdown(f"**{safe.md(safe.one_line(dimension, 80))}**")
        st.dataframe(safe.rows([{k: v for k, v in r.items() if k != "Dimension"} for r in fit_rows
                                if r["Dimension"] == dimension]), hide_index=True, width="stretch", height="content")

    st.subheader("Does the judge's quality differ between the models?")
    st.caption(f"Each candidate minus the baseline: difference [95% bootstrap interval, items resampled]. A judge that is good on the old model "
               f"and poor on the new one can flip a migration verdict. Flagged when its sensitivity or specificity "
               f"differs by at least {fitness.MATERIAL:.2f} (a convention) and the difference holds up when all "
               f"these comparisons are made at once (Benjamini-Hochberg, 5% false discovery rate), with enough labels "
               f"on both models. Kappa and J are shown but not used to flag: kappa moves with the models' pass "
               f"rates, and J hides a judge that became more lenient (sensitivity up, specificity down).")
    warnings = fitness.fitness_warnings(differences)
    for w in warnings:
        st.warning(safe.md(w), icon="⚖️")
    if differences and not warnings:
        st.success("No judge's quality differs between the models beyond its interval.", icon="✅")
    if differences:
        st.dataframe(safe.rows(fitness.differences_table(differences)), hide_index=True, width="stretch",
                     height="content")
    else:
        st.caption("Needs a baseline, a candidate and labelled outputs of both.")

    st.subheader("Does a judge's bias differ between the models?")
    st.caption("Bias = judge pass rate - SME pass rate on the same labelled outputs, on the baseline and on each "
               "candidate (one row per candidate). A difference between the models (interval excluding 0) is why the "
               "calibration is fitted per model: a judge-only comparison would be off by that much.")
    for b in bias:
        if b["differs"]:
            st.warning(f"{safe.md(b['judge'])} on {safe.md(b['dimension'])}: bias {b['bias_candidate']:+.3f} on "
                       f"{safe.md(b['candidate'])} vs {b['bias_baseline']:+.3f} on {safe.md(b['baseline'])} (difference {b['bias_difference']:+.3f}, "
                       f"95% [{b['lo']:+.3f}, {b['hi']:+.3f}])")
    st.dataframe(safe.rows(tables.judge_bias_table(bias)), hide_index=True, width="stretch", height="content")

    st.subheader("Calibration curve")
    pairs = sorted({(a["judge"], a["dimension"]) for a in agreement})
    st.session_state.setdefault("judges_pick", 0)
    pick = st.selectbox("Judge and dimension", range(len(pairs)), format_func=lambda i: f"{safe.one_line(pairs[i][0])} / {safe.one_line(pairs[i][1])}",
                        key="judges_pick")
    judge, dim = pairs[pick]
    st.caption("One line per model (the baseline and every candidate with labelled outputs): the SMEs' pass rate "
               "among the outputs the judge scored in each score bin, 95% Wilson interval. A well-calibrated judge's "
               "lines rise with its score and lie on top of each other.")
    st.plotly_chart(plots.calibration_figure(_curve(db, wm, judge, dim), judge, dim), key="judges_curve")

st.subheader("Judge-judge disagreement")
st.caption("Over a uniform sample of up to 200,000 outputs, per model (the baseline and every candidate): how often "
           "two judges' pass/fail verdicts differ, and their kappa. Judges that disagree more on a candidate's outputs "
           "than on the baseline's are less to be trusted on it. Items where judges disagree are what the queue sends "
           "to SMEs first.")
st.dataframe(safe.rows(tables.judge_disagreement_table(_disagreement(db, cells.fingerprint(cur)))), hide_index=True,
             width="stretch", height="content")
