"""How a streamed answer ends. A stream that stops short - the server reports "abort" or
"error", or the stream ends with no finish reason at all - must raise StreamInterruptedError
instead of passing for a whole answer.

The engine cannot be made to end a stream each of these ways on demand, so the server here is
an httpx MockTransport speaking the OpenAI wire format; the SDK, the client and its parsing
are the real ones. (tests/test_frontend.py kills a real engine mid-stream.)
"""

from __future__ import annotations

import json

import httpx
import pytest
from _twins import KINDS, Twin
from PIL import Image

from vidchat.client import Frames, StreamInterruptedError

PIECES = ["The ", "car ", "is ", "red."]


def sse_body(finish_reason: str | None) -> bytes:
    def event(delta: dict, finish: str | None = None) -> str:
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": p}) for p in PIECES]
    if finish_reason is not None:
        events.append(event({}, finish_reason))
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def handler(finish_reason: str | None):
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "m", "object": "model", "created": 0, "owned_by": "t",
                 "max_model_len": 32768}]})
        assert request.url.path.endswith("/chat/completions")
        return httpx.Response(200, content=sse_body(finish_reason),
                              headers={"content-type": "text/event-stream"})
    return handle


URL = "http://vidchat.test/v1"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def frames() -> Frames:
    images = [Image.new("RGB", (384, 384), (i * 60, 0, 0)) for i in range(2)]
    return Frames(images, [0.0, 1.0], [0, 30], "synthetic", "pyav", 2.0)


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_a_complete_answer_streams_whole(frames, reason, kind):
    with Twin(kind, URL, transport=handler(reason), max_retries=0) as chat:
        assert list(chat.stream(frames, "What color?")) == PIECES


@pytest.mark.parametrize("reason", ["abort", "error", None])
def test_a_stream_that_stops_short_raises_after_the_text_it_had(frames, reason, kind):
    seen: list[str] = []
    with Twin(kind, URL, transport=handler(reason), max_retries=0) as chat:
        with pytest.raises(StreamInterruptedError, match=str(reason) if reason else "without"):
            for piece in chat.stream(frames, "What color?"):
                seen.append(piece)
    assert seen == PIECES  # what arrived was passed on before the error


def test_stopping_early_on_purpose_is_not_an_error(frames, kind):
    with Twin(kind, URL, transport=handler(None), max_retries=0) as chat:
        stream = chat.stream(frames, "What color?")
        assert next(stream) == PIECES[0]
        stream.close()  # the caller had enough: no finish reason needed


class BrokenBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that breaks after ``prefix`` (the connection drops)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def __iter__(self):
        if self.prefix:
            yield self.prefix
        raise httpx.RemoteProtocolError("peer closed connection without a complete body")

    async def __aiter__(self):
        for piece in self:
            yield piece


def completion(text: str) -> dict:
    return {"id": "c2", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1500, "completion_tokens": 3, "total_tokens": 1503}}


def ask_many_server(break_after_start: bool, calls: list[bool]):
    """First streamed request breaks (before or after its answer starts); the rest answer."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return handler("stop")(request)
        streamed = json.loads(request.content).get("stream", False)
        calls.append(streamed)
        if streamed and len(calls) == 1:
            prefix = sse_body("stop").split(b"\n\n")[1] + b"\n\n" if break_after_start else b""
            return httpx.Response(200, stream=BrokenBody(prefix),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=completion(f"answer {len(calls)}"))

    return handle


def test_ask_many_asks_again_when_the_first_stream_breaks_before_it_starts(frames, kind):
    calls: list[bool] = []
    with Twin(kind, URL, transport=ask_many_server(False, calls), max_retries=0) as chat:
        answers = chat.ask_many(frames, ["One?", "Two?"])
    assert calls == [True, False, False]  # broken stream, the same question again, the next
    assert [a.text for a in answers] == ["answer 2", "answer 3"]


def test_ask_many_does_not_hide_a_stream_that_broke_mid_answer(frames, kind):
    calls: list[bool] = []
    with Twin(kind, URL, transport=ask_many_server(True, calls), max_retries=0) as chat:
        with pytest.raises(StreamInterruptedError):
            chat.ask_many(frames, ["One?", "Two?"])
    assert calls[0] is True and calls.count(True) == 1  # never streamed again silently


def test_open_stream_hands_over_a_live_stream_of_raw_chunks(frames, kind):
    with Twin(kind, URL, transport=handler("stop"), max_retries=0) as chat:
        stream = chat.open_stream(frames, "What color?")
        assert stream.bytes_sent == sum(len(f.jpeg) for f in chat.prepare(frames).frames)
        if kind == "sync":
            chunks = list(stream)
        else:
            async def read() -> list:
                return [c async for c in stream]
            chunks = chat.loop.run_until_complete(read())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(PIECES) and chunks[-1].choices[0].finish_reason == "stop"
