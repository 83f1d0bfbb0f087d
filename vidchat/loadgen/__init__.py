"""`vidchat bench`: a load generator for video questions, through vidchat's own client.

Like `vllm bench serve`, but the prompts are real sampled frames: what a vidchat user sends.
One module per stage, in the order the data flows. run.py drives the stages and none of
them imports it; a stage takes only types and constants from an earlier one (stats:
BenchSettings, plots: PERCENTILES), so nothing calls back up the flow:

    workload.py  BenchSettings; the videos (moving test patterns, made with vidchat.clips),
        │        the questions, their order (first questions first), Poisson arrival times
        ▼
    run.py       prepare every video once (sample + encode), send the plan in a closed loop
        │        (--concurrency) or an open one (--rate), time every chunk; run_sweep: the
        │        same run at several concurrencies
        │  ◄──── metrics.py: the server's /metrics before and after ─► cache hit rates
        ▼
    stats.py     one RequestRecord per request ─► summarize ─► the report, a JSON-ready dict
        │        (counts, throughput, distribution(): mean, p50/p90/p99, bytes, caches)
        ▼
    report.py    format_report (the text summary); write_outputs: bench.json and
                 ─► plots.py: latency histograms, sweep curves (PNG; optional matplotlib)

Each run sends a fresh ``cache_salt`` (vLLM keys its prefix cache by it), so runs in a sweep
do not reuse each other's KV cache; caching *within* a run works as in production.
Everything the CLI, bench/ and the tests use is importable from ``vidchat.loadgen``.
"""

from __future__ import annotations

from vidchat.loadgen.metrics import cache_rates, parse_metrics, scrape_metrics, server_root
from vidchat.loadgen.plots import plot_latency, plot_sweep
from vidchat.loadgen.report import format_report, write_outputs
from vidchat.loadgen.run import run_bench, run_bench_async, run_sweep
from vidchat.loadgen.stats import PERCENTILES, RequestRecord, distribution, summarize
from vidchat.loadgen.workload import (
    QUESTIONS,
    BenchSettings,
    arrival_times,
    bench_pattern,
    make_bench_clip,
    make_bench_videos,
    plan_requests,
    question_text,
)

__all__ = [
    "PERCENTILES",
    "QUESTIONS",
    "BenchSettings",
    "RequestRecord",
    "arrival_times",
    "bench_pattern",
    "cache_rates",
    "distribution",
    "format_report",
    "make_bench_clip",
    "make_bench_videos",
    "parse_metrics",
    "plan_requests",
    "plot_latency",
    "plot_sweep",
    "question_text",
    "run_bench",
    "run_bench_async",
    "run_sweep",
    "scrape_metrics",
    "server_root",
    "summarize",
    "write_outputs",
]
