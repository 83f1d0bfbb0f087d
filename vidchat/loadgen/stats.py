"""What the run measured, per request, and the statistics of the report built from it.

    RequestRecord (one per request, filled in by vidchat.loadgen.run)
        ──► summarize ──► the report: a JSON-ready dict (counts, throughput, latency
                          distributions, bytes, cache hit rates, machine, every record)
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vidchat.client import EncodedVideo
from vidchat.loadgen.workload import BenchSettings

PERCENTILES = (50, 90, 99)
# The error a record carries when the deadline came first (never started, or cancelled).
INCOMPLETE = "incomplete"


@dataclass
class RequestRecord:
    """What one request did, as seen by the client."""

    index: int
    video: int
    question: int
    start_s: float = 0.0  # since the start of the run
    ok: bool = False
    error: str | None = None
    status_code: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    image_bytes: int = 0  # JPEG bytes uploaded (0 when the server held every frame)
    request_bytes: int = 0  # HTTP request bodies, resends included

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (None below two tokens)."""
        if self.ttft_s is None or self.e2e_s is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 (linear interpolation), min and max."""
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None,
                **{f"p{p}": None for p in PERCENTILES}}
    arr = np.asarray(values, dtype=float)
    pct = np.percentile(arr, PERCENTILES)
    return {"n": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min()),
            "max": float(arr.max()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)}}


def summarize(settings: BenchSettings, records: Sequence[RequestRecord], duration_s: float,
              prepare_s: float, caches: dict[str, Any], videos: Sequence[EncodedVideo]
              ) -> dict[str, Any]:
    """The report of one run. Latencies and throughput count completed requests only;
    bytes count every request sent (a failed upload still cost its bytes)."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok and r.error != INCOMPLETE]
    incomplete = [r for r in records if r.error == INCOMPLETE]
    out_tokens = sum(r.completion_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    frame_uuids = [f.uuid for v in videos for f in v.frames]
    request_bytes = sum(r.request_bytes for r in records)
    return {
        "settings": asdict(settings) | {"api_key": None},  # never write the key to disk
        "requests": {"planned": settings.requests, "sent": len(records),
                     "completed": len(done), "failed": len(failed),
                     "incomplete": len(incomplete),
                     "errors": dict(Counter(r.error for r in failed))},
        "duration_s": duration_s,
        "prepare_s": prepare_s,
        "request_throughput": len(done) / duration_s if duration_s > 0 else 0.0,
        "output_throughput": out_tokens / duration_s if duration_s > 0 else 0.0,
        "input_throughput": in_tokens / duration_s if duration_s > 0 else 0.0,
        "prompt_tokens": in_tokens,
        "completion_tokens": out_tokens,
        "ttft_s": distribution([r.ttft_s for r in done if r.ttft_s is not None]),
        "tpot_s": distribution([t for r in done if (t := r.tpot_s) is not None]),
        "itl_s": distribution([x for r in done for x in r.itl_s]),
        "e2e_s": distribution([r.e2e_s for r in done if r.e2e_s is not None]),
        "bytes": {
            "image_bytes": sum(r.image_bytes for r in records),
            "request_bytes": request_bytes,
            "request_bytes_per_request": request_bytes / len(records) if records else 0.0,
        },
        "videos": {"count": len(videos), "frames": len(frame_uuids),
                   "distinct_frames": len(set(frame_uuids)),
                   "payload_bytes": [v.payload_bytes for v in videos]},
        "caches": caches,
        "env": environment(),
        "records": [asdict(r) for r in records],
    }


def environment() -> dict[str, Any]:
    """The machine the run measured, with its load: other work skews every number."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "load_avg": list(os.getloadavg())}
