"""Judge fitness per model, and whether it transports from the baseline to a candidate (issue 15).

A judge that agrees well with the SMEs on the old model and poorly on the new one is the classic way
a migration verdict flips sign: its errors no longer cancel between the models. So agreement is
measured for EACH model separately, on that model's labelled outputs, and compared.

Definitions (one labelled output = one row of ``diagnostics.labelled_judgements``: the judge passes
an output when its score reaches the judge's threshold; the SME verdict is the annotators' majority):

- sensitivity = P(judge passes | SMEs pass), specificity = P(judge fails | SMEs fail), each with a
  95% Wilson interval;
- Youden's J = sensitivity + specificity - 1 (0 = no better than chance, 1 = perfect; it does not
  depend on how many outputs pass), and Cohen's kappa (chance-corrected agreement, which DOES move
  with the pass rate: the same judge has a lower kappa on a model that almost always passes), each
  with a 95% percentile bootstrap interval;
- differences candidate minus baseline, with a bootstrap that resamples ITEMS (both models' outputs
  of an item stay together, since they share the prompt and usually the SME).

When a judge's quality "differs" between the models (``fitness_differences``), and why not simply
"the J or kappa difference's 95% interval excludes 0":

- on sensitivity and specificity, the judge's two error rates. Kappa is shown but not used: it
  moves with the pass rate, so a judge with the same error rates on both models has a different
  kappa whenever the models' pass rates differ, which is what a migration changes (on the demo the
  unbiased ``judge-strict`` has a true refusal kappa of 0.58 on the baseline and 0.76 on the
  candidate, with the same J). J is shown but not used either: it is their sum, and a judge that
  became lenient (sensitivity up, specificity down: the demo's ``judge-lenient``) keeps part of
  its J;
- corrected for multiplicity: a project compares 2 error rates x judges x dimensions x candidates
  (18 tests on the demo); 95% intervals would flag a judge in about 60% of the projects whose
  judges all transport. The flags are the Benjamini-Hochberg rejections at a 5% false discovery
  rate of the bootstrap p-values, so such a project shows a warning at most about 5% of the time;
- material: a flagged difference is at least MATERIAL (0.15) in size. Every judge's error rates
  move a little when the outputs change (on the demo, the unbiased judges' by up to about 0.1,
  through the candidate's different mix of easy and hard outputs alone; the lenient judge's
  specificity drops by 0.2 to 0.4), and enough labels make such small moves significant. 0.15 is
  a convention, like the kappa bands.

A flagged difference's 95% interval excludes 0.

Design weights: the queue sends SMEs the items where judges disagree most, so the labelled outputs
are not a uniform sample and raw agreement on them is biased (lower than on all outputs, and by a
different amount per model, since the queue's choice depends on each model's judge scores). Every
count is therefore weighted by 1 / (the item's inclusion probability) (``engine.design_weights``,
the weights of the design-based estimate; labels from outside the queue count as a uniform
sample), so the estimates are design-consistent for ALL outputs of the model (Hajek ratios). The
Wilson intervals use the weights' effective sample size (Kish); ``n`` counts labelled outputs.

Bootstraps use a random generator seeded from ``seed`` and the (judge, dimension, model) names, so
the same data give the same intervals, whatever other judges the project has.
"""

from __future__ import annotations

import math
import zlib

import duckdb
import numpy as np
import pandas as pd
from scipy.special import ndtr

from calib.data import store
from calib.insight import diagnostics, tables
from calib.stats import engine
from calib.stats.crosscheck import wilson_interval

BOOT = 1000  # bootstrap draws for one model's J and kappa intervals
BOOT_DIFF = 2000  # for differences (2.5% tails of 50 draws each)
FDR = 0.05  # Benjamini-Hochberg false discovery rate of the "differs" flags
# A difference in sensitivity or specificity smaller than this is not flagged however sure (see the
# module doc): a convention for "enough to change how far the judge can be trusted".
MATERIAL = 0.15
FLAGGED_ON = ("specificity", "sensitivity")  # the measures whose differences are tested
_CHUNK = 250  # bootstrap draws per block: memory stays ~ 250 x labelled items
# Fewer labelled outputs than this, or fewer than MIN_PER_CLASS SME passes or SME fails, and a
# judge's fitness on a model is "too few labels": with 5 SME fails, specificity's 95% interval is
# still about 0.5 wide, and kappa/J intervals from a handful of outputs are unreliable.
MIN_LABELS = 20
MIN_PER_CLASS = 5

# Kappa bands: a widely used convention for how much an automated judge may be trusted (in the
# spirit of Landis & Koch's agreement scale), not a law: pick your own thresholds for your stakes.
BANDS = [(0.7, "release gating"), (0.4, "monitoring"), (-math.inf, "exploration only")]
TOO_FEW = "too few labels"

_NAN = float("nan")


def band(kappa: float, n: int, n_sme_pass: int, n_sme_fail: int) -> str:
    """The fitness band of a judge on one model: 'too few labels' when ``n`` < MIN_LABELS or either
    SME class has fewer than MIN_PER_CLASS outputs (or kappa is undefined); else by the kappa point
    estimate: < 0.4 'exploration only', 0.4-0.7 'monitoring', >= 0.7 'release gating'. These cut-offs
    are a convention, not a law."""
    if n < MIN_LABELS or min(n_sme_pass, n_sme_fail) < MIN_PER_CLASS or not np.isfinite(kappa):
        return TOO_FEW
    return next(name for cut, name in BANDS if kappa >= cut)


def _confusion(jp: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Indicator columns (judge pass & SME pass, judge pass & SME fail, judge fail & SME pass,
    judge fail & SME fail) of each output: counts are a weighted sum of these."""
    return np.stack([jp & sp, jp & ~sp, ~jp & sp, ~jp & ~sp], axis=-1).astype(float)


def _metrics(c: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, Youden's J and kappa from confusion counts ``c[..., 4]`` (any
    leading shape: one data set or a stack of bootstrap draws); nan where undefined."""
    tp, fp, fn, tn = (c[..., i] for i in range(4))
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        po = (tp + tn) / n
        pj, ps = (tp + fp) / n, (tp + fn) / n
        pe = pj * ps + (1 - pj) * (1 - ps)
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    return {"sensitivity": sens, "specificity": spec, "youden_j": sens + spec - 1, "kappa": kappa}


def _interval(draws: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of bootstrap draws, ignoring draws where the metric is undefined
    (a resample with no SME fail has no specificity); nan when fewer than half are defined."""
    d = draws[np.isfinite(draws)]
    if len(d) < len(draws) / 2:
        return _NAN, _NAN
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def _rng(seed: int, *names: str) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, and intervals must be reproducible.
    return np.random.default_rng([seed, zlib.crc32("\0".join(names).encode())])


def _boot_counts(rng: np.random.Generator, indicators: list[np.ndarray], draws: int) -> list[np.ndarray]:
    """Bootstrap confusion counts: ``draws`` resamples (with replacement) of the n rows shared by
    every (n x 4) weighted indicator matrix; returns one (draws x 4) array per matrix. The same
    resample applies to every matrix, which keeps paired outputs together."""
    n = indicators[0].shape[0]
    out = [[] for _ in indicators]
    for start in range(0, draws, _CHUNK):
        k = min(_CHUNK, draws - start)
        # each row's counts of n uniform draws of a row index: a multinomial(n, 1/n) draw, but about 3x
        # faster than rng.multinomial with n categories (one bincount over the k rows, offset per row)
        picks = rng.integers(0, n, size=(k, n)) + n * np.arange(k)[:, None]
        counts = np.bincount(picks.ravel(), minlength=k * n).reshape(k, n).astype(float)
        for acc, ind in zip(out, indicators):
            acc.append(counts @ ind)
    return [np.concatenate(acc) for acc in out]


def _p_value(estimate: float, draws: np.ndarray) -> float:
    """Two-sided p-value of "the difference is 0" from the estimate and its bootstrap standard
    error (normal approximation). Not the share of draws beyond 0: with many judges, dimensions
    and candidates, Benjamini-Hochberg needs p-values far below 1 / draws, which counting cannot
    resolve. nan when under half the draws are defined."""
    d = draws[np.isfinite(draws)]
    if len(d) < max(2, len(draws) / 2) or not np.isfinite(estimate):
        return _NAN
    se = float(np.std(d, ddof=1))
    if se == 0:  # every resample agrees (e.g. specificity 1.0 on both models)
        return 1.0 if estimate == 0 else 0.0
    return float(2 * ndtr(-abs(estimate) / se))


def _benjamini_hochberg(p: list[float], q: float = FDR) -> list[bool]:
    """Rejections of the Benjamini-Hochberg step-up procedure at false discovery rate ``q``
    (nan p-values are never rejected but count as tests)."""
    m = len(p)
    ranked = sorted((v, i) for i, v in enumerate(p) if np.isfinite(v))
    k = max((r + 1 for r, (v, _) in enumerate(ranked) if v <= (r + 1) * q / m), default=0)
    reject = [False] * m
    for _, i in ranked[:k]:
        reject[i] = True
    return reject


def labelled_outputs(con: duckdb.DuckDBPyConnection, max_label_id: int | None = None) -> pd.DataFrame:
    """``diagnostics.labelled_judgements`` plus ``w``, the item's design weight 1/pi (as the
    queue records it now: with ``max_label_id``, the weights are today's, not the replayed moment's).
    The frame ``judge_fitness`` and ``fitness_differences`` work on: load it once and pass it to
    both (its join against every judge score is most of their cost on a large store)."""
    df = diagnostics.labelled_judgements(con, max_label_id)
    if df.empty:
        return df
    n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    items = df.item_id.unique()
    w, _ = engine.design_weights(con, items, n_items)
    return df.assign(w=df.item_id.map(dict(zip(items, w))).to_numpy(float))


def _wilson(hit: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """95% Wilson interval of a weighted proportion, on the weights' effective sample size."""
    if not len(w) or w.sum() <= 0:
        return _NAN, _NAN
    n_eff = w.sum() ** 2 / np.sum(w ** 2)
    _, lo, hi = wilson_interval(float(np.sum(w * hit) / w.sum() * n_eff), float(n_eff))
    return lo, hi


def _role(model: str, settings: dict) -> str:
    if model == settings["baseline"]:
        return "baseline"
    return "candidate" if model in settings["candidates"] else "other"


def judge_fitness(con: duckdb.DuckDBPyConnection, max_label_id: int | None = None, seed: int = 0,
                  labelled: pd.DataFrame | None = None) -> list[dict]:
    """One row per (judge, dimension, model) with labelled outputs: ``n``, sensitivity and
    specificity (95% Wilson), Youden's J and kappa (95% bootstrap over the outputs), and the
    fitness ``band`` (see ``band``: kappa < 0.4 'exploration only', 0.4-0.7 'monitoring', >= 0.7
    'release gating', a documented convention rather than a law; 'too few labels' below
    MIN_LABELS outputs or MIN_PER_CLASS of either SME verdict). ``role`` is 'baseline' or
    'candidate' ('other' for a model the settings name as neither). Labels up to
    ``max_label_id`` only (all by default). [] when nothing is labelled (or no judge scores).
    ``labelled``: ``labelled_outputs(con, max_label_id)`` when the caller already has it (then
    ``max_label_id`` is not used)."""
    df = labelled_outputs(con, max_label_id) if labelled is None else labelled
    if df.empty:
        return []
    settings = store.get_settings(con)
    order = {m: i for i, m in enumerate(store.models(con))}
    out = []
    for (judge, dim), g in df.groupby(["judge", "dimension"], sort=True):
        for model in sorted(g.model.unique(), key=lambda m: (order.get(m, len(order)), m)):
            h = g[g.model == model]
            jp, sp, w = h.judge_pass.to_numpy(bool), h.sme_pass.to_numpy(bool), h.w.to_numpy(float)
            ind = _confusion(jp, sp) * w[:, None]
            est = _metrics(ind.sum(0))
            boot = _metrics(_boot_counts(_rng(seed, judge, dim, model), [ind], BOOT)[0])
            n_pass, n_fail = int(sp.sum()), int((~sp).sum())
            sens_lo, sens_hi = _wilson(jp[sp], w[sp])
            spec_lo, spec_hi = _wilson(~jp[~sp], w[~sp])
            row = {"judge": judge, "dimension": dim, "model": model, "role": _role(model, settings), "n": len(h),
                   "n_sme_pass": n_pass, "n_sme_fail": n_fail}
            for key, (lo, hi) in {"sensitivity": (sens_lo, sens_hi), "specificity": (spec_lo, spec_hi),
                                  "youden_j": _interval(boot["youden_j"]), "kappa": _interval(boot["kappa"])}.items():
                value = float(est[key])
                defined = np.isfinite(value)
                row.update({key: value, f"{key}_lo": lo if defined else _NAN, f"{key}_hi": hi if defined else _NAN})
            row["band"] = band(row["kappa"], row["n"], n_pass, n_fail)
            out.append(row)
    return out


def fitness_differences(con: duckdb.DuckDBPyConnection, max_label_id: int | None = None, seed: int = 0,
                        labelled: pd.DataFrame | None = None, per_model: list[dict] | None = None) -> list[dict]:
    """Per (judge, dimension, candidate): the candidate-minus-baseline differences in kappa,
    Youden's J, sensitivity and specificity, each with a 95% bootstrap interval (items resampled,
    both models' outputs of an item together: ``<measure>_difference_lo/_hi`` with ``j`` for J)
    and, for J, sensitivity and specificity, the bootstrap p-value of "no difference"
    (``<measure>_p_value``); each model's sensitivity and specificity too.

    ``differs``: the judge's quality does not transport between the models. True when its
    sensitivity or specificity difference survives the Benjamini-Hochberg procedure at a 5% false
    discovery rate over all the rows' tests (its 95% interval then excludes 0), is at least
    MATERIAL (0.15) in size, and the judge has enough labels on both models (neither is 'too few
    labels'); ``differs_on`` names those measures. See the module doc for why this rule and not
    "the J or kappa interval excludes 0". Point estimates equal ``judge_fitness``'s. One row per
    candidate in the settings; [] for a project without a baseline or candidate, without labels or
    without pointwise judge scores (a pairwise-only project).

    ``labelled`` (``labelled_outputs(con, max_label_id)``) and ``per_model`` (``judge_fitness`` of
    the same labels and seed): pass them when already computed, so the join and the per-model
    bootstraps run once (the results are the same)."""
    settings = store.get_settings(con)
    base, cands = settings["baseline"], list(settings["candidates"] or [])
    if not base or not cands:
        return []
    df = labelled_outputs(con, max_label_id) if labelled is None else labelled
    if df.empty:
        return []
    if per_model is None:
        per_model = judge_fitness(con, max_label_id, seed, labelled=df)
    fit = {(r["judge"], r["dimension"], r["model"]): r for r in per_model}
    out = []
    for (judge, dim), g in df.groupby(["judge", "dimension"], sort=True):
        for cand in cands:
            fb, fc = fit.get((judge, dim, base)), fit.get((judge, dim, cand))
            if fb is None or fc is None:
                continue
            h = g[g.model.isin([base, cand])]
            items = pd.Index(h.item_id.unique())
            inds = []
            for m in (base, cand):
                hm = h[h.model == m]
                # one confusion row per item (zeros where this model's output is not labelled), so a
                # resample of the items applies to both models at once
                ind = np.zeros((len(items), 4))
                ind[items.get_indexer(hm.item_id)] = (_confusion(hm.judge_pass.to_numpy(bool), hm.sme_pass.to_numpy(bool))
                                                     * hm.w.to_numpy(float)[:, None])
                inds.append(ind)
            bb, bc = (_metrics(c) for c in _boot_counts(_rng(seed, judge, dim, base, cand), inds, BOOT_DIFF))
            dk_lo, dk_hi = _interval(bc["kappa"] - bb["kappa"])
            dj_lo, dj_hi = _interval(bc["youden_j"] - bb["youden_j"])
            extra = {}
            for key, short in [("sensitivity", "sensitivity"), ("specificity", "specificity"), ("youden_j", "j")]:
                d = bc[key] - bb[key]
                if short != "j":
                    extra[f"{short}_baseline"], extra[f"{short}_candidate"] = fb[key], fc[key]
                    extra[f"{short}_difference_lo"], extra[f"{short}_difference_hi"] = _interval(d)
                extra[f"{short}_p_value"] = _p_value(fc[key] - fb[key], d)
            out.append({
                "judge": judge, "dimension": dim, "baseline": base, "candidate": cand,
                "n_baseline": fb["n"], "n_candidate": fc["n"],
                "kappa_baseline": fb["kappa"], "kappa_candidate": fc["kappa"],
                "kappa_difference": fc["kappa"] - fb["kappa"], "kappa_difference_lo": dk_lo, "kappa_difference_hi": dk_hi,
                "j_baseline": fb["youden_j"], "j_candidate": fc["youden_j"],
                "j_difference": fc["youden_j"] - fb["youden_j"], "j_difference_lo": dj_lo, "j_difference_hi": dj_hi,
                "sensitivity_difference": fc["sensitivity"] - fb["sensitivity"],
                "specificity_difference": fc["specificity"] - fb["specificity"],
                **extra,
                "enough_labels": TOO_FEW not in (fb["band"], fc["band"]),
            })
    # only judges with enough labels on both models are tested (and counted as tests)
    tests = [(r, m) for r in out if r["enough_labels"] for m in FLAGGED_ON]
    for r in out:
        r["differs_on"] = []
    for (r, m), reject in zip(tests, _benjamini_hochberg([r[f"{m}_p_value"] for r, m in tests])):
        lo, hi = r[f"{m}_difference_lo"], r[f"{m}_difference_hi"]
        if reject and (lo > 0 or hi < 0) and abs(r[f"{m}_difference"]) >= MATERIAL:
            r["differs_on"].append(m)
    for r in out:
        r["differs"] = bool(r["differs_on"])
    return out


def fitness_and_differences(con: duckdb.DuckDBPyConnection, max_label_id: int | None = None,
                            seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``judge_fitness`` and ``fitness_differences`` of the same labels, with the labelled outputs
    loaded once and the per-model bootstraps run once (the same rows as the two calls apart)."""
    df = labelled_outputs(con, max_label_id)
    per_model = judge_fitness(con, seed=seed, labelled=df)
    return per_model, fitness_differences(con, seed=seed, labelled=df, per_model=per_model)


REFRESH_EVERY = 25  # new labels between two refreshes of a page's judge fitness, at least ...
REFRESH_SHARE = 0.05  # ... and at most this share of the labels once there are many


def coarse_label_id(latest: int) -> int:
    """The label id a page computes judge fitness "as of": ``latest`` (the newest label id) rounded
    down to a multiple of a step: the largest 25 * 2^k (REFRESH_EVERY) that is at most 5%
    (REFRESH_SHARE) of ``latest``, 25 at least (25 up to id 999, 50 from 1,000, 100 from 2,000 ...),
    so the result lags ``latest`` by fewer than max(25, 5% of ``latest``) labels.

    Why: judge fitness takes seconds on a large store and moves little with one more label, while
    SMEs label continuously; a page cached on this id recomputes once per step, not on every label,
    and the result is exactly that of the labels up to this id (labels are never overwritten). The
    step's doubling at ids that are multiples of the new step keeps the result monotone: it never
    goes back to an older id as labels arrive. 0 below 25 labels."""
    latest = max(int(latest), 0)
    step = REFRESH_EVERY
    while 2 * step <= REFRESH_SHARE * latest:
        step *= 2
    return latest // step * step


def fitness_watermark(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(the coarse label id of ``coarse_label_id`` for the newest SME label, how many labels have
    an id up to it): what a page passes as ``max_label_id``, and the count it names ("as of N labels")."""
    latest = con.execute("SELECT coalesce(max(label_id), 0) FROM labels").fetchone()[0]
    coarse = coarse_label_id(latest)
    return coarse, con.execute("SELECT count(*) FROM labels WHERE label_id <= ?", [coarse]).fetchone()[0]


def _num(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "n/a"


def fitness_warnings(rows: list[dict]) -> list[str]:
    """One plain-text line per ``fitness_differences`` row that ``differs``, quoting the flagged
    error rate(s) and J, e.g. "judge-lenient on style: specificity 0.65 on support-legacy-v1 vs
    0.29 on support-nova-v2 (difference -0.36, 95% [-0.50, -0.21]); Youden's J 0.51 vs 0.27; its
    verdicts do not transport between the models". Names are data: the caller escapes the line for
    its context (safetext)."""
    out = []
    for r in rows:
        if not r.get("differs"):
            continue
        parts = [f"{m} {_num(r[f'{m}_baseline'])} on {r['baseline']} vs {_num(r[f'{m}_candidate'])} on "
                 f"{r['candidate']} (difference {r[f'{m}_difference']:+.2f}, 95% [{r[f'{m}_difference_lo']:+.2f}, "
                 f"{r[f'{m}_difference_hi']:+.2f}])" for m in r.get("differs_on") or FLAGGED_ON[:1]]
        out.append(f"{r['judge']} on {r['dimension']}: {'; '.join(parts)}; Youden's J {_num(r['j_baseline'])} vs "
                   f"{_num(r['j_candidate'])}; its verdicts do not transport between the models")
    return out


def _with_interval(value: float, lo: float, hi: float, sign: bool = False) -> str:
    """'0.62 [0.41, 0.80]' ('+' signs for differences); 'n/a' when undefined (no 'nan' or 'None')."""
    if not np.isfinite(value):
        return "n/a"
    f = "{:+.2f}" if sign else "{:.2f}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f.format(value) + " [n/a]"
    return f"{f.format(value)} [{f.format(lo)}, {f.format(hi)}]"


def fitness_table(rows: list[dict]) -> list[dict]:
    """``judge_fitness`` rows for display: human headers, each measure as "estimate [95% interval]"
    text, the band; compact enough to fit a wide page (the model's role is its place: the baseline
    comes first and is marked "(baseline)"). Names are data: the caller escapes them (``safetext.rows``)."""
    return [{"Judge": r["judge"], "Dimension": r["dimension"], "Model": tables.model_with_role(r),
             "Labelled (SME pass / fail)": f"{r['n']:,} ({r['n_sme_pass']:,} / {r['n_sme_fail']:,})",
             **{name: _with_interval(r[k], r[f"{k}_lo"], r[f"{k}_hi"])
                for name, k in [("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                                ("Youden's J", "youden_j"), ("Kappa", "kappa")]},
             "Fitness band": r["band"]} for r in rows]


def differences_table(rows: list[dict]) -> list[dict]:
    """``fitness_differences`` rows for display: candidate minus baseline, "difference [95%
    interval]" per measure, and whether (and on what) the judge's quality differs."""
    return [{"Judge": r["judge"], "Dimension": r["dimension"], "Candidate": r["candidate"],
             **{name: _with_interval(r[f"{k}_difference"], r[f"{k}_difference_lo"], r[f"{k}_difference_hi"], sign=True)
                for name, k in [("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                                ("Youden's J", "j"), ("Kappa", "kappa")]},
             "Quality differs": ("yes: " + " and ".join(r["differs_on"])) if r["differs"] else "no"} for r in rows]
