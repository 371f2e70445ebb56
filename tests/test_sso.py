"""Single sign-on without a browser: what the sign-in page offers for a given secrets.toml, the
e-mails of users, and matching an identity provider's claims to an active Tiebreak user."""

from __future__ import annotations

import time

import pytest

from calib import cli
from calib.errors import TiebreakError
from calib.review import sso, users

AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "tiebreak", "client_secret": "s", "server_metadata_url": "https://idp/.well-known/openid-configuration"}


@pytest.fixture
def db(con):
    users.add_user(con, "lea", "lead", "lea-password")
    users.add_user(con, "sam", "sme", "sam-password")
    return con


# --------------------------------------------------------------------------- the offer


def test_no_secrets_means_passwords_only():
    for secret in (None, {}, {"tiebreak": {}}, {"other": {"x": 1}}):
        o = sso.offer(secret)
        assert (o.sso, o.password, o.warning) == (False, True, "")


def _keys(o):
    return [(p.key, p.label) for p in o.providers]


def test_a_complete_default_provider_offers_one_button_and_passwords():
    o = sso.offer({"auth": AUTH})
    assert _keys(o) == [("default", "single sign-on")] and o.password and not o.warning
    assert o.provider(None) == o.provider("default") == sso.Provider("default", "single sign-on", "email", True)
    assert _keys(sso.offer({"auth": {**AUTH, "label": "Okta"}})) == [("default", "Okta")]


def test_named_providers_each_get_a_button_and_their_own_rules():
    shared = {k: AUTH[k] for k in sso.SHARED_KEYS}
    provider = {k: AUTH[k] for k in sso.PROVIDER_KEYS}
    o = sso.offer({"auth": {**shared, "okta": provider,
                            "microsoft": {**provider, "label": "Microsoft", "email_claim": "preferred_username",
                                          "require_verified_email": False},
                            "half": {"client_id": "x"}, "client_kwargs": {"prompt": "login"}}})
    assert _keys(o) == [("okta", "okta"), ("microsoft", "Microsoft")]
    assert (o.provider("okta").email_claim, o.provider("okta").require_verified_email) == ("email", True)
    ms = o.provider("microsoft")
    assert (ms.email_claim, ms.require_verified_email) == ("preferred_username", False)
    assert o.provider("default") is None and o.provider("half") is None
    o = sso.offer({"auth": {**shared, "my_idp": provider}})
    assert not o.sso and "'_'" in o.warning
    o = sso.offer({"auth": {**AUTH, "email_claim": 3, "require_verified_email": "no"}})
    assert (o.provider("default").email_claim, o.provider("default").require_verified_email) == ("email", True)


def test_an_incomplete_auth_section_is_off_and_says_what_is_missing():
    o = sso.offer({"auth": {k: v for k, v in AUTH.items() if k != "cookie_secret"}})
    assert not o.sso and o.password and "cookie_secret" in o.warning
    o = sso.offer({"auth": {k: v for k, v in AUTH.items() if k != "client_secret"}})
    assert not o.sso and "names no provider" in o.warning


def test_password_sign_in_turns_off_only_when_a_provider_is_configured():
    o = sso.offer({"auth": AUTH, "tiebreak": {"password_sign_in": False}})
    assert o.sso and not o.password and not o.warning
    # no provider (or a broken one): turning passwords off would lock everyone out, so it is ignored
    for auth in (None, {k: v for k, v in AUTH.items() if k != "server_metadata_url"}):
        o = sso.offer({"auth": auth, "tiebreak": {"password_sign_in": False}})
        assert o.password and "ignored" in o.warning
    o = sso.offer({"auth": AUTH, "tiebreak": {"password_sign_in": "no"}})
    assert o.password and "true or false" in o.warning


# --------------------------------------------------------------------------- e-mails


def test_emails_are_trimmed_lower_case_and_checked():
    assert sso.normalise_email("  Lea@Example.COM ") == "lea@example.com"
    for bad in ("", "lea", "lea@example", "a b@example.com", "a@@example.com", "x" * 65 + "@example.com"):
        with pytest.raises(TiebreakError, match="e-mail"):
            sso.normalise_email(bad)


def test_an_email_belongs_to_one_user_and_changes_are_logged(db):
    assert sso.set_email(db, "lea", "Lea@Example.com", actor="ada") == "lea@example.com"
    with pytest.raises(TiebreakError, match="already belongs to user 'lea'"):
        sso.set_email(db, "sam", "LEA@example.com", actor="ada")
    with pytest.raises(TiebreakError, match="no user"):
        sso.set_email(db, "nobody", "n@example.com", actor="ada")
    sso.set_email(db, "lea", "lea@example.com", actor="ada")  # the same user again is fine
    assert sso.emails(db) == {"lea": "lea@example.com"}
    sso.set_email(db, "lea", "", actor="ada")
    assert sso.emails(db) == {}
    actions = [e["action"] for e in users.audit_log(db)]
    assert actions[:2] == ["e-mail removed", "e-mail set"]


def test_a_user_without_a_password_signs_in_only_by_sso(db):
    sso.add_user(db, "ola", "sme", None, "ola@example.com", actor="ada", replace=False)
    assert sso.emails(db)["ola"] == "ola@example.com"
    assert users.sign_in(db, "ola", "", "t").role is None
    with pytest.raises(TiebreakError, match="already belongs"):  # checked before the user is written
        sso.add_user(db, "pia", "sme", "pia-password", "ola@example.com", actor="ada")
    assert "pia" not in {u["name"] for u in users.list_users(db)}
    with pytest.raises(TiebreakError, match="give a password"):
        sso.add_user(db, "pia", "sme", "", None, actor="ada")


# --------------------------------------------------------------------------- matching


def _claims(email="lea@example.com", verified=True, **extra):
    return {"sub": "abc", "email": email, "email_verified": verified, **extra}


def test_a_verified_email_matches_the_active_user_and_the_role_is_tiebreaks(db):
    sso.set_email(db, "lea", "lea@example.com", actor="ada")
    m = sso.match(db, _claims("  LEA@example.com"))
    assert (m.user, m.role) == ("lea", "lead")
    users.set_role(db, "lea", "sme", actor="ada")  # roles stay in Tiebreak: read at every match
    assert sso.match(db, _claims()).role == "sme"
    assert sso.match(db, _claims(verified="true")).user == "lea"  # Cognito's string flag


def test_unknown_unverified_deactivated_and_missing_emails_are_refused(db):
    sso.set_email(db, "lea", "lea@example.com", actor="ada")
    m = sso.match(db, _claims("eve@example.com"))
    assert m.user is None and "no Tiebreak user has this e-mail" in m.message and "eve@example.com" in m.message
    for flag in (False, None, "false", 1):
        m = sso.match(db, _claims(verified=flag))
        assert m.user is None and "verified" in m.message
    assert sso.match(db, {"sub": "abc", "email": "lea@example.com"}).user is None  # no flag at all
    assert sso.match(db, {"sub": "abc"}).user is None
    assert sso.match(db, _claims("not an address")).user is None
    users.set_active(db, "lea", False, actor="ada")
    m = sso.match(db, _claims())
    assert m.user is None and "deactivated" in m.message


def test_another_claim_without_the_verified_flag_when_configured(db):
    sso.set_email(db, "lea", "lea@contoso.com", actor="ada")
    claims = {"sub": "abc", "preferred_username": "Lea@Contoso.com"}
    assert sso.match(db, claims).user is None
    assert sso.match(db, claims, email_claim="preferred_username", require_verified_email=False).user == "lea"


def test_the_provider_that_signed_in_sets_the_rules(db):
    sso.set_email(db, "lea", "lea@contoso.com", actor="ada")
    shared = {k: AUTH[k] for k in sso.SHARED_KEYS}
    provider = {k: AUTH[k] for k in sso.PROVIDER_KEYS}
    o = sso.offer({"auth": {**shared, "google": provider,
                            "microsoft": {**provider, "email_claim": "preferred_username",
                                          "require_verified_email": False}}})
    unverified = {"sub": "abc", "email": "lea@contoso.com", "preferred_username": "lea@contoso.com", "iat": time.time()}
    assert sso.identify(db, o, {**unverified, "provider": "microsoft"}).user == "lea"
    assert sso.identify(db, o, {**unverified, "provider": "google"}).user is None
    m = sso.identify(db, o, {**unverified, "provider": "okta"})  # a provider since removed from secrets.toml
    assert m.user is None and "no longer offers" in m.message


def test_a_sign_in_older_than_a_session_is_made_again(db):
    sso.set_email(db, "lea", "lea@example.com", actor="ada")
    o = sso.offer({"auth": AUTH})
    now, hours = 1_800_000_000.0, users.SESSION_HOURS
    claims = {**_claims(), "provider": "default"}
    assert sso.identify(db, o, {**claims, "iat": now - hours * 3600 + 60}, now=now).user == "lea"
    for iat in (now - hours * 3600 - 60, now + 3600, None, "yesterday", True):  # old, from the future, undated
        m = sso.identify(db, o, {**claims, "iat": iat}, now=now)
        assert m.user is None and m.again and "sign in again" in m.message
    assert sso.identify(db, o, {**claims, "iat": now - 50}, now=now, max_age_seconds=30).again


def test_two_users_with_one_email_match_neither(db):
    db.execute("UPDATE users SET email = 'x@example.com'")  # only a hand edit can do this
    m = sso.match(db, _claims("x@example.com"))
    assert m.user is None and "Several" in m.message


# --------------------------------------------------------------------------- CLI


def test_cli_adds_users_with_emails_and_lists_them(tmp_path, capsys):
    path = str(tmp_path / "cli.duckdb")
    assert cli.main(["users", "add", "ada", "--role", "admin", "--password", "ada-password",
                     "--email", "Ada@Example.com", "--db", path]) == 0
    assert cli.main(["users", "add", "sam", "--role", "sme", "--sso-only", "--email", "sam@example.com",
                     "--db", path]) == 0
    assert cli.main(["users", "email", "sam", "samuel@example.com", "--db", path]) == 0
    assert cli.main(["users", "list", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "ada@example.com" in out and "samuel@example.com" in out
    assert cli.main(["users", "email", "sam", "ada@example.com", "--db", path]) == 2
    assert "already belongs" in capsys.readouterr().err
    assert cli.main(["users", "add", "bob", "--role", "sme", "--sso-only", "--db", path]) == 2
    assert cli.main(["users", "email", "sam", "--clear", "--db", path]) == 0
    assert "samuel" not in (cli.main(["users", "list", "--db", path]), capsys.readouterr().out)[1]
