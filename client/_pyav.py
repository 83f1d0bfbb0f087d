"""The PyAV backend (the default): index every packet, plan the cheapest seeks, decode only
what the wanted frames depend on, on both cores, and convert only the wanted frames.

    _index: one pass over the packets (no decode): every shown frame's timestamp, keyframes
    plan_samples / plan_reads / split_reads (vidchat.client._plan): which frames, seek or read
        on, and which stretches of them go to decoders running at once (threads)
    _read: decode one stretch; frames nothing refers to and nobody asked for are skipped
        (NONREF)
    to_rgb_array (vidchat.client._resize): size x size RGB as the reference makes it
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidchat.client._decode import (
    DECODER_THREADS,
    PARALLEL_MIN_PIXELS,
    DecodeRequest,
    DecodeResult,
    parallel_decoders,
)
from vidchat.client._plan import ReadPlan, plan_reads, plan_samples, split_reads, video_duration
from vidchat.client._resize import to_rgb_array
from vidchat.errors import VideoDecodeError

__all__ = ["decode", "to_rgb_array"]


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


def _index(container: Any, stream: Any, path: str) -> _Index:
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
    # numpy from here: an hour of 30 fps video is 108,000 packets, and a Python loop over
    # them took ~2 s of a ~9 s call (measured); these are a few vector passes.
    pts = np.frombuffer(pts_all, dtype=np.int64)
    packet_flags = np.frombuffer(flags, dtype=np.uint8)
    is_shown = (packet_flags & 2) == 0
    shown_np = np.unique(pts[is_shown])  # sorted, int64
    if not len(shown_np):
        raise VideoDecodeError(f"{path} shows no frames; re-encode it.", source=path)
    shown = array("q")
    shown.frombytes(shown_np.tobytes())

    # GOPs in decode order: a keyframe and the packets up to the next one (packets before the
    # first keyframe form a GOP of their own). A GOP starts, in display order, at its
    # earliest shown frame; reaching it means seeking to its keyframe. Seek by the keyframe's
    # pts: the mp4 demuxer, asked for its dts, can land a GOP early (measured).
    starts = np.union1d([0], np.flatnonzero(packet_flags & 1))
    rank = np.where(is_shown, np.searchsorted(shown_np, pts), len(shown))
    seek_ts: dict[int, int] = {}
    for start, first in zip(starts.tolist(), np.minimum.reduceat(rank, starts).tolist(),
                            strict=True):
        if first < len(shown):
            seek_ts.setdefault(first, pts_all[start])

    times = _Times(shown, stream.time_base)
    last = int(np.flatnonzero(is_shown & (pts == shown[-1]))[-1])
    last_dur = float(durations[last] * stream.time_base)
    if not last_dur and stream.average_rate:
        last_dur = 1.0 / float(stream.average_rate)
    return _Index(shown, times, sorted(seek_ts), seek_ts, video_duration(times, last_dur))


def _av_reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def decode(request: DecodeRequest) -> DecodeResult:
    """Index the file, plan the frames, decode them by the cheapest seeks."""
    index, got, stats = _decode_frames(request)
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


def _decode_frames(
    request: DecodeRequest,
) -> tuple[_Index, dict[int, np.ndarray], dict[str, Any]]:
    import av

    path, size = request.path, request.spec.size
    container = _open(path)
    with container:
        if not container.streams.video:
            raise VideoDecodeError(
                f"{path} has no video stream (audio only?); pass a file that contains video.",
                source=path,
            )
        stream = container.streams.video[0]
        index = _index(container, stream, path)
        plan = plan_samples(index.times, index.duration, request.spec)
        wanted = sorted(set(plan.indices))
        reads = plan_reads(wanted, index.keyframes)
        pixels = stream.codec_context.width * stream.codec_context.height
        stretches = _stretches(reads, pixels, parallel_decoders(request.decoders))
        jobs = [([wanted[i] for i in s], [reads.seeks[i] for i in s]) for s in stretches]
        try:
            if len(jobs) == 1:
                got, stats = _read(container, stream, index, *jobs[0], size)
            else:
                got, stats = _read_in_parallel(container, stream, index, jobs, path, size)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(
                f"decoding {path} failed ({_av_reason(e)}); the file may be damaged: "
                "re-encode it with ffmpeg.",
                source=path,
            ) from e
    stats.update(decoders=len(jobs), plan_cost=reads.cost, sequential_cost=reads.sequential_cost)
    return index, got, stats


def _open(path: str) -> Any:
    import av

    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(
            f"{path} is not a video ffmpeg can read ({_av_reason(e)}); "
            "check that it is a complete video file.",
            source=path,
        ) from e


def _stretches(reads: ReadPlan, pixels_per_frame: int, parts: int) -> list[range]:
    """The wanted frames cut into at most ``parts`` stretches for decoders running at once
    (one when a second decoder would take over too little work to pay for opening it)."""
    everything = [range(len(reads.seeks))]
    if parts < 2:
        return everything
    stretches = split_reads(reads, parts)
    largest = max(sum(reads.costs[i] for i in s) for s in stretches)
    if (reads.cost - largest) * pixels_per_frame < PARALLEL_MIN_PIXELS:
        return everything
    return stretches


def _read_in_parallel(
    container: Any, stream: Any, index: _Index, jobs: list[tuple[list[int], list[bool]]],
    path: str, size: int,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Each stretch on its own decoder, in threads (decoding, swscale and PIL's resize release
    the GIL); the first on this container, the others on their own."""

    def read_own(wanted: list[int], seeks: list[bool]) -> tuple[dict, dict]:
        with _open(path) as own:
            return _read(own, own.streams.video[0], index, wanted, seeks, size)

    with ThreadPoolExecutor(len(jobs) - 1, thread_name_prefix="vidchat-decode") as pool:
        futures = [pool.submit(read_own, *job) for job in jobs[1:]]
        results = [_read(container, stream, index, *jobs[0], size)]
        results += [f.result() for f in futures]
    got: dict[int, np.ndarray] = {}
    stats: dict[str, Any] = {}
    for part, part_stats in results:
        for i, arr in part.items():
            got.setdefault(i, arr)
        for key, value in part_stats.items():
            stats[key] = stats.get(key, 0) + value
    return got, stats


def _read(
    container: Any, stream: Any, index: _Index, wanted: list[int], seeks: list[bool],
    size: int,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Decode the sorted, distinct ``wanted`` frames, seeking before those ``seeks`` marks
    (`plan_reads`) and reading on to the others."""
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = DECODER_THREADS
    wanted_pts = {index.pts[i] for i in wanted}
    out: dict[int, np.ndarray] = {}
    counter = [0]
    seek_count = 0
    frames: Iterator[Any] | None = None

    # A frame reached by a seek, when the next one is reached by a seek too (or there is
    # none), is the only one wanted from its stretch: the decoder is drained right after its
    # packet instead of fed until its reordering delay lets it out, so the packets that would
    # follow are not decoded for nothing (x264 1080p, 2 s GOP: ~8% fewer packets). Not in a
    # stretch with several wanted frames: one shown earlier may be decoded later.
    drain_at = {
        index.pts[w]
        for w, this_seeks, next_seeks in zip(wanted, seeks, (*seeks[1:], True), strict=True)
        if this_seeks and next_seeks
    }

    def seek_to(gop_start: int, drain: bool = True) -> Iterator[Any]:
        nonlocal seek_count
        seek_count += 1
        if frames is not None:
            frames.close()  # drops the frames it still holds from its last packet
        container.seek(index.seek_ts[gop_start], stream=stream, backward=True, any_frame=False)
        return _frames_from_here(
            container, stream, wanted_pts, drain_at if drain else set(), counter
        )

    for w, seek in zip(wanted, seeks, strict=True):
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
        out.setdefault(w if actual is None else actual, to_rgb_array(found, size))
        # Let go of the full-size frame before decoding on: held, it would pin one more
        # 1080p buffer (~3 MB) in the decoder's pool for the rest of the pass.
        del found
    return out, {"seeks": seek_count, "packets_decoded": counter[0]}


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
