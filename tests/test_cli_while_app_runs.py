"""The CLI while another process (the app) holds the database: reads work on a snapshot that
includes the holder's latest commits; writes stop with one line naming the page that does the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from calib.data import demo, store

HOLDER = """
import sys, time
from calib.data import store
con = store.connect(sys.argv[1])
con.execute("INSERT INTO labels (item_id, model, dimension, verdict, annotator, created_at, source) "
            "SELECT item_id, model, dimension, verdict, 'held', current_timestamp, 'test' FROM sim_truth "
            "WHERE item_id IN (SELECT item_id FROM items ORDER BY item_id LIMIT 30)")
print('ok', flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    path = tmp_path / "held.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 80, seed=5)
    con.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        yield path
    finally:
        holder.kill()
        holder.wait()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "calib.cli", *args], capture_output=True, text=True, timeout=300)


def test_reads_work_on_a_snapshot_with_the_latest_commits(held, tmp_path):
    with pytest.raises(store.DatabaseLocked):
        store.connect(held, read_only=True)
    r = _cli("status", "--json", "--db", str(held))
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert sum(x["labels"] for x in st["labels"]) == 30 * 2 * len(demo.DIMENSIONS)  # the holder's uncheckpointed insert
    assert "snapshot" in r.stderr and "Traceback" not in r.stderr

    out = tmp_path / "labels.csv"
    r = _cli("labels", "export", str(out), "--db", str(held))
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().strip().splitlines()) == 1 + 30 * 2 * len(demo.DIMENSIONS)

    r = _cli("fit", "--fast", "--json", "--db", str(held))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_labels"] > 0 and "not stored" in r.stderr

    html = tmp_path / "report.html"
    r = _cli("report", "--out", str(html), "--db", str(held))
    assert r.returncode == 0, r.stderr
    assert html.stat().st_size > 1000


@pytest.mark.parametrize("args, page", [
    (["settings", "set", "margin", "0.03"], "Admin page (Settings tab)"),
    (["users", "add", "bob", "--role", "sme", "--password", "bob-password"], "Admin page (Users tab)"),
    (["labels", "import", "x.csv"], "Admin page (Imports tab)"),
])
def test_writes_name_the_page(held, tmp_path, args, page):
    r = _cli(*args, "--db", str(held))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "another process" in r.stderr and page in r.stderr
    snap = tmp_path / "snap"
    snap.mkdir()
    con, _ = store.snapshot(held, snap)
    assert store.get_settings(con)["margin"] == 0.02
    assert con.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    con.close()


def test_backup_while_held_is_one_consistent_file(held, tmp_path):
    out = tmp_path / "backup.duckdb"
    r = _cli("backup", str(out), "--db", str(held))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "backup.duckdb.wal").exists()
    con = store.connect(out, read_only=True)
    assert con.execute("SELECT count(*) FROM labels WHERE annotator = 'held'").fetchone()[0] == 30 * 2 * len(demo.DIMENSIONS)
    con.close()
    assert _cli("backup", str(out), "--db", str(held)).returncode == 2  # never overwrites


WRITER = """
import sys, time
from calib.data import store
con = store.connect(sys.argv[1])
con.execute("CREATE TABLE pairs (i INTEGER, pad VARCHAR)")
print('ok', flush=True)
i = 0
while True:
    with store.transaction(con):  # two rows per commit: a consistent copy has an even count
        con.execute("INSERT INTO pairs SELECT ?, repeat('x', 2000) FROM range(2)", [i])
    i += 1
    if i % 25 == 0:
        con.execute("CHECKPOINT")  # the WAL is folded into the file now and then, as DuckDB does
"""


def test_snapshots_under_constant_writes_and_checkpoints_are_consistent(tmp_path):
    path = tmp_path / "busy.duckdb"
    store.connect(path).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ok"
        seen = []
        for k in range(15):
            folder = tmp_path / f"s{k}"
            folder.mkdir()
            con, _ = store.snapshot(path, folder)
            n, groups, bad = con.execute(
                "SELECT count(*), count(DISTINCT i), count(*) FILTER (WHERE pad <> repeat('x', 2000)) FROM pairs"
            ).fetchone()
            con.close()
            assert n == 2 * groups and bad == 0
            seen.append(n)
        assert seen == sorted(seen) and seen[-1] > seen[0]  # copies move forward with the writer
    finally:
        writer.kill()
        writer.wait()
