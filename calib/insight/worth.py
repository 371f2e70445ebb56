"""What the judges are worth, in labels (issue #22 part 4).

The calibrated, design-consistent estimate and the human-only estimate use the same SME labels;
the judges earn their keep by making the first narrower. The ratio of their variances is the
effective sample size of the calibrated estimate over human-only's at the same labels::

    worth = (half-width of human-only / half-width of Tiebreak)^2

so 60 labels with worth 2.5 give the interval 150 labels would give without judges, and worth
near 1 (SummEval's ROUGE: PPI++ is 0.985x human-only, ``bench/oracle_bound.py``) says the judges
are not paying for themselves. Its uncertainty: each variance is an estimate from the n labelled
units; treating them as independent chi-square estimates with n - 1 degrees of freedom gives an
F(n - 1, n - 1) interval for the ratio. They come from the same sample and are positively
correlated, so the interval is conservative (wider than the truth).
"""

from __future__ import annotations

from scipy import stats

from calib.safetext import one_line


def judges_worth(fit: dict, mass: float = 0.90) -> list[dict]:
    """Per dimension (and the side-by-side win rate) and candidate: labelled units, the worth of
    the judges as a label multiplier with a ``mass`` interval, and the effective labels."""
    checks = {(c["dimension"], c["candidate"], c.get("estimand", "Delta")): c for c in fit.get("cross_checks", [])
              if c.get("method") == "human-only" and c.get("lo") is not None}
    rows = []
    for estimand, reported in (("Delta", fit.get("diffs", [])), ("win rate", fit.get("preference", []))):
        for r in reported:
            h = checks.get((r["dimension"], r["candidate"], estimand))
            n = int(h.get("n") or 0) if h else 0
            tw, hw = r["hi"] - r["lo"], (h["hi"] - h["lo"]) if h else 0.0
            if n < 3 or tw <= 0 or hw <= 0:
                continue
            worth = (hw / tw) ** 2
            f_lo, f_hi = stats.f.ppf([(1 - mass) / 2, (1 + mass) / 2], n - 1, n - 1)
            rows.append({"dimension": r["dimension"], "candidate": r["candidate"], "estimand": estimand,
                         "labels": n, "worth": worth, "worth_lo": worth * f_lo, "worth_hi": worth * f_hi,
                         "effective_labels": worth * n})
    return rows


def worth_sentence(row: dict) -> str:
    """One line for a lead: what the judges add on this dimension (names from the data on one line,
    control characters visible: ``tiebreak fit`` prints it to a terminal)."""
    w = row["worth"]
    verdict = ("the judges are not paying for themselves here" if row["worth_hi"] < 1.1 or w < 1.1 else
               "the judges save labels" if row["worth_lo"] > 1 else "the judges may save labels (not yet clear)")
    return (f"{one_line(row['dimension'], 60)} ({one_line(row['candidate'], 60)}): {row['labels']:,} labels count as about "
            f"{row['effective_labels']:,.0f} without judges (x{w:.2f}, 90% interval x{row['worth_lo']:.2f}-"
            f"x{row['worth_hi']:.2f}): {verdict}")
