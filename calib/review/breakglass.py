"""Break-glass unlock while the app runs: the CLI leaves a request file beside the database, the
running app applies it at its next sign-in attempt.

Why files: DuckDB lets one process open a database file, so while the app runs the CLI cannot
write to it. The request needs an authority that does not go through the app (whose admins may
be the ones kept out), and the one the operator already has is the file system: whoever can write
the database's folder as the app's OS user can replace the database itself. So a request counts
only when the request folder and the file belong to the app's OS user (or root), are not links,
and nobody else may write them (folder mode 0700; file not group- or world-writable). Anything
else is refused, logged in the admin log and removed. A request only clears sign-in waits (it
cannot add a user or change a password), and each is applied once and deleted.

No DuckDB and no Streamlit here: only paths, modes and JSON.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".unlock-requests"


def request_dir(db_path: str | os.PathLike) -> Path:
    """The folder beside the database where unlock requests wait: ``<db>.unlock-requests``."""
    p = Path(db_path)
    return p.with_name(p.name + SUFFIX)


def write_request(db_path: str | os.PathLike, name: str) -> Path:
    """Leave a request to clear ``name``'s sign-in waits (the folder made 0700, the file 0600)."""
    folder = request_dir(db_path)
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    body = json.dumps({"name": name, "requested_at": time.time(), "by": _os_user()})
    path = folder / f"{secrets.token_hex(8)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    return path


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment: the uid says enough
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class Request:
    """One request found: ``name`` to unlock (None when refused), who asked, and why refused."""

    path: Path
    name: str | None
    by: str = ""
    refused: str | None = None


def _trusted(st: os.stat_result, folder: bool) -> str | None:
    """Why this file or folder cannot carry authority, or None when it can."""
    if st.st_uid not in (os.getuid(), 0):
        return "owned by another OS user"
    if folder:
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077:
            return "the request folder is open to other OS users (it must be mode 0700)"
    elif not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
        return "not a regular file, or writable by other OS users"
    return None


def pending(db_path: str | os.PathLike) -> list[Request]:
    """The requests waiting (cheap when there are none: one failed ``lstat``)."""
    folder = request_dir(db_path)
    try:
        fst = os.lstat(folder)
    except OSError:
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json") if stat.S_ISDIR(fst.st_mode) else []
    why_folder = _trusted(fst, folder=True)
    out = []
    for p in files:
        try:
            why = why_folder or _trusted(os.lstat(p), folder=False)
            data = {} if why else json.loads(p.read_text()[:10_000])
            name = data.get("name") if isinstance(data, dict) else None
            if not why and not (isinstance(name, str) and 0 < len(name) <= 128):
                why = "no user name in the request"
        except (OSError, ValueError) as exc:
            why, data = f"unreadable ({type(exc).__name__})", {}
        out.append(Request(p, None if why else name, str(data.get("by", ""))[:64] if isinstance(data, dict) else "",
                           why))
    return out


def done(request: Request) -> None:
    """Remove a request once applied or refused (gone already is fine: another session took it)."""
    try:
        request.path.unlink()
    except FileNotFoundError:
        pass
