"""Calls at once: the "Calls at once" section of docs/sampling.md.

sample_frames as shipped (decode worker processes), with several calls in flight from
threads, as the clients' batch and async paths make them. Two ways to use the cores:

- shared (the default): each call gets its share of the cores when it starts
  (`_decode.decoding_share`): two decoders when it runs alone, one when other calls decode
  too;
- fixed: two decoders per call whatever else runs (VIDCHAT_DECODERS=2, the behaviour before).

Each configuration runs in a fresh process: --calls calls of sample_frames(clip, 8) +
encode_video from --concurrency threads, the workers started and warmed beforehand; wall time,
calls per second, and the workers' peak RSS (VmHWM), summed. Rounds alternate the
configurations; the table gives medians. (A lone caller is the same in both: its share is
both decoders; tests/test_sampling.py checks the arithmetic.)

    python bench/sampling_concurrency.py [--rounds 3] [--calls 12] [--concurrency 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"
DOCS = ROOT / "docs"
CONFIGS = {"fixed": "2", "shared": None}  # VIDCHAT_DECODERS for each
SECTION = "## Calls at once"


def _worker_peaks_mib() -> list[int]:
    """VmHWM of this process's children (the decode workers), in MiB."""
    pids = set()
    for children in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        try:
            with open(children) as f:
                pids.update(f.read().split())
        except OSError:
            continue  # that thread has ended
    peaks = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                line = next(x for x in f if x.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
        peaks.append(int(line.split()[1]) // 1024)
    return peaks


def _measure(path: str, calls: int, concurrency: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from vidchat.client import encode_video, sample_frames, shutdown_decode_workers
    from vidchat.client._decode_worker import MAX_WORKERS, prestart

    workers = min(MAX_WORKERS, concurrency)
    prestart(workers)
    # One call per worker at once, so each has imported PyAV and PIL before the clock starts.
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: sample_frames(path, 1), range(workers)))

    def one(_: int) -> int:
        return len(encode_video(sample_frames(path, 8)).frames)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        frames = sum(pool.map(one, range(calls)))
    wall = time.perf_counter() - t0
    peaks = _worker_peaks_mib()
    shutdown_decode_workers()
    return {"wall_s": wall, "frames": frames, "worker_peaks_mib": peaks}


def _run(config: str, path: Path, calls: int, concurrency: int) -> dict:
    from sampling import run_child

    return run_child(__file__, [str(path), str(calls), str(concurrency)], config,
                     CONFIGS[config])


def run(rounds: int, calls: int, concurrency: int) -> dict:
    from sampling import clip_path

    path = clip_path("testsrc2-2s")
    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    for r in range(rounds):
        for config in CONFIGS:
            result = _run(config, path, calls, concurrency)
            runs[config].append(result)
            print(f"  round {r + 1}/{rounds} {config:<6} {result['wall_s']:6.2f} s  "
                  f"workers {result['worker_peaks_mib']} MiB  load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)  # fmt: skip
    results = {}
    for config, got in runs.items():
        wall = statistics.median(r["wall_s"] for r in got)
        results[config] = {
            "wall_s": wall,
            "wall_s_all": [r["wall_s"] for r in got],
            "calls_per_s": calls / wall,
            "workers_mib": statistics.median(sum(r["worker_peaks_mib"]) for r in got),
            "worker_peaks_mib": got[0]["worker_peaks_mib"],
        }
    return {"clip": path.name, "rounds": rounds, "cpus": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M"), "calls": calls,
            "concurrency": concurrency, "results": results}  # fmt: skip


def doc_lines(report: dict) -> list[str]:
    lines = [
        SECTION,
        "",
        f"Measured with `bench/sampling_concurrency.py` ({report['measured_at']}, "
        f"{report['cpus']} CPUs, {report['rounds']} rounds, medians): `sample_frames` as "
        "shipped (decode worker processes) from threads, 8 frames of the 20 s 1080p clip "
        f"with a keyframe every 2 s ({report['clip']}), each call's JPEGs encoded. *shared* "
        "(the default): a call gets its share of the cores when it starts, two decoders "
        "alone, one while other calls decode (`client/_decode.py`, `decoding_share`); "
        "*fixed*: two decoders per call whatever else runs (`VIDCHAT_DECODERS=2`, the "
        "behaviour before).",
        "",
        "| calls | at once | cores used | wall s (all rounds) | calls/s | workers' peak RSS, "
        "summed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for config, r in report["results"].items():
        every = " ".join(f"{w:.2f}" for w in r["wall_s_all"])
        lines.append(f"| {report['calls']} | {report['concurrency']} | {config} | "
                     f"{r['wall_s']:.2f} ({every}) | {r['calls_per_s']:.2f} | "
                     f"{r['workers_mib']:.0f} MiB |")
    shared, fixed = report["results"]["shared"], report["results"]["fixed"]
    spread = max(max(r["wall_s_all"]) / min(r["wall_s_all"]) - 1
                 for r in report["results"].values())
    lines += [
        "",
        f"With calls at once, sharing the cores gave {shared['calls_per_s']:.2f} calls/s "
        f"against {fixed['calls_per_s']:.2f} (rounds of one configuration spread by up to "
        f"{spread:.0%}), with the workers' memory at {shared['workers_mib']:.0f} MiB against "
        f"{fixed['workers_mib']:.0f}: every core already decodes some call, so a second "
        "decoder per call adds its own pictures and little else. The share is the cores "
        "divided among the calls decoding in this process when a call starts, at least one "
        "decoder, at most two: on 2 cores a call alone gets two and calls at once one each; "
        "on 4 cores two calls get two each. It is fixed for the call: the first of a burst "
        "keeps two, and a call that started in a burst keeps one after the others end. The "
        "cores are those the process may run on (affinity, and a cgroup CPU quota).",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--write-docs", action="store_true",
                        help="also write the section into docs/sampling.md")
    parser.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        path, calls, conc = args._measure
        print(json.dumps(_measure(path, int(calls), int(conc))))
        return 0
    report = run(args.rounds, args.calls, args.concurrency)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sampling-concurrency.json").write_text(json.dumps(report, indent=2))
    print("\n".join(doc_lines(report)))
    if args.write_docs:
        from sampling_report import write_section

        (DOCS / "data").mkdir(parents=True, exist_ok=True)
        (DOCS / "data" / "sampling-concurrency.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {write_section(SECTION, doc_lines(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
