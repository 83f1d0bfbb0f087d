"""The request-body cap (vidchat.server.body_limit) on the ASGI protocol, and under FastAPI (the
framework vLLM's server is built on). The real server: tests/test_frontend.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from vidchat.errors import ConfigError
from vidchat.server.body_limit import LIMIT_ENV, BodyLimitMiddleware, limit_from_env

LIMIT = 1000


class Peer:
    """The HTTP server's side of one request: hands out body chunks, records what is sent."""

    def __init__(self, chunks: list[bytes], *, declared: int | None = None) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.sent: list[dict] = []
        headers = [(b"content-type", b"application/json")]
        if declared is not None:
            headers.append((b"content-length", str(declared).encode()))
        self.scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                      "headers": headers}

    async def receive(self) -> dict:
        self.reads += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent
                        if m["type"] == "http.response.body")

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])


class EchoApp:
    """Reads the whole body as an app does, answers 200 with its length (or 400 if the
    client went away mid-body, as FastAPI does)."""

    def __init__(self) -> None:
        self.calls = 0
        self.saw_disconnect = False

    async def __call__(self, scope: dict, receive, send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.saw_disconnect = True
                status, body = 400, b"There was an error parsing the body"
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                status, body = 200, str(len(body)).encode()
                break
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})


def run(peer: Peer, app: EchoApp, limit: int = LIMIT) -> None:
    asyncio.run(BodyLimitMiddleware(app, limit=limit)(peer.scope, peer.receive, peer.send))


def test_a_declared_length_over_the_cap_is_413_before_any_body_is_read():
    peer, app = Peer([b"x" * 10], declared=LIMIT + 1), EchoApp()
    run(peer, app)
    assert peer.status == 413
    assert peer.reads == 0 and app.calls == 0  # neither the body nor the app was touched
    assert peer.headers[b"connection"] == b"close"
    assert peer.headers[b"content-type"] == b"application/json"
    line = peer.body.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    error = json.loads(line)["error"]
    assert error["code"] == 413
    assert f"of {LIMIT + 1} bytes" in error["message"] and f"limit of {LIMIT}" in error["message"]


def test_a_body_at_the_cap_passes_whole():
    peer, app = Peer([b"x" * 600, b"y" * 400], declared=LIMIT), EchoApp()
    run(peer, app)
    assert (peer.status, peer.body) == (200, b"1000")


def test_a_body_without_a_length_is_stopped_once_it_passes_the_cap():
    chunks = [b"x" * 400] * 10  # 4000 bytes, chunked
    peer, app = Peer(chunks), EchoApp()
    run(peer, app)
    assert peer.status == 413 and b"sent without a length" in peer.body
    assert peer.reads == 3  # 400, 800, 1200: the third chunk passed the cap; no more read
    assert app.saw_disconnect  # the app was told the client went away...
    assert [m["status"] for m in peer.sent if m["type"] == "http.response.start"] == [413]
    # ...and its own answer to that (a 400) was dropped: one response, ours.


def test_a_body_without_a_length_under_the_cap_passes():
    peer, app = Peer([b"x" * 300] * 3), EchoApp()
    run(peer, app)
    assert (peer.status, peer.body) == (200, b"900")


def test_non_http_scopes_pass_through():
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    for kind in ("lifespan", "websocket"):
        asyncio.run(BodyLimitMiddleware(app, limit=1)({"type": kind}, None, None))
    assert seen == ["lifespan", "websocket"]


def test_the_cap_comes_from_the_environment():
    assert limit_from_env({LIMIT_ENV: "5242880"}) == 5242880
    for bad in ({}, {LIMIT_ENV: "0"}, {LIMIT_ENV: "5MB"}):
        with pytest.raises(ConfigError, match=LIMIT_ENV):
            limit_from_env(bad)


@pytest.fixture
def fastapi_client() -> Iterator[TestClient]:
    """A FastAPI app that parses a JSON body as vLLM's endpoints do, behind the middleware
    added the way vLLM adds `--middleware` classes (`app.add_middleware`)."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"keys": len(await request.json())}

    app.add_middleware(BodyLimitMiddleware, limit=LIMIT)
    with TestClient(app) as client:
        yield client


def test_under_fastapi_small_bodies_pass_and_large_ones_get_413(fastapi_client):
    ok = fastapi_client.post("/echo", json={"a": 1})
    assert ok.status_code == 200 and ok.json() == {"keys": 1}
    declared = fastapi_client.post("/echo", content=b"{" + b" " * 5000 + b"}")
    assert declared.status_code == 413 and declared.json()["error"]["code"] == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"a": "'
        for _ in range(10):
            yield b"x" * 400
        yield b'"}'

    streamed = fastapi_client.post("/echo", content=chunks())
    # FastAPI's own answer to the cut body would be a 400; the client sees the 413.
    assert streamed.status_code == 413, streamed.text
    assert "sent without a length" in streamed.json()["error"]["message"]
