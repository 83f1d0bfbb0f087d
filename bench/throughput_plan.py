"""The throughput benchmark's workloads, targets and output places (bench/throughput.py runs
them, bench/throughput_report.py writes them up)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from _serving import ROOT


@dataclass(frozen=True)
class Workload:
    videos: int
    questions_per_video: int
    frames: int
    max_tokens: int
    concurrency: int

    @property
    def requests(self) -> int:
        return self.videos * self.questions_per_video


# The workloads (targets on this machine).
SESSIONS = Workload(videos=8, questions_per_video=4, frames=4, max_tokens=64, concurrency=16)
DISTINCT = Workload(videos=16, questions_per_video=1, frames=1, max_tokens=128, concurrency=16)
ASK_MANY = {"questions": 8, "frames": 8, "max_tokens": 32}
CEILING = Workload(videos=8, questions_per_video=4, frames=8, max_tokens=64, concurrency=32)
CEILING_REQUESTS = 600
PREFILL = Workload(videos=2, questions_per_video=1, frames=8, max_tokens=1, concurrency=1)
SWEEP = (1, 2, 4, 8, 16)  # concurrency, on the DISTINCT workload

VIDEO_SIZE, VIDEO_SECONDS = "1280x720", 6
HD_SIZE, HD_SECONDS = "1920x1080", 10
MAX_SECONDS = 600  # per vidchat run: a stuck server cannot hold the benchmark forever

TARGETS = {
    "sessions_vs_seed": 5.0,
    "sessions_vs_naive": 2.0,
    "distinct_vs_seed": 3.0,
    "ask_many_vs_naive": 4.0,
    "payload_vs_naive": 20.0,
    "client_ceiling_rps": 25.0,
}

DOCS = ROOT / "docs"
IMG = DOCS / "img"
COMMAND = ".venv/bin/python bench/throughput.py --write-docs"


def log(msg: str) -> None:
    print(f"[throughput] {msg}", file=sys.stderr, flush=True)
