"""DuckDB storage: connection, ordered migrations, settings and small shared queries.

One DuckDB file is the single source of truth. The schema is built by the ordered migration
functions in ``MIGRATIONS``; each applied migration is recorded in ``_migrations`` (as in
simonw/llm), so opening an old file upgrades it and opening a current one does nothing.

Big tables (items, outputs, judge_scores) carry no PRIMARY KEY: DuckDB's ART index makes bulk
loads of millions of rows slow and memory hungry, so uniqueness is enforced by the importer
(``calib.data.ingest``) with anti-joins inside the import transaction. Labels are append-only: no code
path issues UPDATE or DELETE on ``labels`` or ``pair_labels``; a correction is a new row and the
newest row per (item, model/pair, dimension, annotator) counts.
"""

from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb

from calib.errors import TiebreakError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DB = REPO_ROOT / "data" / "demo.duckdb"

DEFAULT_SETTINGS: dict[str, Any] = {
    "baseline": None,  # model name of the production ("old") model
    "candidates": [],  # candidate model names
    "dimensions": [],  # judged dimensions, e.g. correctness, refusal, style
    "margin": 0.02,  # non-inferiority margin on the pass-rate difference
    "decide_prob": 0.95,  # posterior probability needed for a decision
    "interval": 0.95,  # credible interval mass
    "random_share": 0.2,  # share of the queue drawn uniformly at random
    "overlap_share": 0.1,  # share of queued items served to a second SME
    "lease_minutes": 30,
    "show_judges_to_sme": False,
    "demo_mode": False,
    "target_width": 0.05,  # interval width of Delta at which a lead may stop
    "signoff_max_p95_latency_ms": 0.0,  # the candidate's p95 latency must not exceed this (0 = no limit)
    "signoff_max_cost_per_1k_usd": 0.0,  # the candidate's cost per 1,000 requests must not exceed this (0 = no limit)
    "demo_pace": 1.0,  # demo mode: simulated SME items per second
    "min_decision_items": 20,  # fewest items labelled for both models before "not worse"/"worse" is announced
    # how a decision is taken (calib/stats/sequential.py): "anytime" = a confidence sequence, valid however
    # often the Decision page is watched; "fixed" = the one-look interval (bench/sequential_signoff.py)
    "signoff_mode": "anytime",
    "anytime_target_items": 100,  # labelled items at which the anytime-valid bound is tightest
    "forecast_prior_sd": 0.1,  # the forecast's sceptical prior on Delta: N(0, sd^2) (most changes move a rate < 0.2)
    # the budget planner (calib/insight/plan.py): an SME label's cost in USD (0 = from the measured
    # median rating time x sme_hourly_usd)
    "sme_cost_per_label": 0.0,
    "sme_hourly_usd": 60.0,
    # import limits, checked before any work (calib.data.readers.Limits); a file over one is refused
    "import_max_bytes": 10_000_000_000,  # file size (app uploads are further capped by server.maxUploadSize)
    "import_max_rows": 8_000_000,  # data rows per file (5.3M rows import in ~34 s, 2 GB)
    "import_max_columns": 500,
    "import_max_judge_columns": 200,  # judge:/pref: columns (judges x dimensions)
    "import_max_depth": 20,  # nesting of a JSON value or a Parquet column type
    "import_memory_mb": 2048,  # the app's import process: address-space cap (a bad file fails only it)
}

# settings whose value must be one of a few words (a typo must not silently mean another rule)
SETTING_CHOICES: dict[str, tuple[str, ...]] = {"signoff_mode": ("anytime", "fixed")}


# --------------------------------------------------------------------------- migrations


def _m001_core(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

        CREATE TABLE items (
            item_id VARCHAR NOT NULL,
            segment VARCHAR NOT NULL,
            topic VARCHAR,
            prompt VARCHAR NOT NULL,
            context VARCHAR,
            reference VARCHAR,
            imported_at TIMESTAMP NOT NULL
        );

        CREATE TABLE outputs (
            item_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            output VARCHAR NOT NULL,
            latency_ms DOUBLE,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cost_usd DOUBLE
        );

        CREATE TABLE judge_scores (
            item_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            judge VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            score DOUBLE NOT NULL,
            rationale VARCHAR
        );

        CREATE TABLE pair_judge_prefs (
            item_id VARCHAR NOT NULL,
            baseline VARCHAR NOT NULL,
            candidate VARCHAR NOT NULL,
            judge VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            preference DOUBLE NOT NULL
        );

        CREATE SEQUENCE label_seq START 1;
        CREATE TABLE labels (
            label_id BIGINT PRIMARY KEY DEFAULT nextval('label_seq'),
            item_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            verdict BOOLEAN NOT NULL,
            kind VARCHAR,
            annotator VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            note VARCHAR,
            source VARCHAR NOT NULL,
            duration_ms BIGINT,
            lease_id BIGINT,
            side VARCHAR
        );

        CREATE SEQUENCE pair_label_seq START 1;
        CREATE TABLE pair_labels (
            label_id BIGINT PRIMARY KEY DEFAULT nextval('pair_label_seq'),
            item_id VARCHAR NOT NULL,
            baseline VARCHAR NOT NULL,
            candidate VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            preference VARCHAR NOT NULL CHECK (preference IN ('candidate', 'baseline', 'tie')),
            strength INTEGER,
            annotator VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            note VARCHAR,
            source VARCHAR NOT NULL,
            duration_ms BIGINT,
            lease_id BIGINT,
            left_model VARCHAR
        );

        CREATE SEQUENCE queue_seq START 1;
        CREATE TABLE queue (
            queue_id BIGINT PRIMARY KEY DEFAULT nextval('queue_seq'),
            item_id VARCHAR NOT NULL,
            inclusion_prob DOUBLE NOT NULL,
            policy VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            priority DOUBLE,
            batch_id BIGINT,
            overlap BOOLEAN NOT NULL DEFAULT FALSE,
            created_at TIMESTAMP NOT NULL
        );

        CREATE SEQUENCE lease_seq START 1;
        CREATE TABLE leases (
            lease_id BIGINT PRIMARY KEY DEFAULT nextval('lease_seq'),
            item_id VARCHAR NOT NULL,
            annotator VARCHAR NOT NULL,
            leased_at TIMESTAMP NOT NULL,
            expires_at TIMESTAMP NOT NULL,
            ended_at TIMESTAMP,
            outcome VARCHAR,
            reason VARCHAR
        );

        CREATE SEQUENCE fit_seq START 1;
        CREATE TABLE fits (
            fit_id BIGINT PRIMARY KEY DEFAULT nextval('fit_seq'),
            created_at TIMESTAMP NOT NULL,
            kind VARCHAR NOT NULL,
            n_labels INTEGER NOT NULL,
            seconds DOUBLE,
            result JSON NOT NULL
        );

        CREATE TABLE sim_truth (
            item_id VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            verdict BOOLEAN NOT NULL,
            kind VARCHAR
        );

        CREATE TABLE sim_truth_pairs (
            item_id VARCHAR NOT NULL,
            baseline VARCHAR NOT NULL,
            candidate VARCHAR NOT NULL,
            dimension VARCHAR NOT NULL,
            preference VARCHAR NOT NULL,
            strength INTEGER
        );
        """
    )


def _m002_model_cells(con: duckdb.DuckDBPyConnection) -> None:
    """Derived tables the calibration engine rebuilds when the outputs or judge scores change."""
    con.execute(
        """
        CREATE TABLE cache_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

        CREATE TABLE judge_scale (
            judge VARCHAR NOT NULL, dimension VARCHAR NOT NULL, mean DOUBLE NOT NULL, sd DOUBLE NOT NULL,
            lo DOUBLE NOT NULL, hi DOUBLE NOT NULL, threshold DOUBLE NOT NULL
        );
        CREATE TABLE judge_naive (
            judge VARCHAR NOT NULL, dimension VARCHAR NOT NULL, model VARCHAR NOT NULL, pass_rate DOUBLE NOT NULL
        );
        CREATE TABLE model_cells (
            dimension VARCHAR NOT NULL, cell_id INTEGER NOT NULL, model VARCHAR NOT NULL, segment VARCHAR NOT NULL,
            x DOUBLE[] NOT NULL, n BIGINT NOT NULL, sum_f DOUBLE NOT NULL
        );
        CREATE TABLE output_cells (
            item_id VARCHAR NOT NULL, model VARCHAR NOT NULL, dimension VARCHAR NOT NULL, cell_id INTEGER NOT NULL,
            f DOUBLE NOT NULL
        );
        CREATE TABLE pair_cells (
            baseline VARCHAR NOT NULL, candidate VARCHAR NOT NULL, cell_id INTEGER NOT NULL, x DOUBLE[] NOT NULL,
            n BIGINT NOT NULL
        );
        CREATE TABLE item_pair_cells (
            item_id VARCHAR NOT NULL, baseline VARCHAR NOT NULL, candidate VARCHAR NOT NULL, cell_id INTEGER NOT NULL
        );
        """
    )


def _m003_disagreement(con: duckdb.DuckDBPyConnection) -> None:
    """Per-item judge disagreement (rebuilt with the cells) and lead decisions on flagged items."""
    con.execute(
        """
        CREATE TABLE item_disagreement (
            item_id VARCHAR NOT NULL, segment VARCHAR NOT NULL, topic VARCHAR,
            within_judges DOUBLE NOT NULL, between_models DOUBLE NOT NULL, score DOUBLE NOT NULL
        );
        CREATE TABLE flag_reviews (
            lease_id BIGINT NOT NULL, reviewer VARCHAR NOT NULL, decision VARCHAR NOT NULL,
            note VARCHAR, created_at TIMESTAMP NOT NULL
        );
        """
    )


def _m004_users(con: duckdb.DuckDBPyConnection) -> None:
    """App users with roles; passwords stored as bcrypt hashes only."""
    con.execute(
        """
        CREATE TABLE users (
            name VARCHAR PRIMARY KEY, role VARCHAR NOT NULL CHECK (role IN ('sme', 'lead', 'admin')),
            password_hash VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL
        );
        CREATE TABLE guidelines (
            version INTEGER NOT NULL, text VARCHAR NOT NULL, author VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL
        );
        """
    )


def _m005_label_cells(con: duckdb.DuckDBPyConnection) -> None:
    """The cell of each labelled output, filled incrementally so a refit never scans output_cells."""
    con.execute(
        """CREATE TABLE label_cells (
               item_id VARCHAR NOT NULL, model VARCHAR NOT NULL, dimension VARCHAR NOT NULL,
               cell_id INTEGER NOT NULL, f DOUBLE NOT NULL
           )"""
    )


def _m006_queue_progress(con: duckdb.DuckDBPyConnection) -> None:
    """How many SMEs have labelled each queued item, kept up to date on submit, so serving looks
    only at the open head of the queue."""
    con.execute("ALTER TABLE queue ADD COLUMN n_done INTEGER DEFAULT 0")


def _m007_judge_calls(con: duckdb.DuckDBPyConnection) -> None:
    """Append-only log of every judge or generation call Tiebreak makes through litellm (or an
    offline judge): the resumable cache (``call_key`` = hash of the judge's configuration and the
    exact input) and the record of tokens, cost and latency. Time to first token for outputs."""
    con.execute(
        """CREATE SEQUENCE judge_call_seq START 1;
           CREATE TABLE judge_calls (
               call_id BIGINT PRIMARY KEY DEFAULT nextval('judge_call_seq'),
               call_key VARCHAR NOT NULL,
               task VARCHAR NOT NULL CHECK (task IN ('score', 'pair', 'generate')),
               judge VARCHAR NOT NULL,
               item_id VARCHAR NOT NULL,
               model VARCHAR,
               other_model VARCHAR,
               dimension VARCHAR,
               position VARCHAR,
               status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
               score DOUBLE,
               verdict VARCHAR,
               rationale VARCHAR,
               raw VARCHAR,
               error VARCHAR,
               attempts INTEGER NOT NULL,
               input_tokens BIGINT,
               output_tokens BIGINT,
               cost_usd DOUBLE,
               latency_ms DOUBLE,
               ttft_ms DOUBLE,
               created_at TIMESTAMP NOT NULL
           );
           ALTER TABLE outputs ADD COLUMN ttft_ms DOUBLE;"""
    )


def _m008_sign_in_and_admin(con: duckdb.DuckDBPyConnection) -> None:
    """Sign-in that holds across processes and restarts: failure counters per user name and per
    client (backoff and lockout, ``calib.review.throttle``), users that can be deactivated, a
    session epoch per user (bumped on password change or sign-out everywhere: older session tokens
    stop working), the key that signs session cookies (generated once, here), and an append-only
    log of what admins and leads did (users, settings, imports)."""
    import secrets

    con.execute(
        """CREATE TABLE sign_in_throttle (
               scope VARCHAR NOT NULL CHECK (scope IN ('user', 'client')),
               key VARCHAR NOT NULL,
               failures INTEGER NOT NULL,
               last_failure_at DOUBLE,
               locked BOOLEAN NOT NULL,
               PRIMARY KEY (scope, key)
           );
           ALTER TABLE users ADD COLUMN active BOOLEAN DEFAULT TRUE;
           ALTER TABLE users ADD COLUMN session_epoch INTEGER DEFAULT 0;
           CREATE TABLE app_secrets (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
           CREATE SEQUENCE audit_seq START 1;
           CREATE TABLE audit_log (
               event_id BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
               created_at TIMESTAMP NOT NULL,
               actor VARCHAR NOT NULL,
               action VARCHAR NOT NULL,
               detail VARCHAR
           );"""
    )
    con.execute("INSERT INTO app_secrets VALUES ('session_key', ?)", [secrets.token_urlsafe(48)])


def _m009_unit_candidate(con: duckdb.DuckDBPyConnection) -> None:
    """The unit of SME work becomes (item, candidate): the baseline's and one candidate's output.
    ``queue.candidate`` and ``leases.candidate`` name the candidate; NULL (rows from before) means
    the project's first candidate, so a one-candidate project reads exactly as before."""
    con.execute("ALTER TABLE queue ADD COLUMN candidate VARCHAR; ALTER TABLE leases ADD COLUMN candidate VARCHAR")


def _m010_sso_user_email(con: duckdb.DuckDBPyConnection) -> None:
    """Single sign-on matches the identity provider's verified e-mail to a Tiebreak user: each user
    may have one e-mail (stored lower-case; unique among users, checked in ``calib.review.sso``
    rather than by an index, which DuckDB would check against rows updated in the same transaction)."""
    con.execute("ALTER TABLE users ADD COLUMN email VARCHAR")


def _m011_drafts(con: duckdb.DuckDBPyConnection) -> None:
    """An SME's answers in progress, one row per SME and unit of work (item, candidate; '' for a
    project's rows from before units had a candidate), so a reload or a new tab shows them again.
    Not labels: nothing reads this table but the Label page, and a submit or skip deletes the row."""
    con.execute(
        """CREATE TABLE drafts (
               annotator VARCHAR NOT NULL,
               item_id VARCHAR NOT NULL,
               candidate VARCHAR NOT NULL,
               answers JSON NOT NULL,
               updated_at TIMESTAMP NOT NULL,
               PRIMARY KEY (annotator, item_id, candidate)
           )"""
    )


def _m012_auth_throttle_pairs(con: duckdb.DuckDBPyConnection) -> None:
    """Sign-in failures are also counted per (user name, address) (scope ``pair``), so a name's
    wait can hold only for the addresses that failed for it; locks are gone (``locked`` is kept,
    always FALSE, and old locks are lifted). DuckDB cannot alter a CHECK: the table is rebuilt."""
    con.execute(
        """CREATE TABLE sign_in_throttle_new (
               scope VARCHAR NOT NULL CHECK (scope IN ('user', 'client', 'pair')),
               key VARCHAR NOT NULL,
               failures INTEGER NOT NULL,
               last_failure_at DOUBLE,
               locked BOOLEAN NOT NULL,
               PRIMARY KEY (scope, key)
           );
           INSERT INTO sign_in_throttle_new SELECT scope, key, failures, last_failure_at, FALSE FROM sign_in_throttle;
           DROP TABLE sign_in_throttle;
           ALTER TABLE sign_in_throttle_new RENAME TO sign_in_throttle;"""
    )


def _m013_judge_batches(con: duckdb.DuckDBPyConnection) -> None:
    """Provider batch judging (``calib.judges.batch``): one row per batch file Tiebreak submits,
    written BEFORE the upload (state 'submitting', with a random ``tag`` also sent as the batch's
    metadata) so a crash between upload and the local update can be recovered by looking the tag
    up at the provider; ``judge_batch_calls`` lists the call keys each batch holds, so a resumed run
    never re-submits what is in flight. ``state`` follows the provider (validating, in_progress,
    finalizing, completed, failed, expired, cancelling, cancelled) until the results are written
    ('collected'), or 'abandoned' when a 'submitting' batch is not found at the provider."""
    con.execute(
        """CREATE SEQUENCE judge_batch_seq START 1;
           CREATE TABLE judge_batches (
               batch_no BIGINT PRIMARY KEY DEFAULT nextval('judge_batch_seq'),
               tag VARCHAR NOT NULL,
               judge VARCHAR NOT NULL,
               provider VARCHAR NOT NULL,
               model VARCHAR NOT NULL,
               api_base VARCHAR,
               state VARCHAR NOT NULL,
               provider_file_id VARCHAR,
               provider_batch_id VARCHAR,
               requests INTEGER NOT NULL,
               bytes BIGINT NOT NULL,
               ok INTEGER,
               failed INTEGER,
               requeued INTEGER,
               error VARCHAR,
               created_at TIMESTAMP NOT NULL,
               updated_at TIMESTAMP NOT NULL
           );
           CREATE TABLE judge_batch_calls (
               batch_no BIGINT NOT NULL,
               call_key VARCHAR NOT NULL
           );"""
    )


def _m014_judge_sample(con: duckdb.DuckDBPyConnection) -> None:
    """The two-phase design's phase 1 (``calib.data.phase1``): ``judge_sample`` has one row per
    judged item and phase-1 batch (a later batch extends the sample, never removes an item). A batch
    is a seeded draw by ``tiebreak judge run --sample`` (``kind`` 'draw': ``strata`` '' or 'segment',
    ``allocation`` 'proportional' or 'neyman', ``seed``; the item's probability is then computed
    from the sample as it stands, n1_h / N_h) or the scored items of an import that said how they
    were chosen (``kind`` 'import': ``allocation`` 'inclusion_prob' or 'uniform', ``inclusion_prob``
    the item's stated probability). ``stratum_size`` is N_h when the batch was drawn. ``n_pop`` on
    the cells: the cell's outputs expanded by 1 / pi1 (n in a census)."""
    con.execute(
        """CREATE TABLE judge_sample (
               item_id VARCHAR NOT NULL,
               batch INTEGER NOT NULL,
               kind VARCHAR NOT NULL CHECK (kind IN ('draw', 'import')),
               strata VARCHAR NOT NULL,
               stratum VARCHAR NOT NULL,
               allocation VARCHAR NOT NULL,
               seed BIGINT,
               stratum_size BIGINT,
               inclusion_prob DOUBLE,
               drawn_at TIMESTAMP NOT NULL
           );
           ALTER TABLE model_cells ADD COLUMN n_pop DOUBLE;
           ALTER TABLE pair_cells ADD COLUMN n_pop DOUBLE;"""
    )


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    _m001_core, _m002_model_cells, _m003_disagreement, _m004_users, _m005_label_cells, _m006_queue_progress,
    _m007_judge_calls, _m008_sign_in_and_admin, _m009_unit_candidate,
    _m010_sso_user_email, _m011_drafts, _m012_auth_throttle_pairs, _m013_judge_batches,
    _m014_judge_sample,
]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every migration not yet recorded in ``_migrations``; return the names applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS _migrations "
        "(id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    done = {r[0] for r in con.execute("SELECT id FROM _migrations").fetchall()}
    applied = []
    for i, fn in enumerate(MIGRATIONS, start=1):
        if i in done:
            continue
        with transaction(con):
            fn(con)
            con.execute(
                "INSERT INTO _migrations VALUES (?, ?, current_timestamp)", [i, fn.__name__]
            )
        applied.append(fn.__name__)
    return applied


# --------------------------------------------------------------------------- connections

_LOCK_RE = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", re.S)


class DatabaseLocked(TiebreakError):
    """Another process (usually the app) holds the database: DuckDB lets one process open a file
    for writing, and refuses every other process, read-only opens included."""

    def __init__(self, path: Path, pid: int) -> None:
        self.path, self.pid = path, pid
        super().__init__(f"{path}: the database is open for writing in another process (PID {pid}, usually "
                         "the Tiebreak app).")


def resolve_db(db: str | os.PathLike | None) -> Path:
    """The database path: ``--db``, else ``$TIEBREAK_DB``, else the bundled demo database."""
    if db:
        return Path(db)
    env = os.environ.get("TIEBREAK_DB")
    if env:
        return Path(env)
    return DEMO_DB


# The first bytes of files people may pass as --db by mistake, and what to call them. DuckDB 2 opens
# a CSV, JSON or Parquet file "as a database" (an in-memory one with the file as a view): every
# write then vanishes at exit. A SQLite file makes it try to download an extension. So a path is
# looked at before DuckDB is given it.
_DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file
_KNOWN_MAGIC = [(b"PAR1", "a Parquet file"), (b"SQLite format 3\x00", "a SQLite database"),
                (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?)"), (b"\x1f\x8b", "a gzip file"),
                (b"%PDF", "a PDF file")]


def describe_file(path: Path) -> str:
    """What a file that is not a DuckDB database looks like, for a one-line refusal."""
    if path.is_dir():
        return "a folder"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return "an empty file"
    for magic, what in _KNOWN_MAGIC:
        if head.startswith(magic):
            return what
    suffix = path.suffix.lower().lstrip(".")
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:1] in (b"{", b"["):
        return "a JSON file" if suffix == "json" else "a JSON/JSONL file"
    if b"\x00" not in head:
        if suffix in ("csv", "tsv"):
            return f"a {suffix.upper()} file"
        first = text.split(b"\n", 1)[0]
        return "a CSV file" if b"," in first else "a text file"
    return "not a DuckDB database"


def is_duckdb_file(path: Path) -> bool:
    """The file starts like a DuckDB database (the magic bytes after the 8-byte checksum)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[8:12] == _DUCKDB_MAGIC
    except (IsADirectoryError, PermissionError):
        return False


def _named(path: Path, db: str | os.PathLike | None) -> str:
    """The path as the user named it, with where it came from when that was $TIEBREAK_DB."""
    return f"{path} (from $TIEBREAK_DB)" if not db and os.environ.get("TIEBREAK_DB") else str(path)


def check_db_path(db: str | os.PathLike | None, create: bool = False) -> Path:
    """The resolved database path, refused with one line when it cannot be a Tiebreak database.

    ``create=False`` (every command and the app): the file must exist and be a DuckDB database; a
    missing path is a typo far more often than a wish for a new project, so it is never created.
    ``create=True`` (``tiebreak init``, ``import --new``, ``demo``, tests): a missing path is fine;
    an existing file must still be a DuckDB database (never a CSV or Parquet file).
    """
    path = resolve_db(db)
    name = _named(path, db)
    if not path.exists():
        if create:
            return path
        raise TiebreakError(f"no such database: {name}; create it with `tiebreak init {path}` or "
                            f"`tiebreak import FILE --db {path} --new`")
    if not is_duckdb_file(path):
        raise TiebreakError(f"{name} is {describe_file(path)}, not a Tiebreak database; give the DuckDB file "
                            "(e.g. project.duckdb) as --db, and a data file to `tiebreak import FILE`")
    return path


def _is_tiebreak(con: duckdb.DuckDBPyConnection) -> bool | None:
    """True: a Tiebreak database; None: a DuckDB database with no tables (new); False: a DuckDB
    database of something else (never migrated into: that would write Tiebreak's tables into it)."""
    names = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").fetchall()}
    if "_migrations" in names:
        return True
    return None if not names else False


def connect(db: str | os.PathLike | None = None, read_only: bool = False, *,
            create: bool = True) -> duckdb.DuckDBPyConnection:
    """Open (creating when ``create`` and migrating) a Tiebreak database; a lock held elsewhere is a
    plain error, and so is a file that is not a Tiebreak database (``check_db_path``).

    The bundled demo database is built by ``calib.data.demo.open_db`` (the owner of the demo files),
    which the app and the CLI call instead of this.
    """
    path = check_db_path(db, create=create and not read_only)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:  # lock held by another process, or unreadable file
        m = _LOCK_RE.search(str(exc))
        if m:
            raise DatabaseLocked(path, int(m.group(2))) from None
        raise TiebreakError(f"{path}: cannot open database: {safe_line(exc)}") from None
    try:
        # DuckDB must be working on the named file itself, never an in-memory stand-in
        (backing,) = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                                 ).fetchone()
        if backing is None or Path(backing).resolve() != path.resolve():
            raise TiebreakError(f"{_named(path, db)}: DuckDB did not open this file as a database; nothing was written")
        kind = _is_tiebreak(con)
        if kind is False or (kind is None and not (create and not read_only)):
            raise TiebreakError(f"{_named(path, db)} is a DuckDB database but not a Tiebreak one (no _migrations "
                                f"table); create a project with `tiebreak init NEW.duckdb`")
    except BaseException:
        con.close()
        raise
    # DuckDB defaults to 80% of RAM; cap it so big imports spill to disk instead (override with
    # TIEBREAK_MEMORY_LIMIT, e.g. "8GB").
    con.execute(f"SET memory_limit = '{os.environ.get('TIEBREAK_MEMORY_LIMIT', '2GB')}'")
    if not read_only:
        migrate(con)
    return con


def safe_line(exc: BaseException) -> str:
    """An exception's message on one line (DuckDB's messages span several)."""
    return " ".join(str(exc).split())


def _stat(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, modification time) of a file, None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _unchanged(before: tuple, after: tuple) -> bool:
    """The database file did not change and its WAL only grew (appends) between two looks."""
    (db0, wal0), (db1, wal1) = before, after
    if db0 != db1:
        return False  # a checkpoint wrote into the file
    if wal0 is None:
        return True  # no WAL at the first look: whatever was copied is at least as new
    return wal1 is not None and wal1[0] == wal0[0] and wal1[1] >= wal0[1]


def snapshot(path: str | os.PathLike, folder: str | os.PathLike, tries: int = 8) -> tuple[duckdb.DuckDBPyConnection, float]:
    """A private copy of a database another process holds, opened read-write (so fits and caches
    can be computed on it), and the seconds the copy took.

    DuckDB's lock is advisory: the file and its write-ahead log can still be read. DuckDB appends
    each commit to the WAL and changes the file itself only at checkpoints (which then empty the
    WAL). So the file is copied, then the WAL, and the copy is kept if the file did not change
    meanwhile and the WAL only grew; otherwise (a checkpoint ran) it is taken again after a short
    pause. Opening the copy replays its WAL; a commit caught half-written at the WAL's end is
    dropped by DuckDB's replay, so the copy is the database as of a recent commit.
    """
    import shutil
    import time

    path = Path(path)
    wal = Path(str(path) + ".wal")
    dest = Path(folder) / path.name
    dest_wal = Path(str(dest) + ".wal")
    t0 = time.perf_counter()
    for attempt in range(tries):
        before = (_stat(path), _stat(wal))
        shutil.copyfile(path, dest)
        dest_wal.unlink(missing_ok=True)
        if before[1] is not None:
            try:
                shutil.copyfile(wal, dest_wal)
            except FileNotFoundError:  # checkpointed meanwhile: caught below, copied again
                pass
        if _unchanged(before, (_stat(path), _stat(wal))):
            break
        time.sleep(0.05 * (attempt + 1))
    else:
        raise TiebreakError(f"{path}: the database kept changing while it was copied; try again")
    seconds = time.perf_counter() - t0
    return connect(dest), seconds


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, rolling back on any exception so nothing half-written is kept."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")


_DB_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_DB_LOCKS_GUARD = threading.Lock()


def db_key(con: duckdb.DuckDBPyConnection) -> str:
    """The database file a connection or cursor is on (``":memory:"`` for an in-memory one): the
    key of the process-wide locks below, so two projects open in one process never wait on each other."""
    # on a cursor of its own: callers pass the app's shared connection from many threads, and one
    # DuckDB connection must not run statements from two threads at once
    cur = con.cursor()
    try:
        row = cur.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    finally:
        cur.close()
    return str(Path(row[0]).resolve()) if row and row[0] else ":memory:"


def db_lock(con: duckdb.DuckDBPyConnection, name: str) -> threading.RLock:
    """A process-wide re-entrant lock per (database file, ``name``): one writer at a time for a
    derived table rebuilt by check-then-write (the cells, the queue's batches).

    Why a lock and not DuckDB alone: the app serves every session from threads of ONE process, each
    with its own cursor, and DuckDB's optimistic concurrency lets two transactions both see "not
    built yet" or "unit not queued" and both insert (tables without a key), or fail with a
    primary-key conflict (``cache_state``). Other processes cannot open the file while the app has
    it (DuckDB allows one writing process), so a process-wide lock is enough."""
    key = (db_key(con), name)
    with _DB_LOCKS_GUARD:
        lock = _DB_LOCKS.get(key)
        if lock is None:
            lock = _DB_LOCKS[key] = threading.RLock()
        return lock


def register(con: duckdb.DuckDBPyConnection, name: str, frame) -> None:
    """Register a DataFrame/Arrow table as a view. DuckDB 2 refuses while a result is unfinished
    (after a ``fetchone``), so finish any pending result first."""
    con.execute("SELECT 1").fetchall()
    con.register(name, frame)


def csv_safe_sql(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """``sql`` wrapped so that every text column's value starting with a formula character (``=``,
    ``+``, ``-``, ``@``, tab, CR: ``calib.safetext.CSV_FORMULA_START``) gets a leading single quote,
    for a CSV a spreadsheet may open (OWASP, CSV injection). Other columns, numbers included, are
    unchanged: a number is never run as a formula, and -0.5 stays the number -0.5."""
    cols = con.execute(f"DESCRIBE ({sql})").fetchall()
    starts = "('=', '+', '-', '@', chr(9), chr(13))"

    def one(name: str, typ: str) -> str:
        q = '"' + name.replace('"', '""') + '"'
        if typ.upper() != "VARCHAR":
            return q
        return f"CASE WHEN left({q}, 1) IN {starts} THEN chr(39) || {q} ELSE {q} END AS {q}"

    return f"SELECT {', '.join(one(c[0], c[1]) for c in cols)} FROM ({sql})"


# --------------------------------------------------------------------------- settings


def get_settings(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """All settings, defaults filled in for keys never written."""
    out = dict(DEFAULT_SETTINGS)
    for key, value in con.execute("SELECT key, value FROM settings").fetchall():
        out[key] = json.loads(value)
    return out


def set_settings(con: duckdb.DuckDBPyConnection, **values: Any) -> None:
    """Write settings (JSON-encoded). Unknown keys are refused so typos do not pass silently."""
    unknown = set(values) - set(DEFAULT_SETTINGS)
    if unknown:
        raise TiebreakError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for key, value in values.items():
        if key in SETTING_CHOICES and value not in SETTING_CHOICES[key]:
            raise TiebreakError(f"setting {key}: {value!r} is not one of {', '.join(SETTING_CHOICES[key])}")
    for key, value in values.items():
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, json.dumps(value)]
        )


def parse_setting(key: str, text: str) -> Any:
    """Parse a command-line value for ``key`` with the type of its default."""
    if key not in DEFAULT_SETTINGS:
        raise TiebreakError(f"unknown setting {key!r}; known: {', '.join(DEFAULT_SETTINGS)}")
    default = DEFAULT_SETTINGS[key]
    try:
        if isinstance(default, bool):
            if text.lower() not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                raise ValueError(text)
            return text.lower() in {"true", "1", "yes", "on"}
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            return type(default)(text) if isinstance(default, float) else int(text)
        if isinstance(default, list):
            return [s.strip() for s in text.split(",") if s.strip()]
    except ValueError:
        raise TiebreakError(f"setting {key}: {text!r} is not a valid {type(default).__name__}") from None
    return text


# --------------------------------------------------------------------------- queries


def models(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Models in the baseline-first order: baseline, then candidates, then any other model."""
    s = get_settings(con)
    present = [r[0] for r in con.execute("SELECT DISTINCT model FROM outputs ORDER BY model").fetchall()]
    ordered = [m for m in [s["baseline"], *s["candidates"]] if m in present]
    return ordered + [m for m in present if m not in ordered]


def first_candidate(con: duckdb.DuckDBPyConnection, settings: dict[str, Any] | None = None) -> str | None:
    """The project's first candidate: what a queue or lease row with no candidate (from before units
    of work were (item, candidate)) stands for. From the settings (cheap: serving calls it on every
    lease; a caller holding them passes ``settings``), else the first non-baseline model with outputs."""
    s = get_settings(con) if settings is None else settings
    if s["candidates"]:
        return s["candidates"][0]
    return next((m for m in models(con) if m != s["baseline"]), None)


def status(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Counts a user checks after an import: items, outputs, judges, labels by dimension, and the
    judged sample (``calib.data.phase1.summary``; None in a census)."""
    from calib.data import phase1  # phase1 imports this module

    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    s = get_settings(con)
    # pointwise judges' scores, then side-by-side judges' preferences (a pairwise-only project has only these)
    judges = con.execute(
        "SELECT judge, dimension, count(*), 'pointwise' FROM judge_scores GROUP BY ALL ORDER BY ALL"
    ).fetchall() + con.execute(
        "SELECT judge, dimension, count(*), 'side by side' FROM pair_judge_prefs GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    labels = con.execute(
        """
        SELECT dimension, count(*), count(DISTINCT item_id), count(DISTINCT annotator)
        FROM labels GROUP BY dimension ORDER BY dimension
        """
    ).fetchall()
    pair_labels = con.execute(
        "SELECT dimension, count(*), count(DISTINCT item_id) FROM pair_labels GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return {
        "baseline": s["baseline"],
        "candidates": s["candidates"],
        "dimensions": s["dimensions"],
        "items": one("SELECT count(*) FROM items"),
        "segments": one("SELECT count(DISTINCT segment) FROM items"),
        "outputs": one("SELECT count(*) FROM outputs"),
        "outputs_by_model": dict(
            con.execute("SELECT model, count(*) FROM outputs GROUP BY model ORDER BY model").fetchall()
        ),
        "judge_scores": one("SELECT count(*) FROM judge_scores"),
        "judges": [{"judge": j, "dimension": d, "scores": n, "kind": k} for j, d, n, k in judges],
        "pair_judge_prefs": one("SELECT count(*) FROM pair_judge_prefs"),
        "labels": [
            {"dimension": d, "labels": n, "items": i, "annotators": a} for d, n, i, a in labels
        ],
        "pair_labels": [{"dimension": d, "labels": n, "items": i} for d, n, i in pair_labels],
        "fits": one("SELECT count(*) FROM fits"),
        # distinct items with any SME label: what "labelled items" means on every page (a label row
        # is one verdict on one output, dimension and SME)
        "labelled_items": one("SELECT count(DISTINCT item_id) FROM (SELECT item_id FROM labels "
                              "UNION ALL SELECT item_id FROM pair_labels)"),
        "judged_sample": phase1.summary(con),
    }
