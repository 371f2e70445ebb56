"""Tables for people: human headers, units and formatted numbers, shared by the pages and the report
so both say the same thing the same way (no snake_case header, no "None", no 0.8292892987).

``present(rows, columns)`` turns result rows (dicts from calib) into rows of display strings, one
column per ``(value, header, format)``; ``value`` is a key or a function of the row. A missing value
(None, NaN) shows as an en dash. Texts from the data are NOT escaped here: pages pass the rows
through ``safetext.rows`` (``st.dataframe`` shows text) and the report through ``safetext.html``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

DASH = "\u2013"
Column = tuple[str | Callable[[dict], Any], str, Callable[[Any], str] | None]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'."""
    return DASH if _missing(v) else f"{100 * float(v):.{digits}f}%"


def pp(v: Any, digits: int = 1) -> str:
    """A difference of two shares in percentage points: -0.0123 -> '-1.2 pp'."""
    return DASH if _missing(v) else f"{100 * float(v):+.{digits}f} pp"


def num(v: Any, digits: int = 3) -> str:
    return DASH if _missing(v) else f"{float(v):,.{digits}f}"


def integer(v: Any) -> str:
    return DASH if _missing(v) else f"{int(round(float(v))):,}"


def ms(v: Any) -> str:
    return DASH if _missing(v) else f"{float(v):,.0f} ms"


def seconds(v: Any) -> str:
    return DASH if _missing(v) else f"{float(v):,.0f} s"


def usd(v: Any) -> str:
    return DASH if _missing(v) else f"${float(v):,.2f}"


def text(v: Any) -> str:
    return DASH if _missing(v) or v == "" else str(v)


def yes_no(v: Any) -> str:
    return DASH if _missing(v) else ("yes" if v else "no")


def interval(lo_key: str, hi_key: str, fmt: Callable[[Any], str] = pct) -> Callable[[dict], str]:
    """A column function: '[lo, hi]' from two keys of the row."""
    def f(r: dict) -> str:
        lo, hi = r.get(lo_key), r.get(hi_key)
        return DASH if _missing(lo) or _missing(hi) else f"[{fmt(lo)}, {fmt(hi)}]"
    return f


def with_interval(key: str, fmt: Callable[[Any], str] = pct) -> Callable[[dict], str]:
    """A column function: 'value [lo, hi]' from ``key``, ``key_lo`` and ``key_hi``."""
    def f(r: dict) -> str:
        v = fmt(r.get(key))
        lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
        return v if _missing(lo) or _missing(hi) else f"{v} [{fmt(lo)}, {fmt(hi)}]"
    return f


def model_with_role(r: dict) -> str:
    """A row's model, marked "(baseline)" when its ``role`` says so: with several candidates a
    per-model table must say which one the others are compared with."""
    return f"{r.get('model')} (baseline)" if r.get("role") == "baseline" else text(r.get("model"))


def present(rows: list[dict], columns: list[Column]) -> list[dict]:
    """Rows of display strings with human headers (see module doc)."""
    out = []
    for r in rows:
        row = {}
        for value, header, fmt in columns:
            v = value(r) if callable(value) else r.get(value)
            row[header] = (fmt or text)(v)
        out.append(row)
    return out


# --------------------------------------------------------------------------- the tables the app and report share


def decision_table(diffs: list[dict], margin: float) -> list[dict]:
    """Per dimension and candidate: the decision, Delta (percentage points) with its interval,
    P(not worse), the items labelled for both models (and a note when a decision is held)."""
    rows = present(diffs, [
        ("dimension", "Dimension", None), ("candidate", "Candidate", None), ("decision", "Decision", None),
        ("mean", "Delta (candidate - baseline)", pp), (interval("lo", "hi", pp), "95% interval", None),
        ("p_noninferior", f"P(not worse by more than {100 * margin:g} pp)", lambda v: num(v, 3)),
        ("n_items", "Items labelled for both", integer), ("note", "Note", None)])
    if all(r["Note"] == DASH for r in rows):
        for r in rows:
            del r["Note"]
    return rows


def preference_table(preference: list[dict]) -> list[dict]:
    """The pairwise win rate of each candidate (ties count half)."""
    return present(preference, [
        ("dimension", "Dimension", None), ("candidate", "Candidate", None), ("decision", "Decision", None),
        ("mean", "Win rate vs baseline", pct), (interval("lo", "hi"), "95% interval", None),
        ("p_noninferior", "P(not worse)", lambda v: num(v, 3)), ("n_items", "Pairs compared by SMEs", integer)])


def comparison_table(comparison: list[dict], dimensions: list[str]) -> list[dict]:
    """The models side by side, one column per model (so any number of dimensions fits the width):
    the population pass rate per dimension with its interval, latency, time to first token, tokens,
    cost per 1,000 requests and the number of outputs."""
    measures: list[tuple[str, Callable[[dict], str]]] = [
        (f"Pass rate: {d} (95% interval)", with_interval(f"pass_{d}")) for d in dimensions]
    measures.insert(0, ("Role", lambda r: text(r.get("role"))))
    measures += [("Latency p50", lambda r: ms(r.get("latency_p50_ms"))),
                 ("Latency p95", lambda r: ms(r.get("latency_p95_ms"))),
                 ("Time to first token p50", lambda r: ms(r.get("ttft_p50_ms"))),
                 ("Output tokens (mean)", lambda r: num(r.get("output_tokens_mean"), 0)),
                 ("Cost per 1,000 requests", lambda r: usd(r.get("cost_per_1k_usd"))),
                 ("Outputs", lambda r: integer(r.get("outputs")))]
    return [{"Measure": name, **{str(r["model"]): f(r) for r in comparison}} for name, f in measures]


def _estimate(r: dict, key: str) -> str:
    """A cross-check's estimate: Delta in percentage points, a win rate in per cent."""
    return (pct if r.get("estimand") == "win rate" else pp)(r.get(key))


def crosscheck_table(checks: list[dict], with_note: bool = True) -> list[dict]:
    """The same Delta (or win rate) by other estimators; ``with_note`` False leaves the per-method
    notes to ``crosscheck_notes`` (a caption), so a narrow table shows every column in full."""
    def iv(r: dict) -> str:
        return DASH if _missing(r.get("lo")) or _missing(r.get("hi")) else f"[{_estimate(r, 'lo')}, {_estimate(r, 'hi')}]"

    cols: list[Column] = [
        ("dimension", "Dimension", None), ("candidate", "Candidate", None),
        (lambda r: r.get("estimand", "Delta"), "Estimand", None), ("method", "Method", None),
        (lambda r: _estimate(r, "mean"), "Estimate", None), (iv, "95% interval", None),
        ("n", "Labelled items", integer)]
    return present(checks, cols + ([("note", "Note", None)] if with_note else []))


def batch_table(batches: list[dict]) -> list[dict]:
    """Provider batches (``calib.judges.batch.list_batches``), newest first, with human headers."""
    return present(batches, [
        ("batch_no", "Batch", integer), ("judge", "Judge", None), ("model", "Model", None), ("state", "State", None),
        ("requests", "Requests", integer), ("ok", "OK", integer), ("failed", "Failed", integer),
        ("requeued", "Re-queued", integer), ("provider_batch_id", "Provider id", None), ("error", "Error", None),
        ("updated_at", "Updated", None)])


def worth_table(rows: list[dict]) -> list[dict]:
    """What the judges are worth (``calib.insight.worth``): per dimension and candidate, the labels,
    the label multiplier with its 90% interval, and the labels it stands for without judges."""
    return present(rows, [
        ("dimension", "Dimension", None), ("candidate", "Candidate", None), ("estimand", "Estimand", None),
        ("labels", "Labelled units", integer),
        (lambda r: f"x{r['worth']:.2f} [x{r['worth_lo']:.2f}, x{r['worth_hi']:.2f}]", "Judges' worth (90% interval)", None),
        ("effective_labels", "Same interval without judges would need", lambda v: f"{integer(v)} labels")])


def crosscheck_notes(checks: list[dict]) -> list[str]:
    """One line per kind of method that carries a note ('judge-only: no interval: ...')."""
    seen: dict[str, str] = {}
    for c in checks:
        kind = str(c.get("method", "")).split(":")[0]
        if c.get("note") and kind not in seen:
            seen[kind] = f"{kind}: {c['note']}"
    return list(seen.values())


def convergence_table(fit: dict) -> list[dict]:
    """Per dimension: for a NUTS fit max R-hat, min bulk ESS and divergences; for the fast fit the
    importance-sampling ESS (the fast fit has no chains, so no R-hat)."""
    rows = []
    for dim, d in (fit.get("diagnostics") or {}).items():
        rows.append({"dimension": dim, "max_rhat": d.get("max_rhat"), "min_ess_bulk": d.get("min_ess_bulk"),
                     "divergences": d.get("divergences"), "importance_ess": d.get("importance_ess"),
                     "ok": not d.get("warnings"), "warnings": "; ".join(d.get("warnings") or [])})
    if fit.get("kind") == "nuts":
        cols: list[Column] = [("dimension", "Dimension", None), ("max_rhat", "Max R-hat", lambda v: num(v, 3)),
                              ("min_ess_bulk", "Min bulk ESS", integer), ("divergences", "Divergences", integer)]
    else:
        return present(rows, [("dimension", "Dimension", None), ("importance_ess", "Importance ESS", integer),
                              ("ok", "Approximation adequate (ESS >= 200)", yes_no), ("warnings", "Warnings", None)])
    return present(rows, cols + [("ok", "Converged", yes_no), ("warnings", "Warnings", None)])


def flip_rate_table(rates: list[dict], by: str) -> list[dict]:
    """Per segment or topic: items labelled for both models, regressions and improvements with rates."""
    return present(rates, [
        (by, by.capitalize(), None), ("items", "Items labelled for both", integer),
        ("regressions", "Regressions", integer), ("regression_rate", "Regression rate", pct),
        ("improvements", "Improvements", integer), ("improvement_rate", "Improvement rate", pct)])


def likely_table(rows: list[dict]) -> list[dict]:
    return present(rows, [
        ("item_id", "Item", None), ("segment", "Segment", None), ("topic", "Topic", None),
        ("p_baseline", "P(baseline passes)", pct), ("p_candidate", "P(candidate passes)", pct),
        ("p_regression", "P(regression)", pct)])


COMPARISONS = "Comparisons (item, candidate)"


def annotator_table(rows: list[dict]) -> list[dict]:
    """Who labelled how much (``annotators.throughput``): comparisons, i.e. distinct (item,
    candidate) units, which is what an SME rates; distinct items; label rows; rating time per
    comparison. Per candidate: ``annotator_candidate_table``."""
    return present(rows, [
        ("annotator", "SME", None), ("units", COMPARISONS, integer),
        ("items", "Distinct items", integer), ("labels", "Label rows", integer),
        ("hours", "Rating time (h)", lambda v: num(v, 1)), ("median_s", "Median per comparison", seconds),
        ("p90_s", "p90 per comparison", seconds), ("units_per_hour", "Comparisons per hour", lambda v: num(v, 0)),
        ("first_at", "First label", lambda v: text(str(v)[:16] if v is not None else None)),
        ("last_at", "Last label", lambda v: text(str(v)[:16] if v is not None else None))])


WORK_COLUMNS = ["SME", COMPARISONS, "Distinct items", "Label rows", "First label", "Last label"]


def annotator_tables(rows: list[dict]) -> dict[str, list[dict]]:
    """``annotator_table`` in parts that fit a page or an A4 report: "Work done", "Comparisons per
    candidate" (only with several candidates) and "Rating time"; {} when nobody has labelled."""
    if not rows:
        return {}
    full = annotator_table(rows)
    out = {"Work done": [{c: r[c] for c in WORK_COLUMNS} for r in full]}
    per_candidate = annotator_candidate_table(rows)
    if per_candidate:
        out["Comparisons per candidate"] = per_candidate
    out["Rating time"] = [{c: r[c] for c in ["SME"] + [c for c in r if c not in WORK_COLUMNS]} for r in full]
    return out


def annotator_candidate_table(rows: list[dict]) -> list[dict]:
    """Each SME's comparisons per candidate (``annotators.throughput``'s ``by_candidate``), one
    column per candidate named after it (data: the caller escapes headers like cells); [] when the
    SMEs' comparisons are all of one candidate (the main table says it all)."""
    cands = list(dict.fromkeys(c for r in rows for c in (r.get("by_candidate") or {})))
    if len(cands) < 2:
        return []
    return present(rows, [("annotator", "SME", None),
                          *[(lambda r, c=c: (r.get("by_candidate") or {}).get(c, 0), c, integer) for c in cands]])


def agreement_table(rows: list[dict]) -> list[dict]:
    return present(rows, [("dimension", "Dimension", None), ("units", "Outputs rated by 2+ SMEs", integer),
                          ("alpha", "Krippendorff's alpha", lambda v: num(v, 2)),
                          (interval("lo", "hi", lambda v: num(v, 2)), "95% interval", None)])


def position_bias_table(rows: list[dict]) -> list[dict]:
    return present(rows, [("annotator", "SME", None), ("decided", "Decided preferences", integer),
                          ("left_rate", "Left answer preferred", pct), (interval("lo", "hi"), "95% interval", None),
                          ("biased", "Biased", yes_no)])


def drift_table(rows: list[dict]) -> list[dict]:
    return present(rows, [("annotator", "SME", None), ("dimension", "Dimension", None), ("labels", "Label rows", integer),
                          ("pass_rate_first", "Pass rate, first third", pct),
                          ("pass_rate_last", "Pass rate, last third", pct),
                          ("pass_rate_change", "Change", pp),
                          ("median_s_first", "Median time, first third", seconds),
                          ("median_s_last", "Median time, last third", seconds)])


def judge_agreement_table(rows: list[dict]) -> list[dict]:
    """``diagnostics.judge_agreement``: kappa with its interval, accuracy and the confusion matrix."""
    n2 = lambda v: num(v, 2)  # noqa: E731
    return present(rows, [("judge", "Judge", None), ("dimension", "Dimension", None), ("n", "Labelled outputs", integer),
                          (with_interval("kappa", n2), "Kappa [95% interval]", None), ("accuracy", "Accuracy", pct),
                          ("judge_pass_sme_pass", "Both pass", integer), ("judge_pass_sme_fail", "Judge pass, SME fail", integer),
                          ("judge_fail_sme_pass", "Judge fail, SME pass", integer), ("judge_fail_sme_fail", "Both fail", integer)])


def judge_bias_table(rows: list[dict]) -> list[dict]:
    """``diagnostics.judge_bias_by_model``: judge minus SME pass rate per model and the difference."""
    spp = lambda v: DASH if _missing(v) else f"{100 * v:+.1f} pp"  # noqa: E731
    return present(rows, [("judge", "Judge", None), ("dimension", "Dimension", None), ("candidate", "Candidate", None),
                          ("bias_baseline", "Bias on the baseline", spp), ("bias_candidate", "Bias on the candidate", spp),
                          # the difference and its interval in one column: a table of every judge, dimension
                          # and candidate must fit a 1280 px page without a horizontal scroll
                          (lambda r: DASH if _missing(r.get("bias_difference")) else
                           f"{spp(r['bias_difference'])} {interval('lo', 'hi', spp)(r)}", "Difference [95% interval]", None),
                          ("differs", "Differs", yes_no),
                          (lambda r: f"{r.get('n_baseline', 0):,} / {r.get('n_candidate', 0):,}", "Labelled (baseline / candidate)", None)])


def judge_disagreement_table(rows: list[dict]) -> list[dict]:
    """``diagnostics.judge_disagreement``: per model, how often two judges' verdicts differ, and their kappa."""
    return present(rows, [("dimension", "Dimension", None), ("judge_a", "Judge", None), ("judge_b", "Other judge", None),
                          (model_with_role, "Model", None),
                          ("n", "Outputs compared", integer), ("disagree_share", "Verdicts differ", pct),
                          ("kappa", "Kappa", lambda v: num(v, 2))])


def fits_history_csv(history: list[dict]) -> bytes:
    """The fits history (``engine.fits_history`` rows) as CSV bytes for a spreadsheet: dimension and
    candidate names come from the data, so text that would run as a formula is quoted
    (``safetext.csv_frame``); the numbers (Delta and its interval, often negative) stay numbers."""
    import pandas as pd

    from calib.safetext import csv_frame

    return csv_frame(pd.DataFrame(history)).to_csv(index=False).encode()


# --------------------------------------------------------------------------- Home and Admin


def judge_count_table(rows: list[dict]) -> list[dict]:
    """Home: judge scores imported per judge and dimension."""
    return present(rows, [("judge", "Judge", None), ("dimension", "Dimension", None),
                          ("scores", "Scores", integer)])


def queue_table(rows: list[dict]) -> list[dict]:
    """Home: queued items by the reason the queue picked them (``queue.queue_summary``)."""
    return present(rows, [("reason", "Reason", None), ("queued", "Queued", integer), ("done", "Done", integer),
                          ("mean_inclusion_prob", "Mean inclusion probability", lambda v: num(v, 3)),
                          ("overlap", "For a second SME", integer)])


def disagreement_table(rows: list[dict]) -> list[dict]:
    """Home: the items where the judges disagree most (``queue.top_disagreements``): spread of the
    judges on one output, difference between the models' judge verdicts, and their sum."""
    return present(rows, [("item_id", "Item", None), ("segment", "Segment", None), ("topic", "Topic", None),
                          ("judges_disagree", "Judges disagree", lambda v: num(v, 2)),
                          ("models_differ", "Models differ", lambda v: num(v, 2)),
                          ("score", "Score", lambda v: num(v, 2))])


def _when(v: Any) -> str:
    """A timestamp to the second (DuckDB gives datetimes; microseconds are noise on a page)."""
    return DASH if _missing(v) else (v.strftime("%Y-%m-%d %H:%M:%S") if hasattr(v, "strftime") else str(v))


def users_table(rows: list[dict]) -> list[dict]:
    """Admin: the users (``users.list_users``) with their sign-in state, and the e-mail single
    sign-on matches them by when the rows carry one (``email``)."""
    cols: list[Column] = [("name", "User", None), ("role", "Role", None), ("active", "Active", yes_no),
                          ("created_at", "Added", _when), ("failures", "Failed sign-ins", integer),
                          ("locked", "Locked", yes_no)]
    if any("email" in r for r in rows):
        cols.insert(2, ("email", "E-mail", None))
    return present(rows, cols)


def audit_table(rows: list[dict]) -> list[dict]:
    """Admin: the audit log (``users.audit_log``), newest first."""
    return present(rows, [("at", "When", _when), ("actor", "Who", None), ("action", "Action", None),
                          ("detail", "Detail", None)])


# --------------------------------------------------------------------------- cards

NBSP = "\u00a0"


def card_delta(d: dict, pair: bool = False) -> str:
    """The line under a decision card's verdict: 'Delta +3.4 pp [-6.5 pp, +13.5 pp]' (or the
    side-by-side win rate) with non-breaking spaces inside each figure, so a narrow card wraps
    between figures (after 'Delta', after a comma) and never between a number and its unit."""
    fmt = pct if pair else pp

    def keep(s: str) -> str:
        return s.replace(" ", NBSP)

    head = "Win rate" if pair else "Delta"
    return f"{head} {keep(fmt(d['mean']))} [{keep(fmt(d['lo']))}, {keep(fmt(d['hi']))}]"


# --------------------------------------------------------------------------- Run judges


def judge_config_table(judges: list) -> list[dict]:
    """Run judges: the judges a TOML file defines (``calib.judges.config`` objects)."""
    return [{"Judge": j.name, "Kind": j.kind, "Model or method": j.model or j.method,
             "Dimensions": ", ".join(j.dimensions), "API base": j.api_base or DASH} for j in judges]


def call_summary_table(rows: list[dict]) -> list[dict]:
    """Run judges: calls per judge (or generator) and task (``judges.call_summary``)."""
    return present(rows, [("judge", "Judge", None), ("task", "Task", None), ("ok", "OK", integer),
                          ("failed", "Failed", integer), ("input_tokens", "Input tokens", integer),
                          ("output_tokens", "Output tokens", integer),
                          ("cost_usd", "Cost", lambda v: DASH if _missing(v) else f"${float(v):,.4f}"),
                          ("latency_p50_ms", "Latency p50", ms), ("latency_p95_ms", "Latency p95", ms),
                          ("ttft_p50_ms", "Time to first token p50", ms)])


def pair_position_bias_table(rows: list[dict]) -> list[dict]:
    """Run judges: how often a pairwise judge picked the answer shown first (``judges.position_bias``)."""
    return present(rows, [("judge", "Judge", None), ("dimension", "Dimension", None),
                          ("decided_calls", "Decided calls", integer),
                          ("first_position_rate", "First answer picked", pct), (interval("lo", "hi"), "95% interval", None),
                          ("pairs_both_orders", "Pairs judged in both orders", integer),
                          ("order_consistency", "Same verdict in both orders", pct)])
