"""Anytime-valid sign-off: a confidence sequence for Delta, so a lead may watch the decision.

The Decision page refits after every few labels and a lead signs the moment "not worse" appears.
The fixed-n rule (sign off when P(Delta > -margin) >= decide_prob, one look's 95%) then gets many
chances to be wrong: under continuous monitoring its wrong-sign-off rate at the margin is several
times the nominal 5% (bench/sequential_signoff.py). This module gives the alternative: a
*confidence sequence*, a lower (upper) bound that holds at every number of labelled items at once,

    P(for all n: Delta >= mean_n - g(n) sd_n) >= 1 - alpha,

so stopping whenever it first clears -margin keeps the wrong-sign-off rate at or below alpha.

The bound is the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, Howard & Ramdas (2024,
"Time-uniform central limit theory and asymptotic confidence sequences": Robbins'
normal mixture with the running variance plugged in). The design estimate is a mean of per-item
pseudo-outcomes (prediction part + weighted residual, ``calib.stats.design``) with standard error
``sd_n``, so in units of that standard error (v = n sigma^2 rho^2 = n / m):

    half-width_n = sd_n g(n),  g(n) = sqrt((1 + v) / v * log((1 + v) / alpha^2)),

``m`` tuned so that g is smallest at ``target`` labelled items (g is flat: at alpha = 0.05 it is
3.04 at the target against the fixed-n z = 1.64, and within 10% of that from a third to five times
the target). The decision uses one side of this *two-sided* level-alpha sequence: a wrong sign-off
needs the sequence to miss, so its rate is at most alpha (in practice about alpha / 2). The
one-sided normal mixture (Howard et al. 2021, eq. (14); 9% narrower) is tight at alpha, and with
the plug-in variance and 0/1 labels it signed off wrongly 5.75% of the time at the margin
(400 simulated projects, looks after every label; this two-sided sequence: 2.5%): over the
nominal 5%, so it is not used. Using
``sd_n`` keeps every safeguard of the design estimate (finite-population correction, the pooled
model variance at small n, the rate floor).

Asymptotic means: the guarantee needs the running variance to be estimated well. With pass rates
near 100% and only ~20 labelled items the candidate's rare failures may not have been drawn yet,
and then the design estimate's sd (floored, but small) and any bound built on it are too narrow:
in one of 6 demo projects run through ``fit_project`` (rates 0.92 vs 0.985, truth at the margin)
both modes signed off wrongly at the first look, 20 items. Two guards: the sequence decides from
``MIN_ITEMS_ANYTIME`` items on, and its standard error is floored at the least a difference with
the null's mean can have (``null_variance``, see ``LATTICE_STEP``): at rates ~0.93 and a 3 pp
margin, 3.5% wrong sign-offs at the margin (400 projects; 6.5% without the floor).

The price: the interval is wider than the fixed-n one by g(n) / z - 1 (about 70% at 95%), so a
fine candidate needs more labels before it is signed off; ``watch_cost`` says how much.
"""

from __future__ import annotations

import functools
import math

from scipy.optimize import minimize_scalar
from scipy.stats import norm

from calib.data.store import SETTING_CHOICES

MODES = SETTING_CHOICES["signoff_mode"]

# Fewest items labelled for both models before the sequence decides (with min_decision_items, the
# larger). The sequence is asymptotic: it needs the running variance estimated well, and with pass
# rates near 100% the first ~20-30 items often hold none of the rare failures. In simulation (pass
# rates ~0.93, margin 3 pp, truth at the margin, looks after every label; bench/sequential_signoff.py
# --level 3.5, 200 projects) 8.5% of projects were signed off wrongly, half of them at 20-28 items;
# deciding from 40 items on, 7.0%: better, still over the nominal 5% (the fixed rule: 47.5%); the
# rest is the variance floor's (``LATTICE_STEP``). A fine candidate needs well over 40 labels under
# the sequence anyway (median 170-240), so the guard costs it nothing.
MIN_ITEMS_ANYTIME = 40

# The variance floor at the null (``null_variance``): a candidate worse by exactly the margin m
# differs from the baseline on at least a share of the items, so a per-item difference with mean -m
# has variance at least m (1/2 - m) on the lattice 0, +-1/2, +-1 (one or two SMEs per output; a
# preference scores 0, 1/2, 1). With pass rates near 100% those few items may not have been drawn:
# the estimated variance then collapses while the mean looks good (simulation, rates ~0.93, margin
# 3 pp, truth at the margin: the wrong sign-offs came at 40-130 items with 0-1.6% of the labelled
# items discordant against 4-6% in the population, the sd 2-6x too small), and the plug-in
# confidence sequence signed off wrongly 7.0% of the time. Floored at the null's least variance (a
# score-test-like standard error, as Wilson's interval uses the null's), it keeps the level; where
# the labels vary more than the floor (most projects, and every project after enough labels) it
# changes nothing. The calibration model's predictions could in principle explain some of that
# variance away; the floor then only costs labels, never validity.
LATTICE_STEP = 0.5

MODE_WORDS = {
    "anytime": "anytime-valid confidence sequence: you may look after every label and sign the moment it "
               "clears the margin",
    "fixed": "fixed-n interval: valid for one look at a sample size chosen in advance; watching it after every "
             "label and signing when it first clears the margin inflates the wrong-sign-off rate",
}


def check_mode(mode: str) -> str:
    """The sign-off mode, refused with a one-line error when unknown (a typo must not silently mean
    the invalid one)."""
    from calib.errors import TiebreakError

    if mode not in MODES:
        raise TiebreakError(f"setting signoff_mode: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def _g(n: float, m: float, alpha: float) -> float:
    v = n / m
    return math.sqrt((1.0 + v) / v * math.log((1.0 + v) / alpha ** 2))


@functools.lru_cache(maxsize=256)
def tuned_m(alpha: float, target: int) -> float:
    """The mixture's scale in items (rho^2 sigma^2 = 1 / m) that makes the bound tightest at
    ``target`` labelled items (m ~ target / 8.2 at alpha = 0.05)."""
    r = minimize_scalar(lambda lm: _g(float(target), math.exp(lm), alpha), bounds=(-8.0, 12.0), method="bounded")
    return math.exp(r.x)


def boundary_factor(n: int, alpha: float, target: int = 100) -> float:
    """g(n): the confidence sequence's half-width in standard errors at ``n`` labelled items, at
    level ``alpha`` (two-sided: each side wrong with probability below alpha), tightest at
    ``target`` items."""
    if n < 1:
        return math.inf
    return _g(float(n), tuned_m(float(alpha), int(max(target, 1))), float(alpha))


def null_variance(null: float, step: float = LATTICE_STEP) -> float:
    """The least per-item variance of a difference whose mean is ``null`` and whose values lie on
    the lattice of multiples of ``step``: f (step - f), f = ``null`` mod ``step`` (all the mass on
    the two lattice points either side of the mean). Delta at -margin m: m (1/2 - m); a win rate at
    1/2 - m: the same."""
    f = float(null) % step
    return f * (step - f)


def floored_sd(sd: float, n: int, null: float | None) -> float:
    """``sd``, raised to the null's least standard error sqrt(``null_variance`` / n) (no
    finite-population correction: conservative near a census) when ``null`` is given."""
    if null is None or n < 1:
        return float(sd)
    return max(float(sd), math.sqrt(null_variance(null) / n))


def bounds(mean: float, sd: float, n: int, alpha: float, target: int = 100,
           null: float | None = None) -> tuple[float, float]:
    """(lower, upper) of the level-``alpha`` confidence sequence at ``n`` items: both hold at every
    n at once with probability >= 1 - alpha (asymptotically). With ``null`` (the decision's
    boundary, -margin or 1/2 - margin) the standard error is floored at what a difference with that
    mean must at least have (``floored_sd``, see ``NULL_FLOOR``)."""
    h = floored_sd(sd, n, null) * boundary_factor(n, alpha, target)
    return mean - h, mean + h


def equivalent_threshold(n: int, alpha: float, target: int = 100) -> float:
    """The probability a fixed-n rule would need to decide where the sequence does at ``n`` items
    (Phi(g(n))): the forecast's chance of a decision in anytime mode. Below ``MIN_ITEMS_ANYTIME``
    the sequence decides nothing: 1 (no decision; the forecast said 6-11% at 25-35 items, none came)."""
    if n < MIN_ITEMS_ANYTIME:
        return 1.0
    return float(norm.cdf(boundary_factor(max(n, 1), alpha, target)))


def decide(lo: float, hi: float, null: float) -> str:
    """"not worse" when the lower bound is above ``null`` (-margin for Delta; 1/2 - margin for a
    win rate), "worse" when the upper bound is below it, else "label more"."""
    if lo > null:
        return "not worse"
    if hi < null:
        return "worse"
    return "label more"


def watch_cost(n: int, alpha: float, target: int = 100) -> float:
    """How much wider the anytime-valid bound is than the fixed-n one at ``n`` items (0.7 = 70%)."""
    return boundary_factor(max(n, 1), alpha, target) / norm.ppf(1.0 - alpha) - 1.0


def apply(row: dict, mode: str, alpha: float, target: int, null: float, min_items: int = 0) -> dict:
    """Add the confidence sequence to a fit row (``mean``/``sd`` of the design estimate,
    ``n_items`` labelled, as ``_hold_on_few`` left it) as ``cs_lo``/``cs_hi``, keep the fixed-n
    decision as ``decision_fixed``, and in ``anytime`` mode make ``decision`` the sequence's.
    ``lo``/``hi``/``p_noninferior`` keep their fixed-n meaning. Below ``min_items`` items no
    decision is announced in either mode, in anytime mode below ``MIN_ITEMS_ANYTIME`` either."""
    n = int(row.get("n_items", 0))
    row["decision_fixed"] = row["decision"]
    row["signoff_mode"] = mode
    if n < 2 or row.get("sd") is None:
        row["cs_lo"], row["cs_hi"] = None, None
    else:
        row["cs_lo"], row["cs_hi"] = bounds(float(row["mean"]), float(row["sd"]), n, alpha, target, null)
    if mode == "anytime":
        row["decision"] = ("label more" if row["cs_lo"] is None else
                           anytime_decision(float(row["mean"]), float(row["sd"]), n, alpha, target, null, min_items))
    return row


def anytime_decision(mean: float, sd: float, n: int, alpha: float, target: int, null: float,
                     min_items: int = 0, floor: bool = True) -> str:
    """The anytime mode's decision at ``n`` labelled items from the design estimate's ``mean`` and
    ``sd``: none below ``min_items`` or ``MIN_ITEMS_ANYTIME``, else the confidence sequence
    (floored at the null's least variance unless ``floor`` is False, kept for the bench's
    comparison) against ``null``."""
    if n < max(min_items, MIN_ITEMS_ANYTIME):
        return "label more"
    return decide(*bounds(mean, sd, n, alpha, target, null if floor else None), null)


# Measured by bench/sequential_signoff.py (400 simulated projects per row, 1,000 items, margin 5 pp,
# decide_prob 0.95, a lead looking after every labelled item from 20 on): what watching costs.
# The anytime mode's own wrong sign-offs there: 2.5% (every label), 1.5% (every 10).
BENCH_FIXED_WATCHED_WRONG = "35% (29% looking every 10 labels)"  # the fixed-n rule, at the margin
BENCH_LABELS = ("median 247 labels against 62 for a candidate exactly as good as the baseline, "
                "105 against 31 for one a margin better")  # to the first "not worse", anytime vs fixed


def rule_caption(fit: dict) -> str:
    """One or two sentences for the Decision page, the report and the CLI: which interval the
    decision uses and what watching it costs. Fits from before the setting read as "fixed"."""
    mode = fit.get("signoff_mode", "fixed")
    alpha = 1.0 - float(fit.get("decide_prob_per_candidate", fit.get("decide_prob", 0.95)))
    if mode == "anytime":
        target = int(fit.get("anytime_target_items", 100))
        return (f"Decisions use an anytime-valid {1 - alpha:.4g} confidence sequence: you may look after "
                f"every label and sign the moment it says NOT WORSE, and a wrong sign-off stays at most "
                f"{100 * alpha:.3g}% likely. The price of watching: its bound is {watch_cost(target, alpha, target):.0%} "
                f"wider than the fixed-n interval (at {target} labelled items, where it is tightest), so a fine "
                f"candidate needs more labels (in simulation: {BENCH_LABELS}). The intervals shown are the fixed-n ones; "
                f"the decision's bound is on each card.")
    return (f"Decisions use the fixed-n interval (P >= {1 - alpha:.4g}): valid for ONE look at a number of labels "
            f"chosen in advance. Watched after every label and signed at the first NOT WORSE, it signs off a "
            f"candidate that is worse by exactly the margin {BENCH_FIXED_WATCHED_WRONG} of the time instead of "
            f"{alpha:.0%} (bench/sequential_signoff.py). Set signoff_mode = anytime to watch it safely.")


def row_basis(row: dict, fit: dict, pair: bool = False) -> str:
    """The bound the row's decision rests on in anytime mode ("" in fixed mode or without one):
    "anytime-valid bound [-1.2, +3.4] pp vs margin -5 pp" (a win rate: in %, vs 1/2 - margin)."""
    if fit.get("signoff_mode") != "anytime" or row.get("cs_lo") is None:
        return ""
    m = float(fit["margin"])
    if pair:
        return (f"anytime-valid bound [{100 * row['cs_lo']:.1f}%, {100 * row['cs_hi']:.1f}%] "
                f"vs {100 * (0.5 - m):g}%")
    return f"anytime-valid bound [{100 * row['cs_lo']:+.1f}, {100 * row['cs_hi']:+.1f}] pp vs margin {-100 * m:g} pp"
