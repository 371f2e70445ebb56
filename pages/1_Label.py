"""SME labelling: one leased item, two blinded outputs side by side, a rating form. Layout only:
leasing, blinding and storing are in calib.review.queue and calib.review.labelling."""

import time

import streamlit as st

from calib import safetext as safe
from calib.data import store
from calib.review import drafts, labelling, queue, users
from calib.errors import TiebreakError
from pages.shared import auth, keyboard, ui

st.set_page_config(page_title="Label · Tiebreak", page_icon="📝", layout="wide")
user, role = ui.require("sme", "lead", "admin")
cur = ui.cursor()
settings = store.get_settings(cur)
dims = settings["dimensions"]
ss = st.session_state
ss.setdefault("label_started", {})
ss.setdefault("label_message", None)
ss.setdefault("label_lease", None)
ss.setdefault("label_done", set())  # leases this session submitted, skipped or flagged
PROMPT_HEIGHT, OUTPUT_HEIGHT = 220, 380  # px: longer texts scroll inside, the rating form stays in view


scroll_text = ui.scroll_text  # long texts scroll inside a fixed-height box (shared with the Regressions page)


def _values(lease_id: int) -> dict:
    vals = {f"{d}:{side}": ss.get(f"label_{lease_id}_{d}_{side}") for d in dims for side in ("left", "right")}
    vals["preference"] = ss.get(f"label_{lease_id}_preference")
    return vals


def save_draft(lease: queue.Lease) -> None:
    """"Keep answers for later" (pressed by the keyboard script a moment after each change): the
    answers in progress go to the database, so a reload or a new tab shows them again."""
    if lease.lease_id not in ss["label_done"]:
        drafts.save_draft(ui.cursor(), user, lease.item_id, lease.candidate,
                          {**_values(lease.lease_id), "note": ss.get(f"label_{lease.lease_id}_note")}, lease.lease_id)


def on_submit(lease: queue.Lease, view: labelling.ItemView) -> None:
    lease_id = lease.lease_id
    if lease_id in ss["label_done"]:
        return  # a click Streamlit delivered again after an interrupted rerun: already saved
    try:
        verdicts, pref, strength = labelling.to_labels(_values(lease_id), view, dims, settings["baseline"])
        started = ss["label_started"].get(lease_id, time.time())
        queue.submit(ui.cursor(), lease_id, user, verdicts, preference=pref, strength=strength,
                     note=ss.get(f"label_{lease_id}_note") or None, duration_ms=int(1000 * (time.time() - started)),
                     left_model=view.left_model, session=auth.session())
        ss["label_done"].add(lease_id)
        drafts.clear_draft(ui.cursor(), user, lease.item_id, lease.candidate)
        ss["label_message"] = ("success", "Saved.")
        ss["label_lease"] = None
    except TiebreakError as exc:
        ss["label_message"] = ("error", str(exc))


def on_skip(lease: queue.Lease) -> None:
    if lease.lease_id in ss["label_done"]:
        return
    try:
        queue.skip(ui.cursor(), lease.lease_id, user, ss.get("label_skip_reason") or "no reason given",
                   session=auth.session())
    except users.SessionEnded:
        return  # the fragment's recheck shows the sign-in form
    ss["label_done"].add(lease.lease_id)
    drafts.clear_draft(ui.cursor(), user, lease.item_id, lease.candidate)
    ss["label_message"] = ("info", "Skipped: the item goes back to the queue for someone else.")
    ss["label_lease"] = None


def on_flag(lease: queue.Lease) -> None:
    if lease.lease_id in ss["label_done"]:
        return
    try:
        queue.flag(ui.cursor(), lease.lease_id, user, ss.get("label_flag_reason") or "flagged", session=auth.session())
    except users.SessionEnded:
        return  # the fragment's recheck shows the sign-in form
    ss["label_done"].add(lease.lease_id)
    drafts.clear_draft(ui.cursor(), user, lease.item_id, lease.candidate)
    ss["label_message"] = ("info", "Flagged for a lead's review.")
    ss["label_lease"] = None


def on_undo() -> None:
    try:
        lease = labelling.undo_last(ui.cursor(), user, session=auth.session())
    except users.SessionEnded:
        return  # the fragment's recheck shows the sign-in form
    ss["label_message"] = ("info", "Re-rate your previous item: the new rating is kept, the old one stays in the history."
                           if lease else "Nothing to undo yet.")


# ---- the item, the form and progress: a fragment, so a submit re-renders only this part


@st.fragment
def labelling_area() -> None:
    session = auth.recheck("sme", "lead", "admin")  # a fragment rerun skips the page's sign-in gate
    cur = ui.cursor()
    lease = queue.lease_or_refill(cur, user, 20, session=session)  # concurrent first loads refill once
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

    # The rating is a form (no rerun per click: quick keyboard raters lose nothing). Answers in
    # progress are saved as a draft by the form's second button, which the keyboard script presses
    # a moment after the last change (and when the tab is hidden); the draft read the first time
    # this session shows the unit gives the defaults, fixed for the session so the widgets keep
    # their identity.
    draft = ss.setdefault(f"label_draft_{lease.lease_id}", drafts.load_draft(cur, user, lease.item_id, lease.candidate))

    def pick(opts: list[str], key: str) -> int | None:
        return opts.index(draft[key]) if draft.get(key) in opts else None

    with st.form(f"label_form_{lease.lease_id}", border=True):
        for d in dims:
            c0, c1, c2 = st.columns([1, 2, 2])
            c0.markdown(f"**{safe.md(safe.one_line(d[:1].upper() + d[1:], 60))}**")
            opts = labelling.options_for(d)
            c1.radio(f"{safe.md(d)} · left", opts, index=pick(opts, f"{d}:left"), horizontal=True,
                     key=f"label_{lease.lease_id}_{d}_left", label_visibility="collapsed")
            c2.radio(f"{safe.md(d)} · right", opts, index=pick(opts, f"{d}:right"), horizontal=True,
                     key=f"label_{lease.lease_id}_{d}_right", label_visibility="collapsed")
        st.radio("Overall, which answer would you rather send?", labelling.PREFERENCE_SCALE,
                 index=pick(labelling.PREFERENCE_SCALE, "preference"), horizontal=True,
                 key=f"label_{lease.lease_id}_preference")
        st.text_input("Note (optional)", value=draft.get("note", ""), key=f"label_{lease.lease_id}_note")
        if draft:
            st.caption("Your answers in progress on this item were kept.")
        f1, f2 = st.columns([1, 3])
        f1.form_submit_button("Submit (Ctrl+Enter)", type="primary", on_click=on_submit, args=(lease, view))
        f2.form_submit_button(keyboard.SAVE_LABEL, on_click=save_draft, args=(lease,),
                              help="Answers in progress are also kept automatically a moment after each change: "
                                   "a reload or a new tab shows them again.")

    b1, b2, b3 = st.columns(3)
    b1.selectbox("Skip reason", ["Outside my expertise", "Cannot judge without more context", "Broken or empty output",
                                 "Other"], key="label_skip_reason")
    b1.button("Skip (Alt+S)", on_click=on_skip, args=(lease,))
    b2.text_input("Flag reason", value="Needs a lead's look", key="label_flag_reason")
    b2.button("Flag (Alt+F)", on_click=on_flag, args=(lease,))
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
