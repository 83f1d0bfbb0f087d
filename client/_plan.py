"""Which frames to take and how to reach them: pure functions, no I/O.

    SamplingSpec ──► sample_times ──► plan_samples(times) ──► SamplePlan (indices, timestamps)
    (validated once)                  plan_reads(wanted, keyframes) ──► ReadPlan (seek or read on)
                                      split_reads(reads, parts) ──► stretches for parallel decoders

Frames are chosen uniformly in *time*: the window [start, end] is cut into equal segments and
each segment contributes the frame on screen at its centre. Frame indices come from the
stream's own timestamps (the backends index them), so variable frame rate, missing frame
counts (WebM/MKV) and MP4 edit lists are handled; a window with fewer frames than asked gives
each of its frames once.

That is mode "uniform" (``SamplingSpec.mode``, the default). Mode "keyframes" takes the
keyframe nearest each of those centres instead (`plan_keyframes`; decoded by `_keyframes`);
mode "scenes" looks at the content first (`_scenes`) and hands its chosen times back to the
uniform path as ``SamplingSpec.targets``.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from vidchat.errors import SamplingArgumentError, VideoDecodeError
from vidchat.limits import DEFAULT_FRAMES, FRAME_SIZE

__all__ = [
    "MAX_SIZE",
    "MODES",
    "ReadPlan",
    "SamplePlan",
    "SamplingSpec",
    "frame_at",
    "plan_keyframes",
    "plan_reads",
    "plan_samples",
    "sample_times",
    "split_reads",
    "video_duration",
]

# Decoding cost of one seek, in frames: demuxer seek, decoder flush and the refill of its
# frame-thread pipeline. Measured on 1080p H.264 with PyAV on 2 cores: a seek plus the first
# frame costs about what decoding 3 more frames in a row does; 8 keeps a margin, and the choice
# only matters when the next keyframe is within a few frames of the decoder's position.
SEEK_COST_FRAMES = 8
MAX_SIZE = 4096
# Timestamps closer than this are the same instant (decord's float32 seconds are off by up
# to ~3e-5 s at 10 minutes; frames are at least ~4 ms apart even at 240 fps).
TIME_EPS_S = 1e-4
# What `sample_frames(mode=...)` takes; the first is the default.
MODES = ("uniform", "keyframes", "scenes")


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class SamplingSpec:
    """What to sample, checked once when it is made: every later step can trust it."""

    num_frames: int = DEFAULT_FRAMES
    """How many frames at most; fewer if the window holds fewer frames."""
    fps: float | None = None
    """Sample at this rate instead, still at most ``num_frames`` frames."""
    start: float | None = None
    end: float | None = None
    """The window in seconds (default: the whole video; ``end`` is clamped to it)."""
    size: int = FRAME_SIZE
    """Frames are resized to ``size`` x ``size`` (SigLIP's 384)."""
    mode: str = MODES[0]
    """"uniform" (equal segments of time), "keyframes" (the keyframes nearest those) or
    "scenes" (a frame of each scene change, filled uniformly)."""
    targets: tuple[float, ...] | None = None
    """Exact target times (s) instead of equal segments: set by a planner that looked at the
    content (scene mode), not a user argument."""

    def __post_init__(self) -> None:
        n, fps, start, end, size = self.num_frames, self.fps, self.start, self.end, self.size
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise SamplingArgumentError(
                f"Unknown sampling mode {self.mode!r}; use one of "
                f"{', '.join(map(repr, MODES))}.")
        if self.targets is not None and not all(
                _is_real(t) and t >= 0 for t in self.targets):
            raise SamplingArgumentError(
                f"targets must be times in seconds >= 0, got {self.targets!r}.")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise SamplingArgumentError(
                f"num_frames must be an integer, got {n!r}; pass e.g. num_frames=8.")
        if n < 1:
            raise SamplingArgumentError(
                f"num_frames must be at least 1, got {n}; ask for one frame or more.")
        if fps is not None and (not _is_real(fps) or fps <= 0):
            raise SamplingArgumentError(
                f"fps must be a positive number of frames per second, got {fps!r}; "
                "pass e.g. fps=1, or fps=None to spread num_frames over the window.")
        for name, value in (("start", start), ("end", end)):
            if value is not None and (not _is_real(value) or value < 0):
                raise SamplingArgumentError(
                    f"{name} must be a time in seconds >= 0, got {value!r}; "
                    "pass a number of seconds or None.")
        if end is not None and end <= (start or 0):
            raise SamplingArgumentError(
                f"end ({end}s) must come after start ({start or 0}s); swap them or widen "
                "the window.")
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not (
                1 <= size <= MAX_SIZE):
            raise SamplingArgumentError(
                f"size must be an integer from 1 to {MAX_SIZE}, got {size!r}; the model wants "
                f"{FRAME_SIZE}.")


@dataclass(frozen=True)
class SamplePlan:
    """Which frames to take: indices in display order and their real timestamps."""

    indices: tuple[int, ...]
    timestamps: tuple[float, ...]


def sample_times(duration: float, spec: SamplingSpec) -> list[float]:
    """The target times (s): the centres of equal segments of the window [start, end].

    ``end`` past the end of the video is clamped to it. With ``fps``, the window gets
    ``round(span * fps)`` segments (at least 1), capped at ``num_frames``.
    """
    lo = 0.0 if spec.start is None else float(spec.start)
    hi = duration if spec.end is None else min(float(spec.end), duration)
    if lo >= duration:
        raise SamplingArgumentError(
            f"start={lo:g}s is at or past the end of the {duration:.3f}s video; "
            f"choose a start below {duration:.3f}s."
        )
    span = hi - lo
    n = int(spec.num_frames)
    if spec.fps is not None:
        n = max(1, min(n, round(span * float(spec.fps))))
    return [lo + (i + 0.5) * span / n for i in range(n)]


def frame_at(times: Sequence[float], t: float) -> int:
    """Index of the frame on screen at time ``t``: the last frame that starts at or before it.

    A frame starting within `TIME_EPS_S` after ``t`` counts as started: timestamps carry
    rounding (decord reports float32 seconds), and a target on a frame boundary must pick the
    same frame whichever backend indexed the file.
    """
    return min(max(bisect.bisect_right(times, t + TIME_EPS_S) - 1, 0), len(times) - 1)


def plan_samples(times: Sequence[float], duration: float, spec: SamplingSpec) -> SamplePlan:
    """Which frames to take, given every frame's start time (sorted, first one 0.0).

    Each target time maps to the frame on screen then; duplicates are dropped. When the window
    holds no more frames than targets, every frame in it is taken once.
    """
    if len(times) == 0:
        raise VideoDecodeError("The video has no frames; pass a file that contains video.")
    targets = sample_times(duration, spec) if spec.targets is None else list(spec.targets)
    first = frame_at(times, 0.0 if spec.start is None else float(spec.start))
    hi = duration if spec.end is None else min(float(spec.end), duration)
    last = max(first, bisect.bisect_left(times, hi) - 1)  # the last frame starting before `hi`
    if last - first + 1 <= len(targets):
        indices = list(range(first, last + 1))
    else:
        indices = list(dict.fromkeys(frame_at(times, t) for t in targets))
    return SamplePlan(tuple(indices), tuple(float(times[i]) for i in indices))


def plan_keyframes(key_times: Sequence[float], duration: float,
                   spec: SamplingSpec) -> list[int]:
    """Mode "keyframes": positions in ``key_times`` (the keyframes' start times, sorted) of
    the keyframe nearest each uniform target, each taken once, in time order.

    Only keyframes inside the window [start, end) are candidates: a frame outside the
    window asked for would answer a question about another part of the video (ask_long's
    windows rely on it). A window holding none gives [] and the caller takes the uniform
    frames. Two targets nearest the same keyframe give one frame: never more frames than
    targets.
    """
    if len(key_times) == 0:
        raise VideoDecodeError("The video has no keyframes; re-encode it with ffmpeg.")
    targets = sample_times(duration, spec)
    lo = 0.0 if spec.start is None else float(spec.start)
    hi = duration if spec.end is None else min(float(spec.end), duration)
    first = bisect.bisect_left(key_times, lo - TIME_EPS_S)
    last = bisect.bisect_left(key_times, hi) - 1
    if first > last:
        return []
    return sorted({_nearest(key_times, first, last, t) for t in targets})


def _nearest(times: Sequence[float], first: int, last: int, t: float) -> int:
    """The position in ``times[first:last + 1]`` (sorted) nearest ``t``; a tie: the earlier."""
    i = min(max(bisect.bisect_left(times, t, first, last + 1), first), last)
    if i > first and t - times[i - 1] <= times[i] - t:
        return i - 1
    return i


@dataclass(frozen=True)
class ReadPlan:
    """How to reach the wanted frames: before each one, seek to its keyframe or keep decoding."""

    seeks: tuple[bool, ...]
    cost: int
    """Estimated frames decoded, a seek counted as ``seek_cost`` frames."""
    sequential_cost: int
    """Frames one pass from the first frame to the last wanted one decodes."""
    costs: tuple[int, ...] = ()
    """The share of ``cost`` that reaching each wanted frame takes."""


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
    costs: list[int] = []
    pos: int | None = None
    for w in wanted:
        key = keys[bisect.bisect_right(keys, w) - 1]
        via_seek = w - key + 1 + seek_cost
        seek = pos is None or via_seek < w - pos
        seeks.append(seek)
        costs.append(via_seek if seek else max(w - (pos or 0), 0))
        pos = w
    sequential = (max(wanted) + 1) if wanted else 0
    return ReadPlan(tuple(seeks), sum(costs), sequential, tuple(costs))


def split_reads(reads: ReadPlan, parts: int) -> list[range]:
    """Cut the wanted frames into at most ``parts`` stretches, one per decoder running at once.

    A stretch is a range of positions in the wanted list; it starts where the plan seeks (a
    decoder reading on from the frame before cannot hand over in the middle), and stretches
    stay in file order, each holding about an equal share of the cost: the split that
    minimises the largest share, so the decoders finish together.
    """
    n = len(reads.seeks)
    if n == 0:
        return []
    starts = [i for i, seek in enumerate(reads.seeks) if seek or i == 0]
    runs = [sum(reads.costs[a:b]) for a, b in zip(starts, [*starts[1:], n], strict=True)]

    def pack(limit: int) -> list[int]:
        """Indices into ``runs`` where a stretch starts, filling each up to ``limit``."""
        cuts, load = [0], 0
        for k, c in enumerate(runs):
            if load and load + c > limit:
                cuts.append(k)
                load = 0
            load += c
        return cuts

    lo, hi = max(runs), sum(runs)
    while lo < hi:  # the smallest largest share that `parts` stretches can have
        mid = (lo + hi) // 2
        if len(pack(mid)) <= parts:
            hi = mid
        else:
            lo = mid + 1
    firsts = [starts[k] for k in pack(lo)]
    return [range(a, b) for a, b in zip(firsts, [*firsts[1:], n], strict=True)]


def video_duration(times: Sequence[float], single_frame_duration: float | None) -> float:
    """Video length: the last frame's start plus how long it stays on screen.

    The last frame is taken to last as long as the one before it (what muxers assume); both
    backends use this rule, so they plan the same frames.
    """
    if len(times) > 1:
        return float(times[-1]) + float(times[-1] - times[-2])
    if single_frame_duration and single_frame_duration > 0:
        return float(times[-1]) + float(single_frame_duration)
    return float(times[-1]) + 1.0 / 25
