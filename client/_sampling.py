"""Frames from a video, sized and oriented the way the model wants them.

    source ──► _resolve_source ──► decode(DecodeRequest) ──────────────────────► Frames
                                   ├─ index: real per-frame timestamps, keyframes
                                   ├─ plan_samples: which frames (pure)
                                   ├─ plan_reads: seek to a keyframe or keep decoding (pure)
                                   └─ decode, resize to size x size, apply the display rotation

Frames are chosen uniformly in *time*: the window [start, end] is cut into equal segments and
each segment contributes the frame on screen at its centre. The frame index comes from the
stream's own timestamps, so variable frame rate, missing frame counts (WebM/MKV) and MP4 edit
lists are handled; a clip with fewer frames than asked gives each of its frames once.

Two backends: PyAV (the default, measured faster and leaner: it plans its own seeks, skips
frames nothing refers to, and resizes straight from YUV) and decord (``backend="decord"`` or
VIDCHAT_VIDEO_BACKEND=decord; it resizes in its filter graph, and files it cannot read or
indexes wrong, such as MP4 edit lists, go to PyAV).

`decode` is top-level and takes one picklable request, so `_decode_worker` can run it in a
child process that a decoder hang or crash cannot take down with the caller.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import math
import numbers
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidchat.errors import (
    RemoteVideoError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)
from vidchat.limits import DEFAULT_FRAMES, FRAME_SIZE

__all__ = [
    "BACKENDS",
    "DecodeRequest",
    "DecodeResult",
    "Frames",
    "ReadPlan",
    "SamplePlan",
    "SamplingArgumentError",
    "decode",
    "frame_at",
    "plan_reads",
    "plan_samples",
    "sample_frames",
    "sample_times",
]

BACKENDS = ("decord", "pyav")
# backend=None takes the first that is installed. PyAV comes first, against the design card's
# "decord first", because measurement says so (bench/sampling.py, 1080p H.264, 20 s, 8 frames,
# quiet 2-core machine, same run): decord 3.4x / 1.9x faster than the seed's OpenCV loop at
# 2 s / 8 s keyframe intervals, this module's PyAV path (planned seeks, non-reference frames
# skipped, resize from YUV) 5-6x / 2-3x; and decord mis-indexes MP4 edit lists and refuses
# WebM/MKV without a duration. decord stays available: backend="decord" or
# VIDCHAT_VIDEO_BACKEND=decord.
AUTO_BACKENDS = ("pyav", "decord")
BACKEND_ENV = "VIDCHAT_VIDEO_BACKEND"
# Decoding cost of one seek, in frames: demuxer seek, decoder flush and the refill of its
# frame-thread pipeline. Measured on 1080p H.264 with PyAV on 2 cores: a seek plus the first
# frame costs about what decoding 3 more frames in a row does; 8 keeps a margin, and the choice
# only matters when the next keyframe is within a few frames of the decoder's position.
SEEK_COST_FRAMES = 8
MAX_SIZE = 4096
# Threads per decoder, PyAV and decord (0: ffmpeg's choice, cores + 1). Each frame thread
# holds its own full-size frames: measured on 2 cores, 1 thread adds ~34 MB at 1080p, auto
# ~51 MB; at 8K decord adds ~95 MB per thread (auto on 16 cores: over 1.5 GB), so a fixed
# count keeps the worker's memory independent of the machine.
DECODER_THREADS = 1
# Timestamps closer than this are the same instant (decord's float32 seconds are off by up
# to ~3e-5 s at 10 minutes; frames are at least ~4 ms apart even at 240 fps).
TIME_EPS_S = 1e-4

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class SamplingArgumentError(VideoError, ValueError):
    """An argument of `sample_frames` is out of range (frame count, window, size, backend)."""


@dataclass(eq=False)
class Frames:
    """Frames sampled from one video, in time order."""

    images: list[Image.Image]
    """RGB PIL images, ``size`` x ``size``, display rotation applied."""
    timestamps: list[float]
    """Presentation time of each frame in seconds, from the first frame of the video."""
    indices: list[int]
    """Index of each frame among all the frames of the video, in display order."""
    source: str
    backend: str
    """The decoder that produced the frames: "decord" or "pyav"."""
    duration: float
    """Length of the whole video in seconds."""

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------------------------
# The plan: pure functions


@dataclass(frozen=True)
class SamplePlan:
    """Which frames to take: indices in display order and their real timestamps."""

    indices: tuple[int, ...]
    timestamps: tuple[float, ...]


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_plan_arguments(
    num_frames: object, fps: object, start: object, end: object, *, source: str | None = None
) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral):
        raise SamplingArgumentError(
            f"num_frames must be an integer, got {num_frames!r}; pass e.g. num_frames=8.",
            source=source,
        )
    if num_frames < 1:
        raise SamplingArgumentError(
            f"num_frames must be at least 1, got {num_frames}; ask for one frame or more.",
            source=source,
        )
    if fps is not None and (not _is_real(fps) or fps <= 0):
        raise SamplingArgumentError(
            f"fps must be a positive number of frames per second, got {fps!r}; "
            "pass e.g. fps=1, or fps=None to spread num_frames over the window.",
            source=source,
        )
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not _is_real(value) or value < 0):
            raise SamplingArgumentError(
                f"{name} must be a time in seconds >= 0, got {value!r}; "
                f"pass a number of seconds or None.",
                source=source,
            )
    if end is not None and end <= (start or 0):
        raise SamplingArgumentError(
            f"end ({end}s) must come after start ({start or 0}s); swap them or widen the window.",
            source=source,
        )


def sample_times(
    duration: float,
    num_frames: int = DEFAULT_FRAMES,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
) -> list[float]:
    """The target times (s): the centres of equal segments of the window [start, end].

    ``end`` past the end of the video is clamped to it. With ``fps``, the window gets
    ``round(span * fps)`` segments (at least 1), capped at ``num_frames``.
    """
    _check_plan_arguments(num_frames, fps, start, end)
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else min(float(end), duration)
    if lo >= duration:
        raise SamplingArgumentError(
            f"start={lo:g}s is at or past the end of the {duration:.3f}s video; "
            f"choose a start below {duration:.3f}s."
        )
    span = hi - lo
    n = int(num_frames)
    if fps is not None:
        n = max(1, min(n, round(span * float(fps))))
    return [lo + (i + 0.5) * span / n for i in range(n)]


def frame_at(times: Sequence[float], t: float) -> int:
    """Index of the frame on screen at time ``t``: the last frame that starts at or before it.

    A frame starting within `TIME_EPS_S` after ``t`` counts as started: timestamps carry
    rounding (decord reports float32 seconds), and a target on a frame boundary must pick the
    same frame whichever backend indexed the file.
    """
    return min(max(bisect.bisect_right(times, t + TIME_EPS_S) - 1, 0), len(times) - 1)


def plan_samples(
    times: Sequence[float],
    duration: float,
    num_frames: int = DEFAULT_FRAMES,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
) -> SamplePlan:
    """Which frames to take, given every frame's start time (sorted, first one 0.0).

    Each target time maps to the frame on screen then; duplicates are dropped. When the window
    holds no more frames than targets, every frame in it is taken once.
    """
    if len(times) == 0:
        raise VideoDecodeError("The video has no frames; pass a file that contains video.")
    targets = sample_times(duration, num_frames, fps=fps, start=start, end=end)
    first = frame_at(times, 0.0 if start is None else float(start))
    hi = duration if end is None else min(float(end), duration)
    last = max(first, bisect.bisect_left(times, hi) - 1)  # the last frame starting before `hi`
    if last - first + 1 <= len(targets):
        indices = list(range(first, last + 1))
    else:
        indices = list(dict.fromkeys(frame_at(times, t) for t in targets))
    return SamplePlan(tuple(indices), tuple(float(times[i]) for i in indices))


@dataclass(frozen=True)
class ReadPlan:
    """How to reach the wanted frames: before each one, seek to its keyframe or keep decoding."""

    seeks: tuple[bool, ...]
    cost: int
    """Estimated frames decoded, a seek counted as ``seek_cost`` frames."""
    sequential_cost: int
    """Frames one pass from the first frame to the last wanted one decodes."""


def plan_reads(
    wanted: Sequence[int], keyframes: Sequence[int], *, seek_cost: int = SEEK_COST_FRAMES
) -> ReadPlan:
    """Seek or keep decoding, for each of the sorted, distinct ``wanted`` frame indices.

    Reaching frame ``w`` by seeking costs the frames from its keyframe to ``w`` plus
    ``seek_cost``; keeping on from the last decoded frame ``p`` costs ``w - p``. Choosing the
    cheaper one frame by frame gives sparse seeks on short GOPs and one sequential pass when
    keyframes are further apart than the wanted frames.
    """
    keys = sorted(set(keyframes))
    if not keys or keys[0] > 0:
        keys.insert(0, 0)  # frames before the first keyframe decode from the start
    seeks: list[bool] = []
    cost = 0
    pos: int | None = None
    for w in wanted:
        key = keys[bisect.bisect_right(keys, w) - 1]
        via_seek = w - key + 1 + seek_cost
        if pos is None or via_seek < w - pos:
            seeks.append(True)
            cost += via_seek
        else:
            seeks.append(False)
            cost += max(w - pos, 0)
        pos = w
    sequential = (max(wanted) + 1) if wanted else 0
    return ReadPlan(tuple(seeks), cost, sequential)


def _duration(times: Sequence[float], single_frame_duration: float | None) -> float:
    """Video length: the last frame's start plus how long it stays on screen.

    The last frame is taken to last as long as the one before it (what muxers assume); both
    backends use this rule, so they plan the same frames.
    """
    if len(times) > 1:
        return float(times[-1]) + float(times[-1] - times[-2])
    if single_frame_duration and single_frame_duration > 0:
        return float(times[-1]) + float(single_frame_duration)
    return float(times[-1]) + 1.0 / 25


# ----------------------------------------------------------------------------------------------
# Decoding: one picklable request in, arrays out (runs in the worker process or in-process)


@dataclass(frozen=True)
class DecodeRequest:
    path: str
    num_frames: int = DEFAULT_FRAMES
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    size: int = FRAME_SIZE
    backend: str | None = None
    """"decord", "pyav", or None for the first of `AUTO_BACKENDS` that is installed."""


@dataclass
class DecodeResult:
    arrays: list[np.ndarray]
    timestamps: list[float]
    indices: list[int]
    duration: float
    backend: str
    stats: dict[str, Any] = field(default_factory=dict)


def decode(request: DecodeRequest) -> DecodeResult:
    """Index the video, plan the frames, decode them at ``size`` x ``size``."""
    try:
        return _decode(request)
    except VideoError as e:
        if e.source is None:
            e.source = request.path
        raise


def _decode(request: DecodeRequest) -> DecodeResult:
    backend = request.backend or _auto_backend(request.path)
    if backend == "decord":
        try:
            import decord
        except ImportError as e:
            raise SamplingArgumentError(
                f"backend='decord' was asked for but decord does not import ({e}); "
                "install it (pip install decord) or use backend='pyav'.",
                source=request.path,
            ) from e
        try:
            result = _decode_decord(request, decord)
        except VideoDecodeError as decord_error:
            # PyAV's diagnosis is more precise than decord's C++ message, and some valid files
            # only decord refuses: a WebM written to a pipe has no duration ("Failed to
            # measure duration/frame-count due to broken metadata"). PyAV decodes those.
            try:
                return _decode_pyav(request)
            except VideoDecodeError as diagnosis:
                raise diagnosis from decord_error
            except ImportError:
                pass
            raise
        if result is not None:
            return result
    return _decode_pyav(request)


def _auto_backend(path: str) -> str:
    chosen = os.environ.get(BACKEND_ENV)
    if chosen:
        if chosen not in BACKENDS:
            raise SamplingArgumentError(
                f"{BACKEND_ENV}={chosen!r} is not a backend: use one of {', '.join(BACKENDS)}",
                source=path,
            )
        return chosen
    for name in AUTO_BACKENDS:
        if importlib.util.find_spec("av" if name == "pyav" else name) is not None:
            return name
    raise SamplingArgumentError(
        "No video decoder is installed; pip install av (or decord).", source=path
    )


def _decode_decord(request: DecodeRequest, decord: Any) -> DecodeResult | None:
    """Decode with decord, or None when decord's index of this file cannot be trusted."""
    path = request.path
    try:
        # decord scales in its filter graph while decoding (no full-size RGB copies) and
        # applies the display matrix itself (0.6.0: identical to `ffmpeg -i`, 90/180/270).
        reader = decord.VideoReader(
            path,
            ctx=decord.cpu(0),
            width=request.size,
            height=request.size,
            num_threads=DECODER_THREADS,
        )
        n = len(reader)
        if n == 0:
            return None
        spans = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)
    except Exception as e:  # decord raises DECORDError or RuntimeError with C++ text
        raise _decord_error(e, path) from e
    starts = spans[:, 0]
    # decord counts frames an MP4 edit list drops (negative times) and then returns frame
    # i + dropped for index i (measured); it also never reorders its index. PyAV gets both right.
    if starts[0] < 0 or (n > 1 and not np.all(np.diff(starts) > 0)):
        return None
    times = (starts - starts[0]).tolist()
    duration = _duration(times, float(spans[-1, 1] - spans[-1, 0]))
    plan = plan_samples(
        times, duration, request.num_frames, fps=request.fps, start=request.start, end=request.end
    )
    try:
        batch = reader.get_batch(list(plan.indices)).asnumpy()
    except Exception as e:
        raise _decord_error(e, path) from e
    arrays = [np.ascontiguousarray(batch[i]) for i in range(len(plan.indices))]
    return DecodeResult(
        arrays, list(plan.timestamps), list(plan.indices), duration, "decord", {"frames": n}
    )


def _decord_error(e: BaseException, path: str) -> VideoDecodeError:
    text = str(e)
    if "cannot find video stream" in text:
        return VideoDecodeError(
            f"{path} has no video stream (audio only?); pass a file that contains video.",
            source=path,
        )
    # "[23:17:37] /github/workspace/src/video/x.cc:61: Check failed: ..." -> "Check failed: ..."
    lines = [ln for ln in text.strip().splitlines() if ln.strip()] or [type(e).__name__]
    reason = re.sub(r"^\[[\d:]+\]\s*\S+:\d+:\s*", "", lines[0])[:160]
    return VideoDecodeError(
        f"decord could not read {path} ({reason}); use backend='pyav', or re-encode the file.",
        source=path,
    )


class _Times(Sequence[float]):
    """Frame start times (s), computed on access from int timestamps: 8 bytes a frame."""

    def __init__(self, pts: array, time_base: Any) -> None:
        self._pts, self._origin = pts, pts[0]
        self._num, self._den = time_base.numerator, time_base.denominator

    def __len__(self) -> int:
        return len(self._pts)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return (self._pts[i] - self._origin) * self._num / self._den


@dataclass(frozen=True)
class _Index:
    pts: array  # int64 timestamps of the shown frames, display order
    times: _Times
    keyframes: list[int]  # display index where each GOP starts
    seek_ts: dict[int, int]  # GOP start -> timestamp to seek to (its keyframe's pts)
    duration: float

    def rank(self, ts: int) -> int | None:
        i = bisect.bisect_left(self.pts, ts)
        return i if i < len(self.pts) and self.pts[i] == ts else None


def _pyav_index(container: Any, stream: Any, path: str) -> _Index:
    """Every frame's timestamp and every keyframe, from one pass over the packets (no decode).

    Flat arrays, about 17 bytes a frame: an hour at 30 fps indexes in under 2 MB.
    """
    import av

    pts_all, durations, flags = array("q"), array("q"), bytearray()  # 1: key, 2: discarded
    untimed = 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is None:
                untimed += 1
                continue
            pts_all.append(ts)
            durations.append(pkt.duration or 0)
            # is_discard (PyAV 12+): a frame an MP4 edit list hides; decoders drop it too.
            flags.append(bool(pkt.is_keyframe) | 2 * bool(getattr(pkt, "is_discard", False)))
    except av.error.FFmpegError as e:
        raise VideoDecodeError(
            f"{path} is damaged ({_av_reason(e)}); re-download or re-encode it.", source=path
        ) from e
    if not pts_all:
        what = (
            "has video packets without timestamps (a raw stream?)" if untimed else "has no frames"
        )
        raise VideoDecodeError(
            f"{path} {what}; remux it into MP4 (ffmpeg -i IN -c copy OUT.mp4) and try again.",
            source=path,
        )
    listed = stream.frames or 0
    if listed and len(pts_all) + untimed < listed:
        raise VideoDecodeError(
            f"{path} is truncated: its index lists {listed} frames but the file holds "
            f"{len(pts_all) + untimed}; copy or download it again.",
            source=path,
        )
    shown = array("q", sorted({t for t, f in zip(pts_all, flags, strict=True) if not f & 2}))
    if not shown:
        raise VideoDecodeError(f"{path} shows no frames; re-encode it.", source=path)

    # GOPs in decode order: a keyframe and the packets up to the next one (packets before the
    # first keyframe form a GOP of their own). A GOP starts, in display order, at its
    # earliest shown frame; reaching it means seeking to its keyframe. Seek by the keyframe's
    # pts: the mp4 demuxer, asked for its dts, can land a GOP early (measured).
    seek_ts: dict[int, int] = {}
    gop_key, gop_first = pts_all[0], len(shown)
    for t, f in zip(pts_all, flags, strict=True):
        if f & 1:
            if gop_first < len(shown):
                seek_ts.setdefault(gop_first, gop_key)
            gop_key, gop_first = t, len(shown)
        if not f & 2:
            gop_first = min(gop_first, bisect.bisect_left(shown, t))
    if gop_first < len(shown):
        seek_ts.setdefault(gop_first, gop_key)

    times = _Times(shown, stream.time_base)
    last = max(i for i, (t, f) in enumerate(zip(pts_all, flags, strict=True))
               if t == shown[-1] and not f & 2)  # fmt: skip
    last_dur = float(durations[last] * stream.time_base)
    if not last_dur and stream.average_rate:
        last_dur = 1.0 / float(stream.average_rate)
    return _Index(shown, times, sorted(seek_ts), seek_ts, _duration(times, last_dur))


def _av_reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _decode_pyav(request: DecodeRequest) -> DecodeResult:
    index, got, stats = _pyav_decode_frames(request)
    indices = sorted(got)
    stats["frames"] = len(index.pts)
    return DecodeResult(
        [got[i] for i in indices],
        [float(index.times[i]) for i in indices],
        indices,
        index.duration,
        "pyav",
        stats,
    )


def _pyav_decode_frames(
    request: DecodeRequest,
) -> tuple[_Index, dict[int, np.ndarray], dict[str, Any]]:
    import av

    path = request.path
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(
            f"{path} is not a video ffmpeg can read ({_av_reason(e)}); "
            "check that it is a complete video file.",
            source=path,
        ) from e
    with container:
        if not container.streams.video:
            raise VideoDecodeError(
                f"{path} has no video stream (audio only?); pass a file that contains video.",
                source=path,
            )
        stream = container.streams.video[0]
        index = _pyav_index(container, stream, path)
        plan = plan_samples(
            index.times,
            index.duration,
            request.num_frames,
            fps=request.fps,
            start=request.start,
            end=request.end,
        )
        try:
            got, stats = _pyav_read(container, stream, index, list(plan.indices), request.size)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(
                f"decoding {path} failed ({_av_reason(e)}); the file may be damaged: "
                "re-encode it with ffmpeg.",
                source=path,
            ) from e
    return index, got, stats


def _pyav_read(
    container: Any, stream: Any, index: _Index, wanted: list[int], size: int
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Decode the wanted frames, seeking or reading on as `plan_reads` decides."""
    wanted = sorted(set(wanted))
    reads = plan_reads(wanted, index.keyframes)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = DECODER_THREADS
    wanted_pts = {index.pts[i] for i in wanted}
    out: dict[int, np.ndarray] = {}
    counter = [0]
    seeks = 0
    frames: Iterator[Any] | None = None

    # A frame reached by a seek, when the next one is reached by a seek too (or there is
    # none), is the only one wanted from its stretch: the decoder is drained right after its
    # packet instead of fed until its reordering delay lets it out, so the packets that would
    # follow are not decoded for nothing (x264 1080p, 2 s GOP: ~8% fewer packets). Not in a
    # stretch with several wanted frames: one shown earlier may be decoded later.
    drain_at = {
        index.pts[w]
        for w, this_seeks, next_seeks in zip(
            wanted, reads.seeks, (*reads.seeks[1:], True), strict=True
        )
        if this_seeks and next_seeks
    }

    def seek_to(gop_start: int, drain: bool = True) -> Iterator[Any]:
        nonlocal seeks
        seeks += 1
        if frames is not None:
            frames.close()  # drops the frames it still holds from its last packet
        container.seek(index.seek_ts[gop_start], stream=stream, backward=True, any_frame=False)
        return _frames_from_here(
            container, stream, wanted_pts, drain_at if drain else set(), counter
        )

    for w, seek in zip(wanted, reads.seeks, strict=True):
        if w in out:
            continue
        target = index.pts[w]
        gop_start = index.keyframes[bisect.bisect_right(index.keyframes, w) - 1]
        if seek or frames is None:
            frames = seek_to(gop_start)
            found, first = _first_at_or_after(frames, target)
            if found is not None and found.pts > target and first:
                # The seek landed past the target (a demuxer's keyframe lookup missed):
                # read again from the very first keyframe, which cannot miss.
                frames = seek_to(index.keyframes[0])
                found, _ = _first_at_or_after(frames, target)
        else:
            found, _ = _first_at_or_after(frames, target)
        if found is None and target in drain_at:
            # The decoder dropped the target (a damaged frame) and was drained at it: read
            # that stretch again without draining, to get the next frame shown instead.
            frames = seek_to(gop_start, drain=False)
            found, _ = _first_at_or_after(frames, target)
        if found is None:
            raise VideoDecodeError(
                f"could not decode the frame at {index.times[w]:.3f}s of the video; the file "
                "may be damaged: re-encode it with ffmpeg.",
            )
        # A frame the decoder dropped is replaced by the next one shown, under its own index.
        actual = index.rank(found.pts)
        out.setdefault(w if actual is None else actual, _to_rgb_array(found, size))
        # Let go of the full-size frame before decoding on: held, it would pin one more
        # 1080p buffer (~3 MB) in the decoder's pool for the rest of the pass.
        del found
    stats = {
        "seeks": seeks,
        "packets_decoded": counter[0],
        "plan_cost": reads.cost,
        "sequential_cost": reads.sequential_cost,
    }
    return out, stats


def _first_at_or_after(frames: Iterator[Any], target: int) -> tuple[Any | None, bool]:
    """The first frame shown at or after ``target``, and whether it was the first one read."""
    first = True
    for frame in frames:
        if frame.pts is not None and frame.pts >= target:
            return frame, first
        first = False
    return None, first


def _frames_from_here(
    container: Any, stream: Any, wanted_pts: set[int], drain_at: set[int], counter: list[int]
) -> Iterator[Any]:
    """Decoded frames from the demuxer's position on; after a packet whose pts is in
    ``drain_at``, the frames the decoder still holds, and then no more (seek to go on)."""
    codec = stream.codec_context
    for packet in container.demux(stream):
        if packet.size:
            counter[0] += 1
            # A frame nothing refers to and nobody asked for need not be decoded at all:
            # with x264's defaults that skips about 40% of the frames of a pass.
            codec.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
        yield from codec.decode(packet)  # the last, empty packet flushes the decoder
        if packet.size and packet.pts in drain_at:
            yield from codec.decode(None)
            return


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns the frame's display matrix asks for."""
    degrees = getattr(frame, "rotation", None)
    if degrees is None:  # PyAV before VideoFrame.rotation: read the display matrix
        degrees = 0.0
        for side in getattr(frame, "side_data", ()):
            if "DISPLAYMATRIX" in str(getattr(side, "type", "")):
                m = np.frombuffer(bytes(side), dtype=np.int32, count=9).astype(np.float64)
                s0, s1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
                if s0 and s1:
                    degrees = -math.degrees(math.atan2(m[1] / s1, m[0] / s0))
    return round(float(degrees) / 90) % 4


def _to_rgb_array(frame: Any, size: int) -> np.ndarray:
    # Resize straight from the decoder's YUV to size x size RGB (what the SigLIP processor
    # does: a plain bicubic resize to a square), then rotate: with a square target both orders
    # give the same picture. Holding 4:2:0 until the decoder is freed would save ~1.4 MB of
    # peak at 8 frames of 1080p, but costs chroma detail the JPEG keeps (measured: MAE vs the
    # direct resize 3.6 instead of 2.8 after JPEG q90), so frames are converted right away.
    small = frame.reformat(width=size, height=size, format="rgb24", interpolation="BICUBIC")
    arr = small.to_ndarray()
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(arr, turns)) if turns else arr


# ----------------------------------------------------------------------------------------------
# Sources and the public entry point


def _fetch_remote(url: str) -> contextlib.AbstractContextManager[str]:
    """HOOK: http(s) videos. The remote-fetch module replaces this with a context manager that
    downloads ``url`` within the safety limits and yields a local path (deleted afterwards)."""
    raise RemoteVideoError(
        f"{url} is an http(s) URL, which sample_frames cannot fetch yet; download the video "
        "and pass the local path.",
        source=url,
    )


@contextlib.contextmanager
def _resolve_source(source: object) -> Iterator[str]:
    """A readable local file for ``source`` (str or os.PathLike), or a typed error."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise SamplingArgumentError(
            f"source must be a file path (str or pathlib.Path), got {type(source).__name__}; "
            "pass the path of a video file."
        )
    m = _SCHEME.match(source)
    if m and len(m.group(1)) > 1:  # "C://..." is a Windows drive, not a scheme
        scheme = m.group(1).lower()
        if scheme in ("http", "https"):
            with _fetch_remote(source) as local:
                yield local
            return
        if scheme != "file":
            raise RemoteVideoError(
                f"{scheme}:// sources are not supported; pass a local video file path.",
                source=source,
            )
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        source = url2pathname(urlparse(source).path)
    path = Path(source).expanduser()
    if not path.exists():
        raise VideoNotFoundError(
            f"No video at {path}; check the path (relative paths start at {os.getcwd()}).",
            source=str(source),
        )
    if path.is_dir():
        raise VideoNotFoundError(
            f"{path} is a directory, not a video file; pass the path of a video inside it.",
            source=str(source),
        )
    if not path.is_file():
        raise VideoNotFoundError(
            f"{path} is not a regular file; pass the path of a video file.", source=str(source)
        )
    if not os.access(path, os.R_OK):
        raise VideoError(
            f"{path} cannot be read (permission denied); fix its permissions.", source=str(source)
        )
    if path.stat().st_size == 0:
        raise VideoDecodeError(
            f"{path} is empty (0 bytes); the copy or download probably failed: get it again.",
            source=str(source),
        )
    yield str(path)


def _check_backend(backend: object) -> None:
    if backend is not None and backend not in BACKENDS:
        raise SamplingArgumentError(
            f"Unknown backend {backend!r}; use one of {', '.join(map(repr, BACKENDS))}, "
            "or None for the default (PyAV, then decord)."
        )
    if backend == "decord" and importlib.util.find_spec("decord") is None:
        raise SamplingArgumentError(
            "backend='decord' was asked for but decord is not installed; "
            "pip install decord, or use backend='pyav'."
        )


def sample_frames(
    source: str | os.PathLike[str],
    num_frames: int = DEFAULT_FRAMES,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int = FRAME_SIZE,
    backend: str | None = None,
    isolate: bool = True,
    timeout: float | None = None,
) -> Frames:
    """Sample ``num_frames`` frames from a local video, uniformly in time.

    Args:
        source: path of the video (str or Path).
        num_frames: how many frames at most; fewer if the window holds fewer frames.
        fps: sample at this rate instead, still at most ``num_frames`` frames.
        start, end: the window in seconds (default: the whole video; ``end`` is clamped).
        size: frames are resized to ``size`` x ``size`` (SigLIP's 384).
        backend: "pyav", "decord", or None (PyAV; decord if PyAV is missing).
        isolate: decode in a worker process (default), so a decoder hang or crash raises
            VideoDecodeError instead of taking the caller down; False decodes in-process.
        timeout: seconds the worker may take (default ``_decode_worker.DECODE_TIMEOUT_S``).

    Raises:
        VideoNotFoundError, VideoDecodeError, RemoteVideoError, SamplingArgumentError:
        all VidchatError subclasses.
    """
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
    _check_plan_arguments(num_frames, fps, start, end, source=label)
    if (
        isinstance(size, bool)
        or not isinstance(size, numbers.Integral)
        or not (1 <= size <= MAX_SIZE)
    ):
        raise SamplingArgumentError(
            f"size must be an integer from 1 to {MAX_SIZE}, got {size!r}; the model wants "
            f"{FRAME_SIZE}.",
            source=label,
        )
    _check_backend(backend)
    with _resolve_source(source) as path:
        request = DecodeRequest(path, int(num_frames), fps, start, end, int(size), backend)
        if isolate:
            from vidchat.client._decode_worker import run_isolated

            result = run_isolated(request, timeout=timeout)
        else:
            result = decode(request)
    images = [Image.fromarray(a) for a in result.arrays]
    return Frames(images, result.timestamps, result.indices, label, result.backend, result.duration)
