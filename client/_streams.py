"""Streamed answers: following one (text, finish reason, usage) and handing out raw chunks.

`StreamTally` decides whether a stream ended as an answer should; `ChunkStream` and
`AsyncChunkStream` are the raw SDK chunks after vidchat's checks, with transport errors
mapped to StreamInterruptedError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from vidchat.client._messages import EncodedVideo
from vidchat.client._results import Answer
from vidchat.client._sdk_errors import broken_stream
from vidchat.errors import StreamInterruptedError

__all__ = ["COMPLETE_FINISH_REASONS", "AsyncChunkStream", "ChunkStream", "StreamTally",
           "make_answer"]

# How a complete answer ends. vLLM also reports "abort" (the request was cancelled, e.g. its
# engine went away) and "error" (an internal failure): the text so far is not the answer.
COMPLETE_FINISH_REASONS = frozenset({"stop", "length", "repetition", "tool_calls"})


def make_answer(text: str, model: str, finish_reason: str | None, usage: Any,
                video: EncodedVideo | None, sent: int, timings: dict[str, float],
                logprobs: list[Any] | None = None,
                completion: dict[str, Any] | None = None) -> Answer:
    times = [f.timestamp for f in video.frames] if video is not None else []
    return Answer(
        text=text,
        model=model,
        finish_reason=finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        frames=len(video) if video is not None else 0,
        bytes_sent=sent,
        timings=timings,
        logprobs=logprobs,
        frame_times=times if times and None not in times else None,  # type: ignore[arg-type]
        completion=completion,
    )


class StreamTally:
    """Follows a streamed answer: the text of each chunk, the finish reason and usage, and
    whether it ended as an answer should rather than stopping short."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.model = ""
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.logprobs: list[Any] | None = None
        self.id = ""
        self.created = 0
        self.started = False
        """True once a chunk with a choice arrived: the server has prefilled the prompt."""

    def text_of(self, chunk: Any) -> str | None:
        self.model = chunk.model or self.model
        self.id = chunk.id or self.id
        self.created = chunk.created or self.created
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

    def answer(self, video: EncodedVideo | None, sent: int, timings: dict[str, float]
               ) -> Answer:
        text = "".join(self.pieces)
        completion = {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": self.finish_reason}],
            "usage": self.usage.model_dump(mode="json") if self.usage else None,
        }
        return make_answer(text, self.model, self.finish_reason, self.usage, video, sent,
                           timings, self.logprobs, completion)


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
            raise broken_stream(exc) from exc

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
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            raise broken_stream(exc) from exc

    async def close(self) -> None:
        await self._resp.close()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
