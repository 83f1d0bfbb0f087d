"""Every multi-step client operation, written once as a generator ("sans-I/O" flows).

A flow yields the effect it needs next and receives its result (or has its error thrown in):

    flow ── Prepare(video) ─────────► driver: sample + encode   (async: in a worker thread)
         ── ListModels() ───────────► driver: GET /v1/models
         ── Localize(video) ────────► driver: a local copy and its length, for the run
         ── Create(body, stream) ───► driver: POST /v1/chat/completions
         ── NextChunk(stream) ──────► driver: the next streamed chunk, or END
         ── Spawn(flows) / Gather / Cancel ► driver: run sub-flows concurrently (threads or
                                             tasks, fed lazily), collect them, or stop them
         ── Acquire(gate) / Release(gate) ► driver: a slot of a shared bound on requests
         ── Sleep(seconds) ─────────► driver: wait (a backoff)
         ── Emit(text) ─────────────► driver: hand a piece of text to the caller (streaming)

`VideoChat` drives flows by blocking, `AsyncVideoChat` by awaiting; neither decides anything.
So the step order, the re-upload of evicted frames, the re-ask of a stream that broke before
it started, and when ask_many releases its follow-up questions are the same in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vidchat.client import _constants as C
from vidchat.client._core import ClientCore, VideoInput
from vidchat.client._messages import EncodedVideo
from vidchat.client._results import Answer, ServerLimits
from vidchat.client._sdk_errors import broken_stream, is_cache_miss, map_error
from vidchat.client._streams import StreamTally
from vidchat.errors import StreamInterruptedError, VidchatError

T = TypeVar("T")
Flow = Generator["Effect", Any, T]


# -- effects: what a flow asks its driver to do ---------------------------------------------


class Effect:
    """Base of the requests a flow yields."""


@dataclass(frozen=True)
class Prepare(Effect):
    video: VideoInput
    frames: int
    sampling: dict[str, Any]


@dataclass(frozen=True)
class ListModels(Effect):
    pass


@dataclass(frozen=True)
class Localize(Effect):
    """The video as a local file and its length (a LocalVideo, closed when the run ends)."""

    video: VideoInput


@dataclass(frozen=True)
class Create(Effect):
    body: dict[str, Any]
    stream: bool = False


END = object()
"""What NextChunk returns when the stream has no more chunks."""


@dataclass(frozen=True)
class NextChunk(Effect):
    stream: Any


@dataclass(frozen=True)
class Spawn(Effect):
    """Start running ``flows`` now, at most ``concurrency`` at a time, taking the next one
    from the iterable only when a slot frees (so a lazy iterable of many flows costs memory
    for the running ones only); returns a handle for Gather / Cancel. ``on_done(i, r)`` is
    called as flow i ends, ``r`` its result or error. ``keep=False`` keeps no results."""

    flows: Iterable[Flow[Any]]
    concurrency: int
    on_done: Callable[[int, Any], None] | None = None
    keep: bool = True


@dataclass(frozen=True)
class Gather(Effect):
    """Wait for every spawned flow; their results in order. With ``capture`` a VidchatError
    is a result; any other error (or any error, without capture) is raised."""

    handle: Any
    capture: bool = False


class Gate:
    """A bound shared by flows (e.g. requests in flight across a whole batch job); each
    driver keeps one semaphore per gate."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))


@dataclass(frozen=True)
class Acquire(Effect):
    gate: Gate


@dataclass(frozen=True)
class Release(Effect):
    gate: Gate


@dataclass(frozen=True)
class Cancel(Effect):
    handle: Any


@dataclass(frozen=True)
class Emit(Effect):
    value: Any


@dataclass(frozen=True)
class Sleep(Effect):
    seconds: float


@dataclass
class Clock:
    t0: float = field(default_factory=time.perf_counter)

    def since(self) -> float:
        return time.perf_counter() - self.t0


class SpawnBook:
    """The bookkeeping of one Spawn that both drivers share: results by index, the first
    error, the caller's on_done."""

    def __init__(self, spawn: Spawn) -> None:
        self.spawn = spawn
        self.results: dict[int, Any] = {}
        self.count = 0
        self.error: BaseException | None = None

    def done(self, index: int, result: Any) -> None:
        self.count += 1
        if isinstance(result, BaseException) and not (
                isinstance(result, VidchatError) and self.spawn.keep):
            self.error = self.error or result
        if self.spawn.keep:
            self.results[index] = result
        if self.spawn.on_done is not None:
            self.spawn.on_done(index, result)

    def gathered(self, capture: bool) -> list[Any]:
        if self.error is not None and not (capture and isinstance(self.error, VidchatError)):
            raise self.error
        out = [self.results[i] for i in range(self.count)] if self.spawn.keep else []
        for r in out:
            if isinstance(r, BaseException) and not (capture and isinstance(r, VidchatError)):
                raise r
        return out


# -- building blocks -------------------------------------------------------------------------


def limits(core: ClientCore) -> Flow[ServerLimits]:
    """The served model and its context, read once from /v1/models (no lock: a concurrent
    first read only asks twice)."""
    if core.limits is None:
        try:
            listing = yield ListModels()
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            raise map_error(exc) from exc
        core.set_limits(listing)
    assert core.limits is not None
    return core.limits


def prepared(core: ClientCore, video: VideoInput, frames: int,
             sampling: dict[str, Any] | None) -> Flow[EncodedVideo]:
    if isinstance(video, EncodedVideo):  # nothing to sample or encode
        return video
    return (yield Prepare(video, frames, dict(sampling or {})))


def send(core: ClientCore, video: EncodedVideo, question: str, timestamps: bool,
         gen: dict[str, Any], stream: bool = False) -> Flow[tuple[Any, int]]:
    """One request about ``video``: frame ids only when the server should hold the frames,
    and once more with the frames if it has evicted them. Returns (response, bytes sent)."""
    with_data = core.should_send_data(video)
    while True:
        body = core.body(core.video_messages(video, question, timestamps, with_data),
                         video.key, gen)
        try:
            resp = yield Create(body, stream)
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            if not with_data and is_cache_miss(exc):
                core.forget_upload(video)  # evicted: upload the frames once more
                with_data = True
                continue
            raise map_error(exc) from exc
        core.remember_upload(video)
        return resp, (video.payload_bytes if with_data else 0)


def ask_text(core: ClientCore, text: str, gen: dict[str, Any]) -> Flow[Answer]:
    """A question with no frames (e.g. combining answers)."""
    clock = Clock()
    yield from limits(core)
    core.check_budget(0, text, max_tokens_of(gen))
    body = core.body([{"role": "user", "content": [{"type": "text", "text": text}]}], None,
                     gen)
    try:
        resp = yield Create(body)
    except Exception as exc:  # noqa: BLE001 - mapped to the error tree
        raise map_error(exc) from exc
    return core.answer(resp, None, 0, {"prepare_s": 0.0, "request_s": clock.since()})


def max_tokens_of(gen: dict[str, Any]) -> int:
    return int(gen.get("max_tokens", C.DEFAULT_MAX_TOKENS))


# -- the operations --------------------------------------------------------------------------


def ask(core: ClientCore, video: VideoInput, question: str, frames: int, timestamps: bool,
        sampling: dict[str, Any] | None, gen: dict[str, Any],
        gate: Gate | None = None) -> Flow[Answer]:
    clock = Clock()
    enc = yield from prepared(core, video, frames, sampling)
    prepare_s = clock.since()
    yield from limits(core)
    core.check_budget(len(enc), question, max_tokens_of(gen))
    if gate is not None:
        yield Acquire(gate)
    try:
        resp, sent = yield from send(core, enc, question, timestamps, gen)
    finally:
        if gate is not None:
            yield Release(gate)
    return core.answer(resp, enc, sent, {"prepare_s": prepare_s,
                                         "request_s": clock.since() - prepare_s})


def open_stream(core: ClientCore, video: VideoInput, question: str, frames: int,
                timestamps: bool, sampling: dict[str, Any] | None,
                gen: dict[str, Any]) -> Flow[tuple[Any, int]]:
    """A streamed request after every check; returns (the SDK's stream, bytes sent)."""
    enc = yield from prepared(core, video, frames, sampling)
    yield from limits(core)
    core.check_budget(len(enc), question, max_tokens_of(gen))
    return (yield from send(core, enc, question, timestamps, gen, stream=True))


def chunks(stream: Any, tally: StreamTally) -> Flow[None]:
    """Read ``stream`` to its end into ``tally``, emitting each piece of text."""
    while True:
        try:
            chunk = yield NextChunk(stream)
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            raise broken_stream(exc) from exc
        if chunk is END:
            return
        if text := tally.text_of(chunk):
            yield Emit(text)


def stream_text(core: ClientCore, video: VideoInput, question: str, frames: int,
                timestamps: bool, sampling: dict[str, Any] | None,
                gen: dict[str, Any]) -> Flow[None]:
    """Emit the answer's text as it is generated; a stream that ends short raises."""
    stream, _ = yield from open_stream(core, video, question, frames, timestamps, sampling,
                                       gen)
    tally = StreamTally()
    yield from chunks(stream, tally)
    tally.check()


@dataclass(frozen=True)
class Question:
    """One question of a group about the same frames."""

    text: str
    timestamps: bool = False
    gen: dict[str, Any] = field(default_factory=dict)


def ask_many(core: ClientCore, video: VideoInput, questions: Sequence[str], frames: int,
             concurrency: int, timestamps: bool, sampling: dict[str, Any] | None,
             gen: dict[str, Any]) -> Flow[list[Answer]]:
    """Several questions about one video, sampled and encoded once (see `ask_group`)."""
    if not questions:
        return []
    enc = yield from prepared(core, video, frames, sampling)
    return (yield from ask_group(core, enc, [Question(q, timestamps, gen) for q in questions],
                                 concurrency))


def ask_group(core: ClientCore, enc: EncodedVideo, questions: Sequence[Question],
              concurrency: int, *, gate: Gate | None = None,
              on_result: Callable[[int, Any], None] | None = None,
              capture: bool = False) -> Flow[list[Any]]:
    """Questions about the same frames: stream the first and release the rest as soon as
    its answer starts (its frames are then in the server's caches, so the others send ids
    only). A first stream that breaks before its answer starts is asked again as a plain
    `ask` (which the SDK retries): nothing of it was seen yet; after that it raises.

    ``on_result(i, answer_or_error)`` is called as each question ends. With ``capture`` a
    question's VidchatError is its result and the others still run; without, it is raised.
    ``gate`` bounds requests in flight together with other groups."""
    first_q, rest_q = questions[0], list(questions[1:])
    later: Any = None

    def release() -> Flow[Any]:
        flows = [ask(core, enc, q.text, len(enc), q.timestamps, None, q.gen, gate)
                 for q in rest_q]
        done = (lambda i, r: on_result(i + 1, r)) if on_result else None
        return (yield Spawn(flows, max(1, min(concurrency, len(flows) or 1)), on_done=done))

    clock = Clock()
    tally = StreamTally()
    first: Any
    try:
        if gate is not None:
            yield Acquire(gate)
        try:
            stream, sent = yield from open_stream(
                core, enc, first_q.text, len(enc), first_q.timestamps, None,
                {**first_q.gen, "stream_options": {"include_usage": True}})
            while True:
                try:
                    chunk = yield NextChunk(stream)
                except Exception as exc:  # noqa: BLE001 - mapped to the error tree
                    raise broken_stream(exc) from exc
                if chunk is END:
                    break
                tally.text_of(chunk)
                if tally.started and later is None:
                    later = yield from release()
        finally:
            if gate is not None:
                yield Release(gate)
        tally.check()
        first = tally.answer(enc, sent, {"prepare_s": 0.0, "request_s": clock.since()})
    except StreamInterruptedError as exc:
        if not tally.started:
            first = yield from _ask_capturing(
                ask(core, enc, first_q.text, len(enc), first_q.timestamps, None, first_q.gen,
                    gate), capture)
        elif capture:
            first = exc
        else:
            if later is not None:
                yield Cancel(later)
            raise
    except VidchatError as exc:
        if not capture:
            if later is not None:
                yield Cancel(later)
            raise
        first = exc
    except BaseException:
        if later is not None:
            yield Cancel(later)
        raise
    if on_result is not None:
        on_result(0, first)
    if later is None:  # a single question, or an answer that never started
        later = yield from release()
    return [first, *(yield Gather(later, capture=capture))]


def _ask_capturing(flow: Flow[Answer], capture: bool) -> Flow[Any]:
    try:
        return (yield from flow)
    except VidchatError as exc:
        if not capture:
            raise
        return exc


def batch(core: ClientCore, items: Iterable[tuple[VideoInput, str]], frames: int,
          concurrency: int, progress: bool, gen: dict[str, Any]
          ) -> Flow[list[Answer | VidchatError]]:
    """Many (video, question) pairs; results in input order, a failed item holds its error."""
    from tqdm import tqdm

    flows = [ask(core, v, q, frames, False, None, gen) for v, q in items]
    bar = tqdm(total=len(flows), disable=not progress, unit="q", desc="vidchat")
    try:
        handle = yield Spawn(flows, max(1, concurrency), on_done=lambda _i, _r: bar.update())
        return (yield Gather(handle, capture=True))
    finally:
        bar.close()
