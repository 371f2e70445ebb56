"""Issue 25, import path: hostile files against `tiebreak import`, and the app's upload endpoint.

Each attack runs `python -m calib.cli import FILE --db NEW.duckdb` as a separate process and reports
its wall time, peak resident memory (the child's ru_maxrss, from os.wait4), exit code and the first
line of its error. Problems (numbers from issue 25): 1 = a small file with many `judge:` columns,
4 = unauthenticated memory fill through Streamlit's upload endpoint, 5 = row bombs, 8 = bad files
that got tracebacks instead of the one-line error.

    .venv/bin/python bench/abuse_imports.py [--workdir DIR] [--no-upload]

Finishes in about a minute on 2 cores; uses only loopback (the app on 127.0.0.1:8610).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# bench/ holds coverage.py, which would shadow the `coverage` package numba probes: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = 8610


# --------------------------------------------------------------------------- hostile files


def wide_csv(path: Path, n_judges: int) -> Path:
    """One row, ``n_judges`` judge columns (100,000 columns: 1.7 MB)."""
    cols = ["item_id", "model", "prompt", "output"] + [f"judge:j{i}:d" for i in range(n_judges)]
    path.write_text(",".join(cols) + "\n" + ",".join(["a", "m", "p", "o"] + ["1"] * n_judges) + "\n")
    return path


def row_bomb_csv(path: Path, rows: int) -> Path:
    """``rows`` identical rows of 8 bytes (10^7 rows: 80 MB)."""
    chunk = b"a,m,p,o\n" * 100_000
    with open(path, "wb") as fh:
        fh.write(b"item_id,model,prompt,output\n")
        for _ in range(rows // 100_000):
            fh.write(chunk)
    return path


def row_bomb_parquet(path: Path, rows: int) -> Path:
    """``rows`` identical rows that compress to under a megabyte (5x10^7 rows: ~0.8 MB)."""
    import duckdb

    duckdb.connect().execute(
        f"""COPY (SELECT 'a' AS item_id, 'm' AS model, 'p' AS prompt, 'o' AS output, 1.0 AS "judge:j:c"
            FROM range({rows})) TO '{path}' (FORMAT PARQUET, COMPRESSION ZSTD)""")
    return path


def corrupt_parquet(path: Path) -> Path:
    """A valid ZSTD Parquet file whose data pages are overwritten with noise (footer intact)."""
    import duckdb

    duckdb.connect().execute(
        f"""COPY (SELECT 'q' || i AS item_id, 'm' AS model, md5(i::VARCHAR) || repeat('x', 50) AS prompt,
            md5((i * 7)::VARCHAR) AS output, random() AS "judge:j:c" FROM range(50000) t(i))
            TO '{path}' (FORMAT PARQUET, COMPRESSION ZSTD)""")
    data = bytearray(path.read_bytes())
    rnd = os.urandom(len(data) // 2)
    start = len(data) // 8
    data[start:start + len(rnd) // 2] = rnd[: len(rnd) // 2]
    path.write_bytes(bytes(data))
    return path


def deep_jsonl(path: Path, depth: int) -> Path:
    path.write_text('{"item_id": "a", "model": "m", "prompt": "p", "output": ' + "[" * depth + "]" * depth
                    + ', "judge:j:c": 1}\n')
    return path


def semicolon_csv(path: Path) -> Path:
    path.write_text("item_id;model;prompt;output;judge:j:c\na;m;p, with a comma;o;1\n")
    return path


# --------------------------------------------------------------------------- measuring


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, the child's peak RSS in MB, exit code, first error line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(ROOT))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return {"s": seconds, "mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "stderr_lines": len(lines),
            "err": lines[-1] if lines else ""}


def cli_import(path: Path, workdir: Path) -> dict:
    db = workdir / f"{path.stem}.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    return measure([sys.executable, "-m", "calib.cli", "import", str(path), "--db", str(db)])


def _figure(r: dict, path: Path | None = None) -> str:
    msg = r["err"].replace(str(path.parent) + "/", "") if path else r["err"]
    lines = "one line" if r["stderr_lines"] == 1 else f"{r['stderr_lines']} lines"
    return f"{r['s']:.1f} s, peak {r['mb']:.0f} MB, exit {r['rc']}, {lines}: {msg[:150]}"


def file_attacks(workdir: Path) -> list[dict]:
    rows = []
    for n in (1_000, 10_000, 100_000):
        p = wide_csv(workdir / f"wide_{n}.csv", n)
        rows.append({"problem": "1", "attack": f"CSV of 1 row with {n:,} judge: columns ({p.stat().st_size / 1e6:.2f} MB)",
                     "figure": _figure(cli_import(p, workdir), p)})
    p = wide_csv(workdir / "wide_200.csv", 200)
    rows.append({"problem": "1", "attack": "control: 200 judge: columns (the default limit), 1 row: imported",
                 "figure": _figure(cli_import(p, workdir), p)})
    p = row_bomb_csv(workdir / "rows_1e7.csv", 10_000_000)
    rows.append({"problem": "5", "attack": f"CSV of 10^7 identical rows ({p.stat().st_size / 1e6:.0f} MB)",
                 "figure": _figure(cli_import(p, workdir), p)})
    p.unlink()
    p = row_bomb_parquet(workdir / "rows_5e7.parquet", 50_000_000)
    rows.append({"problem": "5", "attack": f"Parquet of 5x10^7 rows ({p.stat().st_size / 1e3:.0f} KB)",
                 "figure": _figure(cli_import(p, workdir), p)})
    p = corrupt_parquet(workdir / "corrupt.parquet")
    rows.append({"problem": "8", "attack": "Parquet with corrupted ZSTD data pages (footer intact)",
                 "figure": _figure(cli_import(p, workdir), p)})
    p = deep_jsonl(workdir / "deep.jsonl", 100_000)
    rows.append({"problem": "8", "attack": "JSONL line nested 100,000 deep",
                 "figure": _figure(cli_import(p, workdir), p)})
    p = semicolon_csv(workdir / "semicolon.csv")
    r = cli_import(p, workdir)
    rows.append({"problem": "issue 24", "attack": "semicolon-separated CSV",
                 "figure": f"exit {r['rc']}, {r['s']:.1f} s" + (f": {r['err']}" if r["rc"] else ": imported")})
    # the app's path: the same files read in the memory-capped child (calib.data.importjob)
    from calib.data import importjob, readers
    from calib.errors import InputError

    for name in ("wide_100000.csv", "corrupt.parquet", "deep.jsonl"):
        t = time.perf_counter()
        try:
            importjob.prepare_isolated(workdir / name, workdir / "prepared.parquet", readers.Limits(), 2048)
            got = "read"
        except InputError as exc:
            got = str(exc).replace(str(workdir) + "/", "")
        rows.append({"problem": "1/8" if name != "corrupt.parquet" else "8",
                     "attack": f"app upload path: {name} read in the capped child (2 GB address space)",
                     "figure": f"{time.perf_counter() - t:.1f} s: {got[:150]}"})
    return rows


# --------------------------------------------------------------------------- the upload endpoint


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the app runs as one process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _open_session(port: int):
    """Open an unauthenticated session the way a browser on the sign-in page does: GET the health check for the
    XSRF cookie, open the websocket, ask for a run; return (websocket, session_id, xsrf cookie)."""
    import httpx
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    base = f"http://127.0.0.1:{port}"
    xsrf = httpx.get(base + "/_stcore/health", timeout=30).cookies.get("_streamlit_xsrf")  # set by the health check
    warnings.filterwarnings("ignore", message=r"connect\(\) must be used", category=DeprecationWarning)
    ws = connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit", xsrf] if xsrf else ["streamlit"],
                 additional_headers={"Cookie": f"_streamlit_xsrf={xsrf}", "Origin": base}, open_timeout=30,
                 max_size=None)
    msg = BackMsg()
    msg.rerun_script.query_string = ""
    ws.send(msg.SerializeToString())
    deadline = time.time() + 60
    while time.time() < deadline:
        fwd = ForwardMsg()
        fwd.ParseFromString(ws.recv(timeout=60))
        if fwd.WhichOneof("type") == "new_session":
            return ws, fwd.new_session.initialize.session_id, xsrf
    raise RuntimeError("no session id from the app")


def upload_attack(workdir: Path, files: int = 6, mb: int = 40) -> list[dict]:
    """Start the app on a fresh project, open an unauthenticated session (the sign-in page), PUT
    ``files`` files of ``mb`` MB to /_stcore/upload_file/<session>/<id>, close the session; the app's
    resident memory before, after the uploads and after the tab closed."""
    import httpx

    from calib.data import store
    from calib.review import users

    db = workdir / "upload.duckdb"
    con = store.connect(db)
    users.add_user(con, "ada", "admin", "ada-password")  # a user exists: the app asks to sign in
    con.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIEBREAK_DB=str(db))
    log = open(workdir / "app.log", "w")
    app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(PORT),
                            "--server.address", "127.0.0.1"], cwd=str(ROOT), env=env, stdout=log, stderr=log)
    rows = []
    try:
        for _ in range(120):
            try:
                if httpx.get(f"http://127.0.0.1:{PORT}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        limit = None
        for line in (ROOT / ".streamlit" / "config.toml").read_text().splitlines():
            if line.strip().startswith("maxUploadSize"):
                limit = int(line.split("=")[1])
        ws, session, xsrf = _open_session(PORT)
        time.sleep(2)
        before = _rss_mb(app.pid)
        payload = os.urandom(mb * 1024 * 1024)
        codes = []
        for i in range(files):
            r = httpx.put(f"http://127.0.0.1:{PORT}/_stcore/upload_file/{session}/probe{i}",
                          files={"file": (f"f{i}.csv", payload, "text/csv")},
                          headers={"X-Xsrftoken": xsrf or ""}, cookies={"_streamlit_xsrf": xsrf or ""}, timeout=120)
            codes.append(r.status_code)
        after = _rss_mb(app.pid)
        big = httpx.put(f"http://127.0.0.1:{PORT}/_stcore/upload_file/{session}/big",
                        files={"file": ("big.csv", os.urandom((limit or 200) * 1024 * 1024 + 1024), "text/csv")},
                        headers={"X-Xsrftoken": xsrf or ""}, cookies={"_streamlit_xsrf": xsrf or ""}, timeout=120)
        ws.close()
        time.sleep(5)
        closed = _rss_mb(app.pid)
        rows.append({"problem": "4", "attack": f"{files} PUTs of {mb} MB to /_stcore/upload_file from an unauthenticated "
                                               f"session (sign-in page); server.maxUploadSize = {limit} MB",
                     "figure": f"status {sorted(set(codes))}; app RSS {before:.0f} MB -> {after:.0f} MB after the "
                               f"uploads (+{after - before:.0f}) -> {closed:.0f} MB 5 s after the tab closed"})
        rows.append({"problem": "4", "attack": f"one PUT just over maxUploadSize ({limit} MB), same session",
                     "figure": f"status {big.status_code} (413 = refused as too large)"})
    finally:
        app.terminate()
        app.wait(30)
        log.close()
    return rows


def run(workdir: Path | None = None, upload: bool = True) -> list[dict]:
    """Every attack; rows of {problem, attack, figure}."""
    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="tiebreak-abuse-") if own else None
    workdir = Path(tmp.name) if own else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = file_attacks(workdir)
        if upload:
            rows += upload_attack(workdir)
        return rows
    finally:
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    ap.add_argument("--no-upload", action="store_true")
    a = ap.parse_args()
    for row in run(Path(a.workdir) if a.workdir else None, upload=not a.no_upload):
        print(json.dumps(row))
