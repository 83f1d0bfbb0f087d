"""Mode "keyframes": the keyframes nearest the uniform targets, found from the packet flags
and decoded one packet each.

    index_video: one pass over the packets (no decode): shown frames' timestamps, keyframes,
                 the video's length (the same rules as the uniform path's index)
    plan_keyframes (vidchat.client._plan): which keyframes
    decode: per keyframe, seek to it, decode its packet alone, drain the decoder

A keyframe depends on no other frame, so each one costs one seek and one intra-frame decode,
whatever the keyframe interval: the cheapest frames a video has (bench/sampling_modes.py:
~30x faster than the seed's sampler at a keyframe every 8 s, ~50x less CPU). Its real
timestamp comes back with it.
"""

from __future__ import annotations

import bisect
import dataclasses
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidchat.client._decode import DECODER_THREADS, DecodeRequest, DecodeResult
from vidchat.client._plan import plan_keyframes, video_duration
from vidchat.client._pyav import to_rgb_array
from vidchat.errors import VideoDecodeError

__all__ = ["VideoIndex", "decode", "index_video", "open_video"]


@dataclass(frozen=True)
class VideoIndex:
    """The shown frames of a video stream, from its packets alone."""

    pts: array
    """int64 timestamps of the shown frames, in display order."""
    key_pts: array
    """int64 timestamps of the shown keyframes, in display order."""
    time_base: Any
    duration: float

    def time(self, pts: int) -> float:
        """Seconds from the first shown frame."""
        return float((pts - self.pts[0]) * self.time_base)

    def pts_at(self, t: float) -> int:
        """The timestamp ``t`` seconds after the first shown frame (for seeking)."""
        return self.pts[0] + int(t / self.time_base)

    def rank(self, pts: int) -> int:
        """Display index of the shown frame with timestamp ``pts``."""
        return bisect.bisect_left(self.pts, pts)


def open_video(path: str) -> tuple[Any, Any]:
    """The container and its first video stream, or VideoDecodeError saying why not."""
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(
            f"{path} is not a video ffmpeg can read ({_reason(e)}); check that it is a "
            "complete video file.", source=path) from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(
            f"{path} has no video stream (audio only?); pass a file that contains video.",
            source=path)
    return container, container.streams.video[0]


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def index_video(container: Any, stream: Any, path: str) -> VideoIndex:
    """Every shown frame's timestamp and every shown keyframe, from one pass over the packets.

    Frames an MP4 edit list hides (``is_discard``) are not shown, so they are neither
    counted nor chosen; the last frame lasts as long as its packet says (else as the frame
    rate does), as in the uniform path, so both modes see the same length.
    """
    import av

    shown, keys = array("q"), array("q")
    last_ts, last_duration = None, 0  # the packet shown last, and how long it lasts
    packets = 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            packets += 1
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is None or getattr(pkt, "is_discard", False):
                continue
            shown.append(ts)
            if pkt.is_keyframe:
                keys.append(ts)
            if last_ts is None or ts >= last_ts:
                last_ts, last_duration = ts, pkt.duration or 0
    except av.error.FFmpegError as e:
        raise VideoDecodeError(
            f"{path} is damaged ({_reason(e)}); re-download or re-encode it.", source=path
        ) from e
    listed = stream.frames or 0
    if listed and packets < listed:
        raise VideoDecodeError(
            f"{path} is truncated: its index lists {listed} frames but the file holds "
            f"{packets}; copy or download it again.", source=path)
    if not shown:
        raise VideoDecodeError(
            f"{path} has no frames with timestamps; remux it into MP4 (ffmpeg -i IN -c copy "
            "OUT.mp4) and try again.", source=path)
    pts = array("q", sorted(set(shown)))
    tb = stream.time_base
    last = float(last_duration * tb)
    if not last and stream.average_rate:
        last = 1.0 / float(stream.average_rate)
    tail = [float((p - pts[0]) * tb) for p in pts[-2:]]  # all video_duration looks at
    return VideoIndex(pts, array("q", sorted(set(keys))), tb, video_duration(tail, last))


def decode(request: DecodeRequest) -> DecodeResult:
    """The keyframes `plan_keyframes` picks, each decoded from its own packet."""
    import av

    path = request.path
    container, stream = open_video(path)
    with container:
        index = index_video(container, stream, path)
        key_times = [index.time(p) for p in index.key_pts]
        chosen = [index.key_pts[i] for i in plan_keyframes(key_times, index.duration,
                                                            request.spec)] if key_times else []
        if not chosen:
            # No keyframe is shown (an MP4 edit list can hide the only one) or none lies in
            # the window asked for: no frame there is cheaper than another, so take the
            # uniform frames of the window.
            from vidchat.client._decode import decode as decode_frames

            container.close()
            uniform = dataclasses.replace(request.spec, mode="uniform")
            return decode_frames(dataclasses.replace(request, spec=uniform))
        codec = stream.codec_context
        codec.thread_count = DECODER_THREADS
        arrays: list[np.ndarray] = []
        try:
            for key in chosen:
                arrays.append(to_rgb_array(_decode_key(container, stream, index, key, path),
                                           request.spec.size))
        except av.error.FFmpegError as e:
            raise VideoDecodeError(
                f"decoding {path} failed ({_reason(e)}); the file may be damaged: re-encode "
                "it with ffmpeg.", source=path) from e
    return DecodeResult(
        arrays, [index.time(k) for k in chosen], [index.rank(k) for k in chosen],
        index.duration, "pyav",
        {"frames": len(index.pts), "keyframes": len(index.key_pts), "packets_decoded":
         len(chosen)})


def _decode_key(container: Any, stream: Any, index: VideoIndex, key: int, path: str) -> Any:
    """The keyframe shown at ``key``: seek to it, decode its packet alone, drain."""
    for attempt in range(2):
        # A demuxer's seek can land past the keyframe asked for (it then never shows up):
        # the second attempt reads from the very first keyframe, which cannot miss.
        container.seek(key if attempt == 0 else index.key_pts[0], stream=stream,
                       backward=True, any_frame=False)
        packets = container.demux(stream)
        packet = _find_packet(packets, key)
        packets.close()
        if packet is None:
            continue
        codec = stream.codec_context
        frames = [*codec.decode(packet), *codec.decode(None)]
        for frame in frames:
            if frame.pts == key:
                return frame
        break
    raise VideoDecodeError(
        f"could not decode the keyframe at {index.time(key):.3f}s of {path}; the file may be "
        "damaged: re-encode it with ffmpeg.", source=path)


def _find_packet(packets: Iterator[Any], key: int) -> Any | None:
    """The keyframe packet with timestamp ``key``, reading on from the demuxer's position
    (packets are read, not decoded); None once a later keyframe shows it was passed."""
    for packet in packets:
        if packet.size == 0:
            continue
        if packet.pts == key and packet.is_keyframe:
            return packet
        if packet.is_keyframe and packet.pts is not None and packet.pts > key:
            return None
    return None
