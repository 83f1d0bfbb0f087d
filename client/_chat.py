"""VideoChat and AsyncVideoChat: video in, answer out, over the OpenAI SDK.

Sync and async share every decision (request body, frame budget, error mapping, frame cache);
they differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from vidchat.client import _constants as C
from vidchat.client._messages import EncodedVideo, content_parts, encode_video
from vidchat.client._remote import FetchLimits
from vidchat.client._sampling import Frames, sample_frames
from vidchat.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    FrameBudgetError,
    OverloadedError,
    ServerUnavailableError,
    StreamInterruptedError,
    VidchatError,
)
from vidchat.limits import TOKENS_PER_IMAGE, max_frames_for_context

VideoInput = str | os.PathLike[str] | Frames | EncodedVideo


@dataclass
class Answer:
    """One answer, with what it cost."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    frames: int
    bytes_sent: int  # image payload bytes uploaded for this request (0 when all were cached)
    timings: dict[str, float] = field(default_factory=dict)
    logprobs: list[Any] | None = None
    """Per generated token, the SDK's ``ChatCompletionTokenLogprob`` (with its
    ``top_logprobs``), when the request asked for ``logprobs=True``."""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if self.logprobs is not None:
            out["logprobs"] = [lp.model_dump() for lp in self.logprobs]
        return out


@dataclass(frozen=True)
class ServerLimits:
    model: str
    max_model_len: int

    @property
    def max_frames(self) -> int:
        # Profiles size max_model_len as frames x 729 + a text reserve, so this inverts it.
        return max_frames_for_context(self.max_model_len)


class _UploadedFrames:
    """uuids this client has uploaded to the server recently (thread-safe LRU)."""

    def __init__(self, capacity: int = C.UUID_MEMORY) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def all_known(self, uuids: Iterable[str]) -> bool:
        with self._lock:
            return all(u in self._seen for u in uuids)

    def add(self, uuids: Iterable[str]) -> None:
        with self._lock:
            for u in uuids:
                self._seen[u] = None
                self._seen.move_to_end(u)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)

    def forget(self, uuids: Iterable[str]) -> None:
        with self._lock:
            for u in uuids:
                self._seen.pop(u, None)


def map_error(exc: Exception) -> VidchatError:
    """An OpenAI SDK / transport error -> vidchat's error tree (one sentence, data attached)."""
    if isinstance(exc, VidchatError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.response.status_code
        detail = _server_message(exc)
        if status == 400 or status == 422:
            return BadRequestError(f"the server rejected the request (HTTP {status}): {detail}",
                                   status_code=status, body=exc.body)
        if status == 413:
            return BadRequestError(
                "the request is larger than the server accepts (HTTP 413): send fewer frames",
                status_code=status, body=exc.body)
        if status in (401, 403):
            return AuthenticationError(
                f"the server refused the API key (HTTP {status}): set {C.API_KEY_ENV} to the "
                "server's key", status_code=status, body=exc.body)
        if status in (429, 503):
            return OverloadedError(
                f"the server stayed overloaded (HTTP {status}) through every retry: retry later, "
                "lower the concurrency, or add replicas", status_code=status, body=exc.body)
        return APIError(f"the server answered HTTP {status}: {detail}", status_code=status,
                        body=exc.body)
    if isinstance(exc, openai.APITimeoutError):
        return ServerUnavailableError("the server did not answer in time: check it is running "
                                      "and not overloaded, or raise timeout=")
    if isinstance(exc, openai.APIConnectionError):
        return ServerUnavailableError(f"cannot reach the server ({exc.__cause__ or exc}): is "
                                      "`vidchat serve` running at that URL?")
    if isinstance(exc, (httpx.HTTPError, ConnectionError)):
        return StreamInterruptedError(f"the answer stream broke off ({exc.__class__.__name__}): "
                                      "ask again; streams are not retried automatically")
    return APIError(f"unexpected error talking to the server: {exc!r}")


# How a complete answer ends. vLLM also reports "abort" (the request was cancelled, e.g. its
# engine went away) and "error" (an internal failure): the text so far is not the answer.
COMPLETE_FINISH_REASONS = frozenset({"stop", "length", "repetition", "tool_calls"})


class _StreamTally:
    """Follows a streamed answer: the text of each chunk, the finish reason and usage, and
    whether it ended as an answer should rather than stopping short."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.model = ""
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.started = False
        """True once a chunk with a choice arrived: the server has prefilled the prompt."""
        self.logprobs: list[Any] | None = None

    def text_of(self, chunk: Any) -> str | None:
        self.model = chunk.model or self.model
        if chunk.usage:
            self.usage = chunk.usage
        if not chunk.choices:
            return None
        self.started = True
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        if choice.logprobs is not None and choice.logprobs.content:
            self.logprobs = [*(self.logprobs or []), *choice.logprobs.content]
        text = choice.delta.content or None
        if text:
            self.pieces.append(text)
        return text

    def check(self) -> None:
        if self.finish_reason not in COMPLETE_FINISH_REASONS:
            how = (f"ended with finish_reason={self.finish_reason!r}" if self.finish_reason
                   else "ended without a finish reason")
            raise StreamInterruptedError(f"the answer stream {how}: the text so far is not the "
                                         "whole answer; ask again")

    def answer(self, video: EncodedVideo, sent: int, timings: dict[str, float]) -> Answer:
        return _answer("".join(self.pieces), self.model, self.finish_reason, self.usage, video,
                       sent, timings, self.logprobs)


def _answer(text: str, model: str, finish_reason: str | None, usage: Any, video: EncodedVideo,
            sent: int, timings: dict[str, float], logprobs: list[Any] | None = None) -> Answer:
    return Answer(
        text=text,
        model=model,
        finish_reason=finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        frames=len(video),
        bytes_sent=sent,
        timings=timings,
        logprobs=logprobs,
    )


def _broken_stream(exc: Exception) -> VidchatError:
    if isinstance(exc, VidchatError):
        return exc
    return StreamInterruptedError(
        f"the answer stream broke off ({exc.__class__.__name__}): ask again; streams are not "
        "retried automatically")


class ChunkStream:
    """A streamed chat completion as the OpenAI SDK's ``ChatCompletionChunk`` objects, after
    vidchat's checks (frame budget, frame cache, session header). Iterate it once; close it
    (or use ``with``) if you stop early. A broken stream raises StreamInterruptedError."""

    def __init__(self, resp: Any, bytes_sent: int) -> None:
        self._resp = resp
        self.bytes_sent = bytes_sent
        """Image bytes this request uploaded (0 when the server had every frame cached)."""

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._resp
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            raise _broken_stream(exc) from exc

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChunkStream:
    """The asyncio twin of ChunkStream."""

    def __init__(self, resp: Any, bytes_sent: int) -> None:
        self._resp = resp
        self.bytes_sent = bytes_sent

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._resp:
                yield chunk
        except Exception as exc:  # noqa: BLE001
            raise _broken_stream(exc) from exc

    async def close(self) -> None:
        await self._resp.close()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:300]
    return str(exc.message)[:300]


def _is_cache_miss(exc: Exception) -> bool:
    return isinstance(exc, openai.BadRequestError) and C.CACHE_MISS_MARKER in str(exc)


class _Core:
    """Everything both clients decide without doing I/O."""

    def __init__(self, base_url: str | None, api_key: str | None, model: str | None,
                 frame_cache: bool, fetch_limits: FetchLimits | None = None) -> None:
        self.fetch_limits = fetch_limits
        self.base_url = (base_url or C.default_base_url()).rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key = api_key or C.default_api_key()
        self.model = model
        self.frame_cache = frame_cache
        self.uploaded = _UploadedFrames()
        self.limits: ServerLimits | None = None

    def prepare(self, video: VideoInput, frames: int, sampling: dict[str, Any]) -> EncodedVideo:
        if isinstance(video, (EncodedVideo, Frames)):
            return encode_video(video)
        return encode_video(sample_frames(video, frames, fetch_limits=self.fetch_limits,
                                          **sampling))

    def check_budget(self, video: EncodedVideo, question: str, max_tokens: int) -> None:
        limits = self.limits
        if limits is None:
            return
        if len(video) > limits.max_frames:
            raise FrameBudgetError(
                f"{len(video)} frames exceed the server's limit of {limits.max_frames} per "
                f"request (max_model_len {limits.max_model_len}): ask with frames="
                f"{limits.max_frames} or fewer")
        # A byte-level BPE never needs more tokens than UTF-8 bytes: a safe upper bound.
        text_tokens = len(question.encode()) + 32
        need = len(video) * TOKENS_PER_IMAGE + text_tokens + max_tokens
        if need > limits.max_model_len:
            raise FrameBudgetError(
                f"{len(video)} frames ({len(video) * TOKENS_PER_IMAGE} tokens), the question and "
                f"max_tokens={max_tokens} need up to {need} tokens but the server's context is "
                f"{limits.max_model_len}: use fewer frames or a smaller max_tokens")

    def body(self, video: EncodedVideo, question: str, timestamps: bool, send_data: bool,
             gen: dict[str, Any]) -> tuple[dict[str, Any], int]:
        parts = content_parts(video, question, timestamps=timestamps,
                              with_uuid=self.frame_cache, with_data=send_data)
        kwargs = {"max_tokens": C.DEFAULT_MAX_TOKENS, "temperature": 0.0, **gen}
        extra_body = kwargs.pop("extra_body", None) or {}
        for key in ("ignore_eos", "top_k", "min_p", "min_tokens", "repetition_penalty",
                    "skip_special_tokens", "cache_salt",
                    "return_tokens_as_token_ids"):  # vLLM parameters the SDK lacks
            if key in kwargs:
                extra_body[key] = kwargs.pop(key)
        headers = {C.SESSION_HEADER: video.key, **(kwargs.pop("extra_headers", None) or {})}
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": parts}],
            "extra_headers": headers,
            **kwargs,
        }
        if extra_body:
            body["extra_body"] = extra_body
        return body, (video.payload_bytes if send_data else 0)

    def should_send_data(self, video: EncodedVideo) -> bool:
        return not (self.frame_cache and self.uploaded.all_known(f.uuid for f in video.frames))

    def answer(self, resp: Any, video: EncodedVideo, sent: int, timings: dict[str, float]
               ) -> Answer:
        choice = resp.choices[0]
        logprobs = choice.logprobs.content if choice.logprobs is not None else None
        return _answer(choice.message.content or "", resp.model, choice.finish_reason,
                       resp.usage, video, sent, timings, logprobs)

    def limits_from(self, listing: Any) -> ServerLimits:
        models = list(listing.data)
        if not models:
            raise APIError("the server lists no model: is it a vLLM server started by vidchat?")
        chosen = next((m for m in models if m.id == self.model), None) if self.model else None
        if self.model and chosen is None:
            names = ", ".join(m.id for m in models)
            raise VidchatError(f"the server does not serve {self.model!r}: it has {names}")
        chosen = chosen or models[0]
        max_len = getattr(chosen, "max_model_len", None) or (chosen.model_extra or {}).get(
            "max_model_len")
        return ServerLimits(chosen.id, int(max_len) if max_len else 32768)


class VideoChat:
    """Ask questions about videos. Thread-safe; one instance can serve many threads.

    >>> chat = VideoChat("http://127.0.0.1:8000/v1")
    >>> chat.ask("clip.mp4", "What happens?").text
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 model: str | None = None, timeout: float = C.DEFAULT_TIMEOUT_S,
                 max_retries: int = C.DEFAULT_MAX_RETRIES, frame_cache: bool = True,
                 default_headers: dict[str, str] | None = None,
                 fetch_limits: FetchLimits | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self._core = _Core(base_url, api_key, model, frame_cache, fetch_limits)
        self.client = openai.OpenAI(
            base_url=self._core.base_url, api_key=self._core.api_key,
            timeout=httpx.Timeout(timeout, connect=C.CONNECT_TIMEOUT_S),
            max_retries=max_retries, default_headers=default_headers, http_client=http_client)
        self._limits_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The server's OpenAI API root, ending in /v1."""
        return self._core.base_url

    def limits(self) -> ServerLimits:
        """The served model and its context, read once from /v1/models."""
        with self._limits_lock:
            if self._core.limits is None:
                try:
                    listing = self.client.models.list()
                except Exception as exc:  # noqa: BLE001 - mapped to the error tree
                    raise map_error(exc) from exc
                self._core.limits = self._core.limits_from(listing)
                self._core.model = self._core.model or self._core.limits.model
            return self._core.limits

    def prepare(self, video: VideoInput, frames: int = 8, **sampling: Any) -> EncodedVideo:
        """Sample and encode a video once, for any number of questions."""
        return self._core.prepare(video, frames, sampling)

    def ask(self, video: VideoInput, question: str, frames: int = 8, *,
            timestamps: bool = False, sampling: dict[str, Any] | None = None,
            **gen: Any) -> Answer:
        """Ask one question; `gen` goes to chat.completions.create (max_tokens, temperature...)."""
        t0 = time.perf_counter()
        enc = self._core.prepare(video, frames, sampling or {})
        t1 = time.perf_counter()
        self.limits()
        self._core.check_budget(enc, question, gen.get("max_tokens", C.DEFAULT_MAX_TOKENS))
        send = self._core.should_send_data(enc)
        resp, sent = self._create(enc, question, timestamps, send, gen)
        t2 = time.perf_counter()
        return self._core.answer(resp, enc, sent, {"prepare_s": t1 - t0, "request_s": t2 - t1})

    def _create(self, enc: EncodedVideo, question: str, timestamps: bool, send: bool,
                gen: dict[str, Any], stream: bool = False) -> tuple[Any, int]:
        body, sent = self._core.body(enc, question, timestamps, send, gen)
        uuids = [f.uuid for f in enc.frames]
        try:
            resp = self.client.chat.completions.create(**body, stream=stream)
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            if not send and _is_cache_miss(exc):
                # The server evicted frames we sent earlier: upload them once more.
                self._core.uploaded.forget(uuids)
                return self._create(enc, question, timestamps, True, gen, stream)
            raise map_error(exc) from exc
        if self._core.frame_cache:
            self._core.uploaded.add(uuids)
        return resp, sent

    def open_stream(self, video: VideoInput, question: str, frames: int = 8, *,
                    timestamps: bool = False, sampling: dict[str, Any] | None = None,
                    **gen: Any) -> ChunkStream:
        """Send one question as a streamed request and return its raw chunks (timing each
        chunk, reading usage with ``stream_options={"include_usage": True}``...)."""
        enc = self._core.prepare(video, frames, sampling or {})
        self.limits()
        self._core.check_budget(enc, question, gen.get("max_tokens", C.DEFAULT_MAX_TOKENS))
        resp, sent = self._create(enc, question, timestamps, self._core.should_send_data(enc),
                                  gen, stream=True)
        return ChunkStream(resp, sent)

    def stream(self, video: VideoInput, question: str, frames: int = 8, *,
               timestamps: bool = False, sampling: dict[str, Any] | None = None,
               **gen: Any) -> Iterator[str]:
        """Yield the answer's text as it is generated. A broken stream, or one that ends
        short of a complete answer, raises StreamInterruptedError (never retried silently:
        part of the answer was already seen)."""
        tally = _StreamTally()
        with self.open_stream(video, question, frames, timestamps=timestamps,
                              sampling=sampling, **gen) as chunks:
            for chunk in chunks:
                if text := tally.text_of(chunk):
                    yield text
        tally.check()

    def ask_many(self, video: VideoInput, questions: Sequence[str], frames: int = 8, *,
                 concurrency: int = C.DEFAULT_CONCURRENCY, timestamps: bool = False,
                 sampling: dict[str, Any] | None = None, **gen: Any) -> list[Answer]:
        """Several questions about one video: sample and encode once, send the first
        question, and release the rest concurrently as soon as its answer starts - the
        frames are then in the server's prefix and frame caches, so the others reuse them
        and send frame ids instead of the frames."""
        if not questions:
            return []
        enc = self.prepare(video, frames, **(sampling or {}))
        rest: list[Any] = []
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(questions) - 1))) as ex:

            def release() -> None:
                if not rest:
                    rest.extend(ex.submit(self.ask, enc, q, timestamps=timestamps, **gen)
                                for q in questions[1:])

            try:
                first = self._ask_streamed(enc, questions[0], timestamps, gen, release)
            except BaseException:
                ex.shutdown(cancel_futures=True)
                raise
            release()  # a single question, or an answer that never started
            return [first, *(f.result() for f in rest)]

    def _ask_streamed(self, enc: EncodedVideo, question: str, timestamps: bool,
                      gen: dict[str, Any], on_start: Callable[[], None]) -> Answer:
        """`ask`, streamed, calling ``on_start`` when the answer starts. A stream that breaks
        before its answer starts is asked again as a plain `ask` (which the SDK retries), as
        it would have been without streaming: nothing of it was seen yet."""
        t0 = time.perf_counter()
        tally = _StreamTally()
        try:
            with self.open_stream(enc, question, timestamps=timestamps,
                                  **{**gen, "stream_options": {"include_usage": True}}
                                  ) as chunks:
                for chunk in chunks:
                    tally.text_of(chunk)
                    if tally.started:
                        on_start()
        except StreamInterruptedError:
            if tally.started:
                raise
            return self.ask(enc, question, timestamps=timestamps, **gen)
        tally.check()
        return tally.answer(enc, chunks.bytes_sent, {"prepare_s": 0.0,
                                                     "request_s": time.perf_counter() - t0})

    def batch(self, items: Iterable[tuple[VideoInput, str]], *,
              concurrency: int = C.DEFAULT_CONCURRENCY, frames: int = 8, progress: bool = True,
              **gen: Any) -> list[Answer | VidchatError]:
        """Many (video, question) pairs at once. Results keep the input order; a failed item
        holds its VidchatError instead of an Answer, so nothing is lost."""
        from tqdm import tqdm

        items = list(items)
        results: list[Answer | VidchatError] = [VidchatError("not run")] * len(items)

        def run(i: int) -> None:
            video, question = items[i]
            try:
                results[i] = self.ask(video, question, frames, **gen)
            except VidchatError as exc:
                results[i] = exc

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex, tqdm(
            total=len(items), disable=not progress, unit="q", desc="vidchat") as bar:
            for _ in as_completed([ex.submit(run, i) for i in range(len(items))]):
                bar.update()
        return results

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> VideoChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncVideoChat:
    """The asyncio twin of VideoChat: sampling and encoding run in worker threads."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 model: str | None = None, timeout: float = C.DEFAULT_TIMEOUT_S,
                 max_retries: int = C.DEFAULT_MAX_RETRIES, frame_cache: bool = True,
                 default_headers: dict[str, str] | None = None,
                 fetch_limits: FetchLimits | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._core = _Core(base_url, api_key, model, frame_cache, fetch_limits)
        self.client = openai.AsyncOpenAI(
            base_url=self._core.base_url, api_key=self._core.api_key,
            timeout=httpx.Timeout(timeout, connect=C.CONNECT_TIMEOUT_S),
            max_retries=max_retries, default_headers=default_headers, http_client=http_client)
        self._limits_lock = asyncio.Lock()

    async def limits(self) -> ServerLimits:
        if self._core.limits is not None:  # read once; no lock on the hot path
            return self._core.limits
        async with self._limits_lock:
            if self._core.limits is None:
                try:
                    listing = await self.client.models.list()
                except Exception as exc:  # noqa: BLE001
                    raise map_error(exc) from exc
                self._core.limits = self._core.limits_from(listing)
                self._core.model = self._core.model or self._core.limits.model
            return self._core.limits

    @property
    def base_url(self) -> str:
        """The server's OpenAI API root, ending in /v1."""
        return self._core.base_url

    async def prepare(self, video: VideoInput, frames: int = 8, **sampling: Any
                      ) -> EncodedVideo:
        if isinstance(video, EncodedVideo):  # nothing to sample: skip the thread hop
            return video
        return await asyncio.to_thread(self._core.prepare, video, frames, sampling)

    async def _create(self, enc: EncodedVideo, question: str, timestamps: bool, send: bool,
                      gen: dict[str, Any], stream: bool = False) -> tuple[Any, int]:
        body, sent = self._core.body(enc, question, timestamps, send, gen)
        uuids = [f.uuid for f in enc.frames]
        try:
            resp = await self.client.chat.completions.create(**body, stream=stream)
        except Exception as exc:  # noqa: BLE001
            if not send and _is_cache_miss(exc):
                self._core.uploaded.forget(uuids)
                return await self._create(enc, question, timestamps, True, gen, stream)
            raise map_error(exc) from exc
        if self._core.frame_cache:
            self._core.uploaded.add(uuids)
        return resp, sent

    async def ask(self, video: VideoInput, question: str, frames: int = 8, *,
                  timestamps: bool = False, sampling: dict[str, Any] | None = None,
                  **gen: Any) -> Answer:
        t0 = time.perf_counter()
        enc = await self.prepare(video, frames, **(sampling or {}))
        t1 = time.perf_counter()
        await self.limits()
        self._core.check_budget(enc, question, gen.get("max_tokens", C.DEFAULT_MAX_TOKENS))
        resp, sent = await self._create(enc, question, timestamps,
                                        self._core.should_send_data(enc), gen)
        t2 = time.perf_counter()
        return self._core.answer(resp, enc, sent, {"prepare_s": t1 - t0, "request_s": t2 - t1})

    async def open_stream(self, video: VideoInput, question: str, frames: int = 8, *,
                          timestamps: bool = False, sampling: dict[str, Any] | None = None,
                          **gen: Any) -> AsyncChunkStream:
        """Send one question as a streamed request and return its raw chunks."""
        enc = await self.prepare(video, frames, **(sampling or {}))
        await self.limits()
        self._core.check_budget(enc, question, gen.get("max_tokens", C.DEFAULT_MAX_TOKENS))
        resp, sent = await self._create(enc, question, timestamps,
                                        self._core.should_send_data(enc), gen, stream=True)
        return AsyncChunkStream(resp, sent)

    async def stream(self, video: VideoInput, question: str, frames: int = 8, *,
                     timestamps: bool = False, sampling: dict[str, Any] | None = None,
                     **gen: Any) -> AsyncIterator[str]:
        tally = _StreamTally()
        async with await self.open_stream(video, question, frames, timestamps=timestamps,
                                          sampling=sampling, **gen) as chunks:
            async for chunk in chunks:
                if text := tally.text_of(chunk):
                    yield text
        tally.check()

    async def ask_many(self, video: VideoInput, questions: Sequence[str], frames: int = 8, *,
                       concurrency: int = C.DEFAULT_CONCURRENCY, timestamps: bool = False,
                       sampling: dict[str, Any] | None = None, **gen: Any) -> list[Answer]:
        if not questions:
            return []
        enc = await self.prepare(video, frames, **(sampling or {}))
        gate = asyncio.Semaphore(max(1, concurrency))
        started = asyncio.Event()

        async def one(q: str) -> Answer:
            await started.wait()
            async with gate:
                return await self.ask(enc, q, timestamps=timestamps, **gen)

        rest = [asyncio.ensure_future(one(q)) for q in questions[1:]]
        try:
            first = await self._ask_streamed(enc, questions[0], timestamps, gen, started.set)
        except BaseException:
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            raise
        started.set()
        return [first, *await asyncio.gather(*rest)]

    async def _ask_streamed(self, enc: EncodedVideo, question: str, timestamps: bool,
                            gen: dict[str, Any], on_start: Callable[[], None]) -> Answer:
        t0 = time.perf_counter()
        tally = _StreamTally()
        try:
            async with await self.open_stream(
                    enc, question, timestamps=timestamps,
                    **{**gen, "stream_options": {"include_usage": True}}) as chunks:
                async for chunk in chunks:
                    tally.text_of(chunk)
                    if tally.started:
                        on_start()
        except StreamInterruptedError:
            if tally.started:
                raise
            return await self.ask(enc, question, timestamps=timestamps, **gen)
        tally.check()
        return tally.answer(enc, chunks.bytes_sent, {"prepare_s": 0.0,
                                                     "request_s": time.perf_counter() - t0})

    async def batch(self, items: Iterable[tuple[VideoInput, str]], *,
                    concurrency: int = C.DEFAULT_CONCURRENCY, frames: int = 8,
                    progress: bool = True, **gen: Any) -> list[Answer | VidchatError]:
        from tqdm import tqdm

        items = list(items)
        gate = asyncio.Semaphore(max(1, concurrency))
        bar = tqdm(total=len(items), disable=not progress, unit="q", desc="vidchat")

        async def one(video: VideoInput, question: str) -> Answer | VidchatError:
            async with gate:
                try:
                    return await self.ask(video, question, frames, **gen)
                except VidchatError as exc:
                    return exc
                finally:
                    bar.update()

        try:
            return list(await asyncio.gather(*(one(v, q) for v, q in items)))
        finally:
            bar.close()

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncVideoChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
