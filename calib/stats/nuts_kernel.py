"""The NUTS target of ``model.build_pymc_model`` as one fused numba kernel (log density and gradient).

PyTensor's generated code for this model costs ~76 us per gradient at 1,700 labelled cells; the
fused kernel below, one pass for the linear predictor and one for the gradient with a branch-free
softplus, costs ~35 us, which halves the authoritative fit. ``tests/test_model.py`` checks that
its log density equals the PyMC model's (up to a constant) and its gradient equals finite
differences, so the PyMC model stays the definition and this is only a faster evaluation of it.

Coordinates (as in ``build_pymc_model``): w, whitened; u = loc + chol @ w = [t (P), log tau,
log sigma]; the model's parameters are v_i = t_i * h_i^(1 - lambda_i) with h_i = tau on the judge
deviations, sigma on the segment deviations and 1 elsewhere.
"""

from __future__ import annotations

import numba
import numpy as np


SHARED = ("loc", "chol", "lam", "prec", "block", "XT", "k", "n", "scales")


@numba.njit(fastmath=True, nogil=True, cache=True)
def unwhiten(w, loc, chol):  # pragma: no cover - numba
    """The model's coordinates u = loc + chol @ w of the whitened point w."""
    D = w.shape[0]
    u = loc.copy()
    for a in range(D):
        wa = w[a]
        for b in range(D):
            u[b] += chol[b, a] * wa
    return u


@numba.njit(fastmath=True, nogil=True, cache=True)
def whitened_gradient(chol, g_u):  # pragma: no cover - numba
    """The gradient in w, chol^T g_u, of a gradient g_u in u (the Jacobian is constant)."""
    D = g_u.shape[0]
    g_w = np.zeros(D)
    for a in range(D):
        acc = 0.0
        for b in range(D):
            acc += chol[b, a] * g_u[b]
        g_w[a] = acc
    return g_w


@numba.njit(fastmath=True, nogil=True, cache=True)
def logp_grad(w, loc, chol, lam, prec, block, XT, k, n, scales):  # pragma: no cover - numba
    """(log density, gradient in w). ``block[i]`` is 0 (no hyperparameter), 1 (tau) or 2 (sigma);
    ``scales`` = [tau's half-normal scale, sigma's half-normal scale]."""
    tau_scale, sigma_scale = scales[0], scales[1]
    D = w.shape[0]
    P = D - 2
    u = unwhiten(w, loc, chol)
    log_tau, log_sigma = u[P], u[P + 1]
    v = np.empty(P)
    scale = np.empty(P)
    lp = 0.0
    g_u = np.zeros(D)
    for i in range(P):
        lh = 0.0
        if block[i] == 1:
            lh = log_tau
        elif block[i] == 2:
            lh = log_sigma
        inv = np.exp(-2.0 * lam[i] * lh)
        lp += -0.5 * prec[i] * u[i] * u[i] * inv - lam[i] * lh
        scale[i] = np.exp((1.0 - lam[i]) * lh)
        v[i] = u[i] * scale[i]
        g_u[i] = -prec[i] * u[i] * inv
        dlh = prec[i] * u[i] * u[i] * inv * lam[i] - lam[i]
        if block[i] == 1:
            g_u[P] += dlh
        elif block[i] == 2:
            g_u[P + 1] += dlh
    tau, sigma = np.exp(log_tau), np.exp(log_sigma)
    lp += -0.5 * (tau / tau_scale) ** 2 + log_tau - 0.5 * (sigma / sigma_scale) ** 2 + log_sigma
    g_u[P] += -(tau / tau_scale) ** 2 + 1.0
    g_u[P + 1] += -(sigma / sigma_scale) ** 2 + 1.0
    K = XT.shape[1]
    eta = np.zeros(K)
    for j in range(P):
        vj = v[j]
        for c in range(K):
            eta[c] += XT[j, c] * vj
    for c in range(K):
        e = eta[c]
        a = np.exp(-abs(e))
        lp += k[c] * e - n[c] * (max(e, 0.0) + np.log1p(a))
        s = 1.0 / (1.0 + a) if e >= 0.0 else a / (1.0 + a)
        eta[c] = k[c] - n[c] * s  # reuse: the residual
    for j in range(P):
        acc = 0.0
        for c in range(K):
            acc += XT[j, c] * eta[c]
        g_u[j] += acc * scale[j]
        dlh = acc * v[j] * (1.0 - lam[j])
        if block[j] == 1:
            g_u[P] += dlh
        elif block[j] == 2:
            g_u[P + 1] += dlh
    return lp, whitened_gradient(chol, g_u)


@numba.njit(nogil=True, cache=True)
def _expand(w, loc, chol, lam, prec, block, XT, k, n, scales):  # pragma: no cover - numba
    return (w.copy(),)


def compiled_model(D: int, shared: dict[str, np.ndarray], logp=None, expand=None, names: tuple[str, ...] = SHARED):
    """A nutpie model whose density is ``logp`` (default ``logp_grad``), called by nutpie's sampler
    threads through a C function pointer (no Python, no GIL per gradient), built with nutpie's own
    plumbing for compiled PyMC models (nutpie is pinned: these helpers are not public API).
    ``shared`` holds the arrays named in ``names`` (the kernel's arguments after ``w``, as is
    ``expand``'s); ``with_data`` replaces them (same ranks, any sizes)."""
    import warnings

    from nutpie import compile_pymc as cp

    logp, expand = logp or logp_grad, expand or _expand
    data = {name: np.array(shared[name], order="C", copy=True) for name in names}
    for v in data.values():
        v.flags.writeable = False
    user_data = cp.make_user_data(data, data)
    logp_raw, sig = cp._make_c_logp_func(D, logp, user_data, list(names), data)
    expand_raw, sig_e = cp._make_c_expand_func(D, D, expand, user_data, list(names), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logp_c = numba.cfunc(sig)(logp_raw)
        expand_c = numba.cfunc(sig_e)(expand_raw)

    def init(seed):  # dispersed starts around the fast fit's mean, on its scale: R-hat stays meaningful
        return np.random.default_rng(seed).normal(0.0, 1.0, D)

    return cp.CompiledPyMCModel(
        _n_dim=D, dims={"w": ("coord",)}, _coords={"coord": np.arange(D)}, _shapes={"w": (D,)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c, initial_point_func=init, shared_data=data,
        user_data=user_data, n_expanded=D, shape_info=(["w"], [slice(0, D)], [(D,)]), logp_func=None,
        expand_func=None)
