"""VideoChat: video in, answer out, over the OpenAI SDK, blocking.

Each method runs a flow from `_flows` (where every decision is) and performs its effects by
blocking; concurrent sub-flows run in a thread pool.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import openai

from vidchat.client import _constants as C
from vidchat.client import _flows as F
from vidchat.client._core import ClientCore, VideoInput
from vidchat.client._jobs import JobRun, JobSummary, job
from vidchat.client._long import LongAnswer, ask_long
from vidchat.client._messages import EncodedVideo
from vidchat.client._remote import FetchLimits
from vidchat.client._results import Answer, ServerLimits
from vidchat.client._streams import ChunkStream
from vidchat.errors import VidchatError
from vidchat.limits import DEFAULT_FRAMES

__all__ = ["VideoChat"]


class _Spawned:
    """Flows of one Spawn on a thread pool, fed from their iterable as slots free up."""

    def __init__(self, drive: Any, spawn: F.Spawn) -> None:
        self.book = F.SpawnBook(spawn)
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(spawn.concurrency)
        self.pool = ThreadPoolExecutor(max_workers=spawn.concurrency,
                                       thread_name_prefix="vidchat")
        self.cancelled = False
        self.feeder = threading.Thread(target=self._feed, args=(drive, spawn.flows),
                                       name="vidchat-spawn", daemon=True)
        self.feeder.start()

    def _feed(self, drive: Any, flows: Iterable[F.Flow[Any]]) -> None:
        try:
            for i, flow in enumerate(flows):
                self.slots.acquire()
                if self.cancelled:
                    flow.close()
                    return
                self.pool.submit(drive, flow).add_done_callback(functools.partial(self._done, i))
        except BaseException as exc:  # noqa: BLE001 - the iterable failed: Gather raises it
            with self.lock:
                self.book.error = self.book.error or exc

    def _done(self, index: int, future: Future[Any]) -> None:
        try:
            if future.cancelled():
                return
            error = future.exception()
            with self.lock:
                self.book.done(index, error if error is not None else future.result())
        finally:
            self.slots.release()

    def gather(self, capture: bool) -> list[Any]:
        self.feeder.join()
        self.pool.shutdown(wait=True)
        return self.book.gathered(capture)

    def cancel(self) -> None:
        self.cancelled = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.slots.release()  # wake the feeder if it waits for a slot
        self.feeder.join()


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
        self._core = ClientCore(base_url, api_key, model, frame_cache, fetch_limits)
        self._gates: weakref.WeakKeyDictionary[F.Gate, threading.Semaphore] = \
            weakref.WeakKeyDictionary()
        self._gates_lock = threading.Lock()
        self.client = openai.OpenAI(
            base_url=self._core.base_url, api_key=self._core.api_key,
            timeout=httpx.Timeout(timeout, connect=C.CONNECT_TIMEOUT_S),
            max_retries=max_retries, default_headers=default_headers, http_client=http_client)

    @property
    def base_url(self) -> str:
        """The server's OpenAI API root, ending in /v1."""
        return self._core.base_url

    # -- the operations (see _flows for what each one does) -------------------------------

    def limits(self) -> ServerLimits:
        """The served model and its context, read once from /v1/models."""
        return self._drive(F.limits(self._core))

    def prepare(self, video: VideoInput, frames: int = DEFAULT_FRAMES, **sampling: Any
                ) -> EncodedVideo:
        """Sample and encode a video once, for any number of questions."""
        return self._drive(F.prepared(self._core, video, frames, sampling))

    def ask(self, video: VideoInput, question: str, frames: int = DEFAULT_FRAMES, *,
            timestamps: bool = False, sampling: dict[str, Any] | None = None,
            **gen: Any) -> Answer:
        """Ask one question; `gen` goes to chat.completions.create (max_tokens, temperature...)."""
        return self._drive(F.ask(self._core, video, question, frames, timestamps, sampling,
                                 gen))

    def open_stream(self, video: VideoInput, question: str, frames: int = DEFAULT_FRAMES, *,
                    timestamps: bool = False, sampling: dict[str, Any] | None = None,
                    **gen: Any) -> ChunkStream:
        """Send one question as a streamed request and return its raw chunks (timing each
        chunk, reading usage with ``stream_options={"include_usage": True}``...)."""
        resp, sent = self._drive(F.open_stream(self._core, video, question, frames,
                                               timestamps, sampling, gen))
        return ChunkStream(resp, sent)

    def stream(self, video: VideoInput, question: str, frames: int = DEFAULT_FRAMES, *,
               timestamps: bool = False, sampling: dict[str, Any] | None = None,
               **gen: Any) -> Iterator[str]:
        """Yield the answer's text as it is generated. A broken stream, or one that ends
        short of a complete answer, raises StreamInterruptedError (never retried silently:
        part of the answer was already seen)."""
        yield from self._run(F.stream_text(self._core, video, question, frames, timestamps,
                                           sampling, gen))

    def ask_many(self, video: VideoInput, questions: Sequence[str],
                 frames: int = DEFAULT_FRAMES, *, concurrency: int = C.DEFAULT_CONCURRENCY,
                 timestamps: bool = False, sampling: dict[str, Any] | None = None,
                 **gen: Any) -> list[Answer]:
        """Several questions about one video: sampled and encoded once; the first question
        warms the server's caches, the rest go out concurrently as soon as its answer starts,
        with frame ids instead of the frames."""
        return self._drive(F.ask_many(self._core, video, questions, frames, concurrency,
                                      timestamps, sampling, gen))

    def ask_long(self, video: VideoInput, question: str, *, window_s: float,
                 frames_per_window: int = DEFAULT_FRAMES, overlap_s: float = 0.0,
                 concurrency: int = C.DEFAULT_CONCURRENCY,
                 sampling: dict[str, Any] | None = None, progress: bool = False,
                 **gen: Any) -> LongAnswer:
        """A question over a long video: cut into windows of ``window_s`` seconds (or of
        ``sampling``'s start/end range), ``frames_per_window`` frames each, labelled with
        their times, asked concurrently; the answers, each with its time range, combined in
        one more request (several when they do not fit the context). ``.text``, and
        ``.windows`` as evidence (a failed window holds its error). See client/_long.py."""
        return self._drive(ask_long(self._core, video, question, window_s=window_s,
                                    frames_per_window=frames_per_window, overlap_s=overlap_s,
                                    concurrency=concurrency, sampling=sampling,
                                    progress=progress, gen=gen))

    def batch(self, items: Iterable[tuple[VideoInput, str]], *,
              concurrency: int = C.DEFAULT_CONCURRENCY, frames: int = DEFAULT_FRAMES,
              progress: bool = True, **gen: Any) -> list[Answer | VidchatError]:
        """Many (video, question) pairs at once. Results keep the input order; a failed item
        holds its VidchatError instead of an Answer, so nothing is lost."""
        return self._drive(F.batch(self._core, list(items), frames, concurrency, progress,
                                   gen))

    def run_manifest(self, manifest: str | os.PathLike[str], out: str | os.PathLike[str], *,
                     concurrency: int = C.DEFAULT_CONCURRENCY, progress: bool = True
                     ) -> JobSummary:
        """A batch job: every question of a JSONL manifest, one result line each in ``out``
        (the OpenAI Batch output shape). Resumable: rows already in ``out`` are skipped.
        Questions about one video are grouped (sampled once, caches shared); ``concurrency``
        bounds the requests in flight. See vidchat/client/_jobs.py."""
        with JobRun(manifest, out, progress) as run:
            return self._drive(job(self._core, run.prepared, concurrency, run.sink))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> VideoChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver -----------------------------------------------------------------------

    def _drive(self, flow: F.Flow[Any]) -> Any:
        steps = self._run(flow)
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        steps.close()
        raise RuntimeError("this operation streams: iterate it instead")

    def _run(self, flow: F.Flow[Any]) -> Iterator[Any]:
        """Perform the flow's effects until it returns (the generator's return value);
        yield what it emits."""
        streams: list[Any] = []
        resources: list[Any] = []  # what the run holds until it ends (local video copies)
        returned = False
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as done:
                    returned = True
                    return done.value
                value, error = None, None
                if isinstance(effect, F.Emit):
                    yield effect.value
                    continue
                try:
                    value = self._perform(effect, streams, resources)
                except BaseException as exc:  # noqa: BLE001 - the flow decides
                    error = exc
        finally:
            flow.close()
            if not returned:  # failed or stopped early: close what it opened (a stream it
                for stream in streams:  # returned, open_stream's, is the caller's to close)
                    stream.close()
            for resource in resources:
                resource.close()

    def _perform(self, effect: F.Effect, streams: list[Any], resources: list[Any]) -> Any:
        if isinstance(effect, F.Prepare):
            return self._core.prepare(effect.video, effect.frames, effect.sampling)
        if isinstance(effect, F.Create):
            resp = self.client.chat.completions.create(**effect.body, stream=effect.stream)
            if effect.stream:
                streams.append(resp)
            return resp
        if isinstance(effect, F.NextChunk):
            return next(effect.stream, F.END)
        if isinstance(effect, F.ListModels):
            return self.client.models.list()
        if isinstance(effect, F.Localize):
            local = self._core.localize(effect.video)
            resources.append(local)
            return local
        if isinstance(effect, F.Spawn):
            return _Spawned(self._drive, effect)
        if isinstance(effect, F.Gather):
            return effect.handle.gather(effect.capture)
        if isinstance(effect, F.Cancel):
            effect.handle.cancel()
            return None
        if isinstance(effect, F.Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, F.Acquire):
            self._gate(effect.gate).acquire()
            return None
        if isinstance(effect, F.Release):
            self._gate(effect.gate).release()
            return None
        raise TypeError(f"unknown effect {effect!r}")

    def _gate(self, gate: F.Gate) -> threading.Semaphore:
        with self._gates_lock:
            if gate not in self._gates:
                self._gates[gate] = threading.Semaphore(gate.capacity)
            return self._gates[gate]
