"""What the pages show, without a browser (issue 24): human headers on the Home and Admin tables,
card figures that never wrap inside a number, chart titles that wrap instead of running past the
chart, and the 0-label project's next steps. The browser side: tests/test_browser_screens.py."""

from __future__ import annotations

import json
import re

from calib.data import demo, store
from calib.insight import dashboard, plots, tables
from calib.review import queue, simulate, users


def _no_snake_case(rows: list[dict]) -> None:
    assert rows
    for r in rows:
        assert not [k for k in r if re.search(r"[a-z]_[a-z]", k)], r


def test_home_and_admin_tables_have_human_headers(tmp_path):
    con = store.connect(tmp_path / "h.duckdb")
    demo.load_demo(con, 60, seed=1, candidates=2)
    users.add_user(con, "ada", "admin", "ada-password")
    simulate.simulate_sme(con, 5)
    s = store.status(con)
    disagree = tables.disagreement_table(queue.top_disagreements(con, 5))
    _no_snake_case(disagree)
    assert list(disagree[0]) == ["Item", "Segment", "Topic", "Judges disagree", "Models differ", "Score"]
    _no_snake_case(tables.judge_count_table(s["judges"]))
    _no_snake_case(tables.queue_table(queue.queue_summary(con)))
    people = tables.users_table(users.list_users(con))
    _no_snake_case(people)
    assert people[0]["User"] == "ada" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", people[0]["Added"])
    with_mail = tables.users_table([{**u, "email": "ada@example.org"} for u in users.list_users(con)])
    assert with_mail[0]["E-mail"] == "ada@example.org"
    log = tables.audit_table(users.audit_log(con, 5))
    _no_snake_case(log)
    assert log[0]["Who"] and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", log[0]["When"])


def test_run_judges_tables_have_human_headers():
    from calib.data.store import REPO_ROOT
    from calib.judges import config

    cfg = config.load_config(str(REPO_ROOT / "data" / "judges.offline.toml"))
    _no_snake_case(tables.judge_config_table(cfg.judges))
    calls = [{"judge": "j", "task": "score", "ok": 3, "failed": 0, "input_tokens": 10, "output_tokens": 5,
              "cost_usd": 0.001, "latency_p50_ms": 12.0, "latency_p95_ms": 30.0, "ttft_p50_ms": None}]
    assert tables.call_summary_table(calls)[0]["Cost"] == "$0.0010"
    _no_snake_case(tables.call_summary_table(calls))
    bias = [{"judge": "p", "dimension": "overall", "decided_calls": 10, "first_position_rate": 0.6, "lo": 0.3,
             "hi": 0.8, "pairs_both_orders": 5, "order_consistency": 0.8}]
    _no_snake_case(tables.pair_position_bias_table(bias))


def test_card_figures_wrap_between_numbers_never_inside_one():
    d = {"mean": 0.13, "lo": 0.091, "hi": 0.169}
    text = tables.card_delta(d)
    assert text.replace(tables.NBSP, " ") == "Delta +13.0 pp [+9.1 pp, +16.9 pp]"
    # the only places a line may break: after the word and after the comma
    assert text.split(" ") == ["Delta", f"+13.0{tables.NBSP}pp", f"[+9.1{tables.NBSP}pp,", f"+16.9{tables.NBSP}pp]"]
    assert tables.card_delta({"mean": 0.559, "lo": 0.412, "hi": 0.714}, pair=True).replace(tables.NBSP, " ") \
        == "Win rate 55.9% [41.2%, 71.4%]"


def test_chart_titles_wrap_and_the_margin_grows_with_them():
    """A long dimension and candidate name: every title line at most TITLE_WIDTH characters (as
    text), each line escaped, and the top margin holds all lines."""
    dim, cand = "correctness of the refund policy answer", "<b>support-nova-v2-with-a-long-suffix</b>"
    hist = [{"dimension": dim, "candidate": cand, "n_labels": n, "fit_id": n, "mean": 0.0, "lo": -0.1, "hi": 0.1}
            for n in (20, 40)]
    fig = plots.shrinkage_figure(hist, dim, None, 0.02, candidate=cand)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) >= 2
    import html

    assert all(len(html.unescape(line)) <= plots.TITLE_WIDTH for line in lines)
    assert "<b>" not in json.dumps(fig.to_plotly_json()) and "&lt;b&gt;" in fig.layout.title.text
    assert fig.layout.margin.t >= 22 * len(lines) + 40
    short = plots.shrinkage_figure(hist, "style", None, 0.02)
    assert "<br>" not in short.layout.title.text and short.layout.margin.t < fig.layout.margin.t


def test_replay_figure_draws_one_candidate_at_a_time():
    rep = [{"step": s, "n_labels": 10 * (s + 1), "dimension": "style", "candidate": c, "mean": m, "lo": m - 0.1,
            "hi": m + 0.1} for s in range(3) for c, m in (("a", 0.05), ("b", -0.2))]
    fig = plots.replay_figure(rep, "style", 0.02, candidate="b")
    assert list(fig.frames[-1].data[1].y) == [-0.2, -0.2, -0.2] and "(b)" in fig.layout.title.text  # b only


def test_next_steps_on_a_project_with_no_label(tmp_path):
    con = store.connect(tmp_path / "e.duckdb")
    demo.load_demo(con, 40, seed=2)
    steps = dashboard.next_steps(con)
    text = "\n".join(steps)
    assert "**Label** page" in text and "tiebreak users add NAME --role sme" in text  # no SME account yet
    assert "tiebreak labels import FILE" in text and "**Demo** page" in text  # a demo database has the truth
    users.add_user(con, "sam", "sme", "sam-password")
    assert "1 SME account can sign in" in "\n".join(dashboard.next_steps(con))
    simulate.simulate_sme(con, 1)
    assert dashboard.next_steps(con) is None  # labels: the decision itself


def test_next_steps_leave_a_project_without_models_to_the_fit_error(tmp_path):
    con = store.connect(tmp_path / "n.duckdb")
    assert dashboard.next_steps(con) is None
