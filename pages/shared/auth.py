"""Sign-in for the pages: the form, the session cookie, sign-out and the owner's password change.

The rules (backoff, lockout, constant-time refusal, signed expiring tokens) live in
``calib.review.users``; this module only moves values between them and Streamlit:

- the client a failure is counted against is ``st.context.ip_address`` (None on localhost, counted
  as "local");
- the session token goes into a cookie with a few lines of JavaScript run by ``st.html(...,
  unsafe_allow_javascript=True)`` (Streamlit has no API to set a cookie); the token is URL-safe
  (letters, digits, ``-_.``), checked by a regular expression before it is put in the script, and
  no data from users reaches the script. It is read back on a new session (a reload, a new tab)
  from ``st.context.cookies``, which holds the cookies of the page's first request;
- session state keeps the user, the role and the token; the role is read from the database at
  every rerun, so a role change, a deactivation or a password change elsewhere acts at once;
- a fragment's rerun skips the page's gate, so every fragment starts with ``recheck`` (an ended
  session or a lost role reruns the whole page, which shows the sign-in form or the role error),
  and every write passes ``session()`` down to calib, which refuses it in the write's own
  transaction (``users.require_session``);
- the cookie is not HttpOnly: Streamlit's script API cannot set a response header (only a custom
  ASGI app could, which changes how the app is started); it is SameSite=Strict, Secure on https,
  expires with the token, carries no user data, and no text from data or users reaches a script
  or unescaped markdown (``calib.safetext``), so there is no script to read it.
"""

from __future__ import annotations

import os
import re

import streamlit as st

from calib import safetext
from calib.errors import TiebreakError

COOKIE = "tiebreak_session"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,1000}$")


def client_id() -> str:
    """The address failures are counted against: Streamlit's view of the connection, or behind a
    reverse proxy the header named by $TIEBREAK_CLIENT_HEADER (e.g. X-Forwarded-For), which the
    proxy must set (otherwise every user shares the proxy's address and its backoff)."""
    from calib.review import throttle

    try:
        ip = st.context.ip_address
        header = os.environ.get("TIEBREAK_CLIENT_HEADER")
        forwarded = st.context.headers.get(header) if header else None
    except Exception:  # noqa: BLE001 - outside a browser session (bare mode)
        ip, forwarded = None, None
    return throttle.client_key(ip if isinstance(ip, str) else None,  # AppTest gives mocks
                               forwarded if isinstance(forwarded, str) else None)


def _cookie_script(token: str | None) -> str:
    from calib.review import users

    if token is None:
        value, age = "", 0
    else:
        if not _TOKEN_RE.match(token):
            raise ValueError("not a session token")
        value, age = token, int(users.SESSION_HOURS * 3600)
    return (
        "<script>(function(){var s=location.protocol==='https:'?'; Secure':'';"
        f"document.cookie='{COOKIE}={value}; Max-Age={age}; Path=/; SameSite=Strict'+s;"
        "})();</script>"
    )


def write_pending_cookie() -> None:
    """Set or clear the cookie asked for by the last sign-in, password change or sign-out."""
    if "auth_cookie" in st.session_state:
        token = st.session_state.pop("auth_cookie")
        st.html(_cookie_script(token), unsafe_allow_javascript=True, width="content")


def _signed_in(user: str, role: str, token: str | None) -> None:
    st.session_state["auth_user"], st.session_state["auth_role"] = user, role
    st.session_state["auth_token"] = token
    st.session_state["auth_cookie"] = token
    st.session_state.pop("auth_signed_out", None)


def restore(cur) -> bool:
    """A new session (reload, new tab) signs in from the session cookie; True when it did."""
    from calib.review import users

    if st.session_state.get("auth_user") or st.session_state.get("auth_signed_out"):
        return False
    try:
        token = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser session
        token = None
    if not isinstance(token, str):  # AppTest gives a mock
        token = None
    found = users.check_token(cur, token) if token else None
    if not found:
        return False
    st.session_state["auth_user"], st.session_state["auth_role"] = found
    st.session_state["auth_token"] = token
    return True


def still_valid(cur) -> bool:
    """Refresh the role from the database; False when the session has ended (deactivated,
    password changed elsewhere, signed out everywhere, or the token expired)."""
    from calib.review import users

    user, token = st.session_state.get("auth_user"), st.session_state.get("auth_token")
    if token:
        found = users.check_token(cur, token)
    else:  # signed in before tokens (or by a test): the user must still exist and be active
        row = cur.execute("SELECT role FROM users WHERE name = ? AND coalesce(active, TRUE)", [user]).fetchall()
        found = (user, row[0][0]) if row else None
    if not found:
        for k in ("auth_user", "auth_role", "auth_token"):
            st.session_state.pop(k, None)
        st.session_state["auth_cookie"] = None
        return False
    st.session_state["auth_role"] = found[1]
    return True


def session():
    """Who this page acts for, to pass down with every write (``calib.review.users.Session``)."""
    from calib.review import users

    return users.Session(st.session_state.get("auth_user") or "", st.session_state.get("auth_token"))


def recheck(*roles: str):
    """The first call of every fragment (its reruns skip the page's gate): the session must still
    be valid and its role one of ``roles``; otherwise the whole page reruns, and its gate shows
    the sign-in form (session ended) or the role error. Returns the ``session()`` to write with."""
    from calib.review import users
    from pages.shared import ui

    cur = ui.cursor()
    current = session()
    try:
        users.require_session(cur, current, roles)
    except users.SessionEnded:
        if current.user != users.LOCAL:
            still_valid(cur)  # clears the session (and the cookie) when it has ended
        st.rerun(scope="app")
    return current


def sign_in_form(cur) -> None:
    """The sign-in form; on success the user, role and token go to session state and the page reruns."""
    from calib.review import users

    st.title("Tiebreak")
    write_pending_cookie()
    with st.form("auth_form"):
        name = st.text_input("User name", key="auth_name")
        password = st.text_input("Password", type="password", key="auth_password")
        if st.form_submit_button("Sign in", type="primary"):
            result = users.sign_in(cur, name, password, client_id())  # waits out parallel sign-ins itself
            if result.role is None:
                st.error(safetext.md(result.message))
            else:
                _signed_in(name, result.role, users.issue_token(cur, name))
                st.rerun()


def sign_out(cur) -> None:
    """Sign out: this user's sessions end everywhere (the token's epoch moves on, so even a cookie
    that the browser kept no longer works) and the cookie is cleared."""
    from calib.review import users

    user = st.session_state.get("auth_user")
    if user and user != "local":
        try:
            users.end_sessions(cur, user, actor=user)
        except TiebreakError:
            pass
    for k in ("auth_user", "auth_role", "auth_token"):
        st.session_state.pop(k, None)
    st.session_state["auth_signed_out"] = True
    st.session_state["auth_cookie"] = None


def account_box(cur) -> None:
    """Sidebar: sign out, and change one's own password."""
    from calib.review import users

    user = st.session_state.get("auth_user")
    if not user or user == "local":
        return
    with st.sidebar.expander("Change password"):
        with st.form("auth_change_password", clear_on_submit=True):
            old = st.text_input("Current password", type="password", key="auth_pw_old")
            new = st.text_input("New password (8+ characters)", type="password", key="auth_pw_new")
            again = st.text_input("New password again", type="password", key="auth_pw_again")
            if st.form_submit_button("Change password"):
                if new != again:
                    st.error("The two new passwords differ.")
                else:
                    try:
                        token = users.change_password(cur, user, old, new)
                    except TiebreakError as exc:
                        st.error(safetext.md(str(exc)))
                    else:
                        st.session_state["auth_token"] = token
                        st.session_state["auth_cookie"] = token
                        st.success("Password changed; your other sessions were signed out.")
    if st.sidebar.button("Sign out", key="auth_sign_out"):
        sign_out(cur)
        st.rerun()
