"""The budget planner (issue #22 part 3): how many outputs the judges should score and how many
items SMEs should label, for a budget or a target interval width.

Model
-----
The decision quantity is a candidate's Delta on one dimension (pass rate of the candidate minus
the baseline's). Its design-based estimate, with ``n1`` of the population's ``N`` items judged
(phase 1, a simple random sample; a census when ``n1 = N``) and ``n2 <= n1`` of the judged items
labelled for both models by SMEs (phase 2), has the two-phase (double-sampling regression)
variance (Cochran 1977, 12.6; Särndal et al. 1992, 9.7)::

    V(n1, n2) = (1/n1 - 1/N) S_d^2 + (1/n2 - 1/n1) S_e^2

- ``S_d^2``: the population variance of an item's SME difference d = y_cand - y_base (what the
  human-only estimate's variance is made of: human-only is V with n1 = n2, ``(1/n2 - 1/N) S_d^2``);
- ``S_e^2``: the variance, per labelled item, of the calibrated estimate's residual (what the
  judges do not explain; in a census V is ``(1/n2 - 1/N) S_e^2``).

The interval's width is ``2 z sqrt(V)`` with z from the project's ``interval`` setting (a
Student-t quantile for Tiebreak's design-based interval, below).

Where the two variances come from (no new statistics: an inversion of the latest fit)
----------------------------------------------------------------------------------------
- ``S_d^2`` from the fit's human-only cross-check of Delta (``calib.stats.crosscheck.human_only_diff``:
  a (weighted) normal interval with no finite-population correction, variance s_d^2 / n over
  the n items labelled for both models): ``S_d^2 = n (half-width / z)^2``.
- ``S_e^2`` from Tiebreak's own Delta interval at today's ``n2`` labelled and ``n1`` judged items:
  ``S_e^2 = ((half-width / t)^2 - (1/n1 - 1/N) S_d^2) / (1/n2 - 1/n1)`` (a census: the first
  term is 0), t the Student-t quantile the design estimator uses (Kish's effective sample size
  of today's design weights minus one degrees of freedom; a planned width uses t at the planned
  n2 with the same effective share). S_d^2 / S_e^2 is ``calib.insight.worth``'s "what the
  judges are worth".

Assumptions, said where a lead reads the plan: future labels come from the same queue policy
(its mix of random and disagreement-first picks sets the per-label variances measured here);
the judges, rubrics and models stay as they are; the pilot's variances are estimates (from 40
labels, a variance is known to about +-25%, a width to about +-12%). Phase 1 is planned as a
simple random sample (a stratified one does no worse).

``S_e^2`` is not a constant of the project: the pilot's carries two parts that fade with labels.
The fit records Delta's phase-2 variance by piece (``var_parts``, ``design._domain_estimate``):
the residuals' own variance, the part of it that is the calibration model's estimation error (the
posterior variance of the labelled outputs' predictions: a residual y - p-hat carries p-hat - p,
and the posterior of p narrows as 1 / labels), and the small-sample protections (``PRIOR_N``
pseudo-items of the model's own variance pooled in, the variance floor). With shares f_err and
f_prot of today's S_e^2 at n labelled items, the plan uses at n2::

    S_e^2(n2) = S_e^2 [ (1 - f_err - f_prot) + f_err n / n2 + f_prot (n + 6) / (n2 + 6) ]

Without the fading a 40-label pilot planned 200 labels' width 17% too wide
(``bench/plan_calibration.py``: 1.06 / 1.07 / 1.13 / 1.17 at 60-200 labels); with it 1.00 / 1.02
/ 1.07 / 1.09.

Costs
-----
- A judge call: the mean ``cost_usd`` of the judge's ok calls in ``judge_calls`` (a call made in
  a provider batch counted at its online price, 1 / ``BATCH_DISCOUNT`` times what it cost), else
  litellm's local price map (``LITELLM_LOCAL_MODEL_COST_MAP=True``: never a network call) for the
  judge's model (the judges file, or ``--judge-model``) at the measured mean tokens per call, else
  at tokens estimated from the outputs' text. ``--batch`` prices calls at the map's batch price
  (else online x ``BATCH_DISCOUNT``).
- Calls per judged item: outputs per item (models) x pointwise judges x their dimensions +
  side-by-side judges x their dimensions x candidates.
- An SME label (one item, the baseline's and one candidate's outputs, every dimension):
  ``--sme-cost-per-label``, else the setting ``sme_cost_per_label`` (when > 0), else the median
  rating time measured on the labels x the setting ``sme_hourly_usd``.
- Sunk costs: what is already judged and labelled is not bought again. A plan states totals (the
  design) and what is still to buy; a budget is what may still be spent. ``from_scratch`` plans a
  new project of the same population (next month's traffic) with nothing bought yet.

Win rates
---------
A side-by-side win rate (pairwise judges, SME preferences) is planned as a Delta is: S_d^2 is
the variance of a pair's SME win score (1 candidate better, 1/2 tie, 0 baseline), from the
human-only win-rate interval (its finite-population correction undone), S_e^2 the residual
variance the preference model leaves, from Tiebreak's win-rate interval; its decision compares
the win rate with 1/2 - margin. A pairwise-only project plans its win rates alone; a project with
both plans for the widest of all its quantities.

Optimum
-------
For a budget: the design minimising the widest Delta's variance (the binding one) subject to
``c1 (n1 - n1_done) + c2 sum_candidates (n2 - n2_done) <= budget``, by a grid over n1 (log-spaced)
with the largest affordable n2 for each; the classical double-sampling optimum
``n2 / n1 = sqrt(c1 S_e^2 / (c2 (S_d^2 - S_e^2)))`` (N large, judges worth more than nothing) is
reported beside it as a check. For a target width: the cheapest design reaching it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from calib.errors import TiebreakError
from calib.judges.prices import BATCH_DISCOUNT, price_per_token  # noqa: F401 (part of this module's interface)
from calib.stats.design import PRIOR_N  # the pseudo-items of the design variance's protection

CHARS_PER_TOKEN = 4.0  # the usual English rule of thumb for BPE tokenisers
RUBRIC_TOKENS = 250  # a default rubric with its JSON instruction (calib.judges.config.DEFAULT_RUBRICS)
DEFAULT_OUTPUT_TOKENS = 60  # a verdict, a score and a one-sentence rationale in JSON
DEFAULT_RATING_SECONDS = 60.0  # assumed when no label has a recorded rating time
GRID_POINTS = 400


# --------------------------------------------------------------------------- pure model


@dataclass
class Quantity:
    """One decision quantity (a candidate's Delta on a dimension) with its per-item variances."""

    dimension: str
    candidate: str
    mean: float  # today's estimate of Delta
    sd_now: float  # today's sd of the estimate
    n2_now: int  # items labelled for both models today
    s2_d: float  # population variance of the SME difference d
    s2_e: float  # variance per labelled item of the calibrated estimate's residual
    keff: float | None = None  # Kish effective share of the labelled items (None: a normal interval)
    f_err: float = 0.0  # share of s2_e that is the calibration's estimation error (fades as n2_now / n2)
    f_prot: float = 0.0  # share of s2_e that is the small-sample protections (fades as (n2_now + 6) / (n2 + 6))
    estimand: str = "Delta"  # or "win rate" (a side-by-side quantity; ``mean`` is then the win rate - 1/2)

    def s2_e_at(self, n2: float) -> float:
        """S_e^2 with ``n2`` items labelled: today's, its model error and protections faded (the
        module docstring, "Where the two variances come from")."""
        n0, n2 = max(self.n2_now, 1), max(float(n2), 1.0)
        stable = max(1.0 - self.f_err - self.f_prot, 0.0)
        return self.s2_e * (stable + self.f_err * n0 / n2 + self.f_prot * (n0 + PRIOR_N) / (n2 + PRIOR_N))

    @property
    def worth(self) -> float:
        """S_d^2 / S_e^2: what a label counts for with the judges (calib.insight.worth's ratio)."""
        return self.s2_d / self.s2_e if self.s2_e > 0 else math.inf


@dataclass
class Costs:
    """What one judged item and one SME label cost, and where the figures come from."""

    per_call: dict[str, float]  # judge -> USD per call (at the chosen price: batch or online)
    calls: dict[str, int]  # judge -> calls per judged item
    label_usd: float  # c2: one labelled item (baseline + one candidate, every dimension)
    batch: bool = False
    sources: list[str] = field(default_factory=list)

    @property
    def calls_per_item(self) -> int:
        return int(sum(self.calls.values()))

    @property
    def item_usd(self) -> float:
        """c1: the judge calls of one item."""
        return float(sum(self.per_call[j] * k for j, k in self.calls.items()))


@dataclass
class Design:
    """A design and what it buys: totals (judged items, judge calls, labelled items and labels) and
    what is still to buy, its cost, and the binding Delta's expected width."""

    judged: bool  # False: no judges (human-only estimate)
    judged_items: int  # n1 (0 without judges)
    labelled_items: int  # n2 per candidate
    labels: int  # labelled units over every candidate (the SME work)
    judge_calls: int
    judged_items_to_buy: int
    labels_to_buy: int
    judge_calls_to_buy: int
    cost_usd: float  # what is still to buy
    judge_cost_usd: float
    label_cost_usd: float
    width: float  # the binding (widest) Delta's expected width
    binding: dict  # {"dimension", "candidate", "estimand"}
    widths: list[dict]  # per quantity: dimension, candidate, width, p_decision
    p_decision: float | None = None  # the binding Delta's chance of a decision at this width

    def as_dict(self) -> dict:
        return asdict(self)


def two_phase_variance(n1: float, n2: float, N: float, s2_d: float, s2_e: float) -> float:
    """V(n1, n2) of the module docstring (n2 <= n1 <= N); n1 = N is a census."""
    n1 = min(max(n1, 1.0), N)
    n2 = min(max(n2, 1.0), n1)
    return max((1.0 / n1 - 1.0 / N) * s2_d + (1.0 / n2 - 1.0 / n1) * s2_e, 0.0)


def human_only_variance(n2: float, N: float, s2_d: float) -> float:
    """No judges: the labelled items' mean difference, (1/n2 - 1/N) S_d^2."""
    n2 = min(max(n2, 1.0), N)
    return max((1.0 / n2 - 1.0 / N) * s2_d, 0.0)


def width_of(v: float, z: float) -> float:
    return 2.0 * z * math.sqrt(max(v, 0.0))


def interval_quantile(z: float, n2: float, keff: float | None = None) -> float:
    """The quantile Tiebreak's design interval uses at n2 labelled items: Student-t with Kish's
    effective sample size minus one degrees of freedom (``calib.stats.design.t_df``), the
    effective share ``keff`` of the items as today's; the normal ``z`` when ``keff`` is None."""
    if keff is None:
        return z
    from scipy import stats

    df = max(int(math.floor(n2 * keff)) - 1, 1)
    return float(stats.t.ppf(stats.norm.cdf(z), df))


def classical_ratio(c1: float, c2: float, s2_d: float, s2_e: float) -> float | None:
    """The double-sampling optimum n2/n1 = sqrt(c1 S_e^2 / (c2 (S_d^2 - S_e^2))) (N large); None
    when the judges explain nothing (S_e^2 >= S_d^2: judge no more items than are labelled)."""
    if s2_d <= s2_e or c2 <= 0:
        return None
    return math.sqrt(c1 * s2_e / (c2 * (s2_d - s2_e)))


def classical_optimum(budget: float, c1: float, c2: float, s2_d: float, s2_e: float) -> dict | None:
    """Closed form for a budget spent from scratch with N infinite: n1 = B / (c1 + c2 r), n2 = r n1."""
    r = classical_ratio(c1, c2, s2_d, s2_e)
    if r is None or r >= 1:
        return None
    n1 = budget / (c1 + c2 * r)
    return {"ratio": r, "judged_items": n1, "labelled_items": r * n1}


def invert_fit(tiebreak_half: float, human_half: float, n_human: int, n2: int, n1: int, N: int, z: float,
               t_quantile: float | None = None) -> tuple[float, float]:
    """(S_d^2, S_e^2) from the fit's human-only (normal, ``z``) and Tiebreak (Student-t,
    ``t_quantile``; default ``z``) Delta half-widths (module docstring)."""
    s2_d = n_human * (human_half / z) ** 2
    v_t = (tiebreak_half / (t_quantile or z)) ** 2
    phase1 = (1.0 / n1 - 1.0 / N) * s2_d if n1 < N else 0.0
    denom = 1.0 / n2 - 1.0 / n1
    if denom <= 0:
        return s2_d, s2_d
    s2_e = max(v_t - phase1, 1e-12) / denom
    return s2_d, s2_e


def label_cost(n2: int, done: dict[str, int], c2: float) -> tuple[int, float]:
    """(labels to buy, their cost) for n2 labelled items per candidate, ``done`` already labelled."""
    k = int(sum(max(n2 - d, 0) for d in done.values()))
    return k, k * c2


def _binding(quantities: list[Quantity], width) -> tuple[float, Quantity]:
    v = [width(q) for q in quantities]
    i = int(np.argmax(v))
    return v[i], quantities[i]


def _design(quantities, N, costs: Costs, n1: int, n2: int, judged: bool, n1_done: int, done: dict[str, int],
            z: float, chance=None) -> Design:
    var = ((lambda q: two_phase_variance(n1, n2, N, q.s2_d, q.s2_e_at(n2))) if judged
           else (lambda q: human_only_variance(n2, N, q.s2_d)))
    wid = lambda q: width_of(var(q), interval_quantile(z, n2, q.keff) if judged else z)  # noqa: E731
    w_bind, q = _binding(quantities, wid)
    k_lab, lab_usd = label_cost(n2, done, costs.label_usd)
    j_buy = max(n1 - n1_done, 0) if judged else 0
    j_usd = j_buy * costs.item_usd
    widths = []
    for qq in quantities:
        widths.append({"dimension": qq.dimension, "candidate": qq.candidate, "estimand": qq.estimand, "width": wid(qq),
                       "p_decision": chance(qq, n2, var(qq)) if chance else None,
                       "s2_e_planned": qq.s2_e_at(n2) if judged else None})
    pd_bind = next(w["p_decision"] for w in widths if w["dimension"] == q.dimension and w["candidate"] == q.candidate
                   and w["estimand"] == q.estimand)
    return Design(judged=judged, judged_items=n1 if judged else 0, labelled_items=n2,
                  labels=n2 * len(done), judge_calls=(n1 if judged else 0) * costs.calls_per_item,
                  judged_items_to_buy=j_buy, labels_to_buy=k_lab, judge_calls_to_buy=j_buy * costs.calls_per_item,
                  cost_usd=j_usd + lab_usd, judge_cost_usd=j_usd, label_cost_usd=lab_usd, width=w_bind,
                  binding={"dimension": q.dimension, "candidate": q.candidate, "estimand": q.estimand}, widths=widths,
                  p_decision=pd_bind)


def _n1_grid(lo: int, N: int) -> list[int]:
    lo = max(1, min(lo, N))
    g = np.unique(np.round(np.geomspace(lo, N, GRID_POINTS)).astype(int)) if N > lo else np.array([N])
    return sorted(set(g.tolist()) | {lo, N})


def _max_n2(cap: int, floor: int, done: dict[str, int], c2: float, money: float) -> int | None:
    """Largest n2 in [floor, cap] whose labels to buy cost at most ``money`` (None: not even floor)."""
    if floor > cap or label_cost(floor, done, c2)[1] > money + 1e-9:
        return None
    lo, hi = floor, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if label_cost(mid, done, c2)[1] <= money + 1e-9:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _min_n2(cap: int, floor: int, ok) -> int | None:
    """Smallest n2 in [floor, cap] with ok(n2) (ok is monotone), None if none."""
    if floor > cap or not ok(cap):
        return None
    lo, hi = floor, cap
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _refined_min(grid: list[int], f) -> int | None:
    """The n1 minimising f(n1)[0] over a log grid, refined on the integers between the best
    point's neighbours (the objective is flat near its optimum; a 4% grid step would show)."""
    def best_of(ns: list[int]) -> int | None:
        vals = [(r[0], n) for n, r in ((n, f(n)) for n in ns) if r is not None]
        return min(vals)[1] if vals else None

    best = best_of(grid)
    if best is None:
        return None
    i = grid.index(best)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    return best_of(sorted(set(np.round(np.linspace(lo, hi, 200)).astype(int).tolist()) | {best}))


MIN_LABELS = 2  # fewest labelled items for a design-based estimate (calib.stats.design.MIN_ITEMS)


def optimise(quantities: list[Quantity], N: int, costs: Costs, *, budget: float | None = None,
             target_width: float | None = None, n1_done: int = 0, done: dict[str, int] | None = None,
             z: float = 1.959964, allow_no_judges: bool = True, chance=None) -> dict:
    """The plan and the two alternatives (all labels and no judges; judge every item).

    ``n1_done``: items already judged (their calls are sunk; judging fewer is not a saving);
    ``done``: items already labelled per candidate. Exactly one of ``budget`` (USD still to spend)
    and ``target_width`` (of every Delta). ``chance(q, n2, V)``: the chance of a decision."""
    if (budget is None) == (target_width is None):
        raise TiebreakError("give a budget or a target width (one of them)")
    if not quantities:
        raise TiebreakError("nothing to plan: the fit has no Delta or win rate with a human-only cross-check")
    if N < 2:
        raise TiebreakError("nothing to plan: fewer than 2 items in the population")
    done = dict(done or {q.candidate: 0 for q in quantities})
    for q in quantities:
        done.setdefault(q.candidate, 0)
    c1, c2 = costs.item_usd, costs.label_usd
    n2_floor = max(max(done.values()), MIN_LABELS)
    n1_floor = max(n1_done, n2_floor)
    mk = lambda n1, n2, judged: _design(quantities, N, costs, n1, n2, judged, n1_done, done, z, chance)  # noqa: E731
    # the binding (widest) Delta's width: Tiebreak's interval (Student-t) with judges, human-only's (normal) without
    wmax = lambda n1, n2: max(width_of(two_phase_variance(n1, n2, N, q.s2_d, q.s2_e_at(n2)),  # noqa: E731
                                       interval_quantile(z, n2, q.keff)) for q in quantities)
    hmax = lambda n2: max(width_of(human_only_variance(n2, N, q.s2_d), z) for q in quantities)  # noqa: E731
    candidates: list[tuple[float, Design]] = []  # (objective, design)
    notes: list[str] = []
    if budget is not None:
        if not budget > 0:
            raise TiebreakError(f"--budget {budget:g}: give a positive amount in USD")

        def at_budget(n1: int) -> tuple[float, int] | None:
            money = budget - max(n1 - n1_done, 0) * c1
            n2 = _max_n2(n1, n2_floor, done, c2, money) if money >= -1e-9 else None
            return None if n2 is None else (wmax(n1, n2), n2)

        best_n1 = _refined_min(_n1_grid(n1_floor, N), at_budget)
        if best_n1 is not None:
            n1 = best_n1
            candidates.append((at_budget(n1)[0], mk(n1, at_budget(n1)[1], True)))
        h2 = _max_n2(N, n2_floor, done, c2, budget)
        no_judges = mk(0, h2, False) if h2 is not None else None
        m_every = budget - max(N - n1_done, 0) * c1
        e2 = _max_n2(N, n2_floor, done, c2, m_every) if m_every >= 0 else None
        every = mk(N, e2, True) if e2 is not None else None
        if allow_no_judges and no_judges is not None:
            candidates.append((hmax(h2), no_judges))
        best = min(candidates, key=lambda t: (t[0], t[1].cost_usd))[1] if candidates else None
        if best is None or (best.labels_to_buy == 0 and best.judged_items_to_buy == 0):
            raise TiebreakError(f"a budget of ${budget:,.2f} buys nothing: one label costs ${c2:,.2f} "
                                f"and one judged item ${c1:,.4f}")
        if every is None:
            notes.append(f"judging every item costs ${max(N - n1_done, 0) * c1:,.2f}, more than the budget")
    else:
        if not target_width > 0:
            raise TiebreakError(f"--target-width {target_width:g}: give a positive width (in percentage points)")
        target = target_width
        def at_target(n1: int) -> tuple[float, int] | None:
            n2 = _min_n2(n1, n2_floor, lambda k: wmax(n1, k) <= target * (1 + 1e-9))
            if n2 is None:
                return None
            return max(n1 - n1_done, 0) * c1 + label_cost(n2, done, c2)[1], n2

        best_n1 = _refined_min(_n1_grid(n1_floor, N), at_target)
        if best_n1 is not None:
            d = mk(best_n1, at_target(best_n1)[1], True)
            candidates.append((d.cost_usd, d))
        h2 = _min_n2(N, n2_floor, lambda k: hmax(k) <= target * (1 + 1e-9))
        no_judges = mk(0, h2, False) if h2 is not None else None
        e2 = _min_n2(N, n2_floor, lambda k: wmax(N, k) <= target * (1 + 1e-9))
        every = mk(N, e2, True) if e2 is not None else None
        if allow_no_judges and no_judges is not None:
            candidates.append((no_judges.cost_usd, no_judges))
        if not candidates:
            return {"plan": None, "reachable": False, "all_labels_no_judges": None, "judge_every_item": None,
                    "notes": [f"the target width {target_width:g} is not reachable with the labels still possible"]}
        best = min(candidates, key=lambda t: (t[0], t[1].width))[1]
    if no_judges is None:
        notes.append("all labels and no judges: not affordable" if budget is not None else
                     "all labels and no judges: the target is not reachable")
    return {"plan": best.as_dict(), "reachable": True,
            "all_labels_no_judges": no_judges.as_dict() if no_judges else None,
            "judge_every_item": every.as_dict() if every else None, "notes": notes}


# --------------------------------------------------------------------------- from the project


def judge_layout(con, models: list[str], baseline: str) -> dict[str, int]:
    """Calls per judged item per judge: outputs per item (models) x the judge's pointwise
    dimensions, plus 2 (both orders, which cancels position bias) x its side-by-side dimensions x
    candidates. Judges and dimensions as the project holds them (``judge_scores``,
    ``pair_judge_prefs``)."""
    calls: dict[str, int] = {}
    for judge, dims in con.execute(
            "SELECT judge, count(DISTINCT dimension) FROM judge_scores GROUP BY judge ORDER BY judge").fetchall():
        calls[judge] = calls.get(judge, 0) + len(models) * int(dims)
    for judge, dims in con.execute(
            "SELECT judge, count(DISTINCT dimension) FROM pair_judge_prefs GROUP BY judge ORDER BY judge").fetchall():
        calls[judge] = calls.get(judge, 0) + 2 * int(dims) * (len(models) - 1)
    return calls


def measured_calls(con) -> dict[str, dict]:
    """Per judge, from ``judge_calls``: ok calls, the mean online cost per call (a batch call's cost
    / ``BATCH_DISCOUNT``), the mean tokens in and out."""
    rows = con.execute(
        """SELECT c.judge, count(*), avg(CASE WHEN b.call_key IS NULL THEN c.cost_usd ELSE c.cost_usd / ? END),
                  count(c.cost_usd), avg(c.input_tokens), avg(c.output_tokens)
           FROM judge_calls c
           LEFT JOIN (SELECT DISTINCT call_key FROM judge_batch_calls) b USING (call_key)
           WHERE c.status = 'ok' AND c.task IN ('score', 'pair') GROUP BY c.judge""", [BATCH_DISCOUNT]).fetchall()
    return {j: {"calls": int(n), "online_usd": (float(c) if k else None), "input_tokens": ti, "output_tokens": to}
            for j, n, c, k, ti, to in rows}


def estimated_tokens(con) -> tuple[float, float]:
    """Tokens per judge call from the data when no call was measured: the item's text and one
    output at ``CHARS_PER_TOKEN``, plus the rubric; ``DEFAULT_OUTPUT_TOKENS`` out."""
    chars = con.execute(
        """SELECT avg(length(i.prompt) + coalesce(length(i.context), 0) + coalesce(length(i.reference), 0)
                      + length(o.output))
           FROM (SELECT * FROM outputs USING SAMPLE 2000 ROWS) o JOIN items i USING (item_id)""").fetchone()[0]
    return (chars or 0.0) / CHARS_PER_TOKEN + RUBRIC_TOKENS, float(DEFAULT_OUTPUT_TOKENS)


def sme_label_cost(con, settings: dict, given: float | None) -> tuple[float, str]:
    """USD per labelled item and where it comes from (module docstring, Costs)."""
    if given is not None:
        if not given > 0:
            raise TiebreakError(f"--sme-cost-per-label {given:g}: give a positive amount in USD")
        return float(given), f"SME label ${given:,.2f} (given)"
    if float(settings.get("sme_cost_per_label") or 0) > 0:
        v = float(settings["sme_cost_per_label"])
        return v, f"SME label ${v:,.2f} (setting sme_cost_per_label)"
    hourly = float(settings.get("sme_hourly_usd") or 0)
    med = con.execute(
        """SELECT median(d) FROM (SELECT max(duration_ms) AS d FROM labels WHERE duration_ms > 0
                                  GROUP BY item_id, annotator, coalesce(lease_id, label_id))""").fetchone()[0]
    secs, how = ((float(med) / 1000.0, "the median rating time measured") if med else
                 (DEFAULT_RATING_SECONDS, "an assumed rating time (no label has one recorded)"))
    v = secs / 3600.0 * hourly
    if not v > 0:
        raise TiebreakError("an SME label costs nothing here: give --sme-cost-per-label or set sme_hourly_usd")
    return v, f"SME label ${v:,.2f} ({how}, {secs:.0f} s, x setting sme_hourly_usd ${hourly:,.0f}/h)"


def judge_costs(con, calls: dict[str, int], batch: bool, judge_model: str | None = None,
                judge_models: dict[str, str | None] | None = None, cost_per_call: float | None = None
                ) -> tuple[dict[str, float], list[str]]:
    """USD per call per judge (at the batch price with ``batch``) and where each comes from:
    ``cost_per_call`` when given; the measured calls; the judges file's model (``judge_models``:
    None for an offline judge, which costs nothing) or ``judge_model`` through the price map."""
    factor = BATCH_DISCOUNT if batch else 1.0
    if cost_per_call is not None:
        if cost_per_call < 0:
            raise TiebreakError(f"--judge-cost-per-call {cost_per_call:g}: give an amount >= 0 in USD")
        return {j: cost_per_call * factor for j in calls}, [
            f"judge call ${cost_per_call:g} (given){' x batch discount' if batch else ''}"]
    measured = measured_calls(con)
    toks = None
    out, src, missing = {}, [], []
    for j in calls:
        m = measured.get(j)
        if m and m["online_usd"] is not None:
            out[j] = m["online_usd"] * factor
            src.append(f"{j}: ${out[j]:.6f}/call, measured mean of {m['calls']:,} calls"
                       + (f" x {BATCH_DISCOUNT:g} (batch)" if batch else ""))
            continue
        model = judge_models[j] if judge_models is not None and j in judge_models else judge_model
        if judge_models is not None and j in judge_models and model is None:
            out[j] = 0.0
            src.append(f"{j}: offline judge, no cost")
            continue
        if not model:
            missing.append(j)
            continue
        pin, pout = price_per_token(model, batch)
        if m and m["input_tokens"]:
            tin, tout, how = float(m["input_tokens"]), float(m["output_tokens"] or 0), "measured tokens"
        else:
            toks = toks or estimated_tokens(con)
            tin, tout, how = toks[0], toks[1], "tokens estimated from the text"
        out[j] = tin * pin + tout * pout
        src.append(f"{j}: ${out[j]:.6f}/call, {model} in litellm's price map{' (batch price)' if batch else ''} "
                   f"at {tin:,.0f} in / {tout:,.0f} out ({how})")
    if missing:
        raise TiebreakError(f"no price for judge(s) {', '.join(repr(m) for m in missing)}: no measured calls; "
                            "give --judge-model MODEL (litellm's price map), --config JUDGES.toml or "
                            "--judge-cost-per-call USD")
    return out, src


def quantities_from_fit(fit: dict, N: int, n1: int, keff: dict[str, float] | None = None
                        ) -> tuple[list[Quantity], list[str]]:
    """Each Delta of the fit with its two variances (``invert_fit``); Deltas without a design
    estimate or a human-only cross-check are left out, and said so. ``keff``: per candidate,
    the Kish effective share of its labelled items (Tiebreak's interval is a Student-t with that
    many degrees of freedom; None: normal)."""
    from calib.stats import crosscheck

    z = crosscheck._z(fit.get("interval", 0.95))
    checks = {(c["dimension"], c["candidate"]): c for c in fit.get("cross_checks", [])
              if c.get("method") == "human-only" and c.get("estimand", "Delta") == "Delta" and c.get("lo") is not None}
    out, notes = [], []
    for d in fit.get("diffs", []):
        h = checks.get((d["dimension"], d["candidate"]))
        n2 = int(d.get("n_items") or (h or {}).get("n") or 0)
        est = (fit.get("estimator") or {}).get(d["dimension"], {})
        by = (est.get("by_candidate") or {}).get(d["candidate"], est)
        if h is None or n2 < MIN_LABELS or by.get("estimator") != "design":
            notes.append(f"{d['dimension']} ({d['candidate']}): too few items labelled for both models to plan from")
            continue
        ke = (keff or {}).get(d["candidate"])
        qt = interval_quantile(z, n2, ke)
        s2_d, s2_e = invert_fit((d["hi"] - d["lo"]) / 2, (h["hi"] - h["lo"]) / 2, int(h["n"]), n2, n1, N, z, qt)
        f_err, f_prot = fading_shares(d.get("var_parts"))
        out.append(Quantity(d["dimension"], d["candidate"], float(d["mean"]), (d["hi"] - d["lo"]) / (2 * qt), n2,
                            s2_d, s2_e, ke, f_err, f_prot))
    return out, notes


def quantity_label(dimension: str, candidate: str, estimand: str = "Delta") -> str:
    """How a plan names a decision quantity (data names raw: callers show them as text)."""
    return f"{dimension} ({candidate})" + (", win rate" if estimand == "win rate" else "")


def win_rate_quantities(fit: dict, N: int, n1: int, keff: dict[str, float] | None, z: float
                        ) -> tuple[list[Quantity], list[str]]:
    """Each side-by-side win rate of the fit as a planned quantity: S_d^2 is the variance of a
    pair's SME win score (the human-only win-rate interval carries a finite-population
    correction, undone here), S_e^2 the residual variance the preference model leaves; the
    decision compares the win rate with 1/2, so ``mean`` is the win rate - 1/2."""
    checks = {(c["dimension"], c["candidate"]): c for c in fit.get("cross_checks", [])
              if c.get("method") == "human-only" and c.get("estimand") == "win rate" and c.get("lo") is not None}
    out, notes = [], []
    for p in fit.get("preference", []):
        h = checks.get((p["dimension"], p["candidate"]))
        n2 = int(p.get("n_items") or 0)
        if h is None or n2 < MIN_LABELS or (p.get("estimator") or {}).get("estimator") != "design":
            notes.append(f"{quantity_label(p['dimension'], p['candidate'], 'win rate')}: too few pairs compared "
                         "by SMEs to plan from")
            continue
        n_h = int(h.get("n") or n2)
        fpc = max(1.0 - n_h / max(N, 1), 1e-9)
        ke = (keff or {}).get(p["candidate"])
        qt = interval_quantile(z, n2, ke)
        s2_d, s2_e = invert_fit((p["hi"] - p["lo"]) / 2, (h["hi"] - h["lo"]) / 2 / math.sqrt(fpc), n_h, n2, n1, N,
                                z, qt)
        f_err, f_prot = fading_shares(p.get("var_parts"))
        out.append(Quantity(p["dimension"], p["candidate"], float(p["mean"]) - 0.5, (p["hi"] - p["lo"]) / (2 * qt),
                            n2, s2_d, s2_e, ke, f_err, f_prot, "win rate"))
    return out, notes


def fading_shares(parts: dict | None) -> tuple[float, float]:
    """(model-error share, protection share) of a Delta's phase-2 variance from the fit's
    ``var_parts`` (``calib.stats.design._domain_estimate``): the protections are what the total
    adds to the residuals' own variance; the model error is at most that variance. (0, 0) for a fit
    recorded before the parts were (nothing fades: the plan is conservative, as it was)."""
    if not parts or not parts.get("total") or parts["total"] <= 0:
        return 0.0, 0.0
    total, emp = float(parts["total"]), max(float(parts.get("empirical", 0.0)), 0.0)
    f_prot = min(max(total - emp, 0.0) / total, 1.0)
    f_err = min(max(float(parts.get("model_error", 0.0)), 0.0), emp) / total
    return f_err, f_prot


def kish_shares(con, baseline: str, candidates: list[str], N: int) -> dict[str, float]:
    """Per candidate: Kish's effective sample size of the design weights of the items labelled for
    both models (``engine.design_weight_parts``, ``design.t_df``), as a share of those items."""
    from calib.stats import design, engine

    out = {}
    for c in candidates:
        ids = [r[0] for r in con.execute(
            """SELECT item_id FROM labels WHERE model IN (?, ?) GROUP BY item_id
               HAVING count(DISTINCT model) = 2 ORDER BY item_id""", [baseline, c]).fetchall()]
        if len(ids) >= MIN_LABELS:
            parts, _ = engine.design_weight_parts(con, np.array(ids, dtype=object), N, c)
            out[c] = min((design.t_df(parts.v) + 1) / len(ids), 1.0)
    return out


def _phase1_state(con, N: int) -> tuple[int, bool]:
    """(judged items, census?) from ``calib.data.phase1``; a census while it is not built."""
    from calib.data import phase1

    try:
        if phase1.is_census(con):
            return N, True
        n1 = int(phase1.population_counts(con)["n1"].sum())
        return n1, n1 >= N
    except NotImplementedError:
        return N, True


def decision_chance(fit: dict, settings: dict, fresh: bool = False):
    """chance(q, n2, V): the chance a Delta's interval clears the margin with n2 labelled items and
    variance V, given today's estimate (``forecast.preposterior_decision_probability``, the
    decision rule of the fit: fixed or anytime, Bonferroni over candidates). ``fresh``: a new
    project whose estimate rests on its own n2 labels only (today's estimate informs the truth)."""
    from calib.stats import forecast, sequential

    margin = float(fit.get("margin", settings["margin"]))
    need = float(fit.get("decide_prob_per_candidate", fit.get("decide_prob", settings["decide_prob"])))
    anytime = fit.get("signoff_mode") == "anytime"
    target = int(fit.get("anytime_target_items", settings.get("anytime_target_items", 100)))
    prior_sd = float(settings.get("forecast_prior_sd", 0.1))
    min_items = int(settings.get("min_decision_items", 0))

    def chance(q: Quantity, n2: int, v: float) -> float:
        if n2 < min_items:
            return 0.0
        n_now = 0 if fresh else q.n2_now
        k = max(n2 - n_now, 0)
        thr = sequential.equivalent_threshold(n2, 1.0 - need, target) if anytime else need
        sd_after = math.sqrt(max(v, 0.0))
        if k == 0:
            return float(abs(q.mean + margin) >= _ppf(thr) * sd_after)
        return forecast.preposterior_decision_probability(q.mean, q.sd_now, n_now, k, v * n2, sd_after, margin,
                                                          thr, prior_sd)
    return chance


def _ppf(p: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(p))


def plan_project(con, *, budget: float | None = None, target_width: float | None = None,
                 sme_cost_per_label: float | None = None, batch: bool = False, judge_model: str | None = None,
                 judges_file: str | None = None, judge_cost_per_call: float | None = None,
                 from_scratch: bool = False, fit: dict | None = None) -> dict:
    """The plan for this project from its latest fit (or ``fit``): totals, what is still to buy,
    the expected widths and chances of a decision, the alternatives, and where each figure comes
    from. ``target_width`` is a width in pass-rate units (0.05 = 5 percentage points)."""
    from calib.data import store
    from calib.stats import crosscheck, engine

    fit = fit if fit is not None else engine.latest_fit(con)
    if fit is None or not fit.get("n_labels"):
        raise TiebreakError("no fit with labels yet: label a pilot (about 40 items, the Label page or "
                            "`tiebreak simulate` in a demo), run `tiebreak fit`, then plan")
    s = store.get_settings(con)
    models = store.models(con)
    base = s["baseline"]
    N = int(con.execute("SELECT count(DISTINCT item_id) FROM outputs WHERE model = ?", [base]).fetchone()[0])
    n1_now, census = _phase1_state(con, N)
    keff = kish_shares(con, base, [m for m in models if m != base], N)
    quantities, notes = quantities_from_fit(fit, N, n1_now, keff)
    z = crosscheck._z(fit.get("interval", s["interval"]))
    wq, wnotes = win_rate_quantities(fit, N, n1_now, keff, z)
    quantities, notes = quantities + wq, notes + wnotes
    if not quantities:
        raise TiebreakError("the latest fit has no design-based Delta or win rate with a human-only cross-check (too few "
                            "items labelled for both models): label a pilot of about 40 items and fit again")
    calls = judge_layout(con, models, base)
    models_of = None
    if judges_file:
        from calib.judges import config as judge_config

        cfg = judge_config.load_config(judges_file)
        models_of = {j.name: (None if j.kind == "offline" or not j.model else j.model) for j in cfg.judges}
    per_call, sources = judge_costs(con, calls, batch, judge_model, models_of, judge_cost_per_call)
    c2, sme_src = sme_label_cost(con, s, sme_cost_per_label)
    costs = Costs(per_call=per_call, calls=calls, label_usd=c2, batch=batch, sources=[*sources, sme_src])
    cands = sorted({q.candidate for q in quantities})
    done = {c: 0 for c in cands} if from_scratch else {
        c: max(q.n2_now for q in quantities if q.candidate == c) for c in cands}
    n1_done = 0 if from_scratch else n1_now
    res = optimise(quantities, N, costs, budget=budget, target_width=target_width, n1_done=n1_done, done=done, z=z,
                   allow_no_judges=n1_done == 0, chance=decision_chance(fit, s, fresh=from_scratch))
    watermark = engine.label_watermark(con)
    if fit.get("max_label_id") is not None and watermark > int(fit["max_label_id"]):
        notes.append("labels arrived since the latest fit: fit again for a plan from every label")
    binding = next(q for q in quantities if res["plan"] and q.dimension == res["plan"]["binding"]["dimension"]
                   and q.candidate == res["plan"]["binding"]["candidate"]
                   and q.estimand == res["plan"]["binding"]["estimand"]) if res.get("plan") else quantities[0]
    closed = (classical_optimum(budget, costs.item_usd, c2, binding.s2_d, binding.s2_e)
              if budget is not None and n1_done == 0 else None)
    for q in quantities:
        if q.s2_e >= q.s2_d:
            notes.append(f"{q.dimension} ({q.candidate}): the judges explain none of the SME verdicts' variance "
                         "(S_e^2 >= S_d^2): they are not paying for themselves here")
    return {
        "mode": "budget" if budget is not None else "target width",
        "budget_usd": budget, "target_width": target_width, "interval": fit.get("interval", s["interval"]),
        "from_scratch": from_scratch, "census": census, "population_items": N,
        "judged_items_now": n1_now, "labelled_items_now": {c: max(q.n2_now for q in quantities if q.candidate == c) for c in cands},
        "fit": {"kind": fit.get("kind"), "n_labels": fit.get("n_labels"), "max_label_id": fit.get("max_label_id")},
        "costs": {"judge_call_usd": per_call, "calls_per_judged_item": costs.calls_per_item,
                  "calls_by_judge": calls, "judged_item_usd": costs.item_usd, "label_usd": c2, "batch": batch,
                  "batch_discount": BATCH_DISCOUNT, "sources": costs.sources},
        "quantities": [{**asdict(q), "worth": q.worth, "width_now": 2 * z * q.sd_now} for q in quantities],
        **res, "closed_form": closed, "notes": notes + res.get("notes", []),
    }


DESIGN_NAMES = {"plan": "Plan", "all_labels_no_judges": "All labels, no judges", "judge_every_item": "Judge every item"}


def plan_rows(res: dict) -> list[dict]:
    """The plan and its two alternatives as table rows for a page (names from the data are left as
    they are: the page shows them through ``safetext.rows``)."""
    out = []
    for key, name in DESIGN_NAMES.items():
        d = res.get(key)
        if d is None:
            out.append({"Design": name, "Judged items": None, "Judge calls": None, "Labelled items": None,
                        "Labels to buy": None, "Cost to buy (USD)": None, "Expected width (pp)": None,
                        "Chance of a decision": None, "Binding quantity": "not possible"})
            continue
        out.append({"Design": name, "Judged items": d["judged_items"], "Judge calls": d["judge_calls"],
                    "Labelled items": d["labelled_items"], "Labels to buy": d["labels_to_buy"],
                    "Cost to buy (USD)": round(d["cost_usd"], 2), "Expected width (pp)": round(100 * d["width"], 2),
                    "Chance of a decision": None if d.get("p_decision") is None else round(d["p_decision"], 3),
                    "Binding quantity": quantity_label(**d["binding"])})
    return out


def needs_judge_model(con) -> bool:
    """True when some judge of the project has no measured call cost (its price must come from a
    model in the price map, or be given)."""
    from calib.data import store

    calls = judge_layout(con, store.models(con), store.get_settings(con)["baseline"])
    measured = measured_calls(con)
    return any(j not in measured or measured[j]["online_usd"] is None for j in calls)
