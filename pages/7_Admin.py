"""Admin: users, project settings, imports by upload and sign-in locks, while the app runs.

Admins manage users; leads and admins change settings, import files and lift lockouts. Imports
call the CLI's functions (``calib.data.ingest.import_file`` / ``import_labels``) after reading the file in a
memory-capped child process (``calib.data.importjob``): one
transaction, the same one-line errors, nothing stored on error. Layout only.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

from calib import safetext
from calib.data import evalformats, importjob, store
from calib.errors import TiebreakError
from calib.insight import tables
from calib.review import sso, users
from pages.shared import ui

st.set_page_config(page_title="Admin · Tiebreak", page_icon="🛠️", layout="wide")
user, role = ui.require("lead", "admin")
st.title("Admin")
st.caption("Users, project settings, imports and sign-in locks: everything the CLI does to a project, "
           "without stopping the app.")
is_admin = role == "admin"


def _fail(exc: Exception) -> None:
    st.error(safetext.md(str(exc)))


tab_users, tab_settings, tab_imports, tab_locks, tab_log = st.tabs(
    ["👥 Users", "⚙️ Settings", "📥 Imports", "🔒 Sign-in waits", "📜 Log"])

# --------------------------------------------------------------------------- users
with tab_users:
    if "admin_flash" in st.session_state:
        st.success(safetext.md(st.session_state.pop("admin_flash")))
    people = users.list_users(ui.cursor())
    mails = sso.emails(ui.cursor())
    people = [{**u, "email": mails.get(u["name"], "")} for u in people]  # what single sign-on matches
    if people:
        st.dataframe(safetext.rows(tables.users_table(people)), hide_index=True, width="stretch")
    else:
        st.info("No users yet: everyone acts as a local admin until the first user is added.")
    from pages.shared import sso as sso_page

    offer = sso_page.offer()  # from .streamlit/secrets.toml
    st.caption(("Single sign-on: " + ", ".join(safetext.md(p.label) for p in offer.providers)
                + " (users are matched by e-mail)" if offer.sso else "Single sign-on: off")
               + ("; password sign-in: on." if offer.password else "; password sign-in: off."))
    if offer.warning:
        st.warning(safetext.md(offer.warning))
    if not is_admin:
        st.caption("Only admins add or change users; leads can lift sign-in locks (next tabs).")
    else:
        st.subheader("Add a user")
        with st.form("admin_add_user", clear_on_submit=True):
            c1, c2, c3, c4 = st.columns(4)
            name = c1.text_input("User name", key="admin_new_name")
            new_role = c2.selectbox("Role", users.ROLES, key="admin_new_role")
            password = c3.text_input("Initial password (8+ characters)", type="password", key="admin_new_pw",
                                     help="Empty: the user signs in by single sign-on only (give the e-mail).")
            email = c4.text_input("E-mail (for single sign-on)", key="admin_new_email")
            if st.form_submit_button("➕ Add user", type="primary"):
                try:
                    if email.strip():
                        sso.add_user(ui.cursor(), name.strip(), new_role, password, email, actor=user, replace=False)
                    else:
                        users.add_user(ui.cursor(), name.strip(), new_role, password, actor=user, replace=False)
                except TiebreakError as exc:
                    _fail(exc)
                else:
                    st.session_state["admin_flash"] = f"User {name.strip()} ({new_role}) added."
                    st.rerun()
        if people:
            st.subheader("Change a user")
            names = [u["name"] for u in people]
            who = st.selectbox("User", names, key="admin_who", format_func=safetext.one_line)
            current = next(u for u in people if u["name"] == who)
            c1, c2, c3 = st.columns(3)
            with c1:
                r = st.selectbox("Role", users.ROLES, index=users.ROLES.index(current["role"]), key="admin_role")
                if st.button("Save role", key="admin_save_role", disabled=r == current["role"]):
                    try:
                        users.set_role(ui.cursor(), who, r, actor=user)
                        st.rerun()
                    except TiebreakError as exc:
                        _fail(exc)
            with c2:
                pw = st.text_input("New password", type="password", key="admin_reset_pw")
                if st.button("Reset password", key="admin_reset"):
                    try:
                        users.reset_password(ui.cursor(), who, pw, actor=user)
                        st.success("Password reset; the user's sessions were ended and any lock lifted.")
                    except TiebreakError as exc:
                        _fail(exc)
            with c3:
                if current["active"]:
                    if st.button("⛔ Deactivate", key="admin_deactivate"):
                        try:
                            users.set_active(ui.cursor(), who, False, actor=user)
                            st.rerun()
                        except TiebreakError as exc:
                            _fail(exc)
                elif st.button("✅ Reactivate", key="admin_reactivate"):
                    users.set_active(ui.cursor(), who, True, actor=user)
                    st.rerun()
                if st.button("Sign out everywhere", key="admin_end_sessions"):
                    users.end_sessions(ui.cursor(), who, actor=user)
                    st.success("Every session of this user was ended.")
            with st.form("admin_set_email"):
                c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
                mail = c1.text_input("E-mail single sign-on matches this user by (empty: none)",
                                     value=current["email"], key=f"admin_email_{who}")
                if c2.form_submit_button("Save e-mail"):
                    try:
                        saved = sso.set_email(ui.cursor(), who, mail, actor=user)
                    except TiebreakError as exc:
                        _fail(exc)
                    else:
                        st.session_state["admin_flash"] = f"{who}: e-mail {saved or 'removed'}."
                        st.rerun()

# --------------------------------------------------------------------------- settings
with tab_settings:
    cur = ui.cursor()
    settings = store.get_settings(cur)
    present_models = store.models(cur)
    present_dims = sorted({r[0] for r in cur.execute("SELECT DISTINCT dimension FROM judge_scores").fetchall()}
                          | set(settings["dimensions"]))
    with st.form("admin_settings"):
        new: dict = {}
        c1, c2 = st.columns(2)
        with c1:
            models = sorted(set(present_models) | {m for m in [settings["baseline"], *settings["candidates"]] if m})
            new["baseline"] = st.selectbox(
                "Baseline (production model)", models, key="admin_set_baseline", format_func=safetext.one_line,
                index=models.index(settings["baseline"]) if settings["baseline"] in models else None)
            new["candidates"] = st.multiselect("Candidate models", models, default=settings["candidates"],
                                               key="admin_set_candidates", format_func=safetext.one_line)
            new["dimensions"] = st.multiselect("Dimensions SMEs rate", present_dims, default=settings["dimensions"],
                                               key="admin_set_dimensions", format_func=safetext.one_line)
            new["show_judges_to_sme"] = st.checkbox("Show judge scores to SMEs", settings["show_judges_to_sme"],
                                                    key="admin_set_show_judges")
            new["demo_mode"] = st.checkbox("Demo mode", settings["demo_mode"], key="admin_set_demo_mode")
            modes = list(store.SETTING_CHOICES["signoff_mode"])
            new["signoff_mode"] = st.selectbox(
                "Sign-off mode", modes, key="admin_set_signoff_mode",
                index=modes.index(settings["signoff_mode"]) if settings["signoff_mode"] in modes else 0,
                help="anytime: a confidence sequence, valid however often the Decision page is watched (wider); "
                     "fixed: the one-look interval, valid only at a number of labels chosen in advance")
        right = [("margin", "Non-inferiority margin", 0.0, 1.0), ("decide_prob", "Probability for a decision", 0.5, 1.0),
                 ("interval", "Credible interval mass", 0.5, 0.999), ("target_width", "Target interval width", 0.0, 2.0),
                 ("random_share", "Share of the queue drawn at random", 0.0, 1.0),
                 ("overlap_share", "Share served to a second SME", 0.0, 1.0)]
        left = [("signoff_max_p95_latency_ms", "Sign-off: max p95 latency, ms (0 = none)", 0.0, 1e9),
                ("signoff_max_cost_per_1k_usd", "Sign-off: max cost per 1,000 requests, $ (0 = none)", 0.0, 1e9),
                ("demo_pace", "Demo pace, items per second", 0.01, 100.0)]
        for col, floats in ((c1, left), (c2, right)):
            with col:
                for key, label, lo, hi in floats:
                    v = float(settings[key])  # a value set elsewhere (CLI) outside the usual range stays shown
                    new[key] = st.number_input(label, min_value=min(lo, v), max_value=max(hi, v), value=v,
                                               format="%.4g", key=f"admin_set_{key}")
        with c2:
            for key, label in (("lease_minutes", "Lease minutes"), ("min_decision_items", "Fewest items for a decision"),
                               ("anytime_target_items", "Anytime-valid bound tightest at (items)")):
                v = int(settings[key])
                new[key] = int(st.number_input(label, min_value=min(1, v), max_value=max(100_000, v), value=v,
                                               step=1, key=f"admin_set_{key}"))
        if st.form_submit_button("💾 Save settings", type="primary"):
            changed = {k: v for k, v in new.items() if v != settings[k]}
            if changed.get("baseline", settings["baseline"]) in changed.get("candidates", settings["candidates"]):
                st.error("The baseline cannot also be a candidate.")
            elif changed:
                c = ui.cursor()
                try:
                    with store.transaction(c):
                        store.set_settings(c, **changed)
                        for k, v in changed.items():
                            users.audit(c, user, "setting changed", f"{k} = {v!r}")
                except TiebreakError as exc:
                    _fail(exc)
                else:
                    st.cache_data.clear()
                    st.success("Saved: " + safetext.md(", ".join(sorted(changed))))
            else:
                st.info("Nothing changed.")

# --------------------------------------------------------------------------- imports
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")

with tab_imports:
    st.caption("The same checks as `tiebreak import` and `tiebreak labels import`: one transaction; the first "
               "bad row is named and nothing from the file is stored. Labelling goes on meanwhile. The file is "
               "read in a separate process with a memory cap; uploads are capped by `server.maxUploadSize` "
               "(bigger files: `tiebreak import` with the app stopped).")
    kind = st.radio("What the file holds", ["Outputs with judge scores, or pairwise judge preferences",
                                            "SME labels (pointwise and/or pairwise)"], key="admin_import_kind")
    outputs = kind.startswith("Outputs")
    up = st.file_uploader("File (.csv, .jsonl or .parquet; or a promptfoo, Inspect AI (.eval/.json) or DeepEval "
                          "results file)", type=["csv", "jsonl", "ndjson", "json", "parquet", "pq", "eval"],
                          key="admin_import_file")
    extra: dict = {}
    if outputs:
        baseline = st.text_input("Baseline model (optional; default: kept, or the first model in the file)",
                                 key="admin_import_baseline")
        extra["allow_new"] = st.checkbox("Allow new models, judges or dimensions (otherwise refused, as a likely typo)",
                                          key="admin_import_allow_new")
        named = st.text_input("Models to add although their names differ only in case, '-'/'_' or spaces "
                              "(comma-separated; otherwise such a file is refused)", key="admin_import_add_models")
        if named.strip():
            extra["add_model"] = [m.strip() for m in named.split(",") if m.strip()]
        if st.checkbox("Only some items carry judge scores, and they were drawn uniformly at random "
                       "(`--judged-sample uniform`; otherwise such a file needs an inclusion_prob column)",
                       key="admin_import_judged_uniform"):
            extra["judged_sample"] = "uniform"
    else:
        source = st.text_input("Source recorded with each label", value="import", key="admin_import_source")
    if st.button("📥 Import", key="admin_import_go", type="primary", disabled=up is None):
        fname = _SAFE_NAME.sub("_", Path(up.name).name).strip() or "upload"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / fname
            path.write_bytes(up.getvalue())
            c = ui.cursor()
            try:
                mapping = ""
                if outputs and evalformats.detect(path):  # another eval tool's file: reshaped, same importer
                    conv, report = evalformats.import_eval_file(c, path, baseline=baseline.strip() or None, **extra)
                    mapping = conv.summary() + "\n"
                elif outputs:
                    # read in a separate, memory-capped process first: a hostile file fails only that process
                    report = importjob.import_isolated(c, path, baseline=baseline.strip() or None, **extra)
                else:
                    report = importjob.import_isolated(c, path, labels=True, source=source.strip() or "import")
            except TiebreakError as exc:
                st.session_state["admin_import_result"] = ("error", str(exc).replace(tmp + "/", ""))
            else:
                users.audit(c, user, "imported", f"{fname}: {report.kind}, {report.rows} rows")
                st.cache_data.clear()
                st.session_state["admin_import_result"] = ("ok", (mapping + report.summary()).replace(tmp + "/", ""))
    result = st.session_state.get("admin_import_result")
    if result:
        (st.error if result[0] == "error" else st.success)(safetext.md(result[1]))

# --------------------------------------------------------------------------- sign-in locks
with tab_locks:
    rows = users.throttled(ui.cursor())
    st.caption("Failed sign-ins slow down the user name and the address they came from; every wait runs out "
               "(15 minutes at most) and no account is ever locked. A user name's wait holds only for the "
               "addresses that failed for it. Clear a wait here, or while the app runs with "
               "`tiebreak users unlock NAME` on the server.")
    if not rows:
        st.info("No failed sign-ins waiting: nobody is slowed down.")
    elif len(rows) > 100:
        st.warning(f"{len(rows)} user names or addresses with failed sign-ins; the 100 with the longest waits "
                   "are listed.")
    rows.sort(key=lambda r: (-r["wait_seconds"], r["scope"] != "user", r["key"]))
    for r in rows[:100]:
        c1, c2 = st.columns([4, 1])
        what = f"waits {r['wait_seconds']:.0f} s" if r["wait_seconds"] else "counting"
        c1.text(f"{r['scope']} {safetext.one_line(r['key'])}: {r['failures']} failed sign-ins, {what}")
        if c2.button("🔓 Clear", key=f"admin_unlock_{r['scope']}_{r['key']}"):
            users.unlock(ui.cursor(), r["key"], actor=user, scope=r["scope"])
            st.rerun()
    if is_admin:
        st.divider()
        st.caption("Signs every user out (for instance after a session cookie leaked): a new signing key.")
        if st.button("Sign everyone out", key="admin_rotate_key"):
            users.rotate_session_key(ui.cursor(), actor=user)
            st.rerun()

# --------------------------------------------------------------------------- log
with tab_log:
    log = users.audit_log(ui.cursor(), 200)
    if log:
        st.dataframe(safetext.rows(tables.audit_table(log)), hide_index=True, width="stretch")
    else:
        st.caption("Nothing yet: user changes, settings, imports and unlocks are logged here.")
