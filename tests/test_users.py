"""Sign-in that holds: backoff and lockout (pure, with an injected clock), persistence across
connections, constant-time refusal of unknown names, session tokens, password changes."""

from __future__ import annotations

import time

import pytest

from calib.data import store
from calib.errors import TiebreakError
from calib.review import throttle, users
from calib.review.throttle import Counter, Policy

P = Policy(free_failures=3, client_free_failures=10, base_seconds=2.0, max_seconds=60.0, lock_after=6,
           forget_after_seconds=3600.0)


# --------------------------------------------------------------------------- pure rules


def test_backoff_doubles_after_the_free_failures_and_is_capped():
    assert [throttle.backoff(n, 3, P) for n in range(0, 9)] == [0, 0, 0, 2, 4, 8, 16, 32, 60]


def test_waits_run_out_with_the_clock():
    c = Counter()
    for t in range(4):  # four failures at t = 0..3: the fourth is the first past the free three
        c = throttle.record_failure(c, float(t), True, P)
    assert throttle.wait_seconds(c, 3.0, 3, P) == 4.0
    assert throttle.wait_seconds(c, 6.5, 3, P) == 0.5
    assert throttle.may_try(c, Counter(), 5.0, P).allowed is False
    assert throttle.may_try(c, Counter(), 7.0, P).allowed is True


def test_user_names_lock_clients_only_slow_down():
    user, client = Counter(), Counter()
    for t in range(20):
        user = throttle.record_failure(user, 1000.0 * t, True, P)
        client = throttle.record_failure(client, 1000.0 * t, False, P)
    assert user.locked and not client.locked
    assert throttle.may_try(user, Counter(), 1e9, P).locked  # no amount of waiting unlocks
    assert throttle.may_try(throttle.unlock(user), Counter(), 1e9, P).allowed


def test_quiet_counters_are_forgotten_locked_ones_not():
    c = throttle.record_failure(Counter(), 0.0, True, P)
    assert throttle.current(c, 3600.0, P) == Counter()
    locked = Counter(6, 0.0, True)
    assert throttle.current(locked, 1e9, P) == locked


def test_client_backoff_catches_one_password_against_many_names():
    client = Counter()
    for t in range(11):
        client = throttle.record_failure(client, float(t), False, P)
    v = throttle.may_try(Counter(), client, 10.0, P)  # a fresh user name, the same client
    assert not v.allowed and v.wait_seconds == 4.0


def test_client_key_trusts_only_the_proxys_own_entry():
    assert throttle.client_key(None) == "local"
    assert throttle.client_key("10.0.0.9") == "10.0.0.9"
    assert throttle.client_key("10.0.0.1", "1.2.3.4, 203.0.113.7") == "203.0.113.7"  # a spoofed first entry is ignored
    assert throttle.client_key("10.0.0.1", " ") == "10.0.0.1"


# --------------------------------------------------------------------------- in the database


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "u.duckdb"
    con = store.connect(path)
    users.add_user(con, "ana", "sme", "ana-password")
    users.add_user(con, "lee", "lead", "lee-password")
    users.add_user(con, "ada", "admin", "ada-password")
    yield con, path
    con.close()


def test_wrong_passwords_back_off_then_lock_until_a_lead_unlocks(db):
    con, path = db
    t = 1_000_000.0
    msgs = [users.sign_in(con, "ana", "nope-nope", "10.0.0.1", now=t + i, policy=P) for i in range(3)]
    assert all(m.role is None and m.message.startswith(users.REFUSED) for m in msgs)
    assert msgs[-1].wait_seconds == 2.0  # the third failure earns the first wait
    # while waiting, even the right password is not checked
    r = users.sign_in(con, "ana", "ana-password", "10.0.0.1", now=t + 3, policy=P)
    assert r.role is None and "try again in" in r.message
    # failures go on (each after its wait) until the name locks
    now = t + 3
    for _ in range(10):
        now += 100
        r = users.sign_in(con, "ana", "wrong-again", "10.0.0.2", now=now, policy=P)
        if r.locked:
            break
    assert r.locked
    # the counts hold across connections (another process, a restart)
    con.close()
    con = store.connect(path)
    assert con.execute("SELECT failures, locked FROM sign_in_throttle WHERE scope = 'user' AND key = 'ana'"
                       ).fetchone() == (6, True)
    assert users.sign_in(con, "ana", "ana-password", "10.0.0.3", now=now + 1e6, policy=P).locked
    assert [x["key"] for x in users.throttled(con, now=now, policy=P) if x["locked"]] == ["ana"]
    users.unlock(con, "ana", actor="lee")
    assert users.sign_in(con, "ana", "ana-password", "10.0.0.3", now=now + 1e6, policy=P).role == "sme"
    assert users.audit_log(con)[0]["action"] == "unlocked"


def test_unknown_names_are_throttled_and_locked_like_known_ones(db):
    con, _ = db
    known = [users.sign_in(con, "ana", "wrong", "c1", now=100.0 * i, policy=P) for i in range(7)]
    unknown = [users.sign_in(con, "nobody", "wrong", "c2", now=100.0 * i, policy=P) for i in range(7)]
    assert [(k.message, k.wait_seconds, k.locked) for k in known] == \
           [(u.message, u.wait_seconds, u.locked) for u in unknown]


def test_success_resets_the_counters(db):
    con, _ = db
    users.sign_in(con, "ana", "wrong", "c", now=0.0, policy=P)
    users.sign_in(con, "ana", "wrong", "c", now=1.0, policy=P)
    assert users.sign_in(con, "ana", "ana-password", "c", now=2.0, policy=P).role == "sme"
    assert users.throttled(con, now=2.0, policy=P) == []


def test_unknown_user_is_refused_in_the_same_time_as_a_wrong_password(db):
    """20 tries each, interleaved: the median time to refuse an unknown name is within 20% of the
    time to refuse a known name with a wrong password (both pay one bcrypt check of the same cost;
    medians, so a neighbour's burst on this shared machine does not decide)."""
    con, _ = db
    loose = Policy(free_failures=1000, client_free_failures=1000, lock_after=1000)
    users.sign_in(con, "warm-up", "x", "c", policy=loose)  # the dummy hash is made once per process
    known, unknown = [], []
    for i in range(20):
        for name, out in (("lee", known), (f"ghost{i}", unknown)) if i % 2 else (
                (f"ghost{i}", unknown), ("lee", known)):
            t0 = time.perf_counter()
            r = users.sign_in(con, name, "wrong-password", "c", policy=loose)
            out.append(time.perf_counter() - t0)
            assert r.role is None and r.message == users.REFUSED
    import statistics

    k, u = statistics.median(known), statistics.median(unknown)
    assert 0.8 < u / k < 1.25, (k, u)


def test_deactivated_users_cannot_sign_in_and_last_admin_is_kept(db):
    con, _ = db
    users.set_active(con, "ana", False, actor="ada")
    r = users.sign_in(con, "ana", "ana-password", "c")
    assert r.role is None and r.message == users.REFUSED
    with pytest.raises(TiebreakError, match="last admin"):
        users.set_active(con, "ada", False, actor="ada")
    with pytest.raises(TiebreakError, match="last admin"):
        users.set_role(con, "ada", "lead", actor="ada")
    users.set_role(con, "lee", "admin", actor="ada")
    users.set_role(con, "ada", "lead", actor="lee")
    assert {u["name"]: u["role"] for u in users.list_users(con)}["ada"] == "lead"


def test_session_tokens_expire_and_end_with_a_password_change(db):
    con, _ = db
    token = users.issue_token(con, "ana")
    assert users.check_token(con, token) == ("ana", "sme")
    assert users.check_token(con, token, max_age_seconds=-1) is None  # expired
    assert users.check_token(con, token[:-2] + "xx") is None  # forged
    assert users.check_token(con, "garbage") is None and users.check_token(con, None) is None
    users.set_role(con, "ana", "lead", actor="ada")
    assert users.check_token(con, token) == ("ana", "lead")  # the role is read at every check
    with pytest.raises(TiebreakError, match="current password is wrong"):
        users.change_password(con, "ana", "not-it", "new-password-1")
    fresh = users.change_password(con, "ana", "ana-password", "new-password-1")
    assert users.check_token(con, token) is None and users.check_token(con, fresh) == ("ana", "lead")
    assert users.sign_in(con, "ana", "new-password-1", "c").role == "lead"
    users.end_sessions(con, "ana", actor="ana")
    assert users.check_token(con, fresh) is None
    other = users.issue_token(con, "lee")
    users.rotate_session_key(con, actor="ada")
    assert users.check_token(con, other) is None


def test_deactivation_ends_sessions_and_reset_lifts_the_lock(db):
    con, _ = db
    token = users.issue_token(con, "ana")
    users.set_active(con, "ana", False, actor="ada")
    assert users.check_token(con, token) is None
    users.set_active(con, "ana", True, actor="ada")
    for i in range(6):
        users.sign_in(con, "ana", "wrong", "c", now=1000.0 * i, policy=P)
    assert users.sign_in(con, "ana", "ana-password", "c", now=1e7, policy=P).locked
    users.reset_password(con, "ana", "reset-password", actor="ada")
    assert users.sign_in(con, "ana", "reset-password", "c", now=1e7, policy=P).role == "sme"


def test_password_rules(db):
    con, _ = db
    with pytest.raises(TiebreakError, match="at least 8"):
        users.add_user(con, "bob", "sme", "short")
    with pytest.raises(TiebreakError, match="at most 72 bytes"):
        users.add_user(con, "bob", "sme", "x" * 73)
    with pytest.raises(TiebreakError, match="already exists"):
        users.add_user(con, "ana", "sme", "whatever-123", replace=False)
    assert users.sign_in(con, "ana", "a" * 100, "c").role is None  # too long to be right; no crash


def test_parallel_guesses_cannot_outrun_the_backoff(db):
    """Eight guesses at once for one name (threads, one cursor each): the counter sees every one
    that was checked, so no more passwords are checked than the failures recorded."""
    import threading

    con, _ = db
    results = []

    def guess(i):
        results.append(users.sign_in(con.cursor(), "lee", f"guess-{i}", "c9", now=5000.0, policy=P))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checked = [r for r in results if r.message.startswith(users.REFUSED)]
    recorded = con.execute("SELECT failures FROM sign_in_throttle WHERE scope = 'user' AND key = 'lee'").fetchone()[0]
    assert len(checked) == recorded <= P.free_failures  # the rest waited or were told to retry
    assert all(r.role is None for r in results)


def test_cli_unlock_and_list(db, capsys):
    from calib import cli

    con, path = db
    for i in range(6):
        users.sign_in(con, "ana", "wrong", "c", now=100.0 * i, policy=P)
    con.close()
    assert cli.main(["users", "list", "--db", str(path)]) == 0
    assert any(line.split()[:3] == ["ana", "sme", "locked"] for line in capsys.readouterr().out.splitlines())
    assert cli.main(["users", "unlock", "ana", "--db", str(path)]) == 0
    assert cli.main(["users", "list", "--db", str(path)]) == 0
    assert any(line.split()[:3] == ["ana", "sme", "active"] for line in capsys.readouterr().out.splitlines())
