"""CPU profile tuning: the bench workloads against `vidchat serve` with one setting changed.

Each variant starts its own server (configs/cpu-bench.yaml + `--set` overrides), warms it
with one request on a video outside the workload, then runs two `vidchat bench` workloads:

    sessions   8 videos x 4 questions, 4 frames, 64 output tokens, concurrency 16
    distinct  16 videos x 1 question,  1 frame, 128 output tokens, concurrency 16

    python bench/tune_cpu.py [--variants default,bind-0-1,...] [--repeat 1] [--write-docs]
                             [--set KEY=VALUE ...]   (added to every variant, e.g. dtype=float32
                                                      on a CPU without fast bf16)

writes out/bench/tune_cpu.json (and docs/data/tune_cpu.json with --write-docs) and prints
requests/s per variant. The machine is shared: the load average is recorded beside every
number, and only ratios within one run mean much.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _serving import (
    OUT,
    ROOT,
    VIDEO_DIR,
    ensure_checkpoint,
    load_snapshot,
    machine,
    start_server,
)

from vidchat.loadgen import BenchSettings, make_bench_clip, make_bench_videos, run_bench

VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),  # the profile as committed
    "compiled": ("enforce_eager=false",),  # torch.compile graphs instead of eager mode
    "bind-auto": ("cpu_threads_bind=auto",),  # vLLM's default: 1 core computes, 1 reserved
    "bind-0-1": ("cpu_threads_bind=0-1",),  # both cores compute
    "nobind": ("cpu_threads_bind=nobind",),  # no pinning; torch's own thread count
    "kv-1g": ("kv_cache_space_gib=1",),
    "kv-8g": ("kv_cache_space_gib=8",),
    "batched-1024": ("max_num_batched_tokens=1024",),
    "batched-2048": ("max_num_batched_tokens=2048",),  # vLLM's CPU default
    "batched-8192": ("max_num_batched_tokens=8192",),
    # API-server processes on the port (vllm serve --api-server-count), against the profile
    # as committed (api_servers 1); measured in alternation.
    "api-servers-1": ("api_servers=1",),
    "api-servers-2": ("api_servers=2",),
    # Half the KV bytes read per decode step; changes the numerics (not used for baselines).
    "kv-fp8": ('extra_args=["--kv-cache-dtype", "fp8"]',),
}
WORKLOADS = {
    "sessions": {"videos": 8, "questions_per_video": 4, "frames": 4, "max_tokens": 64,
                 "concurrency": 16},
    "distinct": {"videos": 16, "questions_per_video": 1, "frames": 1, "max_tokens": 128,
                 "concurrency": 16},
}
MAX_SECONDS = 300


def run_variant(name: str, overrides: tuple[str, ...], videos: list[Path], warm: Path
                ) -> dict[str, Any]:
    server = start_server(overrides)
    result: dict[str, Any] = {"variant": name, "overrides": list(overrides),
                              "startup_s": server.startup_s, "workloads": {}}
    try:
        run_bench(BenchSettings(server.base_url, requests=1, concurrency=1, frames=1,
                                max_tokens=8, videos=1, questions_per_video=1), [warm],
                  progress=False)
        for wname, w in WORKLOADS.items():
            settings = BenchSettings(server.base_url, requests=w["videos"] *
                                     w["questions_per_video"], max_seconds=MAX_SECONDS, **w)
            load = load_snapshot()
            report = run_bench(settings, videos, progress=False)
            report.pop("records")
            result["workloads"][wname] = {"load": load, "report": report}
            print(f"  {name:<15} {wname:<9} {report['request_throughput']:6.2f} req/s "
                  f"{report['output_throughput']:7.1f} tok/s  TTFT p50 "
                  f"{(report['ttft_s']['p50'] or 0):6.2f} s  failed "
                  f"{report['requests']['failed']}  load {load['load_avg'][0]:.1f}",
                  file=sys.stderr, flush=True)
        result["log_info"] = [line for line in server.log_tail(200_000).splitlines()
                              if "core ids" in line or "KV cache size" in line
                              or "API server processes" in line][:6]
    finally:
        server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the variants")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a profile override added to every variant (recorded with it)")
    parser.add_argument("--out", default=str(OUT / "tune_cpu.json"))
    parser.add_argument("--append", action="store_true",
                        help="add to the results already in --out instead of replacing them")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/data/tune_cpu.json (the table in "
                        "docs/benchmarks.md, regenerated by bench/throughput.py --write-docs)")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    ensure_checkpoint()
    videos = make_bench_videos(VIDEO_DIR, 16)
    warm = make_bench_clip(VIDEO_DIR / "warmup.mp4", 99)
    results: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    if args.append and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text())
        results = previous["results"]
        notes = {k: v for k, v in previous.items() if k == "note"}
    for _ in range(args.repeat):
        for name in names:
            try:
                results.append(run_variant(name, (*args.set, *VARIANTS[name]), videos, warm))
            except RuntimeError as exc:
                print(f"  {name}: failed: {str(exc)[-800:]}", file=sys.stderr)
                results.append({"variant": name, "error": str(exc)[-2000:]})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"machine": machine(), **notes,
                                                  "results": results}, indent=1))
    print(f"wrote {args.out}")
    if args.write_docs:
        docs = ROOT / "docs" / "data" / "tune_cpu.json"
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(json.dumps({"machine": machine(), **notes, "results": results},
                                   indent=1))
        print(f"wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
