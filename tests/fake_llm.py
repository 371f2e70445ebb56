"""A small OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks (never a real provider).

It answers ``POST /v1/chat/completions`` (plain or streamed) after ``latency`` seconds. Rubric
prompts get a JSON verdict, pairwise prompts a JSON winner, anything else a short answer, each
chosen deterministically from the prompt. Faults are injected per request with the given rates:
429, 500, a reply slower than any client timeout (``hang``), or a reply that is not the JSON the
rubric asked for (``malformed``, deterministic per prompt, so such items stay failed).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    def __init__(self, latency: float = 0.0, p429: float = 0.0, p500: float = 0.0, phang: float = 0.0,
                 pmalformed: float = 0.0, hang_seconds: float = 5.0, seed: int = 0, always: int | None = None):
        self.latency, self.p429, self.p500, self.phang, self.pmalformed = latency, p429, p500, phang, pmalformed
        self.hang_seconds = hang_seconds
        self.always = always  # answer every request with this HTTP status (e.g. 401)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses: Counter = Counter()
        self.ok_by_prompt: Counter = Counter()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                fake.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ behaviour

    def _send(self, h, status: int, payload: dict | str, headers: dict | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def reply_text(self, prompt: str) -> str:
        d = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
        if (d % 1000) / 1000 < self.pmalformed:
            return "I think this answer is fine overall."
        if "Answer A:" in prompt:
            return json.dumps({"winner": ["A", "B", "tie"][d % 3], "rationale": "fake"})
        if "Reply with JSON" in prompt:
            score = d % 101
            return json.dumps({"verdict": "pass" if score >= 50 else "fail", "score": score, "rationale": "fake"})
        return f"Fake answer {d % 997}: please restart the router and try again."

    def handle(self, h, body: dict) -> None:
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.requests += 1
            u = self.rng.random()
        time.sleep(self.latency)
        if self.always is not None:
            self.statuses[self.always] += 1
            return self._send(h, self.always, {"error": {"message": f"status {self.always}", "type": "invalid_request"}})
        if u < self.p429:
            self.statuses[429] += 1
            return self._send(h, 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0"})
        if u < self.p429 + self.p500:
            self.statuses[500] += 1
            return self._send(h, 500, {"error": {"message": "boom", "type": "server_error"}})
        if u < self.p429 + self.p500 + self.phang:
            self.statuses["hang"] += 1
            time.sleep(self.hang_seconds)
            return self._send(h, 504, {"error": {"message": "too late"}})
        text = self.reply_text(prompt)
        with self.lock:
            self.statuses[200] += 1
            self.ok_by_prompt[prompt] += 1
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                 "total_tokens": len(prompt) // 4 + len(text) // 4}
        if body.get("stream"):
            return self._stream(h, text, usage, body.get("model", "fake"))
        self._send(h, 200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                            "model": body.get("model", "fake"),
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}], "usage": usage})

    def _stream(self, h, text: str, usage: dict, model: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        words = text.split(" ")
        try:
            for i, w in enumerate(words):
                delta = {"role": "assistant", "content": w} if i == 0 else {"content": " " + w}
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                h.wfile.flush()
                time.sleep(0.002)
            end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            h.wfile.write(f"data: {json.dumps(end)}\n\n".encode())
            h.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True


def serve_in_subprocess(**kwargs):
    """Start a FakeLLM in a child process (its own GIL, as a real server would have); returns
    (process, api_base). Stop it with ``process.terminate()``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, kwargs), daemon=True)
    proc.start()
    return proc, q.get(timeout=30)


def _child(q, kwargs) -> None:
    f = FakeLLM(**kwargs)
    q.put(f.api_base)
    f.server.serve_forever()
