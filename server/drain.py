"""Refuse new requests while the engine drains: ASGI middleware loaded with `--middleware`.

With several API processes, vLLM 0.32's own SIGTERM path stops them at once and cuts the
answers in flight, so the launcher drains the engine core first (launcher.py). While it
drains, the engine refuses new requests by aborting them, and an API process would answer
such a request 200 with an empty answer. So before any drain the launcher creates a flag
file (its path in `DRAIN_ENV`, given to every API process); from then on this middleware
answers every new request 503 with a one-line reason and `Retry-After` (retried by clients,
and routers move on), while requests already past it run to the end.

The check is one `stat` per request. Without `DRAIN_ENV` (the engine started by hand) it
does nothing. Plain ASGI: no vLLM import.
"""

from __future__ import annotations

import json
import os

from vidchat.server.body_limit import ASGIApp, Receive, Scope, Send

DRAIN_ENV = "VIDCHAT_DRAIN_FLAG"
MIDDLEWARE_PATH = "vidchat.server.drain.DrainMiddleware"
RETRY_AFTER_S = 1

REFUSAL = json.dumps({"error": {
    "message": "the server is shutting down: retry in a moment, or on another replica",
    "type": "ServiceUnavailable", "param": None, "code": 503,
}}).encode() + b"\n"


class DrainMiddleware:
    """Answer 503 to every new HTTP request once the file at `flag` exists."""

    def __init__(self, app: ASGIApp, flag: str | None = None) -> None:
        self.app = app
        self.flag = os.environ.get(DRAIN_ENV) if flag is None else flag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.flag and os.path.exists(self.flag):
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REFUSAL)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
                (b"connection", b"close"),
            ]})
            await send({"type": "http.response.body", "body": REFUSAL})
            return
        await self.app(scope, receive, send)
