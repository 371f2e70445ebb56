"""Two-phase (double-sampling) estimation: the judges score a probability sample, SMEs label a
sample of the judged items.

Phase 1 draws the judged sample s1 from the N items with inclusion probabilities pi1_i
(``calib.data.phase1``: uniform or stratified by segment, so pi1 = n1_h / N_h in stratum h); phase 2
(the SME queue) draws the labelled items s2 from s1 with its recorded probabilities, whose
weights c_i make sum_{s2} c_i g_i estimate sum_{s1} g_i (``design.sequential_weights``). The
population total of the verdicts is estimated by the two-phase difference (regression) estimator

    T = sum_{i in s1} p_i / pi1_i  +  sum_{i in s2} c_i e_i / pi1_i,      e_i = y_i - p_(-i),

the calibration model's prediction of every judged output expanded to the population, plus the
labelled residuals expanded twice (Särndal, Swensson & Wretman 1992, ch. 9). It is unbiased for
any working model: given s1, the second term's expectation is sum_{s1} e_i / pi1_i, so
E[T | s1] = sum_{s1} y_i / pi1_i, the Horvitz-Thompson total of the verdicts over s1. Its variance
therefore has two parts,

    V(T) = V1 + V2,  V1 = Var(sum_{s1} y_i / pi1_i)   (phase 1: which items were judged),
                     V2 = E[Var(second term | s1)]      (phase 2: which judged items were labelled),

V2 is the census estimator's variance with each residual expanded by 1 / pi1 (the code in
``design._domain_estimate``, unchanged), and V1 is estimated from the labelled items,

    V1 ~= sum_{i in s2} c_i (1 - pi1_i) / pi1_i^2 (y_i - ybar)(y_i - ybar)'     (jointly over models),

the Poisson-sampling form of the Horvitz-Thompson variance with s1's sum estimated by s2. For a
(stratified) simple random phase 1 it is sum_h N_h^2 (1 - f_h) S_y^2 / n1_h with the overall,
not the stratum's, mean: conservative by the between-strata variance (small for pass rates).
Each model's diagonal is floored at the binary bound q (1 - q) with a Jeffreys-type q =
(passes + 1/2) / (labels + 1): a 0/1 verdict's population variance is exactly theta (1 - theta),
and 30 labels that all pass do not show that the judged sample's outputs all pass.

The phase-1 term does not shrink with more labels: at 2% judged and 300 labels it is a small
share of the width when the judges are weak (S_e^2 close to S_y^2), a larger one when they are
strong (``bench/two_phase.py``). ``calib.insight.plan`` chooses n1 and n2 from the same variance.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from calib.data.cells import CellData


def expanded_cells(data: CellData, lab_cell: np.ndarray, lab_y: np.ndarray, lab_w1: np.ndarray) -> CellData:
    """A copy of ``data`` whose cell counts stand for the population: ``cell_n`` = the cell's
    judged outputs expanded by 1 / pi1 (``data.cell_pop``), ``cell_lab_items`` and ``cell_lab_y``
    = the labelled outputs' count and verdicts, each expanded by its own 1 / pi1. Population totals
    (N, the unlabelled outputs' predicted passes) computed from it are the phase-1 Horvitz-Thompson
    totals; the model's likelihood (``obs_*``) is unchanged."""
    if data.cell_pop is None:
        return data
    C = len(data.cell_n)
    lab_pop = np.bincount(lab_cell, weights=lab_w1, minlength=C) if len(lab_cell) else np.zeros(C)
    lab_y_pop = np.bincount(lab_cell, weights=lab_y * lab_w1, minlength=C) if len(lab_cell) else np.zeros(C)
    pop = np.maximum(np.asarray(data.cell_pop, float), lab_pop)
    return replace(data, cell_n=pop, cell_lab_items=lab_pop, cell_lab_y=lab_y_pop)


def expanded_domain_inputs(ylab: np.ndarray, N: np.ndarray, e: np.ndarray, present: np.ndarray, w1: np.ndarray,
                           w: np.ndarray, wv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``design._domain_estimate``'s inputs (y_lab_total, n_unl, w, wv) for a two-phase domain whose
    totals ``ylab``/``N`` are already expanded by 1 / pi1 (``expanded_cells``): the labelled residuals
    ``e`` (I, M) are expanded by 1 / pi1 too. In its form (ylab + pred + (n_unl + n_s) ebar - sum e) / N
    that is ylab - sum e w1 + sum e and n_unl = N - n_s; the weights carry 1 / pi1."""
    w1 = np.asarray(w1, float)
    pe = present * e
    ylab = ylab - (pe * w1[:, None]).sum(0) + pe.sum(0)
    return ylab, N - present.sum(0), w * w1, wv * w1


def phase1_cov(y: np.ndarray, present: np.ndarray, w: np.ndarray, w1: np.ndarray, n1: float) -> np.ndarray:
    """V1 (M, M): the phase-1 variance of the models' population totals, estimated from the
    labelled items (module docstring). ``y``/``present`` (I, M): each labelled item's verdict share
    per model and whether that output is labelled; ``w`` (I,): phase-2 design weights (rescaled
    here to sum to ``n1``, the judged items they stand for); ``w1`` (I,): 1 / pi1."""
    I, M = y.shape
    if I == 0:
        return np.zeros((M, M))
    c = np.asarray(w, float) * n1 / max(float(np.sum(w)), 1e-12)
    w1 = np.asarray(w1, float)
    pi1 = 1.0 / np.maximum(w1, 1.0)
    a = c * (1.0 - pi1) * w1 ** 2  # (I,): each item's share of sum_{s1} (1 - pi1) / pi1^2 (.)
    if not np.any(a > 0):
        return np.zeros((M, M))
    hw = present * (c * w1)[:, None]
    ybar = np.where(hw.sum(0) > 0, (hw * y).sum(0) / np.where(hw.sum(0) > 0, hw.sum(0), 1), 0.0)
    r = present * (y - ybar)
    fpc = I / max(I - 1, 1)
    V = fpc * (r * a[:, None]).T @ r
    # the binary bound per model: a verdict's population variance is theta (1 - theta)
    n_m = present.sum(0)
    q = ((present * y).sum(0) + 0.5) / (n_m + 1.0)
    bound = (present * a[:, None]).sum(0) * fpc * q * (1 - q)
    extra = np.sqrt(np.maximum(bound - np.diag(V), 0.0))
    # raised as a component shared by the models (as the design floor): Delta pays only the
    # difference of the raises, so a floor on two similar rates does not widen their Delta
    V = V + np.outer(extra, extra)
    # the same bound for each pair's difference d = y_m' - y_m: where the labelled items hold few
    # discordant pairs (none, when two systems agree on every labelled document) the estimated
    # phase-1 variance of Delta is ~0, as if the unjudged items could not differ; SummEval at 40 of
    # 50 judged documents covered 0.27 in those cases (6% of intervals; 0.957 elsewhere). Floor it
    # at the discordance's Jeffreys-type rate q_d (1 - q_d), half on each model's own variance.
    raise_ = np.zeros(M)
    for m in range(M):
        for k in range(m + 1, M):
            both = present[:, m] * present[:, k]
            n_b = float(both.sum())
            if n_b == 0:
                continue
            q_d = (float((both * np.abs(y[:, m] - y[:, k])).sum()) + 0.5) / (n_b + 1.0)
            bound_d = float((both * a).sum()) * fpc * q_d * (1 - q_d)
            gap = bound_d - (V[m, m] + V[k, k] - 2 * V[m, k])
            if gap > 0:
                raise_[m], raise_[k] = max(raise_[m], gap / 2), max(raise_[k], gap / 2)
    return V + np.diag(raise_)


def stratified_pi1(strata: np.ndarray, n1: dict, N: dict) -> np.ndarray:
    """pi1 of each judged item of a (stratified) simple random phase 1: n1_h / N_h of its stratum."""
    return np.array([n1[h] / N[h] for h in strata.tolist()], float)
