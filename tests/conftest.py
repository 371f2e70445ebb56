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


def demo_db_file(path: Path, items: int, seed: int, labels: int = 0) -> Path:
    """A demo project written to ``path`` (closed, for the app or the CLI to open), with ``labels``
    items labelled by the simulated SME through the queue."""
    from calib.review import simulate

    c = store.connect(path)
    demo.load_demo(c, items, seed=seed)
    if labels:
        simulate.simulate_sme(c, labels)
    c.close()
    return path


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
    """A demo project with 300 items and hidden truth."""
    c = store.connect(tmp_path / "demo.duckdb")
    demo.load_demo(c, 300, seed=1)
    yield c
    c.close()
