"""Frames to ``size`` x ``size`` RGB, pixel for pixel what the reference pipeline makes.

The reference is what the model sees through the seed guide's pipeline: the frame converted to
RGB at full resolution (swscale's plain YUV->RGB conversion: what OpenCV and PyAV's
``to_ndarray("rgb24")`` give), then resized by the HF image processor, which is PIL's bicubic
resize to ``size`` x ``size``. Doing exactly that here is what keeps the frames at reference
quality: resizing in 4:2:0 YUV with swscale's own bicubic (the earlier path) lost ~10 dB PSNR
to it, on chroma edges mostly (docs/sampling.md).

The full-resolution RGB picture need not be held whole. PIL's resize is separable and each
output row reads a known span of input rows, so a frame can be converted and resized in
horizontal bands of about `BAND_BYTES` (a band's rows, plus the rows its filter reaches into):
a 1080p frame then costs ~1 MiB of RGB at a time instead of 8 MiB. The output is the same
bytes as one resize of the whole picture when the scale height/size is exact in binary (3
divides the height, for size 384: 2160, 1080, 720, 480, 360 ...); otherwise PIL's float
rounding could move a few pixels by one level, so the picture goes through in one band.

    band_plan(height, width, size) ──► [Band(out rows a..b, input rows r0..r1)]  (pure)
    resize_rows(read_rows, width, height, size) ──► size x size x 3 uint8
    to_rgb_array(PyAV frame, size): the bands read from the frame's 4:2:0 planes, converted
        one by one; then the display rotation
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["BAND_BYTES", "Band", "band_plan", "resize_rows", "to_rgb_array"]

RESAMPLE = Image.Resampling.BICUBIC
# PIL's bicubic filter reaches 2 source pixels each side (times the scale when shrinking).
BICUBIC_SUPPORT = 2.0
# RGB(X) bytes converted at once: ~136 rows of 1080p. Smaller bands repeat more of the rows
# their filters share (a 1080p band reads ~12 rows more than it owns: 9% more at this size).
BAND_BYTES = 1 << 20


@dataclass(frozen=True)
class Band:
    out_start: int
    out_stop: int
    """Output rows [out_start, out_stop) come from ..."""
    in_start: int
    in_stop: int
    """... input rows [in_start, in_stop), even-aligned (4:2:0 chroma rows stay whole)."""


def _row_span(y: int, in_size: int, out_size: int) -> tuple[int, int]:
    """The input rows output row ``y`` reads: PIL's ``precompute_coeffs`` (Resample.c)."""
    scale = in_size / out_size
    support = BICUBIC_SUPPORT * max(scale, 1.0)
    centre = (y + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), in_size)
    return lo, hi


def _exact_scale(height: int, size: int) -> bool:
    """Whether height / size is a dyadic rational, so PIL's box arithmetic has no rounding."""
    q = size // math.gcd(height, size)
    return q & (q - 1) == 0


def band_plan(height: int, width: int, size: int, band_bytes: int = BAND_BYTES) -> list[Band]:
    """Cut the ``size`` output rows into bands whose input spans hold about ``band_bytes``
    (one band, the whole picture, when banding could change a pixel)."""
    if not _exact_scale(height, size):
        return [Band(0, size, 0, height)]
    scale = height / size
    rows_in = max(2, band_bytes // max(1, 4 * width))
    step = max(1, math.floor(rows_in / max(scale, 1e-9)))
    bands = []
    for a in range(0, size, step):
        b = min(size, a + step)
        lo, _ = _row_span(a, height, size)
        _, hi = _row_span(b - 1, height, size)
        lo -= lo % 2
        hi = min(height, hi + hi % 2)
        bands.append(Band(a, b, lo, hi))
    return bands


def resize_rows(
    read_rows: Callable[[int, int], Image.Image], width: int, height: int, size: int, *,
    banded: bool = True, band_bytes: int = BAND_BYTES,
) -> np.ndarray:
    """``size`` x ``size`` RGB from the RGB(X) images ``read_rows(r0, r1)`` of rows [r0, r1)
    (called once, for the whole picture, unless ``banded``).

    Each band is resized with PIL's box argument: the box keeps the full picture's scale and
    filter centres, and the band holds every row the filters of its output rows read, so the
    output rows are the ones a resize of the whole picture gives.
    """
    out = np.empty((size, size, 3), dtype=np.uint8)
    bands = band_plan(height, width, size, band_bytes) if banded else [Band(0, size, 0, height)]
    for band in bands:
        image = read_rows(band.in_start, band.in_stop)
        # (row * height) / size: exact for the whole picture's box (0, height) at any scale.
        box = (0.0, band.out_start * height / size - band.in_start, float(width),
               band.out_stop * height / size - band.in_start)  # fmt: skip
        part = image.resize((size, band.out_stop - band.out_start), RESAMPLE, box=box)
        del image
        out[band.out_start : band.out_stop] = np.asarray(part)[..., :3]  # RGB(X) -> RGB
    return out


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


# Pixel formats whose planes can be cut into row bands and converted band by band (swscale
# converts 4:2:0 two rows at a time, so even-aligned bands give the rows a whole-frame
# conversion gives).
_BANDED_FORMATS = ("yuv420p", "yuvj420p")


def to_rgb_array(frame: Any, size: int) -> np.ndarray:
    """``size`` x ``size`` RGB of a decoded frame, as the reference makes it (`_resize`): RGB at
    full resolution by swscale's plain conversion, PIL bicubic; then the display rotation.

    A square target makes rotate-then-resize and resize-then-rotate the same filter on each
    axis; only PIL's 8-bit rounding between its two passes can differ (by one level), so the
    cheap order is used.
    """
    w, h = frame.width, frame.height
    banded = frame.format.name in _BANDED_FORMATS and w % 2 == 0 and h % 2 == 0
    read = _yuv420_rows(frame) if banded else _whole_rows(frame)
    arr = resize_rows(read, w, h, size, banded=banded)
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(arr, turns)) if turns else arr


def _yuv420_rows(frame: Any) -> Callable[[int, int], Image.Image]:
    """Rows [r0, r1) of a 4:2:0 frame in RGB, converted on their own (r0, r1 even)."""
    import av

    w, cw = frame.width, frame.width // 2
    y, u, v = (np.frombuffer(p, np.uint8).reshape(-1, p.line_size) for p in frame.planes[:3])
    fmt, colorspace, color_range = frame.format.name, frame.colorspace, frame.color_range

    def yuv_band(r0: int, r1: int) -> Any:
        band = av.VideoFrame(w, r1 - r0, fmt)
        band.colorspace, band.color_range = colorspace, color_range  # the frame's matrix
        for src, plane, rows, cols in ((y, band.planes[0], slice(r0, r1), w),
                                       (u, band.planes[1], slice(r0 // 2, r1 // 2), cw),
                                       (v, band.planes[2], slice(r0 // 2, r1 // 2), cw)):
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:, :cols] = src[rows, :cols]
        return band

    def read(r0: int, r1: int) -> Image.Image:
        # Each buffer is let go as soon as the next one is made (~0.6 MiB less peak).
        return _rgb_image(yuv_band(r0, r1).reformat(format="rgb24", threads=1), w, r1 - r0)

    return read


def _whole_rows(frame: Any) -> Callable[[int, int], Image.Image]:
    """The whole frame in RGB (any pixel format: swscale's conversion, as the reference's)."""

    def read(r0: int, r1: int) -> Image.Image:
        return _rgb_image(frame.reformat(format="rgb24", threads=1), frame.width, frame.height)

    return read


def _rgb_image(rgb: Any, width: int, height: int) -> Image.Image:
    # An "RGB" image, not a zero-copy "RGBX" view of an rgb0 frame: PIL resamples 3 bands
    # instead of 4 (measured: the copy costs less than the fourth band, ~15% in all).
    plane = rgb.planes[0]
    return Image.frombuffer("RGB", (width, height), plane, "raw", "RGB", plane.line_size, 1)
