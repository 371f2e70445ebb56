"""Cells: the population aggregated by (model, segment, binned standardised judge scores).

Two builders give the same ``CellData``: ``cells_from_arrays`` (numpy, item-level arrays; used by
tests and by benchmarks on external data) and ``calib.engine`` (SQL in DuckDB, for millions of
outputs). Judge scores are put on a common scale, z = (score - mean) / sd over all outputs of the
judge and dimension, and rounded to ``BIN`` standard deviations; a missing score is z = 0.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from calib.model import CellData, PairData

BIN = 0.1  # bin width in standard deviations of each judge's score
PAIR_BIN = 0.25


def normal_scores(scores: np.ndarray) -> np.ndarray:
    """Column-wise rank-based normal scores (ties share their mid-rank; NaN -> 0)."""
    scores = np.asarray(scores, float)
    z = np.zeros_like(scores)
    for j in range(scores.shape[1]):
        ok = ~np.isnan(scores[:, j])
        r = stats.rankdata(scores[ok, j], method="average")
        z[ok, j] = stats.norm.ppf(r / (ok.sum() + 1))
    return z


def binned(z: np.ndarray, width: float = BIN) -> np.ndarray:
    return np.round(z / width) * width if width else z


def cells_from_arrays(
    models: list[str], segments: list[str], judges: list[str],
    out_model: np.ndarray, out_segment: np.ndarray, out_z: np.ndarray,
    lab_out: np.ndarray, lab_y: np.ndarray, width: float = BIN, return_index: bool = False,
) -> CellData | tuple[CellData, np.ndarray]:
    """Aggregate outputs into cells; ``lab_out``/``lab_y`` are the output index and verdict of each label.

    ``width=0`` keeps exact scores (one cell per distinct score vector), for the binning test.
    ``return_index`` also returns each output's cell index.
    """
    x = binned(out_z, width)
    key = np.column_stack([out_model, out_segment, x])
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    C = len(uniq)
    cell_n = np.bincount(inv, minlength=C)
    lab_out = np.asarray(lab_out, dtype=np.int64)
    lab_y = np.asarray(lab_y, dtype=float)
    # per labelled output: mean verdict over its labels
    outs, out_inv = np.unique(lab_out, return_inverse=True)
    mean_y = np.bincount(out_inv, weights=lab_y) / np.bincount(out_inv)
    cell_lab_items = np.bincount(inv[outs], minlength=C) if len(outs) else np.zeros(C, int)
    cell_lab_y = np.bincount(inv[outs], weights=mean_y, minlength=C) if len(outs) else np.zeros(C)
    lab_cells = inv[lab_out]
    obs_cell, obs_inv = np.unique(lab_cells, return_inverse=True)
    obs_k = np.bincount(obs_inv, weights=lab_y).astype(np.int64) if len(lab_cells) else np.zeros(0, np.int64)
    obs_n = np.bincount(obs_inv).astype(np.int64) if len(lab_cells) else np.zeros(0, np.int64)
    data = CellData(
        models=list(models), segments=list(segments), judges=list(judges),
        cell_model=uniq[:, 0].astype(np.int64), cell_segment=uniq[:, 1].astype(np.int64),
        cell_x=uniq[:, 2:].astype(float), cell_n=cell_n.astype(np.int64),
        cell_lab_items=cell_lab_items.astype(np.int64), cell_lab_y=cell_lab_y.astype(float),
        obs_cell=obs_cell.astype(np.int64), obs_k=obs_k, obs_n=obs_n,
    )
    return (data, inv) if return_index else data


def pair_cells_from_arrays(
    features: list[str], item_x: np.ndarray, lab_item: np.ndarray, lab_pref: np.ndarray, width: float = PAIR_BIN,
) -> PairData:
    """Aggregate items into pairwise cells; ``lab_pref`` is 0 baseline better, 1 tie, 2 candidate better."""
    x = binned(item_x, width)
    uniq, inv = np.unique(x, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    C = len(uniq)
    lab_item = np.asarray(lab_item, dtype=np.int64)
    lab_pref = np.asarray(lab_pref, dtype=np.int64)
    items, item_inv = np.unique(lab_item, return_inverse=True)
    win = np.bincount(item_inv, weights=lab_pref / 2.0) / np.maximum(np.bincount(item_inv), 1) if len(items) else np.zeros(0)
    return PairData(
        features=list(features), cell_x=uniq.astype(float), cell_n=np.bincount(inv, minlength=C).astype(np.int64),
        cell_lab_items=np.bincount(inv[items], minlength=C).astype(np.int64) if len(items) else np.zeros(C, np.int64),
        cell_lab_win=np.bincount(inv[items], weights=win, minlength=C) if len(items) else np.zeros(C),
        obs_cell=inv[lab_item].astype(np.int64), obs_y=lab_pref,
    )
