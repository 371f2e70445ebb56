"""Streamlit plumbing shared by the pages: the one DuckDB connection per process, cursors, args.

Streamlit ignores Python files in sub-folders of ``pages/``, so this module is not a page. It holds
no computation: pages call ``calib`` for every number they show.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb  # noqa: E402
import streamlit as st  # noqa: E402

from calib.data import demo, store  # noqa: E402
from calib.errors import TiebreakError  # noqa: E402
from calib.safetext import md  # noqa: E402


def db_path() -> str:
    """``streamlit run app.py -- --db FILE``, else $TIEBREAK_DB, else the bundled demo database."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return str(store.resolve_db(args.db))


@st.cache_resource(show_spinner="Opening the database ...")
def _connection(path: str) -> duckdb.DuckDBPyConnection:
    return demo.open_db(path)


@st.cache_data(ttl=30, show_spinner=False)
def cached_status(path: str) -> dict:
    """Project counts (read-only; cached 30 s: counting millions of rows on every rerun is waste)."""
    return store.status(_connection(path).cursor())


@st.cache_data(ttl=30, show_spinner=False)
def cached_disagreements(path: str, n: int) -> list[dict]:
    from calib.review import queue

    return queue.top_disagreements(_connection(path).cursor(), n)


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh cursor on the process-wide connection (never share one cursor across threads)."""
    try:
        return _connection(db_path()).cursor()
    except TiebreakError as exc:
        st.error(md(exc))
        st.stop()


def scroll_text(text: str, max_height: int, where=st) -> None:
    """Untrusted text as plain text (``st.code``; bidi controls made visible), in a box of at most
    ``max_height`` px that scrolls when the text is longer (a 50 KB output must not push the rest
    of the page out of sight)."""
    from calib.safetext import clean

    text = clean(text)
    lines = sum(1 + len(line) // 70 for line in text.splitlines() or [""])
    if 21 * lines + 40 <= max_height:
        where.code(text, language=None, wrap_lines=True)
    else:
        where.container(height=max_height, border=False).code(text, language=None, wrap_lines=True)
        where.caption(f"{len(text):,} characters: scroll inside the box to read all of it.")


# --------------------------------------------------------------------------- sign-in and navigation

PAGES = [  # (path, label, roles)
    ("app.py", "Home", ("lead", "admin")),
    ("pages/1_Label.py", "Label", ("sme", "lead", "admin")),
    ("pages/2_Decision.py", "Decision", ("lead", "admin")),
    ("pages/8_Regressions.py", "Regressions", ("lead", "admin")),
    ("pages/3_Judges.py", "Judges", ("lead", "admin")),
    ("pages/4_Annotators.py", "Annotators", ("lead", "admin")),
    ("pages/5_Run_judges.py", "Run judges", ("lead", "admin")),
    ("pages/6_Demo.py", "Demo", ("lead", "admin")),
    ("pages/7_Admin.py", "Admin", ("lead", "admin")),
]


def _users_exist(cur) -> bool:
    return cur.execute("SELECT count(*) FROM users").fetchone()[0] > 0


def sign_in_form(cur, offer=None) -> None:
    """The sign-in page: the password form (pages/shared/auth.py: throttled, sets the session
    cookie) unless turned off, and the identity providers' buttons (pages/shared/sso.py)."""
    from pages.shared import auth, sso

    offer = offer or sso.offer()
    if offer.password:
        auth.sign_in_form(cur)
    sso.sign_in_panel(offer, title=not offer.password)


def require(*roles: str) -> tuple[str, str]:
    """Sign-in gate for a page: returns (user, role) or stops the page. With no users in the
    database (a fresh local project) everyone acts as a local admin, and a banner says so."""
    cur = cursor()
    users_exist = _users_exist(cur)
    if not users_exist:
        st.session_state.setdefault("auth_user", "local")
        st.session_state.setdefault("auth_role", "admin")
        st.sidebar.caption("No users yet: you act as a local admin. Add users on the Admin page "
                           "or with `tiebreak users add`.")
    elif st.session_state.get("auth_user") == "local":  # users were added: sign in as one of them
        for k in ("auth_user", "auth_role"):
            st.session_state.pop(k, None)
    from pages.shared import auth, sso

    offer, before = sso.offer(), st.session_state.get("auth_user")
    if sso.signed_in(cur, offer):  # the identity provider's user, matched by e-mail at every rerun
        user = st.session_state["auth_user"]
        if user != before:  # a fresh sign-in: rerun so the page's own redirects act (SMEs go to Label)
            st.rerun()
    else:
        if offer.password and auth.restore(cur):  # a reload or a new tab: signed in again from the session cookie
            st.rerun()
        user = st.session_state.get("auth_user")
        if user and user != "local" and (not offer.password or not auth.still_valid(cur)):
            user = None
    if not user:
        sign_in_form(cur, offer)
        st.stop()
    role = st.session_state.get("auth_role")
    auth.write_pending_cookie()
    nav(role)
    if role not in roles:
        st.error(f"Signed in as {md(user)} ({role}): this page is for {' or '.join(roles)}.")
        st.stop()
    return user, role


# Cards (st.metric) wrap their label, value and delta instead of cutting them with an ellipsis (a
# clipped "[+9.1 pp, +16.9 ..." hides the number that matters), at a value size that fits four cards
# in a row at 1280 px; the main column uses the width the wide layout leaves (Streamlit pads it by
# 5-6rem a side and gives the sidebar of nine links 300 px, which pushed a 9-column table into a
# horizontal scroll at 1280 px). A constant: nothing from the data is ever put in it.
LAYOUT_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-left: 1.5rem; padding-right: 1.5rem; max-width: none; }
[data-testid="stSidebar"][data-collapsed="false"] { width: 232px !important; min-width: 232px !important; }
[data-testid="stMetricValue"] { font-size: 1.75rem; line-height: 1.2; }
[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] *, [data-testid="stMetricValue"],
[data-testid="stMetricValue"] *, [data-testid="stMetricDelta"], [data-testid="stMetricDelta"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: break-word; height: auto !important; }
[data-testid="stMetricDelta"] { display: inline-flex; max-width: 100%; }
</style>"""


def layout_style() -> None:
    """The app's layout rules (``LAYOUT_CSS``): a style-only ``st.html`` takes no room on the page."""
    st.html(LAYOUT_CSS)


def nav(role: str) -> None:
    """Links to the pages this role may open (Streamlit's own page list is hidden in config.toml)."""
    from streamlit.errors import StreamlitAPIException

    layout_style()

    for path, label, roles in PAGES:
        if role in roles:
            try:
                st.sidebar.page_link(path, label=label)
            except StreamlitAPIException:  # a page run on its own (AppTest) knows no sibling pages
                pass
    from pages.shared import auth

    user = st.session_state.get("auth_user")
    st.sidebar.caption(f"Signed in as {md(user)} ({role})")
    if st.session_state.get("auth_via") == "sso":
        from pages.shared import sso

        sso.account_box()
    else:
        auth.account_box(cursor())
