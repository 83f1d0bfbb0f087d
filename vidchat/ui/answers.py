"""Questions about one set of frames ──► a stream of events for the page (server-sent events).

    start {q}                    the question's request is being sent
    delta {q, text}              a piece of its answer, as the server generates it
    done  {q, finish_reason, usage, timings, bytes_sent}
    error {q, type, message}     that question failed (the others go on)
    end   {}                     every question is over

Like `ask_many`, the first question goes alone and the others follow as soon as its answer
starts: its frames are then in the server's caches, so the others send frame ids only.
Every question is streamed (`AsyncVideoChat.open_stream`), so each answer shows as it grows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from vidchat.client import AsyncVideoChat, EncodedVideo
from vidchat.errors import VidchatError

__all__ = ["answer_events", "error_event", "sse"]

log = logging.getLogger("vidchat.ui")
_END = object()


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event: its name from ``event["event"]``, the rest as JSON data."""
    data = {k: v for k, v in event.items() if k != "event"}
    return f"event: {event['event']}\ndata: {json.dumps(data)}\n\n".encode()


def error_event(exc: BaseException, question: int | None = None) -> dict[str, Any]:
    """What the page shows for a failure: the error's class and its one-sentence message.
    Library errors say what to do next; anything else is a bug, logged with its traceback
    on the playground's console and shown by its message only."""
    if not isinstance(exc, VidchatError):
        log.error("unexpected error", exc_info=exc)
    return {"event": "error", "q": question, "type": type(exc).__name__,
            "message": str(exc) or type(exc).__name__}


async def _answer(chat: AsyncVideoChat, video: EncodedVideo, index: int, question: str,
                  timestamps: bool, gen: dict[str, Any], emit: asyncio.Queue[Any],
                  started: asyncio.Event) -> None:
    t0 = time.perf_counter()
    first_token_s: float | None = None
    finish_reason = None
    usage = None
    await emit.put({"event": "start", "q": index})
    try:
        stream = await chat.open_stream(video, question, timestamps=timestamps,
                                        stream_options={"include_usage": True}, **gen)
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump(mode="json")
                if not chunk.choices:
                    continue
                started.set()
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                if text := choice.delta.content:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - t0
                    await emit.put({"event": "delta", "q": index, "text": text})
        total_s = time.perf_counter() - t0
        timings = {"first_token_s": first_token_s, "total_s": total_s}
        tokens = (usage or {}).get("completion_tokens") or 0
        if first_token_s is not None and tokens > 1 and total_s > first_token_s:
            timings["tokens_per_s"] = (tokens - 1) / (total_s - first_token_s)
        await emit.put({"event": "done", "q": index, "finish_reason": finish_reason,
                        "usage": usage, "timings": timings, "bytes_sent": stream.bytes_sent})
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - becomes a message on the page
        await emit.put(error_event(exc, index))
    finally:
        started.set()  # an answer that never started still releases the others


async def answer_events(chat: AsyncVideoChat, video: EncodedVideo, questions: Sequence[str],
                        *, timestamps: bool = False, gen: dict[str, Any] | None = None
                        ) -> AsyncIterator[dict[str, Any]]:
    """Stream every question's answer as events; stops the requests if the page goes away
    (the consumer closes this generator)."""
    gen = dict(gen or {})
    emit: asyncio.Queue[Any] = asyncio.Queue()
    first_started = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def run_all() -> None:
        try:
            tasks.append(asyncio.ensure_future(_answer(
                chat, video, 0, questions[0], timestamps, gen, emit, first_started)))
            if len(questions) > 1:
                await first_started.wait()
                tasks.extend(asyncio.ensure_future(_answer(
                    chat, video, i, q, timestamps, gen, emit, asyncio.Event()))
                    for i, q in enumerate(questions[1:], start=1))
            await asyncio.gather(*tasks)
        finally:
            await emit.put(_END)

    runner = asyncio.ensure_future(run_all())
    try:
        while (event := await emit.get()) is not _END:
            yield event
        await runner
        yield {"event": "end"}
    finally:
        for task in [runner, *tasks]:
            task.cancel()
        await asyncio.gather(runner, *tasks, return_exceptions=True)
