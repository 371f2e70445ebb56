"""Pairwise projects first-class (issue #23): the win rate's cross-checks (judge-only, human-only
and PPI++ with the finite-population correction), label-row counts and the interval's name."""

from __future__ import annotations

import numpy as np
import pandas as pd

from calib.data import ingest, store
from calib.stats import engine


def _pair_project(con, tmp_path, n_items: int = 300, labelled: int = 60, seed: int = 0, agree: float = 0.8) -> float:
    """Synthetic pairwise-only project: the candidate wins 60% of pairs; a judge agrees with the SME
    80% of the time; ``labelled`` pairs compared by an SME, chosen uniformly. Returns the true win rate."""
    rng = np.random.default_rng(seed)
    ids = [f"i{k:04d}" for k in range(n_items)]
    win = (rng.random(n_items) < 0.6).astype(float)
    judge = np.where(rng.random(n_items) < agree, win, 1 - win)
    pd.concat([pd.DataFrame({"item_id": ids, "model": m, "prompt": "p", "output": m}) for m in ("old", "new")]
              ).to_csv(tmp_path / "o.csv", index=False)
    ingest.import_file(con, tmp_path / "o.csv", baseline="old")
    pd.DataFrame({"item_id": ids, "baseline": "old", "candidate": "new", "pref:j1:overall": judge}
                 ).to_csv(tmp_path / "p.csv", index=False)
    ingest.import_file(con, tmp_path / "p.csv")
    lab = rng.choice(n_items, labelled, replace=False)
    pd.DataFrame({"item_id": [ids[i] for i in lab], "baseline": "old", "candidate": "new", "dimension": "overall",
                  "preference": ["candidate" if win[i] else "baseline" for i in lab], "annotator": "sme"}
                 ).to_csv(tmp_path / "l.csv", index=False)
    ingest.import_labels(con, tmp_path / "l.csv")
    return float(win.mean())


def test_pairwise_fit_has_win_rate_cross_checks_counts_and_names_its_interval(con, tmp_path):
    truth = _pair_project(con, tmp_path)
    fit = engine.fit_project(con, "fast", record=False)
    checks = {c["method"]: c for c in fit["cross_checks"] if c.get("estimand") == "win rate"}
    assert {"human-only", "ppi++", "judge-only:j1"} <= set(checks)
    lab = con.execute("SELECT avg(CASE preference WHEN 'candidate' THEN 1.0 WHEN 'tie' THEN 0.5 ELSE 0 END), "
                      "count(*) FROM pair_labels").fetchone()
    h = checks["human-only"]
    assert abs(h["mean"] - lab[0]) < 1e-9 and h["n"] == lab[1] == 60  # a uniform sample: the plain mean
    # the finite-population correction: the normal interval shrunk by sqrt(1 - n / N)
    y = np.array(con.execute("SELECT CASE preference WHEN 'candidate' THEN 1.0 ELSE 0 END FROM pair_labels").fetchall(), float)[:, 0]
    se = y.std(ddof=1) / np.sqrt(len(y))
    assert abs((h["hi"] - h["lo"]) / 2 - 1.959964 * se * np.sqrt(1 - 60 / 300)) < 1e-6
    assert checks["ppi++"]["hi"] - checks["ppi++"]["lo"] <= (h["hi"] - h["lo"]) + 1e-9  # an informative judge helps
    assert checks["judge-only:j1"]["lo"] is None
    for c in ("human-only", "ppi++"):
        assert checks[c]["lo"] - 0.15 < truth < checks[c]["hi"] + 0.15  # about right (coverage: bench)
    assert fit["n_label_rows"] == 60
    assert fit["interval_kind"] == "confidence"
    assert "confidence intervals (design-based)" in engine.interval_words(fit)


def test_status_lists_side_by_side_judges(con, tmp_path):
    _pair_project(con, tmp_path, n_items=40, labelled=5)
    st = store.status(con)
    assert [(j["judge"], j["kind"]) for j in st["judges"]] == [("j1", "side by side")]
    assert st["pair_judge_prefs"] == 40 and st["judge_scores"] == 0


def test_interval_kind_says_credible_while_the_model_alone_speaks():
    assert engine.interval_kind({"estimator": {"correctness": {"estimator": "model"}}, "preference": []}) == "credible"
    assert engine.interval_kind({"estimator": {"a": {"estimator": "design"}, "b": {"estimator": "model"}}}) == "mixed"
    assert engine.interval_kind({"estimator": {}, "preference": [{"estimator": {"estimator": "design"}}]}) == "confidence"


def test_judges_worth_is_the_squared_width_ratio_and_above_one_for_an_informative_judge(con, tmp_path):
    """A known truth: an 80%-agreeing judge is worth more than one label per label; a judge that
    is a coin flip is worth about one (the calibrated estimate is no narrower than human-only)."""
    from calib.insight import worth

    _pair_project(con, tmp_path, n_items=400, labelled=80)
    fit = engine.fit_project(con, "fast", record=False)
    (row,) = worth.judges_worth(fit)
    p = fit["preference"][0]
    h = [c for c in fit["cross_checks"] if c["method"] == "human-only"][0]
    assert abs(row["worth"] - ((h["hi"] - h["lo"]) / (p["hi"] - p["lo"])) ** 2) < 1e-9
    assert row["worth_lo"] < row["worth"] < row["worth_hi"] and row["labels"] == 80
    assert row["worth"] > 1.2
    assert "labels count as about" in worth.worth_sentence(row)


def test_a_coin_flip_judge_is_worth_about_one_label_per_label(con, tmp_path):
    from calib.insight import worth

    _pair_project(con, tmp_path, n_items=400, labelled=80, agree=0.5)
    (row,) = worth.judges_worth(engine.fit_project(con, "fast", record=False))
    assert row["worth"] < 1.3 and row["worth_lo"] < 1
    assert "not paying for themselves" in worth.worth_sentence(row) or "not yet clear" in worth.worth_sentence(row)


def test_worth_sentence_prints_hostile_names_on_one_line_without_control_characters():
    from calib.insight import worth

    row = {"dimension": "dim\x1b]0;owned\x07\nforged line", "candidate": "c\r\nx", "labels": 10, "worth": 1.0,
           "worth_lo": 0.5, "worth_hi": 2.0, "effective_labels": 10.0}
    line = worth.worth_sentence(row)
    assert "\x1b" not in line and "\n" not in line and "\r" not in line and "\x07" not in line
