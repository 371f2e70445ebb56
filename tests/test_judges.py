"""Automated judges: parsing, configuration, offline judges, and full runs against litellm's
mock_response and a local OpenAI-compatible server that is slow and fails in every way."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from calib import cli
from calib.data import demo, store
from calib.judges import config as judge_config, run as judges
from calib.errors import InputError
from fake_llm import FakeLLM


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, score, verdict", [
    ('{"verdict": "pass", "score": 87, "rationale": "ok"}', 87.0, "pass"),
    ('Sure!\n```json\n{"verdict": "FAIL", "score": "12%", "rationale": "wrong {step}"}\n```', 12.0, "fail"),
    ('{"verdict": "pass"}', 100.0, "pass"),
    ('{"score": 30}', 30.0, "fail"),
    ('{"verdict": "fail", "score": 400}', 0.0, "fail"),  # a score out of range is ignored, the verdict kept
    ('prose {not json} then {"verdict": "yes", "score": 55}', 55.0, "pass"),
])
def test_parse_pointwise_is_robust(text, score, verdict):
    s, v, _ = judges.parse_pointwise(text)
    assert (s, v) == (score, verdict)


@pytest.mark.parametrize("text", ["I think it passes.", '{"verdict": "maybe"}', "[1, 2]", '{"verdict": ', ""])
def test_unparseable_pointwise_reply_is_an_error_never_a_score(text):
    with pytest.raises(judges.ReplyError):
        judges.parse_pointwise(text)


def test_parse_pairwise():
    assert judges.parse_pairwise('{"winner": "B", "rationale": "x"}')[0] == "B"
    assert judges.parse_pairwise('```{"winner": "Tie"}```')[0] == "tie"
    with pytest.raises(judges.ReplyError):
        judges.parse_pairwise('{"winner": "C"}')


def test_render_fills_the_template_once_and_never_formats_the_data():
    out = judge_config.render("Q: {prompt}\nA: {output}\nJSON: {\"score\": 0}", prompt="say {output}", output="hi")
    assert out == 'Q: say {output}\nA: hi\nJSON: {"score": 0}'
    assert judge_config.render("{context}", context=None) == "(none)"


# --------------------------------------------------------------------------- configuration


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "judges.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, where", [
    ('[[judge]]\nname = "a"\nmodel = "openai/x"\ntemprature = 0.1\n', "judge[1].temprature"),
    ('[[judge]]\nname = "a"\nkind = "magic"\nmodel = "x"\n', "judge[1].kind"),
    ('[[judge]]\nname = "a"\n', "judge[1].model"),
    ('[[judge]]\nname = "a"\nmodel = "x"\nmax_tokens = "many"\n', "judge[1].max_tokens"),
    ('[[judge]]\nname = "a"\nkind = "offline"\nmethod = "bleu"\n', "judge[1].method"),
    ('[[judge]]\nname = "a"\nmodel = "x"\n[judge.rubric]\nstyle = "no output placeholder"\n', "judge[1].rubric.style"),
    ('[[judge]]\nname = "a"\nmodel = "x"\n[[judge]]\nname = "a"\nmodel = "y"\n', "judge.name"),
    ('[run]\nconcurrency = 0\n[[judge]]\nname = "a"\nmodel = "x"\n', "run.concurrency"),
    ('[[judge]\nname = "a"', None),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, where):
    p = _cfg(tmp_path, text)
    with pytest.raises(InputError) as e:
        judge_config.load_config(p)
    assert str(p) in str(e.value)
    if where:
        assert e.value.column == where


def test_shipped_configs_load():
    root = Path(__file__).resolve().parent.parent / "data"
    ex = judge_config.load_config(root / "judges.example.toml")
    assert {j.kind for j in ex.judges} == {"pointwise", "pairwise", "offline"}
    assert judge_config.load_config(root / "judges.offline.toml").judges


# --------------------------------------------------------------------------- offline judges


def test_offline_judges():
    ref = "Restart the router, then sign in again."
    assert judges.offline_score("similarity", ref, ref)[0] == 100.0
    assert judges.offline_score("similarity", "Buy a new phone.", ref)[0] < 50
    assert judges.offline_score("refusal", "I'm sorry, but I can't help with that.", None)[0] == 100.0
    assert judges.offline_score("refusal", "Restart the router.", None)[0] == 0.0
    assert judges.offline_score("length", ref, ref)[0] == pytest.approx(100.0)
    with pytest.raises(judges.ReplyError, match="reference"):
        judges.offline_score("similarity", "x", None)


def test_offline_run_scores_everything_once_and_feeds_the_model(tmp_path):
    con = store.connect(tmp_path / "o.duckdb")
    demo.load_demo(con, 30, seed=2)
    cfg = judge_config.load_config(Path(__file__).resolve().parent.parent / "data" / "judges.offline.toml")
    p = judges.run(con, cfg)
    assert (p.total, p.ok, p.failed) == (180, 180, 0)
    n = con.execute("SELECT count(*) FROM judge_scores WHERE judge IN ('lexical-similarity', 'refusal-rule', 'length-rule')").fetchone()[0]
    assert n == 180
    again = judges.run(con, cfg)
    assert (again.total, again.skipped) == (0, 180)
    from calib.stats import engine

    fit = engine.fit_project(con, "fast", record=False)  # the new judges enter the calibration model
    assert {d["dimension"] for d in fit["diffs"]} == {"correctness", "refusal", "style"}


# --------------------------------------------------------------------------- litellm runs


@pytest.fixture
def small(tmp_path):
    con = store.connect(tmp_path / "j.duckdb")
    demo.load_demo(con, 12, seed=5)
    yield con
    con.close()


def test_mock_response_run_records_scores_tokens_and_litellm_prices(small, tmp_path):
    p = _cfg(tmp_path, """
[[judge]]
name = "mock-judge"
model = "gpt-4o-mini"
mock_response = '{"verdict": "pass", "score": 80, "rationale": "fine"}'
dimensions = ["correctness"]
""")
    pr = judges.run(small, judge_config.load_config(p))
    assert (pr.total, pr.ok, pr.failed) == (24, 24, 0)
    rows = small.execute("SELECT score, rationale FROM judge_scores WHERE judge = 'mock-judge'").fetchall()
    assert len(rows) == 24 and {r for r in rows} == {(80.0, "fine")}
    calls = small.execute("SELECT input_tokens, output_tokens, cost_usd, latency_ms FROM judge_calls").fetchall()
    assert all(c[0] > 0 and c[1] > 0 and c[2] > 0 and c[3] >= 0 for c in calls)  # litellm knows gpt-4o-mini's price


def test_unparseable_mock_reply_is_recorded_as_failure_with_raw_text(small, tmp_path):
    p = _cfg(tmp_path, '[[judge]]\nname = "bad"\nmodel = "gpt-4o-mini"\nmock_response = "Looks good to me!"\n'
                       'dimensions = ["style"]\n')
    pr = judges.run(small, judge_config.load_config(p))
    assert (pr.ok, pr.failed) == (0, 24)
    assert small.execute("SELECT count(*) FROM judge_scores WHERE judge = 'bad'").fetchone()[0] == 0
    raw, err = small.execute("SELECT raw, error FROM judge_calls WHERE judge = 'bad' LIMIT 1").fetchone()
    assert raw == "Looks good to me!" and "unparseable" in err


def _server_config(tmp_path, f: FakeLLM, concurrency=8, timeout=0.5, extra="") -> judge_config.JudgeConfig:
    return judge_config.load_config(_cfg(tmp_path, f"""
[run]
concurrency = {concurrency}
max_retries = 6
backoff_seconds = 0.02
[[judge]]
name = "srv"
model = "openai/fake-judge"
api_base = "{f.api_base}"
timeout = {timeout}
input_cost_per_token = 1e-6
output_cost_per_token = 2e-6
[[judge]]
name = "srv-pair"
kind = "pairwise"
model = "openai/fake-judge"
api_base = "{f.api_base}"
timeout = {timeout}
dimensions = ["overall"]
{extra}
"""))


def test_faulty_server_every_call_ends_once_and_a_rerun_takes_only_the_missing(small, tmp_path):
    with FakeLLM(latency=0.01, p429=0.15, p500=0.1, phang=0.05, pmalformed=0.1, hang_seconds=1.5, seed=1) as f:
        cfg = _server_config(tmp_path, f)
        first = judges.run(small, cfg)
        # 12 items x 2 models x 3 dimensions pointwise + 12 pairs x 2 orders
        assert first.total == 72 + 24 and first.done == first.total and first.ok + first.failed == first.total
        assert f.statuses[429] and f.statuses[500] and f.statuses["hang"]  # the faults really happened
        calls = small.execute("SELECT call_key, status, error, attempts FROM judge_calls").fetchall()
        assert len(calls) == first.total and len({c[0] for c in calls}) == first.total  # one row per call
        failed = [c for c in calls if c[1] == "failed"]
        assert failed and all(c[2] for c in failed)  # every failure says why
        assert max(c[3] for c in calls) > 1  # retried
        ok_score = small.execute("SELECT count(*) FROM judge_calls WHERE task = 'score' AND status = 'ok'").fetchone()[0]
        assert small.execute("SELECT count(*) FROM judge_scores WHERE judge = 'srv'").fetchone()[0] == ok_score
        assert small.execute("""SELECT count(*) FROM (SELECT item_id, model, dimension FROM judge_scores
                                WHERE judge = 'srv' GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0] == 0
        # both orders in -> one preference per pair, the average of the two orders
        both = small.execute("""SELECT count(*) FROM (SELECT item_id FROM judge_calls WHERE task = 'pair' AND status = 'ok'
                                GROUP BY item_id HAVING count(DISTINCT position) = 2)""").fetchone()[0]
        assert small.execute("SELECT count(*) FROM pair_judge_prefs WHERE judge = 'srv-pair'").fetchone()[0] == both
        # second run: only what has no successful call yet, and no prompt answered OK twice
        served_before = f.statuses[200]
        second = judges.run(small, cfg)
        assert second.total == len(failed) and second.skipped == first.ok
        assert f.statuses[200] - served_before <= len(failed)
    n_ok = small.execute("SELECT count(DISTINCT call_key) FROM judge_calls WHERE status = 'ok'").fetchone()[0]
    assert n_ok == small.execute("SELECT count(*) FROM judge_calls WHERE status = 'ok'").fetchone()[0]


def test_wrong_key_is_not_retried_and_a_dead_provider_stops_the_run(small, tmp_path):
    with FakeLLM(always=401) as f:
        p = judges.run(small, _server_config(tmp_path, f, concurrency=2))
        assert p.error and "in a row failed" in p.error and p.stopped  # stopped early, with a reason
        rows = small.execute("SELECT attempts, error FROM judge_calls").fetchall()
        assert rows and all(a == 1 and "not retried" in e for a, e in rows)
        assert f.requests == len(rows) < p.total  # one request per call, and not every call was tried


def test_stop_keeps_results_and_a_rerun_finishes(small, tmp_path):
    with FakeLLM(latency=0.02) as f:
        cfg = _server_config(tmp_path, f, concurrency=2)
        stop = threading.Event()
        seen = []

        def on_progress(p):
            seen.append(p.done)
            if p.done >= 10:
                stop.set()

        first = judges.run(small, cfg, stop=stop, on_progress=on_progress)
        assert first.stopped and 10 <= first.done < first.total
        kept = small.execute("SELECT count(*) FROM judge_calls WHERE status = 'ok'").fetchone()[0]
        assert kept == first.ok
        second = judges.run(small, cfg)
        assert second.total == first.total - first.ok and second.failed == 0


def test_position_bias_of_a_judge_that_always_picks_a(small, tmp_path):
    p = _cfg(tmp_path, """
[[judge]]
name = "first-picker"
kind = "pairwise"
model = "gpt-4o-mini"
mock_response = '{"winner": "A"}'
""")
    judges.run(small, judge_config.load_config(p))
    bias = judges.position_bias(small)[0]
    assert bias["first_position_rate"] == 1.0 and bias["order_consistency"] == 0.0 and bias["lo"] > 0.8
    prefs = small.execute("SELECT DISTINCT preference FROM pair_judge_prefs WHERE judge = 'first-picker'").fetchall()
    assert prefs == [(0.5,)]  # the two orders cancel


def test_generate_candidate_outputs_with_streaming(small, tmp_path):
    with FakeLLM(latency=0.05) as f:
        cfg = judge_config.load_config(_cfg(tmp_path, f"""
[generate]
name = "support-gen-v3"
model = "openai/fake-gen"
api_base = "{f.api_base}"
input_cost_per_token = 1e-6
output_cost_per_token = 3e-6
"""))
        pr = judges.run(small, cfg, generate=True)
        assert (pr.total, pr.ok) == (12, 12)
        rows = small.execute("""SELECT output, latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd
                                FROM outputs WHERE model = 'support-gen-v3'""").fetchall()
        assert len(rows) == 12
        for out, lat, ttft, tin, tout, cost in rows:
            assert out.startswith("Fake answer") and 0 < ttft <= lat and tin > 0 and tout > 0 and cost > 0
        assert "support-gen-v3" in store.get_settings(small)["candidates"]
        assert judges.run(small, cfg, generate=True).total == 0


def test_cli_judge_run_and_report(tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    con = store.connect(db)
    demo.load_demo(con, 10, seed=1)
    con.close()
    cfg = Path(__file__).resolve().parent.parent / "data" / "judges.offline.toml"
    assert cli.main(["judge", "run", "--db", str(db), "--config", str(cfg), "--limit", "4"]) == 0
    assert "24 ok, 0 failed" in capsys.readouterr().out
    assert cli.main(["judge", "report", "--db", str(db), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {r["judge"] for r in rep["calls"]} == {"lexical-similarity", "refusal-rule", "length-rule"}
    assert cli.main(["judge", "run", "--db", str(db), "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
