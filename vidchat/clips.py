"""Video clips made locally with the ffmpeg CLI from its lavfi test sources.

    make_clip(path, source, size, rate, seconds | frames, filters, gop, codec, preset)
        │   one lavfi source ─► optional filter chain ─► H.264 or VP8 ─► written, then renamed
        ▼
    run_ffmpeg(args)   the one place vidchat runs ffmpeg; its failures become VidchatError

The demo (`vidchat.demo`), the load generator (`vidchat.loadgen.workload`) and the tests'
corpus (`tests/_clips.py`) all make their videos here: no sample files, no network. A clip
is written under a temporary name and renamed once complete, so a file under the final name
is always whole (callers cache clips by name and reuse what exists).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from vidchat.errors import VidchatError

FFMPEG = "ffmpeg"
# Long enough for the largest clip the tests make (2 h at 1 fps, 8K frames) on a busy
# 2-core machine; a hung ffmpeg must not hang a test session or a benchmark.
FFMPEG_TIMEOUT_S = 300.0
# What an ffmpeg failure message keeps of its stderr: the last lines say what went wrong.
STDERR_TAIL_CHARS = 400

# Encoder arguments per codec. yuv420p because libx264 would otherwise keep 4:4:4 from an
# RGB source, which many decoders (and every browser) refuse.
CODECS: dict[str, tuple[str, ...]] = {
    "h264": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    "vp8": ("-c:v", "libvpx", "-deadline", "realtime", "-b:v", "1M"),
}
# veryfast: a test pattern needs no compression effort, and it encodes twice as fast as
# x264's default, medium (a 6 s 1280x720 clip on 2 cores: 2.5 s against 5 s).
DEFAULT_PRESET = "veryfast"


def lavfi_source(source: str, *, size: str, rate: float, seconds: float | None) -> str:
    """The lavfi input spec: ``source`` ("testsrc2", or with options: "color=c=black") given
    a size, a frame rate and, unless ``seconds`` is None (endless), a duration."""
    name, _, own = source.partition("=")
    opts = [f"size={size}", f"rate={rate:g}"]
    if seconds is not None:
        opts.append(f"duration={seconds:g}")
    if own:
        opts.append(own)  # the source's own options after the common ones
    return f"{name}=" + ":".join(opts)


def clip_args(
    out: str | os.PathLike[str],
    *,
    source: str = "testsrc2",
    size: str = "1280x720",
    rate: float = 30,
    seconds: float | None = 6.0,
    frames: int | None = None,
    filters: Sequence[str] = (),
    gop: int | None = None,
    codec: str = "h264",
    preset: str = DEFAULT_PRESET,
    output_args: Sequence[str] = (),
) -> list[str]:
    """The ffmpeg arguments (after the common flags) that :func:`make_clip` runs."""
    if codec not in CODECS:
        raise VidchatError(f"unknown clip codec {codec!r}: use one of {', '.join(CODECS)}")
    if seconds is None and frames is None:
        raise VidchatError("a clip needs a length: give seconds or frames")
    args = ["-f", "lavfi", "-i", lavfi_source(source, size=size, rate=rate, seconds=seconds)]
    if filters:
        args += ["-vf", ",".join(filters)]
    if frames is not None:
        args += ["-frames:v", str(frames)]
    args += CODECS[codec]
    if codec == "h264":
        args += ["-preset", preset]
    if gop is not None:
        args += ["-g", str(gop)]
    return [*args, *output_args, str(out)]


def make_clip(
    path: str | os.PathLike[str],
    *,
    source: str = "testsrc2",
    size: str = "1280x720",
    rate: float = 30,
    seconds: float | None = 6.0,
    frames: int | None = None,
    filters: Sequence[str] = (),
    gop: int | None = None,
    codec: str = "h264",
    preset: str = DEFAULT_PRESET,
    output_args: Sequence[str] = (),
    timeout_s: float = FFMPEG_TIMEOUT_S,
) -> Path:
    """Write a clip of one of ffmpeg's lavfi sources to ``path`` and return it.

    ``source`` is a lavfi source, with its own options if any ("gradients=speed=0.05");
    ``seconds`` bounds the source, ``frames`` the output (give ``seconds=None`` with an
    endless filter chain such as a loop). ``filters`` are applied in order. ``gop`` is the
    keyframe interval in frames (None: the encoder's default). ``output_args`` go before the
    output path (muxer flags such as ``-movflags +faststart``). The container follows the
    suffix of ``path``. Raises VidchatError when ffmpeg is missing, fails or hangs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory (so the rename is atomic) and same suffix (ffmpeg picks the muxer by it).
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    args = clip_args(tmp, source=source, size=size, rate=rate, seconds=seconds, frames=frames,
                     filters=filters, gop=gop, codec=codec, preset=preset,
                     output_args=output_args)
    try:
        run_ffmpeg(args, timeout_s=timeout_s, what=path.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_ffmpeg(args: Sequence[str], *, timeout_s: float = FFMPEG_TIMEOUT_S,
               what: str = "a clip") -> None:
    """Run ``ffmpeg`` quietly with ``args`` (overwriting outputs, never reading stdin)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
    except FileNotFoundError:
        raise VidchatError("ffmpeg is not installed: run `make setup` (it installs it) or "
                           "install your system's ffmpeg package") from None
    except subprocess.TimeoutExpired:
        raise VidchatError(f"ffmpeg took longer than {timeout_s:g} s to make {what}; the "
                           "machine may be overloaded") from None
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
        raise VidchatError(f"ffmpeg failed (exit status {exc.returncode}) to make {what}: "
                           f"{tail or 'no message'}") from None
