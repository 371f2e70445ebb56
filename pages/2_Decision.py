"""Lead page: the live decision per dimension, how the interval has shrunk and will shrink, the
models side by side on quality, latency and cost, the authoritative fit, and the exports.
Layout only: every number comes from calib (engine, dashboard, plots, report)."""

import tempfile
from pathlib import Path

import streamlit as st

from calib import safetext as safe
from calib.data import cells, ingest, store
from calib.stats import engine, sequential
from calib.insight import dashboard, fitness, plan, plots, report, tables, worth
from calib.errors import TiebreakError
from calib.review import users
from pages.shared import auth, ui

st.set_page_config(page_title="Decision · Tiebreak", page_icon="🧮", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Decision")
db = ui.db_path()


@st.cache_data(ttl=600, show_spinner=False)
def _output_stats(path: str, version: str) -> list[dict]:
    """Latency, tokens and cost per model (scans every output: cached per data version)."""
    return dashboard.output_stats(ui._connection(path).cursor())


@st.cache_data(ttl=600, show_spinner=False)
def _forecast(path: str, watermark: int) -> dict:
    return engine.forecast_project(ui._connection(path).cursor(), dashboard.FORECAST_EXTRA)


@st.cache_data(ttl=600, show_spinner=False)
def _judge_transport(path: str, as_of: int) -> list[str]:
    """Judges whose quality differs between the models (calib.insight.fitness), as of the labels up
    to ``as_of`` (fitness.fitness_watermark: refreshed every 25 labels or 5%, not on every label)."""
    return fitness.fitness_warnings(fitness.fitness_differences(ui._connection(path).cursor(), max_label_id=as_of))


@st.fragment(run_every=5)
def live() -> None:
    """Refits (fast) when labels arrived since the last fit, then redraws: runs every 5 s."""
    session = auth.recheck("lead", "admin")  # a fragment rerun skips the page's sign-in gate
    cur = ui.cursor()
    steps = dashboard.next_steps(cur)
    if steps is not None:  # no label yet: what to do, not a prior-only fit's cards and charts
        st.info("No SME labels yet, so there is no decision to show. Next:\n"
                + "\n".join(f"{k}. {step}" for k, step in enumerate(steps, 1)))
        return
    try:
        fit = dashboard.refresh(cur, session=session)
    except TiebreakError as exc:  # e.g. an empty project: say what is missing
        st.info(safe.md(exc))
        return
    if fit is None:
        st.info("No labels and no fit yet.")
        return
    settings = store.get_settings(cur)
    comparison = dashboard.with_pass_rates(_output_stats(db, cells.fingerprint(cur)), fit)
    colours = {"sign off": "green", "do not sign off": "red", "label more": "orange"}
    cands = fit.get("candidates") or []
    many = len(cands) > 1  # several candidates: a recommendation and a row of cards per candidate
    signs = (dashboard.signoff_by_candidate(fit, comparison, settings) if many
             else {None: dashboard.signoff(fit, comparison, settings)})
    if many:
        st.markdown("### Recommendation per candidate")
    for c, sign in signs.items():
        head = f"**{safe.md(safe.one_line(c, 60))}**: " if c else "### Recommendation: "
        st.markdown(head + f":{colours[sign['recommendation']]}[{sign['recommendation'].upper()}]")
        for line in sign["blockers"] or sign["pending"]:  # why, in one line each
            st.caption(safe.md(line))
    rows = fit.get("n_label_rows")
    need = fit.get("decide_prob_per_candidate", fit["decide_prob"])
    st.caption(f"{'NUTS' if fit['kind'] == 'nuts' else 'Fast'} fit on {fit['n_labels']:,} labelled items"
               + (f" ({rows:,} label rows)" if rows is not None else "")
               + f"; {engine.interval_words(fit)}; margin {100 * fit['margin']:g} percentage points; "
               f"a decision needs P >= {need:.4g}"
               + (f" ({len(cands)} candidates compared at once: {fit['decide_prob']:g} adjusted by Bonferroni, "
                  f"1 - (1 - {fit['decide_prob']:g}) / {len(cands)})" if many else "")
               + ". Refreshes every 5 s; refits (fast) when labels arrive.")
    st.caption(safe.md(sequential.rule_caption(fit)))  # which interval decides, and what watching it costs
    for c in cands if many else [None]:
        cards = [d for d in fit["diffs"] + [p for p in fit.get("preference", []) if "decision" in p]
                 if c is None or d["candidate"] == c]
        if c is not None:
            st.markdown(f"**{safe.md(safe.one_line(c, 60))}** vs the baseline")
        cols = st.columns(max(1, min(len(cards), 4)))
        for k, d in enumerate(cards):
            col = cols[k % len(cols)]
            pair = d in fit.get("preference", [])
            name = ("Side by side: " if pair else "") + safe.one_line(d["dimension"], 60)
            col.metric(safe.md(name), safe.md(d["decision"].upper()), tables.card_delta(d, pair), delta_color="off",
                       delta_arrow="off", border=True)
            basis = sequential.row_basis(d, fit, pair)
            col.caption(f"P(not worse by more than {100 * fit['margin']:g} pp) = {d['p_noninferior']:.3f}"
                        + (f" · {safe.md(basis)}" if basis else "")
                        + (f" · {safe.md(d['note'])}" if d.get("note") else ""))
    if many and fit.get("p_best"):
        st.markdown("**Which model is best?** Posterior probability of the highest pass rate, per dimension")
        st.dataframe(safe.rows(dashboard.p_best_rows(fit)), hide_index=True, width="stretch", height="content")
    as_of, n_as_of = fitness.fitness_watermark(cur)
    transport = _judge_transport(db, as_of)
    if transport:  # one box, one line per judge and dimension, under the recommendation and its cards
        st.warning(f"A judge's quality differs between the models (see the Judges page; judge fitness as of "
                   f"{n_as_of:,} labels):\n" + "\n".join(f"- {safe.md(w)}" for w in transport), icon="⚖️")
    for w in fit["warnings"]:
        st.warning(safe.md(w))

    forecasts = fit.get("forecasts") or _forecast(db, engine.label_watermark(cur))["forecasts"]
    fc = {(f["dimension"], f.get("candidate")): f for f in forecasts}
    history = engine.fits_history(cur)
    for i, d in enumerate(fit["diffs"]):
        c = d["candidate"] if many else None
        left, right = st.columns(2)
        f = fc.get((d["dimension"], d["candidate"]))
        left.plotly_chart(plots.shrinkage_figure(history, d["dimension"], f, fit["margin"], candidate=c),
                          key=f"decision_shrink_{i}")
        right.plotly_chart(plots.forest_figure(fit.get("segment_diffs", []), d["dimension"], fit["margin"], candidate=c),
                           key=f"decision_forest_{i}")
        if f:
            need = f["labels_for_target_width"]
            left.caption(f"Forecast: width {f['width_now']:.3f} now; "
                         + ("the target width {:g} is reached; ".format(f["target_width"]) if need == 0 else
                            f"about {need:,} more labelled items reach the target width {f['target_width']:g}; "
                            if need is not None else f"the target width {f['target_width']:g} is out of reach; ")
                         + "chance of a decision after " + ", ".join(
                             f"{s['extra']} more: {s['p_decision']:.0%}" for s in f["steps"][:4]))

    st.subheader("Quality, latency and cost")
    st.dataframe(safe.rows(tables.comparison_table(comparison, settings["dimensions"])), hide_index=True,
                 width="stretch", height="content")
    lat, cost = settings["signoff_max_p95_latency_ms"], settings["signoff_max_cost_per_1k_usd"]
    st.caption(f"Pass rates are population estimates with their {engine.interval_words(fit)}; latency and cost come from the "
               "outputs' recorded figures. Sign-off thresholds for the candidate (Admin page, Settings): p95 latency "
               + (f"at most {lat:,.0f} ms" if lat else "no limit") + ", cost per 1,000 requests "
               + (f"at most \\${cost:,.2f}" if cost else "no limit") + ".")
    if fit.get("preference"):
        st.subheader("Pairwise win rate of the candidate" + ("s" if many else ""))
        st.dataframe(safe.rows(tables.preference_table(fit["preference"])), hide_index=True, width="stretch",
                     height="content")
    st.subheader("Cross-checks")
    st.dataframe(safe.rows(tables.crosscheck_table(fit["cross_checks"], with_note=False)), hide_index=True,
                 width="stretch", height="content")
    st.caption(safe.md(" · ".join(tables.crosscheck_notes(fit["cross_checks"]))))
    worth_rows = worth.judges_worth(fit)
    if worth_rows:
        st.subheader("What the judges are worth")
        st.dataframe(safe.rows(tables.worth_table(worth_rows)), hide_index=True, width="stretch", height="content")
        st.caption("The same labels give the interval that many labels would give without judges (human-only): "
                   "x1 means the judges add nothing; the interval is conservative.")


live()


def plan_panel() -> None:
    """Plan a budget (calib.insight.plan, as `tiebreak plan`): the cost-optimal judged items and
    labels for a budget or a target width, against all labels and judging every item."""
    st.subheader("Plan a budget")
    cur = ui.cursor()
    goal = st.radio("Plan for", ["a budget", "a target width"], horizontal=True, key="decision_plan_goal")
    c1, c2, c3 = st.columns(3)
    budget = c1.number_input("Budget still to spend (USD)", min_value=0.0, value=100.0, step=10.0,
                             key="decision_plan_budget", disabled=goal != "a budget")
    width = c1.number_input("Target width of every Delta (percentage points)", min_value=0.0, value=5.0, step=0.5,
                            key="decision_plan_width", disabled=goal == "a budget")
    sme = c2.number_input("SME cost per label (USD; 0: the setting, else the measured rating time)", min_value=0.0,
                          value=0.0, step=0.25, key="decision_plan_sme")
    model = c2.text_input("Judge model for judges with no measured calls (litellm's price map)",
                          value="gpt-4o-mini" if plan.needs_judge_model(cur) else "", key="decision_plan_model")
    batch = c3.checkbox(f"Provider batch price (x{plan.BATCH_DISCOUNT:g})", key="decision_plan_batch")
    scratch = c3.checkbox("From scratch", key="decision_plan_scratch",
                          help="Plan a new month of this traffic with nothing judged or labelled yet, from this "
                               "project's variances (else what is already judged and labelled is sunk).")
    if st.button("Plan", key="decision_plan_go"):
        try:
            st.session_state["decision_plan_result"] = plan.plan_project(
                cur, budget=budget if goal == "a budget" else None,
                target_width=width / 100.0 if goal != "a budget" else None,
                sme_cost_per_label=sme or None, batch=batch, judge_model=model.strip() or None, from_scratch=scratch)
            st.session_state["decision_plan_error"] = None
        except TiebreakError as exc:
            st.session_state["decision_plan_result"], st.session_state["decision_plan_error"] = None, str(exc)
    if st.session_state.get("decision_plan_error"):
        st.info(safe.md(st.session_state["decision_plan_error"]))
    res = st.session_state.get("decision_plan_result")
    if not res:
        return
    st.dataframe(safe.rows(plan.plan_rows(res)), hide_index=True, width="stretch", height="content")
    p = res.get("plan")
    if p:
        st.caption(f"Plan: judge {p['judged_items']:,} items ({p['judge_calls']:,} judge calls) and label "
                   f"{p['labelled_items']:,} items per candidate; still to buy: {p['judge_calls_to_buy']:,} judge calls "
                   f"and {p['labels_to_buy']:,} labels, \\${p['cost_usd']:,.2f}. Expected width "
                   f"{100 * p['width']:.1f} pp on {safe.md(safe.one_line(plan.quantity_label(**p['binding']), 120))}"
                   ", the widest interval planned"
                   + (f"; chance of a decision {p['p_decision']:.0%}." if p.get("p_decision") is not None else "."))
    c = res["costs"]
    st.caption(f"A judged item \\${c['judged_item_usd']:,.4f} ({c['calls_per_judged_item']} calls), an SME label "
               f"\\${c['label_usd']:,.2f}. " + " · ".join(safe.md(safe.one_line(s, 200)) for s in c["sources"]))
    st.caption("From the latest fit: each Delta's (and win rate's) human-only interval gives the SME verdicts' variance, "
               "Tiebreak's the residual variance the judges leave; what is already judged and labelled is sunk. "
               + " ".join(safe.md(safe.one_line(n, 300)) for n in res.get("notes", [])))


plan_panel()

st.subheader("Authoritative fit (NUTS)")
run = dashboard.nuts_run(ui.cursor())
st.session_state["decision_nuts_busy"] = bool(run and run.running)
c1, c2 = st.columns([1, 3])
if c1.button("Run NUTS in the background", key="decision_nuts", disabled=st.session_state["decision_nuts_busy"]):
    dashboard.start_nuts(ui._connection(db))  # one per database: another session's running fit is kept
    st.rerun()


@st.fragment(run_every=2)
def nuts_status() -> None:
    auth.recheck("lead", "admin")
    run = dashboard.nuts_run(ui.cursor())
    if run is not None and run.running:
        st.info("NUTS is running in the background, one fit at a time for everyone (about 5 s warm, 25 s the "
                "first time or after 5 idle minutes, when its worker process starts); this page stays usable.")
    elif run is not None and run.error:
        st.error(f"NUTS failed: {safe.md(run.error)}")
    if run is not None and not run.running and st.session_state.get("decision_nuts_busy"):
        st.session_state["decision_nuts_busy"] = False  # finished: redraw the page (button, verdicts)
        st.rerun(scope="app")
    last = engine.latest_fit(ui.cursor(), kind="nuts")
    if last is None:
        st.caption("No NUTS fit yet.")
        return
    st.caption(f"Latest NUTS fit: {last['n_labels']:,} labelled items, {last.get('seconds', 0):.1f} s. "
               "Converged when R-hat < 1.01, bulk ESS > 400 and no divergences.")
    st.dataframe(safe.rows(tables.convergence_table(last)), hide_index=True, width="stretch", height="content")


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
    out["fits.csv"] = tables.fits_history_csv(engine.fits_history(cur))  # formula-like text quoted
    return out


def _export_file(name: str, session: users.Session):
    """The file behind a download button, made on the click (Streamlit's deferred download), and
    only while the page's session is still a lead's or an admin's: no file (and so no media URL)
    exists before a click, and a revoked page's click gets nothing."""
    con = ui._connection(db)  # resolved now, in the script's thread: the click runs on another

    def make() -> bytes:
        cur = con.cursor()
        users.require_session(cur, session, users.LEADS)
        return _exports(db, engine.label_watermark(cur), cur.execute("SELECT count(*) FROM fits").fetchone()[0])[name]

    return make


def _checked(data, session: users.Session):
    """Bytes made already (the report), handed out on a click only while the session is a lead's."""
    con = ui._connection(db)

    def make():
        users.require_session(con.cursor(), session, users.LEADS)
        return data

    return make


with st.expander("Exports"):
    cur = ui.cursor()
    me = auth.session()
    st.download_button("Labels (csv)", _export_file("labels.csv", me), file_name="tiebreak-labels.csv",
                       mime="text/csv", key="decision_dl_labels.csv", on_click="ignore")
    st.download_button("Labels (parquet)", _export_file("labels.parquet", me), file_name="tiebreak-labels.parquet",
                       mime="application/octet-stream", key="decision_dl_labels.parquet", on_click="ignore")
    st.download_button("Fits history (csv)", _export_file("fits.csv", me), file_name="tiebreak-fits.csv",
                       mime="text/csv", key="decision_dl_fits", on_click="ignore")
    nuts = engine.latest_fit(cur, kind="nuts")
    source = st.radio("Report on", ["the latest fit (fast, refitted when labels arrived)", "the latest NUTS fit"]
                      if nuts else ["the latest fit (fast, refitted when labels arrived)"], key="decision_report_fit",
                      help="The NUTS fit is the authoritative one; the report says when labels arrived after it.")
    if st.button("Build the sign-off report", key="decision_build_report"):
        with st.spinner("Building the report ..."):
            st.session_state["decision_report"] = report.build_report(
                ui.cursor(), nuts if nuts and "NUTS" in source else None, db_label=db)
    if st.session_state.get("decision_report"):
        st.download_button("Sign-off report (HTML)", _checked(st.session_state["decision_report"], me),
                           file_name="tiebreak-report.html", mime="text/html", key="decision_dl_report",
                           on_click="ignore")
