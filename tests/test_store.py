"""The exact schema of a fresh database, and migration bookkeeping."""

import subprocess
import sys

import pytest

from calib.data import store
from calib.errors import TiebreakError

EXPECTED_SCHEMA = {
    "_migrations": [
        ("id", "INTEGER", False),
        ("name", "VARCHAR", False),
        ("applied_at", "TIMESTAMP", False),
    ],
    "app_secrets": [
        ("name", "VARCHAR", False),
        ("value", "VARCHAR", False),
    ],
    "audit_log": [
        ("event_id", "BIGINT", False),
        ("created_at", "TIMESTAMP", False),
        ("actor", "VARCHAR", False),
        ("action", "VARCHAR", False),
        ("detail", "VARCHAR", True),
    ],
    "cache_state": [
        ("key", "VARCHAR", False),
        ("value", "VARCHAR", False),
    ],
    "drafts": [
        ("annotator", "VARCHAR", False),
        ("item_id", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("answers", "JSON", False),
        ("updated_at", "TIMESTAMP", False),
    ],
    "fits": [
        ("fit_id", "BIGINT", False),
        ("created_at", "TIMESTAMP", False),
        ("kind", "VARCHAR", False),
        ("n_labels", "INTEGER", False),
        ("seconds", "DOUBLE", True),
        ("result", "JSON", False),
    ],
    "flag_reviews": [
        ("lease_id", "BIGINT", False),
        ("reviewer", "VARCHAR", False),
        ("decision", "VARCHAR", False),
        ("note", "VARCHAR", True),
        ("created_at", "TIMESTAMP", False),
    ],
    "guidelines": [
        ("version", "INTEGER", False),
        ("text", "VARCHAR", False),
        ("author", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
    ],
    "item_disagreement": [
        ("item_id", "VARCHAR", False),
        ("segment", "VARCHAR", False),
        ("topic", "VARCHAR", True),
        ("within_judges", "DOUBLE", False),
        ("between_models", "DOUBLE", False),
        ("score", "DOUBLE", False),
    ],
    "item_pair_cells": [
        ("item_id", "VARCHAR", False),
        ("baseline", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("cell_id", "INTEGER", False),
    ],
    "items": [
        ("item_id", "VARCHAR", False),
        ("segment", "VARCHAR", False),
        ("topic", "VARCHAR", True),
        ("prompt", "VARCHAR", False),
        ("context", "VARCHAR", True),
        ("reference", "VARCHAR", True),
        ("imported_at", "TIMESTAMP", False),
    ],
    "judge_batch_calls": [
        ("batch_no", "BIGINT", False),
        ("call_key", "VARCHAR", False),
    ],
    "judge_batches": [
        ("batch_no", "BIGINT", False),
        ("tag", "VARCHAR", False),
        ("judge", "VARCHAR", False),
        ("provider", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("api_base", "VARCHAR", True),
        ("state", "VARCHAR", False),
        ("provider_file_id", "VARCHAR", True),
        ("provider_batch_id", "VARCHAR", True),
        ("requests", "INTEGER", False),
        ("bytes", "BIGINT", False),
        ("ok", "INTEGER", True),
        ("failed", "INTEGER", True),
        ("requeued", "INTEGER", True),
        ("error", "VARCHAR", True),
        ("created_at", "TIMESTAMP", False),
        ("updated_at", "TIMESTAMP", False),
    ],
    "judge_sample": [
        ("item_id", "VARCHAR", False),
        ("batch", "INTEGER", False),
        ("kind", "VARCHAR", False),
        ("strata", "VARCHAR", False),
        ("stratum", "VARCHAR", False),
        ("allocation", "VARCHAR", False),
        ("seed", "BIGINT", True),
        ("stratum_size", "BIGINT", True),
        ("inclusion_prob", "DOUBLE", True),
        ("drawn_at", "TIMESTAMP", False),
    ],
    "judge_naive": [
        ("judge", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("pass_rate", "DOUBLE", False),
    ],
    "judge_calls": [
        ("call_id", "BIGINT", False),
        ("call_key", "VARCHAR", False),
        ("task", "VARCHAR", False),
        ("judge", "VARCHAR", False),
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", True),
        ("other_model", "VARCHAR", True),
        ("dimension", "VARCHAR", True),
        ("position", "VARCHAR", True),
        ("status", "VARCHAR", False),
        ("score", "DOUBLE", True),
        ("verdict", "VARCHAR", True),
        ("rationale", "VARCHAR", True),
        ("raw", "VARCHAR", True),
        ("error", "VARCHAR", True),
        ("attempts", "INTEGER", False),
        ("input_tokens", "BIGINT", True),
        ("output_tokens", "BIGINT", True),
        ("cost_usd", "DOUBLE", True),
        ("latency_ms", "DOUBLE", True),
        ("ttft_ms", "DOUBLE", True),
        ("created_at", "TIMESTAMP", False),
    ],
    "judge_scale": [
        ("judge", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("mean", "DOUBLE", False),
        ("sd", "DOUBLE", False),
        ("lo", "DOUBLE", False),
        ("hi", "DOUBLE", False),
        ("threshold", "DOUBLE", False),
    ],
    "judge_scores": [
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("judge", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("score", "DOUBLE", False),
        ("rationale", "VARCHAR", True),
    ],
    "label_cells": [
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("cell_id", "INTEGER", False),
        ("f", "DOUBLE", False),
    ],
    "labels": [
        ("label_id", "BIGINT", False),
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("verdict", "BOOLEAN", False),
        ("kind", "VARCHAR", True),
        ("annotator", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("note", "VARCHAR", True),
        ("source", "VARCHAR", False),
        ("duration_ms", "BIGINT", True),
        ("lease_id", "BIGINT", True),
        ("side", "VARCHAR", True),
    ],
    "leases": [
        ("lease_id", "BIGINT", False),
        ("item_id", "VARCHAR", False),
        ("annotator", "VARCHAR", False),
        ("leased_at", "TIMESTAMP", False),
        ("expires_at", "TIMESTAMP", False),
        ("ended_at", "TIMESTAMP", True),
        ("outcome", "VARCHAR", True),
        ("reason", "VARCHAR", True),
        ("candidate", "VARCHAR", True),
    ],
    "model_cells": [
        ("dimension", "VARCHAR", False),
        ("cell_id", "INTEGER", False),
        ("model", "VARCHAR", False),
        ("segment", "VARCHAR", False),
        ("x", "DOUBLE[]", False),
        ("n", "BIGINT", False),
        ("sum_f", "DOUBLE", False),
        ("n_pop", "DOUBLE", True),
    ],
    "output_cells": [
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("cell_id", "INTEGER", False),
        ("f", "DOUBLE", False),
    ],
    "outputs": [
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("output", "VARCHAR", False),
        ("latency_ms", "DOUBLE", True),
        ("input_tokens", "BIGINT", True),
        ("output_tokens", "BIGINT", True),
        ("cost_usd", "DOUBLE", True),
        ("ttft_ms", "DOUBLE", True),
    ],
    "pair_cells": [
        ("baseline", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("cell_id", "INTEGER", False),
        ("x", "DOUBLE[]", False),
        ("n", "BIGINT", False),
        ("n_pop", "DOUBLE", True),
    ],
    "pair_judge_prefs": [
        ("item_id", "VARCHAR", False),
        ("baseline", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("judge", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("preference", "DOUBLE", False),
    ],
    "pair_labels": [
        ("label_id", "BIGINT", False),
        ("item_id", "VARCHAR", False),
        ("baseline", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("preference", "VARCHAR", False),
        ("strength", "INTEGER", True),
        ("annotator", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("note", "VARCHAR", True),
        ("source", "VARCHAR", False),
        ("duration_ms", "BIGINT", True),
        ("lease_id", "BIGINT", True),
        ("left_model", "VARCHAR", True),
    ],
    "queue": [
        ("queue_id", "BIGINT", False),
        ("item_id", "VARCHAR", False),
        ("inclusion_prob", "DOUBLE", False),
        ("policy", "VARCHAR", False),
        ("reason", "VARCHAR", False),
        ("priority", "DOUBLE", True),
        ("batch_id", "BIGINT", True),
        ("overlap", "BOOLEAN", False),
        ("created_at", "TIMESTAMP", False),
        ("n_done", "INTEGER", True),
        ("candidate", "VARCHAR", True),
    ],
    "settings": [
        ("key", "VARCHAR", False),
        ("value", "VARCHAR", False),
    ],
    "sign_in_throttle": [
        ("scope", "VARCHAR", False),
        ("key", "VARCHAR", False),
        ("failures", "INTEGER", False),
        ("last_failure_at", "DOUBLE", True),
        ("locked", "BOOLEAN", False),
    ],
    "sim_truth": [
        ("item_id", "VARCHAR", False),
        ("model", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("verdict", "BOOLEAN", False),
        ("kind", "VARCHAR", True),
    ],
    "sim_truth_pairs": [
        ("item_id", "VARCHAR", False),
        ("baseline", "VARCHAR", False),
        ("candidate", "VARCHAR", False),
        ("dimension", "VARCHAR", False),
        ("preference", "VARCHAR", False),
        ("strength", "INTEGER", True),
    ],
    "users": [
        ("name", "VARCHAR", False),
        ("role", "VARCHAR", False),
        ("password_hash", "VARCHAR", False),
        ("created_at", "TIMESTAMP", False),
        ("active", "BOOLEAN", True),
        ("session_epoch", "INTEGER", True),
        ("email", "VARCHAR", True),
    ],
}


def _schema(con):
    rows = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    out = {}
    for t, c, d, n in rows:
        out.setdefault(t, []).append((c, d, n == "YES"))
    return out


def test_fresh_database_has_exact_schema(tmp_path):
    con = store.connect(tmp_path / "t.duckdb")
    assert _schema(con) == EXPECTED_SCHEMA
    names = [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY id").fetchall()]
    assert names == [m.__name__ for m in store.MIGRATIONS]


def test_migrations_run_once(tmp_path):
    path = tmp_path / "t.duckdb"
    store.connect(path).close()
    con = store.connect(path)
    assert store.migrate(con) == []
    assert con.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(store.MIGRATIONS)


def test_labels_are_append_only_in_code():
    """No module issues UPDATE or DELETE against the label tables."""
    import pathlib
    import re

    src = "\n".join(p.read_text() for p in pathlib.Path(store.__file__).parent.glob("*.py"))
    assert not re.search(r"(UPDATE|DELETE FROM)\s+(pair_)?labels\b", src, re.I)


def test_settings_roundtrip_and_unknown_key(tmp_path):
    con = store.connect(tmp_path / "t.duckdb")
    assert store.get_settings(con)["margin"] == 0.02
    store.set_settings(con, margin=0.05, candidates=["b"])
    assert store.get_settings(con)["margin"] == 0.05
    assert store.parse_setting("demo_mode", "on") is True
    with pytest.raises(TiebreakError):
        store.set_settings(con, marginn=0.1)
    with pytest.raises(TiebreakError):
        store.parse_setting("margin", "abc")


def test_db_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TIEBREAK_DB", str(tmp_path / "env.duckdb"))
    assert store.resolve_db("x.duckdb").name == "x.duckdb"
    assert store.resolve_db(None).name == "env.duckdb"
    monkeypatch.delenv("TIEBREAK_DB")
    assert store.resolve_db(None) == store.DEMO_DB


def test_locked_database_gives_a_plain_message(tmp_path):
    path = tmp_path / "t.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(TiebreakError, match=r"open for writing in another process \(PID \d+"):
            store.connect(path)
        r = subprocess.run([sys.executable, "-m", "calib.cli", "settings", "set", "margin", "0.03", "--db", str(path)],
                           capture_output=True, text=True)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and "another process" in r.stderr and "Admin page" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
