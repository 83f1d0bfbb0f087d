"""Mode "scenes": a frame of every scene change, at most n, filled uniformly, in time order.

    detect: one decoding pass over the window (frames nothing refers to are skipped), a
            ~96x54 point sample of the picture every 1/DETECT_FPS s, its colour histogram
    find_scenes (pure): a cut where the histogram distance to the sample before is large
            both in absolute terms and against its neighbours' (motion is not a cut)
    scene_targets (pure): the n - 1 strongest cuts when there are more scenes than frames;
            then one frame per scene, the rest shared by scene length, each placed where
            the scene was seen (on a keyframe where one falls in its share: cheaper)
    decode: the chosen times go to the uniform path (SamplingSpec.targets), which decodes
            exactly those frames

Why this detector: measured against PySceneDetect's AdaptiveDetector and ffmpeg's scene
score (bench/sampling_modes.py; docs/sampling.md, "Sampling modes"): on a 1080p clip of 8
scenes it found all 7 cuts (PySceneDetect 7, ffmpeg at 0.3 found 6), none of them reported a
cut in moving test patterns, and it took the least CPU time of the three, end to end against
their detection alone: it skips the non-reference frames and converts no picture. Its cost is
one decode of the window's reference frames, about 2.1-2.3x uniform sampling's CPU time on
20 s 1080p clips.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidchat.client._decode import DECODER_THREADS, DecodeRequest, DecodeResult
from vidchat.client._keyframes import VideoIndex, index_video, open_video
from vidchat.client._plan import TIME_EPS_S, sample_times
from vidchat.errors import VideoDecodeError

__all__ = ["Scene", "decode", "detect", "find_scenes", "scene_targets"]

# Pictures compared per second of video. A scene shorter than 1/DETECT_FPS can fall between
# two samples and be missed; 10 catches 0.2 s flashes and costs ~0.05 ms a sample.
DETECT_FPS = 10.0
# The point grid each sample keeps (width x height): ~5000 points give a colour histogram
# that moving detail does not shake (testsrc2's motion: distance <= 0.08 between samples).
GRID_W, GRID_H = 96, 54
HIST_BINS = 16  # per channel of Y, U, V
# A cut: histogram distance (0: same colours, 1: none shared) at least CUT_MIN_DISTANCE, and
# CUT_RATIO times the mean of the CUT_WINDOW samples on each side (PySceneDetect's adaptive
# rule: a scene in motion has high distances everywhere, a cut stands out from them).
# Measured on the benchmark clip: cuts 0.74-1.0, motion within a scene <= 0.2.
CUT_MIN_DISTANCE = 0.3
CUT_RATIO = 3.0
CUT_WINDOW = 2
# Decoder threads of the detection pass: one, as in the uniform path. A second frame thread
# measured no faster on this pass (1080p x264, 20 s: 1.53 s either way; the same decoder
# without skipped frames went 2.7 -> 1.8 s): with the non-reference frames skipped, each
# frame waits for the one before it. It held ~10 MB more.
DETECT_THREADS = DECODER_THREADS


@dataclass(frozen=True)
class Scene:
    """A stretch of the window between two cuts (or its ends)."""

    start: float
    end: float
    """Estimated bounds (s): halfway between the last sample before the cut and the first
    one after."""
    first_seen: float
    last_seen: float
    """The first and last samples inside it: frames there surely belong to it."""
    cut: float
    """How strong the cut that opens it is (histogram distance; inf for the first scene)."""


def _point_grid(frame: Any) -> np.ndarray:
    """A (3, GRID_H, GRID_W) Y, U, V point sample of the picture, without converting it."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        small = frame.reformat(width=GRID_W, height=GRID_H, format="yuv444p")
        return np.stack([_plane(small, i, GRID_W, GRID_H) for i in range(3)])
    w, h = frame.width, frame.height
    ys = np.linspace(0, h - 1, GRID_H).astype(np.intp)
    xs = np.linspace(0, w - 1, GRID_W).astype(np.intp)
    luma = _plane(frame, 0, w, h)[np.ix_(ys, xs)]
    cw, ch = (w + 1) // 2, (h + 1) // 2
    u, v = (_plane(frame, i, cw, ch)[np.ix_(ys // 2, xs // 2)] for i in (1, 2))
    return np.stack([luma, u, v])


def _plane(frame: Any, i: int, width: int, height: int) -> np.ndarray:
    plane = frame.planes[i]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


def _histogram(grid: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(c.ravel() >> 4, minlength=HIST_BINS) for c in grid]) / \
        grid[0].size


def detect(container: Any, stream: Any, index: VideoIndex, lo: float, hi: float
           ) -> tuple[list[float], list[float]]:
    """Sample times in [lo, hi) and each sample's histogram distance to the one before
    (0.0 for the first): one decoding pass, seeking to ``lo`` first."""
    codec = stream.codec_context
    codec.thread_type = "AUTO"
    codec.thread_count = DETECT_THREADS
    # Pictures nothing refers to are not decoded: their scene shows in the frames around.
    codec.skip_frame = "NONREF"
    # (Always: indexing read the container to its end.)
    container.seek(index.pts_at(lo), stream=stream, backward=True, any_frame=False)
    times: list[float] = []
    distances: list[float] = []
    previous: np.ndarray | None = None
    due = lo
    for packet in container.demux(stream):
        for frame in codec.decode(packet):  # the last, empty packet flushes the decoder
            if frame.pts is None:
                continue
            t = index.time(frame.pts)
            if t >= hi:
                return times, distances
            if t < due - TIME_EPS_S:
                continue
            hist = _histogram(_point_grid(frame))
            # Half the L1 distance per channel, averaged: 0 same colours, 1 disjoint.
            distances.append(0.0 if previous is None else
                             float(0.5 * np.abs(hist - previous).sum(axis=1).mean()))
            times.append(t)
            previous = hist
            due = t + 1.0 / DETECT_FPS
    return times, distances


def find_scenes(times: Sequence[float], distances: Sequence[float], lo: float, hi: float
                ) -> list[Scene]:
    """The scenes of [lo, hi) from the samples (times, distance to the sample before)."""
    if not times:
        return []
    d = np.asarray(distances, dtype=np.float64)
    cuts = []
    for i in range(1, len(d)):
        around = np.r_[d[max(1, i - CUT_WINDOW):i], d[i + 1:i + 1 + CUT_WINDOW]]
        usual = float(around.mean()) if len(around) else 0.0
        if d[i] >= CUT_MIN_DISTANCE and d[i] >= CUT_RATIO * usual:
            cuts.append(i)
    starts = [0, *cuts]
    ends = [*cuts, len(times)]  # sample positions: scene k holds [starts[k], ends[k])
    scenes = []
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        start = lo if a == 0 else (times[a - 1] + times[a]) / 2
        end = hi if b == len(times) else (times[b - 1] + times[b]) / 2
        scenes.append(Scene(start, end, times[a], times[b - 1],
                            math.inf if k == 0 else float(d[a])))
    return scenes


def scene_targets(scenes: Sequence[Scene], n: int, key_times: Sequence[float] = ()
                  ) -> list[float]:
    """At most ``n`` times, in order: a frame in every scene (of the n strongest-cut ones
    when there are more), the frames left over shared by scene length, spread evenly.

    Each frame stands for an equal segment of its scene, taken at the segment's centre; a
    keyframe in the segment (among ``key_times``, sorted), where the scene was seen, is
    taken instead: it shows the same scene and costs one packet to decode, where a frame
    between keyframes costs the decoding of every reference frame before it.
    """
    if not scenes or n < 1:
        return []
    scenes = list(scenes)
    if len(scenes) > n:
        # Keep the n - 1 strongest cuts: the scenes between them merge.
        keep = sorted(sorted(range(1, len(scenes)), key=lambda k: -scenes[k].cut)[:n - 1])
        bounds = [0, *keep, len(scenes)]
        scenes = [Scene(scenes[a].start, scenes[b - 1].end, scenes[a].first_seen,
                        scenes[b - 1].last_seen, scenes[a].cut)
                  for a, b in zip(bounds, bounds[1:], strict=False)]
    counts = [1] * len(scenes)
    spare = n - len(scenes)
    if spare:
        lengths = np.array([s.end - s.start for s in scenes], dtype=np.float64)
        share = lengths / lengths.sum() * spare if lengths.sum() > 0 else \
            np.full(len(scenes), spare / len(scenes))
        extra = np.floor(share).astype(int)
        # Largest remainders first; ties to the longer scene, then the earlier.
        order = sorted(range(len(scenes)), key=lambda k: (-(share[k] - extra[k]), -lengths[k],
                                                          k))
        for k in order[:spare - int(extra.sum())]:
            extra[k] += 1
        counts = [c + int(e) for c, e in zip(counts, extra, strict=True)]
    targets = []
    for scene, k in zip(scenes, counts, strict=True):
        step = (scene.end - scene.start) / k
        for j in range(k):
            # Within the samples seen in the scene: the bounds are estimates, those are not.
            lo = max(scene.start + j * step, scene.first_seen)
            hi = min(scene.start + (j + 1) * step, scene.last_seen + TIME_EPS_S)
            t = min(max(scene.start + (j + 0.5) * step, scene.first_seen), scene.last_seen)
            first, last = bisect.bisect_left(key_times, lo), bisect.bisect_left(key_times, hi)
            if first < last:
                t = min(key_times[first:last], key=lambda key, t=t: abs(key - t))
            targets.append(t)
    return targets


def decode(request: DecodeRequest) -> DecodeResult:
    """Find the scenes of the window, then decode the chosen frames by the uniform path."""
    import av

    from vidchat.client._decode import decode as decode_frames

    path, spec = request.path, request.spec
    container, stream = open_video(path)
    with container:
        index = index_video(container, stream, path)
        n = len(sample_times(index.duration, spec))  # frames asked (fps counts here too)
        lo = 0.0 if spec.start is None else float(spec.start)
        hi = index.duration if spec.end is None else min(float(spec.end), index.duration)
        try:
            times, distances = detect(container, stream, index, lo, hi)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(
                f"decoding {path} failed ({getattr(e, 'strerror', None) or e}); the file may "
                "be damaged: re-encode it with ffmpeg.", source=path) from e
    scenes = find_scenes(times, distances, lo, hi)
    targets = scene_targets(scenes, n, [index.time(k) for k in index.key_pts])
    # No samples (a window between two reference frames): uniform targets do.
    uniform = dataclasses.replace(spec, mode="uniform",
                                  targets=tuple(targets) if targets else None)
    result = decode_frames(dataclasses.replace(request, spec=uniform))
    result.stats["scene_starts"] = [s.start for s in scenes]
    return result
