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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["BAND_BYTES", "Band", "band_plan", "resize_rows"]

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

