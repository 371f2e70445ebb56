"""Single sign-on in the pages: Streamlit's ``st.login`` / ``st.user`` / ``st.logout`` on one side,
the rules of ``calib.review.sso`` (what the sign-in page offers, which user an e-mail is) on the
other. Layout and plumbing only.

- Streamlit keeps the provider's identity in its own signed cookie (``_streamlit_user``) and puts
  it in ``st.user`` when a session starts; it is matched to a Tiebreak user at every rerun, so a
  role change, a deactivation or an e-mail change acts at once (as for password sessions).
- A session signed in this way is marked ``auth_via = "sso"``; it has no Tiebreak session token
  (Streamlit's cookie does that job), and signing out calls ``st.logout()``, which clears that
  cookie and sends the browser to the provider's end-session page when it has one.
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from calib import safetext
from calib.review import sso

_STATE = ("auth_user", "auth_role", "auth_token", "auth_via")


def _plain(value):
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def secrets() -> dict:
    """The ``[auth]`` and ``[tiebreak]`` sections of the app's secrets ({} without a secrets.toml)."""
    try:
        if not st.secrets.load_if_toml_exists():
            return {}
        return {k: _plain(st.secrets[k]) for k in ("auth", "tiebreak") if k in st.secrets}
    except Exception:  # noqa: BLE001 - an unreadable secrets.toml: passwords only (Streamlit logs why)
        return {}


def offer() -> sso.Offer:
    return sso.offer(secrets())


def _claims() -> dict | None:
    try:
        return st.user.to_dict() if st.user.get("is_logged_in") is True else None
    except Exception:  # noqa: BLE001 - no session (bare mode)
        return None


def _forget() -> None:
    for k in _STATE:
        st.session_state.pop(k, None)


def signed_in(cur, o: sso.Offer) -> bool:
    """True when the provider's user (``st.user``) is an active Tiebreak user: the user and the
    role go to session state. A refusal is kept for the sign-in page; a session that came from the
    provider ends when the provider's user no longer matches."""
    claims = _claims() if o.sso else None
    found = sso.identify(cur, o, claims) if claims else None
    if found is None or found.user is None:
        if found is not None:
            st.session_state["auth_sso_refused"], st.session_state["auth_sso_again"] = found.message, found.again
        if st.session_state.get("auth_via") == "sso":
            _forget()
        return False
    st.session_state.update(auth_user=found.user, auth_role=found.role, auth_token=None, auth_via="sso")
    st.session_state.pop("auth_sso_refused", None)
    return True


def sign_in_panel(o: sso.Offer, title: bool) -> None:
    """The provider's buttons (or, when the provider's user was refused, why and a way out), and a
    warning when ``secrets.toml`` is half configured. ``title`` when no password form precedes it."""
    if title:
        st.title("Tiebreak")
    if o.warning:
        st.warning(safetext.md(o.warning))
    if not o.sso:
        return
    if not title:
        st.divider()
    refused, again = st.session_state.get("auth_sso_refused"), st.session_state.get("auth_sso_again")
    if refused and again:  # too old: the provider's button signs in afresh
        st.info(safetext.md(refused))
    elif refused:
        st.error(safetext.md(refused))
        if st.button("Sign out of the identity provider, to use another account", key="auth_sso_other"):
            st.session_state.pop("auth_sso_refused", None)
            st.logout()
            st.stop()
        return
    for p in o.providers:
        if st.button(f"Sign in with {safetext.md(p.label)}", key=f"auth_sso_{p.key}", type="primary"):
            st.login(p.key)
            st.stop()


def account_box() -> None:
    """Sidebar of a session signed in by single sign-on: sign out (of Tiebreak and of Streamlit's
    identity cookie; the provider's own session is ended too when it offers an end-session page)."""
    st.sidebar.caption("Signed in by single sign-on.")
    if st.sidebar.button("Sign out", key="auth_sign_out"):
        _forget()
        st.logout()
        st.stop()
