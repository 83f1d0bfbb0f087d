"""Tiny test clips made with the ffmpeg CLI, cached by name in a directory.

Most clips are 320x240 and carry two things a test can read back after decoding, resizing
and rotating:

- the frame number N as the grey level of the whole picture (``10 + 5 * N``), read by
  :func:`frame_number` from the centre, which no rotation moves;
- a red square in the top-left corner of the stored picture, so a test can tell where the
  top-left corner went after the display rotation was applied (:func:`marker_corner`).

``make_clip(name, directory)`` builds one clip (once: later calls return the cached file).
The clips are made with vidchat's own clip maker (:mod:`vidchat.clips`: a lavfi source, a
filter chain, an encoder); the few that are not a fresh encode (stream copies with a
rotation or an edit list, audio only, cut-off or non-video files) are made here from those.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidchat import clips
from vidchat.clips import run_ffmpeg
from vidchat.errors import VideoDecodeError

WIDTH, HEIGHT = 320, 240
FPS = 24
MARKER = 60  # side of the red square, pixels
GREY_BASE, GREY_STEP = 10, 5  # frame N is grey 10 + 5N: N in 0..48 fits in a byte
MAX_NUMBERED_FRAMES = 49

# The variable-frame-rate clip: 24 frames at 24 fps, then 24 frames at 8 fps (4 s in all).
VFR_FRAMES = 48


def vfr_time(n: int) -> float:
    """Presentation time (s) of frame ``n`` of the ``vfr`` clip."""
    return n / 24 if n < 24 else 1.0 + (n - 24) / 8


def _numbered_clip(out: Path, frames: int, fps: int = FPS, *, filters: tuple[str, ...] = (),
                   **encode: Any) -> None:
    """A numbered clip: ``frames`` frames painted by geq on a black source, then ``filters``;
    ``encode`` goes to vidchat.clips.make_clip (codec, gop, preset, output_args)."""
    if frames > MAX_NUMBERED_FRAMES:
        raise ValueError(f"numbered clips hold at most {MAX_NUMBERED_FRAMES} frames")
    in_marker = f"lt(X,{MARKER})*lt(Y,{MARKER})"
    grey = f"{GREY_BASE}+{GREY_STEP}*N"
    geq = (
        f"geq=r='if({in_marker},255,{grey})'"
        f":g='if({in_marker},0,{grey})':b='if({in_marker},0,{grey})'"
    )
    # The colour source is endless: the frame count bounds the clip.
    clips.make_clip(out, source="color=c=black", size=f"{WIDTH}x{HEIGHT}", rate=fps,
                    seconds=None, frames=frames, filters=("format=rgb24", geq, *filters),
                    **encode)


def _numbered(frames: int, fps: int = FPS, **encode: Any) -> Callable:
    def build(out: Path, directory: Path) -> None:
        _numbered_clip(out, frames, fps, **encode)

    return build


@functools.lru_cache(maxsize=1)
def _ffmpeg_has_display_rotation() -> bool:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-h", "full"], capture_output=True, text=True)
    return "-display_rotation" in done.stdout


def _rotated(degrees: int) -> Callable:
    def build(out: Path, directory: Path) -> None:
        # rotN: a display matrix that turns the picture N degrees counter-clockwise (ffmpeg's
        # -display_rotation, 6.0+). ffmpeg 5.1 lacks that option; its mp4 muxer writes the same
        # matrix for the tag rotate=N (checked against the tkhd matrix and `ffmpeg -i`).
        src = make_clip("cfr", directory)
        if _ffmpeg_has_display_rotation():
            run_ffmpeg(["-display_rotation", str(degrees), "-i", str(src), "-c", "copy",
                        str(out)], what=out.name)
        else:
            run_ffmpeg(["-i", str(src), "-c", "copy", "-metadata:s:v", f"rotate={degrees}",
                        str(out)], what=out.name)

    return build


def _vfr(out: Path, directory: Path) -> None:
    pts = "if(lt(N,24),N/24,1+(N-24)/8)/TB"
    # passthrough: keep the timestamps setpts wrote instead of resampling to a constant rate.
    _numbered_clip(out, VFR_FRAMES, filters=(f"setpts='{pts}'",),
                   output_args=("-fps_mode", "passthrough", "-video_track_timescale", "9600"))


def _edit_list(out: Path, directory: Path) -> None:
    # Stream copy from 0.5 s: the file keeps the whole first GOP, and an edit list tells
    # players to drop the first 12 frames (numbers 0..11); the first frame shown is number 12.
    src = make_clip("cfr", directory)
    run_ffmpeg(["-ss", "0.5", "-i", str(src), "-c", "copy", str(out)], what=out.name)


def _webm(out: Path, directory: Path) -> None:
    # VP8 in WebM: Matroska stores no frame count.
    _numbered_clip(out, 48, codec="vp8", gop=12)


def _colour_720p(out: Path, directory: Path) -> None:
    # testsrc2's saturated colour edges at 1280x720: what a 4:2:0 resize or JPEG smears
    # (~28 dB against the reference) and 4:4:4 keeps. 720 rows make several resize bands.
    clips.make_clip(out, size="1280x720", rate=FPS, seconds=1, gop=12)


def _audio_only(out: Path, directory: Path) -> None:
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
                "-f", "mp4", str(out)], what=out.name)  # fmt: skip


def _truncated(faststart: bool) -> Callable:
    def build(out: Path, directory: Path) -> None:
        # Without faststart the index (moov) is at the end, so half a file has no index at
        # all; with it, the index promises frames whose bytes are gone.
        kind = "faststart" if faststart else "plain"
        src = directory / f".{kind}-{os.getpid()}.tmp.mp4"
        flags = ("-movflags", "+faststart") if faststart else ()
        _numbered_clip(src, 48, output_args=flags)
        data = src.read_bytes()
        out.write_bytes(data[: len(data) // 2])
        src.unlink()

    return build


def _empty(out: Path, directory: Path) -> None:
    out.write_bytes(b"")


def _text(out: Path, directory: Path) -> None:
    out.write_text("this is not a video\n" * 50)


CLIPS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "cfr": (".mp4", _numbered(48)),
    "vfr": (".mp4", _vfr),
    "rot90": (".mp4", _rotated(90)),
    "rot180": (".mp4", _rotated(180)),
    "rot270": (".mp4", _rotated(270)),
    "one_frame": (".mp4", _numbered(1)),
    "three_frames": (".mp4", _numbered(3, fps=2)),
    "edit_list": (".mp4", _edit_list),
    "mkv": (".mkv", _numbered(48)),
    "webm": (".webm", _webm),
    "long_gop": (".mp4", _numbered(48, gop=48, output_args=("-keyint_min", "48"))),
    "short_gop": (".mp4", _numbered(48, gop=6, output_args=("-keyint_min", "6"))),
    "colour_720p": (".mp4", _colour_720p),
    "audio_only": (".mp4", _audio_only),
    "truncated": (".mp4", _truncated(faststart=False)),
    "truncated_faststart": (".mp4", _truncated(faststart=True)),
    "empty": (".mp4", _empty),
    "text": (".mp4", _text),
}


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def _build_atomic(out: Path, build: Callable[[Path, Path], None], directory: Path) -> Path:
    if out.exists():
        return out
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        build(tmp, directory)
        os.replace(tmp, out)  # a half-written clip never lands under the cached name
    finally:
        tmp.unlink(missing_ok=True)
    return out


def make_clip(name: str, directory: str | os.PathLike[str]) -> Path:
    """The path of clip ``name`` in ``directory``, made with ffmpeg the first time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix, build = CLIPS[name]
    return _build_atomic(directory / f"{name}{suffix}", build, directory)


def make_hd_clip(
    directory: str | os.PathLike[str],
    *,
    seconds: float = 20,
    fps: int = 30,
    gop: int = 60,
    size: str = "1920x1080",
) -> Path:
    """A moving test pattern (H.264, yuv420p) with a keyframe every ``gop`` frames."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"hd_{size}_{seconds:g}s_{fps}fps_g{gop}.mp4"

    def build(tmp: Path, _: Path) -> None:
        # No scene-cut keyframes either: exactly one keyframe per gop frames.
        clips.make_clip(tmp, size=size, rate=fps, seconds=seconds, gop=gop,
                        output_args=("-keyint_min", str(gop), "-sc_threshold", "0"))

    return _build_atomic(out, build, directory)


# The scene clip of the tests: seven solid-colour scenes, two of them shorter than the gap
# between 8 uniform frames (33.4 s / 8 = 4.2 s), so uniform sampling misses them.
SEVEN_SCENES: tuple[tuple[str, float], ...] = (
    ("color=c=red", 8), ("color=c=lime", 0.6), ("color=c=blue", 5), ("color=c=yellow", 0.8),
    ("color=c=magenta", 12), ("color=c=cyan", 1.0), ("color=c=white", 6),
)
SCENE_COLOURS = {"red": (255, 0, 0), "lime": (0, 255, 0), "blue": (0, 0, 255),
                 "yellow": (255, 255, 0), "magenta": (255, 0, 255), "cyan": (0, 255, 255),
                 "white": (255, 255, 255)}


def make_scene_clip(
    directory: str | os.PathLike[str],
    scenes: tuple[tuple[str, float], ...] = SEVEN_SCENES,
    *,
    size: str = "160x120",
    fps: int = 25,
    gop: int = 250,
    name: str = "seven_scenes",
) -> Path:
    """Scenes of lavfi sources (``(source, seconds)`` each) cut together, H.264 with a
    keyframe every ``gop`` frames and none at the cuts (no scene-cut keyframes: the cuts
    must be found in the pictures, not in the keyframe flags)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}_{size}_{fps}fps_g{gop}.mp4"

    def build(tmp: Path, _: Path) -> None:
        # trim, not the sources' duration option: some sources (life, cellauto) lack it.
        graph = "".join(
            f"{clips.lavfi_source(source, size=size, rate=fps, seconds=None)},"
            f"trim=duration={seconds:g},format=yuv420p,setsar=1[s{i}];"
            for i, (source, seconds) in enumerate(scenes))
        graph += "".join(f"[s{i}]" for i in range(len(scenes))) + \
            f"concat=n={len(scenes)}:v=1:a=0"
        run_ffmpeg(["-f", "lavfi", "-i", graph, *clips.CODECS["h264"], "-preset",
                    clips.DEFAULT_PRESET, "-g", str(gop), "-keyint_min", str(gop),
                    "-sc_threshold", "0", str(tmp)], what=out.name)

    return _build_atomic(out, build, directory)


def scene_bounds(scenes: tuple[tuple[str, float], ...] = SEVEN_SCENES) -> list[float]:
    """Where each scene of a scene clip starts, and where the last one ends (s)."""
    bounds = [0.0]
    for _, seconds in scenes:
        bounds.append(bounds[-1] + seconds)
    return bounds


def frame_number(image: Image.Image) -> int:
    """The frame number a numbered clip painted into ``image`` (read from its centre)."""
    arr = np.asarray(image.convert("L"), dtype=np.float64)
    h, w = arr.shape
    centre = arr[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    return int(round((float(centre.mean()) - GREY_BASE) / GREY_STEP))


def marker_corner(image: Image.Image) -> str:
    """Which corner the red marker sits in: "top-left", "top-right", ... of ``image``."""
    arr = np.asarray(image.convert("RGB"), dtype=np.int32)
    redness = arr[..., 0] - (arr[..., 1] + arr[..., 2]) // 2
    h, w = redness.shape
    quads = {
        "top-left": redness[: h // 2, : w // 2],
        "top-right": redness[: h // 2, w // 2 :],
        "bottom-left": redness[h // 2 :, : w // 2],
        "bottom-right": redness[h // 2 :, w // 2 :],
    }
    return max(quads, key=lambda k: float(quads[k].mean()))


# ----------------------------------------------------------------------------------------------
# More clips for tests/test_bad_inputs.py

UHD_WIDTH, UHD_HEIGHT = 7680, 4320
UHD_FRAMES = 8  # 1 s at 8 fps
LONG_FRAMES = 7200  # 2 hours at 1 fps
LONG_SIZE = 64
# ultrafast: an 8K frame or 7200 small ones encode in about a second.
FAST_PRESET = "ultrafast"


def _uhd_8k(out: Path, directory: Path) -> None:
    # The numbered picture scaled up with nearest neighbour, so frame_number and
    # marker_corner still read it: 8 frames of 7680x4320, ~1 MB.
    _numbered_clip(out, UHD_FRAMES, UHD_FRAMES, preset=FAST_PRESET,
                   filters=(f"scale={UHD_WIDTH}:{UHD_HEIGHT}:flags=neighbor",))


def long_number(n: int) -> int:
    """What :func:`frame_number` reads from frame ``n`` of the ``long_2h`` clip."""
    return n % MAX_NUMBERED_FRAMES


def _long_2h(out: Path, directory: Path) -> None:
    # 2 hours, 64x64 at 1 fps, one keyframe (a GOP as long as the video; ultrafast has no
    # scene cuts). geq paints the first 49 frames only, the loop filter repeats them: frame n
    # reads as n % 49 (geq on all 7200 frames takes ~3 s more).
    grey = f"{GREY_BASE}+{GREY_STEP}*N"
    clips.make_clip(
        out, source="color=c=black", size=f"{LONG_SIZE}x{LONG_SIZE}", rate=1, seconds=None,
        frames=LONG_FRAMES, gop=LONG_FRAMES, preset=FAST_PRESET,
        filters=("format=rgb24", f"geq=r='{grey}':g='{grey}':b='{grey}'",
                 f"loop=loop=-1:size={MAX_NUMBERED_FRAMES}:start=0", "setpts=N/FRAME_RATE/TB"),
    )


def _live(fmt: str, **encode: Any) -> Callable:
    def build(out: Path, directory: Path) -> None:
        # Written as a live stream (Matroska's -live 1, what a recorder piping its output
        # does): no duration, no frame count, no Cues, so nothing to seek by.
        _numbered_clip(out, 48, output_args=("-f", fmt, "-live", "1"), **encode)

    return build


CLIPS.update(
    {
        "uhd_8k": (".mp4", _uhd_8k),
        "long_2h": (".mp4", _long_2h),
        "webm_live": (".webm", _live("webm", codec="vp8", gop=12)),
        "mkv_live": (".mkv", _live("matroska")),
    }
)


# Files that are not (whole) videos, as (clip name for make_clip, error, words of its message):
# every sampling mode and backend must refuse them the same way.
NOT_VIDEOS = [
    ("empty", VideoDecodeError, "empty"),
    ("text", VideoDecodeError, "video"),
    ("audio_only", VideoDecodeError, "no video stream"),
    ("truncated", VideoDecodeError, "complete video file"),
    ("truncated_faststart", VideoDecodeError, "truncated"),
]
