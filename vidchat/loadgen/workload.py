"""The workload of a run: its settings, the videos, the questions, their order, arrival times.

Pure planning (no I/O) except the video maker, which shells out to ffmpeg via vidchat.clips.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from vidchat.clips import make_clip
from vidchat.errors import VidchatError
from vidchat.limits import DEFAULT_FRAMES

# Moving ffmpeg test patterns (every frame differs, so no two sampled frames are identical);
# a hue rotation per cycle makes as many distinct videos as asked for.
VIDEO_SOURCES = ("testsrc2", "testsrc", "gradients=speed=0.05", "rgbtestsrc", "yuvtestsrc")
HUE_STEP_DEG = 47
QUESTIONS = (
    "What is happening in this video?",
    "Describe the colours and shapes you see.",
    "What changes between the first and the last frame?",
    "Summarize the video in one sentence.",
    "How many distinct objects are visible?",
    "Is there any text or numbers on screen? Read them.",
    "What moves, and in which direction?",
    "Describe the background.",
)


@dataclass(frozen=True)
class BenchSettings:
    """One load-generator run. Exactly one of concurrency / rate drives the arrivals
    (rate with a concurrency is an open loop capped at that many requests in flight)."""

    server: str
    model: str | None = None
    api_key: str | None = None
    requests: int = 32
    concurrency: int | None = 16
    rate: float | None = None
    frames: int = DEFAULT_FRAMES
    max_tokens: int = 64
    videos: int = 8
    questions_per_video: int = 4
    max_seconds: float = 600.0
    timeout_s: float = 600.0
    seed: int = 0
    salt: bool = True  # a fresh cache_salt per run (see vidchat.loadgen's docstring)
    session_order: bool = True  # follow-ups wait until their video's first answer starts

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise VidchatError("--requests must be at least 1")
        if self.rate is None and not self.concurrency:
            raise VidchatError("give --concurrency C (closed loop) or --rate R (Poisson)")
        if self.concurrency is not None and self.concurrency < 1:
            raise VidchatError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise VidchatError("--rate must be a positive number of requests per second")
        if self.frames < 1 or self.max_tokens < 1:
            raise VidchatError("--frames and --max-tokens must be at least 1")
        if self.videos < 1 or self.questions_per_video < 1:
            raise VidchatError("--videos and --questions-per-video must be at least 1")
        if self.max_seconds <= 0:
            raise VidchatError("--max-seconds must be positive")


def question_text(q: int) -> str:
    """The ``q``-th question about a video; past the list, the same ones marked as follow-ups
    (so no two questions about one video are the same text)."""
    base = QUESTIONS[q % len(QUESTIONS)]
    return base if q < len(QUESTIONS) else f"{base} (follow-up {q // len(QUESTIONS)})"


def plan_requests(requests: int, videos: int, questions_per_video: int) -> list[tuple[int, int]]:
    """(video, question) per request: every video's first question, then every video's
    second, ... (a session asks its follow-ups after the first); cycles when
    ``requests`` exceeds videos x questions."""
    pairs = [(v, q) for q in range(questions_per_video) for v in range(videos)]
    return [pairs[i % len(pairs)] for i in range(requests)]


def arrival_times(n: int, rate: float, seed: int) -> list[float]:
    """Poisson arrivals: offsets (s) of ``n`` requests at ``rate`` per second."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def bench_pattern(index: int) -> tuple[str, int]:
    """The lavfi source and hue shift (degrees) of the ``index``-th benchmark video: the
    sources in turn, then again with the hue turned one more step."""
    source = VIDEO_SOURCES[index % len(VIDEO_SOURCES)]
    return source, (index // len(VIDEO_SOURCES)) * HUE_STEP_DEG % 360


def make_bench_clip(path: Path, index: int, *, seconds: float = 6, size: str = "1280x720",
                    rate: int = 30) -> Path:
    """The ``index``-th benchmark video: a moving test pattern, distinct from every other
    index. Made once; an existing file is reused."""
    if path.exists() and path.stat().st_size > 0:
        return path
    source, hue = bench_pattern(index)
    return make_clip(path, source=source, size=size, rate=rate, seconds=seconds,
                     filters=(f"hue=h={hue}",), gop=rate * 2)


def make_bench_videos(directory: str | os.PathLike[str], count: int, *, seconds: float = 6,
                      size: str = "1280x720", rate: int = 30) -> list[Path]:
    """``count`` distinct benchmark videos in ``directory`` (cached by name)."""
    d = Path(directory)
    return [make_bench_clip(d / f"bench-{i:02d}-{size}-{seconds:g}s.mp4", i, seconds=seconds,
                            size=size, rate=rate) for i in range(count)]
