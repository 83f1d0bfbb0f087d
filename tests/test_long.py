"""Long videos: ask_long cuts the video into windows, asks each, combines the answers.

Pure planning as unit tests; the whole flow on both twins against a mock server whose context
is small enough to force a hierarchical reduce; then the real CPU server over a 20-minute clip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest
from _twins import KINDS, Twin

from vidchat.client import BadRequestError, FrameBudgetError, SamplingArgumentError
from vidchat.client._long import plan_reduce, plan_windows, reduce_prompt, time_range
from vidchat.clips import make_clip
from vidchat.loadgen import parse_metrics

QUESTION = "What happens in this video?"


# -- planning ----------------------------------------------------------------------------------


def test_windows_cover_the_video_without_gaps():
    windows = plan_windows(1200.0, 300)
    assert [(w.start, w.end) for w in windows] == [(0, 300), (300, 600), (600, 900),
                                                   (900, 1200)]
    # A sliver shorter than a tenth of a window joins the last window; a longer one is its own.
    assert [(w.start, w.end) for w in plan_windows(1210.0, 300)][-1] == (900, 1210)
    assert [(w.start, w.end) for w in plan_windows(1290.0, 300)][-1] == (1200, 1290)
    overlapping = plan_windows(1000.0, 300, overlap_s=60)
    assert [w.start for w in overlapping] == [0, 240, 480, 720]
    assert overlapping[-1].end == 1000
    ranged = plan_windows(1200.0, 100, start=250, end=500)
    assert (ranged[0].start, ranged[-1].end, len(ranged)) == (250, 500, 3)
    for ws in (windows, overlapping, ranged):
        assert all(b.start <= a.end for a, b in zip(ws, ws[1:], strict=False))


@pytest.mark.parametrize("kwargs, words", [
    ({"window_s": 0}, "window_s must be a positive number"),
    ({"window_s": -5}, "window_s must be a positive number"),
    ({"window_s": 2000}, "longer than the 1200.0s to cover"),
    ({"window_s": 100, "overlap_s": 100}, "overlap_s must be"),
    ({"window_s": 100, "start": 1300}, "is empty"),
])
def test_bad_windows_are_one_line_errors(kwargs, words):
    window_s = kwargs.pop("window_s")
    with pytest.raises(SamplingArgumentError, match=words) as info:
        plan_windows(1200.0, window_s, **kwargs)
    assert "\n" not in str(info.value)


def test_the_reduce_prompt_shows_each_answer_after_its_time_range():
    parts = [(0.0, 300.0, "A cat sleeps."), (300.0, 600.0, "It wakes up.")]
    prompt = reduce_prompt(QUESTION, parts)
    assert "[0:00.0-5:00.0] A cat sleeps.\n[5:00.0-10:00.0] It wakes up." in prompt
    assert prompt.endswith(f"about the whole video: {QUESTION}")


def test_reduce_groups_consecutive_answers_when_they_do_not_fit():
    parts = [(i * 10.0, (i + 1) * 10.0, "x" * 200) for i in range(6)]
    assert plan_reduce(QUESTION, parts, 32768, 64) == [[0, 1, 2, 3, 4, 5]]
    groups = plan_reduce(QUESTION, parts, 900, 64)
    assert len(groups) > 1 and sum(groups, []) == list(range(6))  # consecutive, all of them
    with pytest.raises(FrameBudgetError, match="too long to combine"):
        plan_reduce(QUESTION, [(0.0, 1.0, "y" * 5000)], 900, 64)


# -- the flow, on both twins, against a mock server -------------------------------------------


@pytest.fixture(scope="module")
def clip_20s(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("long") / "20s.mp4", source="testsrc2",
                     size="160x120", rate=5, seconds=20, gop=10)


def mock_server(calls: list[dict], max_model_len: int, fail_window: int | None = None):
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{
                "id": "m", "object": "model", "created": 0, "owned_by": "t",
                "max_model_len": max_model_len}]})
        body = json.loads(request.content)
        parts = body["messages"][0]["content"]
        frames = sum(p["type"] == "image_url" for p in parts)
        calls.append({"frames": frames, "text": "".join(p.get("text", "") for p in parts
                                                        if p["type"] == "text")})
        if frames and fail_window is not None and sum(c["frames"] > 0 for c in calls) == \
                fail_window:
            return httpx.Response(400, json={"object": "error", "message": "bad window",
                                             "code": 400})
        text = ("window answer " * 12) if frames else f"combined {len(calls)}"
        return httpx.Response(200, json={
            "id": f"c{len(calls)}", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})

    return handle


@pytest.mark.parametrize("kind", KINDS)
def test_a_small_context_combines_hierarchically(clip_20s, kind):
    calls: list[dict] = []
    with Twin(kind, "http://vidchat.test/v1", transport=mock_server(calls, 1400),
              max_retries=0) as chat:
        answer = chat.ask_long(str(clip_20s), QUESTION, window_s=2, frames_per_window=1,
                               concurrency=3, max_tokens=48)
    assert len(answer.windows) == 10 and not answer.failed
    assert answer.reduce_steps > 1  # the ten answers did not fit one combining request
    assert answer.requests == len(calls) == 10 + answer.reduce_steps
    assert [c["frames"] for c in calls].count(1) == 10
    assert answer.text.startswith("combined")
    assert answer.reduce_prompts[-1] == calls[-1]["text"]
    assert answer.prompt_tokens == 100 * len(calls)
    # Every window's time range reached some combining request.
    first_level = "".join(answer.reduce_prompts[:-1])
    assert all(w.time_range in first_level for w in answer.windows)


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_window_is_reported_not_lost(clip_20s, kind):
    calls: list[dict] = []
    with Twin(kind, "http://vidchat.test/v1", transport=mock_server(calls, 32768, 2),
              max_retries=0) as chat:
        answer = chat.ask_long(str(clip_20s), QUESTION, window_s=5, frames_per_window=2)
    assert len(answer.windows) == 4 and len(answer.failed) == 1
    assert isinstance(answer.failed[0].error, BadRequestError)
    assert answer.failed[0].time_range not in answer.reduce_prompts[-1]
    assert answer.reduce_steps == 1 and answer.text == f"combined {len(calls)}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_window_over_the_frame_limit_is_refused_before_sending(clip_20s, kind):
    calls: list[dict] = []
    with Twin(kind, "http://vidchat.test/v1", transport=mock_server(calls, 4000),
              max_retries=0) as chat:
        with pytest.raises(FrameBudgetError, match="frames_per_window=8 exceeds"):
            chat.ask_long(str(clip_20s), QUESTION, window_s=5, frames_per_window=8)
    assert calls == []


# -- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_20min(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("long") / "20min.mp4", source="testsrc2",
                     size="128x96", rate=2, seconds=1200, gop=20)


def engine_requests(server) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as resp:  # noqa: S310
        return parse_metrics(resp.read().decode(), ["vllm:request_success"])[
            "vllm:request_success"]


@pytest.mark.engine
def test_twenty_minutes_by_windows_on_the_real_server(server, clip_20min):
    from vidchat.client import VideoChat

    before = engine_requests(server)
    with VideoChat(server.base_url) as chat:
        answer = chat.ask_long(clip_20min, QUESTION, window_s=300, frames_per_window=4,
                               concurrency=2, max_tokens=16)
    windows = answer.windows
    assert len(windows) == 4 and not answer.failed
    assert windows[0].start == 0 and windows[-1].end == pytest.approx(1200, abs=0.6)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))
    for w in windows:
        assert len(w.frames) == 4 and all(w.start <= t < w.end for t in w.frames)
        assert w.answer.prompt_tokens > 4 * 729
    assert engine_requests(server) - before == len(windows) + answer.reduce_steps == 5
    final = answer.reduce_prompts[-1]
    assert all(time_range(w.start, w.end) in final for w in windows)
    assert answer.completion_tokens > 0 and answer.text is not None


@pytest.mark.engine
@pytest.mark.parametrize("args, words", [
    (["--window", "5000"], "longer than the"),
    (["--window", "0"], "window_s must be a positive number"),
    (["--window", "300", "--frames-per-window", "40"], "exceeds the server's limit"),
])
def test_long_cli_bad_input_is_one_line(server, clip_20min, args, words):
    run = subprocess.run([sys.executable, "-m", "vidchat", "ask", str(clip_20min), QUESTION,
                          "--long", "--server", server.base_url, *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("vidchat: error:") and words in run.stderr
    assert run.stderr.count("\n") == 1
