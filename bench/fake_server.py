"""A loopback OpenAI-compatible server that answers at once: the client's ceiling.

It speaks just enough of vLLM's API for vidchat's client and `vidchat bench`: /health,
/v1/models (with max_model_len), /metrics (the prefix-cache and multimodal-cache counters),
and /v1/chat/completions, streamed or not, with max_tokens tokens of answer, usage, and the
per-frame uuid cache (an unknown uuid sent without data answers vLLM's HTTP 400 "Cache miss
for image at index N but data is not provided."). Nothing is decoded or generated: whatever
rate `vidchat bench` reaches against it is the client's own limit.

    python bench/fake_server.py --port 8400          # until Ctrl-C
    with running_fake_server() as url: ...           # a subprocess on a free port

asyncio + h11 (httpx's own HTTP/1.1 parser), so it needs nothing beyond the client's deps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h11

from vidchat.serve_process import free_port

TOKENS_PER_IMAGE = 729  # vidchat.limits.TOKENS_PER_IMAGE, kept literal: this file stands alone
MODEL = "fake-llava-interleave-qwen"
MAX_MODEL_LEN = 32768
MAX_BODY_BYTES = 64 * 2**20
READ_CHUNK = 256 * 1024
STARTUP_TIMEOUT_S = 30.0


class FakeEngine:
    """The state a real server would have: seen frame uuids and cache counters."""

    def __init__(self, model: str = MODEL, max_model_len: int = MAX_MODEL_LEN,
                 delay_s: float = 0.0) -> None:
        self.model = model
        self.delay_s = delay_s  # before each chat answer (tests of the client's deadline)
        self.max_model_len = max_model_len
        self.seen: set[str] = set()
        self.counters = {"prefix_cache_queries": 0, "prefix_cache_hits": 0,
                         "mm_cache_queries": 0, "mm_cache_hits": 0}
        self.requests = 0

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": self.model, "object": "model", "created": 0, "owned_by": "vidchat",
            "root": self.model, "max_model_len": self.max_model_len}]}

    def metrics(self) -> str:
        labels = f'{{engine="0",model_name="{self.model}"}}'
        lines = []
        for name, value in self.counters.items():
            lines += [f"# TYPE vllm:{name} counter", f"vllm:{name}_total{labels} {value}.0"]
        return "\n".join(lines) + "\n"

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str | None]:
        """(status, error body or None, None) or (200, None, answer text) for one request."""
        self.requests += 1
        images, hits, text_chars = 0, 0, 0
        for message in body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                text_chars += len(content)
                continue
            for part in content or []:
                if part.get("type") == "text":
                    text_chars += len(part.get("text") or "")
                elif part.get("type") == "image_url":
                    uid = part.get("uuid")
                    data = part.get("image_url")
                    if not data:
                        if uid not in self.seen:
                            return 400, _error(f"Cache miss for image at index {images} but "
                                               "data is not provided."), None
                        hits += 1
                    elif uid is not None:
                        hits += uid in self.seen
                        self.seen.add(uid)
                    images += 1
        prompt = images * TOKENS_PER_IMAGE + text_chars // 4 + 12
        self.counters["mm_cache_queries"] += images
        self.counters["mm_cache_hits"] += hits
        self.counters["prefix_cache_queries"] += prompt
        self.counters["prefix_cache_hits"] += hits * TOKENS_PER_IMAGE
        return 200, None, str(prompt)


def _error(message: str, status: int = 400) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "param": None,
                      "code": status}}


def _completion(body: dict[str, Any], model: str, prompt_tokens: int) -> tuple[bytes, bool]:
    """The response body (SSE when streamed) and whether it is an event stream."""
    n = int(body.get("max_tokens") or 16)
    rid, created = f"chatcmpl-fake{time.monotonic_ns()}", int(time.time())
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n,
             "total_tokens": prompt_tokens + n}
    if not body.get("stream"):
        return json.dumps({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": " tok" * n}}],
            "usage": usage}).encode(), False

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return "data: " + json.dumps({
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": " tok"}) for _ in range(n - 1)]
    events.append(chunk({"content": " tok"}, "length"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append("data: " + json.dumps({
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage}) + "\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events).encode(), True


async def _handle(engine: FakeEngine, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
    try:
        while True:
            request, body = None, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(READ_CHUNK)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if request is None:
                return
            if engine.delay_s and request.method == b"POST":
                await asyncio.sleep(engine.delay_s)
            status, payload, ctype = _route(engine, request, bytes(body))
            headers = [(b"content-type", ctype), (b"content-length", str(len(payload)))]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            writer.write(conn.send(h11.Data(data=payload)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, ConnectionError):
        return
    finally:
        writer.close()


def _route(engine: FakeEngine, request: h11.Request, body: bytes) -> tuple[int, bytes, bytes]:
    path = request.target.split(b"?")[0]
    method = request.method
    if method == b"GET" and path == b"/health":
        return 200, b"", b"text/plain"
    if method == b"GET" and path == b"/v1/models":
        return 200, json.dumps(engine.models()).encode(), b"application/json"
    if method == b"GET" and path == b"/metrics":
        return 200, engine.metrics().encode(), b"text/plain; version=0.0.4"
    if method == b"POST" and path == b"/v1/chat/completions":
        try:
            data = json.loads(body)
        except ValueError:
            return 400, json.dumps(_error("body is not JSON")).encode(), b"application/json"
        status, err, prompt = engine.chat(data)
        if err is not None or prompt is None:
            return status, json.dumps(err).encode(), b"application/json"
        payload, streamed = _completion(data, engine.model, int(prompt))
        return 200, payload, b"text/event-stream" if streamed else b"application/json"
    return 404, json.dumps(_error("not found", 404)).encode(), b"application/json"


async def serve(host: str, port: int, engine: FakeEngine | None = None) -> None:
    engine = engine or FakeEngine()
    server = await asyncio.start_server(lambda r, w: _handle(engine, r, w), host, port,
                                        limit=READ_CHUNK)
    print(f"fake server ready at http://{host}:{port}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()



@contextmanager
def running_fake_server(port: int = 0, delay_s: float = 0.0) -> Iterator[str]:
    """The fake server in a subprocess (so it never shares the client's GIL); yields the
    base URL (…/v1) once /health answers, and stops it on exit."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port),
                             "--delay-s", str(delay_s)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"fake server exited with {proc.returncode}: {err[-500:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("fake server failed to start in time") from None
                time.sleep(0.05)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--delay-s", type=float, default=0.0,
                        help="wait this long before each chat answer")
    args = parser.parse_args()
    if not (args.host.startswith("127.") or args.host in ("localhost", "::1")):
        parser.error("the fake server binds loopback addresses only")
    asyncio.run(serve(args.host, args.port, FakeEngine(args.model, delay_s=args.delay_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
