"""Frames to JPEG bytes, deterministically, and the strings the API carries them in.

Identical frames must give identical bytes: vLLM's prefix and multimodal caches (and the
per-frame ``uuid``) only hit on identical content. So every frame is encoded with the same
quality, chroma subsampling and Huffman-table choice, and with no metadata at all (no EXIF,
no ICC profile, no comment: nothing that depends on time or on where the image came from).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from vidchat.limits import JPEG_QUALITY

__all__ = ["JPEG_OPTIONS", "encode_frames", "encode_jpeg", "frame_uuid", "to_data_url"]

JPEG_OPTIONS = {
    "quality": JPEG_QUALITY,
    # 4:4:4: chroma at full resolution. 4:2:0 caps the frames at ~28 dB PSNR against the
    # reference on colour edges whatever the quality (docs/sampling.md, the quality sweep).
    "subsampling": 0,
    # Standard Huffman tables: ~45% faster, ~12% bigger (measured at 384px). Pillow's optimize
    # also fails ("Suspension not allowed here") on noise-like frames at 4:4:4 below q95,
    # whose JPEG outgrows the buffer it sizes for it.
    "optimize": False,
    "progressive": False,
}
# A 384x384 frame encodes in 0.3-0.6 ms, so 8 frames take 2.5-5 ms in one thread. Measured
# on the 2-vCPU dev machine a thread pool never paid (8 frames: 2.56 ms serial, 2.75 ms
# pooled; 16: 5.0 vs 5.5): its two vCPUs give about one core of throughput, even to two
# processes. On real multi-core machines the pool spreads long batches, since Pillow releases
# the GIL while libjpeg works; below this many frames it is never worth the hand-offs.
PARALLEL_MIN_FRAMES = 16
UUID_HEX_CHARS = 32  # 128 bits of sha256

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


def encode_jpeg(image: Image.Image) -> bytes:
    """One frame as baseline JPEG bytes; the same pixels always give the same bytes."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    elif image.info:
        # Pillow writes image.info["comment"] into the file (measured, Pillow 13): start from
        # a bare copy so only the pixels and the options below decide the bytes.
        image = image.copy()
        image.info = {}
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **JPEG_OPTIONS)
    return buf.getvalue()


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():  # a forked child needs its own threads
        _pool = ThreadPoolExecutor(
            max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="vidchat-jpeg"
        )
        _pool_pid = os.getpid()
    return _pool


def encode_frames(images: Sequence[Image.Image]) -> list[bytes]:
    """JPEG bytes for each image, in order; in parallel threads when that pays.

    Pillow releases the GIL while libjpeg encodes, so threads use every core.
    """
    if len(images) < PARALLEL_MIN_FRAMES or (os.cpu_count() or 1) < 2:
        return [encode_jpeg(im) for im in images]
    return list(_executor().map(encode_jpeg, images))


def to_data_url(jpeg: bytes) -> str:
    """``data:image/jpeg;base64,...`` for an ``image_url`` content part."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def frame_uuid(jpeg: bytes) -> str:
    """A stable content id for the frame (sha256 of its bytes, 128 bits in hex)."""
    return hashlib.sha256(jpeg).hexdigest()[:UUID_HEX_CHARS]
