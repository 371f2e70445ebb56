"""The sampler and the SME queue: inclusion probabilities, random share, leases, overlap, skip, flag."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import numpy as np
import pytest

from calib.data import demo, store
from calib.stats import sampling
from calib.review import queue
from calib.errors import TiebreakError

ALL = {(m, d): (True, None) for m in demo.MODELS for d in demo.DIMENSIONS}


def test_inclusion_probabilities_sum_to_n_and_honour_the_random_share():
    rng = np.random.default_rng(0)
    prio = rng.exponential(size=1000) ** 3  # very skewed: forces capping
    for r in (0.0, 0.2, 1.0):
        pi = sampling.inclusion_probabilities(prio, 150, random_share=r)
        assert pi.sum() == pytest.approx(150)
        assert (pi <= 1).all() and (pi > 0).all()
        if r == 1.0:
            assert np.allclose(pi, 0.15)
        if r > 0:  # every item keeps at least its uniform part
            assert pi.min() >= r * 150 / 1000 * 0.999


def test_priorities_are_clipped_so_no_weight_runs_away():
    """A priority far from the rest (an estimate from few labels) moves pi at most ``clip`` times
    the mean's way: the positive priorities' probabilities stay within clip^2 of each other, zero
    priorities (a decided candidate's units) keep only their uniform part, and the order is kept."""
    rng = np.random.default_rng(1)
    prio = rng.exponential(size=500) ** 4
    prio[:50] = 0.0
    pi = sampling.inclusion_probabilities(prio, 40, random_share=0.0, clip=3.0)
    assert pi.sum() == pytest.approx(40)
    pos = pi[50:]
    assert pos.max() / pos.min() <= 9 * 1.0001
    assert np.all(pi[:50] < 1e-9)
    order = np.argsort(prio[50:])
    assert np.all(np.diff(pos[order]) >= -1e-12)
    unclipped = sampling.inclusion_probabilities(prio, 40, random_share=0.0, clip=None)
    assert unclipped[50:].max() / unclipped[50:].min() > 100


def test_selection_frequency_matches_inclusion_probability(demo_con):
    """Over repeated seeded refills on fresh copies of the same queue state, each item's selection
    frequency matches its recorded inclusion probability, and the random share is as set."""
    policy, ids, segs, prio = queue.item_priorities(demo_con)
    pi = queue.stratified_inclusion(prio, segs, 40, 0.2)
    assert pi.sum() == pytest.approx(40, rel=0.05)
    hits = np.zeros(len(ids))
    reps = 400
    for seed in range(reps):
        rng = np.random.default_rng([seed, 1, 0x9E37])
        hits += rng.random(len(ids)) < pi
    freq = hits / reps
    z = (freq - pi) / np.sqrt(pi * (1 - pi) / reps)
    assert np.abs(z).max() < 5 and abs(z.mean()) < 0.2
    # the real refill records exactly those probabilities, and the reasons reflect the mixture
    batch = queue.refill(demo_con, 60, seed=3, random_share=0.5)
    rows = demo_con.execute("SELECT inclusion_prob, reason FROM queue WHERE batch_id = ?", [batch.batch_id]).fetchall()
    assert len(rows) == batch.selected and batch.expected == pytest.approx(60, rel=0.05)
    share = np.mean([r[1] == "random share" for r in rows])
    assert 0.3 < share < 0.7


def test_every_segment_gets_items():
    prio = np.r_[np.ones(990) * 10, np.full(10, 1e-9)]
    segs = np.r_[np.full(990, "big"), np.full(10, "small")]
    pi = queue.stratified_inclusion(prio, segs, 20, 0.0)
    assert pi[segs == "small"].sum() >= 2 - 1e-9


def test_lease_submit_and_no_second_sme_without_overlap(demo_con):
    queue.refill(demo_con, 30, seed=1)
    demo_con.execute("UPDATE queue SET overlap = FALSE")
    lease = queue.next_item(demo_con, "ana")
    assert queue.next_item(demo_con, "ana").lease_id == lease.lease_id  # a reload shows the same item
    n = queue.submit(demo_con, lease.lease_id, "ana", ALL, preference="candidate", strength=2,
                     left_model=demo.CANDIDATE, duration_ms=3500)
    assert n == 6
    rows = demo_con.execute("SELECT model, dimension, side, duration_ms, lease_id FROM labels ORDER BY ALL").fetchall()
    assert len(rows) == 6 and {r[2] for r in rows if r[0] == demo.CANDIDATE} == {"left"}
    assert demo_con.execute("SELECT preference, strength, left_model FROM pair_labels").fetchone() == (
        "candidate", 2, demo.CANDIDATE)
    with pytest.raises(TiebreakError, match="already submitted"):
        queue.submit(demo_con, lease.lease_id, "ana", ALL)
    served = {queue.next_item(demo_con, f"sme{i}", reuse_active=False).item_id for i in range(5)}
    assert lease.item_id not in served


def test_no_double_lease_under_concurrent_requests(demo_con):
    queue.refill(demo_con, 200, seed=2)
    demo_con.execute("UPDATE queue SET overlap = FALSE")
    got, errors = [], []

    def sme(name):
        cur = demo_con.cursor()
        try:
            for _ in range(10):
                lease = queue.next_item(cur, name, reuse_active=False)
                if lease:
                    got.append(lease.item_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sme, args=(f"sme{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == len(set(got)) > 0


def test_expired_lease_returns_the_item(demo_con):
    queue.refill(demo_con, 5, seed=4)
    demo_con.execute("UPDATE queue SET overlap = FALSE")
    t0 = datetime(2026, 1, 1, 9, 0)
    lease = queue.next_item(demo_con, "ana", now=t0, lease_minutes=30)
    later = t0 + timedelta(minutes=31)
    others = set()
    for i in range(10):
        nxt = queue.next_item(demo_con, f"bo{i}", now=later, reuse_active=False)
        if nxt:
            others.add(nxt.item_id)
    assert lease.item_id in others
    assert demo_con.execute("SELECT outcome FROM leases WHERE lease_id = ?", [lease.lease_id]).fetchone()[0] == "expired"
    # a late submission is still kept: a rating is never lost
    queue.submit(demo_con, lease.lease_id, "ana", ALL, now=later)
    assert demo_con.execute("SELECT count(*) FROM labels WHERE lease_id = ?", [lease.lease_id]).fetchone()[0] == 6


def test_overlap_items_go_to_exactly_two_smes(demo_con):
    store.set_settings(demo_con, overlap_share=0.3)
    queue.refill(demo_con, 120, seed=5)
    share = demo_con.execute("SELECT avg(overlap::INT) FROM queue").fetchone()[0]
    assert 0.15 < share < 0.45
    counts: dict[str, int] = {}
    for _ in range(40):
        for name in ("ana", "bo", "cy"):
            lease = queue.next_item(demo_con, name, reuse_active=False)
            if lease:
                counts[lease.item_id] = counts.get(lease.item_id, 0) + 1
                queue.submit(demo_con, lease.lease_id, name, ALL)
    overlap = {r[0] for r in demo_con.execute("SELECT item_id FROM queue WHERE overlap").fetchall()}
    assert all(n <= (2 if item in overlap else 1) for item, n in counts.items())
    assert any(counts.get(item) == 2 for item in overlap)


def test_skip_and_flag_are_recorded(demo_con):
    queue.refill(demo_con, 10, seed=6)
    demo_con.execute("UPDATE queue SET overlap = FALSE")
    a = queue.next_item(demo_con, "ana")
    queue.skip(demo_con, a.lease_id, "ana", "outside my expertise")
    assert demo_con.execute("SELECT outcome, reason FROM leases WHERE lease_id = ?", [a.lease_id]).fetchone() == (
        "skipped", "outside my expertise")
    b = queue.next_item(demo_con, "ana")
    assert b.item_id != a.item_id  # not served again to the SME who skipped it ...
    assert queue.next_item(demo_con, "bo").item_id == a.item_id  # ... but to others
    queue.flag(demo_con, b.lease_id, "ana", "prompt contains personal data")
    assert [r["item_id"] for r in queue.review_list(demo_con)] == [b.item_id]
    served = {queue.next_item(demo_con, f"x{i}", reuse_active=False).item_id for i in range(5)}
    assert b.item_id not in served
    queue.review_flag(demo_con, b.lease_id, "lead", "return")
    assert queue.review_list(demo_con) == []
    with pytest.raises(TiebreakError):
        queue.skip(demo_con, b.lease_id, "ana", "again")


def test_filtered_queue_is_recorded_as_such(demo_con):
    batch = queue.queue_filtered(demo_con, n=5, segment="eu")
    rows = demo_con.execute("SELECT q.reason, q.policy, q.inclusion_prob, i.segment FROM queue q JOIN items i USING (item_id)").fetchall()
    assert len(rows) == 5 == batch.selected
    assert all(r[0] == "lead filter: segment=eu" and r[1] == "filtered" and r[3] == "eu" for r in rows)
    assert rows[0][2] == pytest.approx(5 / batch.eligible)


def test_lead_views_and_cli_filter(demo_con, tmp_path):
    assert len(queue.top_disagreements(demo_con, 5)) == 5
    top = queue.top_disagreements(demo_con, 5)
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    queue.refill(demo_con, 20, seed=1)
    assert sum(r["queued"] for r in queue.queue_summary(demo_con)) == demo_con.execute(
        "SELECT count(*) FROM queue").fetchone()[0]


def test_servable_count_matches_the_list(demo_con):
    queue.refill(demo_con, 30, seed=2)
    queue.next_item(demo_con, "ana")
    assert queue.servable_count(demo_con, "bo") == len(queue.servable(demo_con, "bo", limit=10_000))


def _at_once(n: int, fn) -> list[BaseException]:
    """Run ``fn(i)`` on ``n`` threads released together (as sessions of the app, one process); the
    exceptions raised."""
    barrier, errors = threading.Barrier(n), []

    def run(i):
        try:
            barrier.wait()
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - counted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _fresh_demo(tmp_path, items: int = 120):
    c = store.connect(tmp_path / "fresh.duckdb")
    demo.load_demo(c, items, seed=5)
    return c


def test_smes_starting_at_once_on_a_fresh_project_are_served_without_errors_or_repeats(tmp_path):
    """Eight Label pages opening at once on a fresh project (no cells, empty queue): every SME gets
    a unit, no exception, no unit queued twice, no two SMEs on one unit, and the refills do not
    stack (each batch is queued once, under its own id)."""
    con = _fresh_demo(tmp_path)
    got = {}
    errors = _at_once(8, lambda i: got.__setitem__(i, queue.lease_or_refill(con.cursor(), f"sme{i}", 20)))
    assert errors == []
    assert all(got[i] is not None for i in range(8))
    assert con.execute("SELECT count(*) - count(DISTINCT (item_id, coalesce(candidate, ''))) FROM queue").fetchone()[0] == 0
    assert con.execute(
        """SELECT count(*) FROM (SELECT l.item_id, l.candidate, count(*) AS n, any_value(q.overlap) AS overlap
                                 FROM leases l JOIN queue q ON q.item_id = l.item_id AND q.candidate = l.candidate
                                 GROUP BY ALL) WHERE n > CASE WHEN overlap THEN 2 ELSE 1 END""").fetchone()[0] == 0
    # a later batch only when the earlier ones had fewer places (units, two for an overlap unit) than SMEs
    places = con.execute("SELECT batch_id, sum(CASE WHEN overlap THEN 2 ELSE 1 END) FROM queue GROUP BY 1 ORDER BY 1").fetchall()
    assert sum(p for _, p in places[:-1]) < 8
    assert con.execute("SELECT count(*) FROM cache_state WHERE key = 'cells'").fetchone()[0] == 1


def test_concurrent_refills_queue_each_unit_once_with_unique_batch_ids(tmp_path):
    """Refill called from eight threads at once (the old Label page did this): each call is its own
    batch with its own id, and no unit is queued twice."""
    con = _fresh_demo(tmp_path)
    batches = []
    errors = _at_once(8, lambda i: batches.append(queue.refill(con.cursor(), 10, seed=i)))
    assert errors == []
    ids = [b.batch_id for b in batches]
    assert len(set(ids)) == len(ids) == 8
    assert con.execute("SELECT count(*) - count(DISTINCT (item_id, coalesce(candidate, ''))) FROM queue").fetchone()[0] == 0
    got = dict(con.execute("SELECT batch_id, count(*) FROM queue GROUP BY 1").fetchall())
    assert all(got.get(b.batch_id, 0) == b.selected for b in batches)


def test_cell_builds_under_concurrent_callers_build_once(tmp_path):
    """``ensure_cells`` from eight threads on a fresh project, then again once labels arrive: no
    primary-key conflict on cache_state, the cell tables are not doubled."""
    from calib.data import cells
    from calib.review import simulate

    con = _fresh_demo(tmp_path, 80)
    rebuilt = []
    assert _at_once(8, lambda i: rebuilt.append(cells.ensure_cells(con.cursor()))) == []
    assert sum(rebuilt) == 1
    assert con.execute("SELECT count(*) - count(DISTINCT (item_id, model, dimension)) FROM output_cells").fetchone()[0] == 0
    simulate.simulate_sme(con, 5)
    con.execute("DELETE FROM label_cells")  # the labels' cells are looked up by the next callers
    assert _at_once(8, lambda i: cells.ensure_cells(con.cursor())) == []
    n, distinct = con.execute("SELECT count(*), count(DISTINCT (item_id, model, dimension)) FROM label_cells").fetchone()
    assert n == distinct > 0
