"""bench/sampling.py's lower bounds: the `floor-*` methods time the decoding of the default
path's plan (docs/sampling.md weighs the speed and memory targets against them), so they
must decode the very frames `sample_frames` takes, in a child process of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _clips import have_ffmpeg

from vidchat.client import sample_frames
from vidchat.client._decode import DecodeRequest, decode
from vidchat.client._plan import SamplingSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import sampling as sampling_bench  # noqa: E402

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="needs ffmpeg")


def _decode(path, frames):
    return decode(DecodeRequest(str(path), SamplingSpec(frames), backend="pyav", decoders=1))


@pytest.mark.parametrize("method", sorted(sampling_bench.FLOOR_METHODS))
def test_the_decoding_floor_decodes_the_frames_the_default_path_takes(h264_clip, method):
    expected = sample_frames(h264_clip, 6, isolate=False).indices
    result = sampling_bench._run_child(method, h264_clip, 6)
    assert result["indices"] == expected
    stats = result["decode_stats"]
    assert stats["decoders"] == 1  # one decoder: the floors' premise
    # What the default path decodes for these frames (frame threads hold a packet or two
    # more in flight before a frame comes out).
    default = _decode(h264_clip, 6).stats["packets_decoded"]
    assert default > 0
    if method == "floor-1dec":
        assert stats["packets_decoded"] == default
    else:
        assert default <= stats["packets_decoded"] <= default + 4
