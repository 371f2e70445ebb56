"""The NUTS worker process: calls run there (not in the app's process), errors come back as
exceptions, it exits when idle, and the samplers go there only for threads that ask."""

from __future__ import annotations

import os
import time

import pytest

from calib.stats import model, nuts_worker


@pytest.fixture
def worker(monkeypatch):
    monkeypatch.setattr(nuts_worker, "IDLE_SECONDS", 0.3)
    yield nuts_worker
    nuts_worker.shutdown()


def test_calls_run_in_another_process_and_errors_come_back(worker):
    pid = worker.call(os.getpid)
    assert pid != os.getpid() and worker.worker_pid() == pid
    assert worker.call(os.getpid) == pid  # the same worker answers while it lives
    with pytest.raises(ValueError, match="invalid literal"):
        worker.call(int, "x")
    assert worker.call(divmod, 7, 2) == (3, 1)  # still serving after an error


def test_the_worker_exits_when_idle_and_starts_again(worker):
    pid = worker.call(os.getpid)
    deadline = time.monotonic() + 10
    while worker.worker_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.worker_pid() is None

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()  # the process is gone (and reaped), its memory returned
    assert worker.call(os.getpid) not in (None, pid)


def test_samplers_go_to_the_worker_only_inside_in_worker(monkeypatch):
    sent = []
    monkeypatch.setattr(nuts_worker, "call", lambda fn, *a, **k: sent.append(fn.__name__) or "from worker")
    assert not nuts_worker.active()
    with nuts_worker.in_worker():
        assert model.fit_nuts(None) == "from worker"
        assert model._pairwise_nuts(None, 10, 0) == "from worker"
    assert sent == ["fit_nuts", "_pairwise_nuts"] and not nuts_worker.active()
