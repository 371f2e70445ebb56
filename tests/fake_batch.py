"""An OpenAI-compatible Files + Batches server on 127.0.0.1 for tests and benchmarks (never a real
provider).

It serves what a batch client needs: ``POST /v1/files`` (multipart, purpose=batch),
``GET /v1/files/{id}`` and ``/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``
(newest first, ``limit``/``after``), ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel`` (and, for a client's online
fallback, plain ``POST /v1/chat/completions``).
A batch moves validating -> in_progress -> finalizing -> completed as time passes (``batch_seconds``
from creation; 0 completes at the first look), and its output file holds one
``{custom_id, response: {status_code, body}}`` line per request answered, with the same
deterministic replies as ``tests/fake_llm.py``. Faults, to test a client's recovery:

- ``pfail``: share of lines that fail (a 500 in the error file), drawn per (line, batch), so a
  retry in a later batch may succeed;
- ``expire_next``: the next N batches expire, with only ``expired_share`` of their lines answered
  (the rest in the error file with code ``batch_expired``, as OpenAI does);
- ``fail_next``: the next N batches fail validation (no output at all);
- ``max_requests`` / ``max_bytes``: a file over these limits fails validation, as at OpenAI.

Counters (``answered``: custom_id -> times answered with 200) let a test prove nothing was sent twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from fake_llm import FakeLLM


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client killed mid-request is expected here
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class FakeBatchServer:
    def __init__(self, batch_seconds: float = 0.0, pfail: float = 0.0, pmalformed: float = 0.0,
                 expire_next: int = 0, expired_share: float = 0.5, fail_next: int = 0,
                 max_requests: int = 50_000, max_bytes: int = 200 * 1024 * 1024, port: int = 0):
        self.batch_seconds, self.pfail, self.expired_share = batch_seconds, pfail, expired_share
        self.expire_next, self.fail_next = expire_next, fail_next
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self._reply = SimpleNamespace(pmalformed=pmalformed)
        self.lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.answered: Counter = Counter()
        self.calls: Counter = Counter()  # endpoint -> requests
        self.online_answered: Counter = Counter()  # prompt -> chat completions answered
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                fake.route(self, "GET", b"")

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                fake.route(self, "POST", self.rfile.read(n))

        self.server = _Server(("127.0.0.1", port), Handler)
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

    # ------------------------------------------------------------------ http

    def _send(self, h, status: int, payload, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, h, method: str, body: bytes) -> None:
        path, _, query = h.path.partition("?")
        with self.lock:
            self.calls[method + " " + re.sub(r"/(file|batch)-[0-9a-f]+", r"/{\1}", path)] += 1
        try:
            if method == "POST" and path == "/v1/files":
                return self._send(h, 200, self.upload(h.headers.get("Content-Type", ""), body))
            m = re.fullmatch(r"/v1/files/([\w-]+)(/content)?", path)
            if method == "GET" and m:
                f = self.files.get(m.group(1))
                if f is None:
                    return self._send(h, 404, {"error": {"message": "no such file", "type": "invalid_request_error"}})
                if m.group(2):
                    return self._send(h, 200, f["data"], "application/octet-stream")
                return self._send(h, 200, self._file_obj(m.group(1)))
            if method == "POST" and path == "/v1/chat/completions":  # the online fallback
                return self._send(h, 200, self.chat(json.loads(body or b"{}")))
            if method == "POST" and path == "/v1/batches":
                return self._send(h, 200, self.create(json.loads(body or b"{}")))
            if method == "GET" and path == "/v1/_stats":  # for a benchmark watching from outside
                return self._send(h, 200, self.stats())
            if method == "GET" and path == "/v1/batches":
                q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                return self._send(h, 200, self.listing(int(q.get("limit", 20)), q.get("after")))
            m = re.fullmatch(r"/v1/batches/([\w-]+)(/cancel)?", path)
            if m and m.group(1) in self.batches:
                if method == "POST" and m.group(2):
                    return self._send(h, 200, self.cancel(m.group(1)))
                if method == "GET" and not m.group(2):
                    return self._send(h, 200, self.retrieve(m.group(1)))
            return self._send(h, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}})
        except ValueError as exc:
            return self._send(h, 400, {"error": {"message": str(exc), "type": "invalid_request_error"}})

    def chat(self, req: dict) -> dict:
        prompt = req["messages"][-1]["content"]
        text = FakeLLM.reply_text(self._reply, prompt)
        with self.lock:
            self.online_answered[prompt] += 1
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", "fake"), "usage": {"prompt_tokens": len(prompt) // 4,
                "completion_tokens": len(text) // 4, "total_tokens": len(prompt) // 4 + len(text) // 4},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    def stats(self) -> dict:
        for bid in list(self.batches):
            self.retrieve(bid)  # settle what is due, so an observer sees states change on time
        with self.lock:
            states = Counter(b["status"] for b in self.batches.values())
            return {"batches": len(self.batches), "states": dict(states), "answered": sum(self.answered.values()),
                    "answered_keys": len(self.answered), "answered_twice": sum(1 for v in self.answered.values() if v > 1),
                    "online": sum(self.online_answered.values()), "calls": dict(self.calls)}

    # ------------------------------------------------------------------ files

    def upload(self, content_type: str, body: bytes) -> dict:
        msg = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields, data, name = {}, None, "upload.jsonl"
        for part in msg.iter_parts():
            field = part.get_param("name", header="content-disposition")
            if field == "file":
                data, name = part.get_payload(decode=True), part.get_filename() or name
            else:
                fields[field] = part.get_content().strip()
        if data is None or fields.get("purpose") != "batch":
            raise ValueError("need a file and purpose=batch")
        return self._add_file(data, name, "batch")

    def _add_file(self, data: bytes, name: str, purpose: str) -> dict:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        with self.lock:
            self.files[fid] = {"data": data, "name": name, "purpose": purpose, "created_at": int(time.time())}
        return self._file_obj(fid)

    def _file_obj(self, fid: str) -> dict:
        f = self.files[fid]
        return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["name"], "purpose": f["purpose"], "status": "processed"}

    # ------------------------------------------------------------------ batches

    def create(self, req: dict) -> dict:
        fid = req.get("input_file_id")
        if fid not in self.files:
            raise ValueError(f"no such file {fid!r}")
        bid = f"batch-{uuid.uuid4().hex[:24]}"
        with self.lock:
            fate = "completed"
            if self.fail_next > 0:
                self.fail_next, fate = self.fail_next - 1, "failed"
            elif self.expire_next > 0:
                self.expire_next, fate = self.expire_next - 1, "expired"
            data = self.files[fid]["data"]
            lines = [ln for ln in data.splitlines() if ln.strip()]
            errors = None
            try:
                bad = next((i for i, ln in enumerate(lines) if not {"custom_id", "body"} <= set(json.loads(ln))), None)
            except (json.JSONDecodeError, TypeError):
                bad = -1
            if bad is not None:  # as OpenAI: a malformed input file fails validation as a whole
                fate = "failed"
                errors = {"object": "list", "data": [{"code": "invalid_request", "message": f"line {bad + 1}: "
                          "not a request with custom_id and body"}]}
            elif len(lines) > self.max_requests or len(data) > self.max_bytes:
                fate = "failed"
                errors = {"object": "list", "data": [{"code": "too_large", "message":
                          f"{len(lines)} requests / {len(data)} bytes: over {self.max_requests} / {self.max_bytes}"}]}
            elif fate == "failed":
                errors = {"object": "list", "data": [{"code": "invalid_file", "message": "injected failure"}]}
            b = {"id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": errors,
                 "input_file_id": fid, "completion_window": req.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": req.get("metadata") or None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "_t0": time.monotonic(), "_fate": fate, "_lines": lines, "_seq": len(self.order)}
            self.batches[bid] = b
            self.order.append(bid)
        return self._public(b)

    def _public(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def listing(self, limit: int, after: str | None) -> dict:
        with self.lock:
            ids = self.order[::-1]
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        page = [self.retrieve(i) for i in ids[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit}

    def cancel(self, bid: str) -> dict:
        with self.lock:
            b = self.batches[bid]
            if b["status"] in ("validating", "in_progress", "finalizing"):
                b["_fate"] = "cancelled"
                b["_t0"] = -1e18  # settle at the next look
        return self.retrieve(bid)

    def retrieve(self, bid: str) -> dict:
        with self.lock:
            b = self.batches[bid]
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                return self._public(b)
            age = time.monotonic() - b["_t0"]
            span = self.batch_seconds
            if b["_fate"] == "failed":
                if age >= 0.2 * span:
                    b["status"] = "failed"
                    b["failed_at"] = int(time.time())
            elif age >= span:
                self._settle(b)
            elif age >= 0.8 * span:
                b["status"] = "finalizing"
            elif age >= 0.2 * span:
                b["status"] = "in_progress"
                b["request_counts"] = {"total": len(b["_lines"]), "completed": 0, "failed": 0}
            return self._public(b)

    def _settle(self, b: dict) -> None:
        """Answer the batch's lines (called with the lock held): output and error files."""
        out, err = [], []
        fate = b["_fate"]
        for i, line in enumerate(b["_lines"]):
            req = json.loads(line)
            cid = req["custom_id"]
            d = int(hashlib.sha256(f"{cid}|{b['_seq']}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            rid = f"batch_req_{b['_seq']}_{i}"
            if fate in ("expired", "cancelled") and d >= self.expired_share * (fate == "expired"):
                code = "batch_expired" if fate == "expired" else "batch_cancelled"
                err.append({"id": rid, "custom_id": cid, "response": None,
                            "error": {"code": code, "message": f"This request could not be executed before the batch {fate}."}})
                continue
            if d < self.pfail:
                err.append({"id": rid, "custom_id": cid, "error": None, "response": {
                    "status_code": 500, "request_id": rid,
                    "body": {"error": {"message": "The server had an error", "type": "server_error"}}}})
                continue
            prompt = req["body"]["messages"][-1]["content"]
            text = FakeLLM.reply_text(self._reply, prompt)
            self.answered[cid] += 1
            usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                     "total_tokens": len(prompt) // 4 + len(text) // 4}
            out.append({"id": rid, "custom_id": cid, "error": None, "response": {
                "status_code": 200, "request_id": rid, "body": {
                    "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
                    "model": req["body"].get("model", "fake"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": usage}}})
        now = int(time.time())
        if out:
            b["output_file_id"] = self._add_file_locked("\n".join(map(json.dumps, out)).encode() + b"\n", "output")
        if err:
            b["error_file_id"] = self._add_file_locked("\n".join(map(json.dumps, err)).encode() + b"\n", "errors")
        b["status"] = fate
        b[f"{fate}_at"] = now
        b["request_counts"] = {"total": len(b["_lines"]), "completed": len(out), "failed": len(err)}

    def _add_file_locked(self, data: bytes, kind: str) -> str:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        self.files[fid] = {"data": data, "name": f"batch_{kind}.jsonl", "purpose": "batch_output",
                           "created_at": int(time.time())}
        return fid


def serve_forever(port: int, **kwargs) -> None:
    """Run a server in this process until killed (the benchmark starts it as a child process)."""
    f = FakeBatchServer(port=port, **kwargs)
    f.server.serve_forever()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--batch-seconds", type=float, default=0.0)
    ap.add_argument("--pfail", type=float, default=0.0)
    a = ap.parse_args()
    serve_forever(a.port, batch_seconds=a.batch_seconds, pfail=a.pfail)
