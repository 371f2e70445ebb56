"""Shared fixtures: fresh databases, a small demo project, writers for the three file formats."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from calib.data import demo, store  # noqa: E402


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as CSV, JSONL or Parquet according to the suffix."""
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df = df.copy()
        for c in df.columns:  # a column mixing text and numbers is written as text, as a real file would be
            if df[c].dtype == object and df[c].map(type).nunique() > 1:
                df[c] = df[c].map(lambda v: None if v is None or v != v else str(v))
        df.to_parquet(path, index=False)
    return path


_DEMO_FILES: dict[tuple[int, int, int], Path] = {}


def demo_db_file(path: Path, items: int, seed: int, labels: int = 0) -> Path:
    """A demo project written to ``path`` (closed, for the app or the CLI to open), with ``labels``
    items labelled by the simulated SME through the queue. Built once per process for each
    (items, seed, labels), then copied: the demo and the simulated SME are seeded, so a copy holds
    what a new build would (test_app alone asked for the same 200-item project 30 times)."""
    import atexit
    import shutil
    import tempfile

    from calib.review import simulate

    key = (items, seed, labels)
    if key not in _DEMO_FILES:
        folder = tempfile.mkdtemp(prefix="tiebreak-demo-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        built = Path(folder) / "demo.duckdb"
        c = store.connect(built)
        demo.load_demo(c, items, seed=seed)
        if labels:
            simulate.simulate_sme(c, labels)
        c.close()  # checkpointed: the one file holds everything
        _DEMO_FILES[key] = built
    shutil.copyfile(_DEMO_FILES[key], path)
    return path


# --------------------------------------------------------------------------- bcrypt cost
# Stored passwords and the dummy hash cost bcrypt 2^10 rounds (calib.review.users.ROUNDS), about
# 60 ms a check: the suite made hundreds (users added by fixtures, sign-ins in AppTest and browser
# tests). A test about what sign-in does (roles, throttling, sessions, revocation) does not depend
# on that cost, so tests hash at the cheapest cost bcrypt allows (2^4, ~1 ms). A test whose
# assertion is about the cost itself (an unknown name refused in the time a wrong password takes)
# or that needs each check to take real time (parallel sign-ins racing the throttle) is marked
# ``real_bcrypt`` and keeps the production cost. The checked hash carries its own cost, so apps
# started by browser tests check the fixtures' users cheaply too; their dummy hash stays real.
TEST_ROUNDS = 4


@pytest.fixture(autouse=True)
def _bcrypt_cost(request, monkeypatch):
    from calib.review import users

    if request.node.get_closest_marker("real_bcrypt") is None:
        monkeypatch.setattr(users, "ROUNDS", TEST_ROUNDS)
    monkeypatch.setattr(users, "_DUMMY", [])  # the dummy hash made at this test's cost, then dropped


@pytest.fixture
def con(tmp_path):
    c = store.connect(tmp_path / "t.duckdb")
    yield c
    c.close()


@pytest.fixture
def small_outputs() -> pd.DataFrame:
    """40 items x 2 models from the demo generator, in the import format."""
    return demo.generate(40, seed=3).outputs


@pytest.fixture
def demo_con(tmp_path):
    """A demo project with 300 items and hidden truth (a copy of one built once per process)."""
    c = store.connect(demo_db_file(tmp_path / "demo.duckdb", 300, seed=1))
    yield c
    c.close()


# --------------------------------------------------------------------------- parallel runs (xdist)
# pyproject's addopts run the suite on up to 4 workers with ``--dist loadgroup``: tests are spread
# one by one, except those sharing an expensive set-up, which go to one worker so it is paid once:
# a module- or session-scoped fixture of tests/ (grouped by module), or a numba-compiled NUTS
# kernel (``@pytest.mark.xdist_group("nuts")``: each compile costs 5-15 s per process, once per
# model shape; calib.stats.model caches it in the process).


def _shared_setup(item: pytest.Item) -> bool:
    """Does ``item`` use a fixture of tests/ that is set up once per module or session?"""
    info = getattr(item, "_fixtureinfo", None)
    here = Path(__file__).resolve().parent
    for defs in (info.name2fixturedefs.values() if info else ()):
        fd = defs[-1]
        if fd.scope in ("module", "package", "session"):
            try:
                if here in Path(fd.func.__code__.co_filename).resolve().parents:
                    return True
            except AttributeError:
                continue
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shared_setup(item):
            item.add_marker(pytest.mark.xdist_group(f"module-{item.module.__name__}"))
    if getattr(config.option, "loadgroup", False):  # on an xdist worker under --dist loadgroup
        _tag_groups(items)


def _tag_groups(items) -> None:
    """Append "@group" to a grouped test's node id, which is how the controller's loadgroup
    scheduler finds the group. pytest-xdist 3.8 writes it to ``item._nodeid``, which pytest 9.2 no
    longer reads (the id is ``item._id``, a NodeId): without this every test is its own group.
    Private API of the pinned pytest; if it changes, tests still pass, only the grouping is lost."""
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
