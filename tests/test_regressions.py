"""Regressions: SME-confirmed flips match the labels, likely regressions rank true ones high, queueing records pi."""

import duckdb
import numpy as np
import pytest

from calib.data import demo, store
from calib.insight import regressions as r
from calib.review import simulate


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    store.migrate(c)
    demo.load_demo(c, 2000, seed=1)
    simulate.simulate_sme(c, 100)
    yield c
    c.close()


def test_flips_match_labels(con):
    lab = con.execute("""SELECT item_id, model, verdict FROM labels WHERE dimension = 'correctness'
                         QUALIFY row_number() OVER (PARTITION BY item_id, model, annotator
                                                    ORDER BY created_at DESC, label_id DESC) = 1""").fetch_df()
    v = lab.groupby(["item_id", "model"])["verdict"].mean().gt(0.5).unstack()
    v = v.dropna()
    want_reg = set(v.index[v[demo.BASELINE].astype(bool) & ~v[demo.CANDIDATE].astype(bool)])
    want_imp = set(v.index[~v[demo.BASELINE].astype(bool) & v[demo.CANDIDATE].astype(bool)])
    f = r.sme_flips(con, "correctness")
    assert set(f.item_id[f.flip == "regression"]) == want_reg
    assert set(f.item_id[f.flip == "improvement"]) == want_imp
    rates = r.flip_rates(con, "correctness")
    assert rates["regressions"].sum() == len(want_reg)


def test_likely_regressions_rank_true_ones_high(con):
    from scipy.stats import rankdata
    lik = r.likely_regressions(con, "correctness")
    t = con.execute("""SELECT b.item_id, (b.verdict AND NOT c.verdict)::INT AS y FROM sim_truth b JOIN sim_truth c
                       USING (item_id, dimension) WHERE dimension = 'correctness' AND b.model = ? AND c.model = ?""",
                    [demo.BASELINE, demo.CANDIDATE]).fetch_df()
    m = lik.merge(t, on="item_id")
    y, s = m["y"].to_numpy(), m["p_regression"].to_numpy()
    ranks = rankdata(s)
    auc = (ranks[y == 1].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (len(y) - y.sum()))
    assert auc >= 0.75


def test_queue_records_inclusion_probabilities(con):
    b = r.queue_likely_regressions(con, "correctness", 20)
    rows = con.execute("SELECT inclusion_prob, reason FROM queue WHERE batch_id = ?", [b.batch_id]).fetchall()
    assert len(rows) == b.selected > 0
    assert all(0 < p <= 1 for p, _ in rows)
    assert abs(b.expected - 20) < 1e-6
    assert np.isclose(r._capped_pi(np.array([10.0, 1, 1, 1]), 2).sum(), 2)


def test_cli_json_lists_the_flips(con, tmp_path, capsys):
    import json

    from calib import cli

    db = tmp_path / "p.duckdb"
    con.execute(f"ATTACH '{db}' AS snap")
    con.execute("COPY FROM DATABASE memory TO snap")
    con.execute("DETACH snap")
    assert cli.main(["regressions", "--db", str(db), "--json", "--dimension", "correctness"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = {(f["item_id"], f["flip"]) for f in out["dimensions"]["correctness"]["flips"]}
    f = r.sme_flips(con, "correctness")
    assert got == set(zip(f.item_id, f.flip))


# --------------------------------------------------------------------------- the terminal report (issue 24)


def _file_copy(con, path):
    con.execute(f"ATTACH '{path}' AS snap")
    con.execute("COPY FROM DATABASE memory TO snap")
    con.execute("DETACH snap")
    return path


def _entries(lines, header):
    """The entry lines under the list whose heading starts with ``header`` (up to the next heading)."""
    out, inside = [], False
    for line in lines:
        if not line.startswith("    "):  # a heading: a list's (two spaces) or a dimension's or section's
            inside = line.startswith("  ") and line.strip().startswith(header)
            continue
        if inside and line.startswith("    ") and not line.strip().startswith(("...", "(")):
            out.append(line)
    return out


def test_cli_text_is_a_summary_with_top_on_every_list_and_hostile_text_escaped(con, tmp_path, capsys):
    from calib import cli

    db = _file_copy(con, tmp_path / "p.duckdb")
    f = r.sme_flips(con, "correctness")
    reg_id = f[f.flip == "regression"].item_id.iloc[0]
    c = store.connect(db)
    c.execute("UPDATE outputs SET output = ? WHERE item_id = ? AND model = ?",
              ["\x1b]0;pwned\x07\x1b[31mRED\r\nFAKE LINE\x9b2J", reg_id, demo.CANDIDATE])
    c.close()
    assert cli.main(["regressions", "--db", str(db), "--dimension", "correctness", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out and "\x07" not in out
    lines = out.splitlines()
    assert not any(line.startswith("FAKE") for line in lines) and "[U+001B]" in out
    summary = r.flip_summary(con, "correctness")
    assert (f"{summary['items']} items labelled for both models by SMEs: {summary['regressions']} "
            f"({summary['regressions'] / summary['items']:.1%}) regressions") in out
    for header in ("by segment", "SME-confirmed regressions", "SME-confirmed improvements", "likely regressions"):
        got = _entries(lines, header)
        assert 1 <= len(got) <= 3, (header, got)
    assert len(lines) < 40  # a summary, not hundreds of item ids
    assert "not yet informative" not in out  # 100 labelled items: the ranking means something


def test_cli_text_says_the_ranking_is_not_informative_without_labels(tmp_path, capsys):
    from calib import cli

    db = tmp_path / "n.duckdb"
    c = store.connect(db)
    demo.load_demo(c, 200, seed=2)
    c.close()
    assert cli.main(["regressions", "--db", str(db), "--dimension", "refusal"]) == 0
    out = capsys.readouterr().out
    assert "0 items labelled for both models" in out and "not yet informative" in out
    assert len(_entries(out.splitlines(), "likely regressions")) == 3  # default --top in text


def test_ranking_note():
    assert "not yet informative" in r.ranking_note(0, [0.26, 0.27], 20)
    assert r.ranking_note(50, [0.9, 0.1], 20) is None
    assert "not informative" in r.ranking_note(50, [0.26, 0.261], 20)
