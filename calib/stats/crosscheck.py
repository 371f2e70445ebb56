"""Cross-checks computed beside the Bayesian answer: human-only, judge-only, and PPI++.

- human-only: the labelled items alone (a classical interval; Wilson for a uniform sample,
  a weighted normal interval when inclusion probabilities vary);
- judge-only: the share of outputs a judge passes, with no human in the loop (no interval: its
  error is bias, not noise);
- PPI++ (Angelopoulos et al. 2023, power-tuned prediction-powered inference) for a mean: the
  judges' consensus f (share of judges passing the output) is the prediction; the labelled items
  correct its bias. With inclusion probabilities pi_i the correction term is a Hajek-weighted
  mean with weights 1/pi_i, so a non-uniform (disagreement-first) sample stays unbiased::

      theta(lam) = lam * mean_N(f) + sum_L w_i (y_i - lam f_i) / sum_L w_i
      var(lam)  ~= sum_L w_i^2 (e_i - e_bar)^2 / (sum_L w_i)^2,  e_i = y_i - lam f_i
      lam*      = cov_w2(y, f) / var_w2(f), clipped to [0, 1]

  The population mean of f is known exactly (every output is judged); its sampling noise is
  ignored, as in PPI when N >> n. A small tested implementation rather than the ppi-python
  package: that package pulls in statsmodels and scikit-learn and has no design weights.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

Z95 = stats.norm.ppf(0.975)


def _z(mass: float) -> float:
    return float(stats.norm.ppf(0.5 + mass / 2))


def wilson_interval(k: float, n: float, mass: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) Wilson score interval for a proportion."""
    if n <= 0:
        return float("nan"), 0.0, 1.0
    z = _z(mass)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the Wilson interval always contains p; min/max only absorb rounding at p = 0 or 1
    return float(p), float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half)))


def weighted_mean_interval(y: np.ndarray, w: np.ndarray | None = None, mass: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) Hajek-weighted mean with a linearisation (normal) interval."""
    y = np.asarray(y, float)
    n = len(y)
    if n < 2:
        return (float(y.mean()) if n else float("nan")), -1.0, 1.0
    w = np.ones(n) if w is None else np.asarray(w, float)
    mean = float(np.sum(w * y) / np.sum(w))
    var = np.sum(w ** 2 * (y - mean) ** 2) / np.sum(w) ** 2 * n / (n - 1)
    half = _z(mass) * np.sqrt(var)
    return mean, float(mean - half), float(mean + half)


def human_only_rate(y: np.ndarray, w: np.ndarray | None = None, mass: float = 0.95) -> tuple[float, float, float]:
    """Pass rate from labelled outputs only: Wilson when unweighted, else weighted normal."""
    y = np.asarray(y, float)
    if w is None or np.allclose(w, np.mean(w)):
        return wilson_interval(y.sum(), len(y), mass)
    return weighted_mean_interval(y, w, mass)


def human_only_diff(y_cand: np.ndarray, y_base: np.ndarray, w: np.ndarray | None = None,
                    mass: float = 0.95) -> tuple[float, float, float]:
    """Delta from items labelled for both models: paired (weighted) mean difference, normal interval."""
    return weighted_mean_interval(np.asarray(y_cand, float) - np.asarray(y_base, float), w, mass)


def ppi_mean_interval(y: np.ndarray, f_lab: np.ndarray, f_pop_mean: float, w: np.ndarray | None = None,
                      mass: float = 0.95, tune: bool = True, f_pop_var: float = 0.0) -> dict:
    """PPI++ estimate of a population mean of y from labels y, predictions f_lab and mean_N(f).

    Works for differences too: pass y = y_cand - y_base, f = f_cand - f_base. Returns mean, lo,
    hi and the tuned lambda (0 = human-only, 1 = plain PPI). ``f_pop_var``: the variance of
    ``f_pop_mean`` when it is itself estimated from a sample (a two-phase design's judged sample;
    it enters as lambda^2 f_pop_var); 0 when every output is judged.
    """
    y, f = np.asarray(y, float), np.asarray(f_lab, float)
    n = len(y)
    if n < 2:
        return {"mean": float("nan"), "lo": -1.0, "hi": 1.0, "lam": 0.0}
    w = np.ones(n) if w is None else np.asarray(w, float)
    v = w ** 2 / np.sum(w) ** 2
    if tune:
        yc = y - np.sum(w * y) / np.sum(w)
        fc = f - np.sum(w * f) / np.sum(w)
        var_f = np.sum(v * fc * fc)
        lam = float(np.clip(np.sum(v * yc * fc) / var_f, 0.0, 1.0)) if var_f > 0 else 0.0
    else:
        lam = 1.0
    e = y - lam * f
    e_bar = np.sum(w * e) / np.sum(w)
    mean = lam * f_pop_mean + e_bar
    var = np.sum(v * (e - e_bar) ** 2) * n / (n - 1) + lam * lam * float(f_pop_var)
    half = _z(mass) * np.sqrt(var)
    return {"mean": float(mean), "lo": float(mean - half), "hi": float(mean + half), "lam": lam}


def intervals_disagree(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals do not overlap: the cue to say the methods disagree strongly."""
    return a[1] < b[0] or b[1] < a[0]
