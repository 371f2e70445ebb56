"""Design-consistent pass rates: the calibration model's projection corrected by the labelled items.

The Bayesian calibration model (``calib.stats.model``) is the *working model*: it pools judges,
models and segments, so its prediction of every unlabelled output's verdict is good. But when it is
misspecified (real judges are rarely logistic in their normal scores) its projection is biased, and
its posterior interval does not know. The estimate reported to the lead is therefore model-assisted
(a difference / AIPW estimator, Särndal et al. 1992; as in prediction-powered inference):

    theta_m = (1/N_m) [ sum_{labelled i} y_i  +  sum_{unlabelled i} p_i  +  R_m ]

where p_i is the model's posterior-mean pass probability of output i (through its cell), and R_m
estimates the unlabelled outputs' total residual sum_{unlabelled} (y_i - p_i) from the labelled
items' residuals, weighted by their inclusion probabilities (Hajek form: R_m = N_unl * sum_S
(w_i - 1) e_i / sum_S (w_i - 1), w_i = 1 / pi_i). This is design-consistent whatever the model:
a wrong model costs width, not coverage.

- Residuals are *honest*: e_i = y_i - p_(-i), the leave-one-out prediction of output i, by
  importance sampling over the posterior draws (the draws reweighted by 1 / likelihood of the
  output's own labels). In-sample residuals are shrunk towards 0 by the fit and would make the
  interval too narrow at small n.
- Variance: the linearised design variance with a finite-population correction (Poisson / SRS),
  V = (1/N^2) n/(n-1) sum_S (1 - pi_i) w_i^2 (e_i - e_bar)^2, jointly for all models of an item
  (Delta's variance uses the paired residuals: the two outputs of an item were labelled together).
- Small samples: where the model's own expected residual variance p(1-p) is larger than the
  empirical one, it is pooled in as ``PRIOR_N`` pseudo-items (an honest prior: a handful of labels
  that happen to agree with the model do not make a zero-width interval), and the interval uses a
  Student-t whose degrees of freedom are Kish's effective sample size of the weights minus one.
- Near 0 or 1: the variance is floored by a "surprise" variance (wrong-side predictions at a
  Laplace-type rate, at the squared size a surprise would have at the model's predictions), and
  each rate's margin is a Jeffreys-type Beta with the effective number of trials its variance is
  worth (``_t_draws``): longer on the side toward 1/2, as a Jeffreys or Wilson interval is.
- Draws: the estimate is returned as draws from the multivariate t (its margins mapped onto those
  Betas), so every downstream consumer (intervals, P(not worse), Delta, segments) works unchanged.

A domain (a model, or a model within a segment) with fewer than ``MIN_ITEMS`` labelled items has no
design-based estimate; it keeps the model's posterior draws and is reported as model-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaincinv, logsumexp, ndtr

from calib.data.cells import CellData
from calib.stats import twophase
from calib.stats.model import expit_fast

# Pseudo-items of model-implied residual variance pooled into the empirical variance where it is
# the larger. At ~20 labelled items the empirical variance alone is so unstable that the narrowest
# quarter of the intervals covered 84% (three-candidate demo, 60 units); with 6 pseudo-items, 88-90%
# (README, "Several candidates").
PRIOR_N = 6.0
SURPRISE_PSEUDO = 2.0  # pseudo-items (half of them surprises) in the floor's surprise rate
SURPRISE_SIZE = 0.25  # least squared residual of a surprise (a prediction of 1/2), in the floor
MIN_ITEMS = 2  # fewest labelled items for a design-based estimate of a domain


@dataclass
class LabelledSet:
    """One dimension's labelled outputs, item-aligned for the design estimator.

    ``cell`` indexes ``CellData`` cells; ``k``/``n`` are the output's passes and labels (several
    SMEs); ``y = k / n``; ``w`` is the item's weight in the estimate (``Weights.c``; 1 / pi for a
    single sample), ``wv``/``pi`` its random part and inclusion probability within its batch
    (``Weights.v``/``Weights.pi``; None: ``w`` and 1 / ``w``)."""

    item_id: np.ndarray  # (L,) object
    model: np.ndarray  # (L,) int, index into data.models
    cell: np.ndarray  # (L,) int
    k: np.ndarray  # (L,) float
    n: np.ndarray  # (L,) float
    w: np.ndarray  # (L,) float
    wv: np.ndarray | None = None  # (L,) float
    pi: np.ndarray | None = None  # (L,) float
    # (L,) 1 / pi1, the output's item's phase-1 (judged-sample) inclusion probability in a two-phase
    # design (``calib.stats.twophase``); None in a census (every item judged)
    w1: np.ndarray | None = None

    @property
    def y(self) -> np.ndarray:
        return self.k / np.maximum(self.n, 1)


@dataclass
class DesignRates:
    """Draws of each model's pass rate (overall and per segment) from the design-consistent
    estimator, with what was used (per domain: labelled items, residual sd, "design" or "model")."""

    overall: dict[str, np.ndarray]
    by_segment: dict[str, dict[str, np.ndarray]]
    info: dict = field(default_factory=dict)


@dataclass
class Batch:
    """One sampling batch of a candidate's units, in the order the batches were drawn.

    ``whole``: drawn over every unit still available (the queue's batches; labels from outside the
    queue, declared a uniform sample), not over a lead's subset; ``queued``: units it took out of
    the pool (for outside labels: the labelled ones). A batch is served in random order, so its
    labelled part is a uniform subsample of it."""

    key: object
    whole: bool
    queued: int


@dataclass
class Weights:
    """Per labelled row: ``c``, its weight in the estimate (sum c e estimates the population total
    of e); ``v``, the random part of c (its own batch's term), whose spread is the estimate's
    variance; ``pi``, its inclusion probability within its batch's pool (the finite-population
    correction)."""

    c: np.ndarray
    v: np.ndarray
    pi: np.ndarray


def sequential_weights(w: np.ndarray, item_id: np.ndarray, batch: np.ndarray, batches: list[Batch],
                       n_pop: int) -> Weights:
    """Weights such that sum_i c_i e_i estimates the population total of any e (the residuals)
    from sequential batches, each drawn from the units the earlier ones left.

    ``w`` (L,): 1/pi of each labelled row within its own batch (the batch's recorded inclusion
    probability); ``item_id``/``batch`` (L,): its item and the key of its batch; ``batches``:
    every batch in the order drawn; ``n_pop``: the units.

    Batch b is drawn from the pool U_b, the units the earlier batches did not take. On its own it
    estimates the population total as (the earlier batches' units: their labelled share scaled up
    to the batch, share_g = labelled / queued) + |U_b| x (its Hajek mean of e): unbiased given the
    history for any model, and valid however small the pool has become (with 60 of 100 items
    labelled, the last batch's pool is 40 items, not 100). The estimate combines these per-batch
    estimates with weights lambda_b inversely proportional to their planned variances
    (``batch_combination``), as active inference combines its rounds (Zrnic & Candes 2024), so a
    small batch from a large pool counts for little:

        c_i = lambda_b |U_b| w_i / W_b  +  (sum of lambda over whole batches after b) / share_b

    (W_b: the sum of w over b's labelled items); v_i is the first term. A lead's subset batch has no
    population estimate of its own (lambda = 0): its labelled units only stand for its units in the
    later batches' estimates. A batch none of whose units is labelled (yet) leaves its units to the
    later pools (an assumption: the queue serves the oldest batch first, so this is rare). With no
    whole batch the weights are ``w`` as they are."""
    w = np.asarray(w, float)
    if not len(w):
        return Weights(w, w, w)
    key = np.array([str(b) for b in batch], dtype=object)
    order = [str(b.key) for b in batches]
    info = {str(b.key): b for b in batches}
    # labelled items and weight sums per batch, over distinct items (rows repeat per output)
    first_row: dict = {}
    for r, (i, k) in enumerate(zip(item_id, key)):
        first_row.setdefault((i, k), r)
    served: dict[str, int] = {}
    W: dict[str, float] = {}
    for (_, k), r in first_row.items():
        served[k] = served.get(k, 0) + 1
        W[k] = W.get(k, 0.0) + w[r]
    whole = [k for k in order if info[k].whole and served.get(k, 0) > 0]
    if not whole:
        return Weights(w, w, 1.0 / np.maximum(w, 1.0))
    share = {k: min(served.get(k, 0) / max(info[k].queued, 1), 1.0) for k in order}
    pool, taken = {}, 0
    for k in order:
        pool[k] = max(n_pop - taken, served.get(k, 0), 1)
        if served.get(k, 0):
            taken += max(info[k].queued, served[k])
    lam = batch_combination({k: (pool[k], served[k]) for k in whole})
    after, run = {}, 0.0
    for k in reversed(order):
        after[k] = run
        run += lam.get(k, 0.0)
    v = np.array([lam[k] * pool[k] * w[r] / W[k] if k in lam else 0.0 for r, k in enumerate(key)])
    known = np.array([after[k] / max(share[k], 1e-6) for k in key])
    return Weights(c=v + known, v=v, pi=1.0 / np.maximum(w, 1.0))


def batch_combination(batches: dict) -> dict:
    """Weights lambda_b (summing to 1) of the batches' population estimates: inversely proportional
    to each estimate's planned variance per unit of residual variance, taken as a uniform sample's,

        D_b = |U_b| (|U_b| - n_b) / n_b,

    ``batches``: {key: (pool size |U_b|, labelled items n_b)}.

    Why not proportional to the labelled items: a batch from a pool of 100 and one from the last 40
    hold the same information per label only when the pool is infinite. Each estimates its pool's
    residuals, and the smaller the pool left, the more exactly (its finite-population correction):
    with uniform batches of 10 until 60 of 100 items, weights by labelled items made the error's
    variance 1.5x one uniform sample's; inverse-variance weights recover about one uniform sample's
    N (N - n) / n, and a census of the last pool gets the weight it deserves. Why the counts only,
    not the batch's own weights 1/pi: lambda then does not depend on which units the batch drew
    (given how many), as active inference requires of its rounds' weights; with the drawn units'
    weights in D_b, batches of 5 favouring some units 9x were biased by 4 standard errors in
    simulation (1.6 with counts), for a 7% smaller error."""
    inv = {}
    for k, (pool, n_b) in batches.items():
        d = pool * max(pool - n_b, 0) / max(n_b, 1)
        inv[k] = 1.0 / max(d, 1e-6 * pool)  # a census of its pool: (nearly) exact
    total = sum(inv.values())
    return {k: v / total for k, v in inv.items()}


def loo_predictions(p_draws: np.ndarray, k: np.ndarray, n: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
    """Leave-one-out pass probability of each labelled output, by importance sampling.

    ``p_draws`` (D, L): each draw's pass probability of the labelled outputs' cells. Each draw is
    reweighted by 1 / p^k (1-p)^(n-k), the likelihood of the output's own labels, which removes
    them from the posterior (Gelfand 1992); weights are truncated at sqrt(D) times their mean
    (as in truncated importance sampling, Ionides 2008) so one extreme draw cannot dominate.

    ``key`` (L, K): outputs with equal rows (the same cell, passes and labels) share one
    computation (thousands of labelled outputs fall in a few hundred such groups).
    """
    if key is not None and len(k):
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        return loo_predictions(p_draws[:, first], k[first], n[first])[inverse.ravel()]
    p = np.clip(p_draws.astype(float), 1e-9, 1 - 1e-9)
    ll = k * np.log(p) + (n - k) * np.log1p(-p)  # (D, L)
    lw = -ll
    lw = lw - logsumexp(lw, axis=0)
    D = p.shape[0]
    cap = np.log(np.sqrt(D) / D)
    lw = np.minimum(lw, cap)
    w = np.exp(lw)
    return (w * p).sum(0) / w.sum(0)


def loo_pair_predictions(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Leave-one-out win score (candidate 1, tie 1/2, baseline 0) of each labelled pair.

    ``probs`` (D, I, 3): each draw's probabilities of baseline better / tie / candidate better in
    the item's cell; ``counts`` (I, 3): the item's SME preferences. As ``loo_predictions``: each
    draw reweighted by 1 / the likelihood of the item's own preferences, truncated at sqrt(D)
    times the mean weight."""
    if not len(counts):
        return np.zeros(0)
    p = np.clip(probs.astype(float), 1e-12, 1.0)
    ll = (counts[None, :, :] * np.log(p)).sum(-1)  # (D, I)
    lw = -ll
    lw = lw - logsumexp(lw, axis=0)
    D = p.shape[0]
    lw = np.minimum(lw, np.log(np.sqrt(D) / D))
    w = np.exp(lw)
    win = p[..., 2] + 0.5 * p[..., 1]
    return (w * win).sum(0) / w.sum(0)


def _domain_estimate(y_lab_total: np.ndarray, pred_unl_total: np.ndarray, N: np.ndarray, n_unl: np.ndarray,
                     e: np.ndarray, v_model: np.ndarray, present: np.ndarray, w: np.ndarray,
                     y: np.ndarray | None = None, wv: np.ndarray | None = None,
                     pi: np.ndarray | None = None, parts: dict | None = None,
                     c_err: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean (M,) and covariance (M, M) of the models' rates in one domain; ``e``/``v_model``/
    ``present``/``y`` are (I, M) per labelled item (residual, model variance p(1-p), output
    labelled, observed pass share), ``w`` (I,) the items' weights in the estimate, ``wv``/``pi``
    their random part and inclusion probability within their batch (``Weights``; None: a single
    sample, ``w`` and 1 / ``w``). Returns (mean, cov, items).

    ``parts`` (a dict, filled when given): the covariance's pieces on the same scale, for the
    budget planner (``calib.insight.plan``), which must say how each fades with more labels:
    ``"empirical"`` (the residuals' own), ``"total"`` (with the small-sample protections below),
    and, given ``c_err`` (I, M, M: per item, the posterior covariance of the models' predictions),
    ``"model_error"``: the part of the empirical one that is the calibration's estimation error
    (a residual y - p-hat carries p-hat - p, whose variance falls as labels teach the model).

    The unlabelled outputs' residual total is the population's, N x (the c-weighted mean residual,
    a Hajek ratio: within a segment this post-stratifies the sample), less the labelled outputs'
    (those outside this sample, e.g. the baseline's labelled for another candidate, at the mean).
    The empirical residual variance is pooled with ``PRIOR_N`` pseudo-items of the model's own
    p(1-p), then floored per model (see the code: rates near 0 or 1; SummEval's 0.99 rate covered
    50-68% of the time without the floor)."""
    I, M = e.shape
    scale = N.max() / max(w.sum(), 1e-12)  # the weights' sum is the domain's size only on average
    c = w * scale
    v = c if wv is None else wv * scale
    pi = 1.0 / np.maximum(c, 1.0) if pi is None else pi
    cp = c[:, None] * present
    tot = cp.sum(0)
    ebar = np.where(tot > 0, (cp * e).sum(0) / np.where(tot > 0, tot, 1), 0.0)
    n_s = present.sum(0)
    R = (n_unl + n_s) * ebar - (present * e).sum(0)
    mean = (y_lab_total + pred_unl_total + R) / np.where(N > 0, N, 1)
    # linearised variance of the random part, jointly over models; units that only stand for
    # themselves or for their batch (v = 0) add none. Residuals are centred by the estimate's mean,
    # not by their batch's: each batch is its own Poisson sample, but centring per batch (its
    # within-batch variance) covered 0.92-0.93 at 40-60 of ~100 PandaLM pairs chosen by the queue,
    # against 0.95 centred overall, at the same width at equal coverage (bench/realdata.py)
    r = present * v[:, None] * (e - ebar)  # (I, M)
    scale_fpc = (1.0 - pi)[:, None]
    fpc = I / max(I - 1, 1)
    V_emp = fpc * (r * scale_fpc).T @ r
    r_mod = present * v[:, None] * np.sqrt(v_model)
    V_mod = fpc * np.diag(((r_mod ** 2) * scale_fpc).sum(0))
    # the prior only ever widens: pooled where the model expects more residual variance than the
    # sample shows (a variance small by chance at ~20 items), never pulling a larger empirical one
    # down (PandaLM's preference model expects less than its 20 compared pairs show: 0.922 coverage
    # when pooled both ways); covariances are left as estimated
    gap = np.maximum(np.diag(V_mod) - np.diag(V_emp), 0.0)
    V = V_emp + np.diag(PRIOR_N * gap / (I + PRIOR_N))
    if y is not None:
        # A variance floor per model, for rates near 0 or 1: labels that all agree with the model
        # leave residuals with no variation, though the population's few failures may simply not
        # have been drawn. The floor is the larger of the model's own expected residual variance
        # p(1-p) and a "surprise" variance: wrong-side predictions (|e| > 1/2) at their
        # Jeffreys-type rate (s + 1) / (n + 2), at the squared size a surprise would have at the
        # model's predictions (``surprise_size``).
        # It is added as a component perfectly correlated across models (a shared uncertainty
        # about the level), so Delta pays only (extra_c - extra_b)^2.
        n_m = present.sum(0)
        s_m = (present * (np.abs(e) > 0.5)).sum(0)
        q = (s_m + SURPRISE_PSEUDO / 2) / (n_m + SURPRISE_PSEUDO)
        per_item = fpc * ((present * v[:, None]) ** 2 * scale_fpc).sum(0)
        F = np.maximum(np.diag(V_mod), per_item * q * (1 - q) * surprise_size(y - e, present))
        extra = np.sqrt(np.maximum(F - np.diag(V), 0.0))
        V = V + np.outer(extra, extra)
    Nn = np.where(N > 0, N, 1)
    NN = np.outer(Nn, Nn)
    if parts is not None:
        parts["empirical"], parts["total"] = V_emp / NN, V / NN
        if c_err is not None:
            a = present * v[:, None] * np.sqrt(scale_fpc)  # (I, M)
            parts["model_error"] = fpc * np.einsum("im,imn,in->mn", a, c_err, a) / NN
    return mean, V / NN, I


def boundary_closures(y: np.ndarray, present: np.ndarray, names: list[str], have: list[int]) -> dict[str, str]:
    """Per model (by name) whose labelled outputs in the domain all pass ("upper") or all fail
    ("lower"): its interval's bound on that side is closed at 1 (or 0), the modified Jeffreys rule
    (Brown, Cai & DasGupta 2001, 4.1.2: x = n gives an upper bound of 1). A finite population can
    pass every item; SummEval's 100 documents did for 91 of 1,600 rates, and the open bound (at
    0.99997 for 20 of 20 passes) missed every one of them (rate coverage 0.92; 0.978 otherwise)."""
    out = {}
    for m in have:
        lab = present[:, m] > 0
        if lab.any():
            if np.all(y[lab, m] >= 1.0):
                out[names[m]] = "upper"
            elif np.all(y[lab, m] <= 0.0):
                out[names[m]] = "lower"
    return out


def closed_interval(lo: float, hi: float, closure: str | None) -> tuple[float, float]:
    """(lo, hi) with the bound ``boundary_closures`` closed: "upper" -> hi = 1, "lower" -> lo = 0."""
    if closure == "upper":
        return lo, 1.0
    if closure == "lower":
        return 0.0, hi
    return lo, hi


def surprise_size(p: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per model (columns), the squared residual a surprise (a verdict on the other side of the
    prediction) would have at the labelled items' predictions ``p``: the mean of max(p, 1 - p)^2,
    at least ``SURPRISE_SIZE`` (a quarter: a prediction of 1/2).

    Why not a constant quarter: where the model predicts 0.01, a failure it did not expect is a
    residual of 0.99, not 0.5. With the quarter, SummEval's 0.05 pass rate (no pass among 40 random
    labelled summaries, five among the 60 others) got an upper bound of 0.04 in 9 of 100
    replicates (bench/coverage_gaps.py)."""
    p = np.clip(np.asarray(p, float), 0.0, 1.0)
    n = np.maximum(present.sum(0), 1e-12)
    size = (present * np.maximum(p, 1 - p) ** 2).sum(0) / n
    return np.maximum(size, SURPRISE_SIZE)


def t_df(w: np.ndarray) -> int:
    """Degrees of freedom of a domain's Student-t: Kish's effective sample size of its design
    weights, minus one. Unequal weights make n items worth fewer equal ones, and the variance
    estimate as unstable as that smaller sample's (at 20 labelled items with a few large weights,
    n - 1 degrees of freedom under-covered)."""
    w = np.asarray(w, float)
    if not len(w) or w.sum() <= 0:
        return 1
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    return max(int(np.floor(n_eff)) - 1, 1)


def jeffreys_size(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Effective number of Bernoulli trials n per rate: the n whose Jeffreys posterior
    Beta(n m + 1/2, n (1 - m) + 1/2) has variance ``var`` (m = ``mean`` clipped to [0, 1]).

    As the effective sample size of a survey proportion (Korn & Graubard 1998; Liu & Kott 2009):
    the design variance says how many independent trials the estimate is worth, and an interval
    for a proportion from that many trials (Jeffreys, Wilson) behaves near 0 and 1 where a Wald
    interval does not. Solved by bisection on log n (the variance falls as n grows)."""
    m = np.clip(np.asarray(mean, float), 0.0, 1.0)
    v = np.maximum(np.asarray(var, float), 1e-14)
    lo, hi = np.full(m.shape, -6.0), np.full(m.shape, 25.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        n = np.exp(mid)
        a, b = n * m + 0.5, n * (1 - m) + 0.5
        too_wide = a * b / ((a + b) ** 2 * (a + b + 1)) > v
        lo, hi = np.where(too_wide, mid, lo), np.where(too_wide, hi, mid)
    return np.exp((lo + hi) / 2)


def _t_draws(mean: np.ndarray, cov: np.ndarray, df: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, M) draws of the rates: a multivariate t (centre, scale matrix, degrees of freedom)
    whose margins are mapped onto Jeffreys-type intervals for a proportion.

    Each model's standardised t draw s is sent to the quantile Phi(s) of the Beta(n m + 1/2,
    n (1 - m) + 1/2) with n the rate's effective number of trials (``jeffreys_size``): in the
    middle of [0, 1], with the trials of a few labelled items already, the Beta is the normal
    N(m, V) and nothing changes; near 0 or 1 its tail toward the middle is longer and its centre
    moves in by about 1/(2n), as a Jeffreys (or Wilson) interval's does, where the symmetric
    interval is too short on that side (a rate of 0.96 with no failure among 60 labelled
    summaries: the few failures of the unlabelled rest lie beyond it). The t's heavier tails are
    kept (Phi of a t draw, not its own CDF), and so is the joint dependence of the models (a
    copula: Delta's draws stay paired)."""
    M = len(mean)
    L = np.linalg.cholesky(cov + 1e-15 * np.eye(M))
    z = rng.standard_normal((draws, M)) @ L.T
    g = np.sqrt(df / rng.chisquare(df, size=(draws, 1)))
    t = z * g
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    out = np.clip(mean + t, 0.0, 1.0)
    ok = sd > 1e-9
    if ok.any():
        m = np.clip(mean[ok], 0.0, 1.0)
        n = jeffreys_size(m, sd[ok] ** 2)
        u = np.clip(ndtr(t[:, ok] / sd[ok]), 1e-12, 1 - 1e-12)
        out[:, ok] = betaincinv(n * m + 0.5, n * (1 - m) + 0.5, u)
    return out


def design_rate_draws(data: CellData, p_cells: np.ndarray, p_lab_draws: np.ndarray, lab: LabelledSet,
                      model_overall: dict[str, np.ndarray], model_by_segment: dict[str, dict[str, np.ndarray]],
                      seed: int = 0, only: list[int] | None = None) -> DesignRates:
    """The design-consistent rate draws of every model, overall and per segment.

    ``p_cells`` (C,): the posterior-mean pass probability of each cell; ``p_lab_draws`` (D, L):
    posterior draws of the labelled outputs' cell probabilities (for the leave-one-out residuals);
    ``model_overall``/``model_by_segment``: the model-based draws, kept for domains with too few
    labelled items. Draws have the same count as the model-based ones. ``only`` (model indices)
    restricts the estimate to those models (a pair baseline/candidate, whose labelled set is that
    candidate's probability sample); the others are left out of design-based domains.
    """
    rng = np.random.default_rng([seed, 0xD51])
    M, S = len(data.models), len(data.segments)
    D = len(next(iter(model_overall.values()))) if model_overall else 1000
    p_loo = (loo_predictions(p_lab_draws, lab.k, lab.n, key=np.column_stack([lab.cell, lab.k, lab.n]))
             if len(lab.k) else np.zeros(0))
    e_out = lab.y - p_loo
    v_out = np.clip(p_cells[lab.cell] * (1 - p_cells[lab.cell]), 1e-6, None) if len(lab.k) else np.zeros(0)
    # item-aligned arrays
    items, item_idx = np.unique(lab.item_id.astype(str), return_inverse=True) if len(lab.k) else (np.zeros(0), np.zeros(0, int))
    I = len(items)
    E = np.zeros((I, M))
    Vm = np.zeros((I, M))
    P = np.zeros((I, M))
    Y = np.zeros((I, M))
    W = np.ones(I)
    WV = np.ones(I)
    PI = np.ones(I)
    SEG = np.zeros(I, np.int64)
    if I:
        E[item_idx, lab.model] = e_out
        Vm[item_idx, lab.model] = v_out
        P[item_idx, lab.model] = 1.0
        Y[item_idx, lab.model] = lab.y
        W[item_idx] = lab.w
        WV[item_idx] = lab.w if lab.wv is None else lab.wv
        PI[item_idx] = 1.0 / np.maximum(lab.w, 1.0) if lab.pi is None else lab.pi
        SEG[item_idx] = data.cell_segment[lab.cell]
    # per item, the posterior covariance of the models' predictions (the planner's "model error")
    C_ERR = np.zeros((I, M, M))
    if I and p_lab_draws.shape[0] > 1:
        Pd = np.zeros((p_lab_draws.shape[0], I, M))
        Pd[:, item_idx, lab.model] = p_lab_draws
        Pd -= Pd.mean(0)
        # (I, M, D) @ (I, D, M): a batched product, 2.5x faster than the equivalent einsum (6 ms at
        # 2,000 labelled items, 3 models, 250 draws), paid on every refit
        C_ERR = np.matmul(Pd.transpose(1, 2, 0), Pd.transpose(1, 0, 2)) / (Pd.shape[0] - 1)
    # two-phase design (``calib.stats.twophase``): the judged sample's counts expanded by 1 / pi1
    two_phase = lab.w1 is not None and data.cell_pop is not None
    W1 = np.ones(I)
    if two_phase and I:
        W1[item_idx] = lab.w1
    pop = (twophase.expanded_cells(data, lab.cell, lab.y, np.asarray(lab.w1, float)) if two_phase else data)
    unl = np.maximum(pop.cell_n - pop.cell_lab_items, 0).astype(float)

    def totals(cell_mask):
        N = np.bincount(data.cell_model[cell_mask], weights=pop.cell_n[cell_mask].astype(float), minlength=M)
        n_unl = np.bincount(data.cell_model[cell_mask], weights=unl[cell_mask], minlength=M)
        pred = np.bincount(data.cell_model[cell_mask], weights=(unl * p_cells)[cell_mask], minlength=M)
        ylab = np.bincount(data.cell_model[cell_mask], weights=pop.cell_lab_y[cell_mask], minlength=M)
        return N, n_unl, pred, ylab

    info: dict = {"domains": {}}
    phase1_part: dict = {}

    def estimate(cell_mask, item_mask, fallback: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
        N, n_unl, pred, ylab = totals(cell_mask)
        n_items = int(item_mask.sum())
        # every model of the domain needs MIN_ITEMS labelled outputs for a design-based estimate
        per_model = (P[item_mask] > 0).sum(0)
        have = [m for m in range(M) if N[m] > 0 and (only is None or m in only)]
        if not have or min(per_model[m] for m in have) < MIN_ITEMS:
            info["domains"][key] = {"estimator": "model", "items": n_items}
            return dict(fallback)
        w_in, wv_in = W[item_mask], WV[item_mask]
        if two_phase:
            ylab, n_unl, w_in, wv_in = twophase.expanded_domain_inputs(ylab, N, E[item_mask], P[item_mask],
                                                                       W1[item_mask], w_in, wv_in)
        parts: dict | None = {} if key == "overall" else None
        mean, cov, n = _domain_estimate(ylab, pred, N, n_unl, E[item_mask], Vm[item_mask], P[item_mask], w_in,
                                        Y[item_mask], wv_in, PI[item_mask] if lab.pi is not None else None,
                                        parts=parts, c_err=C_ERR[item_mask])
        if two_phase:
            # phase 1: which items were judged (c: phase-2 weights summing to the judged items)
            n1 = np.bincount(data.cell_model[cell_mask], weights=data.cell_n[cell_mask].astype(float), minlength=M)
            Nn = np.where(N > 0, N, 1)
            v1 = twophase.phase1_cov(Y[item_mask], P[item_mask], W[item_mask], W1[item_mask], n1.max()) / np.outer(Nn, Nn)
            cov = cov + v1
            phase1_part[key] = v1
        sub = np.array(have)
        dr = _t_draws(mean[sub], cov[np.ix_(sub, sub)], t_df(WV[item_mask]), D, rng)
        info["domains"][key] = {"estimator": "design", "items": n,
                                "sd": {data.models[m]: float(np.sqrt(cov[m, m])) for m in have}}
        closed = boundary_closures(Y[item_mask], P[item_mask], [data.models[m] for m in range(M)], have)
        if closed:
            info["domains"][key]["closed"] = closed
        if parts:
            # the phase-2 variance's pieces (``_domain_estimate``), for the planner
            info["domains"][key]["var_parts"] = {
                k: {data.models[a]: {data.models[b]: float(m_[a, b]) for b in have} for a in have}
                for k, m_ in parts.items()}
        if key in phase1_part:
            # the part of the variance more labels do not reduce (forecast, plan)
            info["domains"][key]["phase1_cov"] = {data.models[a]: {data.models[b]: float(phase1_part[key][a, b])
                                                                   for b in have} for a in have}
        return {data.models[m]: dr[:, j] for j, m in enumerate(have)}

    all_cells = np.ones(len(data.cell_n), bool)
    overall = estimate(all_cells, np.ones(I, bool), model_overall, "overall")
    by_seg: dict[str, dict[str, np.ndarray]] = {m: {} for m in data.models}
    for si, s in enumerate(data.segments):
        fb = {m: model_by_segment[m][s] for m in data.models if s in model_by_segment.get(m, {})}
        est = estimate(data.cell_segment == si, SEG == si, fb, f"segment:{s}")
        for m, d in est.items():
            by_seg[m][s] = d
    info["labelled_items"] = I
    info["estimator"] = info["domains"]["overall"]["estimator"]
    return DesignRates(overall, by_seg, info)


def cell_probabilities(data: CellData, eta_draws: np.ndarray) -> np.ndarray:
    """Posterior-mean pass probability of every cell from linear-predictor draws (D, C)."""
    return expit_fast(eta_draws).mean(0)
