"""The playground's HTTP side: one static page and a small JSON + server-sent-events API.

    GET  /                 the page (static/index.html, its script and style under /static)
    GET  /api/info         the vLLM server, its model and frame limit (or why it is unreachable)
    POST /api/upload?name= the video as the raw request body ──► {id, name, size}
    POST /api/sample       {video | url, frames, fps, start, end, mode} ──► the frames as
                           thumbnails with their times, kept under an id for the questions
    POST /api/ask          {sample, questions, timestamps, max_tokens, temperature} ──►
                           text/event-stream of answers/events (see answers.py)

Every failure is answered as ``{"error": {"type", "message"}}`` (or an ``error`` event): the
page shows it as a message, never a traceback. Built on vidchat.client's public API only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidchat.client import (
    AsyncVideoChat,
    EncodedVideo,
    FetchLimits,
    build_messages,
    encode_video,
    sample_frames,
)
from vidchat.errors import (
    APIError,
    PlaygroundError,
    ServerUnavailableError,
    VidchatError,
)
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.ui.answers import answer_events, error_event, sse
from vidchat.ui.forms import MODES, parse_ask, parse_sample
from vidchat.ui.store import MAX_UPLOAD_BYTES, VideoStore

__all__ = ["LOOPBACK_HOSTS", "create_app"]

log = logging.getLogger("vidchat.ui")
STATIC_DIR = Path(str(resources.files("vidchat.ui") / "static"))
# Host names a loopback-bound playground answers to: a page elsewhere that resolves its own
# name to 127.0.0.1 (DNS rebinding) gets 400 instead of the API.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# A person is watching the page: one quick retry of a 429/503/connection error, then the
# message (they can ask again), rather than the client's several backed-off retries.
PLAYGROUND_MAX_RETRIES = 1


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, PlaygroundError):
        return exc.status_code
    if isinstance(exc, ServerUnavailableError):
        return 503
    if isinstance(exc, APIError):
        return 502
    if isinstance(exc, VidchatError):
        return 400  # the video, the sampling values or the budget: the user can fix it
    return 500


def _error_response(exc: BaseException) -> JSONResponse:
    event = error_event(exc)
    return JSONResponse({"error": {"type": event["type"], "message": event["message"]}},
                        status_code=_status_of(exc))


async def _json_body(request: Request) -> Any:
    # A cross-site form can post text/plain without asking; JSON needs a CORS preflight,
    # which this app never grants.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise PlaygroundError("send JSON (Content-Type: application/json)", status_code=415)
    try:
        return await request.json()
    except ValueError:
        raise PlaygroundError("the request body is not valid JSON") from None


def _frame_labels(video: EncodedVideo) -> list[str]:
    """Each frame's time label exactly as the model reads it with timestamps on ("Frame at
    0:01.5:"), taken from the messages the client builds."""
    content = build_messages(video, "?", timestamps=True)[0]["content"]
    return [part["text"] for part in content[:-1] if part["type"] == "text"]


class Playground:
    """The state behind the routes: one client for the vLLM server, and the video store."""

    def __init__(self, server: str | None, *, api_key: str | None, model: str | None,
                 max_retries: int, fetch_limits: FetchLimits | None,
                 store: VideoStore) -> None:
        self.fetch_limits = fetch_limits or FetchLimits()
        self._connect = dict(base_url=server, api_key=api_key, model=model,
                             max_retries=max_retries)
        self.chat = AsyncVideoChat(**self._connect, fetch_limits=self.fetch_limits)
        self.store = store

    async def info(self, request: Request) -> Response:
        body: dict[str, Any] = {"server": self.chat.base_url, "modes": list(MODES),
                                "max_upload_bytes": self.store.max_upload_bytes}
        try:
            # A fresh client each time: the questions' client keeps the limits it read
            # first, and "Check again" must say whether the server is there now.
            async with AsyncVideoChat(**self._connect) as probe:
                limits = await probe.limits()
        except VidchatError as exc:
            body["error"] = {"type": type(exc).__name__, "message": str(exc)}
        else:
            body |= {"model": limits.model, "max_model_len": limits.max_model_len,
                     "max_frames": limits.max_frames}
        return JSONResponse(body)

    async def upload(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0] != "application/octet-stream":
            raise PlaygroundError("upload the video as application/octet-stream",
                                  status_code=415)
        declared = request.headers.get("content-length")
        upload = await self.store.save_upload(
            request.query_params.get("name", "video"), request.stream(),
            int(declared) if declared and declared.isdigit() else None)
        return JSONResponse({"id": upload.id, "name": upload.name, "size": upload.size})

    async def sample(self, request: Request) -> Response:
        form = parse_sample(await _json_body(request))
        if form.video_id is not None:
            upload = self.store.upload(form.video_id)
            source, label = str(upload.path), upload.name
        else:
            source = label = str(form.url)  # fetched by the client's safe downloader
        t0 = time.perf_counter()
        frames = await asyncio.to_thread(sample_frames, source, form.frames,
                                         fetch_limits=self.fetch_limits, **form.sampling)
        sample_s = time.perf_counter() - t0
        video = await asyncio.to_thread(encode_video, frames)
        info = {"source": label, "frames": len(frames), "duration": frames.duration,
                "backend": frames.backend, "sample_s": sample_s,
                "encode_s": time.perf_counter() - t0 - sample_s,
                "bytes": video.payload_bytes, "image_tokens": len(frames) * TOKENS_PER_IMAGE,
                "sampling": {"frames": form.frames, **form.sampling}}
        kept = self.store.keep_sample(video, info)
        thumbs = [{"t": f.timestamp, "index": i, "label": label, "src": f.data_url}
                  for f, i, label in zip(video.frames, frames.indices, _frame_labels(video),
                                         strict=True)]
        return JSONResponse({"id": kept.id, **info, "thumbnails": thumbs})

    async def ask(self, request: Request) -> Response:
        form = parse_ask(await _json_body(request))
        sampled = self.store.sample(form.sample_id)

        async def events() -> AsyncIterator[bytes]:
            async for event in answer_events(self.chat, sampled.video, form.questions,
                                             timestamps=form.timestamps, gen=form.gen):
                yield sse(event)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def close(self) -> None:
        await self.chat.close()
        self.store.close()


def _guarded(handler: Any) -> Any:
    """A route whose failures become JSON messages (status from the error's kind)."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
            return _error_response(exc)

    return route


def create_app(server: str | None = None, *, api_key: str | None = None,
               model: str | None = None, max_retries: int = PLAYGROUND_MAX_RETRIES,
               fetch_limits: FetchLimits | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, upload_root: str | None = None,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The playground as an ASGI app, talking to the vLLM server at ``server`` (default:
    $VIDCHAT_BASE_URL or http://127.0.0.1:8000/v1). Uploads live in a temporary directory
    under ``upload_root`` (default: the system's) that is removed on shutdown.
    ``allowed_hosts``: Host header values answered (None: any)."""
    state: dict[str, Playground] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = VideoStore(upload_root, max_upload_bytes=max_upload_bytes)
        state["pg"] = Playground(server, api_key=api_key, model=model,
                                 max_retries=max_retries, fetch_limits=fetch_limits,
                                 store=store)
        try:
            yield
        finally:
            await state.pop("pg").close()

    def handler(name: str) -> Any:
        return _guarded(lambda request: getattr(state["pg"], name)(request))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/info", handler("info")),
        Route("/api/upload", handler("upload"), methods=["POST"]),
        Route("/api/sample", handler("sample"), methods=["POST"]),
        Route("/api/ask", handler("ask"), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = ([Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)]
                  if allowed_hosts else [])
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
