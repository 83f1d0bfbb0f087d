"""Decoding: one picklable request in, RGB arrays out, by the backend that suits the file.

    DecodeRequest(path, spec, backend, decoders) ──► decode ──► _pyav.decode   (default)
                                                           ├─► _decord.decode (backend="decord";
                                                           │   files it cannot index go to PyAV)
                                                           ├─► _keyframes.decode
                                                           │   (mode="keyframes")
                                                           └─► _scenes.decode (mode="scenes":
                                                               finds the scenes, then decodes
                                                               as above)

`decode` is top-level and its request picklable, so `_decode_worker` can run it in a child
process that a decoder hang or crash cannot take down with the caller.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidchat.client._plan import SamplingSpec
from vidchat.errors import SamplingArgumentError, VideoDecodeError, VideoError

__all__ = ["AUTO_BACKENDS", "BACKENDS", "BACKEND_ENV", "DECODERS_ENV", "DecodeRequest",
           "DecodeResult", "check_backend", "decode", "decoding_share", "parallel_decoders"]

BACKENDS = ("decord", "pyav")
# backend=None takes the first that is installed. PyAV comes first, against the design card's
# "decord first", because measurement says so (bench/sampling.py, docs/sampling.md: 1080p
# H.264, 20 s, 8 frames, same run): for the same frames and the same pixels decord takes
# 2.5-3.4x the PyAV path's time and ~2x its CPU (it decodes every frame from the keyframe on,
# on one decoder, and hands over whole full-size frames), and more memory; it also
# mis-indexes MP4 edit lists and refuses WebM/MKV without a duration. decord stays available:
# backend="decord" or VIDCHAT_VIDEO_BACKEND=decord.
AUTO_BACKENDS = ("pyav", "decord")
BACKEND_ENV = "VIDCHAT_VIDEO_BACKEND"
# Threads per decoder, PyAV and decord (0: ffmpeg's choice, cores + 1). Each frame thread
# holds its own full-size frames: measured on 2 cores, 1 thread adds ~34 MB at 1080p, auto
# ~51 MB; at 8K decord adds ~95 MB per thread (auto on 16 cores: over 1.5 GB), so a fixed
# count keeps the worker's memory independent of the machine.
DECODER_THREADS = 1
# PyAV decoders running at once on disjoint stretches of the video (`_plan.split_reads`), in
# threads of the decoding process: both cores of a 2-core machine. Each holds its own picture
# pool (~26 MB at 1080p H.264), so more than 2 buys speed only with memory. Calls decoding at
# once share the cores (`decoding_share`). VIDCHAT_DECODERS=N fixes the count; 1 is the
# memory-first choice (docs/sampling.md measures both, and the sharing).


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container started with --cpus=2 on a big host has every core in its affinity)."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)  # fmt: skip
    try:
        with open(cpu_max) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return cores


CORES = usable_cores()
PARALLEL_DECODERS = max(1, min(2, CORES))
DECODERS_ENV = "VIDCHAT_DECODERS"
MAX_DECODERS = 16
# A second decoder pays for opening its own container (a probe that decodes a frame, ~5 ms at
# 1080p) only when it takes over more than ~16 full-HD frames of decoding.
PARALLEL_MIN_PIXELS = 16 * 1920 * 1080


@dataclass(frozen=True)
class DecodeRequest:
    path: str
    spec: SamplingSpec = field(default_factory=SamplingSpec)
    backend: str | None = None
    """"decord", "pyav", or None for the first of `AUTO_BACKENDS` that is installed."""
    decoders: int | None = None
    """How many PyAV decoders this call may run at once: its share of the cores while other
    calls decode too (`decoding_share`); None: `PARALLEL_DECODERS`. VIDCHAT_DECODERS wins."""


@dataclass
class DecodeResult:
    arrays: list[np.ndarray]
    timestamps: list[float]
    indices: list[int]
    duration: float
    backend: str
    stats: dict[str, Any] = field(default_factory=dict)


def check_backend(backend: object) -> None:
    """A backend name the caller passed: known, and installed."""
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


# Calls of this process decoding now (sample_frames in threads, async tasks, batch jobs).
_decoding = 0
_decoding_lock = threading.Lock()


@contextmanager
def decoding_share() -> Iterator[int]:
    """Count one call among those decoding now in this process; yield how many decoders it
    may run: the cores divided among the calls, at least one, at most `PARALLEL_DECODERS`
    (fixed for the call). Under concurrency every core is busy with some call already: a
    second decoder per call would only compete for them, and hold its own pictures (~26 MB
    at 1080p)."""
    global _decoding
    with _decoding_lock:
        _decoding += 1
        share = max(1, min(PARALLEL_DECODERS, CORES // _decoding))
    try:
        yield share
    finally:
        with _decoding_lock:
            _decoding -= 1


def _forget_decodes_in_child() -> None:
    # A process forked while calls decode here must not count them (nor inherit a held lock).
    global _decoding, _decoding_lock
    _decoding, _decoding_lock = 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_decodes_in_child)


def parallel_decoders(share: int | None = None) -> int:
    """How many decoders one call may run at once: VIDCHAT_DECODERS, else ``share`` (the
    call's `decoding_share`), else `PARALLEL_DECODERS`."""
    chosen = os.environ.get(DECODERS_ENV)
    if not chosen:
        return PARALLEL_DECODERS if share is None else share
    if not chosen.isdigit() or not 1 <= int(chosen) <= MAX_DECODERS:
        raise SamplingArgumentError(
            f"{DECODERS_ENV}={chosen!r} is not a decoder count: use a whole number from 1 to "
            f"{MAX_DECODERS}, or unset it for the default ({PARALLEL_DECODERS})."
        )
    return int(chosen)


def decode(request: DecodeRequest) -> DecodeResult:
    """Index the video, plan the frames, decode them at ``size`` x ``size``."""
    try:
        return _decode(request)
    except VideoError as e:
        if e.source is None:
            e.source = request.path
        raise


def _decode(request: DecodeRequest) -> DecodeResult:
    from vidchat.client import _pyav

    # The other modes read packet flags and content first: PyAV only (they end with the
    # uniform path's decode where they can: scene mode's chosen times).
    if request.spec.mode == "keyframes":
        from vidchat.client import _keyframes

        return _keyframes.decode(request)
    if request.spec.mode == "scenes":
        from vidchat.client import _scenes

        return _scenes.decode(request)
    backend = request.backend or _auto_backend(request.path)
    if backend == "decord":
        from vidchat.client import _decord

        try:
            result = _decord.decode(request)
        except VideoDecodeError as decord_error:
            # PyAV's diagnosis is more precise than decord's C++ message, and some valid files
            # only decord refuses: a WebM written to a pipe has no duration ("Failed to
            # measure duration/frame-count due to broken metadata"). PyAV decodes those.
            try:
                return _pyav.decode(request)
            except VideoDecodeError as diagnosis:
                raise diagnosis from decord_error
            except ImportError:
                pass
            raise
        if result is not None:
            return result
    return _pyav.decode(request)


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
