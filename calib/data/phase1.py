"""Phase 1 of a two-phase design: which items the judges score, and with what probability.

At production scale (millions of outputs a month) no lead has every output judged: the judges
score a probability sample (phase 1, the *judged sample*), and the SME queue draws its labels from
the judged items only (phase 2). The estimate of the population then needs each judged item's
phase-1 inclusion probability ``pi1`` (``calib.stats.twophase``): the judged sample's mean is not
the population's unless the sample was drawn with known probabilities.

A project is a **census** (every item judged, or imported with every judge score; ``pi1 = 1``)
until a phase-1 sample is recorded: by ``tiebreak judge run --sample N`` / ``--fraction F``
(optionally ``--strata segment``), or by an import in which only some items carry judge scores
and the file says how they were chosen (an inclusion-probability column, or declared uniform).

INTERFACE (stub: the functions below are filled in by the two-phase data work; the estimator
codes against these signatures):

- table ``judge_sample`` (migration ``_m014_judge_sample``): one row per judged item and phase-1
  batch, with the item's inclusion probability and stratum; a later batch extends the sample.
- ``model_cells.n_pop`` / ``pair_cells.n_pop`` (DOUBLE): the cell's outputs expanded by 1 / pi1,
  the population count the cell stands for (equals ``n`` in a census).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd


@dataclass
class SampleReport:
    """What one draw added: the batch number, items drawn per stratum, and the sample's size after it."""

    batch: int
    added: dict[str, int]
    judged: int
    population: int


def is_census(con: duckdb.DuckDBPyConnection) -> bool:
    """True when no phase-1 sample is recorded: every item counts as judged with probability 1."""
    # (stub until the judge_sample table exists: every project is a census)
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'judge_sample'").fetchone()[0]
    return not has or con.execute("SELECT count(*) FROM judge_sample").fetchone()[0] == 0


def item_inclusion(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every judged item's phase-1 inclusion probability of the sample as it stands (all batches):
    columns ``item_id`` (str), ``pi1`` (float in (0, 1]), ``stratum`` (str; the segment when drawn
    by segment, else ``""``). Empty in a census."""
    raise NotImplementedError


def population_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Items per stratum in the population and in the judged sample: columns ``stratum``, ``N``,
    ``n1`` (a census: one row per segment with ``n1 = N``)."""
    raise NotImplementedError


def draw_sample(con: duckdb.DuckDBPyConnection, *, n: int | None = None, fraction: float | None = None,
                strata: str | None = None, allocation: str = "proportional", seed: int = 0) -> SampleReport:
    """Draw (or extend to) a judged sample of ``n`` items (or ``fraction`` of the items), uniformly or
    stratified by ``strata`` ("segment"), proportional or Neyman-allocated; recorded as a new phase-1
    batch in one transaction. Extending never removes an item already judged."""
    raise NotImplementedError
