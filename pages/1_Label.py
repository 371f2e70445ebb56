"""SME labelling: one leased item, two blinded outputs side by side, a rating form. Layout only:
leasing, blinding and storing are in calib.review.queue and calib.review.labelling."""

import time

import streamlit as st

from calib import safetext as safe
from calib.data import store
from calib.review import labelling, queue, users
from calib.errors import TiebreakError
from pages.shared import keyboard, ui

st.set_page_config(page_title="Label · Tiebreak", page_icon="📝", layout="wide")
user, role = ui.require("sme", "lead", "admin")
cur = ui.cursor()
settings = store.get_settings(cur)
dims = settings["dimensions"]
ss = st.session_state
ss.setdefault("label_started", {})
ss.setdefault("label_message", None)
ss.setdefault("label_lease", None)
PROMPT_HEIGHT, OUTPUT_HEIGHT = 220, 380  # px: longer texts scroll inside, the rating form stays in view


scroll_text = ui.scroll_text  # long texts scroll inside a fixed-height box (shared with the Regressions page)


def _values(lease_id: int) -> dict:
    vals = {f"{d}:{side}": ss.get(f"label_{lease_id}_{d}_{side}") for d in dims for side in ("left", "right")}
    vals["preference"] = ss.get(f"label_{lease_id}_preference")
    return vals


def on_submit(lease_id: int, view: labelling.ItemView) -> None:
    try:
        verdicts, pref, strength = labelling.to_labels(_values(lease_id), view, dims, settings["baseline"])
        started = ss["label_started"].get(lease_id, time.time())
        queue.submit(ui.cursor(), lease_id, user, verdicts, preference=pref, strength=strength,
                     note=ss.get(f"label_{lease_id}_note") or None, duration_ms=int(1000 * (time.time() - started)),
                     left_model=view.left_model)
        ss["label_message"] = ("success", "Saved.")
        ss["label_lease"] = None
    except TiebreakError as exc:
        ss["label_message"] = ("error", str(exc))


def on_skip(lease_id: int) -> None:
    queue.skip(ui.cursor(), lease_id, user, ss.get("label_skip_reason") or "no reason given")
    ss["label_message"] = ("info", "Skipped: the item goes back to the queue for someone else.")
    ss["label_lease"] = None


def on_flag(lease_id: int) -> None:
    queue.flag(ui.cursor(), lease_id, user, ss.get("label_flag_reason") or "flagged")
    ss["label_message"] = ("info", "Flagged for a lead's review.")
    ss["label_lease"] = None


def on_undo() -> None:
    lease = labelling.undo_last(ui.cursor(), user)
    ss["label_message"] = ("info", "Re-rate your previous item: the new rating is kept, the old one stays in the history."
                           if lease else "Nothing to undo yet.")


# ---- the item, the form and progress: a fragment, so a submit re-renders only this part


@st.fragment
def labelling_area() -> None:
    cur = ui.cursor()
    lease = queue.lease_or_refill(cur, user, 20)  # concurrent first loads refill once (one at a time)
    if lease is None:
        st.success("Nothing left to label. Thank you!")
        return
    ss["label_started"].setdefault(lease.lease_id, time.time())
    view = labelling.item_view(cur, lease.item_id, user, show_judges=settings["show_judges_to_sme"],
                               candidate=lease.candidate)
    kind, text = ss["label_message"] or (None, None)
    if kind:
        getattr(st, kind)(safe.md(text))
        ss["label_message"] = None
    p = labelling.progress(cur, user)
    st.caption(f"Item {safe.md(safe.one_line(view.item_id))} · segment {safe.md(safe.one_line(view.segment))}")
    st.markdown("**Prompt**")
    scroll_text(view.prompt, PROMPT_HEIGHT)
    if view.context:
        with st.expander("Context"):
            scroll_text(view.context, OUTPUT_HEIGHT)
    if st.toggle("Show reference (Alt+R)", key="label_show_reference", disabled=not view.reference,
                 help=None if view.reference else "This item has no reference answer."):
        if view.reference:
            scroll_text(view.reference, PROMPT_HEIGHT)
    left, right = st.columns(2)
    left.markdown("**Left answer**")
    scroll_text(labelling.shown_output(view.left_output), OUTPUT_HEIGHT, left)
    right.markdown("**Right answer**")
    scroll_text(labelling.shown_output(view.right_output), OUTPUT_HEIGHT, right)
    if view.judges:
        with st.expander("Judge scores (shown because a lead switched them on)"):
            for sd in ("left", "right"):
                st.caption(safe.md(f"{sd}: " + "; ".join(f"{d}: " + ", ".join(f"{j} {v:g}" for j, v in js.items())
                                                         for d, js in view.judges[sd].items())))

    with st.form(f"label_form_{lease.lease_id}", border=True):
        for d in dims:
            c0, c1, c2 = st.columns([1, 2, 2])
            c0.markdown(f"**{safe.md(safe.one_line(d[:1].upper() + d[1:], 60))}**")
            opts = labelling.options_for(d)
            c1.radio(f"{safe.md(d)} · left", opts, index=None, horizontal=True, key=f"label_{lease.lease_id}_{d}_left",
                     label_visibility="collapsed")
            c2.radio(f"{safe.md(d)} · right", opts, index=None, horizontal=True, key=f"label_{lease.lease_id}_{d}_right",
                     label_visibility="collapsed")
        st.radio("Overall, which answer would you rather send?", labelling.PREFERENCE_SCALE, index=None,
                 horizontal=True, key=f"label_{lease.lease_id}_preference")
        st.text_input("Note (optional)", key=f"label_{lease.lease_id}_note")
        st.form_submit_button("Submit (Ctrl+Enter)", type="primary", on_click=on_submit, args=(lease.lease_id, view))

    b1, b2, b3 = st.columns(3)
    b1.selectbox("Skip reason", ["Outside my expertise", "Cannot judge without more context", "Broken or empty output",
                                 "Other"], key="label_skip_reason")
    b1.button("Skip (Alt+S)", on_click=on_skip, args=(lease.lease_id,))
    b2.text_input("Flag reason", value="Needs a lead's look", key="label_flag_reason")
    b2.button("Flag (Alt+F)", on_click=on_flag, args=(lease.lease_id,))
    b3.caption("Rated the previous item wrongly?")
    b3.button("Undo last (Alt+U)", on_click=on_undo)
    m1, m2, m3 = st.columns(3)
    m1.metric("Comparisons today", p["comparisons_today"],
              help="Pairs of answers you compared today (a re-rating after Undo counts once).")
    m2.metric("Left in queue", p["left_in_queue"])
    m3.metric("Agreement with others", "-" if p["agreement"] is None else f"{p['agreement']:.0%}",
              help=f"on {p['agreement_pairs']} overlapping verdicts")


main, side = st.columns([3, 1])
with main:
    labelling_area()
with side:
    st.markdown("**Keyboard**")
    keyboard.install(dims)
    st.markdown("**Guidelines**")
    rubric = users.guidelines(cur)
    st.markdown(safe.guidelines(rubric))
    if role in ("lead", "admin"):
        with st.expander("Edit guidelines"):
            new = st.text_area("Markdown", rubric, height=300, key="label_guidelines_text")
            if st.button("Save guidelines", key="label_guidelines_save"):
                users.save_guidelines(ui.cursor(), new, user)
                st.rerun()
