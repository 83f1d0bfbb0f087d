"""The client against the real CPU server: ask, stream, ask_many, batch, timestamps, the frame
budget, and the frame cache's resend path. Every client test runs against both twins,
VideoChat and AsyncVideoChat (tests/_twins.py)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _twins import KINDS, Twin

from vidchat.client import (
    AsyncVideoChat,
    FrameBudgetError,
    VideoNotFoundError,
    build_messages,
    sample_frames,
)
from vidchat.demo import make_demo_clip
from vidchat.limits import TOKENS_PER_IMAGE

pytestmark = pytest.mark.engine


class Counter:
    """Counts chat requests and the bytes of their bodies, through httpx event hooks."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.statuses: list[int] = []
        self.hooks = {"request": [self._req], "response": [self._resp]}

    def _req(self, request: httpx.Request) -> None:
        self.requests.append((request.url.path, len(request.content)))

    def _resp(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            self.statuses.append(response.status_code)

    def chat_bodies(self) -> list[int]:
        return [n for path, n in self.requests if path.endswith("/chat/completions")]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("client-clips")
    return [make_demo_clip(d / f"{s}.mp4", seconds=3, size="480x270", rate=15, gop=30,
                           source=s) for s in ("testsrc2", "smptebars", "rgbtestsrc")]


def test_ask_reports_answer_usage_and_timings(server, clips, kind):
    with Twin(kind, server.base_url) as chat:
        answer = chat.ask(clips[0], "What is happening?", frames=8, max_tokens=12)
    assert answer.model == server.model and answer.frames == 8
    assert answer.prompt_tokens > 8 * TOKENS_PER_IMAGE
    assert 1 <= answer.completion_tokens <= 12
    assert answer.finish_reason in ("stop", "length")
    assert answer.bytes_sent > 8 * 1000  # eight JPEG frames went up
    assert set(answer.timings) == {"prepare_s", "request_s"}


def test_stream_yields_the_same_answer_as_ask(server, clips, kind):
    with Twin(kind, server.base_url) as chat:
        video = chat.prepare(clips[1], 4)
        whole = chat.ask(video, "Describe it.", max_tokens=16).text
        pieces = list(chat.stream(video, "Describe it.", max_tokens=16))
    assert len(pieces) > 1 and "".join(pieces) == whole


def test_ask_many_uploads_once_and_later_questions_are_faster(server, tmp_path, kind):
    # Frames no other test sent (each twin its own): the first question must prefill them.
    clip = make_demo_clip(tmp_path / "ask-many.mp4", seconds=3, size="480x270",
                          rate=15 if kind == "sync" else 16, source="rgbtestsrc")
    counter = Counter()
    questions = [f"Question {i}: what do you see?" for i in range(6)]
    with Twin(kind, server.base_url, hooks=counter.hooks) as chat:
        answers = chat.ask_many(clip, questions, frames=8, max_tokens=4, concurrency=3)
    assert [a.frames for a in answers] == [8] * 6
    # The first answer is streamed (the rest are released when it starts); it still
    # reports its text, finish reason and usage like the others.
    assert all(a.completion_tokens == 4 and a.finish_reason == "length" for a in answers)
    assert answers[0].prompt_tokens > 8 * TOKENS_PER_IMAGE and answers[0].text
    assert answers[0].bytes_sent > 0 and all(a.bytes_sent == 0 for a in answers[1:])
    bodies = counter.chat_bodies()
    assert len(bodies) == 6
    # Counted on the wire: the first body carries the frames, the rest carry uuids only.
    assert bodies[0] > 20 * max(bodies[1:])
    first = answers[0].timings["request_s"]
    assert statistics.median(a.timings["request_s"] for a in answers[1:]) < first


def test_batch_keeps_order_and_reports_failures_in_place(server, clips, tmp_path, capsys,
                                                         kind):
    items = [(clips[i % 3], f"Item {i}?") for i in range(5)]
    items.insert(2, (tmp_path / "missing.mp4", "Lost?"))
    with Twin(kind, server.base_url) as chat:
        results = chat.batch(items, concurrency=3, frames=2, max_tokens=3, progress=True)
    assert len(results) == 6
    assert isinstance(results[2], VideoNotFoundError)
    assert all(r.frames == 2 for i, r in enumerate(results) if i != 2)
    assert "6/6" in capsys.readouterr().err  # the progress bar ran to the end


def test_async_client_asks_concurrently(server, clips):
    async def go():
        async with AsyncVideoChat(server.base_url) as chat:
            return await asyncio.gather(*(chat.ask(c, "What?", frames=2, max_tokens=3)
                                          for c in clips))

    answers = asyncio.run(go())
    assert [a.frames for a in answers] == [2, 2, 2]


def test_timestamp_labels_land_beside_their_frames(server, clips):
    frames = sample_frames(clips[0], 3)
    messages = build_messages(frames, "When does it change?", timestamps=True)
    resp = httpx.post(server.url + "/tokenize", timeout=60, json={
        "model": server.model, "messages": messages, "add_generation_prompt": True,
        "return_token_strs": True}).json()
    text = "".join(t if t != "<image>" else "#" for t in resp["token_strs"])
    text = text.replace("Ġ", " ").replace("Ċ", "\n")
    while "##" in text:
        text = text.replace("##", "#")
    labels = [f"Frame at {int(t // 60)}:{t % 60:04.1f}:" for t in frames.timestamps]
    # Each label right before its frame; parts rendered as the hub template renders them.
    assert text.startswith("<|im_start|>user\n" + "".join(f"\n{lab}#" for lab in labels)
                           + "\nWhen does it change?<|im_end|>")
    assert resp["token_strs"].count("<image>") == 3 * TOKENS_PER_IMAGE


def test_budget_refusal_happens_before_anything_is_sent(server, clips, kind):
    counter = Counter()
    with Twin(kind, server.base_url, hooks=counter.hooks) as chat:
        with pytest.raises(FrameBudgetError, match="limit of 16"):
            chat.ask(clips[0], "Too many?", frames=20, max_tokens=4)
        with pytest.raises(FrameBudgetError, match="context"):
            chat.ask(clips[0], "Too long?", frames=16, max_tokens=2000)
    assert counter.chat_bodies() == []  # only /v1/models was asked


def test_a_forgotten_frame_is_uploaded_again_once(server, tmp_path, kind):
    fresh = make_demo_clip(tmp_path / "fresh.mp4", seconds=2, size="352x288",
                           rate=10 if kind == "sync" else 12,
                           source="yuvtestsrc")  # frames no other test has sent
    counter = Counter()
    with Twin(kind, server.base_url, hooks=counter.hooks) as chat:
        video = chat.prepare(fresh, 3)
        # Pretend these frames were uploaded before: the server has never seen them.
        chat._core.uploaded.add(f.uuid for f in video.frames)
        answer = chat.ask(video, "Still there?", max_tokens=3)
    assert counter.statuses == [400, 200]  # cache miss, then the resend with the bytes
    small, full = counter.chat_bodies()
    assert full > 10 * small and answer.bytes_sent == video.payload_bytes


def test_cli_ask_prints_json(server, clips):
    run = subprocess.run(
        [sys.executable, "-m", "vidchat", "ask", str(clips[0]), "What is it?", "--server",
         server.base_url, "--frames", "4", "--max-tokens", "5", "--json"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["frames"] == 4 and out["prompt_tokens"] > 4 * TOKENS_PER_IMAGE


def test_cli_asks_several_questions_about_one_window_sampled_once(server, clips):
    base = [sys.executable, "-m", "vidchat", "ask", str(clips[1]), "First?", "Second?",
            "--server", server.base_url, "--frames", "3", "--start", "1", "--end", "2.5",
            "--timestamps", "--max-tokens", "3"]
    run = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert [a["question"] for a in out] == ["First?", "Second?"]
    assert [a["frames"] for a in out] == [3, 3]
    assert out[0]["bytes_sent"] > 0 and out[1]["bytes_sent"] == 0  # frames uploaded once
    streamed = subprocess.run([*base, "--stream"], capture_output=True, text=True,
                              timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.count("Q: ") == 2 and "A: " in streamed.stdout


def test_cli_ask_one_line_error_for_a_missing_video(server, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "vidchat", "ask", str(tmp_path / "nope.mp4"), "Hi?",
         "--server", server.base_url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("vidchat: error:") and run.stderr.count("\n") == 1
