"""NUTS samplers run in a worker process, so the app's process does not keep their memory.

Measured (bench/abuse_concurrency.py): the first NUTS fit in a process raises its resident memory by
~300 MB (282 -> 595 MB in the app; 305 -> 608 MB in a bare process), and that memory stays: it is
not the fit's draws (further fits add < 10 MB, ``gc`` and ``malloc_trim`` give back < 10 MB) but
nutpie and its libraries (~175 MB on import) and the numba-compiled density (~130 MB), which a
Python process cannot unload. So the app runs the sampler in a separate process (``spawn``, one at a
time), which loads them once, answers the fits that follow in ~1 s while it lives, and exits after
``IDLE_SECONDS`` without a fit (``TIEBREAK_NUTS_IDLE_S``, default 300), returning its memory. The
first fit pays the worker's start (the same ~20 s a first fit in the app's process cost before).

Only the sampler crosses (the cell data in, the posterior draws out: arrays of kilobytes to a few
MB); the database stays with the caller. A thread turns it on for its own calls with
``in_worker()``; the CLI (a one-shot process) and the tests sample in-process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

IDLE_SECONDS = float(os.environ.get("TIEBREAK_NUTS_IDLE_S", "300"))

_state = threading.local()
_LOCK = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_busy = 0
_timer: threading.Timer | None = None


@contextmanager
def in_worker() -> Iterator[None]:
    """NUTS samplers called by this thread inside the block run in the worker process."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def active() -> bool:
    """Whether this thread's NUTS samplers go to the worker (and this is not the worker itself)."""
    return getattr(_state, "on", False) and multiprocessing.parent_process() is None


def _init_worker() -> None:  # pragma: no cover - runs in the worker
    # one BLAS thread, as the in-process fit (``engine.one_blas_thread``): the machine's cores are
    # the app's sessions' too
    from threadpoolctl import threadpool_limits

    global _blas_limit
    _blas_limit = threadpool_limits(limits=1, user_api="blas")


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in the worker process (started if needed); its result or its exception."""
    global _pool, _busy, _timer
    with _LOCK:
        if _timer is not None:
            _timer.cancel()
            _timer = None
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker)
        pool = _pool
        _busy += 1
    try:
        return pool.submit(fn, *args, **kwargs).result()
    finally:
        with _LOCK:
            _busy -= 1
            if _busy == 0 and _pool is pool:
                _timer = threading.Timer(IDLE_SECONDS, _stop_if_idle)
                _timer.daemon = True
                _timer.start()


def _stop_if_idle() -> None:
    global _pool
    with _LOCK:
        if _busy or _pool is None:
            return
        pool, _pool = _pool, None
    pool.shutdown(wait=True)


def shutdown() -> None:
    """Stop the worker now (it restarts on the next call); for tests and benchmarks."""
    global _timer
    with _LOCK:
        if _timer is not None:
            _timer.cancel()
            _timer = None
    _stop_if_idle()


def worker_pid() -> int | None:
    """The worker process's id while it runs, else None."""
    with _LOCK:
        procs = getattr(_pool, "_processes", None) or {}
        return next(iter(procs), None)
