"""Phase 1 of the two-phase design: the judged sample (draw, extend, pi1, cells' n_pop, the SME
queue drawing from judged items only, ``judge run --sample``, and the import refusal)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from calib import cli
from calib.data import cells, demo, ingest, phase1, store
from calib.errors import InputError, TiebreakError

OFFLINE = Path(__file__).resolve().parent.parent / "data" / "judges.offline.toml"


@pytest.fixture
def proj(tmp_path):
    """A 300-item demo project (every item judged by the demo judges: stray scores once sampled)."""
    c = store.connect(tmp_path / "p.duckdb")
    demo.load_demo(c, 300, seed=4)
    yield c
    c.close()


def _sample(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT item_id FROM judge_sample").fetchall()}


# --------------------------------------------------------------------------- drawing


def test_draw_extend_idempotent_and_deterministic(proj, tmp_path):
    assert phase1.is_census(proj) and phase1.item_inclusion(proj).empty
    census = phase1.population_counts(proj)
    assert (census["N"] == census["n1"]).all() and census["N"].sum() == 300
    r1 = phase1.draw_sample(proj, n=40, strata="segment", seed=7)
    assert (r1.batch, r1.judged, r1.population, sum(r1.added.values())) == (1, 40, 300, 40)
    first = _sample(proj)
    assert len(first) == 40 and not phase1.is_census(proj)
    again = phase1.draw_sample(proj, n=40, strata="segment", seed=7)  # same command: resumes, adds nothing
    assert (again.batch, again.added, again.judged) == (1, {}, 40)
    assert phase1.draw_sample(proj, n=10, strata="segment").added == {}  # smaller: nothing removed
    r2 = phase1.draw_sample(proj, n=100, strata="segment", seed=7)
    assert (r2.batch, r2.judged, sum(r2.added.values())) == (2, 100, 60)
    assert first <= _sample(proj) and len(_sample(proj)) == 100  # extended, never removed, no duplicate
    # the same calls on a copy of the project draw the same items
    other = store.connect(tmp_path / "q.duckdb")
    demo.load_demo(other, 300, seed=4)
    phase1.draw_sample(other, n=40, strata="segment", seed=7)
    assert _sample(other) == first
    phase1.draw_sample(other, n=100, strata="segment", seed=7)
    assert _sample(other) == _sample(proj)
    other.close()
    # another seed, another sample
    third = store.connect(tmp_path / "r.duckdb")
    demo.load_demo(third, 300, seed=4)
    phase1.draw_sample(third, n=40, strata="segment", seed=8)
    assert _sample(third) != first
    third.close()


def test_bad_arguments_are_one_line_errors_and_change_nothing(proj):
    for kwargs in ({"n": 0}, {"n": -3}, {"fraction": 0.0}, {"fraction": 1.5}, {"fraction": float("nan")},
                   {"n": 5, "strata": "topic"}, {"n": 5, "allocation": "optimal"}, {}, {"n": 5, "fraction": 0.1}):
        with pytest.raises(TiebreakError) as e:
            phase1.draw_sample(proj, **kwargs)
        assert "\n" not in str(e.value)
    assert phase1.is_census(proj)
    phase1.draw_sample(proj, n=30, strata="segment")
    with pytest.raises(TiebreakError, match="stratified by segment"):
        phase1.draw_sample(proj, n=60)  # extending must keep the strata


def test_pi1_per_stratum_and_minimum_two(proj, tmp_path):
    rep = phase1.draw_sample(proj, fraction=0.1, strata="segment", seed=1)
    counts = phase1.population_counts(proj).set_index("stratum")
    inc = phase1.item_inclusion(proj)
    assert len(inc) == rep.judged == counts["n1"].sum()
    seg = dict(proj.execute("SELECT item_id, segment FROM items").fetchall())
    assert (inc["stratum"] == inc["item_id"].map(seg)).all()
    for h, g in inc.groupby("stratum"):
        assert np.allclose(g["pi1"], counts.loc[h, "n1"] / counts.loc[h, "N"])
        assert (1 / g["pi1"]).sum() == pytest.approx(counts.loc[h, "N"])  # expands to the stratum
    assert (counts["n1"] >= 2).all()
    # a tiny sample still gets two per non-empty stratum (so more than asked, and said)
    p = store.connect(tmp_path / "tiny.duckdb")
    demo.load_demo(p, 200, seed=2)
    tiny = phase1.draw_sample(p, n=3, strata="segment")
    S = p.execute("SELECT count(DISTINCT segment) FROM items").fetchone()[0]
    assert tiny.judged == 2 * S and any("at least 2" in n for n in tiny.notes)
    assert (phase1.population_counts(p)["n1"] == 2).all()
    p.close()


def test_unstratified_sample_is_uniform_by_simulation():
    """Each item's frequency over seeds matches n/N, and Horvitz-Thompson totals of a known
    item-level value are unbiased with Neyman-allocated (unequal) probabilities across strata."""
    con = duckdb.connect()  # in memory (many small transactions): a migrated project
    store.migrate(con)
    demo.load_demo(con, 120, seed=3)
    ids = [r[0] for r in con.execute("SELECT item_id FROM items ORDER BY item_id").fetchall()]
    value = {i: (k % 7) + (5.0 if k % 3 == 0 else 0.0) for k, i in enumerate(ids)}  # known truth
    truth = sum(value.values())
    hits = dict.fromkeys(ids, 0)
    ht_uniform, ht_neyman = [], []
    reps = 50
    for seed in range(reps):
        con.execute("DELETE FROM judge_sample")
        phase1.draw_sample(con, n=30, seed=seed)
        inc = phase1.item_inclusion(con)
        for i in inc["item_id"]:
            hits[i] += 1
        ht_uniform.append(sum(value[i] / p for i, p in zip(inc["item_id"], inc["pi1"])))
        if seed < 20:  # a judged first batch of 2 per segment, then Neyman-allocated (unequal pi1)
            con.execute("DELETE FROM judge_sample")
            phase1.draw_sample(con, n=12, strata="segment", seed=seed)
            phase1.draw_sample(con, n=40, strata="segment", allocation="neyman", seed=seed)
            inc = phase1.item_inclusion(con)
            ht_neyman.append(sum(value[i] / p for i, p in zip(inc["item_id"], inc["pi1"])))
    freq = np.array(list(hits.values())) / reps
    assert abs(freq.mean() - 30 / 120) < 1e-9  # exactly n per draw
    # binomial(50, 0.25): sd 0.061 per item; the spread over items matches it (no item favoured)
    assert 0.04 < freq.std() < 0.085 and np.abs(freq - 0.25).max() < 0.27
    for est in (ht_uniform, ht_neyman):
        est = np.asarray(est)
        assert abs(est.mean() - truth) < 4 * est.std(ddof=1) / np.sqrt(len(est))
    con.close()


def _two_segment_project(con, folder: Path, judged: bool = True) -> None:
    """400 items: segment 'calm' (judge scores nearly constant) and 'wild' (widely spread)."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(400):
        seg = "calm" if k < 200 else "wild"
        score = 50 + (rng.normal(0, 0.5) if seg == "calm" else rng.normal(0, 25))
        for m in ("base", "cand"):
            rows.append({"item_id": f"i{k:03d}", "model": m, "segment": seg, "prompt": "p", "output": "o",
                         **({"judge:j:quality": float(np.clip(score, 0, 100))} if judged else {})})
    f = folder / "two.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    ingest.import_file(con, f)


def test_neyman_allocates_to_the_spread_stratum_and_falls_back_without_scores(tmp_path):
    con = store.connect(tmp_path / "n.duckdb")
    _two_segment_project(con, tmp_path)
    first = phase1.draw_sample(con, n=40, strata="segment")
    assert first.added == {"calm": 20, "wild": 20}  # proportional: equal strata
    ext = phase1.draw_sample(con, n=100, strata="segment", allocation="neyman")
    assert ext.allocation == "neyman"
    assert ext.added.get("wild", 0) >= 5 * ext.added.get("calm", 0)  # S_wild / S_calm ~ 50
    counts = phase1.population_counts(con).set_index("stratum")
    assert counts.loc["wild", "n1"] > counts.loc["calm", "n1"] >= 20
    con.close()
    bare = store.connect(tmp_path / "b.duckdb")
    _two_segment_project(bare, tmp_path, judged=False)
    rep = phase1.draw_sample(bare, n=40, strata="segment", allocation="neyman")
    assert rep.allocation == "proportional" and rep.added == {"calm": 20, "wild": 20}
    assert any("nothing is judged yet" in n for n in rep.notes)
    bare.close()


# --------------------------------------------------------------------------- cells and the queue


def test_cells_hold_the_judged_sample_with_n_pop(proj):
    cells.ensure_cells(proj)
    n, n_pop = proj.execute("SELECT sum(n), sum(n_pop) FROM model_cells WHERE dimension = 'correctness'").fetchone()
    assert n == n_pop == 600  # a census: n_pop = n (300 items x 2 models)
    assert proj.execute("SELECT bool_and(n_pop = n) FROM pair_cells").fetchone()[0]
    phase1.draw_sample(proj, n=60, strata="segment", seed=2)
    assert cells.ensure_cells(proj)  # the sample changes the cells
    sample = _sample(proj)
    in_cells = {r[0] for r in proj.execute("SELECT DISTINCT item_id FROM output_cells").fetchall()}
    assert in_cells == sample  # stray scores of the other 240 items are ignored
    assert {r[0] for r in proj.execute("SELECT item_id FROM item_disagreement").fetchall()} == sample
    assert {r[0] for r in proj.execute("SELECT item_id FROM item_pair_cells").fetchall()} == sample
    for model_, nn, npop in proj.execute("SELECT model, sum(n), sum(n_pop) FROM model_cells "
                                         "WHERE dimension = 'correctness' GROUP BY model").fetchall():
        assert nn == 60 and npop == pytest.approx(300)  # each model's outputs expand to the population
    by_seg = dict(proj.execute("SELECT segment, sum(n_pop) FROM model_cells WHERE dimension = 'style' "
                               "GROUP BY segment").fetchall())
    N_h = dict(proj.execute("SELECT segment, 2 * count(*) FROM items GROUP BY segment").fetchall())
    assert by_seg == pytest.approx(N_h)
    assert proj.execute("SELECT sum(n), sum(n_pop) FROM pair_cells").fetchone() == (60, pytest.approx(300))
    assert not cells.ensure_cells(proj)
    phase1.draw_sample(proj, n=90, strata="segment", seed=2)  # an extension: rebuilt with the new items
    assert cells.ensure_cells(proj)
    assert proj.execute("SELECT count(DISTINCT item_id) FROM output_cells").fetchone()[0] == 90


def test_queue_draws_only_judged_items(proj):
    from calib.review import queue

    phase1.draw_sample(proj, n=50, strata="segment", seed=3)
    sample = _sample(proj)
    b = queue.refill(proj, 30, seed=1)
    assert b.selected > 0 and b.eligible == 50  # (item, candidate) units of judged items only
    queued = {r[0] for r in proj.execute("SELECT item_id FROM queue").fetchall()}
    assert queued and queued <= sample
    queue.queue_filtered(proj, segment=proj.execute("SELECT min(segment) FROM items").fetchone()[0])
    assert {r[0] for r in proj.execute("SELECT item_id FROM queue").fetchall()} <= sample
    # the queue still draws from judged items after labels arrive (the variance-reduction policy)
    from calib.review import simulate

    simulate.simulate_sme(proj, 20)
    assert {r[0] for r in proj.execute("SELECT item_id FROM labels").fetchall()} <= sample
    queue.refill(proj, 20, seed=2)
    assert {r[0] for r in proj.execute("SELECT item_id FROM queue").fetchall()} <= sample
    from calib.stats import engine

    fit = engine.fit_project(proj, "fast", record=False)  # the estimator reads the sample's cells
    assert {d["dimension"] for d in fit["diffs"]} == set(demo.DIMENSIONS)


def test_population_figures_come_from_every_output(proj):
    from calib.insight import dashboard

    before = dashboard.output_stats(proj)
    phase1.draw_sample(proj, n=30, seed=1)
    cells.ensure_cells(proj)
    after = dashboard.output_stats(proj)
    assert after == before and {r["outputs"] for r in after} == {300}
    st = store.status(proj)
    assert st["items"] == 300 and st["outputs"] == 600 and st["judged_sample"]["judged"] == 30


# --------------------------------------------------------------------------- the CLI


def _demo_file(tmp_path, items=60) -> Path:
    db = tmp_path / "c.duckdb"
    c = store.connect(db)
    demo.load_demo(c, items, seed=1)
    c.close()
    return db


def test_cli_judge_run_sample_judges_only_the_sample_and_resumes(tmp_path, capsys):
    db = _demo_file(tmp_path)
    args = ["judge", "run", "--db", str(db), "--config", str(OFFLINE)]
    assert cli.main(args + ["--sample", "12", "--strata", "segment", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("judged sample: 12 of 60 items (20.0%), batch 1, strata: stratified by segment (proportional)")
    assert "72 ok, 0 failed" in out  # 12 items x 2 models x 3 offline judges
    c = store.connect(db, read_only=True)
    judged = {r[0] for r in c.execute("SELECT DISTINCT item_id FROM judge_calls").fetchall()}
    assert judged == _sample(c) and len(judged) == 12
    c.close()
    assert cli.main(args + ["--sample", "12", "--strata", "segment", "--seed", "5"]) == 0  # the same: resumes
    out = capsys.readouterr().out
    assert "nothing added" in out and "0 ok, 0 failed, 72 already done" in out
    assert cli.main(args) == 0  # no --sample on a sampled project: the recorded sample only
    out = capsys.readouterr().out
    assert "judging the recorded sample only" in out and "0 ok, 0 failed, 72 already done" in out
    assert cli.main(args + ["--fraction", "0.4", "--batch"]) == 0  # extends (strata kept), then batch-judges
    out = capsys.readouterr().out
    assert "judged sample: 24 of 60 items (40.0%), batch 2" in out and "72 ok" in out
    assert cli.main(["status", "--db", str(db)]) == 0
    assert "judged sample: 24 of 60 items (40.0%), 2 batches, stratified by segment (proportional)" in capsys.readouterr().out
    assert cli.main(args + ["--sample", "0"]) == 2
    assert cli.main(args + ["--allocation", "neyman"]) == 2
    err = capsys.readouterr().err
    assert "--sample 0" in err and "go with --sample" in err


def test_census_status_says_nothing_new(tmp_path, capsys):
    db = _demo_file(tmp_path, 20)
    assert cli.main(["status", "--db", str(db)]) == 0
    assert "judged sample" not in capsys.readouterr().out


# --------------------------------------------------------------------------- import refusal


def _partial(tmp_path, judged_items=10, items=40, prob=None) -> tuple[Path, pd.DataFrame, list[str]]:
    d = demo.generate(items, seed=3).outputs
    jc = [c for c in d.columns if c.startswith("judge:")]
    ids = sorted(d["item_id"].unique())
    unscored = ids[judged_items:]
    d.loc[d["item_id"].isin(unscored), jc] = None
    if prob is not None:
        d["inclusion_prob"] = np.where(d["item_id"].isin(unscored), np.nan, prob)
    path = tmp_path / "partial.csv"
    d.to_csv(path, index=False)
    return path, d, unscored


def _counts(con) -> tuple:
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("items", "outputs", "judge_scores", "judge_sample", "settings"))


def test_partly_judged_import_is_refused_naming_file_row_and_column(tmp_path, capsys):
    path, d, unscored = _partial(tmp_path)
    con = store.connect(tmp_path / "i.duckdb")
    before = _counts(con)
    with pytest.raises(InputError) as e:
        ingest.import_file(con, path)
    first_row = int(np.flatnonzero(d["item_id"].isin(unscored).to_numpy())[0]) + 1
    assert (e.value.file, e.value.row, e.value.column) == (str(path), first_row, "judge:judge-strict:correctness")
    assert "inclusion_prob" in str(e.value) and "--judged-sample uniform" in str(e.value) and "\n" not in str(e.value)
    assert _counts(con) == before
    con.close()
    assert cli.main(["import", str(path), "--db", str(tmp_path / "new.duckdb"), "--new"]) == 2
    assert f"row {first_row}" in capsys.readouterr().err and not (tmp_path / "new.duckdb").exists()
    # a bad probability: the usual file/row/column error
    bad, d2, _ = _partial(tmp_path, prob=0.25)
    d2.loc[0, "inclusion_prob"] = 0.0
    d2.to_csv(bad, index=False)
    con = store.connect(tmp_path / "j.duckdb")
    with pytest.raises(InputError) as e:
        ingest.import_file(con, bad)
    assert (e.value.row, e.value.column) == (1, "inclusion_prob")
    assert _counts(con) == before
    con.close()


def test_partly_judged_import_with_inclusion_prob_or_declared_uniform(tmp_path, capsys):
    path, d, unscored = _partial(tmp_path, prob=0.25)
    con = store.connect(tmp_path / "p.duckdb")
    rep = ingest.import_file(con, path)
    assert any("recorded as phase-1 batch 1" in n for n in rep.notes)
    inc = phase1.item_inclusion(con)
    assert len(inc) == 10 and np.allclose(inc["pi1"], 0.25) and not set(inc["item_id"]) & set(unscored)
    cells.ensure_cells(con)
    assert con.execute("SELECT sum(n_pop) FROM model_cells WHERE dimension = 'style'").fetchone()[0] == pytest.approx(80)
    with pytest.raises(TiebreakError, match="imported"):
        phase1.draw_sample(con, n=20)  # an imported design is not extended by drawing
    con.close()
    plain, _, _ = _partial(tmp_path)
    db = tmp_path / "u.duckdb"
    assert cli.main(["import", str(plain), "--db", str(db), "--new", "--judged-sample", "uniform"]) == 0
    assert "declared uniform" in capsys.readouterr().out
    c = store.connect(db, read_only=True)
    assert np.allclose(phase1.item_inclusion(c)["pi1"], 10 / 40)
    c.close()
    assert cli.main(["status", "--db", str(db)]) == 0
    assert "judged sample: 10 of 40 items (25.0%), 1 batch, imported (uniform)" in capsys.readouterr().out


def test_fully_judged_or_unjudged_files_import_as_before_and_scores_can_complete_a_drawn_sample(tmp_path):
    d = demo.generate(30, seed=5).outputs
    jc = [c for c in d.columns if c.startswith("judge:")]
    con = store.connect(tmp_path / "f.duckdb")
    f = tmp_path / "all.csv"
    d.to_csv(f, index=False)
    rep = ingest.import_file(con, f)
    assert phase1.is_census(con) and rep.added["judge_scores"] == 30 * 2 * len(jc)
    none = tmp_path / "none.csv"
    d2 = demo.generate(30, seed=6, start=30).outputs.drop(columns=jc)
    d2.to_csv(none, index=False)
    ingest.import_file(con, none)
    assert phase1.is_census(con)
    # a drawn sample, its items judged elsewhere and imported back: accepted without a probability
    phase1.draw_sample(con, n=20, seed=1)
    sample = _sample(con)
    back = tmp_path / "back.csv"
    d3 = demo.generate(30, seed=6, start=30).outputs
    in_sample = d3["item_id"].isin(sample)
    assert 0 < in_sample.sum() < len(d3)
    d3.loc[~in_sample, jc] = None
    d3.to_csv(back, index=False)
    rep = ingest.import_file(con, back)
    assert any("complete the project's judged sample" in n for n in rep.notes)
    assert _sample(con) == sample
    # ... but a scored item outside the sample is refused, and nothing changes
    d4 = demo.generate(30, seed=6, start=30).outputs
    outside = sorted(set(d4["item_id"]) - sample)[0]
    d4.loc[d4["item_id"] != outside, jc] = None
    d4.to_csv(back, index=False)
    before = _counts(con)
    with pytest.raises(InputError, match="not in the project's judged sample") as e:
        ingest.import_file(con, back)
    assert e.value.row == int(np.flatnonzero((d4["item_id"] == outside).to_numpy())[0]) + 1
    assert _counts(con) == before
    con.close()


def test_a_fit_reads_the_judged_sample_once(tmp_path, monkeypatch):
    """Inside ``read_once`` (every fit) the sample is read once per connection; outside, each call
    reads it afresh (an extension is seen at once)."""
    con = store.connect(tmp_path / "o.duckdb", create=True)
    demo.load_demo(con, 300, seed=1)
    phase1.draw_sample(con, fraction=0.2, seed=1)
    reads = []
    real = phase1._read_inclusion
    monkeypatch.setattr(phase1, "_read_inclusion", lambda c: reads.append(1) or real(c))
    with phase1.read_once():
        a = phase1.item_inclusion(con)
        phase1.inverse_pi1(con, a["item_id"])
        mine = phase1.item_inclusion(con)
        mine.loc[0, "pi1"] = 9.0  # a caller's change does not reach the memo
        assert phase1.item_inclusion(con)["pi1"].max() <= 1.0
    assert len(reads) == 1
    phase1.item_inclusion(con)
    phase1.item_inclusion(con)
    assert len(reads) == 3
