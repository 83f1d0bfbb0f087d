"""Sampling modes: "keyframes" (the keyframes nearest the uniform targets) and "scenes" (a frame
of every scene change, filled uniformly), on clips made with ffmpeg (tests/_clips.py); the
mode passed through the clients, batch manifests and the CLI (against the loopback fake
server: no engine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import (
    NOT_VIDEOS,
    SCENE_COLOURS,
    SEVEN_SCENES,
    frame_number,
    have_ffmpeg,
    make_clip,
    make_scene_clip,
    scene_bounds,
)
from _twins import KINDS, Twin

from vidchat.cli import main
from vidchat.client import (
    SAMPLING_MODES,
    ManifestError,
    SamplingArgumentError,
    sample_frames,
)
from vidchat.client._manifest import parse_row
from vidchat.client._plan import MODES, SamplingSpec, plan_keyframes, sample_times
from vidchat.client._pyav import to_rgb_array
from vidchat.client._scenes import Scene, find_scenes, scene_targets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fake_server import running_fake_server  # noqa: E402

needs_ffmpeg = pytest.mark.skipif(not have_ffmpeg(), reason="needs the ffmpeg CLI")
MODE_ERROR = "Unknown sampling mode 'fast'; use one of 'uniform', 'keyframes', 'scenes'."


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not have_ffmpeg():
        pytest.skip("needs the ffmpeg CLI")
    return tmp_path_factory.mktemp("mode-clips")


@pytest.fixture(scope="module")
def seven(clip_dir: Path) -> Path:
    return make_scene_clip(clip_dir)


def sample(path, *args, **kw):
    kw.setdefault("isolate", False)
    return sample_frames(path, *args, **kw)


def shown_keyframes(path) -> list[float]:
    """The keyframes' times (s from the first frame shown), read from the packet flags."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size and not p.is_discard]
        first = min(p.pts for p in packets)
        return sorted(float((p.pts - first) * stream.time_base) for p in packets
                      if p.is_keyframe)


def colour_name(image) -> str:
    """The scene colour nearest the picture's centre pixel."""
    pixel = np.asarray(image, dtype=np.int32)[image.height // 2, image.width // 2]
    return min(SCENE_COLOURS, key=lambda c: int(np.abs(pixel - SCENE_COLOURS[c]).sum()))


def scene_of(t: float) -> int:
    bounds = scene_bounds()
    return max(i for i in range(len(SEVEN_SCENES)) if bounds[i] <= t + 1e-6)


# -- the mode argument -------------------------------------------------------------------------


def test_an_unknown_mode_is_one_line_naming_the_modes(tmp_path):
    assert MODES == SAMPLING_MODES == ("uniform", "keyframes", "scenes")
    with pytest.raises(SamplingArgumentError) as info:
        sample(tmp_path / "not-even-there.mp4", 8, mode="fast")  # checked before the file
    assert str(info.value) == MODE_ERROR
    with pytest.raises(SamplingArgumentError, match="Unknown sampling mode None"):
        SamplingSpec(8, mode=None)  # type: ignore[arg-type]


@needs_ffmpeg
def test_uniform_is_the_default_and_unchanged(clip_dir):
    path = make_clip("cfr", clip_dir)
    default = sample(path, 8)
    uniform = sample(path, 8, mode="uniform")
    assert default.indices == uniform.indices == [3, 9, 15, 21, 27, 33, 39, 45]
    assert [im.tobytes() for im in default.images] == [im.tobytes() for im in uniform.images]


# -- keyframes ---------------------------------------------------------------------------------


def test_plan_keyframes_takes_the_nearest_once_each():
    keys = [0.0, 8.0, 16.0]
    # 8 targets at 1.25, 3.75, ... 18.75 s: three keyframes, each once
    assert plan_keyframes(keys, 20.0, SamplingSpec(8)) == [0, 1, 2]
    every_2s = [2.0 * i for i in range(10)]
    assert plan_keyframes(every_2s, 20.0, SamplingSpec(8)) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert plan_keyframes(every_2s, 20.0, SamplingSpec(2)) == [2, 7]  # 5 s -> 4, 15 s -> 14
    assert plan_keyframes([0.0, 2.0], 2.0, SamplingSpec(1)) == [0]  # a tie: the earlier
    # a window takes the keyframes inside it; one holding none gets none (uniform frames)
    assert plan_keyframes(keys, 20.0, SamplingSpec(8, start=7, end=15)) == [1]
    assert plan_keyframes(keys, 20.0, SamplingSpec(2, start=9, end=15)) == []
    assert plan_keyframes(keys, 20.0, SamplingSpec(2, start=17, end=20)) == []


@needs_ffmpeg
@pytest.mark.parametrize("clip", ["short_gop", "webm", "vfr", "rot90"])
@pytest.mark.parametrize("n", [1, 3, 8, 40])
def test_keyframe_mode_gives_keyframes_near_the_targets(clip_dir, clip, n):
    path = make_clip(clip, clip_dir)
    keys = shown_keyframes(path)
    frames = sample(path, n, mode="keyframes")
    assert 1 <= len(frames) <= n
    # Every frame is a keyframe, by the container's own flags, at its real time.
    for t in frames.timestamps:
        assert min(abs(t - k) for k in keys) < 1e-6
    assert frames.timestamps == sorted(set(frames.timestamps))
    # Each one is the keyframe nearest one of the uniform targets, and every target has its
    # nearest keyframe there.
    targets = sample_times(frames.duration, SamplingSpec(n))
    nearest = sorted({min(keys, key=lambda k, t=t: (abs(k - t), k)) for t in targets})
    assert frames.timestamps == pytest.approx(nearest, abs=1e-6)
    assert [frame_number(im) for im in frames.images] == frames.indices


@needs_ffmpeg
def test_keyframe_mode_without_a_shown_keyframe_takes_the_uniform_frames(clip_dir):
    # The edit list hides frames 0..11, and with them the clip's only keyframe.
    path = make_clip("edit_list", clip_dir)
    assert shown_keyframes(path) == []
    assert sample(path, 8, mode="keyframes").indices == sample(path, 8).indices


@needs_ffmpeg
def test_keyframe_mode_stays_inside_a_window_that_holds_no_keyframe(clip_dir):
    path = make_clip("short_gop", clip_dir)
    keys = shown_keyframes(path)
    k0, k1 = max(zip(keys, keys[1:], strict=False), key=lambda pair: pair[1] - pair[0])
    start, end = k0 + 0.01, k1 - 0.01  # between two keyframes: none inside
    frames = sample(path, 3, mode="keyframes", start=start, end=end)
    assert frames.timestamps and all(start <= t < end for t in frames.timestamps)
    assert frames.indices == sample(path, 3, start=start, end=end).indices


@needs_ffmpeg
def test_keyframe_pictures_equal_a_full_decode(clip_dir):
    path = str(make_clip("short_gop", clip_dir))
    frames = sample(path, 8, mode="keyframes")
    with av.open(path) as container:
        stream = container.streams.video[0]
        shown = sorted((f for p in container.demux(stream) for f in stream.codec_context.decode(p)),
                       key=lambda f: f.pts)
        full = [to_rgb_array(shown[i], 384) for i in frames.indices]
    for got, want in zip(frames.images, full, strict=True):
        assert np.array_equal(np.asarray(got), want)


@needs_ffmpeg
def test_keyframe_mode_in_the_worker(clip_dir):
    path = make_clip("short_gop", clip_dir)
    assert sample_frames(path, 8, mode="keyframes").indices == \
        sample(path, 8, mode="keyframes").indices


# -- scenes ------------------------------------------------------------------------------------


def test_find_scenes_cuts_where_colours_change_not_where_they_move():
    times = [i / 10 for i in range(40)]
    moving = [0.0] + [0.05 + 0.03 * (i % 3) for i in range(1, 40)]  # motion: always a bit
    distances = list(moving)
    distances[12] = 0.9  # a cut at 1.2 s
    distances[30] = 0.25  # a big change, but under the floor: not a cut
    scenes = find_scenes(times, distances, 0.0, 4.0)
    assert [(s.start, s.end) for s in scenes] == [(0.0, pytest.approx(1.15)),
                                                  (pytest.approx(1.15), 4.0)]
    assert scenes[1].first_seen == 1.2 and scenes[1].cut == 0.9
    # A scene in constant motion: distances high everywhere, so none stands out.
    busy = [0.0] + [0.5] * 39
    assert len(find_scenes(times, busy, 0.0, 4.0)) == 1


def test_scene_targets_one_per_scene_then_by_length():
    def scene(a, b, cut):
        return Scene(a, b, a, b - 0.1, cut)

    scenes = [scene(0, 8, float("inf")), scene(8, 8.6, 0.9), scene(8.6, 20, 0.8)]
    targets = scene_targets(scenes, 5)
    assert len(targets) == 5 and targets == sorted(targets)
    assert [sum(s.start <= t < s.end for t in targets) for s in scenes] == [2, 1, 2]
    # More scenes than frames: the strongest cuts are kept, the rest merged.
    assert scene_targets(scenes, 2) == [4.0, 14.0]  # the cut at 8 s is the stronger
    assert scene_targets(scenes, 1) == [10.0]
    assert scene_targets([], 8) == []
    # A keyframe inside a frame's segment, where the scene was seen, is taken instead.
    keys = [0.0, 3.5, 8.0, 9.0, 16.0, 19.95]
    # 0-4 s: 3.5 is nearer 2.0 than 0.0; 4-8 s: none (8.0 opens the next scene, and 8.0 s
    # was not seen in this one); 8-8.6 s: 8.0; 8.6-14.3 s: 9.0; 14.3-20 s: 16.0 (19.95 is
    # past the last sample seen).
    assert scene_targets(scenes, 5, keys) == [3.5, 6.0, 8.0, 9.0, 16.0]


@needs_ffmpeg
def test_uniform_frames_miss_the_short_scenes(seven):
    frames = sample(seven, 8)
    colours = [colour_name(im) for im in frames.images]
    assert "lime" not in colours and "yellow" not in colours  # 0.6 s and 0.8 s long
    assert len(set(colours)) < len(SEVEN_SCENES)


@needs_ffmpeg
def test_scene_mode_returns_a_frame_of_every_scene_in_time_order(seven):
    frames = sample(seven, 8, mode="scenes")
    assert len(frames) <= 8
    assert frames.timestamps == sorted(frames.timestamps)
    colours = [colour_name(im) for im in frames.images]
    # every scene is there, each frame shows the scene its timestamp falls in
    assert sorted(set(colours), key=list(SCENE_COLOURS).index) == list(SCENE_COLOURS)
    expected = [SEVEN_SCENES[scene_of(t)][0].split("=")[-1] for t in frames.timestamps]
    assert colours == expected
    assert frames.backend == "pyav"
    # where the scenes were found to start: within a detection step of the truth
    assert frames.scenes == pytest.approx(scene_bounds()[:-1], abs=0.1)
    assert sample(seven, 8).scenes is None


@needs_ffmpeg
def test_scene_mode_with_fewer_frames_than_scenes_and_in_a_window(seven):
    four = sample(seven, 4, mode="scenes")
    assert len(four) == 4 and four.timestamps == sorted(four.timestamps)
    assert len({scene_of(t) for t in four.timestamps}) == 4  # four different scenes
    window = sample(seven, 6, mode="scenes", start=7.0, end=15.0)
    assert all(7.0 <= t < 15.0 for t in window.timestamps)
    # red, lime, blue, yellow, magenta all meet the window
    assert {colour_name(im) for im in window.images} == {"red", "lime", "blue", "yellow",
                                                        "magenta"}


@needs_ffmpeg
def test_scene_mode_on_a_video_without_cuts_is_uniform(clip_dir):
    path = make_clip("long_gop", clip_dir)  # one picture growing brighter: no cut
    assert shown_keyframes(path) == [0.0]
    uniform = sample(path, 8).indices
    scenes = sample(path, 8, mode="scenes")
    assert scenes.scenes == [0.0]
    # the uniform frames, but the first segment (0-0.25 s) holds a keyframe: that one
    assert scenes.indices == [0, *uniform[1:]]


@needs_ffmpeg
@pytest.mark.parametrize("mode", ["keyframes", "scenes"])
@pytest.mark.parametrize(
    ("clip", "error", "words"),
    NOT_VIDEOS,
)
def test_files_that_are_not_videos_in_every_mode(clip_dir, mode, clip, error, words):
    path = make_clip(clip, clip_dir)
    with pytest.raises(error, match=words) as info:
        sample(path, 8, mode=mode)
    assert str(path) in str(info.value) and info.value.source is not None


# -- through the clients, manifests and the CLI (loopback fake server, no engine) -------------


@pytest.fixture(scope="module")
def fake_url():
    with running_fake_server() as url:
        yield url


@needs_ffmpeg
@pytest.mark.parametrize("kind", KINDS)
def test_the_clients_pass_the_mode_through(clip_dir, seven, fake_url, kind, tmp_path):
    path = str(make_clip("short_gop", clip_dir))
    want = sample(path, 8, mode="keyframes").timestamps
    assert want != sample(path, 8).timestamps
    with Twin(kind, fake_url) as chat:
        answer = chat.ask(path, "Q?", 8, sampling={"mode": "keyframes"}, max_tokens=2)
        assert answer.frame_times == pytest.approx(want)
        many = chat.ask_many(path, ["A?", "B?"], 8, sampling={"mode": "keyframes"},
                             max_tokens=2)
        assert [a.frame_times for a in many] == [pytest.approx(want)] * 2
        long = chat.ask_long(path, "Q?", window_s=1.0, frames_per_window=8,
                             sampling={"mode": "keyframes"}, max_tokens=2)
        keys = shown_keyframes(path)
        for window in long.windows:
            assert window.frames and all(min(abs(t - k) for k in keys) < 1e-6
                                         for t in window.frames)
        scenes = chat.ask(str(seven), "Q?", 8, sampling={"mode": "scenes"}, max_tokens=2)
        assert scenes.frame_times == pytest.approx(sample(seven, 8, mode="scenes").timestamps)
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(json.dumps({"custom_id": "k", "video": path, "question": "Q?",
                                        "mode": "keyframes", "max_tokens": 2}) + "\n")
        chat.run_manifest(manifest, tmp_path / "out.jsonl", progress=False)
        result = json.loads((tmp_path / "out.jsonl").read_text())
        assert result["vidchat"]["frame_times"] == pytest.approx(want)
        with pytest.raises(SamplingArgumentError) as info:
            chat.ask(path, "Q?", sampling={"mode": "fast"})
        assert str(info.value) == MODE_ERROR


def test_a_manifest_row_with_an_unknown_mode_is_refused():
    row = parse_row(1, json.dumps({"custom_id": "a", "video": "v.mp4", "question": "Q?",
                                   "mode": "scenes"}))
    assert row.sampling == {"mode": "scenes"}
    with pytest.raises(ManifestError, match="line 3: 'mode' must be one of uniform, "
                                            "keyframes, scenes, not 'fast'"):
        parse_row(3, json.dumps({"custom_id": "a", "video": "v.mp4", "question": "Q?",
                                 "mode": "fast"}))


@needs_ffmpeg
def test_cli_mode(clip_dir, fake_url, capsys):
    path = str(make_clip("short_gop", clip_dir))
    assert main(["ask", path, "Q?", "--server", fake_url, "--mode", "keyframes", "--json",
                 "--max-tokens", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frame_times"] == pytest.approx(sample(path, 8, mode="keyframes").timestamps)
    assert main(["ask", path, "Q?", "--server", fake_url, "--mode", "fast"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"vidchat: error: {MODE_ERROR}\n" and captured.out == ""
