"""Sign-in throttling as pure functions: exponential backoff per user name and per client, and a
lockout of a user name after too many failures in a row, lifted only by a lead or admin.

The state of one counter (a user name, or a client address) is a small frozen value; the caller
passes the clock (``now``, seconds), so tests drive time without sleeping and the database layer
(``calib.review.users``) only loads and stores these values.

Why both: per-user backoff and lockout stop guessing one person's password from many machines;
per-client backoff stops one machine from trying one password against many user names (which
per-user counters never see). Clients are never locked out (one office behind one address would
lock everyone), only slowed down. Counters of unknown user names behave exactly like those of known
ones, so neither the wait nor the lockout tells whether a name exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Policy:
    """How fast waits grow and when a user name locks."""

    free_failures: int = 3  # failures of a user name before the first wait
    client_free_failures: int = 10  # failures from one client before its first wait
    base_seconds: float = 2.0  # the first wait; doubles with every further failure
    max_seconds: float = 300.0  # waits stop growing here
    lock_after: int = 10  # failures in a row that lock a user name until a lead or admin unlocks it
    forget_after_seconds: float = 3600.0  # an unlocked counter quiet this long starts again from zero


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Counter:
    """Failures in a row for one user name or one client."""

    failures: int = 0
    last_failure_at: float | None = None
    locked: bool = False


def current(c: Counter, now: float, policy: Policy = DEFAULT_POLICY) -> Counter:
    """The counter as it stands at ``now``: an unlocked counter quiet for ``forget_after_seconds``
    is forgotten; a locked one stays locked whatever the time."""
    if c.locked or c.last_failure_at is None:
        return c
    if now - c.last_failure_at >= policy.forget_after_seconds:
        return Counter()
    return c


def backoff(failures: int, free: int, policy: Policy = DEFAULT_POLICY) -> float:
    """The wait owed after ``failures`` failures in a row: none for the first ``free``, then
    ``base * 2**(k)`` for the k-th failure past them, capped at ``max_seconds``."""
    extra = failures - free
    if extra < 0:
        return 0.0
    return float(min(policy.max_seconds, policy.base_seconds * 2.0 ** min(extra, 40)))


def wait_seconds(c: Counter, now: float, free: int, policy: Policy = DEFAULT_POLICY) -> float:
    """Seconds left before the next attempt may be checked (0 = go ahead)."""
    c = current(c, now, policy)
    if c.last_failure_at is None:
        return 0.0
    return max(0.0, backoff(c.failures, free, policy) - (now - c.last_failure_at))


def record_failure(c: Counter, now: float, can_lock: bool, policy: Policy = DEFAULT_POLICY) -> Counter:
    """The counter after one more failure at ``now``; a user-name counter (``can_lock``) locks at
    ``lock_after`` failures."""
    c = current(c, now, policy)
    failures = c.failures + 1
    return Counter(failures, now, c.locked or (can_lock and failures >= policy.lock_after))


def unlock(c: Counter) -> Counter:
    """A lead's or admin's unlock: the counter starts again from zero."""
    return replace(c, failures=0, last_failure_at=None, locked=False)


@dataclass(frozen=True)
class Verdict:
    """Whether an attempt may be checked now, and if not why."""

    allowed: bool
    wait_seconds: float = 0.0
    locked: bool = False


def may_try(user: Counter, client: Counter, now: float, policy: Policy = DEFAULT_POLICY) -> Verdict:
    """May an attempt for this user name from this client be checked at ``now``? A locked name
    never (until unlocked); otherwise only once both backoffs have run out."""
    user = current(user, now, policy)
    if user.locked:
        return Verdict(False, 0.0, True)
    wait = max(wait_seconds(user, now, policy.free_failures, policy),
               wait_seconds(client, now, policy.client_free_failures, policy))
    return Verdict(wait <= 0, wait, False)


def client_key(peer: str | None, forwarded: str | None = None) -> str:
    """The address failures are counted against. ``peer`` is the connection's address (None on
    localhost); ``forwarded`` is the value of the header a trusted reverse proxy sets (e.g.
    ``X-Forwarded-For``), read only when the operator names that header: its last entry is the one
    the proxy itself added, so a client cannot pick its own key by sending the header."""
    if forwarded:
        last = forwarded.split(",")[-1].strip()
        if last:
            return last[:128]
    return (peer or "local")[:128]
