"""Bayesian calibration of automated judges against SME verdicts, projected onto the population.

Pointwise model, one per dimension (m = model, s = segment, j = judge, c = cell of binned judge
scores; x[c, j] is judge j's score standardised over all outputs, 0 where the judge is missing)::

    mu[m]         ~ Normal(0, 1.5)         logit pass rate of model m at average scores, average segment
    beta[m, j]    ~ Normal(0, 1)           slope on judge j, separate per model: a judge lenient toward one
                                           model only is calibrated separately for each model
    sigma_segment ~ HalfNormal(0.5)        spread of the segment intercepts
    a[m, s]       ~ Normal(0, 1)           non-centred segment effects: partial pooling across segments
    eta[c]        = mu[m_c] + sigma_segment * a[m_c, s_c] + sum_j beta[m_c, j] * x[c, j]
    k[c]          ~ Binomial(n_lab[c], logistic(eta[c]))    SME passes among the labels in cell c

The population enters through cells: counts of outputs per (model, segment, binned scores)
computed in DuckDB, so the cost of a fit does not grow with the number of unlabelled items.
Each model's population pass rate counts labelled items with their observed verdict (the mean
over annotators) and unlabelled ones through the posterior predictive::

    rate[m] = (sum_c (n[c] - L[c]) * Bernoulli-sum(logistic(eta[c])) + sum_c Y[c]) / N[m]

with L[c] labelled items and Y[c] their verdicts in cell c; the Bernoulli noise of the unlabelled
verdicts is added through its normal approximation, so intervals are for the finite population
actually sampled. Delta = rate[candidate] - rate[baseline].

Two fits share this model and the estimand code:
- ``fit_laplace`` (fast, every new label): for each value on a grid of ``sigma_segment`` a Laplace
  approximation of the rest (Newton's method, exact Hessian), the grid weighted by the Laplace
  marginal likelihood times the prior, as in INLA. ~10-100 ms.
- ``fit_nuts`` (authoritative): NUTS with nutpie on ``build_pymc_model``, compiled once per shape
  and reused with new data (labelled cells are padded to a power of two so shapes rarely change).

The pairwise preference (baseline better / tie / candidate better) is an ordered-logistic model
on the per-judge score differences and the judges' pairwise preferences (``fit_pairwise``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit

MU_SD, BETA_SD, SIGMA_SCALE = 1.5, 1.0, 0.5
SIGMA_GRID = np.array([0.01, 0.05, 0.1, 0.18, 0.27, 0.38, 0.5, 0.65, 0.85, 1.1, 1.5])


@dataclass
class CellData:
    """One dimension's population cells and labels (arrays indexed by cell c or observation o)."""

    models: list[str]
    segments: list[str]
    judges: list[str]
    cell_model: np.ndarray  # (C,) int
    cell_segment: np.ndarray  # (C,) int
    cell_x: np.ndarray  # (C, J) standardised, binned judge scores
    cell_n: np.ndarray  # (C,) outputs in the population
    cell_lab_items: np.ndarray  # (C,) labelled outputs
    cell_lab_y: np.ndarray  # (C,) sum over labelled outputs of their mean verdict
    obs_cell: np.ndarray  # (K,) labelled cells (likelihood)
    obs_k: np.ndarray  # (K,) passes
    obs_n: np.ndarray  # (K,) labels

    @property
    def n_params(self) -> int:
        M, S, J = len(self.models), len(self.segments), len(self.judges)
        return M + M * J + M * S

    @property
    def n_labels(self) -> int:
        return int(self.obs_n.sum())


@dataclass
class Posterior:
    """Draws of the parameters: ``theta`` is (D, P) = [mu (M), beta (M*J), a (M*S)], ``sigma`` (D,)."""

    theta: np.ndarray
    sigma: np.ndarray
    kind: str
    diagnostics: dict = field(default_factory=dict)
    # Laplace only: the mode and Hessian at the heaviest grid point, used by the forecast.
    mode: np.ndarray | None = None
    hessian: np.ndarray | None = None
    mode_sigma: float | None = None


# --------------------------------------------------------------------------- linear predictor


def _design(data: CellData, cells: np.ndarray, sigma: float) -> np.ndarray:
    """Design matrix (len(cells), P) of the linear predictor for fixed sigma."""
    M, S, J = len(data.models), len(data.segments), len(data.judges)
    m, s, x = data.cell_model[cells], data.cell_segment[cells], data.cell_x[cells]
    X = np.zeros((len(cells), M + M * J + M * S))
    rows = np.arange(len(cells))
    X[rows, m] = 1.0
    for j in range(J):
        X[rows, M + m * J + j] = x[:, j]
    X[rows, M + M * J + m * S + s] = sigma
    return X


def eta_draws(data: CellData, post: Posterior, cells: np.ndarray | None = None) -> np.ndarray:
    """Linear predictor (D, C) for every draw and cell (loops over models to keep memory small)."""
    M, S, J = len(data.models), len(data.segments), len(data.judges)
    cells = np.arange(len(data.cell_n)) if cells is None else cells
    th = post.theta
    out = np.empty((th.shape[0], len(cells)))
    cm, cs, cx = data.cell_model[cells], data.cell_segment[cells], data.cell_x[cells]
    for m in range(M):
        idx = np.flatnonzero(cm == m)
        if not len(idx):
            continue
        beta = th[:, M + m * J: M + (m + 1) * J]  # (D, J)
        a = th[:, M + M * J + m * S + cs[idx]]  # (D, n)
        out[:, idx] = th[:, [m]] + post.sigma[:, None] * a + beta @ cx[idx].T
    return out


# --------------------------------------------------------------------------- Laplace fit


def _prior_precision(data: CellData) -> np.ndarray:
    M, S, J = len(data.models), len(data.segments), len(data.judges)
    return np.concatenate([np.full(M, MU_SD ** -2), np.full(M * J, BETA_SD ** -2), np.ones(M * S)])


def _newton(X, k, n, prec, theta0, iters=60):
    theta = theta0.copy()
    for _ in range(iters):
        eta = X @ theta
        p = expit(eta)
        g = X.T @ (k - n * p) - prec * theta
        H = (X * (n * p * (1 - p))[:, None]).T @ X + np.diag(prec)
        step = np.linalg.solve(H, g)
        theta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    eta = X @ theta
    p = expit(eta)
    H = (X * (n * p * (1 - p))[:, None]).T @ X + np.diag(prec)
    loglik = float(np.sum(k * log_expit(eta) + (n - k) * log_expit(-eta)))
    logprior = float(-0.5 * np.sum(prec * theta ** 2) + 0.5 * np.sum(np.log(prec / (2 * np.pi))))
    sign, logdet = np.linalg.slogdet(H)
    log_marginal = loglik + logprior + 0.5 * len(theta) * np.log(2 * np.pi) - 0.5 * logdet
    return theta, H, log_marginal


def fit_laplace(data: CellData, draws: int = 1000, seed: int = 0) -> Posterior:
    """Fast fit: Laplace approximations on a grid of sigma_segment, mixed by marginal likelihood."""
    rng = np.random.default_rng(seed)
    prec = _prior_precision(data)
    k, n = data.obs_k.astype(float), data.obs_n.astype(float)
    theta0 = np.zeros(data.n_params)
    fits = []
    for sigma in SIGMA_GRID:
        X = _design(data, data.obs_cell, sigma)
        theta, H, lml = _newton(X, k, n, prec, theta0)
        theta0 = theta
        fits.append((sigma, theta, H, lml))
    # grid weights: marginal likelihood x HalfNormal prior x trapezoid width
    widths = np.gradient(SIGMA_GRID)
    log_prior = -0.5 * (SIGMA_GRID / SIGMA_SCALE) ** 2
    logw = np.array([f[3] for f in fits]) + log_prior + np.log(widths)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    counts = rng.multinomial(draws, w)
    thetas, sigmas = [], []
    for (sigma, theta, H, _), cnt in zip(fits, counts):
        if cnt == 0:
            continue
        L = np.linalg.cholesky(np.linalg.inv(H))
        thetas.append(theta + rng.standard_normal((cnt, len(theta))) @ L.T)
        sigmas.append(np.full(cnt, sigma))
    best = int(np.argmax(w))
    return Posterior(
        theta=np.vstack(thetas), sigma=np.concatenate(sigmas), kind="laplace",
        diagnostics={"sigma_grid_weights": dict(zip(map(float, SIGMA_GRID), map(float, w)))},
        mode=fits[best][1], hessian=fits[best][2], mode_sigma=float(fits[best][0]),
    )


# --------------------------------------------------------------------------- NUTS fit


def _pad(K: int) -> int:
    return max(64, 1 << (max(K, 1) - 1).bit_length())


def _obs_arrays(data: CellData, K_pad: int) -> dict[str, np.ndarray]:
    K, J = len(data.obs_cell), len(data.judges)
    om = np.zeros(K_pad, dtype=np.int64)
    os_ = np.zeros(K_pad, dtype=np.int64)
    ox = np.zeros((K_pad, J))
    ok = np.zeros(K_pad, dtype=np.int64)
    on = np.zeros(K_pad, dtype=np.int64)
    c = data.obs_cell
    om[:K], os_[:K], ox[:K] = data.cell_model[c], data.cell_segment[c], data.cell_x[c]
    ok[:K], on[:K] = data.obs_k, data.obs_n
    return {"obs_model": om, "obs_segment": os_, "obs_x": ox, "obs_k": ok, "obs_n": on}


def build_pymc_model(data: CellData, K_pad: int | None = None):
    """The generative model of the module docstring as a PyMC model (labelled cells as data)."""
    import pymc as pm

    K_pad = K_pad or _pad(len(data.obs_cell))
    arr = _obs_arrays(data, K_pad)
    coords = {"model": data.models, "segment": data.segments, "judge": data.judges, "obs": np.arange(K_pad)}
    with pm.Model(coords=coords) as model:
        om = pm.Data("obs_model", arr["obs_model"], dims="obs")
        os_ = pm.Data("obs_segment", arr["obs_segment"], dims="obs")
        ox = pm.Data("obs_x", arr["obs_x"], dims=("obs", "judge"))
        on = pm.Data("obs_n", arr["obs_n"], dims="obs")
        ok = pm.Data("obs_k", arr["obs_k"], dims="obs")
        mu = pm.Normal("mu", 0.0, MU_SD, dims="model")
        beta = pm.Normal("beta", 0.0, BETA_SD, dims=("model", "judge"))
        sigma = pm.HalfNormal("sigma_segment", SIGMA_SCALE)
        a = pm.Normal("a_segment", 0.0, 1.0, dims=("model", "segment"))
        eta = mu[om] + sigma * a[om, os_] + (beta[om] * ox).sum(axis=-1)
        pm.Binomial("k", n=on, p=pm.math.invlogit(eta), observed=ok, dims="obs")
    return model


_COMPILED: dict[tuple, object] = {}
_COMPILE_LOCK = threading.Lock()


def fit_nuts(data: CellData, draws: int = 1000, tune: int = 600, chains: int = 2, seed: int = 0) -> Posterior:
    """Authoritative fit: NUTS (nutpie), compiled once per shape and reused with ``with_data``."""
    import nutpie

    M, S, J = len(data.models), len(data.segments), len(data.judges)
    K_pad = _pad(len(data.obs_cell))
    key = (M, S, J, K_pad)
    with _COMPILE_LOCK:
        compiled = _COMPILED.get(key)
        if compiled is None:
            compiled = nutpie.compile_pymc_model(build_pymc_model(data, K_pad))
            _COMPILED[key] = compiled
    compiled = compiled.with_data(**_obs_arrays(data, K_pad))
    idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=False)
    post = idata.posterior
    mu = post["mu"].values.reshape(-1, M)
    beta = post["beta"].values.reshape(-1, M * J)
    a = post["a_segment"].values.reshape(-1, M * S)
    sigma = post["sigma_segment"].values.reshape(-1)
    return Posterior(np.hstack([mu, beta, a]), sigma, "nuts", diagnostics=convergence(idata))


def convergence(idata) -> dict:
    """R-hat, bulk ESS and divergences, with warnings when R-hat >= 1.01, ESS <= 400 or divergences."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        names = ["mu", "beta", "sigma_segment", "a_segment"]
        rhat = az.rhat(idata, var_names=names)
        ess = az.ess(idata, var_names=names, method="bulk")
    max_rhat = float(max(np.nanmax(rhat[v].values) for v in names))
    min_ess = float(min(np.nanmin(ess[v].values) for v in names))
    div = int(idata.sample_stats["diverging"].values.sum())
    warns = []
    if max_rhat >= 1.01:
        warns.append(f"R-hat {max_rhat:.3f} >= 1.01: chains disagree; refit with more tuning")
    if min_ess <= 400:
        warns.append(f"bulk ESS {min_ess:.0f} <= 400: too few effective draws")
    if div:
        warns.append(f"{div} divergent transitions")
    return {"max_rhat": max_rhat, "min_ess_bulk": min_ess, "divergences": div, "warnings": warns}


# --------------------------------------------------------------------------- estimands


@dataclass
class RateDraws:
    """Population pass-rate draws: ``overall[m]`` (D,) and ``by_segment[m][s]`` (D,)."""

    overall: dict[str, np.ndarray]
    by_segment: dict[str, dict[str, np.ndarray]]


def population_rate_draws(data: CellData, post: Posterior, seed: int = 0) -> RateDraws:
    """Draws of each model's population pass rate (and per segment), finite-population predictive."""
    rng = np.random.default_rng(seed)
    p = expit(eta_draws(data, post))  # (D, C)
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0).astype(float)
    exp_pass = p * unl  # expected unlabelled passes per cell
    var_pass = p * (1 - p) * unl
    overall, by_seg = {}, {}
    for mi, m in enumerate(data.models):
        by_seg[m] = {}
        for si, s in [(None, None)] + list(enumerate(data.segments)):
            idx = data.cell_model == mi
            if si is not None:
                idx = idx & (data.cell_segment == si)
            N = data.cell_n[idx].sum()
            if N == 0:
                continue
            mean = exp_pass[:, idx].sum(1) + data.cell_lab_y[idx].sum()
            sd = np.sqrt(var_pass[:, idx].sum(1))
            draws = (mean + sd * rng.standard_normal(len(mean))) / N
            if si is None:
                overall[m] = np.clip(draws, 0, 1)
            else:
                by_seg[m][s] = np.clip(draws, 0, 1)
    return RateDraws(overall, by_seg)


def posterior_interval(draws: np.ndarray, mass: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): posterior mean and equal-tailed credible interval."""
    lo, hi = np.quantile(draws, [(1 - mass) / 2, 1 - (1 - mass) / 2])
    return float(np.mean(draws)), float(lo), float(hi)


def p_noninferior(delta_draws: np.ndarray, margin: float) -> float:
    """P(Delta >= -margin): the candidate is not worse than the baseline by more than the margin."""
    return float(np.mean(delta_draws >= -margin))


def decide(p_noninf: float, threshold: float = 0.95) -> str:
    """'not worse' when P(Delta >= -margin) >= threshold, 'worse' when P(Delta < -margin) >= threshold."""
    if p_noninf >= threshold:
        return "not worse"
    if 1 - p_noninf >= threshold:
        return "worse"
    return "label more"


# --------------------------------------------------------------------------- pairwise


@dataclass
class PairData:
    """Pairwise cells for one (baseline, candidate, dimension): features, population, labels."""

    features: list[str]
    cell_x: np.ndarray  # (C, F)
    cell_n: np.ndarray  # (C,)
    cell_lab_items: np.ndarray  # (C,)
    cell_lab_win: np.ndarray  # (C,) sum of labelled items' win score (1 candidate, 0.5 tie, 0 baseline)
    obs_cell: np.ndarray  # (K,)
    obs_y: np.ndarray  # (K,) 0 baseline better, 1 tie, 2 candidate better


def _pair_nlp(params, X, y, F):
    gamma, c0, lg = params[:F], params[F], params[F + 1]
    c1 = c0 + np.exp(lg)
    eta = X @ gamma
    lp0 = log_expit(c0 - eta)  # P(y <= 0)
    lp2 = log_expit(eta - c1)  # P(y = 2)
    p1 = np.clip(expit(c1 - eta) - expit(c0 - eta), 1e-300, None)
    ll = np.where(y == 0, lp0, np.where(y == 2, lp2, np.log(p1))).sum()
    prior = -0.5 * np.sum(gamma ** 2) - 0.5 * (c0 / 2.0) ** 2 - 0.5 * lg ** 2
    return -(ll + prior)


def _num_hessian(f, x, h=1e-4):
    P = len(x)
    H = np.empty((P, P))
    for i in range(P):
        for j in range(i, P):
            e_i, e_j = np.eye(P)[i] * h, np.eye(P)[j] * h
            H[i, j] = H[j, i] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j) + f(x - e_i - e_j)) / (4 * h * h)
    return H


def fit_pairwise(data: PairData, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """Laplace fit of the ordered-logistic preference model; returns win-rate draws (D,).

    Win rate = P(candidate better) + P(tie) / 2 over the population, labelled items counted
    with their observed preference.
    """
    rng = np.random.default_rng(seed)
    F = len(data.features)
    X = data.cell_x[data.obs_cell]
    f = lambda th: _pair_nlp(th, X, data.obs_y, F)  # noqa: E731
    res = optimize.minimize(f, np.zeros(F + 2), method="BFGS")
    H = _num_hessian(f, res.x)
    try:
        cov = np.linalg.inv(H)
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        L = np.linalg.cholesky(np.linalg.inv(H + 1e-6 * np.eye(len(res.x))))
    th = res.x + rng.standard_normal((draws, len(res.x))) @ L.T
    eta = th[:, :F] @ data.cell_x.T  # (D, C)
    c0 = th[:, [F]]
    c1 = c0 + np.exp(th[:, [F + 1]])
    p_cand = expit(eta - c1)
    p_tie = expit(c1 - eta) - expit(c0 - eta)
    win = p_cand + 0.5 * p_tie
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0)
    N = data.cell_n.sum()
    mean = (win * unl).sum(1) + data.cell_lab_win.sum()
    var = ((p_cand + 0.25 * p_tie - win ** 2) * unl).sum(1)
    return np.clip((mean + np.sqrt(np.maximum(var, 0)) * rng.standard_normal(draws)) / N, 0, 1)


def logit(p: float) -> float:
    return math.log(p / (1 - p))
