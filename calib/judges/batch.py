"""Provider batch judging: the judge calls of ``run.plan`` sent through litellm's Files + Batches
interface (OpenAI, Azure, Vertex, Bedrock, any OpenAI-compatible server) instead of one request
each, at the provider's batch price, with results parsed and written exactly as the online runner
does (``run.finish``, ``run.insert_rows``: the same ``judge_calls`` rows, scores and preferences).

Crash safety rests on the order of writes:

1. a ``judge_batches`` row (state 'submitting', a random ``tag``) and the call keys it holds
   (``judge_batch_calls``) are committed BEFORE anything is uploaded;
2. the file is uploaded (state 'uploaded', the provider's file id), then the batch is created with
   the tag in its metadata and its provider id and state are recorded;
3. results are collected in ONE transaction: the rows of every answered line whose key has no ok
   row yet, and the batch's state 'collected'. A crash before the commit leaves the batch to be
   collected again; after it, nothing is left to do.

On resume, keys of batches not yet collected are "in flight" and never re-submitted. A batch left
in 'submitting' or 'uploaded' (a crash between upload and recording the provider's batch id) is
looked up at the provider by its tag: found, it is adopted and collected as usual; not found, it
was never created, so it is marked 'abandoned' and its keys are planned again. Looking up rather
than re-submitting blindly avoids paying twice for a batch that was created; if a create request
landed after the lookup (or the provider cannot list batches), the worst case is a second paid
batch, never a second row: a key with an ok row is never written again.

Lines that fail (a 5xx or 429 in the error file, an empty reply, a batch that failed validation,
expired or was cancelled with lines unanswered) are re-queued in a later batch, up to
``max_rounds`` batches per key in one run, or with ``fallback='online'`` sent through the online
runner at once. A reply that cannot be parsed or a 4xx is recorded as failed and not retried in
this run (the online runner's rule); a later run retries it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import duckdb

from calib.data import store
from calib.errors import TiebreakError
from calib.judges import run as online
from calib.judges.config import Judge, JudgeConfig

# providers whose batches litellm creates from an OpenAI-format JSONL file (Vertex and Bedrock also
# need a bucket: litellm reads it from their usual settings, e.g. GCS_BUCKET_NAME, AWS_S3_BUCKET_NAME)
BATCH_PROVIDERS = ("openai", "hosted_vllm", "litellm_proxy", "azure", "vertex_ai", "bedrock")
PROVIDER_STATES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                   "cancelled")
TERMINAL = ("completed", "failed", "expired", "cancelled")
DONE = ("collected", "abandoned")  # every other state is open: its keys are in flight (a provider's
# terminal state, e.g. 'completed' recorded on adoption, still waits for its results to be written)
ENDPOINT = "/v1/chat/completions"


@dataclass
class BatchOptions:
    max_requests: int = 50_000  # OpenAI's limit per batch file
    max_bytes: int = 200 * 1024 * 1024  # OpenAI's limit per batch file (200 MB)
    poll_seconds: float = 30.0  # first wait between looks at open batches; x1.5 while nothing changes
    poll_max_seconds: float = 600.0
    max_rounds: int = 3  # batches one key may go through in a run before its failure stands
    fallback: str = "batch"  # 'batch': retry failed lines in a later batch; 'online': retry them online


@dataclass
class BatchProgress(online.Progress):
    """``Progress`` plus the batch side: requests submitted and still at the provider."""

    batches: int = 0  # batches submitted by this run
    submitted: int = 0  # requests submitted by this run
    in_flight: int = 0  # requests in batches not yet collected (this run's and earlier ones')
    requeued: int = 0  # lines re-queued (failed, expired, unanswered)
    collected: int = 0  # batches collected by this run
    notes: list[str] = field(default_factory=list)
    # seconds per phase: plan, submit (serialise, record, upload, create), poll, download, collect
    # (parse and write), wait (sleeping between polls), online (calls not batched, or the fallback)
    seconds: dict[str, float] = field(default_factory=dict)


class BatchAPI(Protocol):
    """What the runner needs from a provider (one judge's model and endpoint)."""

    def upload(self, name: str, data: bytes) -> str: ...
    def create(self, file_id: str, tag: str) -> dict: ...
    def retrieve(self, batch_id: str) -> dict: ...
    def content(self, file_id: str) -> bytes: ...
    def find(self, tag: str) -> dict | None: ...


def _plain(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if dump else dict(vars(obj))


class LitellmBatchAPI:
    """litellm's ``create_file`` / ``create_batch`` / ``retrieve_batch`` / ``file_content`` /
    ``list_batches`` for one judge. An OpenAI-compatible server is reached with
    ``custom_llm_provider='openai'`` and the judge's ``api_base`` (no other network call)."""

    def __init__(self, judge: Judge, provider: str, model_name: str) -> None:
        import os

        self.provider, self.model_name = provider, model_name
        self.kw: dict = {"custom_llm_provider": provider}
        if judge.api_base:
            self.kw["api_base"] = judge.api_base
        key = os.environ.get(judge.api_key_env) if judge.api_key_env else None
        if key:
            self.kw["api_key"] = key
        elif judge.api_base:
            self.kw["api_key"] = "none"  # local OpenAI-compatible servers want some key

    def upload(self, name: str, data: bytes) -> str:
        import litellm

        return litellm.create_file(file=(name, data), purpose="batch", **self.kw).id

    def create(self, file_id: str, tag: str) -> dict:
        import litellm

        extra = {"model": f"{self.provider}/{self.model_name}"} if self.provider in ("vertex_ai", "bedrock") else {}
        return _plain(litellm.create_batch(completion_window="24h", endpoint=ENDPOINT, input_file_id=file_id,
                                           metadata={"tiebreak_tag": tag}, **extra, **self.kw))

    def retrieve(self, batch_id: str) -> dict:
        import litellm

        return _plain(litellm.retrieve_batch(batch_id=batch_id, **self.kw))

    def content(self, file_id: str) -> bytes:
        import litellm

        return litellm.file_content(file_id=file_id, **self.kw).content

    def find(self, tag: str, pages: int = 10) -> dict | None:
        """The provider's batch carrying this tag in its metadata, looking at the newest
        ``pages`` x 100 batches (a crashed submission is recent)."""
        import litellm

        after = None
        for _ in range(pages):
            page = litellm.list_batches(limit=100, after=after, **self.kw)
            data = [_plain(b) for b in getattr(page, "data", None) or (page.get("data", []) if isinstance(page, dict) else [])]
            for b in data:
                if (b.get("metadata") or {}).get("tiebreak_tag") == tag:
                    return b
            if not data or not (getattr(page, "has_more", None) or (isinstance(page, dict) and page.get("has_more"))):
                return None
            after = data[-1]["id"]
        return None


def provider_of(judge: Judge) -> tuple[str, str] | None:
    """(litellm provider, model name at the provider), or None when the judge cannot be batched
    (offline judges, mock responses, providers without a batch API in litellm)."""
    if judge.kind == "offline" or judge.mock_response is not None or not judge.model:
        return None
    import litellm

    try:
        model_name, provider, _, _ = litellm.get_llm_provider(model=judge.model, api_base=judge.api_base)
    except Exception:  # noqa: BLE001 - litellm raises many classes for an unknown model string
        return None
    return (provider, model_name) if provider in BATCH_PROVIDERS else None


def batch_rates(judge: Judge) -> tuple[float, float] | None:
    """(USD per input token, per output token) at the batch price: the judges file's ``*_batches``
    prices, else half its per-token prices (litellm's rule for a model with no batch price), else
    litellm's price map (``input_cost_per_token_batches``...), else None (no cost recorded rather
    than a guess)."""
    if judge.input_cost_per_token_batches is not None or judge.output_cost_per_token_batches is not None:
        return judge.input_cost_per_token_batches or 0.0, judge.output_cost_per_token_batches or 0.0
    if judge.input_cost_per_token is not None or judge.output_cost_per_token is not None:
        return (judge.input_cost_per_token or 0.0) / 2, (judge.output_cost_per_token or 0.0) / 2
    try:
        import litellm

        info = litellm.get_model_info(model=judge.model)
    except Exception:  # noqa: BLE001 - unknown model: no price
        return None
    rates = []
    for kind in ("input", "output"):
        b, r = info.get(f"{kind}_cost_per_token_batches"), info.get(f"{kind}_cost_per_token")
        rates.append(b if b is not None else (r / 2 if r is not None else None))
    return None if rates == [None, None] else (rates[0] or 0.0, rates[1] or 0.0)


def request_line(task: online.Task, model_name: str) -> bytes:
    """One JSONL line of a batch input file (the custom_id is the call's cache key)."""
    body = {"model": model_name, "messages": task.messages, "temperature": task.cfg.temperature,
            "max_tokens": task.cfg.max_tokens}
    return json.dumps({"custom_id": task.key, "method": "POST", "url": ENDPOINT, "body": body},
                      ensure_ascii=False).encode()


def iter_files(lines: Iterable[tuple[str, bytes]], max_requests: int, max_bytes: int, too_big: list[str]
               ) -> Iterator[list[tuple[str, bytes]]]:
    """Group (key, line) pairs into files of at most ``max_requests`` lines and ``max_bytes`` bytes
    (newlines included), one file at a time (a run of millions of calls never holds them all);
    keys of lines that alone exceed ``max_bytes`` are appended to ``too_big``."""
    cur, size = [], 0
    for key, line in lines:
        n = len(line) + 1
        if n > max_bytes:
            too_big.append(key)
            continue
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            yield cur
            cur, size = [], 0
        cur.append((key, line))
        size += n
    if cur:
        yield cur


def split_files(lines: Iterable[tuple[str, bytes]], max_requests: int, max_bytes: int
                ) -> tuple[list[list[tuple[str, bytes]]], list[str]]:
    """``iter_files`` as lists: (files, keys of lines too big for any file)."""
    too_big: list[str] = []
    return list(iter_files(lines, max_requests, max_bytes, too_big)), too_big


# --------------------------------------------------------------------------- records


def _set_state(con, batch_no: int, **cols) -> None:
    sets = ", ".join(f"{k} = ?" for k in cols)
    con.execute(f"UPDATE judge_batches SET {sets}, updated_at = current_timestamp WHERE batch_no = ?",
                [*cols.values(), batch_no])


def record_batch(con, judge: str, provider: str, model: str, api_base: str | None, keys: list[str],
                 nbytes: int) -> tuple[int, str]:
    """Write the local record of a batch about to be submitted (state 'submitting'); (batch_no, tag)."""
    import pandas as pd

    tag = uuid.uuid4().hex
    with store.transaction(con):
        batch_no = con.execute(
            "INSERT INTO judge_batches (tag, judge, provider, model, api_base, state, requests, bytes, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, current_timestamp, current_timestamp) "
            "RETURNING batch_no", [tag, judge, provider, model, api_base, len(keys), nbytes]).fetchone()[0]
        store.register(con, "_batch_keys", pd.DataFrame({"call_key": keys}))
        con.execute("INSERT INTO judge_batch_calls SELECT ?, call_key FROM _batch_keys", [batch_no])
        con.unregister("_batch_keys")
    return batch_no, tag


def open_batches(con) -> list[dict]:
    cols = ["batch_no", "tag", "judge", "provider", "model", "api_base", "state", "provider_file_id",
            "provider_batch_id", "requests"]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM judge_batches WHERE state NOT IN {DONE} ORDER BY batch_no").fetchall()
    return [dict(zip(cols, r)) for r in rows]


def in_flight_keys(con) -> set[str]:
    return {r[0] for r in con.execute(
        f"SELECT DISTINCT c.call_key FROM judge_batch_calls c JOIN judge_batches b USING (batch_no) "
        f"WHERE b.state NOT IN {DONE}").fetchall()}


def list_batches(con) -> list[dict]:
    """Every batch, newest first, for ``tiebreak judge batches``."""
    cols = ["batch_no", "judge", "model", "state", "provider_batch_id", "requests", "bytes", "ok", "failed",
            "requeued", "error", "created_at", "updated_at"]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM judge_batches ORDER BY batch_no DESC").fetchall()
    return [dict(zip(cols, r)) for r in rows]


# --------------------------------------------------------------------------- collecting


def _retryable_status(status) -> bool:
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def _line_error(line: dict) -> tuple[str, bool, bool]:
    """(message, retryable, unanswered) of a line that did not succeed. Unanswered lines (expired or
    cancelled before they ran) get no ``judge_calls`` row: they were never attempted."""
    err = line.get("error") or {}
    resp = line.get("response") or {}
    if err:
        code = str(err.get("code") or "")
        msg = f"batch line error {code}: {str(err.get('message') or '')[:300]}"
        return msg, True, code in ("batch_expired", "batch_cancelled")
    status = resp.get("status_code")
    body = resp.get("body") or {}
    detail = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return f"batch line status {status}: {str(detail or '')[:300]}", _retryable_status(status), False


def collect(con, api: BatchAPI, rec: dict, b: dict, tasks: Callable[[str], online.Task | None],
            rates: tuple[float, float] | None, seconds: dict[str, float] | None = None) -> dict:
    """Download a finished batch's output and error files, turn each line into its ``judge_calls``
    row with the online parser, and write the rows of keys without an ok row together with the
    batch's final state, in one transaction. Returns {'ok', 'failed', 'retry', 'orphans'} key lists
    ('retry': keys to send again: retryable failures, unanswered and missing lines) and the cost of
    the rows written ('cost_usd')."""
    batch_no = rec["batch_no"]
    keys = [r[0] for r in con.execute("SELECT call_key FROM judge_batch_calls WHERE batch_no = ?",
                                      [batch_no]).fetchall()]
    done = {r[0] for r in con.execute(
        "SELECT DISTINCT j.call_key FROM judge_calls j JOIN judge_batch_calls c USING (call_key) "
        "WHERE c.batch_no = ? AND j.status = 'ok'", [batch_no]).fetchall()}
    tries = dict(con.execute(
        "SELECT call_key, count(*) FROM judge_batch_calls WHERE call_key IN "
        "(SELECT call_key FROM judge_batch_calls WHERE batch_no = ?) GROUP BY call_key", [batch_no]).fetchall())
    lines: list[dict] = []
    for fid in (b.get("output_file_id"), b.get("error_file_id")):
        if fid:
            t0 = time.perf_counter()
            data = api.content(fid)
            if seconds is not None:
                seconds["download"] = seconds.get("download", 0.0) + time.perf_counter() - t0
            for raw in data.splitlines():
                if raw.strip():
                    try:
                        lines.append(json.loads(raw))
                    except json.JSONDecodeError:
                        continue  # a torn line is treated as missing: its key is re-queued
    want = set(keys)
    seen: set[str] = set()
    rows, out = [], {"ok": [], "failed": [], "retry": [], "orphans": []}
    for line in lines:
        key = line.get("custom_id")
        if key not in want or key in seen:
            continue  # not ours, or a duplicate line: the first one counts
        seen.add(key)
        if key in done:
            continue  # already has an ok row (e.g. from the online runner): never written twice
        task = tasks(key)
        if task is None:
            out["orphans"].append(key)
            continue
        resp = line.get("response") or {}
        body = resp.get("body") if isinstance(resp.get("body"), dict) else {}
        attempts = int(tries.get(key, 1))
        if resp.get("status_code") == 200 and not line.get("error"):
            usage = body.get("usage") or {}
            tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
            try:
                text = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
            cost = (tin or 0) * rates[0] + (tout or 0) * rates[1] if rates and (tin or tout) else None
            r = online.CallResult(text, tin, tout, cost, None, None, attempts)
            if not text:
                r.error = "batch line: empty reply"
            row = online.finish(task, r)
            retry = bool(r.error)
        else:
            msg, retry, unanswered = _line_error(line)
            if unanswered:
                out["retry"].append(key)
                continue
            row = online.finish(task, online.CallResult(attempts=attempts, error=msg + ("" if retry else " (not retried)")))
        rows.append(row)
        if row["status"] == "ok":
            out["ok"].append(key)
        else:
            out["retry" if retry else "failed"].append(key)
    missing = [k for k in keys if k not in seen and k not in done]
    out["retry"].extend(missing)
    err = b.get("errors") or {}
    err_text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in (err.get("data") or [])
                         if isinstance(e, dict)) if isinstance(err, dict) else str(err)
    with store.transaction(con):
        online.insert_rows(con, rows)
        _set_state(con, batch_no, state="collected", ok=len(out["ok"]), failed=len(out["failed"]) + len(out["retry"]),
                   requeued=len(out["retry"]), error=(f"{b.get('status')}: {err_text}" if err_text else
                                                       (None if b.get("status") == "completed" else b.get("status"))))
    out["cost_usd"] = sum(r["cost_usd"] or 0.0 for r in rows)
    return out


# --------------------------------------------------------------------------- running


def _groups(tasks: list[online.Task]) -> dict[str, list[online.Task]]:
    """Tasks by judge: a batch file holds one model's requests."""
    g: dict[str, list[online.Task]] = {}
    for t in tasks:
        g.setdefault(t.judge, []).append(t)
    return g


class _Runner:
    def __init__(self, con, config: JudgeConfig, opts: BatchOptions, progress: BatchProgress,
                 stop: threading.Event, on_progress, api_factory, sleep, limit) -> None:
        self.con, self.config, self.opts, self.progress, self.stop = con, config, opts, progress, stop
        self.on_progress, self.sleep, self.limit = on_progress, sleep, limit
        self.judges = {j.name: j for j in config.judges}
        self.providers = {n: p for n, j in self.judges.items() if (p := provider_of(j)) is not None}
        self.rates = {n: batch_rates(self.judges[n]) for n in self.providers}
        self.apis: dict[str, BatchAPI] = {}
        self.api_factory = api_factory or (lambda j, prov, model: LitellmBatchAPI(j, prov, model))
        self.tasks: dict[str, online.Task] = {}
        self.pending: dict[str, online.Task] = {}  # keys to (re)submit in this run
        self.rounds: Counter = Counter()
        self._replanned = False

    def api(self, judge: str) -> BatchAPI:
        if judge not in self.apis:
            prov, model = self.providers[judge]
            self.apis[judge] = self.api_factory(self.judges[judge], prov, model)
        return self.apis[judge]

    def task(self, key: str) -> online.Task | None:
        """The task of a collected key; a batch from an earlier run may hold keys outside this
        run's ``--limit``, so the full plan is made once when one is unknown."""
        if key not in self.tasks and not self._replanned:
            self._replanned = True
            for t in online.plan(self.con, self.config)[0]:
                self.tasks.setdefault(t.key, t)
        return self.tasks.get(key)

    def tick(self) -> None:
        p = self.progress
        p.in_flight = sum(r["requests"] for r in open_batches(self.con))
        if self.on_progress:
            self.on_progress(p)

    # ---------------------------------------------------------------- steps

    def recover(self) -> None:
        """Batches left 'submitting' or 'uploaded' by a crash: adopt the provider's batch carrying
        the tag, or mark the record abandoned (its keys are planned again)."""
        for rec in open_batches(self.con):
            if rec["state"] not in ("submitting", "uploaded") or rec["provider_batch_id"]:
                continue
            found = None
            if rec["judge"] in self.providers:
                try:
                    found = self.api(rec["judge"]).find(rec["tag"])
                except Exception as exc:  # noqa: BLE001 - provider errors come in many classes
                    if online.is_retryable(exc):  # look again at the next run rather than risk paying twice
                        self.progress.notes.append(f"batch {rec['batch_no']}: lookup by tag failed "
                                                   f"({online._reason(exc)}); its calls wait for the next run")
                        continue
                    # a provider that cannot list batches: re-submit (at worst a second paid batch, never a second row)
                    self.progress.notes.append(f"batch {rec['batch_no']}: the provider cannot look batches up "
                                               f"({online._reason(exc)}); its calls are submitted again")
            if found:
                _set_state(self.con, rec["batch_no"], provider_batch_id=found["id"],
                           provider_file_id=found.get("input_file_id") or rec["provider_file_id"],
                           state=found.get("status") or "validating")
                self.progress.notes.append(f"batch {rec['batch_no']}: found at the provider after a crash; adopted")
            else:
                _set_state(self.con, rec["batch_no"], state="abandoned",
                           error="interrupted before the provider created the batch; calls re-queued")

    def submit(self) -> None:
        inflight = in_flight_keys(self.con)
        todo = [t for k, t in self.pending.items() if k not in inflight and self.rounds[k] < self.opts.max_rounds]
        for judge, tasks in _groups(todo).items():
            prov, model = self.providers[judge]
            lines = ((t.key, request_line(t, model)) for t in tasks)
            too_big: list[str] = []
            for f in iter_files(lines, self.opts.max_requests, self.opts.max_bytes, too_big):
                if self.stop.is_set():
                    return
                self._submit_one(judge, prov, model, f)
            if too_big:
                online.write_results(self.con, [online.finish(self.tasks[k], online.CallResult(
                    attempts=1, error=f"request larger than the batch file limit ({self.opts.max_bytes} bytes)"))
                    for k in too_big])
                for k in too_big:
                    self.pending.pop(k, None)
                    self.progress.failed += 1
                    self.progress.done += 1

    def _submit_one(self, judge: str, prov: str, model: str, f: list[tuple[str, bytes]]) -> None:
        data = b"\n".join(line for _, line in f) + b"\n"
        keys = [k for k, _ in f]
        batch_no, tag = record_batch(self.con, judge, prov, model, self.judges[judge].api_base, keys, len(data))
        for k in keys:
            self.rounds[k] += 1
        api = self.api(judge)
        try:
            fid = api.upload(f"tiebreak-{tag}.jsonl", data)
            _set_state(self.con, batch_no, state="uploaded", provider_file_id=fid)
            b = api.create(fid, tag)
        except Exception as exc:  # noqa: BLE001 - provider errors come in many classes
            _set_state(self.con, batch_no, state="abandoned", error=f"submission failed: {online._reason(exc)}")
            if not online.is_retryable(exc):
                self.progress.error = (f"batch submission failed ({online._reason(exc)}): check the provider, "
                                       "api_base and key, then re-run")
                self.stop.set()
            return
        _set_state(self.con, batch_no, provider_batch_id=b["id"], state=b.get("status") or "validating")
        self.progress.batches += 1
        self.progress.submitted += len(keys)
        self.tick()

    def poll(self) -> bool:
        """Look at every open batch once; collect the finished ones. True when anything changed."""
        changed = False
        for rec in open_batches(self.con):
            if self.stop.is_set():
                break
            if not rec["provider_batch_id"] or rec["judge"] not in self.providers:
                if rec["judge"] not in self.providers:
                    _set_state(self.con, rec["batch_no"], state="abandoned",
                               error="the judge is no longer in the judges file (or cannot be batched)")
                continue
            api = self.api(rec["judge"])
            try:
                b = api.retrieve(rec["provider_batch_id"])
            except Exception as exc:  # noqa: BLE001
                if online.is_retryable(exc):
                    continue  # look again at the next poll
                b = {"id": rec["provider_batch_id"], "status": "failed",
                     "errors": {"data": [{"code": "retrieve", "message": online._reason(exc)}]}}
            status = b.get("status") or rec["state"]
            if status != rec["state"]:
                changed = True
                if status not in TERMINAL:
                    _set_state(self.con, rec["batch_no"], state=status)
            if status in TERMINAL:
                self._collect(rec, b, api)
        return changed

    def _collect(self, rec: dict, b: dict, api: BatchAPI) -> None:
        dl0 = self.progress.seconds.get("download", 0.0)
        t0 = time.perf_counter()
        out = collect(self.con, api, rec, b, self.task, self.rates.get(rec["judge"]), self.progress.seconds)
        self._add("collect", time.perf_counter() - t0 - (self.progress.seconds.get("download", 0.0) - dl0))
        p = self.progress
        p.collected += 1
        for k in out["ok"]:
            if self.pending.pop(k, None) is not None:
                p.ok += 1
                p.done += 1
        p.cost_usd += out["cost_usd"]
        for k in out["failed"]:
            if self.pending.pop(k, None) is not None:
                p.failed += 1
                p.done += 1
        retry = [k for k in out["retry"] if k in self.pending]
        p.requeued += len(retry)
        final = [k for k in retry if self.rounds[k] >= self.opts.max_rounds]
        for k in final:  # its failure stands for this run
            self.pending.pop(k)
            p.failed += 1
            p.done += 1
        if out["orphans"]:
            p.notes.append(f"batch {rec['batch_no']}: {len(out['orphans'])} answers for calls no longer in the "
                           "judges file were not written")
        if self.opts.fallback == "online":
            again = [self.pending.pop(k) for k in retry if k in self.pending]
            if again:
                sub = online.Progress()
                t0 = time.perf_counter()
                asyncio.run(online._run_async(self.con, again, self.config, sub, self.stop, None))
                self._add("online", time.perf_counter() - t0)
                p.ok, p.failed, p.done = p.ok + sub.ok, p.failed + sub.failed, p.done + sub.done
                p.cost_usd += sub.cost_usd
        if out["failed"]:
            p.last_failures = (p.last_failures + [f"batch {rec['batch_no']}: {len(out['failed'])} lines failed"])[-5:]
        self.tick()

    def wait(self, seconds: float) -> None:
        t0 = time.perf_counter()
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self.sleep(min(0.2, max(0.0, end - time.monotonic())))
        self._add("wait", time.perf_counter() - t0)

    def _add(self, phase: str, seconds: float) -> None:
        self.progress.seconds[phase] = self.progress.seconds.get(phase, 0.0) + seconds

    # ---------------------------------------------------------------- main loop

    def run(self) -> None:
        t0 = time.perf_counter()
        tasks, skipped = online.plan(self.con, self.config, limit=self.limit)
        self.tasks = {t.key: t for t in tasks}
        self._add("plan", time.perf_counter() - t0)
        p = self.progress
        p.total, p.skipped = len(tasks), skipped
        online._register_dimensions_and_models(self.con, self.config, False)
        local = [t for t in tasks if t.judge not in self.providers]
        self.pending = {t.key: t for t in tasks if t.judge in self.providers}
        self.recover()
        if local:  # offline judges, mock responses, providers without batches: the online runner
            t0 = time.perf_counter()
            asyncio.run(online._run_async(self.con, local, self.config, p, self.stop, None))
            self._add("online", time.perf_counter() - t0)
        delay = self.opts.poll_seconds
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.submit()
            self._add("submit", time.perf_counter() - t0)
            if self.stop.is_set() or not open_batches(self.con):
                break
            t0 = time.perf_counter()
            seconds = dict(self.progress.seconds)
            changed = self.poll()
            spent = time.perf_counter() - t0  # retrieve calls only: collecting is counted apart
            spent -= sum(self.progress.seconds.get(k, 0.0) - seconds.get(k, 0.0) for k in ("collect", "download", "online"))
            self._add("poll", spent)
            if changed:
                delay = self.opts.poll_seconds
                continue
            self.wait(delay)
            delay = min(delay * 1.5, self.opts.poll_max_seconds)
        self.tick()


def run_batch(con: duckdb.DuckDBPyConnection, config: JudgeConfig, limit: int | None = None,
              options: BatchOptions | None = None, stop: threading.Event | None = None,
              progress: BatchProgress | None = None, on_progress: Callable[[BatchProgress], None] | None = None,
              api_factory: Callable[[Judge, str, str], BatchAPI] | None = None,
              sleep: Callable[[float], None] = time.sleep) -> BatchProgress:
    """Plan every missing judge call (as ``run.run`` does), send the batchable ones as provider
    batches, wait for them, and write their results; resumes whatever an earlier run left in flight.
    ``stop`` ends the run after the current step, leaving batches at the provider (a re-run collects
    them). ``api_factory(judge, provider, model)`` replaces litellm (tests inject faults with it)."""
    opts = options or BatchOptions()
    if opts.fallback not in ("batch", "online"):
        raise TiebreakError(f"batch fallback must be 'batch' or 'online', not {opts.fallback!r}")
    if opts.max_requests < 1 or opts.max_bytes < 1:
        raise TiebreakError("batch limits must be positive")
    stop = stop or threading.Event()
    progress = progress or BatchProgress()
    try:
        _Runner(con, config, opts, progress, stop, on_progress, api_factory, sleep, limit).run()
    except Exception as exc:
        progress.error = str(exc)
        raise
    finally:
        progress.stopped = stop.is_set() and (progress.done < progress.total or progress.in_flight > 0)
        progress.finished = time.time()
    return progress


class BackgroundBatchRun(online.BackgroundRun):
    """A batch run on its own thread (for the page): ``progress`` is live, ``stop()`` ends it after
    the current step; batches stay at the provider and a later run collects them."""

    @staticmethod
    def _progress():
        return BatchProgress()

    @staticmethod
    def _run(con, config, **kwargs):
        return run_batch(con, config, **kwargs)
