"""bench/sampling.py's lower bounds: the `floor-*` methods time the decoding of the default
path's plan (docs/sampling.md weighs the speed and memory targets against them), so they
must decode the very frames `sample_frames` takes, in a child process of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _clips import have_ffmpeg

from vidchat.client import sample_frames

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import sampling as sampling_bench  # noqa: E402

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="needs ffmpeg")


@pytest.mark.parametrize("method", sorted(sampling_bench.FLOOR_METHODS))
def test_the_decoding_floor_decodes_the_frames_the_default_path_takes(h264_clip, method):
    expected = sample_frames(h264_clip, 6, isolate=False).indices
    result = sampling_bench._run_child(method, h264_clip, 6)
    assert result["indices"] == expected
    assert result["backend"] == "pyav"
    assert result["frames"] == 0, "the floor converts and encodes nothing"
