"""`sample_frames`: frames from a video, sized and oriented the way the model wants them.

    source ──► _source.resolve_source ──► local file (http(s) downloaded safely)
    arguments ──► _plan.SamplingSpec (checked once)
                           └──► _decode.decode(DecodeRequest), in a worker process
                                (_decode_worker) unless isolate=False ──► Frames

What is sampled is decided by the pure planner in `_plan` (uniform in time, from the stream's
own timestamps); how it is decoded by the backends `_pyav` (default) and `_decord`. The other
modes: "keyframes" (`_keyframes`: the keyframes nearest the uniform targets) and "scenes"
(`_scenes`: a frame of each scene change, filled uniformly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image

from vidchat.client._decode import DecodeRequest, check_backend, decode, decoding_share
from vidchat.client._plan import SamplingSpec
from vidchat.client._remote import FetchLimits
from vidchat.client._source import resolve_source
from vidchat.errors import VideoError
from vidchat.limits import DEFAULT_FRAMES, FRAME_SIZE

__all__ = ["Frames", "sample_frames"]


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
    scenes: list[float] | None = None
    """With ``mode="scenes"``: where each scene found in the window starts (s), the first
    at the window's start; None in the other modes."""

    def __len__(self) -> int:
        return len(self.images)


def sample_frames(
    source: str | os.PathLike[str],
    num_frames: int = DEFAULT_FRAMES,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int = FRAME_SIZE,
    backend: str | None = None,
    mode: str = "uniform",
    isolate: bool = True,
    timeout: float | None = None,
    fetch_limits: FetchLimits | None = None,
) -> Frames:
    """Sample ``num_frames`` frames from a video, uniformly in time (or as ``mode`` says).

    Args:
        source: path of the video (str or Path), or an http(s) URL (downloaded first within
            ``fetch_limits``: size cap, timeouts, no private addresses by default).
        num_frames: how many frames at most; fewer if the window holds fewer frames.
        fps: sample at this rate instead, still at most ``num_frames`` frames.
        start, end: the window in seconds (default: the whole video; ``end`` is clamped).
        size: frames are resized to ``size`` x ``size`` (SigLIP's 384).
        backend: "pyav", "decord", or None (PyAV; decord if PyAV is missing).
        mode: "uniform" (the default: the frames at the centres of equal segments of the
            window), "keyframes" (the keyframe nearest each of those centres, each taken
            once: decodes only keyframes, so it is the fastest, and may give fewer frames)
            or "scenes" (a frame of every scene change, at most ``num_frames``, the rest
            filled uniformly; it decodes the whole window once to find the scenes). The
            two other modes find their frames with PyAV.
        isolate: decode in a worker process (default), so a decoder hang or crash raises
            VideoDecodeError instead of taking the caller down; False decodes in-process.
        timeout: seconds the worker may take (default ``_decode_worker.DECODE_TIMEOUT_S``).

    Raises:
        VideoNotFoundError, VideoDecodeError, RemoteVideoError, SamplingArgumentError:
        all VidchatError subclasses.
    """
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
    try:
        spec = SamplingSpec(num_frames, fps, start, end, size, mode)
        check_backend(backend)
        with resolve_source(source, fetch_limits) as path, decoding_share() as decoders:
            request = DecodeRequest(path, spec, backend, decoders)
            if isolate:
                from vidchat.client._decode_worker import run_isolated

                result = run_isolated(request, timeout=timeout)
            else:
                result = decode(request)
    except VideoError as e:
        if e.source is None:
            e.source = label
        raise
    images = [Image.fromarray(a) for a in result.arrays]
    return Frames(images, result.timestamps, result.indices, label, result.backend,
                  result.duration, result.stats.get("scene_starts"))
