"""Batch jobs (`vidchat batch`, VideoChat.run_manifest): manifests checked up front, rows
grouped per video, results in the OpenAI Batch output shape, resumable exactly once.

Unit tests on the manifest and result files; a 100,000-row job against the loopback fake
server measures the memory bound; the real CPU server takes a 30-row job killed with SIGKILL
three times."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _twins import KINDS, Twin

from vidchat.client import Answer, ManifestError, VideoNotFoundError
from vidchat.client._jobs import error_code, result_line
from vidchat.client._manifest import finished_ids, parse_row, scan_manifest
from vidchat.demo import make_demo_clip
from vidchat.errors import BadRequestError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fake_server import running_fake_server  # noqa: E402


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the manifest ----------------------------------------------------------------------------


def test_every_bad_line_is_named_and_nothing_is_sent(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"custom_id": "a", "video": "v.mp4", "question": "Q?"}),
        "{not json",
        json.dumps({"custom_id": "c", "video": "v.mp4"}),
        json.dumps({"custom_id": "d", "video": "v.mp4", "question": "Q?", "max_token": 5}),
        json.dumps({"custom_id": "e", "video": "v.mp4", "question": "Q?", "frames": 0}),
    ]) + "\n")
    with pytest.raises(ManifestError) as info:
        scan_manifest(manifest)
    message = str(info.value)
    assert "4 bad line(s)" in message and "nothing was sent" in message
    assert "line 2: not JSON" in message
    assert "line 3: 'question' must be a non-empty string" in message
    assert "line 4: unknown key 'max_token'" in message
    assert "line 5: 'frames' must be a positive integer" in message
    assert "\n" not in message


def test_repeated_custom_ids_are_refused_with_their_lines(tmp_path):
    rows = [{"custom_id": f"r{i % 4}", "video": "v.mp4", "question": f"Q{i}?"} for i in range(6)]
    with pytest.raises(ManifestError, match=r"'r0' on lines 1, 5; 'r1' on lines 2, 6"):
        scan_manifest(write_manifest(tmp_path / "m.jsonl", rows))


def test_rows_are_grouped_per_video_and_sampling_whatever_their_order(tmp_path):
    rows = [
        {"custom_id": "1", "video": "a.mp4", "question": "A1?"},
        {"custom_id": "2", "video": "b.mp4", "question": "B1?"},
        {"custom_id": "3", "video": "a.mp4", "question": "A2?", "max_tokens": 9},
        {"custom_id": "4", "video": "a.mp4", "question": "A3?", "frames": 4},
        {"custom_id": "5", "video": "b.mp4", "question": "B2?", "timestamps": True},
        {"custom_id": "6", "video": "a.mp4", "question": "A4?"},
    ]
    index = scan_manifest(write_manifest(tmp_path / "m.jsonl", rows))
    groups = [[r.custom_id for r in g] for g in index.groups(index.pending(finished_ids(
        tmp_path / "none.jsonl")))]
    # Same video and sampling: one group (generation keys and timestamps may differ).
    assert groups == [["1", "3", "6"], ["2", "5"], ["4"]]
    assert parse_row(3, json.dumps(rows[2])).gen == {"max_tokens": 9}


def test_a_torn_last_line_is_cut_and_its_row_runs_again(tmp_path):
    out = tmp_path / "out.jsonl"
    whole = json.dumps({"custom_id": "a", "response": None, "error": None})
    out.write_text(whole + "\n" + '{"custom_id": "b", "resp')
    done = finished_ids(out)
    assert out.read_text() == whole + "\n"
    assert len(done) == 1
    with pytest.raises(ManifestError, match="line 2 is not a result line"):
        out.write_text(whole + "\nnot json\n")
        finished_ids(out)


def test_result_lines_have_the_openai_batch_shape():
    row = parse_row(1, json.dumps({"custom_id": "x", "video": "v.mp4", "question": "Q?"}))
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
    ok = result_line(row, Answer("hi", "m", "stop", 10, 2, 8, 100, {"request_s": 0.1},
                                 frame_times=[0.5, 1.5], completion=completion))
    assert ok["custom_id"] == "x" and ok["error"] is None and ok["id"].startswith("vidchat_req")
    assert ok["response"] == {"status_code": 200, "request_id": "chatcmpl-1", "body": completion}
    assert ok["vidchat"]["frame_times"] == [0.5, 1.5]
    bad = result_line(row, BadRequestError("too long", status_code=400, body={"m": 1}))
    assert bad["response"] == {"status_code": 400, "request_id": None, "body": {"m": 1}}
    assert bad["error"] == {"code": "bad_request", "message": "too long"}
    missing = result_line(row, VideoNotFoundError("No video at v.mp4"))
    assert missing["response"] is None and missing["error"]["code"] == "video_not_found"
    assert error_code(VideoNotFoundError("x")) == "video_not_found"


# -- runs against the loopback fake server -----------------------------------------------------


@pytest.fixture(scope="module")
def fake_url():
    with running_fake_server() as url:
        yield url


@pytest.fixture(scope="module")
def small_clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("batch-clips")
    return [make_demo_clip(d / f"{i}.mp4", seconds=1, size="160x120", rate=8, gop=8,
                           source=s) for i, s in enumerate(("testsrc2", "smptebars"))]


@pytest.mark.parametrize("kind", KINDS)
def test_a_rerun_skips_what_is_done_and_each_video_is_sampled_once(tmp_path, fake_url,
                                                                  small_clips, kind):
    rows = [{"custom_id": f"q{i}", "video": str(small_clips[i % 2]), "question": f"Q{i}?",
             "frames": 2, "max_tokens": 3} for i in range(8)]
    rows.append({"custom_id": "lost", "video": str(tmp_path / "gone.mp4"), "question": "Q?"})
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"custom_id": "q3", "response": None, "error": None}) + "\n")
    with Twin(kind, fake_url) as chat:
        summary = chat.run_manifest(manifest, out, concurrency=3, progress=False)
        again = chat.run_manifest(manifest, out, concurrency=3, progress=False)
    assert (summary.rows, summary.skipped, summary.answered, summary.failed) == (9, 1, 7, 1)
    assert not summary.ok and (again.skipped, again.answered, again.failed_before) == (9, 0, 1)
    assert not again.ok  # a row failed in an earlier run: the job is still not clean
    results = read_results(out)
    assert sorted(r["custom_id"] for r in results) == sorted(r["custom_id"] for r in rows)
    by_id = {r["custom_id"]: r for r in results}
    assert by_id["lost"]["error"]["code"] == "video_not_found"
    assert by_id["q0"]["response"]["body"]["usage"]["completion_tokens"] == 3
    # Per video: the first question uploaded the frames, the others sent their uuids.
    for video in small_clips:
        sent = [by_id[r["custom_id"]]["vidchat"]["bytes_sent"] for r in rows
                if r["video"] == str(video) and r["custom_id"] != "q3"]
        assert sent[0] > 0 and sent[1:] == [0] * (len(sent) - 1)


def peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.Popen]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0.0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    proc.wait()
    return peak, proc


def test_a_100000_row_manifest_runs_in_bounded_memory(tmp_path, fake_url):
    """Every row is read, grouped, run and written; memory does not grow with the rows.
    (The videos are missing, so each row ends at once with its error: what is measured is the
    job's own bookkeeping, not sampling.)"""
    env = {**os.environ, "VIDCHAT_BASE_URL": fake_url}
    peaks, sizes = {}, {}
    for n in (1_000, 100_000):
        manifest = tmp_path / f"m{n}.jsonl"
        with open(manifest, "w") as f:
            for i in range(n):
                f.write(json.dumps({"custom_id": f"row-{i:06d}", "video":
                                    str(tmp_path / f"missing-{i % 2000}.mp4"),
                                    "question": f"What happens in part {i}?",
                                    "max_tokens": 16}) + "\n")
        sizes[n] = manifest.stat().st_size / 2**20
        out = tmp_path / f"out{n}.jsonl"
        peaks[n], proc = peak_rss_mb([sys.executable, "-m", "vidchat", "batch", str(manifest),
                                      "--out", str(out), "--no-progress"], env)
        assert proc.returncode == 1, proc.stderr.read().decode()[-500:]  # rows failed
        with open(out) as f:
            ids = [json.loads(line)["custom_id"] for line in f]
        assert len(ids) == len(set(ids)) == n
    growth = peaks[100_000] - peaks[1_000]
    print(f"manifest {sizes[100_000]:.1f} MiB; peak RSS {peaks[1_000]:.0f} MiB at 1k rows, "
          f"{peaks[100_000]:.0f} MiB at 100k rows (+{growth:.1f} MiB)")
    # ~24 bytes of index a row (2.4 MiB) plus numpy's sort temporaries: far below the
    # manifest's own size, let alone the rows as Python objects (~10x the file).
    assert growth < 20


# -- the real server ----------------------------------------------------------------------------


@pytest.mark.engine
def test_a_job_killed_three_times_ends_with_every_row_exactly_once(server, tmp_path,
                                                                   small_clips):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000))
    videos = [str(small_clips[0]), str(small_clips[1]), str(broken),
              str(tmp_path / "missing.mp4")]
    rows = [{"custom_id": f"row-{i:02d}", "video": videos[i % 4] if i % 5 else videos[i % 2],
             "question": f"Question {i}: what do you see?", "frames": 2 + i % 2,
             "max_tokens": 8, "min_tokens": 8} for i in range(30)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "vidchat", "batch", str(manifest), "--out", str(out),
            "--server", server.base_url, "--concurrency", "2", "--no-progress"]
    # Kill points at random stages of progress (after k rows are written, whatever the
    # machine's speed), and at a random moment after that: mid-request, mid-sampling...
    rng = random.Random(10)
    lines_seen = []
    for k in sorted(rng.sample(range(2, 27), 3)):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= k:
                time.sleep(rng.uniform(0.0, 0.3))
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        text = out.read_text() if out.exists() else ""
        assert text == "" or text.endswith("\n")  # whole lines only, whenever it died
        lines_seen.append(text.count("\n"))
    assert lines_seen[-1] < len(rows)  # the last kill still left work for the rerun
    final = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert final.returncode == 1, final.stderr  # the broken rows failed: exit status says so
    assert "already done" in final.stdout
    results = read_results(out)
    assert sorted(r["custom_id"] for r in results) == [r["custom_id"] for r in rows]
    print(f"rows written after each kill: {lines_seen}, then {len(results)}")
    for row, result in zip(rows, sorted(results, key=lambda r: r["custom_id"]), strict=True):
        if row["video"] == videos[2]:
            assert result["error"]["code"] == "video_decode", result
        elif row["video"] == videos[3]:
            assert result["error"]["code"] == "video_not_found", result
        else:
            assert result["error"] is None and result["response"]["status_code"] == 200
            assert result["response"]["body"]["usage"]["completion_tokens"] == 8
            assert len(result["vidchat"]["frame_times"]) == row["frames"]
