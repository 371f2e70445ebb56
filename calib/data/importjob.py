"""Imports from the app: the file is read in a separate, memory-capped process.

Why: a hostile upload (a 100,000-column CSV, a row bomb, a corrupt Parquet page) must fail only
itself, never the app every SME is using. DuckDB lets one process write a database file, and the
app holds it, so the work is split:

1. a child process (``python -m calib.data.importjob``) with an address-space cap
   (``RLIMIT_AS``, setting ``import_memory_mb``) and a capped DuckDB checks the limits and reads the
   whole file (``calib.data.readers.prepare``) into a typed Parquet file with a ``_row`` column;
2. the app then imports that bounded, already-read Parquet in its own transaction
   (``ingest.import_file(..., prepared=...)``): the same checks and one-line errors as the CLI.

A child that runs out of memory, crashes or overruns its time is reported as the one-line error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from calib.data import ingest, readers, store
from calib.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT_S = 600  # a file that takes longer to read than this is refused (the 5.3M-row Parquet: ~10 s)


def prepare_isolated(path: str | Path, out: str | Path, limits: readers.Limits, memory_mb: int,
                     timeout_s: float = TIMEOUT_S) -> dict:
    """Run ``readers.prepare(path, out, limits)`` in a child process capped at ``memory_mb``."""
    path = Path(path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "calib.data.importjob", str(path), str(out), limits.to_json(), str(int(memory_mb))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired:
        raise InputError(str(path), None, None, f"reading the file took longer than {timeout_s:.0f} s; "
                         "import it with `tiebreak import` while the app is stopped") from None
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    try:
        answer = json.loads(last)
    except json.JSONDecodeError:
        answer = None
    if proc.returncode == 0 and isinstance(answer, dict) and "columns" in answer:
        return answer
    if proc.returncode == 2 and isinstance(answer, dict) and "message" in answer:
        raise InputError(answer["file"], answer["row"], answer["column"], answer["message"])
    if proc.returncode == 3 or proc.returncode < 0 or "MemoryError" in proc.stderr or "Out of Memory" in proc.stderr:
        raise InputError(str(path), None, None,
                         f"reading the file needed more than the {memory_mb:,} MB an import may use in the app "
                         f"(setting import_memory_mb); import it with `tiebreak import` while the app is stopped")
    detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
    raise InputError(str(path), None, None, f"the import process failed: {detail}")


def import_isolated(con, path: str | Path, *, labels: bool = False, **kwargs) -> ingest.ImportReport:
    """``ingest.import_file`` (or ``import_labels`` when ``labels``) with the file read in a capped
    child process first; keyword arguments go to the import. Errors name ``path``."""
    import tempfile

    path = Path(path)
    settings = store.get_settings(con)
    limits = readers.Limits.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="tiebreak-upload-") as tmp:
        prepared = Path(tmp) / "prepared.parquet"
        info = prepare_isolated(path, prepared, limits, int(settings["import_memory_mb"]))
        if labels:
            report = ingest.import_labels(con, path, limits=limits, prepared=prepared, **kwargs)
        else:
            report = ingest.import_file(con, path, limits=limits, prepared=prepared, **kwargs)
    report.notes = list(info.get("notes", [])) + report.notes
    return report


def _child(argv: list[str]) -> int:
    """The child: cap memory first, then read; answer one JSON line on stdout."""
    import resource

    path, out, limits_json, memory_mb = argv
    cap = int(memory_mb) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        limits = readers.Limits.from_json(limits_json)
        con = readers.reader_connection(Path(out).parent, memory_limit=f"{max(64, int(memory_mb) // 4)}MB")
        try:
            info = readers.prepare(path, out, limits, con=con)
        finally:
            con.close()
    except InputError as exc:
        print(json.dumps({"file": exc.file, "row": exc.row, "column": exc.column, "message": exc.message}))
        return 2
    except MemoryError:
        return 3
    except Exception as exc:  # noqa: BLE001 - any other failure: one line for the parent, never a traceback
        if "memory" in str(exc).lower():
            return 3
        print(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
