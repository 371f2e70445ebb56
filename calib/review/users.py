"""App users, roles, sign-in and sessions, and the project's labelling guidelines.

Roles: ``sme`` (labels; sees only the labelling page and own progress), ``lead`` and ``admin``
(see everything; admins also manage users). Passwords are kept only as bcrypt hashes in the
database; bcrypt is a well-kept, audited library, better than any hashing code of ours.

Sign-in (``sign_in``) holds against guessing: failures are counted per user name, per client
address and per (name, address) in the database (so the counts hold across reruns, tabs, processes
and restarts), the pure rules of ``calib.review.throttle`` decide the waits (which always run out:
no failure count locks an account, so nobody can keep a user out from outside), and an unknown
user name costs the same bcrypt check as a known one (against a dummy hash of the same cost), so
the answer time does not tell which names exist. The CLI can clear a name's waits while the app
runs through a request file (``calib.review.breakglass``), applied at the next sign-in attempt.

Sessions are signed, expiring tokens made with ``itsdangerous`` (the Pallets project's signing
library, used by Flask for its session cookies): the app keeps one in a browser cookie so a reload
or a new tab stays signed in. The token carries the user name and the user's session epoch; the
role and the ``active`` flag are read from the database at every check, and bumping the epoch
(password change, sign-out everywhere, deactivation) ends every older session. Every write a page
makes (a label, a skip, a flag, a lease, a fit, an export) passes the page's ``Session`` down and
is refused by ``require_session`` when the session has ended or the role may not do it, checked
in the same transaction as the write: a page left open after a revocation cannot write.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import bcrypt
import duckdb

from calib.data import store
from calib.errors import TiebreakError
from calib.review import breakglass, throttle

ROLES = ("sme", "lead", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LOCAL = "local"  # the page's name for everyone while a project has no users: never a user's name
RESERVED = frozenset({LOCAL, "cli", "system", "admin-recovery"})  # names the app or the logs use as actors
ROUNDS = 10  # bcrypt cost of every stored hash and of the dummy hash unknown names are checked against
SESSION_HOURS = 12.0  # a session token expires this long after sign-in
REFUSED = "Unknown user or wrong password."
DEFAULT_GUIDELINES = """### How to rate
- **Correctness**: pass when every fact in the answer is right for the customer's region and nothing needed is missing.
- **Refusal**: *appropriate* when the assistant answers what it should and refuses only out-of-policy requests
  (other people's data, payment secrets, unauthorised discounts); *over-refusal* when it refuses a legitimate
  request; *under-refusal* when it helps with an out-of-policy one.
- **Style**: pass when the tone is friendly, concise and professional; fail on boilerplate, slang or emoji.
- **Preference**: which answer would you rather send to this customer?
Judge each answer on its own; the two sides are in random order and their models are hidden.
"""


# --------------------------------------------------------------------------- users


def _check_password_rules(password: str) -> None:
    if len(password or "") < 8:
        raise TiebreakError("the password must have at least 8 characters")
    if len(password.encode()) > 72:
        raise TiebreakError("the password must have at most 72 bytes (bcrypt reads no further)")


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=ROUNDS)).decode()


def audit(con: duckdb.DuckDBPyConnection, actor: str, action: str, detail: str = "") -> None:
    """Append one line to the admin log (who did what to users, settings and imports)."""
    con.execute("INSERT INTO audit_log (created_at, actor, action, detail) VALUES (current_timestamp, ?, ?, ?)",
                [actor, action, detail])


def audit_log(con: duckdb.DuckDBPyConnection, limit: int = 50) -> list[dict]:
    rows = con.execute("SELECT created_at, actor, action, detail FROM audit_log ORDER BY event_id DESC LIMIT ?",
                       [limit]).fetchall()
    return [{"at": a, "actor": u, "action": x, "detail": d} for a, u, x, d in rows]


def _user(con, name: str) -> tuple | None:
    rows = con.execute("SELECT role, password_hash, coalesce(active, TRUE), coalesce(session_epoch, 0) "
                       "FROM users WHERE name = ?", [name or ""]).fetchall()
    return rows[0] if rows else None


def add_user(con: duckdb.DuckDBPyConnection, name: str, role: str, password: str, actor: str = "cli",
             replace: bool = True) -> None:
    """Create a user; an existing one gets the new role and password (and is reactivated, its
    older sessions ended) unless ``replace`` is False, when an existing name is an error."""
    if not NAME_RE.match(name or ""):
        raise TiebreakError(f"user name {name!r}: use 1-64 letters, digits or . _ @ -")
    if name.lower() in RESERVED:
        raise TiebreakError(f"user name {name!r} is reserved (the app uses it): choose another")
    if role not in ROLES:
        raise TiebreakError(f"role {role!r} must be one of {', '.join(ROLES)}")
    _check_password_rules(password)
    hashed = _hash(password)
    with store.transaction(con):
        if _user(con, name) is None:
            con.execute("INSERT INTO users (name, role, password_hash, created_at, active, session_epoch) "
                        "VALUES (?, ?, ?, current_timestamp, TRUE, 0)", [name, role, hashed])
            audit(con, actor, "user added", f"{name} ({role})")
        elif not replace:
            raise TiebreakError(f"user {name!r} already exists")
        else:
            con.execute("UPDATE users SET role = ?, password_hash = ?, active = TRUE, "
                        "session_epoch = coalesce(session_epoch, 0) + 1 WHERE name = ?", [role, hashed, name])
            _clear_name(con, name)
            audit(con, actor, "user replaced", f"{name} ({role})")


def _require_user(con, name: str) -> tuple:
    row = _user(con, name)
    if row is None:
        raise TiebreakError(f"no user {name!r}")
    return row


def _other_active_admins(con, name: str) -> int:
    return con.execute("SELECT count(*) FROM users WHERE role = 'admin' AND coalesce(active, TRUE) AND name <> ?",
                       [name]).fetchone()[0]


def set_role(con: duckdb.DuckDBPyConnection, name: str, role: str, actor: str) -> None:
    """Change a user's role (the last active admin keeps theirs, so the Admin page stays reachable)."""
    if role not in ROLES:
        raise TiebreakError(f"role {role!r} must be one of {', '.join(ROLES)}")
    old = _require_user(con, name)[0]
    if old == "admin" and role != "admin" and not _other_active_admins(con, name):
        raise TiebreakError(f"{name} is the last admin: make another admin first")
    with store.transaction(con):
        con.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])
        audit(con, actor, "role changed", f"{name}: {old} -> {role}")


def reset_password(con: duckdb.DuckDBPyConnection, name: str, password: str, actor: str) -> None:
    """An admin sets a new password; the user's open sessions end and a lockout is lifted."""
    _require_user(con, name)
    _check_password_rules(password)
    hashed = _hash(password)
    with store.transaction(con):
        con.execute("UPDATE users SET password_hash = ?, session_epoch = coalesce(session_epoch, 0) + 1 "
                    "WHERE name = ?", [hashed, name])
        _clear_name(con, name)
        audit(con, actor, "password reset", name)


def set_active(con: duckdb.DuckDBPyConnection, name: str, active: bool, actor: str) -> None:
    """Deactivate (sign-in refused, sessions ended; labels kept) or reactivate a user."""
    role = _require_user(con, name)[0]
    if not active and role == "admin" and not _other_active_admins(con, name):
        raise TiebreakError(f"{name} is the last admin: make another admin first")
    with store.transaction(con):
        con.execute("UPDATE users SET active = ?, session_epoch = coalesce(session_epoch, 0) + 1 WHERE name = ?",
                    [bool(active), name])
        audit(con, actor, "user reactivated" if active else "user deactivated", name)


def change_password(con: duckdb.DuckDBPyConnection, name: str, old: str, new: str) -> str:
    """The owner changes their password (the old one must be right); every other session of
    theirs ends. Returns a fresh session token for the session that made the change."""
    row = _user(con, name)
    if row is None or not _password_ok(old, row[1]):
        raise TiebreakError("the current password is wrong")
    _check_password_rules(new)
    hashed = _hash(new)
    with store.transaction(con):
        con.execute("UPDATE users SET password_hash = ?, session_epoch = coalesce(session_epoch, 0) + 1 "
                    "WHERE name = ?", [hashed, name])
        audit(con, name, "password changed", name)
    return issue_token(con, name)


def list_users(con: duckdb.DuckDBPyConnection) -> list[dict]:
    rows = con.execute("SELECT u.name, u.role, coalesce(u.active, TRUE), u.created_at, "
                       "coalesce(t.failures, 0), FALSE FROM users u "
                       "LEFT JOIN sign_in_throttle t ON t.scope = 'user' AND t.key = u.name ORDER BY u.name").fetchall()
    return [{"name": n, "role": r, "active": a, "created_at": c, "failures": f, "locked": lk}
            for n, r, a, c, f, lk in rows]


# --------------------------------------------------------------------------- sign-in


_DUMMY: list[bytes] = []


def _dummy_hash() -> bytes:
    """A bcrypt hash of a random password at the cost of real ones, made once per process: an
    unknown name is checked against it so the refusal costs the same as a wrong password."""
    if not _DUMMY:
        import secrets

        _DUMMY.append(bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=ROUNDS)))
    return _DUMMY[0]


def _password_ok(password: str, hashed: str | bytes) -> bool:
    raw = (password or "").encode()
    hashed = hashed.encode() if isinstance(hashed, str) else hashed
    ok = bcrypt.checkpw(raw[:72], hashed)  # bcrypt 5 refuses longer input; the same work is done anyway
    return ok and len(raw) <= 72


def _load_counter(con, scope: str, key: str) -> throttle.Counter:
    rows = con.execute("SELECT failures, last_failure_at, locked FROM sign_in_throttle WHERE scope = ? AND key = ?",
                       [scope, key]).fetchall()
    return throttle.Counter(*rows[0]) if rows else throttle.Counter()


def _save_counter(con, scope: str, key: str, c: throttle.Counter) -> None:
    if c == throttle.Counter():
        con.execute("DELETE FROM sign_in_throttle WHERE scope = ? AND key = ?", [scope, key])
    else:
        con.execute("INSERT OR REPLACE INTO sign_in_throttle VALUES (?, ?, ?, ?, ?)",
                    [scope, key, c.failures, c.last_failure_at, c.locked])


@dataclass(frozen=True)
class SignIn:
    """The outcome of one sign-in attempt: ``role`` is None when refused; ``message`` is what the
    form shows (never says whether the name exists). ``locked`` stays False: kept for callers from
    before locks were dropped."""

    role: str | None
    message: str = ""
    wait_seconds: float = 0.0
    locked: bool = False


def _user_key(name: str) -> str:
    return (name or "")[:128]


BUSY = "Another sign-in for this name or address is being checked: try again in a moment."
_CONFLICTS = (duckdb.TransactionException, duckdb.ConstraintException)
# One process (the app) serves every browser session: counter reads and writes go one at a time, so
# parallel attempts never conflict (and each sees the failures before it). The slow bcrypt check
# runs outside the lock.
_THROTTLE_LOCK = threading.Lock()
_RETRIES = 20  # a conflict with another process (a CLI on a snapshot cannot write; tests can) is retried


def _db_path(con) -> str | None:
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return row[0] if row and row[0] else None


def apply_unlock_requests(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the CLI's break-glass requests waiting beside the database (``calib.review.breakglass``):
    each clears one name's sign-in waits and is logged; a request whose file could have been written
    by another OS user is refused and logged. Returns the names unlocked."""
    path = _db_path(con)
    found = breakglass.pending(path) if path else []
    done = []
    for req in found:
        if not req.path.exists():  # another session applied it a moment ago
            continue
        if req.refused:
            with store.transaction(con):
                audit(con, "cli", "unlock request refused", f"{req.path.name}: {req.refused}")
        else:
            _unlock_name(con, req.name, f"cli (break-glass file, OS user {req.by or '?'})", with_addresses=True)
            done.append(req.name)
        breakglass.done(req)
    return done


def _attempt(con, ukey: str, ckey: str, now: float, policy: throttle.Policy) -> throttle.Verdict:
    """Check the waits and, when allowed, record the name's and the pair's failure before the
    password is checked (undone on success): parallel guesses for one name cannot outrun its waits.
    The address's failure is recorded after the check (``_failed``): parallel attempts from one
    address take turns instead (``_client_turn``), so colleagues behind one address who sign in at
    the same moment never count against each other."""
    pkey = throttle.pair_key(ukey, ckey)
    with store.transaction(con):
        ucount, ccount = _load_counter(con, "user", ukey), _load_counter(con, "client", ckey)
        pcount = _load_counter(con, "pair", pkey)
        verdict = throttle.may_try(ucount, ccount, pcount, now, policy)
        if verdict.allowed:
            _save_counter(con, "user", ukey, throttle.record_failure(ucount, now, policy))
            _save_counter(con, "pair", pkey, throttle.record_failure(pcount, now, policy,
                                                                     policy.pair_forget_after_seconds))
    return verdict


def _failed(con, ckey: str, now: float, policy: throttle.Policy) -> None:
    with store.transaction(con):
        _save_counter(con, "client", ckey, throttle.record_failure(_load_counter(con, "client", ckey), now, policy))


def _succeeded(con, ukey: str, ckey: str, now: float, policy: throttle.Policy) -> None:
    """The right password: this address's counts start again, and the name's too when every
    failure it holds came from this address (the user's own typos). Failures from other addresses
    stay: they are someone else's guesses, and forgetting them at each of the user's sign-ins would
    give an attacker ``free_failures`` more guesses every time."""
    pkey = throttle.pair_key(ukey, ckey)
    with store.transaction(con):
        name, pair = _load_counter(con, "user", ukey), _load_counter(con, "pair", pkey)
        # both hold this attempt (counted before the check): equal when no other address failed
        if throttle.current(name, now, policy).failures <= pair.failures:
            _save_counter(con, "user", ukey, throttle.Counter())
        else:  # take back the failure recorded before the check
            _save_counter(con, "user", ukey, throttle.Counter(max(0, name.failures - 1), name.last_failure_at))
        _save_counter(con, "client", ckey, throttle.Counter())
        _save_counter(con, "pair", pkey, throttle.Counter())
        # long-quiet counters are forgotten anyway: drop them
        con.execute("DELETE FROM sign_in_throttle WHERE last_failure_at < ? AND (scope <> 'pair' OR last_failure_at < ?)",
                    [now - policy.forget_after_seconds, now - policy.pair_forget_after_seconds])


def _locked_step(con, step, *args):
    """Run a counter step under the process lock, retrying a conflict with another process."""
    for k in range(_RETRIES):
        try:
            with _THROTTLE_LOCK:
                return step(con, *args)
        except _CONFLICTS:
            time.sleep(0.05 * (k + 1))
    raise duckdb.TransactionException("sign-in counters stayed busy")


CLIENT_TURNS = 4  # password checks from one address at a time; the others wait their turn
TURN_TIMEOUT_SECONDS = 30.0
_TURNS = threading.Condition()
_in_turn: dict[str, int] = {}


class _Busy(Exception):
    pass


@contextmanager
def _client_turn(ckey: str):
    """Hold one of the address's ``CLIENT_TURNS`` (waiting, not refusing, when all are taken): a
    burst from one address is checked a few at a time, each failure recorded before later ones
    are let in, so the address's wait cannot be outrun by sending attempts at once."""
    with _TURNS:
        if not _TURNS.wait_for(lambda: _in_turn.get(ckey, 0) < CLIENT_TURNS, TURN_TIMEOUT_SECONDS):
            raise _Busy
        _in_turn[ckey] = _in_turn.get(ckey, 0) + 1
    try:
        yield
    finally:
        with _TURNS:
            _in_turn[ckey] -= 1
            if not _in_turn[ckey]:
                del _in_turn[ckey]
            _TURNS.notify_all()


def sign_in(con: duckdb.DuckDBPyConnection, name: str, password: str, client: str | None = None,
            now: float | None = None, policy: throttle.Policy = throttle.DEFAULT_POLICY) -> SignIn:
    """Check a sign-in with the waits of ``calib.review.throttle`` (see the module doc). ``client``
    names the connection (an IP address, or "local"); ``now`` is the clock in seconds (tests pass it).

    Counting is done so that sending guesses at once cannot outrun the waits (``_attempt``), and
    a user who waited is never told that the sign-in is busy: parallel sign-ins take turns."""
    ukey, ckey = _user_key(name), (client or "local")[:128]
    try:
        with _client_turn(ckey):
            return _sign_in(con, name, password, ukey, ckey, time.time() if now is None else now, policy)
    except (_CONFLICTS, _Busy):  # another process kept the counters for 20 retries, or 30 s of turns
        return SignIn(None, BUSY, wait_seconds=1.0)


def _sign_in(con, name: str, password: str, ukey: str, ckey: str, now: float, policy: throttle.Policy) -> SignIn:
    with _THROTTLE_LOCK:
        apply_unlock_requests(con)
    verdict = _locked_step(con, _attempt, ukey, ckey, now, policy)
    if not verdict.allowed:
        return SignIn(None, f"Too many failed sign-ins: try again in {verdict.wait_seconds:.0f} s.",
                      wait_seconds=verdict.wait_seconds)
    row = _user(con, name)
    ok = _password_ok(password, row[1] if row else _dummy_hash())
    if ok and row is not None and row[2]:
        try:
            _locked_step(con, _succeeded, ukey, ckey, now, policy)
        except _CONFLICTS:  # the counts stay (they only slow down), the sign-in stands
            pass
        return SignIn(row[0])
    _locked_step(con, _failed, ckey, now, policy)
    counts = [_load_counter(con, s, k) for s, k in (("user", ukey), ("client", ckey),
                                                     ("pair", throttle.pair_key(ukey, ckey)))]
    wait = throttle.may_try(*counts, now, policy).wait_seconds
    return SignIn(None, REFUSED + (f" Try again in {wait:.0f} s." if wait > 0 else ""), wait_seconds=wait)


def authenticate(con: duckdb.DuckDBPyConnection, name: str, password: str, client: str | None = None) -> str | None:
    """The user's role when the sign-in succeeds, else None (``sign_in`` with its throttling)."""
    return sign_in(con, name, password, client).role


def throttled(con: duckdb.DuckDBPyConnection, now: float | None = None,
              policy: throttle.Policy = throttle.DEFAULT_POLICY) -> list[dict]:
    """User names and clients with failures: counts and the wait left, for the Admin page (a
    name's wait holds only for the addresses that failed for it; (name, address) counters are
    summed into their name's row)."""
    now = time.time() if now is None else now
    out = []
    for scope, key, f, at, locked in con.execute(
            "SELECT scope, key, failures, last_failure_at, locked FROM sign_in_throttle "
            "WHERE scope <> 'pair' ORDER BY scope DESC, key").fetchall():
        c = throttle.current(throttle.Counter(f, at, locked), now, policy)
        if c.failures:
            free, cap = ((policy.free_failures, policy.name_max_seconds) if scope == "user"
                         else (policy.client_free_failures, policy.max_seconds))
            out.append({"scope": scope, "key": key, "failures": c.failures, "locked": False,
                        "wait_seconds": round(throttle.wait_seconds(c, now, free, policy, cap), 1)})
    return out


def _clear_name(con, key: str) -> None:
    """Forget a name's failures: its own counter and every (name, address) counter (in the caller's transaction)."""
    _save_counter(con, "user", key, throttle.Counter())
    con.execute("DELETE FROM sign_in_throttle WHERE scope = 'pair' AND starts_with(key, ?)", [throttle.pair_key(key, "")])


def _unlock_name(con, key: str, actor: str, with_addresses: bool = False) -> None:
    """Clear a name's waits; ``with_addresses`` also clears the waits of every address that failed
    for it (the break-glass: the operator cannot pick addresses from a page)."""
    with store.transaction(con):
        if with_addresses:
            con.execute("DELETE FROM sign_in_throttle WHERE scope = 'client' AND key IN (SELECT "
                        "substr(key, length(?) + 1) FROM sign_in_throttle WHERE scope = 'pair' AND starts_with(key, ?))",
                        [throttle.pair_key(key, "")] * 2)
        _clear_name(con, key)
        audit(con, actor, "unlocked", f"user {key}" + (" and its addresses" if with_addresses else ""))


def unlock(con: duckdb.DuckDBPyConnection, key: str, actor: str, scope: str = "user") -> None:
    """Clear a name's waits (its counter and every (name, address) counter) or an address's."""
    if scope == "user":
        _unlock_name(con, key, actor)
        return
    with store.transaction(con):
        _save_counter(con, scope, key, throttle.Counter())
        audit(con, actor, "unlocked", f"{scope} {key}")


# --------------------------------------------------------------------------- page sessions


class SessionEnded(TiebreakError):
    """A page's write refused: its session ended (signed out, deactivated, password changed, token
    expired) or its user's role may no longer do this."""


@dataclass(frozen=True)
class Session:
    """Who a page acts for: the signed-in user and the session token their browser holds (None
    only for a session made in code, e.g. by a test, or the local user of a project without users)."""

    user: str
    token: str | None = None


LABELLERS = ("sme", "lead", "admin")
LEADS = ("lead", "admin")


def require_session(con: duckdb.DuckDBPyConnection, session: Session, roles: tuple[str, ...]) -> str:
    """The session's role when it is still valid and the role is one of ``roles``; else raise
    ``SessionEnded``. Call it inside the write's transaction, so nothing the page writes lands
    after a revocation. A token is checked in full (signature, expiry, epoch, active, role); a
    session without one must name an active user (or be the local user of a project with no users)."""
    if session.token is not None:
        found = check_token(con, session.token)
        if found is None or found[0] != session.user:
            raise SessionEnded("Your session has ended: sign in again (nothing was saved).")
        role = found[1]
    elif session.user == LOCAL:
        if con.execute("SELECT count(*) FROM users").fetchone()[0]:
            raise SessionEnded("Users were added: sign in (nothing was saved).")
        role = "admin"
    else:
        row = _user(con, session.user)
        if row is None or not row[2]:
            raise SessionEnded("Your session has ended: sign in again (nothing was saved).")
        role = row[0]
    if role not in roles:
        raise SessionEnded(f"Your role is now {role}: this is for {' or '.join(roles)} (nothing was saved).")
    return role


# --------------------------------------------------------------------------- sessions


def _serializer(con):
    from itsdangerous import URLSafeTimedSerializer

    key = con.execute("SELECT value FROM app_secrets WHERE name = 'session_key'").fetchone()[0]
    return URLSafeTimedSerializer(key, salt="tiebreak-session")


def issue_token(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """A signed token for ``name``'s session (URL-safe: letters, digits, ``-_.``), valid
    ``SESSION_HOURS`` and until the user's session epoch changes."""
    row = _require_user(con, name)
    return _serializer(con).dumps({"u": name, "e": int(row[3])})


def check_token(con: duckdb.DuckDBPyConnection, token: str | None,
                max_age_seconds: float | None = None) -> tuple[str, str] | None:
    """(user, role) of a valid session token, else None: bad signature, expired, user unknown or
    deactivated, or the session epoch moved on (password changed, signed out everywhere)."""
    from itsdangerous import BadData

    if not token or len(token) > 1000:
        return None
    max_age = SESSION_HOURS * 3600 if max_age_seconds is None else max_age_seconds
    try:
        data = _serializer(con).loads(token, max_age=max_age)
    except BadData:
        return None
    if not isinstance(data, dict):
        return None
    row = _user(con, str(data.get("u", "")))
    if row is None or not row[2] or data.get("e") != int(row[3]):
        return None
    return str(data["u"]), row[0]


def end_sessions(con: duckdb.DuckDBPyConnection, name: str, actor: str) -> None:
    """Sign ``name`` out everywhere: every token issued so far stops working."""
    _require_user(con, name)
    with store.transaction(con):
        con.execute("UPDATE users SET session_epoch = coalesce(session_epoch, 0) + 1 WHERE name = ?", [name])
        audit(con, actor, "signed out everywhere", name)


def rotate_session_key(con: duckdb.DuckDBPyConnection, actor: str) -> None:
    """A new signing key: every session of every user ends (e.g. after a leaked cookie)."""
    import secrets

    with store.transaction(con):
        con.execute("INSERT OR REPLACE INTO app_secrets VALUES ('session_key', ?)", [secrets.token_urlsafe(48)])
        audit(con, actor, "session key rotated", "")


def guidelines(con: duckdb.DuckDBPyConnection) -> str:
    """The newest version of the project's markdown rubric (the default until a lead edits it)."""
    row = con.execute("SELECT text FROM guidelines ORDER BY version DESC LIMIT 1").fetchall()
    return row[0][0] if row else DEFAULT_GUIDELINES


def save_guidelines(con: duckdb.DuckDBPyConnection, text: str, author: str) -> int:
    """Append a new version of the rubric (history kept); returns its version number."""
    with store.transaction(con):
        v = con.execute("SELECT coalesce(max(version), 0) + 1 FROM guidelines").fetchone()[0]
        con.execute("INSERT INTO guidelines VALUES (?, ?, ?, current_timestamp)", [v, text, author])
    return v
