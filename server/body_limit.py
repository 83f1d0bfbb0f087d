"""A request-body cap for vLLM's HTTP server: ASGI middleware loaded with `--middleware`.

vLLM 0.32's server reads any request body whole (a 400 MB body was read, answered 400 after
6 s, and left the server 1.4 GiB larger). This middleware answers HTTP 413 instead:

- a declared `Content-Length` over the cap: at once, before a byte of the body is read;
- a body without one (chunked): as soon as the bytes read pass the cap; the app is told the
  client went away, and its own answer (or error) is dropped.

The 413 closes the connection, so the rest of the body is never read. vLLM imports this class
in every API-server process (`--api-server-count`), so the cap comes from the environment
the launcher gives the engine (`LIMIT_ENV`), not from arguments. Plain ASGI: no vLLM import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from vidchat.errors import ConfigError

LIMIT_ENV = "VIDCHAT_MAX_REQUEST_BYTES"
MIDDLEWARE_PATH = "vidchat.server.body_limit.BodyLimitMiddleware"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def limit_from_env(environ: Mapping[str, str]) -> int:
    """The cap in bytes from `LIMIT_ENV`; a missing or bad value is a ConfigError."""
    raw = environ.get(LIMIT_ENV)
    if raw is None:
        raise ConfigError(f"{LIMIT_ENV} is not set: start the engine with `vidchat serve`, "
                          "which sets it from the profile's max_request_mb")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{LIMIT_ENV} must be a positive number of bytes, got {raw!r}")
    return limit


def refusal(limit: int, size: int | None) -> bytes:
    """The 413 body: one JSON line in vLLM's error shape (the OpenAI SDK reads its message)."""
    what = f"of {size} bytes" if size is not None else "(sent without a length)"
    message = (f"request body {what} is over this server's limit of {limit} bytes "
               f"(max_request_mb {limit / 2**20:g}): send fewer or smaller frames")
    error = {"message": message, "type": "RequestEntityTooLarge", "param": None, "code": 413}
    return json.dumps({"error": error}).encode() + b"\n"


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (or an unreadable one: the
    HTTP server rejects those itself)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answer 413 to request bodies over `limit` bytes (default: from `LIMIT_ENV`)."""

    def __init__(self, app: ASGIApp, limit: int | None = None) -> None:
        self.app = app
        self.limit = limit_from_env(os.environ) if limit is None else limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = declared_length(scope)
        if size is not None and size > self.limit:
            await self._refuse(send, size)
            return

        received = 0
        started = False  # the app began its response: too late for a 413
        refused = False  # ours went out: whatever the app sends now is dropped

        async def capped_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Stop reading: the app sees a client that went away.
                    if not started:
                        refused = True
                        await self._refuse(send, None)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the body cut short (Starlette raises ClientDisconnect from
            # request.body()): expected, and the client already has its 413.

    async def _refuse(self, send: Send, size: int | None) -> None:
        body = refusal(self.limit, size)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            # The unread rest of the body makes the connection useless: close it.
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
