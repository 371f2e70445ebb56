"""Streamlit plumbing shared by the pages: the one DuckDB connection per process, cursors, args.

Streamlit ignores Python files in sub-folders of ``pages/``, so this module is not a page. It holds
no computation: pages call ``calib`` for every number they show.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb  # noqa: E402
import streamlit as st  # noqa: E402

from calib import store  # noqa: E402
from calib.errors import TiebreakError  # noqa: E402


def db_path() -> str:
    """``streamlit run app.py -- --db FILE``, else $TIEBREAK_DB, else the bundled demo database."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return str(store.resolve_db(args.db))


@st.cache_resource(show_spinner="Opening the database ...")
def _connection(path: str) -> duckdb.DuckDBPyConnection:
    return store.connect(path)


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh cursor on the process-wide connection (never share one cursor across threads)."""
    try:
        return _connection(db_path()).cursor()
    except TiebreakError as exc:
        st.error(str(exc))
        st.stop()
