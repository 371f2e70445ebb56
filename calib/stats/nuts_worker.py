"""NUTS samplers run in a worker process, so the app's process does not keep their memory.

Measured (bench/abuse_concurrency.py): the first NUTS fit in a process raises its resident memory by
~300 MB (282 -> 595 MB in the app; 305 -> 608 MB in a bare process), and that memory stays: it is
not the fit's draws (further fits add < 10 MB, ``gc`` and ``malloc_trim`` give back < 10 MB) but
nutpie and its libraries (~175 MB on import) and the numba-compiled density, which a Python process
cannot unload. So the app runs the sampler in a separate process, which loads them once, answers
the fits that follow in seconds while it lives, and exits after ``IDLE_SECONDS`` without a fit
(``TIEBREAK_NUTS_IDLE_S``, default 300), returning its memory. The first fit pays the worker's start.

The worker is a plain ``python -c`` child fed pickled calls on its stdin (answers on a duplicate of
its stdout; anything a library prints goes to stderr), not ``multiprocessing``: Streamlit replaces
``__main__`` with the page being run, and a ``spawn``ed child would re-run that page. Only the
sampler crosses (the cell data in, the posterior draws out: kilobytes to a few MB); the database
stays with the caller. A thread turns the worker on for its own calls with ``in_worker()``; the CLI
(a one-shot process) and the tests sample in-process.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator

IDLE_SECONDS = float(os.environ.get("TIEBREAK_NUTS_IDLE_S", "300"))
_IN_WORKER_ENV = "TIEBREAK_NUTS_WORKER"

_state = threading.local()
_LOCK = threading.Lock()  # one call at a time: one worker, one sampler
_proc: subprocess.Popen | None = None
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
    """Whether this thread's NUTS samplers go to the worker (never inside the worker itself)."""
    return getattr(_state, "on", False) and not os.environ.get(_IN_WORKER_ENV)


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack("<Q", head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _start() -> subprocess.Popen:
    env = dict(os.environ)
    env[_IN_WORKER_ENV] = "1"
    # the parent's import path, so the worker runs the same calib (a worktree, an installed copy)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.Popen([sys.executable, "-c", "from calib.stats.nuts_worker import serve; serve()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=os.getcwd())


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in the worker process (started if needed): its result, or its
    exception raised here. ``fn`` must be importable by name (a module-level function)."""
    global _proc, _timer
    with _LOCK:
        if _timer is not None:
            _timer.cancel()
            _timer = None
        if _proc is None or _proc.poll() is not None:
            _proc = _start()
        proc = _proc
        try:
            _send(proc.stdin, (fn, args, kwargs))
            ok, value = _recv(proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            _proc = None
            proc.kill()
            raise RuntimeError("the NUTS worker process ended unexpectedly (out of memory?)") from None
        finally:
            if _proc is not None:
                _timer = threading.Timer(IDLE_SECONDS, _stop_if_idle)
                _timer.daemon = True
                _timer.start()
    if not ok:
        raise value
    return value


def _stop_if_idle() -> None:
    global _proc
    if not _LOCK.acquire(blocking=False):
        return  # a call is running; it re-arms the timer when done
    try:
        proc, _proc = _proc, None
    finally:
        _LOCK.release()
    if proc is not None:
        proc.stdin.close()  # the worker's loop ends at EOF
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def shutdown() -> None:
    """Stop the worker now (it starts again on the next call); for tests and benchmarks."""
    global _timer
    with _LOCK:
        if _timer is not None:
            _timer.cancel()
            _timer = None
    _stop_if_idle()


def worker_pid() -> int | None:
    """The worker process's id while it runs, else None."""
    proc = _proc
    return proc.pid if proc is not None and proc.poll() is None else None


def serve() -> None:  # pragma: no cover - runs in the worker
    """The worker's loop: read a call from stdin, answer (ok, result) or (False, exception)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the answers
    sys.stdout = sys.stderr
    from threadpoolctl import threadpool_limits

    # one BLAS thread, as the in-process fit (``engine.one_blas_thread``): the cores are the app's too
    threadpool_limits(limits=1, user_api="blas")
    inp = sys.stdin.buffer
    while True:
        try:
            fn, args, kwargs = _recv(inp)
        except EOFError:
            return
        try:
            answer = (True, fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller
            answer = (False, exc)
        try:
            _send(out, answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(out, (False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
