"""The decord backend: decord decodes and applies the display matrix; vidchat resizes.

decord hands over each wanted frame in RGB at full resolution (its filter graph converts with
swscale's plain conversion, as the reference does), and `_resize` makes it size x size like
the reference: the same pixels as the PyAV path, up to PIL's rounding between its two passes
on rotated videos (decord rotates before the resize, the PyAV path after it).

Used when asked for (``backend="decord"`` or VIDCHAT_VIDEO_BACKEND=decord). Where decord's
own index cannot be trusted (MP4 edit lists, unordered timestamps) it returns None and the
caller decodes with PyAV instead.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from vidchat.client._decode import DECODER_THREADS, DecodeRequest, DecodeResult
from vidchat.client._plan import plan_samples, video_duration
from vidchat.client._resize import resize_rows
from vidchat.errors import SamplingArgumentError, VideoDecodeError


def decode(request: DecodeRequest) -> DecodeResult | None:
    """Decode with decord, or None when decord's index of this file cannot be trusted."""
    try:
        import decord
    except ImportError as e:
        raise SamplingArgumentError(
            f"backend='decord' was asked for but decord does not import ({e}); "
            "install it (pip install decord) or use backend='pyav'.",
            source=request.path,
        ) from e
    path = request.path
    try:
        # Full resolution: decord's own scaler (swscale bicubic on 4:2:0 YUV) loses ~10 dB
        # PSNR against the reference. decord applies the display matrix itself (0.6.0:
        # identical to `ffmpeg -i`, 90/180/270).
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=DECODER_THREADS)
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
    duration = video_duration(times, float(spans[-1, 1] - spans[-1, 0]))
    plan = plan_samples(times, duration, request.spec)
    arrays = []
    try:
        # One frame at a time (8 whole 1080p frames would be 50 MB); decord reads on from
        # its position when the next index is in the same GOP, and seeks otherwise.
        for i in plan.indices:
            frame = reader.get_batch([i]).asnumpy()[0]
            h, w = frame.shape[:2]
            arrays.append(resize_rows(lambda r0, r1, f=frame: Image.fromarray(f[r0:r1]), w, h,
                                      request.spec.size))
            del frame
    except Exception as e:
        raise _decord_error(e, path) from e
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
