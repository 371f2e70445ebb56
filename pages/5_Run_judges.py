"""Lead/admin page: run the automated judges (or generate candidate outputs) from a TOML file, with
a live progress bar, the cost so far and a stop button. Layout only: calib.judges.run does the work."""

import time

import streamlit as st

from calib import safetext as safe
from calib.data import store
from calib.judges import batch, config as judge_config, run as judges
from calib.errors import TiebreakError
from calib.insight import tables
from pages.shared import ui

st.set_page_config(page_title="Run judges · Tiebreak", page_icon="🤖", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Run judges")
st.caption("Score every output with LLM judges through litellm (or offline judges), resumable: calls already "
           "done are skipped, failed ones are retried on the next run. Same as `tiebreak judge run`.")


@st.cache_resource
def _runs() -> dict:
    """Runs in this process by database path (a run outlives the page's reruns and sessions)."""
    return {}


db = ui.db_path()
st.session_state.setdefault("runj_config", str(store.REPO_ROOT / "data" / "judges.offline.toml"))
path = st.text_input("Judges file (TOML)", key="runj_config",
                     help="See data/judges.example.toml for every option; data/judges.offline.toml needs no API key.")
try:
    cfg = judge_config.load_config(path)
except TiebreakError as exc:
    st.error(safe.md(exc))
    st.stop()
st.dataframe(safe.rows(tables.judge_config_table(cfg.judges)), hide_index=True, width="stretch")
c1, c2, c3, c4 = st.columns(4)
limit = c1.number_input("Only the first N items (0 = all)", min_value=0, value=0, step=10, key="runj_limit")
concurrency = c2.number_input("Calls in flight", min_value=1, max_value=256, value=cfg.run.concurrency, key="runj_conc")
generate = c3.checkbox("Generate candidate outputs ([generate])", key="runj_generate", disabled=cfg.generate is None)
use_batch = c4.checkbox("Provider batch", key="runj_batch", disabled=generate,
                        help="Send the judge calls as provider batches (files + batches API): batch prices, results "
                             "usually within hours (at most 24 h). Stopping leaves the batches at the provider; "
                             "starting again collects them without submitting them again. Same as "
                             "`tiebreak judge run --batch`.")

current = _runs().get(db)
busy = current is not None and current.running
st.session_state["runj_busy"] = busy
if st.button("Start", type="primary", key="runj_start", disabled=busy):
    if use_batch and not generate:
        _runs()[db] = batch.BackgroundBatchRun(ui._connection(db), cfg, limit=int(limit) or None)
    else:
        _runs()[db] = judges.BackgroundRun(ui._connection(db), cfg, limit=int(limit) or None,
                                           concurrency=int(concurrency), generate=generate)
    st.rerun()


@st.fragment(run_every=1.0)
def live() -> None:
    run = _runs().get(db)
    if run is None:
        st.caption("No run started in this app yet.")
    else:
        p = run.progress
        st.progress(p.fraction, text=f"{p.done:,} of {p.total:,} calls ({p.skipped:,} already done, skipped)")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("OK", f"{p.ok:,}")
        m2.metric("Failed", f"{p.failed:,}")
        m3.metric("Cost so far", f"${p.cost_usd:,.4f}")
        m4.metric("Elapsed", f"{((p.finished or time.time()) - p.started):.0f} s")
        if isinstance(p, batch.BatchProgress):
            st.caption(f"Provider batches: {p.batches:,} submitted ({p.submitted:,} requests), {p.collected:,} "
                       f"collected, {p.in_flight:,} requests at the provider, {p.requeued:,} lines re-queued.")
            for n in p.notes:
                st.text(safe.clean(n))
        for f in p.last_failures:
            st.text(safe.clean(f"failed: {f}"))  # provider text is shown as plain text, never as markdown
        if p.error:
            st.error(safe.md(p.error))
        if run.running:
            if st.button("Stop", key="runj_stop"):
                run.stop()
                st.toast("Stopping after the calls in flight; results so far are kept.")
        elif p.finished:
            st.success("Finished." if not p.stopped else "Stopped: start again to go on where it stopped"
                       + (" (batches at the provider are collected, not submitted again)."
                          if isinstance(p, batch.BatchProgress) else "."))
            if st.session_state.get("runj_busy"):  # the page drew Start disabled: redraw it enabled
                st.session_state["runj_busy"] = False
                st.rerun(scope="app")
    cur = ui.cursor()
    st.subheader("Calls so far")
    calls = judges.call_summary(cur)
    if calls:
        st.dataframe(safe.rows(tables.call_summary_table(calls)), hide_index=True, width="stretch")
    else:
        st.caption("No judge calls in this project yet: press Start.")
    batches = batch.list_batches(cur)
    if batches:
        st.subheader("Provider batches")
        st.dataframe(safe.rows(tables.batch_table(batches)), hide_index=True, width="stretch")
    bias = judges.position_bias(cur)
    if bias:
        st.subheader("Pairwise judges: position bias")
        st.caption("Share of decided calls in which the judge picked the answer shown first (0.5 = no bias; each "
                   "pair is judged in both orders, so the stored preference cancels it).")
        st.dataframe(safe.rows(tables.pair_position_bias_table(bias)), hide_index=True, width="stretch")


live()
