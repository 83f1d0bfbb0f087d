"""Throughput of vidchat on vLLM, side by side with the seed pipeline and a naive vLLM client.

    .venv/bin/python bench/throughput.py --write-docs        # or: make bench-throughput

One run, one machine, one checkpoint (the generated "bench" preset), the same requests for
every method:

    client ceiling  `vidchat bench` against bench/fake_server.py (answers at once)
    vLLM server     configs/cpu-bench.yaml via `vidchat serve`, then, in turn:
                    vidchat (`vidchat bench` load generator / VideoChat.ask_many),
                    the naive client (bench/baselines.py), a concurrency sweep,
                    and an 8-frame prefill probe
    seed pipeline   transformers generate() in its own process, with the server stopped

Throughput counts everything a method does after its inputs exist: vidchat's sampling and
encoding (once per video) is added to its request time, the naive client samples inside
every request, the seed pipeline samples once per video inside its loop. Nothing else runs
at the same time *within* the run; other work on the machine is recorded as load averages.

Writes out/bench/throughput.json (everything, per-request records included); with
--write-docs also docs/benchmarks.md, docs/img/*.png and docs/data/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import httpx
from _serving import (
    BENCH_PROFILE,
    OUT,
    VIDEO_DIR,
    ensure_checkpoint,
    load_snapshot,
    machine,
    start_server,
)
from baselines import NaiveResult, SeedJob, SeedResult, run_naive, run_seed_subprocess
from fake_server import running_fake_server
from throughput_plan import (
    ASK_MANY,
    CEILING,
    CEILING_REQUESTS,
    DISTINCT,
    HD_SECONDS,
    HD_SIZE,
    MAX_SECONDS,
    PREFILL,
    SESSIONS,
    SWEEP,
    TARGETS,
    VIDEO_SECONDS,
    VIDEO_SIZE,
    Workload,
    log,
)
from throughput_report import fmt, render

from vidchat.client import VideoChat
from vidchat.loadgen import (
    BenchSettings,
    distribution,
    make_bench_clip,
    make_bench_videos,
    plan_requests,
    question_text,
    run_bench,
)


def settings_for(url: str, w: Workload, **extra: Any) -> BenchSettings:
    return BenchSettings(url, requests=w.requests, concurrency=w.concurrency, frames=w.frames,
                         max_tokens=w.max_tokens, videos=w.videos,
                         questions_per_video=w.questions_per_video, max_seconds=MAX_SECONDS,
                         **extra)


def requests_for(w: Workload, videos: list[Path]) -> list[tuple[str, str]]:
    """The (video, question) list every method gets, in the load generator's order."""
    return [(str(videos[v]), question_text(q))
            for v, q in plan_requests(w.requests, w.videos, w.questions_per_video)]


def ours_summary(report: dict[str, Any]) -> dict[str, Any]:
    done = report["requests"]["completed"]
    wall = report["prepare_s"] + report["duration_s"]
    return {"method": "vidchat", "completed": done, "failed": report["requests"]["failed"],
            "wall_s": wall, "rps": done / wall if wall else 0.0,
            "rps_requests_only": report["request_throughput"],
            "output_tok_s": report["completion_tokens"] / wall if wall else 0.0,
            "ttft_s": report["ttft_s"], "e2e_s": report["e2e_s"], "itl_s": report["itl_s"],
            "request_bytes_mean": report["bytes"]["request_bytes_per_request"],
            "caches": report["caches"], "prepare_s": report["prepare_s"]}


def naive_summary(r: NaiveResult) -> dict[str, Any]:
    done = len(r.e2e_s)
    return {"method": "naive", "completed": done, "failed": len(r.errors), "wall_s": r.wall_s,
            "rps": done / r.wall_s if r.wall_s else 0.0,
            "output_tok_s": r.completion_tokens / r.wall_s if r.wall_s else 0.0,
            "e2e_s": distribution(r.e2e_s), "sample_s": distribution(r.sample_s),
            "request_bytes_mean": sum(r.request_bytes) / max(1, len(r.request_bytes))}


def seed_summary(r: SeedResult) -> dict[str, Any]:
    done = len(r.e2e_s)
    return {"method": "seed", "completed": done, "failed": 0, "wall_s": r.wall_s,
            "rps": done / r.wall_s if r.wall_s else 0.0,
            "output_tok_s": r.completion_tokens / r.wall_s if r.wall_s else 0.0,
            "e2e_s": distribution(r.e2e_s), "ttft_s": distribution(r.ttft_s),
            "itl_s": distribution(r.itl_s), "sample_s": r.sample_s,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}


def ask_many_ours(url: str, video: Path, questions: list[str]) -> dict[str, Any]:
    sizes: list[int] = []
    http = httpx.Client(event_hooks={"request": [lambda req: sizes.append(len(req.content))]})
    with VideoChat(url, max_retries=0, http_client=http) as chat:
        t0 = time.perf_counter()
        answers = chat.ask_many(video, questions, frames=ASK_MANY["frames"],
                                max_tokens=ASK_MANY["max_tokens"], ignore_eos=True,
                                extra_body={"cache_salt": uuid.uuid4().hex})
        wall = time.perf_counter() - t0
    http.close()
    return {"method": "vidchat ask_many", "completed": len(answers), "wall_s": wall,
            "rps": len(answers) / wall, "request_bytes": sizes,
            "request_bytes_mean": sum(sizes) / max(1, len(sizes)),
            "completion_tokens": sum(a.completion_tokens for a in answers)}


def client_ceiling(videos: list[Path], progress: bool) -> dict[str, Any]:
    with running_fake_server() as url:
        s = settings_for(url, CEILING)
        report = run_bench(replace(s, requests=CEILING_REQUESTS), videos, progress=progress)
    return report


def run_server_phase(videos: list[Path], hd: Path, warm: Path, model: str, args: argparse.Namespace
                     ) -> dict[str, Any]:
    progress = not args.no_progress
    res: dict[str, Any] = {}
    server = start_server()
    res["startup_s"] = server.startup_s
    url = server.base_url
    try:
        log(f"server ready in {server.startup_s:.0f} s at {url}; warming up")
        run_bench(BenchSettings(url, requests=1, concurrency=1, frames=1, max_tokens=8,
                                videos=1, questions_per_video=1), [warm], progress=False)
        for name, w in (("sessions", SESSIONS), ("distinct", DISTINCT)):
            log(f"{name}: vidchat")
            load = load_snapshot()
            report = run_bench(settings_for(url, w), videos, progress=progress)
            res[f"{name}_ours"] = {"load": load, "summary": ours_summary(report),
                                   "report": report}
            if name == "distinct" and args.skip_naive_distinct:
                continue
            log(f"{name}: naive client")
            load = load_snapshot()
            naive = run_naive(url, model, requests_for(w, videos), w.frames, w.max_tokens,
                              cache_salt=uuid.uuid4().hex, progress=progress)
            res[f"{name}_naive"] = {"load": load, "summary": naive_summary(naive),
                                    "raw": asdict(naive)}
        questions = [question_text(q) for q in range(ASK_MANY["questions"])]
        log("ask_many on one 1080p video: vidchat")
        res["ask_many_ours"] = {"load": load_snapshot(),
                                "summary": ask_many_ours(url, hd, questions)}
        log("ask_many on one 1080p video: naive client")
        load = load_snapshot()
        naive = run_naive(url, model, [(str(hd), q) for q in questions], ASK_MANY["frames"],
                          ASK_MANY["max_tokens"], cache_salt=uuid.uuid4().hex,
                          progress=progress)
        res["ask_many_naive"] = {"load": load, "summary": naive_summary(naive),
                                 "raw": asdict(naive)}
        log("prefill probe: 8 frames, 1 token, one request at a time")
        report = run_bench(settings_for(url, PREFILL), videos[-PREFILL.videos:],
                           progress=False)
        res["prefill_ours"] = {"load": load_snapshot(), "summary": ours_summary(report),
                               "prompt_tokens": report["prompt_tokens"]}
        log(f"concurrency sweep {SWEEP} on the distinct workload")
        sweep = []
        for c in SWEEP:
            r = run_bench(replace(settings_for(url, DISTINCT), concurrency=c), videos,
                          progress=progress)
            sweep.append(r)
        res["sweep"] = sweep
    finally:
        server.stop()
    return res


def run_seed_phase(videos: list[Path], model_dir: Path, progress: bool) -> dict[str, Any]:
    jobs = [
        SeedJob(str(model_dir), requests_for(SESSIONS, videos), SESSIONS.frames,
                SESSIONS.max_tokens, name="sessions"),
        SeedJob(str(model_dir), requests_for(DISTINCT, videos), DISTINCT.frames,
                DISTINCT.max_tokens, name="distinct"),
        SeedJob(str(model_dir), requests_for(PREFILL, videos[-PREFILL.videos:]),
                PREFILL.frames, PREFILL.max_tokens, name="prefill"),
    ]
    load = load_snapshot()
    results = run_seed_subprocess(jobs, OUT / "seed", progress=progress)
    return {f"{j.name}_seed": {"load": load, "summary": seed_summary(r), "raw": asdict(r)}
            for j, r in zip(jobs, results, strict=True)}


def ratios(res: dict[str, Any]) -> dict[str, Any]:
    def rps(key: str) -> float | None:
        item = res.get(key)
        return item["summary"]["rps"] if item else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    am_ours, am_naive = res["ask_many_ours"]["summary"], res["ask_many_naive"]["summary"]
    measured = {
        "sessions_vs_seed": div(rps("sessions_ours"), rps("sessions_seed")),
        "sessions_vs_naive": div(rps("sessions_ours"), rps("sessions_naive")),
        "distinct_vs_seed": div(rps("distinct_ours"), rps("distinct_seed")),
        "ask_many_vs_naive": div(am_naive["wall_s"], am_ours["wall_s"]),
        "payload_vs_naive": div(am_naive["request_bytes_mean"], am_ours["request_bytes_mean"]),
        "client_ceiling_rps": res["ceiling"]["request_throughput"],
    }
    return {k: {"measured": v, "target": TARGETS[k],
                "pass": v is not None and v >= TARGETS[k]} for k, v in measured.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/benchmarks.md, docs/img/*.png, docs/data/")
    parser.add_argument("--skip-seed", action="store_true", help="(development) no seed run")
    parser.add_argument("--skip-naive-distinct", action="store_true",
                        help="do not run the naive client on the distinct workload")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="(development) rewrite the docs from out/bench/throughput.json")
    parser.add_argument("--smoke", action="store_true",
                        help="(development) tiny workloads, docs to out/bench/smoke-docs")
    args = parser.parse_args()
    if args.smoke:
        global SESSIONS, DISTINCT, ASK_MANY, CEILING, CEILING_REQUESTS, PREFILL, SWEEP, DOCS, IMG
        CEILING = Workload(videos=2, questions_per_video=2, frames=8, max_tokens=4,
                           concurrency=4)
        SESSIONS = Workload(videos=2, questions_per_video=2, frames=1, max_tokens=4,
                            concurrency=2)
        DISTINCT = Workload(videos=2, questions_per_video=1, frames=1, max_tokens=4,
                            concurrency=2)
        ASK_MANY = {"questions": 2, "frames": 2, "max_tokens": 4}
        CEILING_REQUESTS = 20
        PREFILL = Workload(videos=2, questions_per_video=1, frames=2, max_tokens=1,
                           concurrency=1)
        SWEEP = (1, 2)
        DOCS = OUT / "smoke-docs"
        IMG = DOCS / "img"

    if args.render_only:
        data = json.loads((OUT / "throughput.json").read_text())
        render(data)
        return 0
    t_start = time.perf_counter()
    data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                            "load_start": load_snapshot()}
    log(f"load average at start: {data['load_start']['load_avg']}")
    model_dir = ensure_checkpoint()
    from vidchat.server.config import load_config

    model = load_config(BENCH_PROFILE).served_model_name
    videos = make_bench_videos(VIDEO_DIR, max(DISTINCT.videos, SESSIONS.videos, CEILING.videos),
                               seconds=VIDEO_SECONDS, size=VIDEO_SIZE)
    hd = make_bench_clip(VIDEO_DIR / f"hd-{HD_SIZE}-{HD_SECONDS}s.mp4", 40,
                         seconds=HD_SECONDS, size=HD_SIZE)
    warm = make_bench_clip(VIDEO_DIR / "warmup.mp4", 99)

    res: dict[str, Any] = {}
    log("client ceiling against the fake server")
    res["ceiling"] = client_ceiling(videos, not args.no_progress)
    res.update(run_server_phase(videos, hd, warm, model, args))
    if not args.skip_seed:
        log("seed pipeline (transformers), server stopped")
        res.update(run_seed_phase(videos, model_dir, not args.no_progress))
    data["results"] = res
    data["targets"] = ratios(res) if not args.skip_seed else {}
    data["total_s"] = time.perf_counter() - t_start
    data["load_end"] = load_snapshot()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput.json").write_text(json.dumps(data, indent=1))
    log(f"wrote {OUT / 'throughput.json'}")
    for k, t in data["targets"].items():
        log(f"{k:<20} {fmt(t['measured'], '.2f'):>8} (target >= {t['target']:g}) "
            f"{'pass' if t['pass'] else 'FAIL'}")
    if args.write_docs and data["targets"]:
        render(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
