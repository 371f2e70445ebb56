"""Forecast: how the interval of Delta shrinks with k more labelled items, and when a decision comes.

From the Laplace posterior (mode theta*, Hessian H at the heaviest sigma grid point), k more
items chosen by the sampling policy add their expected Fisher information::

    I_k = k * sum_c q_c p_c (1 - p_c) x_c x_c'        (q_c = share of picks falling in cell c)
    Var_k(Delta) = g_k' (H + I_k)^-1 g_k + sum_c (U_c - k q_c) p_c (1 - p_c) / N^2

where g_k is the gradient of Delta with respect to theta over the still-unlabelled outputs
U_c - k q_c. The result is scaled so that k = 0 reproduces the current posterior sd exactly (the
sigma-grid mixture and non-normality are carried along as a ratio).

The reported Delta is the design-consistent estimate (``calib.stats.design``); its forecast sd is
``design_sd_function`` (finite-population s^2 (1/n - 1/N)), and the chance of a decision after k
labels is ``preposterior_decision_probability``: today's estimate combined with a sceptical prior
on Delta (setting ``forecast_prior_sd``), the future estimate's distribution, the decision rule.
Future labels come from the queue's defensive mixture (``sampler_mixture``: its weight from the
same ``calib.stats.sampling`` functions, and the variance gain the labels so far show at that
weight), no longer from a fixed 20% random share: on 12 demo projects the forecast width at 10-50
labels was 4-22% too wide with the uniform assumption, 0.89-1.07x the obtained with the mixture
(bench/forecast_calibration.py).
(``delta_sd_function`` above is the model-based forecast, kept for the model's own interval.)
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import expit

from calib.stats.model import CellData, Posterior, _design


def sampler_mixture(data: CellData, post: Posterior, baseline: int, candidate: int,
                    random_share: float = 0.2) -> dict:
    """The queue's defensive mixture as it would be chosen now (``calib.review.queue.mixture_weight``
    through the same ``calib.stats.sampling`` functions), seen from one dimension's cells, and what
    it does to the variance of future labels.

    A unit's priority is the sd of its predicted residual, sqrt(p (1 - p)) at the posterior mode
    (the queue's Neyman priority; per output cell here, where the queue sums the baseline's and the
    candidate's outputs over the undecided dimensions), made relative and clipped by
    ``sampling.relative_priorities``. The weight ``a`` of the priority part: before any label in
    these cells ``sampling.cold_start_mix`` (the batch within 3x; the queue's cold start ranks by the
    judges' disagreement, here by the same residual sd), then ``sampling.evidence_mix`` from the
    labelled outputs' squared residuals (design weights taken equal: a cell holds no item's pi).
    With pi_a proportional to (1 - a) + a r, a future label's share of the residual variance is

        ratio = sum_l e_l^2 / ((1 - a) + a r_l) / sum_l e_l^2      (l: labelled outputs)

    of a uniform sample's (the estimate ``evidence_mix`` minimises, at the weight it chose; <= 1 /
    (1 - a) whatever the priorities, < 1 where they follow the residuals); 1 before any label.
    Returns {"a", "ratio", "how"}."""
    from calib.stats import sampling

    cells = np.flatnonzero(np.isin(data.cell_model, [baseline, candidate]))
    X = _design(data, cells, post.mode_sigma, post.mode_tau)
    p = expit(X @ post.mode)
    v = p * (1 - p)
    unl = np.maximum(data.cell_n[cells] - data.cell_lab_items[cells], 0).astype(int)
    if unl.sum() == 0:
        return {"a": 0.0, "ratio": 1.0, "how": "nothing left to label"}
    prio = np.sqrt(v)
    r_units, r_cells = sampling.relative_priorities(np.repeat(prio, unl), prio)
    max_mix = 1.0 - random_share
    lab_items = data.cell_lab_items[cells].astype(int)
    if lab_items.sum() == 0:
        a, how = sampling.cold_start_mix(r_units, max_mix), "cold start"
    else:
        # each labelled output's squared residual: its cell's labels' mean (y - p)^2
        pos = {c: j for j, c in enumerate(cells)}
        e2_cell = np.zeros(len(cells))
        for c, k, n in zip(data.obs_cell, data.obs_k, data.obs_n):
            if c in pos and n > 0:
                j = pos[c]
                e2_cell[j] = (k * (1 - p[j]) ** 2 + (n - k) * p[j] ** 2) / n
        r_lab, e2_lab = np.repeat(r_cells, lab_items), np.repeat(e2_cell, lab_items)
        a, what = sampling.evidence_mix(r_lab, e2_lab, np.ones(len(r_lab)), max_mix)
        how = f"evidence from {what['units']} labelled outputs"
        # the gain the labels show at that weight (not the model's own belief, which assumes its
        # priorities follow the residual sd exactly: 0.55-0.77 on the demo, too optimistic)
        return {"a": float(a), "ratio": mixture_variance_ratio(r_lab, e2_lab, a), "how": how}
    # no label yet: the mixture's gain is unknown; a uniform label's variance (the cold start keeps
    # the batch within 3x, so it is no better than that bound either way)
    return {"a": float(a), "ratio": 1.0, "how": how}


def mixture_variance_ratio(r: np.ndarray, e2: np.ndarray, a: float, d: np.ndarray | None = None) -> float:
    """sum d e^2 / ((1 - a) + a r) / sum d e^2: the variance of a label drawn by the mixture with
    priority weight ``a`` (relative priorities ``r``) as a share of a uniform label's, estimated
    from units with squared residuals ``e2`` (and design weights ``d``, default equal)."""
    r, e2 = np.asarray(r, float), np.asarray(e2, float)
    d = np.ones(len(e2)) if d is None else np.asarray(d, float)
    den = float((d * e2).sum())
    if den <= 0:
        return 1.0
    return float((d * e2 / ((1 - a) + a * np.maximum(r, 1e-12))).sum() / den)


def selection_shares(data: CellData, random_share: float = 0.2, post: Posterior | None = None,
                     baseline: int = 0, candidate: int = 1) -> np.ndarray:
    """Share q_c of future picks per cell under the queue's defensive mixture: (1 - a) by size,
    a in proportion to size x the cell's relative priority (``sampler_mixture``: the queue's weight
    a and priorities). Without a posterior (no priorities): the judges' disagreement (spread of the
    standardised scores within the cell) with the priority part's weight 1 - ``random_share``."""
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0).astype(float)
    if unl.sum() == 0:
        return unl
    uni = unl / unl.sum()
    if post is not None and post.mode is not None:
        from calib.stats import sampling

        mix = sampler_mixture(data, post, baseline, candidate, random_share)
        X = _design(data, np.arange(len(unl)), post.mode_sigma, post.mode_tau)
        p = expit(X @ post.mode)
        _, r = sampling.relative_priorities(np.repeat(np.sqrt(p * (1 - p)), unl.astype(int)), np.sqrt(p * (1 - p)))
        a = mix["a"]
    else:
        r = (data.cell_x.std(axis=1) if data.cell_x.shape[1] > 1 else np.ones(len(unl))) + 1e-3
        a = 1.0 - random_share
    pri = unl * r
    return (1 - a) * uni + a * pri / pri.sum()


def delta_sd_after(data: CellData, post: Posterior, extra: list[int], baseline: int, candidate: int,
                   shares: np.ndarray | None = None, current_sd: float | None = None) -> list[float]:
    """Forecast posterior sd of Delta after each number of extra labelled items (each item labels every model)."""
    sd = delta_sd_function(data, post, baseline, candidate, shares, current_sd)
    return [sd(k) for k in extra]


def delta_sd_function(data: CellData, post: Posterior, baseline: int, candidate: int,
                      shares: np.ndarray | None = None, current_sd: float | None = None):
    """The forecast sd of Delta as a function of the number of extra labelled items k (the design
    and the information per item computed once, so many k are cheap)."""
    if post.mode is None:
        raise ValueError("forecast needs a Laplace posterior (fit_laplace)")
    cells = np.arange(len(data.cell_n))
    X = _design(data, cells, post.mode_sigma, post.mode_tau)
    p = expit(X @ post.mode)
    w = p * (1 - p)
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0).astype(float)
    q = selection_shares(data, post=post, baseline=baseline, candidate=candidate) if shares is None else shares
    N = {m: data.cell_n[data.cell_model == m].sum() for m in (baseline, candidate)}
    sign = np.where(data.cell_model == candidate, 1.0 / N[candidate],
                    np.where(data.cell_model == baseline, -1.0 / N[baseline], 0.0))
    info_per_item = {}
    for m in (baseline, candidate):
        qm = np.where(data.cell_model == m, q, 0.0)
        qm = qm / qm.sum() if qm.sum() > 0 else qm
        info_per_item[m] = qm
    q_item = info_per_item[baseline] + info_per_item[candidate]  # one label per model per item
    F1 = (X * (q_item * w)[:, None]).T @ X

    def var_at(k: float) -> float:
        left = np.maximum(unl - k * q_item, 0)
        g = X.T @ (sign * left * w)
        cov = np.linalg.inv(post.hessian + k * F1)
        pred = np.sum((sign ** 2) * left * w)
        return float(g @ cov @ g + pred)

    v0 = var_at(0)
    scale = (current_sd ** 2 / v0) if current_sd else 1.0
    return lambda k: float(np.sqrt(var_at(k) * scale))


def design_sd_function(sd_now: float, n_now: int, N: int, s2_model: float, min_items: int = 2,
                       future_ratio: float = 1.0, fixed_var: float = 0.0):
    """The forecast sd of the design-consistent Delta (``calib.stats.design``) after k more
    labelled items: its variance is s^2 (1/n - 1/N) (finite-population), with s^2 the per-item
    variance of the paired residual. With enough labels s^2 is backed out of today's sd; before
    that it is the model's own residual variance ``s2_model`` (the forecast then rests on the
    judges alone). The k future labels come from the queue's mixture, each worth ``future_ratio``
    (``sampler_mixture``) of a uniform label's variance, pooled with today's n:

        Var(n + k) = (n s^2 + k ratio s^2) / (n + k) x (1 / (n + k) - 1 / N).

    ``fixed_var``: a part labels do not reduce (a two-phase design's phase-1 variance,
    ``calib.stats.twophase``; N is then the judged items): the width has that floor."""
    fixed_var = max(float(fixed_var), 0.0)
    if n_now >= min_items and sd_now > 0 and n_now < N:
        s2 = max(sd_now ** 2 - fixed_var, 0.0) / max(1.0 / n_now - 1.0 / N, 1e-12)
        n0 = n_now
    else:
        s2, n0 = s2_model, 0
    s2_new = s2 * future_ratio

    def sd(k: float) -> float:
        n = n_now + k
        if n <= 0:
            return float(np.sqrt(s2 + fixed_var))
        # too few labels today for their own variance (n0 = 0): the future labels' alone
        s2_pool = (n0 * s2 + k * s2_new) / (n0 + k) if n0 + k > 0 else s2
        return float(np.sqrt(max(s2_pool * (1.0 / n - 1.0 / N), 0.0) + fixed_var))
    sd.s2 = s2_new  # a future label's residual variance (for the preposterior decision chance)
    return sd


def decision_probability(mean: float, sd_now: float, sd_after: float, margin: float, threshold: float = 0.95) -> float:
    """Chance that, after more labels, P(Delta >= -m) or P(Delta < -m) reaches ``threshold``."""
    z = stats.norm.ppf(threshold)
    spread = np.sqrt(max(sd_now ** 2 - sd_after ** 2, 1e-16))
    upper = -margin + z * sd_after  # future mean above this: "not worse"
    lower = -margin - z * sd_after  # future mean below this: "worse"
    return float(stats.norm.sf(upper, mean, spread) + stats.norm.cdf(lower, mean, spread))


def preposterior_decision_probability(mean: float, sd_now: float, n_now: int, k: int, s2: float, sd_after: float,
                                      margin: float, threshold: float = 0.95, prior_sd: float = 0.1) -> float:
    """Chance that, after ``k`` more labelled items, the design-consistent Delta's interval clears
    the margin ("not worse" or "worse" at ``threshold``): a pre-posterior computation.

    Today's design estimate E_n (``mean``, ``sd_now`` from ``n_now`` items) is combined with a
    sceptical prior Delta ~ N(0, prior_sd^2) (most model changes move a pass rate by less than
    +-2 prior_sd; the forecast, unlike the estimate, needs a prior on the truth, and a flat one
    makes the far-from-margin values it cannot rule out look likely). The truth drawn from that
    posterior, the k new items add a mean E_new ~ N(Delta, s2/k) (s2: per-item variance of the
    paired residual), and the future estimate is E_{n+k} = (n E_n + k E_new) / (n + k):

        E_{n+k} ~ N(a E_n + b mu, b^2 (v + s2/k)),  a = n/(n+k), b = k/(n+k)
        mu = E_n prior_sd^2 / (prior_sd^2 + sd_now^2),  v = prior_sd^2 sd_now^2 / (prior_sd^2 + sd_now^2)

    A decision follows when E_{n+k} lands more than z * ``sd_after`` from -margin. With a flat
    prior this is the classical preposterior spread sd_now^2 - sd_after^2; with no labels
    (n = 0) it rests on the prior and the judges' calibration (s2) alone.
    """
    if k <= 0:
        return float(abs(mean + margin) >= stats.norm.ppf(threshold) * sd_now)
    t2, v_now = prior_sd ** 2, max(sd_now, 1e-12) ** 2
    mu = mean * t2 / (t2 + v_now)
    v = t2 * v_now / (t2 + v_now)
    a, b = n_now / (n_now + k), k / (n_now + k)
    centre = a * mean + b * mu
    spread = b * np.sqrt(v + s2 / k)
    z = stats.norm.ppf(threshold)
    return float(stats.norm.sf(-margin + z * sd_after, centre, spread) + stats.norm.cdf(-margin - z * sd_after, centre, spread))


def labels_for_width(sd_fn, target_width: float, max_k: int, z: float = 1.959964) -> int | None:
    """Smallest k with forecast interval width <= target (doubling then bisection); None if never."""
    width = lambda k: 2 * z * sd_fn(k)  # noqa: E731
    if width(0) <= target_width:
        return 0
    hi = 16
    while hi < max_k and width(hi) > target_width:
        hi *= 2
    hi = min(hi, max_k)
    if width(hi) > target_width:
        return None
    lo = hi // 2 if hi > 16 else 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if width(mid) <= target_width:
            hi = mid
        else:
            lo = mid
    return hi
