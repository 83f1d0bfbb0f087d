"""Fidelity of the frames a sampler sends, against the reference pipeline's pixels.

The reference is what the model sees through the seed guide's pipeline: the frame decoded to
RGB at full resolution (PyAV's ``to_ndarray("rgb24")``: swscale's plain conversion, the same
bytes OpenCV gives), then resized to 384x384 by PIL's bicubic filter, as the HF image
processor does with the seed's PIL frames. It is computed here from PyAV and PIL directly,
not from vidchat's code.

    reference_frames(path, indices) ─► {index: 384x384x3 uint8}   (one pass over the file)
    psnr(jpeg, reference)              8-bit RGB PSNR of a decoded JPEG against it
    quality_sweep(references)          JPEG quality x chroma subsampling: PSNR, bytes
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

SIZE = 384
SWEEP_QUALITIES = (90, 92, 93, 94, 95)
SUBSAMPLING = {"4:2:0": 2, "4:4:4": 0}


def reference_frames(path: str, indices: Iterable[int]) -> tuple[dict, dict]:
    """The reference pixels of the frames ``indices`` (display order) of ``path``, and what
    the sampler before issue 12 made of them (swscale bicubic from 4:2:0 YUV, the frame's
    JPEG at q90 4:2:0): one decode of the file from its start to the last index."""
    import av

    wanted = set(indices)
    refs: dict[int, np.ndarray] = {}
    before: dict[int, bytes] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(_display_order(container, stream)):
            if i in wanted:
                rgb = Image.fromarray(frame.to_ndarray(format="rgb24"))
                refs[i] = np.asarray(rgb.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
                old = frame.reformat(width=SIZE, height=SIZE, format="rgb24",
                                     interpolation="BICUBIC").to_image()
                before[i] = _jpeg(old, 90, 2)
            if i >= max(wanted):
                break
    missing = wanted - set(refs)
    if missing:
        raise RuntimeError(f"{path}: frames {sorted(missing)[:5]} not found")
    return refs, before


def _display_order(container, stream):  # type: ignore[no-untyped-def]
    """Decoded frames in display order (the decoder outputs them so for these clips: checked
    by their timestamps rising)."""
    last = None
    for frame in container.decode(stream):
        if last is not None and frame.pts is not None and frame.pts <= last:
            raise RuntimeError("frames out of display order; the reference needs a re-sort")
        last = frame.pts
        yield frame


def _jpeg(image: Image.Image, quality: int, subsampling: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def psnr(jpeg: bytes, reference: np.ndarray) -> float:
    """8-bit RGB PSNR (dB) of the decoded JPEG against the reference pixels."""
    got = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    if got.shape != reference.shape:
        raise ValueError(f"frame is {got.shape}, the reference {reference.shape}")
    mse = float(np.mean((got - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def fidelity(jpegs: Sequence[bytes], indices: Sequence[int], refs: dict) -> dict:
    """Mean and worst PSNR over the frames, and their mean size."""
    values = [psnr(j, refs[i]) for j, i in zip(jpegs, indices, strict=True)]
    return {"psnr_db": float(np.mean(values)), "psnr_min_db": float(min(values)),
            "bytes_per_frame": float(np.mean([len(j) for j in jpegs]))}  # fmt: skip


def quality_sweep(refs: dict) -> list[dict]:
    """PSNR and bytes of the reference pixels themselves through JPEG, per quality and chroma
    subsampling: what the encoder alone costs (the default path's pixels are the reference's)."""
    rows = []
    for name, sub in SUBSAMPLING.items():
        for q in SWEEP_QUALITIES:
            jpegs = [_jpeg(Image.fromarray(refs[i]), q, sub) for i in sorted(refs)]
            rows.append({"subsampling": name, "quality": q,
                         **fidelity(jpegs, sorted(refs), refs)})  # fmt: skip
    return rows
