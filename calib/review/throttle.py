"""Sign-in throttling as pure functions: waits that grow with failures and always run out; no
failure count ever locks an account for good.

Three counters see every failed sign-in, each a small frozen value; the caller passes the clock
(``now``, seconds), so tests drive time without sleeping and the database layer
(``calib.review.users``) only loads and stores these values:

- the (user name, address) pair: the one who is guessing a password, from where. Its wait grows
  fastest (after ``pair_free_failures``) and is capped at ``name_max_seconds``;
- the user name, from every address together: someone guessing one person's password from many
  machines. Its wait (after ``free_failures``, capped at ``name_max_seconds``) applies only to
  addresses that have themselves failed for this name in the last day: a *clean* address (no such
  failure, and no client wait) is always checked, so nobody can keep the right person out by
  failing for their name from elsewhere, and each attacking address gets one such try a day;
- the address, over all names: one machine trying one password against many names (which the
  name counters never see). Capped at ``max_seconds``.

Why no lockout: a lock that counts failures lets anyone who reaches the sign-in page lock any
account, admins included, for as long as they like. The waits above hold guessing to a few
attempts per hour and per address, and an attacker can keep a name slowed down only for the
addresses they fail from. Counters of unknown user names behave exactly like those of known ones,
so no wait tells whether a name exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """How fast waits grow and where they stop."""

    free_failures: int = 10  # failures of a user name (every address together) before its first wait
    pair_free_failures: int = 3  # failures of one (name, address) before its first wait
    client_free_failures: int = 10  # failures from one address (every name) before its first wait
    base_seconds: float = 2.0  # the first wait; doubles with every further failure
    max_seconds: float = 300.0  # an address's wait stops growing here
    name_max_seconds: float = 900.0  # a name's (and a pair's) wait stops growing here: 15 minutes
    forget_after_seconds: float = 3600.0  # a name's or address's counter quiet this long starts again from zero
    pair_forget_after_seconds: float = 86400.0  # an address that failed for a name is not clean for it for a day


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Counter:
    """Failures in a row for one user name, one address, or one (name, address) pair. ``locked`` is
    a stored column from before locks were dropped: read, never set, and ignored."""

    failures: int = 0
    last_failure_at: float | None = None
    locked: bool = False


def current(c: Counter, now: float, policy: Policy = DEFAULT_POLICY, forget: float | None = None) -> Counter:
    """The counter as it stands at ``now``: one quiet for ``forget`` seconds (default
    ``forget_after_seconds``) is forgotten (an old stored lock included)."""
    if c.last_failure_at is None:
        return Counter() if c.locked else c
    if now - c.last_failure_at >= (policy.forget_after_seconds if forget is None else forget):
        return Counter()
    return c


def backoff(failures: int, free: int, policy: Policy = DEFAULT_POLICY, cap: float | None = None) -> float:
    """The wait owed after ``failures`` failures in a row: none for the first ``free``, then
    ``base * 2**(k)`` for the k-th failure past them, capped at ``cap`` (default ``max_seconds``)."""
    extra = failures - free
    if extra < 0:
        return 0.0
    cap = policy.max_seconds if cap is None else cap
    return float(min(cap, policy.base_seconds * 2.0 ** min(extra, 40)))


def wait_seconds(c: Counter, now: float, free: int, policy: Policy = DEFAULT_POLICY,
                 cap: float | None = None, forget: float | None = None) -> float:
    """Seconds left before the next attempt may be checked (0 = go ahead)."""
    c = current(c, now, policy, forget)
    owed = backoff(c.failures, free, policy, cap)
    if c.last_failure_at is None or owed <= 0:
        return 0.0  # (parallel sign-ins read the clock before taking turns: a failure can look newer than now)
    return max(0.0, owed - max(0.0, now - c.last_failure_at))


def record_failure(c: Counter, now: float, policy: Policy = DEFAULT_POLICY, forget: float | None = None) -> Counter:
    """The counter after one more failure at ``now``."""
    c = current(c, now, policy, forget)
    return Counter(c.failures + 1, now, False)


def unlock(c: Counter) -> Counter:
    """A lead's or admin's reset: the counter starts again from zero."""
    return Counter()


@dataclass(frozen=True)
class Verdict:
    """Whether an attempt may be checked now, and if not how long to wait."""

    allowed: bool
    wait_seconds: float = 0.0


def clean(pair: Counter, client: Counter, now: float, policy: Policy = DEFAULT_POLICY) -> bool:
    """An address that has not failed for this name for ``pair_forget_after_seconds`` (a day: an
    attacker's address held back by the name's wait must not turn clean by keeping quiet for an
    hour) and owes no wait of its own."""
    return (current(pair, now, policy, policy.pair_forget_after_seconds).failures == 0
            and wait_seconds(client, now, policy.client_free_failures, policy) <= 0)


def may_try(user: Counter, client: Counter, pair: Counter, now: float, policy: Policy = DEFAULT_POLICY) -> Verdict:
    """May an attempt for this user name from this address be checked at ``now``? Once the
    address's and the pair's waits have run out, and the name's too unless the address is clean.
    Every wait is at most ``name_max_seconds`` after the last failure that caused it."""
    waits = [wait_seconds(client, now, policy.client_free_failures, policy),
             wait_seconds(pair, now, policy.pair_free_failures, policy, policy.name_max_seconds,
                          policy.pair_forget_after_seconds)]
    if not clean(pair, client, now, policy):
        waits.append(wait_seconds(user, now, policy.free_failures, policy, policy.name_max_seconds))
    wait = max(waits)
    return Verdict(wait <= 0, wait)


def pair_key(name_key: str, client_key_: str) -> str:
    """The key of a (user name, address) counter: the two joined by a unit separator (a character
    no valid user name holds)."""
    return f"{name_key}\x1f{client_key_}"


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
