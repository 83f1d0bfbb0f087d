"""vidchat.clips: the one ffmpeg clip maker (demo, load generator, the tests' corpus)."""

from __future__ import annotations

import av
import pytest
from _clips import have_ffmpeg

from vidchat.clips import clip_args, lavfi_source, make_clip
from vidchat.errors import VidchatError

needs_ffmpeg = pytest.mark.skipif(not have_ffmpeg(), reason="needs the ffmpeg CLI")


def test_the_source_takes_size_rate_and_duration_before_its_own_options():
    assert (lavfi_source("gradients=speed=0.05", size="320x240", rate=30, seconds=6)
            == "gradients=size=320x240:rate=30:duration=6:speed=0.05")
    # No duration: an endless source, bounded by a frame count instead.
    assert (lavfi_source("color=c=black", size="64x64", rate=1, seconds=None)
            == "color=size=64x64:rate=1:c=black")


def test_arguments_chain_the_filters_and_place_the_encoder_options():
    args = clip_args("out.mp4", source="testsrc", size="320x240", rate=10, seconds=None,
                     frames=5, filters=("hue=h=47", "format=gray"), gop=4,
                     output_args=("-movflags", "+faststart"))
    assert args == ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
                    "-vf", "hue=h=47,format=gray", "-frames:v", "5",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                    "-g", "4", "-movflags", "+faststart", "out.mp4"]
    vp8 = clip_args("out.webm", codec="vp8")
    assert "libvpx" in vp8 and "-preset" not in vp8  # x264's preset means nothing to libvpx
    assert "-g" not in vp8  # no gop: the encoder's own default


def test_wrong_arguments_are_refused_before_ffmpeg_runs():
    with pytest.raises(VidchatError, match="unknown clip codec 'h265'"):
        clip_args("out.mp4", codec="h265")
    with pytest.raises(VidchatError, match="seconds or frames"):
        clip_args("out.mp4", seconds=None)


@needs_ffmpeg
def test_a_clip_has_the_frames_size_rate_and_keyframes_asked_for(tmp_path):
    path = make_clip(tmp_path / "sub" / "k.mp4", size="160x120", rate=6, seconds=None,
                     frames=12, gop=4)
    assert path == tmp_path / "sub" / "k.mp4"
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 12
    assert (frames[0].width, frames[0].height) == (160, 120)
    assert [float(f.time) for f in frames] == pytest.approx([i / 6 for i in range(12)])
    assert [i for i, f in enumerate(frames) if f.key_frame] == [0, 4, 8]
    assert [p.name for p in path.parent.iterdir()] == ["k.mp4"]  # no temporary left behind


@needs_ffmpeg
def test_a_failing_ffmpeg_is_a_vidchat_error_and_leaves_no_file(tmp_path):
    with pytest.raises(VidchatError, match=r"ffmpeg failed \(exit status \d+\) to make x\.mp4: "
                                           ".*nosuchsource"):
        make_clip(tmp_path / "x.mp4", source="nosuchsource", seconds=1)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_ffmpeg_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a directory without ffmpeg in it
    with pytest.raises(VidchatError, match="ffmpeg is not installed: run `make setup`"):
        make_clip(tmp_path / "x.mp4", seconds=1)
    assert list(tmp_path.iterdir()) == []
