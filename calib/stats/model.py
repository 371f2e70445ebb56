"""Bayesian calibration of automated judges against SME verdicts, projected onto the population.

Pointwise model, one per dimension (m = model, s = segment, j = judge, c = cell of binned judge
scores; x[c, j] is judge j's score as a rank-based normal score over all outputs of the judge and
dimension, the common scale for 0/1 verdicts, probabilities and Likert scores alike, 0 where the
judge is missing)::

    mu[m]         ~ Normal(0, 5)           logit pass rate of model m at average scores, average segment
    b[j]          ~ Normal(0, 2.5)         judge j's slope, common part
    tau_judge     ~ HalfNormal(1)          how far a judge's slope may differ between models
    d[., j]       ~ ZeroSumNormal(1)       beta[m, j] = b[j] + tau_judge * d[m, j]: slopes per model, partially
                                           pooled, so a judge lenient toward one model only is calibrated
                                           separately for each model, yet few labels still borrow strength
    sigma_segment ~ HalfNormal(0.5)        spread of the segment intercepts
    a[m, .]       ~ ZeroSumNormal(1)       non-centred segment effects summing to zero over segments: partial
                                           pooling; mu[m] is then the average over segments. Zero-sum
                                           deviations keep b vs d and mu vs a identified, which NUTS needs
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
- ``fit_laplace`` (fast, every new label): for each point of a grid over (``sigma_segment``,
  ``tau_judge``) a Laplace approximation of the rest (Newton's method, exact Hessian), the grid
  weighted by the Laplace marginal likelihood times the prior, as in INLA; the Gaussian draws are
  then importance-reweighted to the exact posterior (truncated weights), which fixes the skew
  when failures are rare. Tens of milliseconds.
- ``fit_nuts`` (authoritative): NUTS with nutpie on the density of ``build_pymc_model``,
  reparameterised with the fast fit's help (each deviation partially centred by how strongly the
  labels inform it, then all coordinates whitened by the fast fit's draws), which halves the
  leapfrog steps and doubles the ESS per draw; the density is evaluated by a fused numba kernel
  (``calib.stats.nuts_kernel``, tested equal to the PyMC model's) compiled once per process and reused
  with new data.

The pairwise preference (baseline better / tie / candidate better) is an ordered-logistic model
on the per-judge score differences and the judges' pairwise preferences (``fit_pairwise``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit

from calib.data.cells import CellData, PairData  # noqa: F401  (re-exported: model.CellData)

MU_SD, BETA_SD, SIGMA_SCALE, TAU_SCALE = 5.0, 2.5, 0.5, 1.0  # Gelman et al. (2008) scales, standardised inputs
SIGMA_GRID = np.array([0.02, 0.08, 0.16, 0.27, 0.4, 0.6, 0.9, 1.4])
TAU_GRID = np.array([0.05, 0.2, 0.45, 0.8, 1.3, 2.0])


@dataclass
class Posterior:
    """Draws: ``theta`` is (D, P) = [mu (M), b (J), z_d ((M-1)*J), z_a (M*(S-1))], the deviations in
    the orthonormal zero-sum bases (``zero_sum_basis``); ``sigma``, ``tau`` (D,)."""

    theta: np.ndarray
    sigma: np.ndarray
    tau: np.ndarray
    kind: str
    diagnostics: dict = field(default_factory=dict)
    # Laplace only: the mode and Hessian at the heaviest grid point, used by the forecast.
    mode: np.ndarray | None = None
    hessian: np.ndarray | None = None
    mode_sigma: float | None = None
    mode_tau: float | None = None


# --------------------------------------------------------------------------- linear predictor


def _design(data: CellData, cells: np.ndarray, sigma: float, tau: float) -> np.ndarray:
    """Design matrix (len(cells), P) of the linear predictor for fixed sigma and tau."""
    return _scale_design(_design_unscaled(data, cells), data, sigma, tau)


def zero_sum_basis(n: int) -> np.ndarray:
    """(n, n-1) orthonormal basis of the vectors summing to zero: v = Q z with z ~ N(0, I) is
    PyMC's ZeroSumNormal(sigma=1)."""
    if n <= 1:
        return np.zeros((n, 0))
    q, _ = np.linalg.qr(np.eye(n) - 1.0 / n)
    return q[:, : n - 1]


def _design_unscaled(data: CellData, cells: np.ndarray) -> np.ndarray:
    """The design with sigma = tau = 1; ``_scale_design`` multiplies their column blocks."""
    M, S, J = len(data.models), len(data.segments), len(data.judges)
    QM, QS = zero_sum_basis(M), zero_sum_basis(S)
    m, s, x = data.cell_model[cells], data.cell_segment[cells], data.cell_x[cells]
    X = np.zeros((len(cells), data.n_params))
    rows = np.arange(len(cells))
    X[rows, m] = 1.0
    X[:, M:M + J] = x
    nd = (M - 1) * J
    for k in range(M - 1):  # d[m, j] = sum_k QM[m, k] z_d[k, j]
        X[:, M + J + k * J: M + J + (k + 1) * J] = QM[m, k][:, None] * x
    for k in range(S - 1):  # a[m, s] = sum_k QS[s, k] z_a[m, k]
        X[rows, M + J + nd + m * (S - 1) + k] = QS[s, k]
    return X


def _scale_design(X1: np.ndarray, data: CellData, sigma: float, tau: float) -> np.ndarray:
    M, J = len(data.models), len(data.judges)
    nd = (M - 1) * J
    X = X1.copy()
    X[:, M + J:M + J + nd] *= tau
    X[:, M + J + nd:] *= sigma
    return X


def eta_draws(data: CellData, post: Posterior, cells: np.ndarray | None = None) -> np.ndarray:
    """Linear predictor (D, C) for every draw and cell: sigma and tau are folded into each draw's
    parameters, so the whole thing is one matrix product with the unscaled design."""
    M, J = len(data.models), len(data.judges)
    nd = (M - 1) * J
    cells = np.arange(len(data.cell_n)) if cells is None else cells
    th = post.theta.copy()
    th[:, M + J:M + J + nd] *= post.tau[:, None]
    th[:, M + J + nd:] *= post.sigma[:, None]
    return th.astype(np.float32) @ _design_unscaled(data, cells).T.astype(np.float32)


def expit_fast(eta: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-eta)), elementwise (a new array): scipy's ``expit`` takes ~7 ns an element in
    float32, this ~2 (the draws x cells probabilities of every refit); the two differ by float
    round-off only (relative 3e-7 at most in float32, a few units in the last place)."""
    out = np.negative(eta)
    with np.errstate(over="ignore"):  # exp(-eta) = inf for eta << 0 gives 1 / inf = 0, as it should
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _softplus_inplace(eta: np.ndarray) -> np.ndarray:
    """log(1 + exp(eta)) = max(eta, 0) + log1p(exp(-|eta|)), overwriting ``eta``: ``np.logaddexp(0,
    eta)``'s formula in whole-array passes, three times faster, equal to it to round-off (1e-15)."""
    pos = np.maximum(eta, 0.0)
    np.abs(eta, out=eta)
    np.negative(eta, out=eta)
    np.exp(eta, out=eta)
    np.log1p(eta, out=eta)
    eta += pos
    return eta


# --------------------------------------------------------------------------- Laplace fit


def _prior_precision(data: CellData) -> np.ndarray:
    M, S, J = len(data.models), len(data.segments), len(data.judges)
    return np.concatenate([np.full(M, MU_SD ** -2), np.full(J, BETA_SD ** -2), np.ones((M - 1) * J),
                           np.ones(M * (S - 1))])


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
    """Fast fit: Laplace approximations on a (sigma_segment, tau_judge) grid, mixed by marginal likelihood."""
    rng = np.random.default_rng(seed)
    prec = _prior_precision(data)
    k, n = data.obs_k.astype(float), data.obs_n.astype(float)
    fits = []
    X1 = _design_unscaled(data, data.obs_cell)
    for tau in TAU_GRID:
        theta0 = np.zeros(data.n_params)
        for sigma in SIGMA_GRID:
            X = _scale_design(X1, data, sigma, tau)
            theta, H, lml = _newton(X, k, n, prec, theta0)
            theta0 = theta
            fits.append((sigma, tau, theta, H, lml))
    # grid weights: marginal likelihood x half-normal priors x trapezoid widths
    sig = np.array([f[0] for f in fits])
    tau = np.array([f[1] for f in fits])
    sw = dict(zip(SIGMA_GRID, np.gradient(SIGMA_GRID)))
    tw = dict(zip(TAU_GRID, np.gradient(TAU_GRID)))
    logw = (np.array([f[4] for f in fits]) - 0.5 * (sig / SIGMA_SCALE) ** 2 - 0.5 * (tau / TAU_SCALE) ** 2
            + np.log([sw[x] for x in sig]) + np.log([tw[x] for x in tau]))
    w = np.exp(logw - logw.max())
    w /= w.sum()
    # Draw from the mixture of Gaussians, then importance-reweight toward the exact posterior (the
    # Gaussian is poor when failures are rare; the exact log posterior is cheap over labelled cells),
    # with Ionides' truncation of the weights, and resample.
    proposal = int(1.5 * draws)
    counts = rng.multinomial(proposal, w)
    thetas, sigmas, taus, logw_is = [], [], [], []
    log_prior_grid = dict(zip(zip(sig, tau), logw - np.array([f[4] for f in fits])))
    for (sg, tu, theta, H, _), cnt in zip(fits, counts):
        if cnt == 0:
            continue
        cov = np.linalg.inv(H)
        L = np.linalg.cholesky(cov)
        z = rng.standard_normal((cnt, len(theta)))
        th = theta + z @ L.T
        X = _scale_design(X1, data, sg, tu)
        eta = th @ X.T  # (cnt, K)
        loglik = eta @ k - _softplus_inplace(eta) @ n  # sum_K k eta - n log(1 + e^eta), as matrix products
        logprior = -0.5 * (th ** 2 * prec).sum(1) + 0.5 * np.sum(np.log(prec / (2 * np.pi)))
        _, logdet = np.linalg.slogdet(H)
        logq = -0.5 * (z ** 2).sum(1) + 0.5 * logdet - 0.5 * len(theta) * np.log(2 * np.pi)
        logw_is.append(log_prior_grid[(sg, tu)] + loglik + logprior - logq - np.log(cnt / proposal))
        thetas.append(th)
        sigmas.append(np.full(cnt, sg))
        taus.append(np.full(cnt, tu))
    lw = np.concatenate(logw_is)
    wi = np.exp(lw - lw.max())
    wi = np.minimum(wi, wi.mean() * np.sqrt(len(wi)))
    wi /= wi.sum()
    ess = float(1.0 / np.sum(wi ** 2))
    pick = rng.choice(len(wi), size=draws, p=wi)
    thetas, sigmas, taus = np.vstack(thetas)[pick], np.concatenate(sigmas)[pick], np.concatenate(taus)[pick]
    best = int(np.argmax(w))
    return Posterior(
        theta=thetas, sigma=sigmas, tau=taus, kind="laplace",
        diagnostics={"sigma_segment_mean": float(np.sum(w * sig)), "tau_judge_mean": float(np.sum(w * tau)),
                     "importance_ess": ess,
                     "warnings": [] if ess >= 200 else [
                         f"fast fit approximate (importance ESS {ess:.0f} < 200): run the NUTS fit"]},
        mode=fits[best][2], hessian=fits[best][3], mode_sigma=float(fits[best][0]), mode_tau=float(fits[best][1]),
    )


# --------------------------------------------------------------------------- NUTS fit


def _obs_arrays(data: CellData) -> dict[str, np.ndarray]:
    """Labelled cells as NUTS data: the unscaled design, passes, labels (shapes are symbolic in the
    compiled model, so a new number of labelled cells needs no recompilation)."""
    return {"obs_X": _design_unscaled(data, data.obs_cell), "obs_k": data.obs_k.astype(np.int64),
            "obs_n": data.obs_n.astype(np.int64)}


def _hyper_blocks(data: CellData) -> tuple[slice, slice]:
    M, J, P = len(data.models), len(data.judges), data.n_params
    nd = (M - 1) * J
    return slice(M + J, M + J + nd), slice(M + J + nd, P)


CENTRING_SHRINK = 0.5


def centring(data: CellData, fast: Posterior) -> np.ndarray:
    """Per-parameter centring lambda in [0, 1] for the deviations z_d (scale tau) and z_a (scale
    sigma): lambda = kappa h^2 / (1 + kappa h^2), with kappa the likelihood's curvature in the
    deviation (from the fast fit's Hessian at its mode) and h the hyperparameter's posterior median.
    Centred (1) where the labels pin a deviation down, non-centred (0) where the prior dominates:
    the optimum for a normal hierarchy (Gorinova et al. 2020, "Automatic reparameterisation"),
    shrunk halfway toward non-centred (``CENTRING_SHRINK``): with the logistic likelihood the full
    optimum left 1-37 divergences per fit at 2,000 labels, half of it 0-7 and a higher ESS
    (bench/refit_speed.py data; 0.3 lowered the ESS again)."""
    lam = np.zeros(data.n_params)
    if fast.hessian is None:
        return lam
    kappa = np.maximum(np.diag(fast.hessian) - 1.0, 0.0)  # z-scale curvature minus the N(0, 1) prior
    for block, mode_h, h in ((_hyper_blocks(data)[0], fast.mode_tau, fast.tau),
                             (_hyper_blocks(data)[1], fast.mode_sigma, fast.sigma)):
        kh2 = kappa[block] / max(mode_h or 0.0, 1e-3) ** 2 * float(np.median(h)) ** 2
        lam[block] = CENTRING_SHRINK * kh2 / (1.0 + kh2)
    return lam


def _to_nuts_space(data: CellData, post: Posterior, lam: np.ndarray) -> np.ndarray:
    """Draws (D, P + 2) in the NUTS parameterisation: [theta with deviations scaled by h^lambda,
    log tau, log sigma]."""
    bt, bs = _hyper_blocks(data)
    tau, sigma = np.maximum(post.tau, 1e-6), np.maximum(post.sigma, 1e-6)
    th = post.theta.copy()
    th[:, bt] *= tau[:, None] ** lam[bt]
    th[:, bs] *= sigma[:, None] ** lam[bs]
    return np.hstack([th, np.log(tau)[:, None], np.log(sigma)[:, None]])


def _from_nuts_space(data: CellData, u: np.ndarray, lam: np.ndarray) -> Posterior:
    bt, bs = _hyper_blocks(data)
    P = data.n_params
    tau, sigma = np.exp(u[:, P]), np.exp(u[:, P + 1])
    th = u[:, :P].copy()
    th[:, bt] /= tau[:, None] ** lam[bt]
    th[:, bs] /= sigma[:, None] ** lam[bs]
    if len(data.segments) <= 1:
        sigma = np.zeros_like(sigma)
    return Posterior(th, sigma, tau, "nuts")


def whitening(U: np.ndarray, hyper_sd_floor: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Cholesky factor of the draws' covariance (the hyperparameters come from a grid in
    the fast fit, so their spread gets a floor): NUTS then runs on a near-isotropic posterior."""
    loc = U.mean(0)
    cov = np.cov(U.T)
    for i in (-2, -1):
        cov[i, i] = max(cov[i, i], hyper_sd_floor ** 2)
    return loc, np.linalg.cholesky(cov + 1e-8 * np.eye(len(loc)))


def build_pymc_model(data: CellData):
    """The generative model of the module docstring as a PyMC model, labelled cells as data.

    Reparameterised for NUTS (the density over mu, b, d, a, tau, sigma is the docstring's):
    - the zero-sum deviations in the fast fit's orthonormal basis (PyMC's ZeroSumNormal), so
      eta is one product of the unscaled design with [mu, b, tau z_d, sigma z_a];
    - each deviation partially centred: t = h^lambda z ~ Normal(0, h^lambda), effect h^(1 - lambda) t
      (``centring``), with h = tau or sigma on the log scale;
    - all P + 2 coordinates whitened by the fast fit's draws: u = loc + chol @ w, w sampled.
    ``lam``, ``w_loc`` and ``w_chol`` are data, so one compiled model serves every refit.
    """
    import pymc as pm
    import pytensor.tensor as pt

    M, J, P = len(data.models), len(data.judges), data.n_params
    nd = (M - 1) * J
    arr = _obs_arrays(data)
    coords = {"coord": [f"theta{i}" for i in range(P)] + ["log_tau_judge", "log_sigma_segment"]}
    with pm.Model(coords=coords) as m:
        X = pm.Data("obs_X", arr["obs_X"])
        on = pm.Data("obs_n", arr["obs_n"])
        ok = pm.Data("obs_k", arr["obs_k"])
        loc = pm.Data("w_loc", np.zeros(P + 2), dims="coord")
        chol = pm.Data("w_chol", np.eye(P + 2))
        lam = pm.Data("lam", np.zeros(P))
        w = pm.Flat("w", dims="coord")
        u = loc + pt.dot(chol, w)
        th, log_tau, log_sigma = u[:P], u[P], u[P + 1]
        log_h = pt.concatenate([pt.zeros(M + J), log_tau * pt.ones(nd), log_sigma * pt.ones(P - M - J - nd)])
        prec = _prior_precision(data)
        # priors: mu, b ~ Normal; t_i ~ Normal(0, h^lambda_i); tau, sigma ~ HalfNormal (+ log Jacobians)
        logp = -0.5 * pt.sum(prec * th ** 2 * pt.exp(-2.0 * lam * log_h)) - pt.sum(lam * log_h)
        logp += -0.5 * (pt.exp(log_tau) / TAU_SCALE) ** 2 + log_tau
        logp += -0.5 * (pt.exp(log_sigma) / SIGMA_SCALE) ** 2 + log_sigma
        eta = pt.dot(X, th * pt.exp((1.0 - lam) * log_h))
        # Binomial log-likelihood without its constant binomial coefficient
        pm.Potential("logp", logp + (ok * eta - on * pm.math.log1pexp(eta)).sum())
    return m


_COMPILED: dict[tuple, object] = {}
_COMPILE_LOCK = threading.Lock()


def _nuts_shared(data: CellData, loc: np.ndarray, chol: np.ndarray, lam: np.ndarray) -> dict[str, np.ndarray]:
    """The numba kernel's data: whitening, centring, prior precisions, blocks, labelled cells."""
    bt, bs = _hyper_blocks(data)
    block = np.zeros(data.n_params, np.int64)
    block[bt], block[bs] = 1, 2
    arr = _obs_arrays(data)
    return {"loc": loc, "chol": np.ascontiguousarray(chol), "lam": lam, "prec": _prior_precision(data),
            "block": block, "XT": np.ascontiguousarray(arr["obs_X"].T), "k": arr["obs_k"].astype(float),
            "n": arr["obs_n"].astype(float), "scales": np.array([TAU_SCALE, SIGMA_SCALE])}


def fit_nuts(data: CellData, draws: int = 800, tune: int = 250, chains: int = 2, seed: int = 0,
             target_accept: float = 0.9, init: Posterior | None = None, backend: str = "numba") -> Posterior:
    """Authoritative fit: NUTS (nutpie) on the exact posterior. ``backend`` "numba" evaluates the
    density with the fused kernel of ``calib.stats.nuts_kernel`` (tested equal to the PyMC model's);
    "pymc" compiles ``build_pymc_model`` (once per models x segments x judges, reused with
    ``with_data``). The fast fit (``init``, else run here) only shapes the parameterisation
    (centring and whitening), never the target density. In a thread inside
    ``nuts_worker.in_worker()`` it runs in the NUTS worker process (the app's memory stays flat)."""
    from calib.stats import nuts_worker

    if nuts_worker.active():
        return nuts_worker.call(fit_nuts, data, draws, tune, chains, seed, target_accept, init, backend)
    import nutpie

    fast = init if init is not None else fit_laplace(data, draws=600, seed=seed)
    lam = centring(data, fast)
    loc, chol = whitening(_to_nuts_space(data, fast, lam))
    key = (backend, len(data.models), len(data.segments), len(data.judges))
    with _COMPILE_LOCK:
        compiled = _COMPILED.get(key)
        if compiled is None:
            if backend == "numba":
                from calib.stats import nuts_kernel

                compiled = nuts_kernel.compiled_model(data.n_params + 2, _nuts_shared(data, loc, chol, lam))
            else:
                compiled = nutpie.compile_pymc_model(build_pymc_model(data))
            _COMPILED[key] = compiled
    if backend == "numba":
        compiled = compiled.with_data(**_nuts_shared(data, loc, chol, lam))
    else:
        compiled = compiled.with_data(**_obs_arrays(data), w_loc=loc, w_chol=chol, lam=lam)
    idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=False,
                          target_accept=target_accept)
    w = idata.posterior["w"].values  # (chains, draws, P + 2)
    u = loc + w @ chol.T
    post = _from_nuts_space(data, u.reshape(-1, u.shape[-1]), lam)
    # with one segment sigma appears nowhere in the likelihood: its prior-only draws are not checked
    checked = u if len(data.segments) > 1 else u[..., :-1]
    post.diagnostics = convergence(checked, idata.sample_stats["diverging"].values)
    return post


def convergence(u: np.ndarray, diverging: np.ndarray) -> dict:
    """R-hat and bulk ESS over every model coordinate (``u``: chains x draws x coordinates) and the
    number of divergences, with warnings when R-hat >= 1.01, ESS <= 400 or any divergence."""
    import warnings

    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ds = xr.Dataset({"u": (("chain", "draw", "coord"), u)})
        max_rhat = float(np.nanmax(az.rhat(ds)["u"].values))
        min_ess = float(np.nanmin(az.ess(ds, method="bulk")["u"].values))
    div = int(np.sum(diverging))
    warns = []
    if max_rhat >= 1.01:
        warns.append(f"R-hat {max_rhat:.3f} >= 1.01: chains disagree; refit with more draws (tiebreak fit --draws 2000)")
    if min_ess <= 400:
        warns.append(f"bulk ESS {min_ess:.0f} <= 400: too few effective draws; refit with more (tiebreak fit --draws 2000)")
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
    M, S = len(data.models), len(data.segments)
    # float32 halves the memory traffic; sums over millions of outputs stay exact to ~1e-7
    p = expit_fast(eta_draws(data, post))  # (D, C)
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0).astype(np.float32)
    # groups: (model, all segments) then (model, segment); one indicator matrix, one product each
    C = len(data.cell_n)
    G = np.zeros((C, M * (S + 1)), dtype=np.float32)
    G[np.arange(C), data.cell_model * (S + 1)] = 1.0
    G[np.arange(C), data.cell_model * (S + 1) + 1 + data.cell_segment] = 1.0
    pu = p * unl
    lab_y = data.cell_lab_y @ G.astype(np.float64)
    e_unl = (pu @ G).astype(np.float64)  # expected unlabelled passes
    var = np.maximum(e_unl - (np.multiply(p, pu, out=p) @ G).astype(np.float64), 0)  # sum of p (1 - p)
    mean = e_unl + lab_y  # unlabelled predicted + labelled observed
    N = data.cell_n.astype(float) @ G.astype(np.float64)
    draws = (mean + np.sqrt(var) * rng.standard_normal(mean.shape)) / np.where(N > 0, N, 1.0)
    draws = np.clip(draws, 0, 1)
    overall, by_seg = {}, {}
    for mi, m in enumerate(data.models):
        col = mi * (S + 1)
        if N[col] > 0:
            overall[m] = draws[:, col]
        by_seg[m] = {s: draws[:, col + 1 + si] for si, s in enumerate(data.segments) if N[col + 1 + si] > 0}
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


def _pair_nlp_draws(th, X, y, F):
    """``_pair_nlp`` for many parameter draws at once (rows of ``th``)."""
    gamma, c0, lg = th[:, :F], th[:, [F]], th[:, [F + 1]]
    c1 = c0 + np.exp(lg)
    eta = gamma @ X.T  # (D, K)
    lp0 = log_expit(c0 - eta)
    lp2 = log_expit(eta - c1)
    p1 = np.clip(expit(c1 - eta) - expit(c0 - eta), 1e-300, None)
    ll = np.where(y == 0, lp0, np.where(y == 2, lp2, np.log(p1))).sum(1)
    prior = -0.5 * (gamma ** 2).sum(1) - 0.5 * (c0[:, 0] / 2.0) ** 2 - 0.5 * lg[:, 0] ** 2
    return -(ll + prior)


def _num_hessian(f, x, h=1e-4):
    P = len(x)
    H = np.empty((P, P))
    for i in range(P):
        for j in range(i, P):
            e_i, e_j = np.eye(P)[i] * h, np.eye(P)[j] * h
            H[i, j] = H[j, i] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j) + f(x - e_i - e_j)) / (4 * h * h)
    return H


def _pair_cell_probs(th: np.ndarray, cell_x: np.ndarray, F: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(candidate better), P(tie)) per draw and cell, each (D, C)."""
    eta = th[:, :F] @ cell_x.T
    c0 = th[:, [F]]
    c1 = c0 + np.exp(th[:, [F + 1]])
    return expit(eta - c1), expit(c1 - eta) - expit(c0 - eta)


def _pairwise_laplace(data: PairData, draws: int, seed: int) -> np.ndarray:
    """Posterior draws (D, F + 2) by a Laplace fit importance-reweighted to the exact posterior."""
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
    # Gaussian proposal, importance-reweighted to the exact posterior (as in fit_laplace)
    proposal = int(1.5 * draws)
    z = rng.standard_normal((proposal, len(res.x)))
    th = res.x + z @ L.T
    lw = -_pair_nlp_draws(th, X, data.obs_y, F) + 0.5 * (z ** 2).sum(1)
    wi = np.exp(lw - lw.max())
    wi = np.minimum(wi, wi.mean() * np.sqrt(len(wi)))
    return th[rng.choice(proposal, size=draws, p=wi / wi.sum())]


def build_pairwise_pymc_model(data: PairData):
    """The preference model as a PyMC model (labelled preferences as data, so one compiled model
    serves every refit with the same features):

        gamma_f ~ Normal(0, 1)                      per feature (standardised judge signals)
        c0 ~ Normal(0, 2);  log_gap ~ Normal(0, 1); c1 = c0 + exp(log_gap)
        eta_i = x_cell(i) . gamma
        y_i ~ OrderedLogistic(eta_i, [c0, c1])      0 baseline better, 1 tie, 2 candidate better

    the same density as ``_pair_nlp`` (the fast fit's target)."""
    import pymc as pm
    import pytensor.tensor as pt

    F = len(data.features)
    with pm.Model(coords={"feature": list(data.features)}) as m:
        X = pm.Data("obs_X", data.cell_x[data.obs_cell].reshape(-1, F))
        y = pm.Data("obs_y", data.obs_y.astype(np.int64))
        gamma = pm.Normal("gamma", 0.0, 1.0, dims="feature")
        c0 = pm.Normal("c0", 0.0, 2.0)
        log_gap = pm.Normal("log_gap", 0.0, 1.0)
        eta = pt.dot(X, gamma) if F else pt.zeros(y.shape)
        pm.OrderedLogistic("preference", eta=eta, cutpoints=pt.stack([c0, c0 + pt.exp(log_gap)]), observed=y,
                           shape=y.shape)
    return m


def _pairwise_nuts(data: PairData, draws: int, seed: int, tune: int = 300, chains: int = 2) -> tuple[np.ndarray, dict]:
    """Posterior draws (D, F + 2) by NUTS (nutpie) on the preference model, evaluated by the fused
    kernel of ``calib.stats.pair_kernel`` (tested equal to ``build_pairwise_pymc_model``), in
    coordinates whitened by the fast fit (which shapes the parameterisation, never the density);
    with R-hat, ESS and divergences. In the NUTS worker process under ``nuts_worker.in_worker()``."""
    from calib.stats import nuts_worker

    if nuts_worker.active():
        return nuts_worker.call(_pairwise_nuts, data, draws, seed, tune, chains)
    import nutpie

    from calib.stats import pair_kernel

    F = len(data.features)
    fast = _pairwise_laplace(data, 600, seed)
    loc, chol = whitening(fast, hyper_sd_floor=0.0)
    shared = pair_kernel.shared_data(loc, chol, data.cell_x.reshape(len(data.cell_n), F), data.obs_cell, data.obs_y)
    key = ("pairwise", F)
    with _COMPILE_LOCK:
        compiled = _COMPILED.get(key)
        if compiled is None:
            compiled = _COMPILED[key] = pair_kernel.compiled_model(F + 2, shared)
    per_chain = max(1, -(-draws // chains))
    idata = nutpie.sample(compiled.with_data(**shared), draws=per_chain, tune=tune, chains=chains, seed=seed,
                          progress_bar=False)
    w = idata.posterior["w"].values  # (chains, draws, F + 2)
    u = loc + w @ chol.T
    return u.reshape(-1, F + 2)[:draws], convergence(u, idata.sample_stats["diverging"].values)


def pairwise_posterior(data: PairData, kind: str = "fast", draws: int = 600, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Posterior draws of the preference model's parameters [gamma (F), c0, log_gap], (D, F + 2),
    by the fast fit ("fast": Laplace, importance-reweighted) or NUTS ("nuts"), and diagnostics."""
    if kind == "nuts":
        return _pairwise_nuts(data, draws, seed)
    return _pairwise_laplace(data, draws, seed), {}


def pairwise_cells(data: PairData, th: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw and cell: the win score P(candidate) + P(tie)/2, its variance over one SME's
    preference, both (D, C), and the three preference probabilities (D, C, 3): baseline better,
    tie, candidate better."""
    p_cand, p_tie = _pair_cell_probs(th, data.cell_x, len(data.features))
    win = p_cand + 0.5 * p_tie
    probs = np.stack([np.clip(1 - p_cand - p_tie, 0, 1), p_tie, p_cand], axis=-1)
    return win, p_cand + 0.25 * p_tie - win ** 2, probs


def fit_pairwise(data: PairData, draws: int = 600, seed: int = 0, kind: str = "fast") -> np.ndarray:
    """Model-based win-rate draws (D,) of the candidate over the baseline: the preference model's
    projection over the unlabelled items plus the labelled items' observed preferences (the
    design-consistent estimate in ``engine.pairwise_rate`` corrects this projection).

    Win rate = P(candidate better) + P(tie) / 2 over the population, labelled items counted
    with their observed preference.
    """
    rng = np.random.default_rng([seed, 0x9A1])
    th, _ = pairwise_posterior(data, kind, draws, seed)
    win, var, _ = pairwise_cells(data, th)
    unl = np.maximum(data.cell_n - data.cell_lab_items, 0)
    N = data.cell_n.sum()
    mean = (win * unl).sum(1) + data.cell_lab_win.sum()
    var = (var * unl).sum(1)
    return np.clip((mean + np.sqrt(np.maximum(var, 0)) * rng.standard_normal(len(th))) / N, 0, 1)

