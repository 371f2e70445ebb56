"""Single sign-on: what the sign-in page offers, and which Tiebreak user an identity provider's
account is. No Streamlit here: ``pages/shared/sso.py`` passes in the secrets and ``st.user``.

Streamlit signs users in with OpenID Connect (``st.login``), configured in the ``[auth]`` section
of ``.streamlit/secrets.toml``; it is off unless that section names a complete provider. The
identity provider only says who someone is: the Tiebreak user is the *active* user whose e-mail
equals the provider's e-mail claim (case and surrounding spaces ignored), and the role is the one
Tiebreak's admins gave that user, read from the database at every rerun. Someone the provider
knows but Tiebreak does not (no user with that e-mail, or a deactivated one) is refused.

The e-mail must be one the provider vouches for: by default the ID token must say
``email_verified: true`` (Google and Okta send it; a provider where anyone can type any e-mail
into their profile would otherwise let them take over the Tiebreak user with that e-mail).
Providers that send no such claim (Microsoft Entra ID) are configured explicitly in their
section of ``[auth]``: ``email_claim`` names the claim to match (e.g. ``preferred_username``, the
account's sign-in name, which the tenant's admins control) and ``require_verified_email = false``
drops the check.

Password sign-in can be turned off (``[tiebreak] password_sign_in = false``): a flag in the same
file as the provider, set by whoever deploys the app, rather than a project setting an admin
could flip on the Admin page. It takes effect only when a provider is configured completely, so
a broken ``[auth]`` section cannot lock everyone out; and the CLI (``tiebreak users add``,
``tiebreak users email``) works on the database whatever the app offers.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from calib.data import store
from calib.errors import TiebreakError
from calib.review import users

PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
SHARED_KEYS = ("redirect_uri", "cookie_secret")
# Deliberately loose (one @, no spaces, a dot in the domain): the provider decides what an address
# is; this only catches typing mistakes in the Admin page and the CLI.
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


# --------------------------------------------------------------------------- what the page offers


@dataclass(frozen=True)
class Provider:
    """One identity provider: the key ``st.login`` takes (``default`` is the one written directly
    in ``[auth]``), the button's label, and which claim holds the e-mail and whether the provider
    must vouch for it (``email_verified``)."""

    key: str
    label: str
    email_claim: str = "email"
    require_verified_email: bool = True


@dataclass(frozen=True)
class Offer:
    """What the sign-in page shows: one button per identity provider, the password form or not,
    and a warning for the admin when the configuration is half done."""

    providers: tuple[Provider, ...] = ()
    password: bool = True
    warning: str = ""

    @property
    def sso(self) -> bool:
        return bool(self.providers)

    def provider(self, key: str | None) -> Provider | None:
        return next((p for p in self.providers if p.key == (key or "default")), None)


def _complete(section: Mapping) -> bool:
    return all(isinstance(section.get(k), str) and section.get(k) for k in PROVIDER_KEYS)


def _provider(key: str, section: Mapping, label: str) -> Provider:
    # Extra keys in a provider's section are Tiebreak's: Authlib reads only the keys it knows.
    claim, verified = section.get("email_claim", "email"), section.get("require_verified_email", True)
    return Provider(key, str(section.get("label") or label),
                    claim if isinstance(claim, str) and claim else "email",
                    verified if isinstance(verified, bool) else True)  # nonsense keeps the safe defaults


def offer(secret: Mapping | None) -> Offer:
    """The sign-in offer for the app's secrets (the parsed ``secrets.toml``; None or {} when there
    is none). Single sign-on is on when ``[auth]`` has ``redirect_uri``, ``cookie_secret`` and a
    provider with ``client_id``, ``client_secret`` and ``server_metadata_url``: written directly in
    ``[auth]`` (one button, "single sign-on" unless ``label`` says otherwise) and/or as
    ``[auth.NAME]`` sections (one button each, labelled NAME unless ``label`` says otherwise)."""
    secret = secret or {}
    auth = secret.get("auth") if isinstance(secret.get("auth"), Mapping) else {}
    opts = secret.get("tiebreak") if isinstance(secret.get("tiebreak"), Mapping) else {}
    warnings = []

    providers: list[Provider] = []
    if auth:
        if _complete(auth):
            providers.append(_provider("default", auth, "single sign-on"))
        for key, section in auth.items():
            if isinstance(section, Mapping) and key != "client_kwargs" and _complete(section):
                if "_" in key:  # Streamlit refuses provider names with an underscore
                    warnings.append(f"[auth.{key}] is ignored: a provider name cannot contain '_'.")
                else:
                    providers.append(_provider(key, section, key))
        missing = [k for k in SHARED_KEYS if not auth.get(k)]
        if missing:
            warnings.append("Single sign-on is off: [auth] in .streamlit/secrets.toml lacks "
                            + ", ".join(missing) + ".")
            providers = []
        elif not providers:
            warnings.append("Single sign-on is off: [auth] in .streamlit/secrets.toml names no provider with "
                            + ", ".join(PROVIDER_KEYS) + ".")

    password = opts.get("password_sign_in", True)
    if not isinstance(password, bool):
        warnings.append("[tiebreak] password_sign_in must be true or false: password sign-in stays on.")
        password = True
    if not password and not providers:
        warnings.append("[tiebreak] password_sign_in = false is ignored: no single sign-on provider is "
                        "configured, and nobody could sign in.")
        password = True
    return Offer(tuple(providers), password, " ".join(warnings))


# --------------------------------------------------------------------------- e-mails of users


def normalise_email(raw: str | None) -> str:
    """The e-mail as stored and compared: trimmed and lower-case; a malformed one is an error."""
    email = (raw or "").strip().lower()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise TiebreakError(f"e-mail {raw!r}: expected an address like name@example.com")
    return email


def _owner(con, email: str) -> str | None:
    rows = con.execute("SELECT name FROM users WHERE email = ? ORDER BY name", [email]).fetchall()
    return rows[0][0] if rows else None


def set_email(con: duckdb.DuckDBPyConnection, name: str, email: str | None, actor: str) -> str | None:
    """Give ``name`` an e-mail (None or "" removes it); an e-mail belongs to one user at most.
    Returns the e-mail as stored. An SSO session matched on the old e-mail ends at its next rerun."""
    email = normalise_email(email) if email and email.strip() else None
    with store.transaction(con):
        if not con.execute("SELECT count(*) FROM users WHERE name = ?", [name]).fetchone()[0]:
            raise TiebreakError(f"no user {name!r}")
        owner = _owner(con, email) if email else None
        if owner is not None and owner != name:
            raise TiebreakError(f"the e-mail {email} already belongs to user {owner!r}")
        con.execute("UPDATE users SET email = ? WHERE name = ?", [email, name])
        users.audit(con, actor, "e-mail set" if email else "e-mail removed", f"{name}: {email or '-'}")
    return email


def add_user(con: duckdb.DuckDBPyConnection, name: str, role: str, password: str | None, email: str | None,
             actor: str = "cli", replace: bool = True) -> None:
    """``users.add_user`` and an e-mail. Without a password the user gets a random one that nobody
    knows: they sign in by single sign-on only (until an admin resets the password). The e-mail is
    checked before anything is written."""
    email = normalise_email(email) if email and email.strip() else None
    if email:
        owner = _owner(con, email)
        if owner is not None and owner != name:
            raise TiebreakError(f"the e-mail {email} already belongs to user {owner!r}")
    if not password and not email:
        raise TiebreakError("give a password, or an e-mail for a user who signs in by single sign-on only")
    users.add_user(con, name, role, password or secrets.token_urlsafe(32), actor=actor, replace=replace)
    if email:
        set_email(con, name, email, actor)


def emails(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """User name -> e-mail, for the users that have one (the Admin page and ``users list``)."""
    return dict(con.execute("SELECT name, email FROM users WHERE email IS NOT NULL").fetchall())


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Match:
    """The Tiebreak user an identity provider's account maps to; ``user`` is None when refused,
    and ``message`` says why (shown to the person signing in)."""

    user: str | None
    role: str | None = None
    message: str = ""
    email: str = ""
    again: bool = False  # the sign-in is too old: offer the provider's button, not a sign-out


def _true(value: object) -> bool:
    # Some providers (AWS Cognito) send the flag as the string "true".
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def match(con: duckdb.DuckDBPyConnection, claims: Mapping, email_claim: str = "email",
          require_verified_email: bool = True) -> Match:
    """The active Tiebreak user whose e-mail is the provider's (see the module doc), else a refusal."""
    raw = claims.get(email_claim)
    if not isinstance(raw, str) or not raw.strip():
        return Match(None, message=f"Your identity provider sent no e-mail address (claim {email_claim!r}), "
                                   "so Tiebreak cannot tell which user you are. Ask a Tiebreak admin.")
    try:
        email = normalise_email(raw)
    except TiebreakError:
        return Match(None, message=f"Your identity provider's e-mail {raw.strip()!r} is not an e-mail address: "
                                   "ask a Tiebreak admin.")
    if require_verified_email and not _true(claims.get("email_verified")):
        return Match(None, email=email,
                     message=f"Your identity provider does not say that {email} is verified (email_verified), "
                             "so Tiebreak cannot trust it to pick your user. Verify the address with your "
                             "identity provider, or ask a Tiebreak admin.")
    rows = con.execute("SELECT name, role, coalesce(active, TRUE) FROM users WHERE email = ?", [email]).fetchall()
    if not rows:
        return Match(None, email=email,
                     message=f"Your identity provider signed you in as {email}, but no Tiebreak user has this e-mail: "
                             "ask a Tiebreak admin to add you with it, or sign in with another account.")
    if len(rows) > 1:  # set_email prevents it; a database edited by hand might not
        return Match(None, email=email, message=f"Several Tiebreak users have the e-mail {email}: ask a Tiebreak "
                                                "admin to keep it on one.")
    name, role, active = rows[0]
    if not active:
        return Match(None, email=email, message=f"The Tiebreak user for {email} is deactivated: ask a Tiebreak "
                                                "admin to reactivate it.")
    return Match(name, role, email=email)


def identify(con: duckdb.DuckDBPyConnection, o: Offer, claims: Mapping, now: float | None = None,
             max_age_seconds: float | None = None) -> Match:
    """``match`` with the rules of the provider that signed the user in (Streamlit puts its key in
    the ``provider`` claim); a provider no longer configured is refused.

    Streamlit's identity cookie lasts 30 days whatever the provider says; a sign-in older than a
    Tiebreak session (``users.SESSION_HOURS``, from the ID token's ``iat``) must be made again,
    so someone removed from the identity provider loses access within that time even while
    Tiebreak still lists them."""
    p = o.provider(claims.get("provider") if isinstance(claims.get("provider"), str) else None)
    if p is None:
        return Match(None, message="You signed in through an identity provider this app no longer offers: "
                                   "sign out and sign in again.")
    now = time.time() if now is None else now
    max_age = users.SESSION_HOURS * 3600 if max_age_seconds is None else max_age_seconds
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not (now - max_age <= iat <= now + 300):
        return Match(None, again=True, message=f"Your single sign-on is more than {max_age / 3600:g} hours old "
                                               "(or undated): sign in again.")
    return match(con, claims, p.email_claim, p.require_verified_email)
