"""Judge fitness per model (issue 15 part 2): checked against the demo's hidden truth.

The demo's ``judge-lenient`` is lenient toward the candidate only (calib/data/demo.py), so its
specificity truly drops on the candidate (by 0.2-0.4); ``judge-strict`` is the same function of the
latent quality for both models, so its error rates barely move (under 0.09; ``_truth`` computes
them from the hidden SME verdicts of every output).
"""

from __future__ import annotations

import math
import pathlib
import sys

import duckdb
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from calib import safetext as safe
from calib.data import cells, demo, ingest, store
from calib.insight import fitness
from calib.review import simulate

ROOT = pathlib.Path(__file__).resolve().parent.parent
N_SIMULATED = 250  # labels from the simulated SME: the lenient judge stands out on style (difference's upper bound -0.21 at 250, -0.25 at 400)
METRICS = ["sensitivity", "specificity", "youden_j", "kappa"]


def _truth(con) -> dict[tuple[str, str, str], dict[str, float]]:
    """Each judge's true sensitivity, specificity, J and kappa per (judge, dimension, model) over
    ALL the demo's outputs (hidden SME verdicts), the quantities the labelled sample estimates."""
    cells.ensure_cells(con)
    df = con.execute("""SELECT t.model, t.dimension, j.judge, j.score >= k.threshold AS jp, t.verdict AS sp
                        FROM sim_truth t JOIN judge_scores j USING (item_id, model, dimension)
                        JOIN judge_scale k ON k.judge = j.judge AND k.dimension = j.dimension""").fetch_df()
    out = {}
    for (judge, dim, model), g in df.groupby(["judge", "dimension", "model"]):
        jp, sp = g.jp.to_numpy(bool), g.sp.to_numpy(bool)
        out[(judge, dim, model)] = {k: float(v) for k, v in fitness._metrics(fitness._confusion(jp, sp).sum(0)).items()}
    return out


def _label_uniform(con, n_items: int) -> None:
    """SME labels (the hidden truth) for the first ``n_items`` items: a uniform sample, since the
    demo's items are generated independently; labelled outside the queue (weight 1/pi uniform)."""
    con.execute(f"""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
                    SELECT item_id, model, dimension, verdict, kind, 'sim', current_timestamp, 'test' FROM sim_truth
                    WHERE item_id IN (SELECT item_id FROM items ORDER BY item_id LIMIT {n_items})""")


@pytest.fixture(scope="module")
def simulated():
    """The demo (2,000 items) after the simulated SME labelled N_SIMULATED items through the queue."""
    c = duckdb.connect()
    store.migrate(c)
    demo.load_demo(c, 2000, seed=1)
    simulate.simulate_sme(c, N_SIMULATED)
    yield c
    c.close()


def test_finds_the_judge_lenient_to_the_candidate_only(simulated):
    """The flagged judge is the one whose error rates truly move on the candidate; judge-strict is
    not flagged; flagged differences point the way the hidden truth does."""
    rows = fitness.fitness_differences(simulated)
    truth = _truth(simulated)
    flagged = {r["judge"] for r in rows if r["differs"]}
    assert "judge-lenient" in flagged
    assert "judge-strict" not in flagged
    for r in rows:
        true_diff = {m: truth[(r["judge"], r["dimension"], r["candidate"])][m]
                     - truth[(r["judge"], r["dimension"], r["baseline"])][m] for m in METRICS}
        if r["judge"] == "judge-lenient":  # the premise: the lenient judge's specificity truly drops
            assert true_diff["specificity"] < -0.15
        for m in r["differs_on"]:
            assert np.sign(r[f"{m}_difference"]) == np.sign(true_diff[m])
            assert r[f"{m}_difference_lo"] > 0 or r[f"{m}_difference_hi"] < 0
            assert abs(r[f"{m}_difference"]) >= fitness.MATERIAL
    warnings = fitness.fitness_warnings(rows)
    assert any(w.startswith("judge-lenient on ") for w in warnings)
    assert not any(w.startswith("judge-strict") for w in warnings)
    assert all("do not transport" in w for w in warnings)
    assert len(warnings) == sum(r["differs"] for r in rows)


def test_rows_keys_intervals_and_bands(simulated):
    rows = fitness.judge_fitness(simulated)
    assert len(rows) == 3 * 3 * 2  # judges x dimensions x models
    for r in rows:
        assert r["role"] == ("baseline" if r["model"] == demo.BASELINE else "candidate")
        assert r["n"] == r["n_sme_pass"] + r["n_sme_fail"] > 0
        for k in METRICS:
            if math.isfinite(r[k]):
                assert r[f"{k}_lo"] <= r[k] + 1e-9 and r[k] <= r[f"{k}_hi"] + 1e-9, (r["judge"], r["dimension"], k)
        assert math.isclose(r["youden_j"], r["sensitivity"] + r["specificity"] - 1)
        assert r["band"] == fitness.band(r["kappa"], r["n"], r["n_sme_pass"], r["n_sme_fail"])
        assert r["band"] in {"exploration only", "monitoring", "release gating", "too few labels"}
    diffs = fitness.fitness_differences(simulated)
    by = {(r["judge"], r["dimension"], r["model"]): r for r in rows}
    for d in diffs:
        base, cand = by[(d["judge"], d["dimension"], d["baseline"])], by[(d["judge"], d["dimension"], d["candidate"])]
        assert math.isclose(d["j_difference"], cand["youden_j"] - base["youden_j"])
        assert math.isclose(d["kappa_difference"], cand["kappa"] - base["kappa"])
        assert d["kappa_difference_lo"] <= d["kappa_difference"] <= d["kappa_difference_hi"]
        for k in ("j", "sensitivity", "specificity"):
            assert d[f"{k}_difference_lo"] <= d[f"{k}_difference"] <= d[f"{k}_difference_hi"]
            assert 0 <= d[f"{k}_p_value"] <= 1
        assert d["differs"] == bool(d["differs_on"])
    assert fitness.judge_fitness(simulated) == rows  # seeded: the same data give the same intervals


def test_bands_follow_the_convention():
    assert fitness.band(0.75, 100, 50, 50) == "release gating"
    assert fitness.band(0.70, 100, 50, 50) == "release gating"
    assert fitness.band(0.55, 100, 50, 50) == "monitoring"
    assert fitness.band(0.39, 100, 50, 50) == "exploration only"
    assert fitness.band(0.9, fitness.MIN_LABELS - 1, 10, 9) == "too few labels"
    assert fitness.band(0.9, 100, 100 - fitness.MIN_PER_CLASS + 1, fitness.MIN_PER_CLASS - 1) == "too few labels"
    assert fitness.band(float("nan"), 100, 50, 50) == "too few labels"


def test_early_watermark_has_too_few_labels(simulated):
    first = simulated.execute("SELECT max(label_id) FROM (SELECT label_id FROM labels ORDER BY label_id LIMIT 30)").fetchone()[0]
    rows = fitness.judge_fitness(simulated, max_label_id=first)
    assert rows and all(r["n"] < fitness.MIN_LABELS and r["band"] == "too few labels" for r in rows)
    assert not any(r["differs"] for r in fitness.fitness_differences(simulated, max_label_id=first))


def test_intervals_cover_the_truth_across_seeds():
    """A simulation with the hidden truth: over 4 demo projects with 300 uniformly labelled items,
    the 95% intervals (per model and of the differences) cover the true values about 95% of the
    time (>= 85% allows for 4 projects' worth of noise); judge-lenient is flagged in every project,
    judge-strict in none. (bench/fitness_flags.py measures these rates over more projects.)"""
    hits, total, flagged = 0, 0, []
    for seed in range(1, 5):
        c = duckdb.connect()
        store.migrate(c)
        demo.load_demo(c, 2000, seed=seed)
        _label_uniform(c, 300)
        truth = _truth(c)
        for r in fitness.judge_fitness(c):
            t = truth[(r["judge"], r["dimension"], r["model"])]
            for k in METRICS:
                if math.isfinite(r[f"{k}_lo"]):
                    total += 1
                    hits += r[f"{k}_lo"] <= t[k] <= r[f"{k}_hi"]
        diffs = fitness.fitness_differences(c)
        for d in diffs:
            t = {k: truth[(d["judge"], d["dimension"], d["candidate"])][m] - truth[(d["judge"], d["dimension"], d["baseline"])][m]
                 for k, m in [("j", "youden_j"), ("kappa", "kappa"), ("sensitivity", "sensitivity"),
                              ("specificity", "specificity")]}
            for k in t:
                if math.isfinite(d[f"{k}_difference_lo"]):
                    total += 1
                    hits += d[f"{k}_difference_lo"] <= t[k] <= d[f"{k}_difference_hi"]
        flagged.append({d["judge"] for d in diffs if d["differs"]})
        c.close()
    assert total > 200 and hits / total >= 0.85, (hits, total)
    assert all("judge-lenient" in f and "judge-strict" not in f for f in flagged), flagged


def _same(a: list[dict], b: list[dict]) -> bool:
    """Rows equal value for value (nan equal to nan: the same bits, not merely close)."""
    def norm(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v
    return [{k: norm(v) for k, v in r.items()} for r in a] == [{k: norm(v) for k, v in r.items()} for r in b]


def test_a_loaded_frame_gives_the_same_rows(simulated):
    """Passing the labelled outputs (and the per-model rows) in changes nothing, bit for bit: same
    seed, same draws; and so does the combined call the pages and the report use."""
    cut = simulated.execute("SELECT max(label_id) FROM (SELECT label_id FROM labels ORDER BY label_id "
                            "LIMIT 2000)").fetchone()[0]
    for max_id in (None, cut):
        per_model = fitness.judge_fitness(simulated, max_id, seed=3)
        diffs = fitness.fitness_differences(simulated, max_id, seed=3)
        df = fitness.labelled_outputs(simulated, max_id)
        assert _same(fitness.judge_fitness(simulated, seed=3, labelled=df), per_model)
        assert _same(fitness.fitness_differences(simulated, seed=3, labelled=df), diffs)
        assert _same(fitness.fitness_differences(simulated, seed=3, labelled=df, per_model=per_model), diffs)
        both = fitness.fitness_and_differences(simulated, max_id, seed=3)
        assert _same(both[0], per_model) and _same(both[1], diffs)


def test_labelled_outputs_come_in_a_fixed_order(simulated):
    """The bootstraps resample rows by position: a parallel join's row order would change the
    intervals from run to run, so the frame is sorted by its key."""
    df = fitness.labelled_outputs(simulated)
    key = list(zip(df.item_id, df.model, df.dimension, df.judge))
    assert key == sorted(key) and len(set(key)) == len(key)


def test_coarse_label_id_refreshes_every_25_or_5_percent():
    """Rounded down to a step of 25 labels, or 25 * 2^k at most 5% of the labels once there are
    many: never ahead of the newest label, never behind by max(25, 5%) or more, never backwards."""
    assert [fitness.coarse_label_id(i) for i in (0, 24, 25, 49, 50, 999)] == [0, 0, 25, 25, 50, 975]
    assert [fitness.coarse_label_id(i) for i in (1000, 1049, 1050, 2099, 2100, 5300)] == [1000, 1000, 1050, 2000,
                                                                                          2100, 5200]
    prev = 0
    for latest in range(0, 50_000, 7):
        c = fitness.coarse_label_id(latest)
        assert prev <= c <= latest and latest - c < max(fitness.REFRESH_EVERY, fitness.REFRESH_SHARE * latest)
        prev = c
    assert len({fitness.coarse_label_id(i) for i in range(2000, 3000)}) == 10  # one refresh per 100 labels there


def test_fitness_watermark_is_as_of_a_label(simulated):
    coarse, n = fitness.fitness_watermark(simulated)
    latest, total = simulated.execute("SELECT max(label_id), count(*) FROM labels").fetchone()
    assert coarse == fitness.coarse_label_id(latest) and 0 < n <= total
    assert n == simulated.execute("SELECT count(*) FROM labels WHERE label_id <= ?", [coarse]).fetchone()[0]


def _paired_differences(rng, n: int, spec_candidate: float, draws: int) -> tuple[float, float, float, float]:
    """One simulated project of ``n`` items, both models labelled: SMEs pass 60%; the judge's
    sensitivity is 0.8 on both models, its specificity 0.7 on the baseline and ``spec_candidate`` on
    the candidate. Returns the specificity difference's estimate, 95% interval and p-value, computed
    as fitness_differences does (items resampled, both models together)."""
    inds, est = [], []
    for spec in (0.7, spec_candidate):
        sp = rng.random(n) < 0.6
        jp = np.where(sp, rng.random(n) < 0.8, rng.random(n) >= spec)
        ind = fitness._confusion(jp, sp)
        inds.append(ind)
        est.append(fitness._metrics(ind.sum(0))["specificity"])
    bb, bc = (fitness._metrics(c) for c in fitness._boot_counts(rng, inds, draws))
    d = bc["specificity"] - bb["specificity"]
    lo, hi = fitness._interval(d)
    return est[1] - est[0], lo, hi, fitness._p_value(est[1] - est[0], d)


def test_bootstrap_covers_a_known_difference_and_p_values_are_uniform_without_one():
    """The bootstrap (a known truth, no store): the 95% interval of a true specificity drop of 0.2
    covers -0.2 in about 95% of projects; with no difference, the p-values are about uniform (5%
    under 0.05, half under 0.5), so the Benjamini-Hochberg flags keep their false discovery rate."""
    rng = np.random.default_rng(11)
    covered = [lo <= -0.2 <= hi for _, lo, hi, _ in (_paired_differences(rng, 300, 0.5, 500) for _ in range(200))]
    assert 0.9 <= np.mean(covered) <= 0.99, np.mean(covered)
    p = np.array([_paired_differences(rng, 300, 0.7, 500)[3] for _ in range(300)])
    assert 0.01 <= np.mean(p < 0.05) <= 0.1 and 0.4 <= np.mean(p < 0.5) <= 0.6, (np.mean(p < 0.05), np.mean(p < 0.5))
    assert 0.1 <= np.mean(p < 0.2) <= 0.3


def test_empty_and_pairwise_only_projects_give_nothing(tmp_path):
    c = store.connect(tmp_path / "empty.duckdb")
    assert fitness.judge_fitness(c) == [] and fitness.fitness_differences(c) == []
    assert fitness.fitness_warnings([]) == []
    c.close()
    c = store.connect(tmp_path / "unlabelled.duckdb")
    demo.load_demo(c, 50, seed=1)
    assert fitness.judge_fitness(c) == [] and fitness.fitness_differences(c) == []
    c.close()
    c = store.connect(tmp_path / "pairwise.duckdb")  # outputs without any pointwise judge
    pd.DataFrame({"item_id": ["a", "a", "b", "b"], "model": ["m1", "m2", "m1", "m2"], "prompt": "p",
                  "output": ["x", "y", "z", "w"]}).to_csv(tmp_path / "o.csv", index=False)
    ingest.import_file(c, tmp_path / "o.csv", baseline="m1")
    assert fitness.judge_fitness(c) == [] and fitness.fitness_differences(c) == []
    c.close()


def test_several_candidates(tmp_path):
    """One row per candidate; a candidate identical to the first one gets the same estimates."""
    data = demo.generate(400, seed=4)
    third = data.outputs[data.outputs.model == demo.CANDIDATE].assign(model="support-nova-v3")
    pd.concat([data.outputs, third]).to_parquet(tmp_path / "o.parquet", index=False)
    c = store.connect(tmp_path / "multi.duckdb")
    ingest.import_file(c, tmp_path / "o.parquet", baseline=demo.BASELINE)
    assert store.get_settings(c)["candidates"] == [demo.CANDIDATE, "support-nova-v3"]
    truth = pd.concat([data.truth, data.truth[data.truth.model == demo.CANDIDATE].assign(model="support-nova-v3")])
    c.register("truth_df", truth)
    c.execute("""INSERT INTO labels (item_id, model, dimension, verdict, kind, annotator, created_at, source)
                 SELECT item_id, model, dimension, verdict, kind, 'sim', current_timestamp, 'test' FROM truth_df""")
    rows = fitness.fitness_differences(c)
    assert len(rows) == 2 * 3 * 3
    by = {}
    for r in rows:
        by.setdefault((r["judge"], r["dimension"]), {})[r["candidate"]] = r
    for pair in by.values():
        a, b = pair[demo.CANDIDATE], pair["support-nova-v3"]
        for k in ("kappa_difference", "j_difference", "sensitivity_difference", "specificity_difference"):
            assert math.isclose(a[k], b[k])
    assert {r["role"] for r in fitness.judge_fitness(c)} == {"baseline", "candidate"}
    c.close()


def test_hostile_names_pass_through_as_data(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import hostile

    names = hostile.build(tmp_path / "hostile.duckdb", port=9)
    c = store.connect(tmp_path / "hostile.duckdb")
    rows = fitness.judge_fitness(c)
    assert {r["judge"] for r in rows} == set(names["judges"])
    assert {r["model"] for r in rows} == set(names["models"])
    diffs = fitness.fitness_differences(c)
    assert diffs and {d["candidate"] for d in diffs} == {names["models"][1]}
    flagged = dict(diffs[0], differs=True)  # a warning line keeps the names exactly as they are
    line = fitness.fitness_warnings([flagged])[0]
    assert flagged["judge"] in names["judges"] and flagged["dimension"] in names["dims"]
    assert line.startswith(f"{flagged['judge']} on {flagged['dimension']}: ")
    assert names["models"][0] in line and names["models"][1] in line
    shown = safe.md(line)  # what the pages show: every marker escaped
    for marker in hostile.MD_MARKERS:
        assert all(i > 0 and shown[i - 1] == "\\" for i in hostile._occurrences(shown, marker)), marker
    table = fitness.fitness_table(rows) + fitness.differences_table(diffs)
    assert any(names["judges"][0] == t["Judge"] for t in table)
    c.close()


# --------------------------------------------------------------------------- pages


@pytest.fixture
def labelled_db(tmp_path, monkeypatch):
    """A demo database (2,000 items) with 600 uniformly labelled items and a signed-in lead."""
    from calib.review import users

    path = tmp_path / "fitness.duckdb"
    con = store.connect(path)
    demo.load_demo(con, 2000, seed=1)
    _label_uniform(con, 600)
    users.add_user(con, "lea", "lead", "lea-password")
    con.close()
    monkeypatch.setenv("TIEBREAK_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def _as_lead(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120)
    at.session_state["auth_user"], at.session_state["auth_role"] = "lea", "lead"
    at.run()
    assert not at.exception, at.exception
    return at


def test_judges_page_shows_fitness_per_model(labelled_db):
    at = _as_lead("3_Judges.py")
    heads = [s.value for s in at.subheader]
    assert "Judge fitness per model" in heads and "Does the judge's quality differ between the models?" in heads
    tables = [t.value for t in at.dataframe]
    per_dimension = [t for t in tables if "Fitness band" in t.columns]  # one table per dimension (fits the width)
    assert len(per_dimension) == 3 and all("Dimension" not in t.columns for t in per_dimension)
    per_model = pd.concat(per_dimension)
    assert len(per_model) == 3 * 3 * 2
    assert {"Sensitivity", "Specificity", "Youden's J", "Kappa", "Labelled (SME pass / fail)"} <= set(per_model.columns)
    assert per_model["Sensitivity"].str.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]").all()
    assert not per_model.astype(str).apply(lambda col: col.str.contains("nan|None")).any().any()
    assert any("convention" in c.value for c in at.caption)
    assert any(c.value.startswith("Judge fitness as of 3,600 labels") for c in at.caption)  # 600 items x 2 x 3
    warned = [w.value for w in at.warning if "do not transport" in w.value]
    assert any("judge\\-lenient" in w for w in warned) and not any("judge\\-strict" in w for w in warned)


def test_decision_page_warns_about_the_lenient_judge(labelled_db):
    at = _as_lead("2_Decision.py")
    warned = [w.value for w in at.warning if "do not transport" in w.value]
    assert any("judge\\-lenient" in w for w in warned) and not any("judge\\-strict" in w for w in warned)
