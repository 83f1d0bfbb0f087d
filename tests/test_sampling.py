"""Frame sampling and JPEG encoding, on clips made with ffmpeg (tests/_clips.py).

The numbered clips paint frame N with grey level 10 + 5N and a red square in the stored
picture's top-left corner, so each test checks *which* frame came back and *how* it is
oriented, not only how many.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _clips import (
    FPS,
    NOT_VIDEOS,
    VFR_FRAMES,
    frame_number,
    have_ffmpeg,
    make_clip,
    marker_corner,
    vfr_time,
)
from PIL import Image

from vidchat.client import _decode, _decode_worker, _pyav, _sampling, encode_video
from vidchat.client._decode import DecodeRequest, decode, decoding_share, parallel_decoders
from vidchat.client._encoding import encode_frames, encode_jpeg, frame_uuid, to_data_url
from vidchat.client._plan import SamplingSpec, frame_at, plan_reads, sample_times, split_reads
from vidchat.client._plan import plan_samples as _plan_samples
from vidchat.client._resize import band_plan, resize_rows, to_rgb_array
from vidchat.client._sampling import sample_frames
from vidchat.errors import (
    RemoteVideoError,
    SamplingArgumentError,
    VidchatError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)

HAVE_DECORD = importlib.util.find_spec("decord") is not None
BACKENDS = [
    pytest.param("decord", marks=pytest.mark.skipif(not HAVE_DECORD, reason="no decord")),
    "pyav",
]
needs_ffmpeg = pytest.mark.skipif(not have_ffmpeg(), reason="needs the ffmpeg CLI")
CFR_TIMES = [i / FPS for i in range(48)]


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory):
    if not have_ffmpeg():
        pytest.skip("needs the ffmpeg CLI")
    # VIDCHAT_TEST_CLIPS keeps the clips between runs (they are cached by name).
    directory = os.environ.get("VIDCHAT_TEST_CLIPS") or tmp_path_factory.mktemp("clips")
    return lambda name: make_clip(name, directory)


def sample(path, *args, **kw):
    kw.setdefault("isolate", False)  # the worker has tests of its own below
    return sample_frames(path, *args, **kw)


# ---------------------------------------------------------------------------- the plan (pure)


def plan_samples(times, duration, num_frames=8, **kw):
    """The planner on a spec made of these arguments (checked as the spec is made)."""
    return _plan_samples(times, duration, SamplingSpec(num_frames, **kw))


def test_sample_times_are_segment_centres():
    assert sample_times(2.0, SamplingSpec(4)) == [0.25, 0.75, 1.25, 1.75]
    assert sample_times(10.0, SamplingSpec(2, start=2, end=6)) == [3.0, 5.0]
    assert sample_times(10.0, SamplingSpec(1, start=4)) == [7.0]
    assert sample_times(2.0, SamplingSpec(2, end=99)) == [0.5, 1.5]  # end is clamped to the video


def test_sample_times_fps_mode_is_capped_at_num_frames():
    assert sample_times(10.0, SamplingSpec(8, fps=0.5)) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert len(sample_times(10.0, SamplingSpec(8, fps=30))) == 8
    assert sample_times(0.2, SamplingSpec(8, fps=1)) == [0.1]  # at least one frame


def test_frame_at_picks_the_frame_on_screen():
    times = [0.0, 0.1, 0.5, 2.0]
    assert [frame_at(times, t) for t in (0.0, 0.09, 0.1, 0.49, 1.9, 2.0, 9.0)] == [
        0, 0, 1, 1, 2, 3, 3,
    ]  # fmt: skip
    assert frame_at(times, -1.0) == 0


def test_plan_samples_constant_rate():
    plan = plan_samples(CFR_TIMES, 2.0, 8)
    assert plan.indices == (3, 9, 15, 21, 27, 33, 39, 45)
    assert plan.timestamps == pytest.approx([i / 24 for i in plan.indices])


def test_plan_samples_variable_rate_follows_timestamps():
    times = [vfr_time(n) for n in range(VFR_FRAMES)]
    plan = plan_samples(times, 4.0, 4)
    # centres 0.5, 1.5, 2.5, 3.5 s: frame 12 (0.5 s), then 24 + 8*(t-1) for the 8 fps part
    assert plan.indices == (12, 28, 36, 44)
    assert plan.timestamps == pytest.approx([0.5, 1.5, 2.5, 3.5])


def test_plan_samples_fewer_frames_than_asked_gives_each_once():
    assert plan_samples([0.0, 0.5, 1.0], 1.5, 8).indices == (0, 1, 2)
    assert plan_samples([0.0], 0.04, 8).indices == (0,)
    # a slide show: 3 frames held 4 s each, 8 targets -> 3 distinct frames
    assert plan_samples([0.0, 4.0, 8.0], 12.0, 8).indices == (0, 1, 2)


def test_plan_samples_window_and_dedup_on_long_held_frames():
    plan = plan_samples(CFR_TIMES, 2.0, 4, start=0.5, end=1.5)
    assert plan.indices == (15, 21, 27, 33)
    assert all(0.5 <= t < 1.5 for t in plan.timestamps)
    # 100 frames: 99 at 30 fps then one held for 10 s; 8 targets over 13.3 s, no duplicates
    times = [i / 30 for i in range(99)] + [99 / 30]
    plan = plan_samples(times, 99 / 30 + 10, 8)
    assert len(plan.indices) == len(set(plan.indices)) < 8
    assert plan.indices[-1] == 99


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"num_frames": -3},
        {"num_frames": 2.5},
        {"num_frames": True},
        {"fps": 0},
        {"fps": float("nan")},
        {"start": -1},
        {"start": 1.0, "end": 1.0},
        {"start": 2.0},  # at the end of a 2 s video
        {"end": 0},
    ],
)
def test_plan_rejects_bad_arguments(kwargs):
    with pytest.raises(SamplingArgumentError) as info:
        plan_samples(CFR_TIMES, 2.0, **{"num_frames": 8, **kwargs})
    assert isinstance(info.value, VideoError) and isinstance(info.value, ValueError)
    assert info.value.args[0].endswith(".")  # one sentence, saying what to do


def test_plan_reads_seeks_on_short_gops_and_streams_through_long_ones():
    wanted = [37, 112, 187, 262, 337, 412, 487, 562]  # 8 of 600 frames
    short = plan_reads(wanted, range(0, 600, 60), seek_cost=8)
    assert short.seeks == (True,) * 8
    assert short.cost == sum(w % 60 + 1 + 8 for w in wanted) < short.sequential_cost
    long_ = plan_reads(wanted, [0, 240, 480], seek_cost=8)
    # 262 and 487 sit just after keyframes 240 and 480: jump there; elsewhere read on
    assert long_.seeks == (True, False, False, True, False, False, True, False)
    one_gop = plan_reads(wanted, [0], seek_cost=8)
    assert one_gop.seeks == (True,) + (False,) * 7
    assert one_gop.cost == 562 + 1 + 8


def test_split_reads_balances_planned_cost_and_cuts_only_where_the_plan_seeks():
    wanted = [37, 112, 187, 262, 337, 412, 487, 562]
    short = plan_reads(wanted, range(0, 600, 60))
    assert short.costs == (46, 61, 16, 31, 46, 61, 16, 31) and sum(short.costs) == short.cost
    assert split_reads(short, 2) == [range(0, 4), range(4, 8)]  # 154 frames each
    assert split_reads(short, 1) == [range(0, 8)]
    # keyframes at 0, 240, 480: a decoder reads on from 37 to 187, from 262 to 412 ...
    long_ = plan_reads(wanted, [0, 240, 480])
    assert split_reads(long_, 2) == [range(0, 3), range(3, 8)]  # 196 and 272: the best cut
    assert split_reads(long_, 5) == [range(0, 3), range(3, 6), range(6, 8)]  # no more cuts
    assert split_reads(plan_reads(wanted, [0]), 2) == [range(0, 8)]  # one pass: one decoder
    assert split_reads(plan_reads([], [0]), 2) == []


def test_decoder_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VIDCHAT_DECODERS", "3")
    assert parallel_decoders() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("VIDCHAT_DECODERS", bad)
        with pytest.raises(SamplingArgumentError, match=f"VIDCHAT_DECODERS='{bad}'.*1 to"):
            parallel_decoders()


def test_calls_decoding_at_once_share_the_cores(monkeypatch):
    monkeypatch.delenv("VIDCHAT_DECODERS", raising=False)
    monkeypatch.setattr(_decode, "PARALLEL_DECODERS", 2)
    monkeypatch.setattr(_decode, "CORES", 2)
    with decoding_share() as first, decoding_share() as second, decoding_share() as third:
        assert (first, second, third) == (2, 1, 1)
    with pytest.raises(RuntimeError), decoding_share():
        raise RuntimeError("a failed decode is counted out too")
    with decoding_share() as alone:
        assert alone == 2
    monkeypatch.setattr(_decode, "CORES", 4)
    with decoding_share() as first, decoding_share() as second, decoding_share() as third:
        assert (first, second, third) == (2, 2, 1)
    assert parallel_decoders(1) == 1 and parallel_decoders() == 2
    monkeypatch.setenv("VIDCHAT_DECODERS", "2")  # the caller's explicit count wins
    assert parallel_decoders(1) == 2


def test_cores_are_the_affinity_capped_by_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for quota, cores in (("max 100000", affinity), ("50000 100000", 1),
                         ("150000 100000", min(affinity, 2)), ("not a quota", affinity)):
        cpu_max.write_text(quota + "\n")
        assert _decode.usable_cores(str(cpu_max)) == cores
    assert _decode.usable_cores(str(tmp_path / "missing")) == affinity


@needs_ffmpeg
def test_a_call_started_while_another_decodes_runs_one_decoder(clips, monkeypatch):
    monkeypatch.delenv("VIDCHAT_DECODERS", raising=False)
    monkeypatch.setattr(_decode, "PARALLEL_DECODERS", 2)
    monkeypatch.setattr(_decode, "CORES", 2)
    monkeypatch.setattr(_pyav, "PARALLEL_MIN_PIXELS", 0)  # tiny frames: split when allowed
    both_in = threading.Barrier(2, timeout=30)
    used: list[int] = []
    real_decode = _sampling.decode

    def decode_when_both_are_in(request):
        both_in.wait()  # each call took its share before it got here: both counted
        result = real_decode(request)
        used.append(result.stats["decoders"])
        return result

    monkeypatch.setattr(_sampling, "decode", decode_when_both_are_in)
    path = str(clips("short_gop"))
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(sample_frames, path, 3, backend="pyav", isolate=False)
                 for _ in range(2)]
        assert [len(c.result(timeout=60)) for c in calls] == [3, 3]
    # The first call in had both cores to itself; the second, counted while it ran, one.
    assert sorted(used) == [1, 2]


# ------------------------------------------------------------------------ pixels and JPEG


@pytest.mark.parametrize(("width", "height"), [(300, 540), (200, 96), (250, 562)])
def test_resizing_in_bands_gives_the_bytes_of_one_resize(width, height):
    image = Image.fromarray(np.random.default_rng(height).integers(0, 256, (height, width, 3),
                                                                   dtype=np.uint8))
    whole = np.asarray(image.resize((384, 384), Image.Resampling.BICUBIC))
    bands = band_plan(height, width, 384, band_bytes=8192)
    got = resize_rows(lambda r0, r1: image.crop((0, r0, width, r1)), width, height, 384,
                      band_bytes=8192)
    assert np.array_equal(got, whole)
    # 540 / 384 and 96 / 384 are exact in binary: banded; 562 / 384 is not: one band
    assert (len(bands) > 1) == (height != 562)
    assert all(b.in_start % 2 == 0 and b.in_stop - b.in_start <= height for b in bands)


def _reference(path, indices, size=384):
    """The reference pixels: the frame decoded to RGB at full resolution (PyAV's plain
    conversion, the bytes OpenCV gives the seed too), resized by PIL's bicubic filter (the HF
    image processor)."""
    import av

    with av.open(str(path)) as container:
        shown = sorted(container.decode(video=0), key=lambda f: f.pts)
        return [np.asarray(Image.fromarray(shown[i].to_ndarray(format="rgb24")).resize(
            (size, size), Image.Resampling.BICUBIC)) for i in indices]  # fmt: skip


def _psnr(jpeg: bytes, reference: np.ndarray) -> float:
    got = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    mse = float(np.mean((got - reference) ** 2))
    return 10 * np.log10(255**2 / mse)


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_sent_are_the_reference_pixels_within_the_psnr_floor(clips, backend):
    from PIL import JpegImagePlugin

    path = clips("colour_720p")
    frames = sample(path, 8, backend=backend)
    references = _reference(path, frames.indices)
    for image, reference in zip(frames.images, references, strict=True):
        assert np.array_equal(np.asarray(image), reference)  # byte for byte, before the JPEG
    jpegs = [f.jpeg for f in encode_video(frames).frames]
    assert all(JpegImagePlugin.get_sampling(Image.open(io.BytesIO(j))) == 0 for j in jpegs)
    psnr = [_psnr(j, r) for j, r in zip(jpegs, references, strict=True)]
    assert np.mean(psnr) >= 40 and min(psnr) >= 39
    # The floor has teeth: the same pixels at 4:2:0 (the JPEG sent before) fall far below it.
    buf = io.BytesIO()
    Image.fromarray(references[0]).save(buf, format="JPEG", quality=94, subsampling=2)
    assert _psnr(buf.getvalue(), references[0]) < 35


@needs_ffmpeg
def test_two_decoders_take_the_frames_one_takes(clips, monkeypatch):
    monkeypatch.setattr(_pyav, "PARALLEL_MIN_PIXELS", 0)  # tiny frames: force the split
    path = str(clips("short_gop"))
    results = {}
    for n in ("1", "2"):
        monkeypatch.setenv("VIDCHAT_DECODERS", n)
        # 3 frames, each worth a seek (keyframe every 6 frames): stretches to split
        results[n] = decode(DecodeRequest(path, SamplingSpec(3), backend="pyav"))
    one, two = results["1"], results["2"]
    assert (one.stats["decoders"], two.stats["decoders"]) == (1, 2)
    assert two.indices == one.indices == [8, 24, 40]
    assert two.timestamps == one.timestamps
    assert all(np.array_equal(a, b) for a, b in zip(one.arrays, two.arrays, strict=True))
    assert [frame_number(Image.fromarray(a)) for a in two.arrays] == two.indices
    assert two.stats["seeks"] == one.stats["seeks"] == 3


# ------------------------------------------------------------------------------- decoding


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_rate_frames_are_the_planned_ones(clips, backend):
    frames = sample(clips("cfr"), 8, backend=backend)
    assert frames.backend == backend
    assert len(frames) == 8
    assert frames.indices == [3, 9, 15, 21, 27, 33, 39, 45]
    assert frames.timestamps == pytest.approx([i / 24 for i in frames.indices], abs=1e-3)
    assert [frame_number(im) for im in frames.images] == frames.indices
    assert all(im.mode == "RGB" and im.size == (384, 384) for im in frames.images)
    assert frames.duration == pytest.approx(2.0, abs=1e-3)


@needs_ffmpeg
def test_default_backend_is_pyav_and_the_environment_can_select_decord(clips, monkeypatch):
    frames = sample(clips("cfr"), 2)
    assert frames.backend == "pyav"
    assert [frame_number(im) for im in frames.images] == frames.indices == [12, 36]
    monkeypatch.setenv("VIDCHAT_VIDEO_BACKEND", "decord")
    frames = sample(clips("cfr"), 2)
    assert frames.backend == "decord"
    assert [frame_number(im) for im in frames.images] == frames.indices == [12, 36]


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_rate_timestamps_match_the_stream(clips, backend):
    frames = sample(clips("vfr"), 8, backend=backend)
    times = [vfr_time(n) for n in range(VFR_FRAMES)]
    assert frames.duration == pytest.approx(4.0, abs=1e-3)
    numbers = [frame_number(im) for im in frames.images]
    assert numbers == frames.indices
    assert frames.timestamps == pytest.approx([vfr_time(n) for n in numbers], abs=1e-3)
    # each one is the frame on screen at the centre of its half-second segment
    assert frames.indices == [frame_at(times, 0.25 + 0.5 * k) for k in range(8)]
    assert frames.indices == [6, 18, 26, 30, 34, 38, 42, 46]


@needs_ffmpeg
@pytest.mark.parametrize("clip", ["cfr", "vfr", "mkv", "webm", "rot90", "three_frames"])
def test_both_backends_take_the_same_frames(clips, clip):
    if not HAVE_DECORD:
        pytest.skip("no decord")
    a = sample(clips(clip), 8, backend="decord")
    b = sample(clips(clip), 8, backend="pyav")
    assert a.indices == b.indices
    assert a.timestamps == pytest.approx(b.timestamps, abs=2e-3)
    diff = [np.abs(np.asarray(x, float) - np.asarray(y, float)).mean() for x, y in
            zip(a.images, b.images, strict=True)]  # fmt: skip
    if clip == "rot90":  # decord turns the picture before the resize, PyAV after: PIL's
        assert max(diff) < 0.01  # rounding between its two passes moves a few pixels
    else:
        assert max(diff) == 0  # the same pixels: both resize like the reference


def _ffmpeg_render(path, index: int, size: int = 384) -> Image.Image:
    """Frame ``index`` as the ffmpeg CLI shows it: display matrix applied, then resized."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf",
         f"select=eq(n\\,{index}),scale={size}:{size}:flags=bicubic", "-frames:v", "1",
         "-f", "image2pipe", "-c:v", "png", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return Image.open(io.BytesIO(done.stdout)).convert("RGB")


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("clip", "corner"),
    # rotN turns the picture N degrees counter-clockwise: the top-left marker moves there
    [("cfr", "top-left"), ("rot90", "bottom-left"), ("rot180", "bottom-right"),
     ("rot270", "top-right")],
)  # fmt: skip
def test_display_rotation_is_applied(clips, backend, clip, corner):
    path = clips(clip)
    frames = sample(path, 2, backend=backend)
    reference = _ffmpeg_render(path, frames.indices[0])
    assert marker_corner(reference) == corner  # what ffmpeg (and players) show
    assert [marker_corner(im) for im in frames.images] == [corner, corner]
    diff = np.abs(np.asarray(frames.images[0], float) - np.asarray(reference, float)).mean()
    assert diff < 4
    assert [frame_number(im) for im in frames.images] == frames.indices


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_frames_than_asked(clips, backend):
    one = sample(clips("one_frame"), 8, backend=backend)
    assert one.indices == [0] and one.timestamps == [0.0] and len(one) == 1
    three = sample(clips("three_frames"), 8, backend=backend)
    assert three.indices == [0, 1, 2]
    assert three.timestamps == pytest.approx([0.0, 0.5, 1.0])
    assert [frame_number(im) for im in three.images] == [0, 1, 2]


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_window_and_fps(clips, backend):
    path = clips("cfr")
    win = sample(path, 4, start=0.5, end=1.5, backend=backend)
    assert win.indices == [15, 21, 27, 33]
    assert [frame_number(im) for im in win.images] == win.indices
    rate = sample(path, 8, fps=2, backend=backend)  # 2 s at 2 fps: 4 frames
    assert rate.indices == [6, 18, 30, 42]
    assert [frame_number(im) for im in rate.images] == rate.indices
    capped = sample(path, 3, fps=24, backend=backend)
    assert capped.indices == [8, 24, 40]
    with pytest.raises(SamplingArgumentError, match="past the end"):
        sample(path, 8, start=5, backend=backend)


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip", ["mkv", "webm", "long_gop"])
def test_containers_without_frame_counts_and_long_gops(clips, backend, clip):
    frames = sample(clips(clip), 8, backend=backend)
    if clip == "long_gop":
        assert frames.indices == [3, 9, 15, 21, 27, 33, 39, 45]
    else:  # Matroska keeps milliseconds: frame i starts at round(1000 * i / 24) ms
        times = [round(1000 * i / FPS) / 1000 for i in range(48)]
        assert frames.timestamps == pytest.approx([times[i] for i in frames.indices], abs=1e-6)
        assert frames.duration == pytest.approx(times[-1] * 2 - times[-2])
        assert frames.indices == list(plan_samples(times, frames.duration, 8).indices)
        assert frames.indices == [3, 8, 14, 20, 26, 32, 38, 44]
    assert [frame_number(im) for im in frames.images] == frames.indices


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_seeks_across_short_gops_land_on_the_right_frames(clips, backend):
    # A keyframe every 6 frames, B-frames in between: 8, 24 and 40 are each worth a seek.
    result = decode(DecodeRequest(str(clips("short_gop")), SamplingSpec(3), backend=backend))
    assert result.indices == [8, 24, 40]
    assert [frame_number(Image.fromarray(a)) for a in result.arrays] == result.indices
    if backend == "pyav":
        assert result.stats["seeks"] == 3
        # One pass to frame 40 would be 41 packets. Each seek feeds its GOP up to the wanted
        # frame's own packet and drains the decoder there (8 packets); feeding on until the
        # B-frame delay lets the frame out took 15.
        assert result.stats["packets_decoded"] <= 8
    dense = decode(DecodeRequest(str(clips("short_gop")), SamplingSpec(40, start=0.2),
                                 backend=backend))
    assert [frame_number(Image.fromarray(a)) for a in dense.arrays] == dense.indices
    assert len(set(dense.indices)) == 40 and dense.indices[0] == 5  # 0.2225 s: frame 5


@needs_ffmpeg
@pytest.mark.parametrize("count", [3, 8, 40])
def test_seeked_frames_equal_a_full_decode_pixel_for_pixel(clips, count):
    # Seeks, drains and skipped frames must not change a single pixel of a wanted frame.
    import av

    path = str(clips("short_gop"))
    result = decode(DecodeRequest(path, SamplingSpec(count), backend="pyav"))
    with av.open(path) as container:
        stream = container.streams.video[0]
        shown = sorted(
            (f for p in container.demux(stream) for f in stream.codec_context.decode(p)),
            key=lambda f: f.pts,
        )
        full = [to_rgb_array(shown[i], 384) for i in result.indices]
    assert len(result.arrays) == min(count, len(shown))
    for i, got, want in zip(result.indices, result.arrays, full, strict=True):
        assert np.array_equal(got, want), f"frame {i} differs from a full decode"


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_edit_list_frames_are_the_ones_shown(clips, backend):
    # The edit list hides frames 0..11: the first frame shown is number 12, at 0.0 s.
    frames = sample(clips("edit_list"), 8, backend=backend)
    assert frames.backend == "pyav"  # decord mis-indexes edit lists: PyAV takes over
    assert frames.duration == pytest.approx(1.5, abs=1e-3)
    assert [frame_number(im) for im in frames.images] == [i + 12 for i in frames.indices]
    assert frames.timestamps == pytest.approx([i / 24 for i in frames.indices], abs=1e-3)


# ---------------------------------------------------------------------------------- errors


@needs_ffmpeg
@pytest.mark.parametrize("backend", [None, *BACKENDS])
@pytest.mark.parametrize(
    ("clip", "error", "words"),
    NOT_VIDEOS,
)
def test_files_that_are_not_videos(clips, backend, clip, error, words):
    with pytest.raises(error, match=words) as info:
        sample(clips(clip), 8, backend=backend)
    assert str(clips(clip)) in str(info.value)
    assert info.value.source is not None


def test_missing_paths_and_directories(tmp_path):
    with pytest.raises(VideoNotFoundError, match="No video at"):
        sample(tmp_path / "nope.mp4")
    with pytest.raises(VideoNotFoundError, match="directory"):
        sample(str(tmp_path))


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(RemoteVideoError, match="private or local address"):
        sample("https://10.0.0.1/v.mp4")  # fetched like any URL, and refused before connecting
    with pytest.raises(RemoteVideoError, match="not supported"):
        sample("rtsp://camera/stream")
    with pytest.raises(SamplingArgumentError, match="Unknown backend 'opencv'"):
        sample(tmp_path / "x.mp4", backend="opencv")
    with pytest.raises(SamplingArgumentError, match="size"):
        sample(tmp_path / "x.mp4", size=0)
    with pytest.raises(SamplingArgumentError, match="file path"):
        sample(b"clip.mp4")
    with pytest.raises(VidchatError):
        sample(tmp_path / "x.mp4", num_frames=0)


# ------------------------------------------------------------------------- the decode worker


class _ExitOnLoad:
    """A request that makes the worker exit as soon as it reads it (a stand-in for a crash)."""

    path = "crash.mp4"

    def __reduce__(self):
        return (os._exit, (86,))


class _HangOnLoad:
    path = "hang.mp4"

    def __reduce__(self):
        return (time.sleep, (60,))


@needs_ffmpeg
def test_worker_gives_what_in_process_gives(clips):
    path = clips("vfr")
    isolated = sample_frames(path, 8, backend="pyav")  # isolate=True is the default
    local = sample(path, 8, backend="pyav")
    assert isolated.indices == local.indices
    assert [im.tobytes() for im in isolated.images] == [im.tobytes() for im in local.images]
    with pytest.raises(VideoDecodeError, match="no video stream") as info:  # typed errors
        sample_frames(clips("audio_only"), backend="pyav")
    assert info.value.source == str(clips("audio_only"))
    with pytest.raises(SamplingArgumentError, match="past the end"):
        sample_frames(path, 8, start=60)


@needs_ffmpeg
def test_worker_crash_and_hang_raise_and_the_next_call_works(clips):
    with pytest.raises(VideoDecodeError, match="crashed.*exit status 86"):
        _decode_worker.run_isolated(_ExitOnLoad())
    started = time.monotonic()
    with pytest.raises(VideoDecodeError, match="longer than 0.5s"):
        _decode_worker.run_isolated(_HangOnLoad(), timeout=0.5)
    assert time.monotonic() - started < 5
    result = _decode_worker.run_isolated(DecodeRequest(str(clips("cfr")), SamplingSpec(2),
                                                       backend="pyav"))
    assert result.indices == [12, 36]


@needs_ffmpeg
def test_workers_serve_threads_in_parallel_and_exit_when_idle(clips, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(_decode_worker, "WORKER_IDLE_S", 0.2)
    pool = _decode_worker._Pool(2)
    requests = [DecodeRequest(str(clips(c)), SamplingSpec(3), backend="pyav")
                for c in ("cfr", "vfr") * 2]
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda r: pool.run(r, 30), requests))
    assert [r.indices for r in results] == [[8, 24, 40], [16, 32, 42]] * 2
    procs = [w.proc for w in pool._idle]
    assert 1 <= len(procs) <= 2
    deadline = time.monotonic() + 5
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(p.poll() is not None for p in procs)  # idle workers gave their memory back
    assert not pool._idle


# -------------------------------------------------------------------------------- encoding


def _picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8))


def test_jpeg_bytes_depend_only_on_pixels():
    a = _picture()
    b = Image.fromarray(np.asarray(a).copy())
    b.info.update(comment=b"made at 12:00", dpi=(300, 300), exif=b"Exif\x00\x00")
    assert encode_jpeg(a) == encode_jpeg(a) == encode_jpeg(b)
    assert frame_uuid(encode_jpeg(a)) == frame_uuid(encode_jpeg(b))
    assert frame_uuid(encode_jpeg(a)) != frame_uuid(encode_jpeg(_picture(1)))
    decoded = Image.open(io.BytesIO(encode_jpeg(b)))
    assert decoded.size == (384, 384) and decoded.mode == "RGB"
    assert not {"exif", "comment", "icc_profile"} & set(decoded.info)


def test_encode_frames_keeps_order_and_matches_single_encodes():
    images = [_picture(i) for i in range(6)]
    assert encode_frames(images) == [encode_jpeg(im) for im in images]
    assert encode_frames([]) == []


def test_data_url_and_uuid_format():
    jpeg = encode_jpeg(_picture())
    url = to_data_url(jpeg)
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == jpeg
    uid = frame_uuid(jpeg)
    assert len(uid) == 32 and int(uid, 16) >= 0


@needs_ffmpeg
@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_twice_gives_identical_jpeg_bytes(clips, backend):
    # What makes vLLM's caches hit on a second question about the same video.
    first = encode_frames(sample(clips("cfr"), 4, backend=backend).images)
    second = encode_frames(sample(clips("cfr"), 4, backend=backend).images)
    assert first == second
