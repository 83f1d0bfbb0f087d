"""The report of a run, for people and for files: a plain-text summary, bench.json, plots.

    report (vidchat.loadgen.stats.summarize) ──► format_report ──► text
    reports ──► write_outputs ──► bench.json, latency.png (+ sweep.png, vidchat.loadgen.plots)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidchat.loadgen.plots import plot_latency, plot_sweep


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:9.1f}"


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary, like `vllm bench serve` prints."""
    s, req = report["settings"], report["requests"]
    mode = (f"rate {s['rate']:g} req/s (Poisson)" if s["rate"] else
            f"concurrency {s['concurrency']}")
    lines = [
        f"{'=' * 22} vidchat bench {'=' * 22}",
        f"server              {s['server']}",
        f"workload            {s['videos']} videos x {s['questions_per_video']} questions, "
        f"{s['frames']} frames, {s['max_tokens']} output tokens, {mode}"
        + (", session order" if s.get("session_order") else ""),
        f"requests            {req['completed']} ok / {req['failed']} failed / "
        f"{req['incomplete']} incomplete of {req['planned']}",
    ]
    if req["errors"]:
        lines.append("errors              " + ", ".join(f"{k}: {v}" for k, v in
                                                      req["errors"].items()))
    lines += [
        f"sample+encode       {report['prepare_s']:.2f} s for {report['videos']['count']} "
        "videos (once each)",
        f"duration            {report['duration_s']:.2f} s",
        f"request throughput  {report['request_throughput']:.2f} req/s",
        f"output throughput   {report['output_throughput']:.1f} tok/s",
        f"input throughput    {report['input_throughput']:.1f} tok/s",
        f"request body        {report['bytes']['request_bytes_per_request'] / 1024:.1f} "
        "KiB per request (mean)",
    ]
    for kind in ("prefix_cache", "mm_cache"):
        c = report["caches"].get(kind)
        rate = c and c["hit_rate"]
        lines.append(f"{kind.replace('_', ' '):<20}"
                     + ("n/a" if c is None else
                        f"{'-' if rate is None else f'{rate:.1%}'} hit rate "
                        f"({c['hits']:.0f}/{c['queries']:.0f})"))
    lines.append(f"{'latency (ms)':<20}{'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}")
    for key, label in (("ttft_s", "TTFT"), ("itl_s", "inter-token"), ("tpot_s", "TPOT"),
                       ("e2e_s", "end-to-end")):
        d = report[key]
        lines.append(f"{label:<20}{_ms(d['mean'])} {_ms(d['p50'])} {_ms(d['p90'])} "
                     f"{_ms(d['p99'])}")
    lines.append("=" * 58)
    return "\n".join(lines)


def write_outputs(reports: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str], *,
                  sweep: bool = False) -> list[Path]:
    """bench.json (one report, or a list for a sweep), latency.png, and sweep.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json"]
    payload: Any = list(reports) if sweep else reports[0]
    written[0].write_text(json.dumps(payload, indent=1))
    if plot_latency(reports[-1], out / "latency.png"):
        written.append(out / "latency.png")
    if sweep and plot_sweep(reports, out / "sweep.png"):
        written.append(out / "sweep.png")
    return written
