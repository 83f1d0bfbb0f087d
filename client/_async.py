"""AsyncVideoChat: the asyncio twin of VideoChat.

The same flows from `_flows`, their effects awaited: sampling and encoding run in worker
threads, concurrent sub-flows are tasks bounded by a semaphore.
"""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
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
from vidchat.client._streams import AsyncChunkStream
from vidchat.errors import VidchatError
from vidchat.limits import DEFAULT_FRAMES

__all__ = ["AsyncVideoChat"]


class _Spawned:
    """Flows of one Spawn as tasks, fed from their iterable as slots free up."""

    def __init__(self, drive: Any, spawn: F.Spawn) -> None:
        self.book = F.SpawnBook(spawn)
        self.slots = asyncio.Semaphore(spawn.concurrency)
        self.live: set[asyncio.Task[Any]] = set()
        self.feeder = asyncio.ensure_future(self._feed(drive, spawn.flows))

    async def _feed(self, drive: Any, flows: Iterable[F.Flow[Any]]) -> None:
        try:
            for i, flow in enumerate(flows):
                await self.slots.acquire()
                task = asyncio.ensure_future(drive(flow))
                self.live.add(task)
                task.add_done_callback(functools.partial(self._done, i))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the iterable failed: Gather raises it
            self.book.error = self.book.error or exc

    def _done(self, index: int, task: asyncio.Task[Any]) -> None:
        self.live.discard(task)
        self.slots.release()
        if task.cancelled():
            return
        error = task.exception()
        self.book.done(index, error if error is not None else task.result())

    async def gather(self, capture: bool) -> list[Any]:
        await self.feeder
        while self.live:
            await asyncio.wait(set(self.live))
        return self.book.gathered(capture)

    async def cancel(self) -> None:
        self.feeder.cancel()
        for task in self.live:
            task.cancel()
        await asyncio.gather(self.feeder, *self.live, return_exceptions=True)


class AsyncVideoChat:
    """Ask questions about videos from asyncio code; methods mirror VideoChat's."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 model: str | None = None, timeout: float = C.DEFAULT_TIMEOUT_S,
                 max_retries: int = C.DEFAULT_MAX_RETRIES, frame_cache: bool = True,
                 default_headers: dict[str, str] | None = None,
                 fetch_limits: FetchLimits | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._core = ClientCore(base_url, api_key, model, frame_cache, fetch_limits)
        self._gates: weakref.WeakKeyDictionary[F.Gate, asyncio.Semaphore] = \
            weakref.WeakKeyDictionary()
        self.client = openai.AsyncOpenAI(
            base_url=self._core.base_url, api_key=self._core.api_key,
            timeout=httpx.Timeout(timeout, connect=C.CONNECT_TIMEOUT_S),
            max_retries=max_retries, default_headers=default_headers, http_client=http_client)

    @property
    def base_url(self) -> str:
        """The server's OpenAI API root, ending in /v1."""
        return self._core.base_url

    # -- the operations (see _flows for what each one does) -------------------------------

    async def limits(self) -> ServerLimits:
        return await self._drive(F.limits(self._core))

    async def prepare(self, video: VideoInput, frames: int = DEFAULT_FRAMES, **sampling: Any
                      ) -> EncodedVideo:
        return await self._drive(F.prepared(self._core, video, frames, sampling))

    async def ask(self, video: VideoInput, question: str, frames: int = DEFAULT_FRAMES, *,
                  timestamps: bool = False, sampling: dict[str, Any] | None = None,
                  **gen: Any) -> Answer:
        return await self._drive(F.ask(self._core, video, question, frames, timestamps,
                                       sampling, gen))

    async def open_stream(self, video: VideoInput, question: str,
                          frames: int = DEFAULT_FRAMES, *, timestamps: bool = False,
                          sampling: dict[str, Any] | None = None,
                          **gen: Any) -> AsyncChunkStream:
        resp, sent = await self._drive(F.open_stream(self._core, video, question, frames,
                                                     timestamps, sampling, gen))
        return AsyncChunkStream(resp, sent)

    async def stream(self, video: VideoInput, question: str, frames: int = DEFAULT_FRAMES, *,
                     timestamps: bool = False, sampling: dict[str, Any] | None = None,
                     **gen: Any) -> AsyncIterator[str]:
        async for piece in self._run(F.stream_text(self._core, video, question, frames,
                                                   timestamps, sampling, gen)):
            yield piece

    async def ask_many(self, video: VideoInput, questions: Sequence[str],
                       frames: int = DEFAULT_FRAMES, *,
                       concurrency: int = C.DEFAULT_CONCURRENCY, timestamps: bool = False,
                       sampling: dict[str, Any] | None = None, **gen: Any) -> list[Answer]:
        return await self._drive(F.ask_many(self._core, video, questions, frames, concurrency,
                                            timestamps, sampling, gen))

    async def ask_long(self, video: VideoInput, question: str, *, window_s: float,
                       frames_per_window: int = DEFAULT_FRAMES, overlap_s: float = 0.0,
                       concurrency: int = C.DEFAULT_CONCURRENCY,
                       sampling: dict[str, Any] | None = None, progress: bool = False,
                       **gen: Any) -> LongAnswer:
        return await self._drive(ask_long(
            self._core, video, question, window_s=window_s,
            frames_per_window=frames_per_window, overlap_s=overlap_s, concurrency=concurrency,
            sampling=sampling, progress=progress, gen=gen))

    async def batch(self, items: Iterable[tuple[VideoInput, str]], *,
                    concurrency: int = C.DEFAULT_CONCURRENCY, frames: int = DEFAULT_FRAMES,
                    progress: bool = True, **gen: Any) -> list[Answer | VidchatError]:
        return await self._drive(F.batch(self._core, list(items), frames, concurrency,
                                         progress, gen))

    async def run_manifest(self, manifest: str | os.PathLike[str],
                           out: str | os.PathLike[str], *,
                           concurrency: int = C.DEFAULT_CONCURRENCY, progress: bool = True
                           ) -> JobSummary:
        with await asyncio.to_thread(JobRun, manifest, out, progress) as run:
            return await self._drive(job(self._core, run.prepared, concurrency, run.sink))

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncVideoChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the driver -----------------------------------------------------------------------

    async def _drive(self, flow: F.Flow[Any]) -> Any:
        result: list[Any] = []
        async for _ in self._run(flow, result):
            raise RuntimeError("this operation streams: iterate it instead")
        return result[0]

    async def _run(self, flow: F.Flow[Any], result: list[Any] | None = None
                   ) -> AsyncIterator[Any]:
        """Perform the flow's effects until it returns (its value goes in ``result``);
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
                    if result is not None:
                        result.append(done.value)
                    return
                value, error = None, None
                if isinstance(effect, F.Emit):
                    yield effect.value
                    continue
                try:
                    value = await self._perform(effect, streams, resources)
                except BaseException as exc:  # noqa: BLE001 - the flow decides
                    error = exc
        finally:
            flow.close()
            if not returned:  # failed or stopped early: close what it opened (a stream it
                for stream in streams:  # returned, open_stream's, is the caller's to close)
                    await stream.close()
            for resource in resources:
                resource.close()

    async def _perform(self, effect: F.Effect, streams: list[Any], resources: list[Any]
                       ) -> Any:
        if isinstance(effect, F.Prepare):
            return await asyncio.to_thread(self._core.prepare, effect.video, effect.frames,
                                           effect.sampling)
        if isinstance(effect, F.Create):
            resp = await self.client.chat.completions.create(**effect.body,
                                                             stream=effect.stream)
            if effect.stream:
                streams.append(resp)
            return resp
        if isinstance(effect, F.NextChunk):
            return await anext(effect.stream, F.END)
        if isinstance(effect, F.ListModels):
            return await self.client.models.list()
        if isinstance(effect, F.Localize):
            local = await asyncio.to_thread(self._core.localize, effect.video)
            resources.append(local)
            return local
        if isinstance(effect, F.Spawn):
            return _Spawned(self._drive, effect)
        if isinstance(effect, F.Gather):
            return await effect.handle.gather(effect.capture)
        if isinstance(effect, F.Cancel):
            await effect.handle.cancel()
            return None
        if isinstance(effect, F.Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, F.Acquire):
            await self._gates.setdefault(effect.gate, asyncio.Semaphore(effect.gate.capacity)
                                         ).acquire()
            return None
        if isinstance(effect, F.Release):
            self._gates[effect.gate].release()
            return None
        raise TypeError(f"unknown effect {effect!r}")
