"""Frame sampling + JPEG encoding: vidchat's sampler against the seed guide's, in one run.

Baseline (seed/video_text_to_text.md): OpenCV VideoCapture decodes every frame, each one is
converted BGR->RGB into a PIL image, every k-th is kept (k = frame count // n); here the n
kept frames are then resized to 384x384 (PIL bicubic, as the SigLIP processor would) and
JPEG-encoded with vidchat's encoder, so both methods end with n JPEGs.

Ours: ``sample_frames(path, n)`` + ``encode_video``: what the client sends.

Every measurement runs in a fresh Python process: wall time and CPU time of one call, and the
memory it adds (peak RSS minus RSS after the imports). Rounds go round-robin over clips and
methods, so a burst of load on the shared machine hits all of them; the tables give medians.
Fidelity: PSNR of the JPEGs each method sends against the reference pixels
(bench/sampling_fidelity.py), and bytes per frame.

    python bench/sampling.py [--rounds 5] [--long-rounds 3] [--no-long] [--check] [--write-docs]

Clips are made once with ffmpeg and kept in .cache/bench/ (the 20 s ones ~1-2 min each on 2
cores, the long ones from a 60 s segment copied in a loop: ~1-2 min). Writes
out/bench/sampling.json; --write-docs also docs/sampling.md, docs/img/sampling.png and
docs/data/sampling.json (= make bench-sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"
CACHE = ROOT / ".cache" / "bench"
FPS = 30
SPEED_TARGETS = {"testsrc2-2s": 7.0, "testsrc2-8s": 4.5}  # x the seed's sampler, 8 frames
LONG_SPEED_TARGET = {"20min-2s": 50.0, "20min": 50.0}  # 32 frames
MEMORY_FRACTION = 0.25  # of the seed's added memory, for the clips with a speed target
PSNR_FLOOR_DB = 40.0

METHODS = {
    "baseline": "seed: OpenCV decodes every frame, RGB PIL each, keeps every k-th; PIL resize",
    "ours": "sample_frames in-process, default (PyAV, two decoders on 2+ cores)",
    "ours-1dec": "the same with one decoder (VIDCHAT_DECODERS=1)",
    "ours-decord": "sample_frames in-process, backend='decord'",
    "ours-worker": "sample_frames as shipped (decode worker process), warm worker",
    "ours-worker-cold": "sample_frames as shipped, first call (starts the worker)",
}
# Lower bounds, not paths anyone ships: what the decoding alone of the default plan costs
# (the index pass, seeks and decodes; no frame converted, nothing encoded), on the clips with
# a speed target. They show whether any path can meet the speed and the memory target at once.
FLOOR_METHODS = {
    "floor-1dec": "decoding alone, one decoder, one thread",
    "floor-2threads": "decoding alone, one decoder with two frame threads (the cheapest way "
                      "to decode on both cores: the threads share the decoder's references)",
}


@dataclass(frozen=True)
class Clip:
    key: str
    label: str
    frames: int  # frames to sample
    methods: tuple[str, ...]


SHORT = [
    Clip("testsrc2-2s", "testsrc2, keyframe every 2 s", 8, (*METHODS, *FLOOR_METHODS)),
    Clip("testsrc2-8s", "testsrc2, keyframe every 8 s", 8, (*METHODS, *FLOOR_METHODS)),
    Clip("mandelbrot-2s", "mandelbrot (natural-looking), keyframe every 2 s", 8, tuple(METHODS)),
]
LONG = [
    Clip("20min-2s", "20 minutes, keyframe every 2 s", 32, ("baseline", "ours", "ours-1dec")),
    Clip("20min", "20 minutes, keyframe every 250 frames (x264's default)", 32,
         ("baseline", "ours", "ours-1dec")),
    Clip("1h", "1 hour, keyframe every 250 frames (x264's default)", 32, ("ours", "ours-1dec")),
]


# ---------------------------------------------------------------------------------- clips


def clip_path(key: str) -> Path:
    """The clip for ``key``, made with ffmpeg the first time (cached in .cache/bench/)."""
    from vidchat.clips import make_clip, run_ffmpeg

    CACHE.mkdir(parents=True, exist_ok=True)
    if key.startswith("testsrc2-"):
        sys.path.insert(0, str(ROOT / "tests"))
        from _clips import make_hd_clip

        return make_hd_clip(CACHE, seconds=20, fps=FPS, gop=60 if key.endswith("2s") else 240)
    if key == "mandelbrot-2s":
        # mandelbrot has no duration option: 600 frames bound it. Slow to render (~1-2 min).
        out = CACHE / "mandelbrot_1920x1080_20s_30fps_g60.mp4"
        if not out.exists():
            make_clip(out, source="mandelbrot", size="1920x1080", rate=FPS, seconds=None,
                      frames=20 * FPS, gop=60, timeout_s=1800,
                      output_args=("-keyint_min", "60", "-sc_threshold", "0"))  # fmt: skip
        return out
    # Long clips: a 60 s 1080p segment (veryfast, CRF 28: ~2.5 Mbit/s; keyframes every 2 s,
    # or x264's default interval, 250 frames) copied end to end: an hour costs one minute of
    # encoding (1-2 min on 2 busy cores) and a copy.
    minutes = 60 if key == "1h" else 20
    gop_args: tuple[str, ...] = ()
    tag = ""
    if key.endswith("-2s"):
        gop_args, tag = ("-g", "60", "-keyint_min", "60", "-sc_threshold", "0"), "_g60"
    segment = CACHE / f"long_1920x1080_60s_crf28{tag}.mp4"
    if not segment.exists():
        make_clip(segment, size="1920x1080", rate=FPS, seconds=60, timeout_s=1800,
                  output_args=("-crf", "28", *gop_args))  # fmt: skip
    out = CACHE / f"long_1920x1080_{minutes}min_crf28{tag}.mp4"
    if not out.exists():
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.mp4")
        run_ffmpeg(["-stream_loop", str(minutes - 1), "-i", str(segment), "-c", "copy",
                    str(tmp)], what=out.name)  # fmt: skip
        os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------- in the child


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _baseline(path: str, num_frames: int) -> list[bytes]:
    from baselines import seed_sample_frames
    from PIL import Image

    from vidchat.client import encode_video
    from vidchat.limits import FRAME_SIZE

    frames = seed_sample_frames(path, num_frames)
    small = [im.resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BICUBIC) for im in frames]
    return [f.jpeg for f in encode_video(small).frames]


def _measure(method: str, path: str, num_frames: int, save: str | None) -> dict:
    # Import everything first: memory is counted from here on.
    import numpy  # noqa: F401
    from PIL import Image  # noqa: F401

    from vidchat.client import encode_video, sample_frames, shutdown_decode_workers

    indices: list[int] | None = None
    stats: dict | None = None  # the floors': decoders, seeks, packets decoded
    backend = "opencv"
    if method in FLOOR_METHODS:
        import av  # noqa: F401

        import vidchat.client._pyav as pyav_path
        from vidchat.client._decode import DecodeRequest
        from vidchat.client._plan import SamplingSpec

        # The default plan's decoding and nothing after it: the conversion is replaced by a
        # no-op (this child process only), and the frames are not encoded.
        pyav_path.to_rgb_array = lambda frame, size: None
        pyav_path.DECODER_THREADS = 2 if method == "floor-2threads" else 1
        backend = "pyav"

        def run() -> list[bytes]:
            nonlocal indices, stats
            done = pyav_path.decode(DecodeRequest(path, SamplingSpec(num_frames)))
            indices, stats = done.indices, done.stats
            return []

    elif method == "baseline":
        import baselines  # noqa: F401 - the seed's sampler (bench/baselines.py)
        import cv2

        def run() -> list[bytes]:
            return _baseline(path, num_frames)

        video = cv2.VideoCapture(path)
        total = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        video.release()
        interval = max(1, total // num_frames)
        indices = [i * interval for i in range(num_frames) if i * interval < total]
    else:
        import av  # noqa: F401

        try:
            import decord  # noqa: F401
        except ImportError:
            if method == "ours-decord":
                return {"method": method, "skipped": "decord is not installed"}
        kwargs: dict = {"isolate": method.startswith("ours-worker")}
        if method == "ours-decord":
            kwargs["backend"] = "decord"

        def run() -> list[bytes]:
            nonlocal indices, backend
            frames = sample_frames(path, num_frames, **kwargs)
            indices, backend = frames.indices, frames.backend
            return [f.jpeg for f in encode_video(frames.images).frames]

    if method == "ours-worker":  # measure a warm worker: start it and wait for it outside
        run()
    rss0, cpu0 = _rss_bytes(), _cpu_s()
    t0 = time.perf_counter()
    jpegs = run()
    wall = time.perf_counter() - t0
    result = {
        "method": method,
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu0,
        "added_bytes": max(0, _peak_bytes() - rss0),
        "jpeg_bytes": sum(map(len, jpegs)),
        "frames": len(jpegs),
        "backend": backend,
        "indices": indices,
    }
    if stats is not None:
        result["decode_stats"] = stats
    if method.startswith("ours-worker"):
        shutdown_decode_workers()  # the worker exits: its peak shows in RUSAGE_CHILDREN
        result["worker_peak_bytes"] = _peak_bytes(resource.RUSAGE_CHILDREN)
        result["cpu_s"] = None  # the work ran in the worker
    if save:
        Path(save).write_bytes(pickle.dumps(jpegs))
    return result


# ----------------------------------------------------------------------------- the parent


@dataclass
class Row:
    """One (clip, method): every round's numbers and their medians."""

    clip: str
    method: str
    runs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        walls = [r["wall_s"] for r in self.runs]
        cpus = [r["cpu_s"] for r in self.runs if r.get("cpu_s") is not None]
        first = self.runs[0]
        out = {
            "wall_s": statistics.median(walls),
            "wall_s_all": walls,
            "cpu_s": statistics.median(cpus) if cpus else None,
            # as before issue 12: the least any round added (memory barely varies)
            "added_bytes": min(r["added_bytes"] for r in self.runs),
            "frames": first["frames"],
            "backend": first["backend"],
            "indices": first["indices"],
            "bytes_per_frame": first["jpeg_bytes"] / max(first["frames"], 1),
        }
        if "worker_peak_bytes" in first:
            out["worker_peak_bytes"] = min(r["worker_peak_bytes"] for r in self.runs)
        return out


def run_child(script: str, args: list[str], what: str, decoders: str | None = None) -> dict:
    """``script --_measure *args`` in a fresh Python process (VIDCHAT_DECODERS set to
    ``decoders``, or unset); its last line of output, as JSON."""
    env = dict(os.environ)
    env.pop("VIDCHAT_DECODERS", None)
    if decoders:
        env["VIDCHAT_DECODERS"] = decoders
    done = subprocess.run([sys.executable, script, "--_measure", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_child(method: str, path: Path, frames: int, save: Path | None = None) -> dict:
    one = method == "ours-1dec" or method in FLOOR_METHODS
    args = [method, str(path), str(frames), *([str(save)] if save is not None else [])]
    return run_child(__file__, args, f"{method} on {path.name}", "1" if one else None)


def _machine() -> dict:
    out = {"python": platform.python_version(), "cpus": os.cpu_count(),
           "machine": platform.machine(), "load_avg_start": os.getloadavg()}  # fmt: skip
    for mod in ("av", "decord", "cv2", "PIL", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def _measure_clips(clips: list[Clip], rounds: int, jpeg_dir: Path) -> dict[str, dict]:
    """Every method on every clip, ``rounds`` times round-robin (the seed once on long clips:
    minutes a run). Round 0 keeps each method's JPEGs for the fidelity tables."""
    paths = {c.key: clip_path(c.key) for c in clips}
    rows = {(c.key, m): Row(c.key, m) for c in clips for m in c.methods}
    skipped: set[tuple[str, str]] = set()
    for r in range(rounds):
        for clip in clips:
            for method in clip.methods:
                if (clip.key, method) in skipped or (
                        clip in LONG and method != "ours" and r > 0):
                    continue
                keep = r == 0 and clip in SHORT
                save = jpeg_dir / f"{clip.key}.{method}.pkl" if keep else None
                result = _run_child(method, paths[clip.key], clip.frames, save)
                if "skipped" in result:
                    skipped.add((clip.key, method))
                    print(f"  {clip.key:<14} {method:<17} skipped: {result['skipped']}",
                          file=sys.stderr)  # fmt: skip
                    continue
                rows[(clip.key, method)].runs.append(result)
                print(f"  round {r + 1}/{rounds} {clip.key:<14} {method:<17} "
                      f"{result['wall_s']:7.3f} s {result['added_bytes'] / 2**20:6.1f} MiB  "
                      f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)  # fmt: skip
    report: dict[str, dict] = {}
    for clip in clips:
        measured = {m: rows[(clip.key, m)].summary() for m in clip.methods
                    if rows[(clip.key, m)].runs}  # fmt: skip
        report[clip.key] = {"label": clip.label, "file": paths[clip.key].name,
                            "bytes": paths[clip.key].stat().st_size, "frames": clip.frames,
                            "results": {m: r for m, r in measured.items()
                                        if m not in FLOOR_METHODS},
                            "floor": {m: r for m, r in measured.items() if m in FLOOR_METHODS}}
    return report


def _add_fidelity(report: dict[str, dict], jpeg_dir: Path) -> None:
    from sampling_fidelity import fidelity, quality_sweep, reference_frames

    for key, clip in report.items():
        results = clip["results"]
        wanted = {i for r in results.values() for i in (r["indices"] or [])}
        refs, before = reference_frames(str(clip_path(key)), wanted)
        for method, r in results.items():
            jpegs = pickle.loads((jpeg_dir / f"{key}.{method}.pkl").read_bytes())
            r["fidelity"] = fidelity(jpegs, r["indices"], refs)
        ours = results["ours"]["indices"]
        clip["before_issue_12"] = fidelity([before[i] for i in ours], ours, refs)
        clip["quality_sweep"] = quality_sweep({i: refs[i] for i in ours})


def _ratios(report: dict[str, dict]) -> None:
    for clip in report.values():
        base = clip["results"].get("baseline")
        for r in [*clip["results"].values(), *clip.get("floor", {}).values()]:
            if base:
                r["speedup"] = base["wall_s"] / r["wall_s"]
                r["memory_fraction"] = r["added_bytes"] / max(base["added_bytes"], 1)


def _targets(short: dict, long: dict) -> list[dict]:
    rows = []
    for key, goal in SPEED_TARGETS.items():
        ours = short[key]["results"]["ours"]
        rows.append({"clip": key, "target": f"speed >= {goal:g}x the seed",
                     "value": f"{ours['speedup']:.1f}x", "met": ours["speedup"] >= goal})
        rows.append({"clip": key, "target": f"memory <= {MEMORY_FRACTION:g} of the seed's",
                     "value": f"{ours['memory_fraction']:.3f}",
                     "met": ours["memory_fraction"] <= MEMORY_FRACTION})  # fmt: skip
    for key, clip in short.items():
        fid = clip["results"]["ours"]["fidelity"]
        rows.append({"clip": key, "target": f"PSNR >= {PSNR_FLOOR_DB:g} dB",
                     "value": f"{fid['psnr_db']:.1f} dB", "met": fid["psnr_db"] >= PSNR_FLOOR_DB})
    for key, goal in LONG_SPEED_TARGET.items():
        if key in long:
            ours = long[key]["results"]["ours"]
            rows.append({"clip": key, "target": f"speed >= {goal:g}x the seed (32 frames)",
                         "value": f"{ours['speedup']:.1f}x", "met": ours["speedup"] >= goal})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds on the 20 s clips")
    parser.add_argument("--long-rounds", type=int, default=3,
                        help="rounds of ours on the long clips (the seed runs once)")
    parser.add_argument("--no-long", action="store_true", help="skip the 20 min and 1 h clips")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/sampling.md, docs/img/sampling.png, docs/data/")
    parser.add_argument("--_measure", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        method, path, frames, *save = args._measure
        print(json.dumps(_measure(method, path, int(frames), save[0] if save else None)))
        return 0

    started = time.time()
    measured_at = time.strftime("%Y-%m-%d %H:%M")
    jpeg_dir = OUT / "sampling-jpegs"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"rounds": args.rounds, "long_rounds": args.long_rounds, "env": _machine(),
                    "methods": METHODS, "floor_methods": FLOOR_METHODS,
                    "speed_targets": SPEED_TARGETS, "memory_fraction": MEMORY_FRACTION,
                    "measured_at": measured_at}  # fmt: skip
    report["short"] = _measure_clips(SHORT, args.rounds, jpeg_dir)
    _add_fidelity(report["short"], jpeg_dir)
    report["long"] = {} if args.no_long else _measure_clips(LONG, args.long_rounds, jpeg_dir)
    for part in ("short", "long"):
        _ratios(report[part])
    one_hour = report["long"].get("1h")
    if one_hour and "20min" in report["long"]:
        # The seed's cost grows with the frame count: an hour, estimated from its 20 min run.
        seed = report["long"]["20min"]["results"]["baseline"]["wall_s"]
        one_hour["seed_estimate_s"] = seed * 3
        for r in one_hour["results"].values():
            r["speedup_vs_estimate"] = seed * 3 / r["wall_s"]
    report["targets"] = _targets(report["short"], report["long"])
    report["env"]["load_avg_end"] = os.getloadavg()
    report["elapsed_s"] = time.time() - started

    from sampling_report import print_summary, write_chart, write_docs

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sampling.json").write_text(json.dumps(report, indent=2))
    print_summary(report)
    charted = write_chart(report, OUT / "sampling.png")
    print(f"\nwrote {OUT / 'sampling.json'}" + (f" and {OUT / 'sampling.png'}" if charted else
          " (no matplotlib: no chart)"))  # fmt: skip
    if args.write_docs:
        print(f"wrote {write_docs(report, OUT / 'sampling.png')}")
    missed = [f"{t['clip']}: {t['target']} ({t['value']})" for t in report["targets"]
              if not t["met"]]  # fmt: skip
    if missed and args.check:
        print("missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

