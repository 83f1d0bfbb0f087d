"""The run: prepare the videos once, send the planned requests, time every chunk.

    videos ──► AsyncVideoChat.prepare (sample + encode ONCE per video) ──► EncodedVideo
    plan (vidchat.loadgen.workload) ──► closed loop (--concurrency C)
                                     or open loop (--rate R, Poisson arrivals)
    session order: a video's follow-ups wait until its first answer starts streaming
    each request: the client's request path, streamed, timed per chunk ──► RequestRecord
    /metrics before and after (vidchat.loadgen.metrics) ──► cache hit rates
    records ──► vidchat.loadgen.stats.summarize ──► the report

Every run is bounded by the request count and by ``max_seconds``; at the deadline requests
in flight are cancelled and counted as ``incomplete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx

from vidchat.client import AsyncVideoChat, EncodedVideo
from vidchat.errors import APIError, StreamInterruptedError, VidchatError
from vidchat.loadgen.metrics import cache_rates, scrape_metrics, server_root
from vidchat.loadgen.stats import INCOMPLETE, RequestRecord, summarize
from vidchat.loadgen.workload import BenchSettings, arrival_times, plan_requests, question_text

# Time allowed to cancel in-flight requests after the deadline.
CANCEL_GRACE_S = 5.0

# The record of the request running in the current task: the HTTP hook adds body sizes to it.
_CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "vidchat_bench_record", default=None)


async def _count_request_bytes(request: httpx.Request) -> None:
    rec = _CURRENT.get()
    if rec is not None:
        try:
            rec.request_bytes += len(request.content)
        except httpx.RequestNotRead:  # a streamed body: not what the OpenAI SDK sends
            pass


def _http_client(concurrency: int) -> httpx.AsyncClient:
    # One connection per request in flight; the SDK sets timeouts per request.
    limits = httpx.Limits(max_connections=max(100, 2 * concurrency),
                          max_keepalive_connections=max(20, 2 * concurrency))
    return httpx.AsyncClient(limits=limits, event_hooks={"request": [_count_request_bytes]})


async def _one(chat: AsyncVideoChat, video: EncodedVideo, question: str,
               gen: dict[str, Any], rec: RequestRecord, t_run: float,
               on_first_token: Callable[[], None] | None = None) -> None:
    """One streamed request through the client's request path, timed chunk by chunk;
    ``on_first_token`` runs when the answer starts (the prompt is then in the server's
    prefix cache)."""
    _CURRENT.set(rec)
    t0 = time.perf_counter()
    rec.start_s = t0 - t_run
    stream = None
    try:
        # The raw chunks of the client's own request path: their arrival times (TTFT,
        # inter-token latency) and the usage chunk (token counts).
        stream = await chat.open_stream(video, question, **gen)
        rec.image_bytes = stream.bytes_sent
        last = None
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices:
                if last is None:
                    rec.ttft_s = now - t0
                    if on_first_token is not None:
                        on_first_token()
                else:
                    rec.itl_s.append(now - last)
                last = now
            if chunk.usage:
                rec.prompt_tokens = chunk.usage.prompt_tokens
                rec.completion_tokens = chunk.usage.completion_tokens
        rec.e2e_s = time.perf_counter() - t0
        rec.ok = rec.ttft_s is not None
        if not rec.ok:
            rec.error = "EmptyStream"
    except asyncio.CancelledError:
        rec.error = INCOMPLETE
        raise
    except VidchatError as exc:
        rec.error = type(exc).__name__
        rec.status_code = exc.status_code if isinstance(exc, APIError) else None
    except Exception as exc:  # noqa: BLE001 - a broken stream mid-answer; counted, not raised
        rec.error = StreamInterruptedError.__name__ + f"({type(exc).__name__})"
    finally:
        if stream is not None:
            try:
                await stream.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass


async def prepare_videos(chat: AsyncVideoChat, videos: Sequence[str | os.PathLike[str]
                                                                | EncodedVideo],
                         frames: int) -> tuple[list[EncodedVideo], float]:
    """Sample and encode every video once (the client's own prepare); seconds taken."""
    t0 = time.perf_counter()
    encoded = [await chat.prepare(v, frames) for v in videos]
    return encoded, time.perf_counter() - t0


async def run_bench_async(settings: BenchSettings,
                          videos: Sequence[str | os.PathLike[str] | EncodedVideo],
                          *, progress: bool = True) -> dict[str, Any]:
    """One run: prepare the videos, send the planned requests, return the report."""
    from tqdm import tqdm

    if len(videos) < settings.videos:
        raise VidchatError(f"{settings.videos} videos planned but {len(videos)} given")
    videos = list(videos)[: settings.videos]
    cap = settings.concurrency or settings.requests
    http = _http_client(cap)
    chat = AsyncVideoChat(settings.server, api_key=settings.api_key, model=settings.model,
                          timeout=settings.timeout_s, max_retries=0, http_client=http)
    try:
        await chat.limits()
        encoded, prepare_s = await prepare_videos(chat, videos, settings.frames)
        extra_body: dict[str, Any] = {"ignore_eos": True}
        if settings.salt:
            extra_body["cache_salt"] = uuid.uuid4().hex
        gen = {"max_tokens": settings.max_tokens, "temperature": 0.0,
               "stream_options": {"include_usage": True}, "extra_body": extra_body}
        plan = plan_requests(settings.requests, settings.videos, settings.questions_per_video)
        records = [RequestRecord(i, v, q) for i, (v, q) in enumerate(plan)]
        root = server_root(chat.base_url)
        before = await asyncio.to_thread(scrape_metrics, root)
        bar = tqdm(total=len(records), disable=not progress, unit="req", desc="vidchat bench",
                   dynamic_ncols=True)
        t_run = time.perf_counter()
        deadline = t_run + settings.max_seconds
        finished: list[float] = []

        # Session order: a video's follow-up questions wait until its first answer starts
        # streaming: by then its frames are prefilled and in the prefix cache, so the
        # follow-ups reuse them instead of prefilling the same frames side by side.
        leaders: dict[int, int] = {}
        for rec in records:
            leaders.setdefault(rec.video, rec.index)
        warmed = {v: asyncio.Event() for v in leaders}
        changed = asyncio.Event()

        def release(video: int) -> None:
            warmed[video].set()
            changed.set()

        def eligible(rec: RequestRecord) -> bool:
            return (not settings.session_order or leaders[rec.video] == rec.index
                    or warmed[rec.video].is_set())

        async def run_one(rec: RequestRecord) -> None:
            leader = leaders[rec.video] == rec.index
            try:
                await _one(chat, encoded[rec.video], question_text(rec.question), gen, rec,
                           t_run, (lambda: release(rec.video)) if leader else None)
            finally:
                if leader:
                    release(rec.video)  # failed or cancelled: release the follow-ups anyway
            finished.append(time.perf_counter())
            bar.update()

        tasks: list[asyncio.Task[None]] = []
        if settings.rate is None:
            waiting = list(records)

            async def next_record() -> RequestRecord | None:
                while waiting and time.perf_counter() < deadline:
                    for i, rec in enumerate(waiting):
                        if eligible(rec):
                            return waiting.pop(i)
                    changed.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), deadline - time.perf_counter())
                return None

            async def worker() -> None:
                while (rec := await next_record()) is not None:
                    await run_one(rec)

            tasks = [asyncio.create_task(worker()) for _ in range(min(cap, len(records)))]
        else:
            gate = asyncio.Semaphore(cap)
            offsets = arrival_times(len(records), settings.rate, settings.seed)

            async def gated(rec: RequestRecord) -> None:
                if not eligible(rec):
                    await warmed[rec.video].wait()
                async with gate:
                    await run_one(rec)

            for rec, offset in zip(records, offsets, strict=True):
                delay = t_run + offset - time.perf_counter()
                if t_run + offset >= deadline:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(gated(rec)))
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter())
                                        ) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        end = max(finished) if finished else time.perf_counter()
        bar.close()
        for rec in records:
            if not rec.ok and rec.error is None:
                rec.error = INCOMPLETE  # never started (deadline) or cancelled
        after = await asyncio.to_thread(scrape_metrics, root)
        return summarize(settings, records, end - t_run, prepare_s, cache_rates(before, after),
                         encoded)
    finally:
        await chat.close()
        await http.aclose()


def run_bench(settings: BenchSettings, videos: Sequence[str | os.PathLike[str] | EncodedVideo],
              *, progress: bool = True) -> dict[str, Any]:
    """One run from synchronous code (the CLI, the benchmarks): see run_bench_async."""
    return asyncio.run(run_bench_async(settings, videos, progress=progress))


def run_sweep(settings: BenchSettings, concurrencies: Sequence[int],
              videos: Sequence[str | os.PathLike[str] | EncodedVideo], *,
              progress: bool = True) -> list[dict[str, Any]]:
    """The same requests at each concurrency (fresh cache salt each, so runs are independent)."""
    return [run_bench(replace(settings, concurrency=c, rate=None), videos, progress=progress)
            for c in concurrencies]
