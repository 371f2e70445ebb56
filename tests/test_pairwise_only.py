"""Pairwise-only projects (issue 13 part 1): outputs with no pointwise judge, pairwise judge
preferences, SME preferences by `labels import` or through the queue, and a fit giving the win rate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from calib.data import cells, ingest, store
from calib.review import labelling, queue
from calib.stats import engine

# 50 real PandaLM comparisons of bloom-7b vs llama-7b (source and licence: tests/data/README.md), in
# the repository so these tests run in any clone
PANDA = Path(__file__).resolve().parent / "data" / "pandalm_slice.jsonl"
WIN = {1: 0.0, 2: 1.0, 0: 0.5}
PREF = {1: "baseline", 2: "candidate", 0: "tie"}


@pytest.fixture(scope="module")
def panda() -> pd.DataFrame:
    df = pd.read_json(PANDA, lines=True)
    return df[(df.model_1 == "bloom-7b") & (df.model_2 == "llama-7b")].assign(item_id=lambda d: "p" + d.idx.astype(str))


def _project(con, panda, tmp_path) -> None:
    prompt = (panda.instruction.fillna("") + "\n\n" + panda.input.fillna("")).str.strip()
    outs = pd.concat([
        pd.DataFrame({"item_id": panda.item_id, "model": "bloom-7b", "prompt": prompt, "output": panda.response1.fillna("")}),
        pd.DataFrame({"item_id": panda.item_id, "model": "llama-7b", "prompt": prompt, "output": panda.response2.fillna("")}),
    ])
    outs.to_csv(tmp_path / "outputs.csv", index=False)
    ingest.import_file(con, tmp_path / "outputs.csv", baseline="bloom-7b")
    js = panda[panda.judge_gpt35.notna()]
    pd.DataFrame({"item_id": js.item_id, "baseline": "bloom-7b", "candidate": "llama-7b",
                  "pref:gpt35:overall": js.judge_gpt35.astype(int).map(WIN)}).to_csv(tmp_path / "prefs.csv", index=False)
    ingest.import_file(con, tmp_path / "prefs.csv")


def test_outputs_without_judge_and_empty_output_are_imported(con, tmp_path):
    pd.DataFrame({"item_id": ["a", "a", "b", "b"], "model": ["m1", "m2", "m1", "m2"], "prompt": ["p", "p", "q", "q"],
                  "output": ["x", "", "y", "z"]}).to_csv(tmp_path / "o.csv", index=False)
    rep = ingest.import_file(con, tmp_path / "o.csv", baseline="m1")
    assert rep.added == {"items": 2, "outputs": 4, "judge_scores": 0}
    assert con.execute("SELECT output FROM outputs WHERE item_id = 'a' AND model = 'm2'").fetchone()[0] == ""
    assert labelling.shown_output("") == "(empty answer)" and labelling.shown_output("  \n") == "(empty answer)"
    assert labelling.shown_output("hi") == "hi"
    cells.ensure_cells(con)  # no pointwise dimension, no pairwise judge: must not crash
    assert con.execute("SELECT count(*) FROM item_pair_cells").fetchone()[0] == 2


@pytest.mark.xdist_group("nuts")  # NUTS compiles its kernel once per worker: share it
def test_pandalm_pair_fit_from_imported_labels(con, tmp_path, panda):
    _project(con, panda, tmp_path)
    assert store.get_settings(con)["dimensions"] == []
    fit0 = engine.fit_project(con, "fast", record=False)
    assert fit0["preference"] == [] and any("no SME preferences yet" in w for w in fit0["warnings"])  # says why
    lab = panda.head(40)
    pd.DataFrame({"item_id": lab.item_id, "baseline": "bloom-7b", "candidate": "llama-7b", "dimension": "overall",
                  "preference": lab.human_majority.map(PREF), "annotator": "human"}).to_csv(tmp_path / "l.csv", index=False)
    ingest.import_labels(con, tmp_path / "l.csv")
    fit = engine.fit_project(con, "fast")
    (p,) = [p for p in fit["preference"] if p["dimension"] == "overall"]
    assert fit["n_labels"] == 40 and not any("no SME preferences" in w for w in fit["warnings"])
    assert p["decision"] in ("not worse", "worse", "label more")
    assert 0 <= p["lo"] <= p["mean"] <= p["hi"] <= 1 and p["hi"] - p["lo"] < 0.6
    # the authoritative fit: the preference model by NUTS, with its convergence on record
    nuts = engine.fit_project(con, "nuts")
    (q,) = [q for q in nuts["preference"] if q["dimension"] == "overall"]
    assert nuts["kind"] == "nuts" and any(k.startswith("win rate") for k in nuts["diagnostics"])
    assert abs(q["mean"] - p["mean"]) < 0.25 * (p["hi"] - p["lo"])


def test_pandalm_pair_through_the_queue(con, tmp_path, panda):
    _project(con, panda, tmp_path)
    pref = dict(zip(panda.item_id, panda.human_majority.map(PREF)))
    done = []
    for _ in range(25):
        lease = queue.next_item(con, "sme")
        if lease is None:
            queue.refill(con, 10, seed=len(done))
            lease = queue.next_item(con, "sme")
        assert lease is not None
        queue.submit(con, lease.lease_id, "sme", {}, preference=pref[lease.item_id])
        done.append(lease.item_id)
    assert len(set(done)) == len(done)  # a pair-labelled item is not served again
    # the judges' disagreement starts; once SMEs compared pairs, the preference model allocates
    policies = [r[0] for r in con.execute("SELECT DISTINCT policy FROM queue ORDER BY batch_id").fetchall()]
    assert policies[0].startswith("disagreement") and any(p.startswith("variance-reduction") for p in policies)
    fit = engine.fit_project(con, "fast")
    (p,) = [p for p in fit["preference"] if p["dimension"] == "overall"]
    assert 0 <= p["lo"] <= p["mean"] <= p["hi"] <= 1


@pytest.mark.xdist_group("nuts")  # the same compiled preference kernel as the test above
def test_pandalm_pair_through_the_cli(tmp_path, panda, capsys):
    """The CLI's entry point in this process (``calib.cli.main``, exit codes and output as from a
    shell; ``python -m calib.cli`` itself is run by tests/test_model.py): import, labels import and
    the default (NUTS) fit of a pairwise-only project."""
    import json

    from calib import cli

    db = str(tmp_path / "p.duckdb")
    con = store.connect(db)
    con.close()
    prompt = (panda.instruction.fillna("") + "\n\n" + panda.input.fillna("")).str.strip()
    pd.concat([
        pd.DataFrame({"item_id": panda.item_id, "model": "bloom-7b", "prompt": prompt, "output": panda.response1.fillna("")}),
        pd.DataFrame({"item_id": panda.item_id, "model": "llama-7b", "prompt": prompt, "output": panda.response2.fillna("")}),
    ]).to_csv(tmp_path / "outputs.csv", index=False)
    js = panda[panda.judge_gpt35.notna()]
    pd.DataFrame({"item_id": js.item_id, "baseline": "bloom-7b", "candidate": "llama-7b",
                  "pref:gpt35:overall": js.judge_gpt35.astype(int).map(WIN)}).to_csv(tmp_path / "prefs.csv", index=False)
    lab = panda.head(40)
    pd.DataFrame({"item_id": lab.item_id, "baseline": "bloom-7b", "candidate": "llama-7b", "dimension": "overall",
                  "preference": lab.human_majority.map(PREF), "annotator": "human"}).to_csv(tmp_path / "l.csv", index=False)
    for args in (["import", str(tmp_path / "outputs.csv"), "--baseline", "bloom-7b"],
                 ["import", str(tmp_path / "prefs.csv")], ["labels", "import", str(tmp_path / "l.csv")]):
        assert cli.main([*args, "--db", db]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["fit", "--json", "--db", db]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    (p,) = [p for p in json.loads(out.out)["preference"] if p["dimension"] == "overall"]
    assert p["lo"] <= p["mean"] <= p["hi"] and p["decision"] in ("not worse", "worse", "label more")
