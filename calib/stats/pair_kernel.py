"""The NUTS target of ``model.build_pairwise_pymc_model`` (the ordered-logistic preference model)
as a fused numba kernel: log density and gradient, over the labelled cells' preference counts.

Compiling the PyMC model through nutpie's numba backend costs minutes on a busy two-core server;
this kernel compiles in seconds (and is cached on disk), and ``tests/test_model.py`` checks that
its density equals the PyMC model's up to a constant, so the PyMC model stays the definition.

Coordinates: w, whitened by the fast fit (u = loc + chol @ w, constant Jacobian); u = [gamma (F),
c0, log_gap]; cutpoints c0 and c1 = c0 + exp(log_gap); per labelled cell its features x and its
counts of preferences (baseline better, tie, candidate better).
"""

from __future__ import annotations

import numba
import numpy as np

from calib.stats import nuts_kernel

SHARED = ("loc", "chol", "X", "counts")


@numba.njit(fastmath=True, nogil=True, cache=True)
def _sig(z):  # pragma: no cover - numba
    return 1.0 / (1.0 + np.exp(-z)) if z >= 0 else np.exp(z) / (1.0 + np.exp(z))


@numba.njit(fastmath=True, nogil=True, cache=True)
def logp_grad(w, loc, chol, X, counts):  # pragma: no cover - numba
    """(log density, gradient in w) of the preference model at the whitened point ``w``."""
    D = w.shape[0]
    F = D - 2
    u = nuts_kernel.unwhiten(w, loc, chol)
    c0 = u[F]
    gap = np.exp(u[F + 1])
    c1 = c0 + gap
    lp = 0.0
    g = np.zeros(D)
    # priors: gamma ~ N(0, 1), c0 ~ N(0, 2), log_gap ~ N(0, 1)
    for f in range(F):
        lp -= 0.5 * u[f] * u[f]
        g[f] = -u[f]
    lp -= 0.5 * (c0 / 2.0) ** 2
    g[F] = -c0 / 4.0
    lp -= 0.5 * u[F + 1] ** 2
    g[F + 1] = -u[F + 1]
    g_c1 = 0.0
    for j in range(X.shape[0]):
        eta = 0.0
        for f in range(F):
            eta += X[j, f] * u[f]
        B = _sig(c0 - eta)  # P(y <= 0)
        A = _sig(c1 - eta)  # P(y <= 1)
        n0, n1, n2 = counts[j, 0], counts[j, 1], counts[j, 2]
        d_eta = 0.0
        if n0 > 0:
            lp += n0 * np.log(max(B, 1e-300))
            d_eta -= n0 * (1.0 - B)
            g[F] += n0 * (1.0 - B)
        if n2 > 0:
            lp += n2 * np.log(max(1.0 - A, 1e-300))
            d_eta += n2 * A
            g_c1 -= n2 * A
        if n1 > 0:
            p1 = max(A - B, 1e-300)
            lp += n1 * np.log(p1)
            dA, dB = A * (1.0 - A), B * (1.0 - B)
            d_eta += n1 * (dB - dA) / p1
            g_c1 += n1 * dA / p1
            g[F] -= n1 * dB / p1
        for f in range(F):
            g[f] += d_eta * X[j, f]
    g[F] += g_c1
    g[F + 1] += g_c1 * gap
    return lp, nuts_kernel.whitened_gradient(chol, g)


@numba.njit(nogil=True, cache=True)
def _expand(w, loc, chol, X, counts):  # pragma: no cover - numba
    return (w.copy(),)


def shared_data(loc: np.ndarray, chol: np.ndarray, cell_x: np.ndarray, obs_cell: np.ndarray,
                obs_y: np.ndarray) -> dict[str, np.ndarray]:
    """The kernel's data: the whitening and, per labelled cell, its features and preference counts."""
    cells, inv = np.unique(obs_cell, return_inverse=True)
    counts = np.zeros((len(cells), 3))
    np.add.at(counts, (inv.ravel(), obs_y.astype(np.int64)), 1.0)
    return {"loc": np.asarray(loc, float), "chol": np.ascontiguousarray(chol, dtype=float),
            "X": np.ascontiguousarray(cell_x[cells], dtype=float).reshape(len(cells), -1), "counts": counts}


def compiled_model(D: int, shared: dict[str, np.ndarray]):
    """The nutpie model of this kernel (see ``nuts_kernel.compiled_model``)."""
    return nuts_kernel.compiled_model(D, shared, logp=logp_grad, expand=_expand, names=SHARED)
