"""Sampling modes: the "Sampling modes" section of docs/sampling.md, beside bench/sampling.py
(which measures the default, uniform, path; `make bench-sampling` runs both).

- keyframe mode against the seed's sampler and against uniform sampling: 8 frames asked of
  20 s 1080p H.264 clips with a keyframe every 2 s and every 8 s;
- scene mode's cost against uniform, on those clips and on a 1080p clip of 8 scenes cut
  together from different ffmpeg test sources (no keyframes at the cuts);
- the scene detector, chosen by measurement: ours (scene mode end to end, including the
  decoding of the chosen frames), PySceneDetect's AdaptiveDetector (detection alone, its
  OpenCV backend) and ffmpeg's scene score (`select='gt(scene,0.3)'`, detection alone, the
  ffmpeg CLI with its default threads): time, cuts found, false cuts.

Every measurement is a fresh Python process (medians of --runs); memory added is the peak RSS
minus the RSS after the imports (for ffmpeg: the child's peak).

    python bench/sampling_modes.py [--runs 3] [--check] [--write-docs]
    python bench/sampling_modes.py --from-json docs/data/sampling-modes.json --write-docs

--write-docs replaces only this section of docs/sampling.md (appending it when missing), so
bench/sampling.py can rewrite the rest of the page; --from-json rewrites the section from a
saved run without measuring again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"
DOCS = ROOT / "docs"
NUM_FRAMES = 8
SECONDS, FPS = 20, 30
GOPS = (60, 240)
TARGET_KEYFRAME_SPEEDUP = 20.0  # against the seed, at a keyframe every 8 s
# The scene clip: (lavfi source, seconds); 8 scenes, two shorter than a second.
SCENES: tuple[tuple[str, float], ...] = (
    ("testsrc2", 4.0), ("smptehdbars", 0.5), ("gradients=speed=0.02", 3.0),
    ("rgbtestsrc", 0.7), ("cellauto=rule=110", 3.0), ("color=c=0x336699", 1.0),
    ("testsrc", 4.0), ("life=mold=10:ratio=0.1", 3.8),
)
SCENE_GOP = 240
CUT_TOLERANCE_S = 0.2  # a cut reported within this of the true one counts as found
FFMPEG_SCENE_THRESHOLD = 0.3

MODES = {
    "seed": "the seed's sampler (OpenCV, every frame decoded), resized + encoded",
    "uniform": "sample_frames(path, 8) in-process",
    "keyframes": 'sample_frames(path, 8, mode="keyframes") in-process',
    "scenes": 'sample_frames(path, 8, mode="scenes") in-process',
}
DETECTORS = {
    "ours": 'scene mode end to end: detection + the chosen frames decoded and encoded',
    "pyscenedetect": "scenedetect.detect(path, AdaptiveDetector()): detection alone",
    "ffmpeg": f"ffmpeg -vf select='gt(scene,{FFMPEG_SCENE_THRESHOLD})': detection alone",
}


# --------------------------------------------------------------------------- in the child


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * 1024


def _cpu_s() -> float:
    """CPU seconds of this process (all its threads) and its finished children: the work
    done, which a busy machine stretches less than the wall time."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _measure(method: str, path: str) -> dict:
    """One call of ``method`` on ``path``, timed, after its imports."""
    from PIL import Image

    from vidchat.client import encode_video, sample_frames
    from vidchat.limits import FRAME_SIZE

    out: dict = {"method": method}
    if method == "seed":
        import cv2  # noqa: F401
        from baselines import seed_sample_frames

        def run() -> None:
            frames = seed_sample_frames(path, NUM_FRAMES)
            small = [im.resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BICUBIC)
                     for im in frames]
            out["frames"] = len(encode_video(small).frames)
    elif method in ("uniform", "keyframes", "scenes"):
        import av  # noqa: F401

        def run() -> None:
            frames = sample_frames(path, NUM_FRAMES, mode=method, isolate=False)
            out["frames"] = len(encode_video(frames).frames)
            out["timestamps"] = frames.timestamps
            if method == "scenes":
                out["cuts"] = frames.scenes[1:] if frames.scenes else []
    elif method == "pyscenedetect":
        try:
            from scenedetect import AdaptiveDetector, detect
        except ImportError:
            return {"method": method, "skipped": "scenedetect is not installed"}

        def run() -> None:
            scenes = detect(path, AdaptiveDetector(), show_progress=False)
            out["cuts"] = [s[0].get_seconds() for s in scenes[1:]]
    elif method == "ffmpeg":
        def run() -> None:
            done = subprocess.run(
                ["ffmpeg", "-hide_banner", "-nostdin", "-i", path, "-an", "-vf",
                 f"select='gt(scene,{FFMPEG_SCENE_THRESHOLD})',metadata=print:file=-",
                 "-f", "null", "-"], capture_output=True, text=True, check=True)
            out["cuts"] = [float(t) for t in re.findall(r"pts_time:([\d.]+)", done.stdout)]
    else:
        raise SystemExit(f"unknown method {method}")
    rss0 = _rss_bytes()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    run()
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = _cpu_s() - cpu0
    out["added_bytes"] = max(0, _peak_bytes() - rss0)
    if method == "ffmpeg":
        out["added_bytes"] = _peak_bytes(resource.RUSAGE_CHILDREN)
    return out


# ------------------------------------------------------------------------------ the parent


def _clips() -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _clips import make_hd_clip, make_scene_clip

    clips = {f"testsrc2, keyframe every {g / FPS:g} s":
             make_hd_clip(OUT / "clips", seconds=SECONDS, fps=FPS, gop=g) for g in GOPS}
    clips["8 scenes, keyframe every 8 s"] = make_scene_clip(
        OUT / "clips", SCENES, size="1920x1080", fps=FPS, gop=SCENE_GOP, name="bench_scenes")
    return clips


def true_cuts() -> list[float]:
    cuts, t = [], 0.0
    for _, seconds in SCENES[:-1]:
        t += seconds
        cuts.append(round(t, 6))
    return cuts


def _score_cuts(found: list[float], truth: list[float]) -> dict:
    matched = {i for i, c in enumerate(truth)
               if any(abs(f - c) <= CUT_TOLERANCE_S for f in found)}
    false = [f for f in found if all(abs(f - c) > CUT_TOLERANCE_S for c in truth)]
    return {"found": len(matched), "of": len(truth), "false": len(false)}


def _scenes_shown(timestamps: list[float]) -> int:
    bounds = [0.0, *true_cuts(), float("inf")]
    return len({max(i for i in range(len(SCENES)) if bounds[i] <= t) for t in timestamps})


def _run_child(method: str, path: Path) -> dict:
    from sampling import run_child

    # VIDCHAT_DECODERS from the caller's environment is kept out, as in bench/sampling.py.
    return run_child(__file__, [method, str(path)], f"{method} on {path.name}")


def _median_run(method: str, path: Path, runs: int) -> dict:
    results = [_run_child(method, path) for _ in range(runs)]
    if "skipped" in results[0]:
        return results[0]
    out = dict(results[len(results) // 2])
    out["wall_s"] = statistics.median(r["wall_s"] for r in results)
    out["wall_s_all"] = [r["wall_s"] for r in results]
    out["cpu_s"] = statistics.median(r["cpu_s"] for r in results)
    out["added_bytes"] = statistics.median(r["added_bytes"] for r in results)
    return out


def run_modes(runs: int = 3) -> dict:
    """The section's measurements (medians of ``runs`` fresh processes per row)."""
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict = {"frames": NUM_FRAMES, "runs": runs, "clips": [],
                    "true_cuts": true_cuts(), "load_avg": os.getloadavg()}
    for name, path in _clips().items():
        scene_clip = name.startswith("8 scenes")
        methods = [*MODES, *(m for m in DETECTORS if m != "ours")]
        results = {}
        for method in methods:
            r = _median_run(method, path, runs)
            results[method] = r
            note = r.get("skipped") or f"{r['wall_s']:7.3f} s, {r['cpu_s']:7.3f} s CPU"
            print(f"  {name:<32} {method:<14} {note}", file=sys.stderr)
        for r in results.values():
            if "cuts" in r:
                r["cut_score"] = _score_cuts(r["cuts"], true_cuts() if scene_clip else [])
            if scene_clip and "timestamps" in r:
                r["scenes_shown"] = _scenes_shown(r["timestamps"])
        report["clips"].append({
            "name": name, "file": path.name, "scene_clip": scene_clip,
            "gop_s": (SCENE_GOP if scene_clip else GOPS[len(report["clips"])]) / FPS,
            "results": results,
        })
    eight = [c for c in report["clips"] if not c["scene_clip"] and c["gop_s"] == 8][0]
    speedup = vs_seed(eight, "wall_s")["keyframes"]
    report["targets"] = {
        f"keyframes >= {TARGET_KEYFRAME_SPEEDUP:g}x the seed at 8 s keyframes (time)":
            [speedup, speedup >= TARGET_KEYFRAME_SPEEDUP],
    }
    return report


def vs_seed(clip: dict, key: str) -> dict[str, float]:
    """How many times faster than the seed each method was (``key``: wall_s or cpu_s)."""
    seed = clip["results"]["seed"][key]
    return {m: seed / r[key] for m, r in clip["results"].items() if key in r}


def vs_uniform(clip: dict, key: str) -> dict[str, float]:
    """Each method's cost as a multiple of uniform sampling's."""
    uniform = clip["results"]["uniform"][key]
    return {m: r[key] / uniform for m, r in clip["results"].items() if key in r}


def _row_name(method: str) -> str:
    return method if method in MODES else f"detector: {method}"


def doc_lines(report: dict) -> list[str]:
    """The "Sampling modes" section of docs/sampling.md."""
    scene = next(c for c in report["clips"] if c["scene_clip"])
    res = scene["results"]
    ours = res["scenes"]
    lines = [
        "## Sampling modes",
        "",
        "`sample_frames(..., mode=...)`, `sampling={\"mode\": ...}` in the clients and batch "
        "manifests, `vidchat ask --mode`:",
        "",
        "- `uniform` (default): the frame on screen at the centre of each of n equal "
        "segments of the window.",
        "- `keyframes`: the keyframe nearest each of those centres, each taken once (so "
        "never more than n frames, often fewer when keyframes are far apart), at its real "
        "timestamp. The keyframes come from the packets' flags (one pass over the packets, "
        "no decoding); each chosen keyframe is then decoded from its own packet alone.",
        "- `scenes`: a frame of every scene change, at most n: the n - 1 strongest cuts "
        "when there are more scenes; one frame per scene, the frames left over shared by "
        "scene length (uniform within each scene), in time order. `Frames.scenes` gives "
        "where the scenes start.",
        "",
        f"Measured with `bench/sampling_modes.py` ({report['runs']} fresh processes per row, "
        f"medians; load average {report['load_avg'][0]:.1f} at the start on 2 cores): "
        f"{NUM_FRAMES} frames asked of 20 s 1080p H.264 clips, and of a 20 s 1080p clip of "
        f"{len(SCENES)} scenes cut together from different ffmpeg test sources (cuts at "
        f"{', '.join(f'{c:g}' for c in report['true_cuts'])} s; two scenes under a second; "
        "a keyframe every 8 s and none at the cuts).",
        "",
        "### Targets",
        "",
        "| target | result | met |",
        "| --- | --- | --- |",
    ]
    for name, (value, ok) in report["targets"].items():
        lines.append(f"| {name} | {value:.1f}x | {'yes' if ok else '**no**'} |")
    eight = next(c for c in report["clips"] if not c["scene_clip"] and c["gop_s"] == 8)
    lines += ["", f"In CPU time, keyframe mode did {vs_seed(eight, 'cpu_s')['keyframes']:.0f}x "
              "less work than the seed's sampler on that clip."]
    lines += [
        "",
        "### Time per clip",
        "",
        "Time is the wall time of one call; CPU is the CPU time of all its threads (and, for "
        "ffmpeg, the child process): on a shared machine the first stretches with the load, "
        "the second much less. Ratios are given for both (time / CPU).",
        "",
        "| clip | method | time s | CPU s | faster than seed | cost vs uniform | frames | "
        "memory added MiB | scenes shown / cuts found |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for clip in report["clips"]:
        seed_w, seed_c = vs_seed(clip, "wall_s"), vs_seed(clip, "cpu_s")
        uni_w, uni_c = vs_uniform(clip, "wall_s"), vs_uniform(clip, "cpu_s")
        for method, r in clip["results"].items():
            if "skipped" in r:
                lines.append(f"| {clip['name']} | {_row_name(method)} | skipped: "
                             f"{r['skipped']} | | | | | | |")
                continue
            shown = ""
            if clip["scene_clip"] and "scenes_shown" in r:
                shown = f"{r['scenes_shown']} of {len(SCENES)} scenes"
            if "cut_score" in r:
                cs = r["cut_score"]
                found = (f"{cs['found']}/{cs['of']} cuts, " if cs["of"] else "") + \
                    f"{cs['false']} false"
                shown = f"{shown}; {found}" if shown else found
            lines.append(
                f"| {clip['name']} | {_row_name(method)} | {r['wall_s']:.3f} | "
                f"{r['cpu_s']:.2f} | {seed_w[method]:.1f}x / {seed_c[method]:.1f}x | "
                f"{uni_w[method]:.2f} / {uni_c[method]:.2f} | "
                f"{r.get('frames', '')} | {r['added_bytes'] / 2**20:.1f} | {shown} |")
    psd, ff = res.get("pyscenedetect", {}), res.get("ffmpeg", {})

    def cuts(r: dict) -> str:
        cs = r.get("cut_score")
        return f"{cs['found']}/{cs['of']} cuts, {cs['false']} false" if cs else "not measured"

    def secs(r: dict) -> str:
        return (f"{r['wall_s']:.2f} s ({r['cpu_s']:.2f} s of CPU)" if "wall_s" in r
                else "not measured")

    # CPU time decides: on a shared machine the wall times stretch with the load.
    cpu = {"ours (end to end)": [c["results"]["scenes"]["cpu_s"] for c in report["clips"]]}
    for name in ("pyscenedetect", "ffmpeg"):
        if all("cpu_s" in c["results"].get(name, {}) for c in report["clips"]):
            cpu[f"{name} (detection alone)"] = [c["results"][name]["cpu_s"]
                                                for c in report["clips"]]
    cheapest = min(cpu, key=lambda k: sum(cpu[k]))
    false_cuts = {m: sum(c["results"][m]["cut_score"]["false"] for c in report["clips"]
                         if not c["scene_clip"] and "cut_score" in c["results"].get(m, {}))
                  for m in ("scenes", "pyscenedetect", "ffmpeg")}
    lines += [
        "",
        "### The scene detector, chosen by measurement",
        "",
        f"On the scene clip, ours found {cuts(ours)} in {secs(ours)} end to end (detection, "
        f"then the chosen frames decoded and encoded); PySceneDetect's AdaptiveDetector "
        f"{cuts(psd)} in {secs(psd)} for the detection alone; ffmpeg's scene score "
        f"{cuts(ff)} in {secs(ff)} for the detection alone (with both cores). CPU seconds "
        "over the three clips: " + "; ".join(f"{k} {sum(v):.2f}" for k, v in cpu.items()) +
        f"; the least: {cheapest}. Cuts reported in the testsrc2 clips (which have none): "
        f"ours {false_cuts['scenes']}, PySceneDetect {false_cuts['pyscenedetect']}, ffmpeg "
        f"{false_cuts['ffmpeg']}. Ours is the "
        "detector of scene mode: it finds the cuts the others find, does the least work "
        "(by CPU time; the wall times above move with the machine's load), and needs "
        "nothing beyond PyAV (no OpenCV, no ffmpeg binary).",
        "",
        "How it works (client/_scenes.py): one decoding pass over the window, frames that "
        "no other frame refers to skipped (`skip_frame=NONREF`: 45-47% of the frames of "
        "these x264 clips); 10 times a second a ~96x54 point grid of the decoder's own "
        "Y, U, V planes "
        "(no colour conversion, no resize), reduced to a 16-bin histogram per channel; a "
        "cut where the histogram distance to the sample before is >= 0.3 and 3 times the "
        "mean of its two neighbours on each side (PySceneDetect's adaptive rule: motion "
        "raises every distance, a cut stands out). Colour histograms ignore motion: "
        "testsrc2's moving pattern stays under 0.1, real cuts on the clip measure "
        "0.74-1.0. Then the chosen times are decoded by the uniform path.",
        "",
        "What it costs: scene mode decodes the window's reference frames once, then the "
        "chosen frames (a keyframe where one falls in a frame's share of its scene: one "
        "packet each). In CPU time that is "
        + ", ".join(f"{vs_uniform(c, 'cpu_s')['scenes']:.1f}x" for c in report["clips"])
        + " uniform sampling on the three clips (in wall time "
        + ", ".join(f"{vs_uniform(c, 'wall_s')['scenes']:.1f}x" for c in report["clips"])
        + "), and "
        + ", ".join(f"{vs_seed(c, 'cpu_s')['scenes']:.1f}x" for c in report["clips"])
        + " less than the seed's sampler, which decodes every frame at full size. It "
        "grows with the length of the window, not the frame count: for "
        "long videos use it per window (`ask_long`), or raise `timeout` (the decode "
        "worker's default is 120 s). Dissolves and fades are not cuts to it; a video "
        "without cuts gets the uniform frames (or the keyframes in their segments).",
        "",
    ]
    return lines


def write_section(report: dict) -> Path:
    """Put the section into docs/sampling.md (replacing an earlier one), and its data."""
    from sampling_report import write_section as write_page_section

    (DOCS / "data").mkdir(parents=True, exist_ok=True)
    (DOCS / "data" / "sampling-modes.json").write_text(json.dumps(report, indent=2))
    return write_page_section("## Sampling modes", doc_lines(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per row")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write the section into docs/sampling.md")
    parser.add_argument("--from-json", type=Path, metavar="REPORT",
                        help="a saved report (out/bench/sampling-modes.json, docs/data/...): "
                        "no measuring")
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(_measure(*args._measure)))
        return 0
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        report = run_modes(args.runs)
        (OUT / "sampling-modes.json").write_text(json.dumps(report, indent=2))
    print("\n".join(doc_lines(report)))
    if args.write_docs:
        print(f"wrote {write_section(report)}")
    missed = [name for name, (_, ok) in report["targets"].items() if not ok]
    if missed and args.check:
        print("missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
