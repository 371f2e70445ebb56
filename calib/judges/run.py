"""Run automated judges (through litellm, or offline) and generate candidate outputs.

Every call is planned as a ``Task`` with a cache key (the judge's configuration and the exact
messages); tasks whose key already has a successful row in ``judge_calls`` are skipped, so a
re-run picks up only what is missing or failed, and nothing is written twice. Calls run
concurrently (asyncio, a fixed number of workers), with exponential backoff and jitter on rate
limits, server errors, timeouts and dropped connections. Results are written in small
transactions: a ``judge_calls`` row for every call (ok or failed, with the reason and the raw
reply), and for successful ones the score in ``judge_scores``, the order-averaged preference in
``pair_judge_prefs`` once both orders are in, or the generated output in ``outputs``.

Pairwise judges see each pair twice, the candidate first (A) and the baseline first, which
cancels position bias; ``position_bias`` reports how often each judge picked the first answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import duckdb

from calib.data import phase1, store
from calib.errors import TiebreakError
from calib.judges.config import Generator, Judge, JudgeConfig, call_key, render

RETRYABLE = ("RateLimitError", "InternalServerError", "ServiceUnavailableError", "APIConnectionError",
             "Timeout", "APITimeoutError", "BadGatewayError")
NOT_RETRYABLE = ("AuthenticationError", "PermissionDeniedError", "BadRequestError", "NotFoundError",
                 "ContextWindowExceededError", "ContentPolicyViolationError", "UnprocessableEntityError",
                 "UnsupportedParamsError", "BudgetExceededError")


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and dropped connections are worth another try; a wrong
    key, a bad request or an unknown model are not (the same call would fail the same way)."""
    if isinstance(exc, (_EmptyReply, asyncio.TimeoutError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    if names & set(NOT_RETRYABLE):
        return False
    if names & set(RETRYABLE):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


class ReplyError(ValueError):
    """A reply that is not the JSON the rubric asked for."""


# --------------------------------------------------------------------------- parsing


def _json_object(text: str) -> dict:
    """The first JSON object in a reply (code fences and prose around it are tolerated)."""
    t = re.sub(r"```(?:json)?", "", text)
    start = t.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(t)):
            ch = t[i]
            if in_str:
                esc = (ch == "\\") and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(t[start:i + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(obj, dict):
                        return obj
                    break
        start = t.find("{", start + 1)
    raise ReplyError("no JSON object in the reply")


def parse_pointwise(text: str) -> tuple[float, str, str | None]:
    """(score in [0, 100], verdict 'pass'/'fail', rationale) from a rubric reply. The score is the
    judge's stated confidence that the output passes; without one, pass = 100 and fail = 0. A reply
    with neither a valid verdict nor a valid score raises ``ReplyError``."""
    obj = _json_object(text)
    verdict = str(obj.get("verdict", "")).strip().lower()
    verdict = {"yes": "pass", "true": "pass", "no": "fail", "false": "fail"}.get(verdict, verdict)
    score = obj.get("score")
    if isinstance(score, str):
        try:
            score = float(score.strip().rstrip("%"))
        except ValueError:
            score = None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 100:
        score = None
    if verdict not in ("pass", "fail"):
        if score is None:
            raise ReplyError(f"neither a verdict (pass/fail) nor a score in [0, 100]: {json.dumps(obj)[:200]}")
        verdict = "pass" if score >= 50 else "fail"
    if score is None:
        score = 100.0 if verdict == "pass" else 0.0
    rationale = obj.get("rationale")
    return float(score), verdict, (str(rationale) if rationale is not None else None)


def parse_pairwise(text: str) -> tuple[str, str | None]:
    """('A' | 'B' | 'tie', rationale) from a pairwise reply."""
    obj = _json_object(text)
    w = str(obj.get("winner", "")).strip().strip("\"'").lower()
    w = {"a": "A", "answer a": "A", "b": "B", "answer b": "B", "tie": "tie", "equal": "tie", "draw": "tie"}.get(w)
    if w is None:
        raise ReplyError(f"'winner' must be A, B or tie: {json.dumps(obj)[:200]}")
    rationale = obj.get("rationale")
    return w, (str(rationale) if rationale is not None else None)


# --------------------------------------------------------------------------- offline judges

_REFUSAL = re.compile(
    r"\b(i(?:'m| am) (?:sorry|afraid|unable|not able)|i can(?:no|')t (?:help|assist|share|provide|do)|"
    r"i (?:won't|will not|cannot) (?:help|share|provide)|(?:unable|not able) to (?:help|assist|share|provide)|"
    r"against (?:our|the) polic|not (?:allowed|permitted) to)", re.I)


def offline_score(method: str, output: str, reference: str | None) -> tuple[float, str]:
    """(score in [0, 100], rationale) of an offline judge; raises ReplyError when it cannot judge.

    - ``similarity``: rapidfuzz's token-set similarity of the output to the reference answer;
    - ``refusal``: 100 when the output reads as a refusal, else 0 (the calibration model learns
      which way that relates to the SMEs' verdicts);
    - ``length``: closeness of the output's length to the reference's, 100 * exp(-|log ratio|).
    """
    import math

    if method == "refusal":
        m = _REFUSAL.search(output or "")
        return (100.0, f"refusal phrase: {m.group(0)!r}") if m else (0.0, "no refusal phrase")
    if not reference:
        raise ReplyError(f"the {method} judge needs a reference answer and the item has none")
    if method == "similarity":
        from rapidfuzz import fuzz

        s = float(fuzz.token_set_ratio(output or "", reference))
        return s, f"token-set similarity to the reference {s:.0f}/100"
    if method == "length":
        r = max(len(output or ""), 1) / max(len(reference), 1)
        return 100.0 * math.exp(-abs(math.log(r))), f"length ratio to the reference {r:.2f}"
    raise ReplyError(f"unknown offline method {method!r}")


# --------------------------------------------------------------------------- tasks


@dataclass
class Task:
    key: str
    task: str  # score | pair | generate
    judge: str
    item_id: str
    model: str | None = None  # score: judged model; pair: the baseline; generate: the model stored
    other_model: str | None = None  # pair: the candidate
    dimension: str | None = None
    position: str | None = None  # pair: 'candidate-first' or 'baseline-first'
    messages: list[dict] | None = None
    cfg: Judge | Generator | None = None
    offline: tuple[str, str, str | None] | None = None  # (method, output, reference)


def _messages(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def plan(con: duckdb.DuckDBPyConnection, config: JudgeConfig, limit: int | None = None,
         generate: bool = False) -> tuple[list[Task], int]:
    """The calls still to make (and how many were skipped as done): every (item, model, dimension)
    per pointwise or offline judge, both orders of every (item, baseline, candidate, dimension) per
    pairwise judge, or with ``generate`` every item lacking the generator's output. ``limit`` takes
    the first N items by id.

    With a judged sample recorded (``calib.data.phase1``; ``tiebreak judge run --sample``), judges
    score the sample's items only (``limit``: the first N of them); generation is for every item
    (the candidate's outputs are the population: its latency and cost come from all of them)."""
    lim = f"LIMIT {int(limit)}" if limit else ""
    where = "" if generate or phase1.is_census(con) else f"WHERE item_id IN ({phase1.sampled_items_sql()})"
    items = con.execute(f"SELECT item_id, prompt, context, reference FROM items {where} ORDER BY item_id {lim}").fetchall()
    item_ids = [r[0] for r in items]
    store.register(con, "_plan_items", __import__("pandas").DataFrame({"item_id": item_ids}))
    done = {r[0] for r in con.execute("SELECT DISTINCT call_key FROM judge_calls WHERE status = 'ok'").fetchall()}
    tasks: list[Task] = []
    skipped = 0
    if generate:
        g = config.generate
        if g is None:
            raise TiebreakError(f"{config.path}: no [generate] table: nothing to generate")
        have = {r[0] for r in con.execute("SELECT item_id FROM outputs WHERE model = ?", [g.name]).fetchall()}
        for item_id, prompt, context, reference in items:
            msgs = _messages(render(g.template, prompt=prompt, context=context, reference=reference), g.system)
            key = call_key(g.signature(), msgs, item_id, g.name)
            if item_id in have or key in done:
                skipped += 1
                continue
            tasks.append(Task(key, "generate", g.name, item_id, model=g.name, messages=msgs, cfg=g))
        return tasks, skipped
    outs: dict[str, dict[str, str]] = {}
    for item_id, model_, output in con.execute(
            "SELECT o.item_id, o.model, o.output FROM outputs o JOIN _plan_items p USING (item_id)").fetchall():
        outs.setdefault(item_id, {})[model_] = output
    scored = {tuple(r) for r in con.execute(
        "SELECT s.item_id, s.model, s.judge, s.dimension FROM judge_scores s JOIN _plan_items p USING (item_id)").fetchall()}
    preffed = {tuple(r) for r in con.execute(
        "SELECT s.item_id, s.baseline, s.candidate, s.judge, s.dimension FROM pair_judge_prefs s "
        "JOIN _plan_items p USING (item_id)").fetchall()}
    s = store.get_settings(con)
    base = s["baseline"]
    cands = [m for m in store.models(con) if m != base]
    # a judge's signature is the same for every item: computed once, not per call (asdict is slow)
    sigs = {(j.name, dim): j.signature(dim) for j in config.judges for dim in j.dimensions}
    for item_id, prompt, context, reference in items:
        by_model = outs.get(item_id, {})
        for j in config.judges:
            for dim in j.dimensions:
                if j.kind in ("pointwise", "offline"):
                    for m, output in by_model.items():
                        if (item_id, m, j.name, dim) in scored:
                            skipped += 1
                            continue
                        if j.kind == "offline":
                            key = call_key(sigs[j.name, dim], _messages(f"{output}\x00{reference}"), item_id, m)
                            t = Task(key, "score", j.name, item_id, m, dimension=dim, cfg=j,
                                     offline=(j.method, output, reference))
                        else:
                            msgs = _messages(render(j.template(dim), prompt=prompt, context=context,
                                                    reference=reference, output=output, dimension=dim))
                            t = Task(call_key(sigs[j.name, dim], msgs, item_id, m), "score", j.name, item_id, m,
                                     dimension=dim, messages=msgs, cfg=j)
                        if t.key in done:
                            skipped += 1
                        else:
                            tasks.append(t)
                else:  # pairwise, both orders
                    if base not in by_model:
                        continue
                    for c in cands:
                        if c not in by_model:
                            continue
                        if (item_id, base, c, j.name, dim) in preffed:
                            skipped += 2
                            continue
                        for position, (a, b) in (("candidate-first", (by_model[c], by_model[base])),
                                                 ("baseline-first", (by_model[base], by_model[c]))):
                            msgs = _messages(render(j.template(dim), prompt=prompt, context=context,
                                                    reference=reference, output_a=a, output_b=b, dimension=dim))
                            key = call_key(sigs[j.name, dim], msgs, item_id, base, c, position)
                            if key in done:
                                skipped += 1
                                continue
                            tasks.append(Task(key, "pair", j.name, item_id, base, c, dim, position, msgs, j))
    con.unregister("_plan_items")
    return tasks, skipped


# --------------------------------------------------------------------------- calling


@dataclass
class CallResult:
    text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 0
    error: str | None = None


def _cost(cfg, resp, tin, tout) -> float | None:
    if cfg.input_cost_per_token is not None or cfg.output_cost_per_token is not None:
        return (tin or 0) * (cfg.input_cost_per_token or 0.0) + (tout or 0) * (cfg.output_cost_per_token or 0.0)
    if resp is None:
        return None
    try:
        import litellm

        return float(litellm.completion_cost(completion_response=resp))
    except Exception:  # litellm does not know the model's prices: record no cost, not a guess
        return None


async def _once(cfg, messages, stream: bool) -> CallResult:
    import litellm

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on every provider error

    kwargs = dict(model=cfg.model, messages=messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                  timeout=cfg.timeout, num_retries=0, max_retries=0)
    if cfg.api_base:
        kwargs["api_base"] = cfg.api_base
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if key:
        kwargs["api_key"] = key
    elif cfg.api_base:
        kwargs["api_key"] = "none"  # local OpenAI-compatible servers want some key
    if cfg.mock_response is not None:
        kwargs["mock_response"] = cfg.mock_response
    t0 = time.perf_counter()
    if not stream:
        resp = await litellm.acompletion(**kwargs)
        latency = (time.perf_counter() - t0) * 1000
        usage = getattr(resp, "usage", None)
        tin = getattr(usage, "prompt_tokens", None)
        tout = getattr(usage, "completion_tokens", None)
        text = resp.choices[0].message.content
        return CallResult(text, tin, tout, _cost(cfg, resp, tin, tout), latency)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    resp = await litellm.acompletion(**kwargs)
    parts, ttft, tin, tout = [], None, None, None
    async for chunk in resp:
        if chunk.choices:
            delta = chunk.choices[0].delta
            piece = getattr(delta, "content", None)
            if piece:
                if ttft is None:
                    ttft = (time.perf_counter() - t0) * 1000
                parts.append(piece)
        usage = getattr(chunk, "usage", None)
        if usage is not None and getattr(usage, "prompt_tokens", None):
            tin, tout = usage.prompt_tokens, usage.completion_tokens
    latency = (time.perf_counter() - t0) * 1000
    return CallResult("".join(parts), tin, tout, _cost(cfg, None, tin, tout), latency, ttft)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


async def call_with_retries(cfg, messages, max_retries: int, backoff: float, stream: bool = False,
                            stop: threading.Event | None = None) -> CallResult:
    """One call with exponential backoff (+-50% jitter, capped at 30 s) on retryable errors; a
    non-retryable error (bad request, authentication) or the last retry's error is returned in
    ``error``, never raised."""
    attempt = 0
    while True:
        attempt += 1
        try:
            r = await _once(cfg, messages, stream)
            r.attempts = attempt
            if r.text is None or r.text == "":
                raise _EmptyReply("empty reply")
            return r
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - provider errors come in many classes
            retryable = is_retryable(exc)
            if not retryable or attempt > max_retries or (stop is not None and stop.is_set()):
                return CallResult(attempts=attempt, error=_reason(exc) + ("" if retryable else " (not retried)"))
            wait = min(30.0, backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            end = time.monotonic() + wait
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                await asyncio.sleep(min(0.1, end - time.monotonic()))


class _EmptyReply(Exception):
    pass


# --------------------------------------------------------------------------- running


@dataclass
class Progress:
    """Live state of a run, read by the page and the CLI (written by the run's thread only)."""

    total: int = 0
    skipped: int = 0
    done: int = 0
    ok: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stopped: bool = False
    error: str | None = None
    last_failures: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def _row(t: Task, r: CallResult) -> dict:
    return {"call_key": t.key, "task": t.task, "judge": t.judge, "item_id": t.item_id, "model": t.model,
            "other_model": t.other_model, "dimension": t.dimension, "position": t.position,
            "status": "failed" if r.error else "ok", "score": None, "verdict": None, "rationale": None,
            "raw": r.text, "error": r.error, "attempts": r.attempts, "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens, "cost_usd": r.cost_usd, "latency_ms": r.latency_ms,
            "ttft_ms": r.ttft_ms}


def finish(t: Task, r: CallResult) -> dict:
    """Turn a call's reply into its ``judge_calls`` row: parse it, or record why it failed."""
    row = _row(t, r)
    if r.error:
        return row
    try:
        if t.task == "score":
            if t.offline is None:
                row["score"], row["verdict"], row["rationale"] = parse_pointwise(r.text)
            else:
                row["score"], row["rationale"] = offline_score(*t.offline)
        elif t.task == "pair":
            winner, row["rationale"] = parse_pairwise(r.text)
            row["verdict"] = winner
            first_is_cand = t.position == "candidate-first"
            row["score"] = 0.5 if winner == "tie" else float((winner == "A") == first_is_cand)  # 1 = candidate better
    except ReplyError as exc:
        row["status"], row["error"] = "failed", (f"unparseable reply: {exc}" if t.offline is None else str(exc))
    if t.offline is not None:
        row["raw"] = None
    return row


_COLUMNS = ["call_key", "task", "judge", "item_id", "model", "other_model", "dimension", "position", "status",
            "score", "verdict", "rationale", "raw", "error", "attempts", "input_tokens", "output_tokens",
            "cost_usd", "latency_ms", "ttft_ms"]


def write_results(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    """One transaction: the calls' rows, then what they produced (scores, both-order preferences,
    generated outputs), each only where absent, so nothing is ever written twice."""
    if not rows:
        return
    with store.transaction(con):
        insert_rows(con, rows)


def insert_rows(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    """``write_results`` without its transaction, for a caller that writes more in the same one
    (the batch runner marks a batch collected together with its rows)."""
    if not rows:
        return
    import pandas as pd

    frame = pd.DataFrame(rows, columns=_COLUMNS)
    for c in ("score", "cost_usd", "latency_ms", "ttft_ms"):
        frame[c] = frame[c].astype("float64")
    for c in ("input_tokens", "output_tokens", "attempts"):
        frame[c] = frame[c].astype("Int64")
    store.register(con, "_calls", frame)
    con.execute(f"INSERT INTO judge_calls ({', '.join(_COLUMNS)}, created_at) "
                f"SELECT {', '.join(_COLUMNS)}, current_timestamp FROM _calls")
    con.execute(
        """INSERT INTO judge_scores (item_id, model, judge, dimension, score, rationale)
           SELECT item_id, model, judge, dimension, any_value(score), any_value(rationale) FROM _calls c
           WHERE task = 'score' AND status = 'ok' AND NOT EXISTS (
               SELECT 1 FROM judge_scores s WHERE s.item_id = c.item_id AND s.model = c.model
               AND s.judge = c.judge AND s.dimension = c.dimension)
           GROUP BY item_id, model, judge, dimension""")
    con.execute(
        """INSERT INTO pair_judge_prefs (item_id, baseline, candidate, judge, dimension, preference)
           SELECT k.item_id, k.model, k.other_model, k.judge, k.dimension, avg(k.score)
           FROM judge_calls k
           WHERE k.task = 'pair' AND k.status = 'ok'
           AND EXISTS (SELECT 1 FROM _calls n WHERE n.task = 'pair' AND n.status = 'ok'
                       AND n.item_id = k.item_id AND n.judge = k.judge)
           AND NOT EXISTS (SELECT 1 FROM pair_judge_prefs p WHERE p.item_id = k.item_id
               AND p.baseline = k.model AND p.candidate = k.other_model AND p.judge = k.judge
               AND p.dimension = k.dimension)
           GROUP BY k.item_id, k.model, k.other_model, k.judge, k.dimension
           HAVING count(DISTINCT k.position) = 2""")
    con.execute(
        """INSERT INTO outputs (item_id, model, output, latency_ms, input_tokens, output_tokens, cost_usd, ttft_ms)
           SELECT item_id, model, any_value(raw), any_value(latency_ms), any_value(input_tokens),
                  any_value(output_tokens), any_value(cost_usd), any_value(ttft_ms) FROM _calls c
           WHERE task = 'generate' AND status = 'ok' AND NOT EXISTS (
               SELECT 1 FROM outputs o WHERE o.item_id = c.item_id AND o.model = c.model)
           GROUP BY item_id, model""")
    con.unregister("_calls")


def _register_dimensions_and_models(con, config: JudgeConfig, generated: bool) -> None:
    s = store.get_settings(con)
    dims = list(s["dimensions"])
    for j in config.judges:
        for d in j.dimensions:
            if d != "overall" and d not in dims and j.kind != "pairwise":
                dims.append(d)
    upd = {"dimensions": dims}
    if generated and config.generate is not None:
        name = config.generate.name
        if name != s["baseline"] and name not in s["candidates"]:
            upd["candidates"] = s["candidates"] + [name]
    store.set_settings(con, **upd)


async def _run_async(con, tasks: list[Task], config: JudgeConfig, progress: Progress,
                     stop: threading.Event, on_progress: Callable[[Progress], None] | None) -> None:
    queue: asyncio.Queue[Task] = asyncio.Queue()
    for t in tasks:
        queue.put_nowait(t)
    pending: list[dict] = []
    opts = config.run
    streak = [0]  # calls failed in a row with a provider error: a dead endpoint stops the run early

    def flush() -> None:
        rows = pending[:]
        pending.clear()
        write_results(con, rows)

    async def worker() -> None:
        while not stop.is_set():
            try:
                t = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if t.offline is not None:
                r = CallResult(text="(offline)", attempts=1, latency_ms=0.0)
            else:
                r = await call_with_retries(t.cfg, t.messages, opts.max_retries, opts.backoff_seconds,
                                            stream=(t.task == "generate" and t.cfg.stream), stop=stop)
            row = finish(t, r)
            pending.append(row)
            progress.done += 1
            if row["status"] == "ok":
                progress.ok += 1
                streak[0] = 0
            else:
                if r.error:
                    streak[0] += 1
                    if streak[0] >= max(2 * opts.concurrency, 10) and not stop.is_set():
                        progress.error = (f"{streak[0]} calls in a row failed (last: {r.error}); run stopped: "
                                          f"check the provider, api_base and key, then re-run")
                        stop.set()
                progress.failed += 1
                progress.last_failures = (progress.last_failures + [f"{t.item_id} {t.judge} {t.dimension or ''}: {row['error']}"])[-5:]
            progress.cost_usd += row["cost_usd"] or 0.0
            if len(pending) >= opts.batch:
                flush()
            if on_progress:
                on_progress(progress)

    try:
        await asyncio.gather(*(worker() for _ in range(opts.concurrency)))
    finally:
        flush()


def run(con: duckdb.DuckDBPyConnection, config: JudgeConfig, limit: int | None = None, generate: bool = False,
        concurrency: int | None = None, stop: threading.Event | None = None, progress: Progress | None = None,
        on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Plan and run every missing call; returns the final progress. ``stop`` ends the run after the
    calls in flight (their results are kept); a re-run resumes."""
    if concurrency:
        config.run.concurrency = int(concurrency)
    stop = stop or threading.Event()
    progress = progress or Progress()
    try:
        tasks, skipped = plan(con, config, limit=limit, generate=generate)
        progress.total, progress.skipped = len(tasks), skipped
        _register_dimensions_and_models(con, config, generate)
        if tasks:
            asyncio.run(_run_async(con, tasks, config, progress, stop, on_progress))
    except Exception as exc:
        progress.error = str(exc)
        raise
    finally:
        progress.stopped = stop.is_set() and progress.done < progress.total
        progress.finished = time.time()
    return progress


class BackgroundRun:
    """A run on its own thread (for the page): ``progress`` is live, ``stop()`` ends it cleanly."""

    def __init__(self, con: duckdb.DuckDBPyConnection, config: JudgeConfig, **kwargs):
        self.progress = self._progress()
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._target, args=(con, config, kwargs), daemon=True)
        self._thread.start()

    @staticmethod
    def _progress():
        return Progress()

    @staticmethod
    def _run(con, config, **kwargs):
        return run(con, config, **kwargs)

    def _target(self, con, config, kwargs) -> None:
        cur = con.cursor()
        try:
            self._run(cur, config, stop=self.stop_event, progress=self.progress, **kwargs)
        except Exception:  # noqa: BLE001 - kept in progress.error for the page
            pass
        finally:
            cur.close()

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


# --------------------------------------------------------------------------- reports


def position_bias(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per pairwise judge and dimension: how often it picked the answer shown first (0.5 = no bias,
    ties left out), with a 95% Wilson interval, and how often its two orders agreed."""
    from calib.stats.crosscheck import wilson_interval

    rows = con.execute(
        """WITH c AS (
               SELECT judge, dimension, item_id, model, other_model, position, verdict
               FROM judge_calls WHERE task = 'pair' AND status = 'ok'
               QUALIFY row_number() OVER (PARTITION BY judge, dimension, item_id, model, other_model, position
                                          ORDER BY call_id DESC) = 1),
           pairs AS (
               SELECT judge, dimension, item_id, model, other_model,
                      max(CASE WHEN position = 'candidate-first' THEN verdict END) AS v1,
                      max(CASE WHEN position = 'baseline-first' THEN verdict END) AS v2
               FROM c GROUP BY ALL)
           SELECT c.judge, c.dimension, count(*) FILTER (WHERE verdict <> 'tie') AS decided,
                  count(*) FILTER (WHERE verdict = 'A') AS first,
                  (SELECT count(*) FROM pairs p WHERE p.judge = c.judge AND p.dimension = c.dimension
                     AND v1 IS NOT NULL AND v2 IS NOT NULL) AS both,
                  (SELECT count(*) FROM pairs p WHERE p.judge = c.judge AND p.dimension = c.dimension
                     AND ((v1 = 'A' AND v2 = 'B') OR (v1 = 'B' AND v2 = 'A') OR (v1 = 'tie' AND v2 = 'tie'))) AS consistent
           FROM c GROUP BY c.judge, c.dimension ORDER BY ALL""").fetchall()
    out = []
    for judge, dim, decided, first, both, consistent in rows:
        _, lo, hi = wilson_interval(first, decided) if decided else (None, None, None)
        out.append({"judge": judge, "dimension": dim, "decided_calls": decided,
                    "first_position_rate": first / decided if decided else None, "lo": lo, "hi": hi,
                    "pairs_both_orders": both, "order_consistency": consistent / both if both else None})
    return out


def call_summary(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Per judge (or generator) and task: calls ok and failed, tokens, cost, latency median and p95."""
    rows = con.execute(
        """SELECT judge, task, count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'failed'),
                  sum(input_tokens), sum(output_tokens), sum(cost_usd),
                  median(latency_ms) FILTER (WHERE status = 'ok'), quantile_cont(latency_ms, 0.95) FILTER (WHERE status = 'ok'),
                  median(ttft_ms)
           FROM judge_calls GROUP BY ALL ORDER BY ALL""").fetchall()
    keys = ["judge", "task", "ok", "failed", "input_tokens", "output_tokens", "cost_usd", "latency_p50_ms",
            "latency_p95_ms", "ttft_p50_ms"]
    return [dict(zip(keys, r)) for r in rows]
