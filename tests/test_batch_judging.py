"""Provider batch judging (``calib.judges.batch``) against the OpenAI-compatible fake batch server
(tests/fake_batch.py) through litellm: same rows as the online runner, batch prices, provider
limits, partial failures, expired and failed batches, and resuming after a crash or a stop without
re-submitting or writing anything twice."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from calib import cli
from calib.data import demo, store
from calib.judges import batch, config as judge_config, run as judges
from fake_batch import FakeBatchServer

FAST = dict(poll_seconds=0.01, poll_max_seconds=0.05)


@pytest.fixture
def small(tmp_path):
    con = store.connect(tmp_path / "b.duckdb")
    demo.load_demo(con, 6, seed=5)
    yield con
    con.close()


def _config(tmp_path, api_base: str, extra: str = "") -> judge_config.JudgeConfig:
    p = tmp_path / "judges.toml"
    p.write_text(f"""
[run]
concurrency = 4
max_retries = 2
backoff_seconds = 0.01
[[judge]]
name = "srv"
model = "openai/fake-judge"
api_base = "{api_base}"
input_cost_per_token = 1e-6
output_cost_per_token = 2e-6
input_cost_per_token_batches = 5e-7
output_cost_per_token_batches = 1e-6
dimensions = ["correctness", "style"]
[[judge]]
name = "srv-pair"
kind = "pairwise"
model = "openai/fake-judge"
api_base = "{api_base}"
dimensions = ["overall"]
{extra}
""")
    return judge_config.load_config(p)


N_CALLS = 6 * 2 * 2 + 6 * 2  # 6 items x 2 models x 2 dimensions pointwise + 6 pairs x 2 orders


def _assert_complete_once(con, n: int = N_CALLS) -> None:
    """Every call has exactly one ok row; scores and preferences are written once."""
    ok, distinct = con.execute("SELECT count(*), count(DISTINCT call_key) FROM judge_calls WHERE status = 'ok'").fetchone()
    assert ok == distinct == n
    assert con.execute("SELECT count(*) FROM judge_scores WHERE judge = 'srv'").fetchone()[0] == 24
    assert con.execute("SELECT count(*) FROM pair_judge_prefs WHERE judge = 'srv-pair'").fetchone()[0] == 6


def test_batch_run_writes_what_the_online_runner_writes_at_the_batch_price(small, tmp_path):
    with FakeBatchServer(batch_seconds=0.05) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base), options=batch.BatchOptions(**FAST))
        assert (p.total, p.ok, p.failed, p.submitted, p.batches) == (N_CALLS, N_CALLS, 0, N_CALLS, 2)  # one file per judge
        _assert_complete_once(small)
        assert sum(f.answered.values()) == N_CALLS and max(f.answered.values()) == 1
        # cost at the batch price (the judges file's *_batches), not the online one
        tin, tout, cost = small.execute("SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM judge_calls "
                                        "WHERE judge = 'srv'").fetchone()
        assert cost == pytest.approx(tin * 5e-7 + tout * 1e-6)
        # no price in the file for srv-pair and litellm does not know "fake-judge": no cost, not a guess
        assert small.execute("SELECT count(cost_usd) FROM judge_calls WHERE judge = 'srv-pair'").fetchone()[0] == 0
        assert {r["state"] for r in batch.list_batches(small)} == {"collected"}
        batch_scores = dict(((r[0], r[1], r[2]), r[3]) for r in small.execute(
            "SELECT item_id, model, dimension, score FROM judge_scores WHERE judge = 'srv'").fetchall())
    # the online runner on a copy of the same project gets the same scores (same replies, same parser)
    con2 = store.connect(tmp_path / "online.duckdb")
    demo.load_demo(con2, 6, seed=5)
    with FakeBatchServer() as f2:
        judges.run(con2, _config(tmp_path, f2.api_base))
    online_scores = dict(((r[0], r[1], r[2]), r[3]) for r in con2.execute(
        "SELECT item_id, model, dimension, score FROM judge_scores WHERE judge = 'srv'").fetchall())
    assert online_scores == batch_scores
    # a re-run has nothing to do and submits nothing
    with FakeBatchServer() as f3:
        again = batch.run_batch(small, _config(tmp_path, f3.api_base), options=batch.BatchOptions(**FAST))
        assert again.total == 0 and f3.calls["POST /v1/batches"] == 0


def test_files_respect_the_request_and_byte_limits(small, tmp_path):
    cfg = _config(tmp_path, "http://x")
    tasks, _ = judges.plan(small, cfg)
    lines = [(t.key, batch.request_line(t, "fake-judge")) for t in tasks]
    biggest = max(len(ln) for _, ln in lines) + 1
    files, too_big = batch.split_files(lines, max_requests=5, max_bytes=3 * biggest)
    assert not too_big and sum(len(f) for f in files) == len(lines)
    assert all(len(f) <= 5 and sum(len(ln) + 1 for _, ln in f) <= 3 * biggest for f in files)
    assert [k for f in files for k, _ in f] == [k for k, _ in lines]  # order kept, nothing lost
    files, too_big = batch.split_files(lines, max_requests=100, max_bytes=biggest - 1)
    assert too_big  # a request bigger than a whole file cannot be batched: it is reported, not dropped silently
    # end to end: the server refuses files over its limits, the runner never sends one
    with FakeBatchServer(max_requests=7) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base),
                            options=batch.BatchOptions(max_requests=7, **FAST))
        assert p.ok == N_CALLS and p.batches == 4 + 2  # 24 pointwise in 4 files, 12 pairwise in 2
        assert all(r["requests"] <= 7 for r in batch.list_batches(small))


def test_partial_failures_are_retried_in_a_later_batch(small, tmp_path):
    with FakeBatchServer(pfail=0.3) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base), options=batch.BatchOptions(max_rounds=8, **FAST))
        assert p.ok == N_CALLS and p.requeued > 0 and p.batches > 2
        _assert_complete_once(small)
        failed = small.execute("SELECT count(*), min(error) FROM judge_calls WHERE status = 'failed'").fetchone()
        assert failed[0] == p.requeued and "status 500" in failed[1]  # each failed line is on record, once
        assert max(f.answered.values()) == 1  # nothing answered twice
        assert small.execute("SELECT max(attempts) FROM judge_calls WHERE status = 'ok'").fetchone()[0] > 1


def test_a_key_that_keeps_failing_stops_after_max_rounds_and_a_rerun_tries_again(small, tmp_path):
    with FakeBatchServer(pfail=1.0) as f:
        cfg = _config(tmp_path, f.api_base)
        p = batch.run_batch(small, cfg, options=batch.BatchOptions(max_rounds=2, **FAST))
        assert (p.ok, p.failed, p.done, p.batches) == (0, N_CALLS, N_CALLS, 4)  # two rounds, then the run ends
        per_key = small.execute("SELECT count(*), max(attempts) FROM judge_calls GROUP BY call_key").fetchall()
        assert len(per_key) == N_CALLS and set(per_key) == {(2, 2)}  # each failure on record, with its attempt
        f.pfail = 0.0
        again = batch.run_batch(small, cfg, options=batch.BatchOptions(**FAST))
        assert again.ok == N_CALLS
        _assert_complete_once(small)


def test_failed_lines_fall_back_to_the_online_runner(small, tmp_path):
    with FakeBatchServer(pfail=0.3) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base),
                            options=batch.BatchOptions(fallback="online", **FAST))
        assert p.ok == N_CALLS and p.batches == 2  # no second batch: the retries went online
        assert sum(f.online_answered.values()) == p.requeued > 0
        _assert_complete_once(small)


def test_expired_and_failed_batches_are_requeued(small, tmp_path):
    with FakeBatchServer(expire_next=1, expired_share=0.5, fail_next=0) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base), options=batch.BatchOptions(**FAST))
        assert p.ok == N_CALLS
        _assert_complete_once(small)
        states = [(r["state"], r["error"]) for r in batch.list_batches(small)]
        assert any(e == "expired" for _, e in states)
        # unanswered lines of an expired batch were never attempted: no failed row for them
        assert small.execute("SELECT count(*) FROM judge_calls WHERE status = 'failed'").fetchone()[0] == 0
    small.execute("DELETE FROM judge_calls; DELETE FROM judge_scores; DELETE FROM pair_judge_prefs")
    with FakeBatchServer(fail_next=1) as f:
        p = batch.run_batch(small, _config(tmp_path, f.api_base), options=batch.BatchOptions(**FAST))
        assert p.ok == N_CALLS
        assert any((r["error"] or "").startswith("failed: invalid_file") for r in batch.list_batches(small))


class _Crash(BaseException):
    """Stands for the process dying at a chosen point (a BaseException: no handler may catch it)."""


class _CrashingAPI(batch.LitellmBatchAPI):
    crash_after_create = 0  # crash right after the provider created the Nth batch, before it is recorded
    crash_in_collect = False  # crash while downloading results

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.created = 0

    def create(self, file_id, tag):
        b = super().create(file_id, tag)
        self.created += 1
        if self.created == type(self).crash_after_create:
            raise _Crash("killed after create")
        return b

    def content(self, file_id):
        if type(self).crash_in_collect:
            raise _Crash("killed while collecting")
        return super().content(file_id)


def test_resume_after_crashes_neither_resubmits_nor_duplicates(small, tmp_path):
    with FakeBatchServer(batch_seconds=0.05) as f:
        cfg = _config(tmp_path, f.api_base)
        opts = batch.BatchOptions(max_requests=10, **FAST)
        # 1. killed after the provider created the 2nd batch, before its id was recorded locally
        _CrashingAPI.crash_after_create, _CrashingAPI.crash_in_collect = 2, False
        with pytest.raises(_Crash):
            batch.run_batch(small, cfg, options=opts, api_factory=_CrashingAPI)
        rec = small.execute("SELECT state, provider_batch_id FROM judge_batches ORDER BY batch_no").fetchall()
        assert rec[-1] == ("uploaded", None) and f.calls["POST /v1/batches"] == 2
        # 2. resumed, then killed while downloading results: the adopted batch is looked up by its tag
        _CrashingAPI.crash_after_create, _CrashingAPI.crash_in_collect = 0, True
        with pytest.raises(_Crash):
            batch.run_batch(small, cfg, options=opts, api_factory=_CrashingAPI)
        assert small.execute("SELECT count(*) FROM judge_calls").fetchone()[0] == 0  # nothing half-written
        created = f.calls["POST /v1/batches"]
        adopted = small.execute("SELECT state, provider_batch_id FROM judge_batches WHERE batch_no = 2").fetchone()
        assert adopted[0] != "abandoned" and adopted[1]  # found at the provider by its tag, not re-submitted
        # 3. resumed to the end
        _CrashingAPI.crash_in_collect = False
        p = batch.run_batch(small, cfg, options=opts, api_factory=_CrashingAPI)
        assert p.batches == 0
        _assert_complete_once(small)
        assert max(f.answered.values()) == 1 and sum(f.answered.values()) == N_CALLS  # no call sent twice
        assert f.calls["POST /v1/batches"] == created  # the last run only collected
        assert small.execute("SELECT count(*) FROM judge_batches WHERE state = 'abandoned'").fetchone()[0] == 0


def test_crash_before_the_batch_exists_requeues_its_calls(small, tmp_path):
    class _UploadDies(batch.LitellmBatchAPI):
        def upload(self, name, data):
            raise _Crash("killed before upload finished")

    with FakeBatchServer() as f:
        cfg = _config(tmp_path, f.api_base)
        with pytest.raises(_Crash):
            batch.run_batch(small, cfg, options=batch.BatchOptions(**FAST), api_factory=_UploadDies)
        assert small.execute("SELECT state FROM judge_batches").fetchall() == [("submitting",)]
        p = batch.run_batch(small, cfg, options=batch.BatchOptions(**FAST))
        assert p.ok == N_CALLS
        assert small.execute("SELECT state FROM judge_batches ORDER BY batch_no").fetchall()[0] == ("abandoned",)
        _assert_complete_once(small)


def test_stop_after_submit_leaves_batches_in_flight_and_a_rerun_collects_them(small, tmp_path):
    with FakeBatchServer(batch_seconds=0.3) as f:
        cfg = _config(tmp_path, f.api_base)
        stop = threading.Event()

        def on_progress(p):
            if p.batches >= 2:
                stop.set()

        first = batch.run_batch(small, cfg, options=batch.BatchOptions(**FAST), stop=stop, on_progress=on_progress)
        assert first.stopped and first.in_flight == N_CALLS and first.ok == 0
        second = batch.run_batch(small, cfg, options=batch.BatchOptions(**FAST))
        assert second.batches == 0 and second.ok == N_CALLS  # collected, not submitted again
        assert f.calls["POST /v1/batches"] == 2 and max(f.answered.values()) == 1
        _assert_complete_once(small)


def test_cli_judge_run_batch_and_batches(tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 6, seed=5)
    con.close()
    with FakeBatchServer() as f:
        _config(tmp_path, f.api_base)
        cfg = str(tmp_path / "judges.toml")
        assert cli.main(["judge", "run", "--batch", "--poll-seconds", "0.01", "--max-batch-requests", "20",
                         "--db", str(db), "--config", cfg]) == 0
        out = capsys.readouterr().out
        assert f"{N_CALLS} ok, 0 failed" in out and "batches" in out
    assert cli.main(["judge", "batches", "--db", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"collected"} and sum(r["requests"] for r in rows) == N_CALLS
    assert cli.main(["judge", "batches", "--db", str(db)]) == 0
    assert "collected" in capsys.readouterr().out


def test_run_judges_page_runs_provider_batches(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import demo_db_file
    from pages.shared import ui

    root = Path(__file__).resolve().parent.parent
    path = demo_db_file(tmp_path / "app.duckdb", 6, seed=5)
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(root)
    with FakeBatchServer() as f:
        _config(tmp_path, f.api_base)
        at = AppTest.from_file(str(root / "pages" / "5_Run_judges.py"), default_timeout=60)
        at.session_state["runj_config"] = str(tmp_path / "judges.toml")
        at.run()
        assert not at.exception
        next(c for c in at.checkbox if c.label == "Provider batch").check().run()
        next(b for b in at.button if b.label == "Start").click().run()
        con = ui._connection(str(path)).cursor()
        for _ in range(300):  # the run is on its own thread
            if con.execute("SELECT count(*) FROM judge_batches WHERE state = 'collected'").fetchone()[0] == 2:
                break
            time.sleep(0.1)
        at.run()
        assert not at.exception
        assert any(m.label == "OK" and m.value == f"{N_CALLS}" for m in at.metric)
        assert f.calls["POST /v1/batches"] == 2
