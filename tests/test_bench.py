"""`vidchat bench` against a loopback server that answers at once (bench/fake_server.py).

No engine: these check the load generator's bookkeeping - counts, percentiles, bytes, cache
counters, the JSON and plots it writes, and its deadline - not its speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from _clips import have_ffmpeg

from vidchat.cli import main
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.loadgen import (
    QUESTIONS,
    BenchSettings,
    RequestRecord,
    arrival_times,
    bench_pattern,
    cache_rates,
    distribution,
    format_report,
    make_bench_videos,
    parse_metrics,
    plan_requests,
    question_text,
    run_bench,
    server_root,
    summarize,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fake_server import running_fake_server  # noqa: E402

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="needs the ffmpeg CLI")

FRAMES, MAX_TOKENS = 8, 12


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_bench_videos(tmp_path_factory.mktemp("bench-videos"), 3, seconds=1,
                             size="320x240")


@pytest.fixture(scope="module")
def fake_url() -> str:
    with running_fake_server() as url:
        yield url


def ordered(d: dict) -> bool:
    return d["min"] <= d["p50"] <= d["p90"] <= d["p99"] <= d["max"]


def test_cli_report_counts_percentiles_bytes_and_caches(tmp_path, videos, fake_url, capsys):
    n = 3 * 4 + 2  # cycles past videos x questions: the last two repeat the first two
    args = ["bench", "--server", fake_url, "--requests", str(n), "--concurrency", "4",
            "--frames", str(FRAMES), "--max-tokens", str(MAX_TOKENS),
            "--questions-per-video", "4", "--out", str(tmp_path / "out"), "--no-progress"]
    args += [a for v in videos for a in ("--video", str(v))]
    assert main(args) == 0
    assert "request throughput" in capsys.readouterr().out

    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert (tmp_path / "out" / "latency.png").stat().st_size > 0
    req = report["requests"]
    assert (req["planned"], req["sent"], req["completed"], req["failed"],
            req["incomplete"]) == (n, n, n, 0, 0)
    assert report["completion_tokens"] == n * MAX_TOKENS
    for key in ("ttft_s", "itl_s", "e2e_s", "tpot_s"):
        assert ordered(report[key]), key
    assert report["ttft_s"]["n"] == n and report["e2e_s"]["n"] == n
    # Every answer is MAX_TOKENS chunks: MAX_TOKENS - 1 gaps after the first (plus the role
    # chunk the server sends first).
    assert report["itl_s"]["n"] == n * MAX_TOKENS
    assert report["request_throughput"] > 0 and report["output_throughput"] > 0

    records = report["records"]
    assert [r["index"] for r in records] == list(range(n))
    assert all(r["prompt_tokens"] > FRAMES * TOKENS_PER_IMAGE for r in records)
    # Session order: each video's first question uploads its frames; every later one sends
    # the uuids only, so the bytes sent are the three videos' payloads, once each.
    first = {}
    for r in records:
        first.setdefault(r["video"], r)
    assert [first[v]["index"] for v in range(3)] == [0, 1, 2]
    assert all(first[v]["image_bytes"] > 0 for v in range(3))
    assert sum(r["image_bytes"] for r in records) == sum(report["videos"]["payload_bytes"])
    v = report["videos"]
    assert (v["count"], v["frames"], v["distinct_frames"]) == (3, 3 * FRAMES, 3 * FRAMES)
    mean_body = report["bytes"]["request_bytes_per_request"]
    assert mean_body * n == pytest.approx(report["bytes"]["request_bytes"])
    assert report["bytes"]["request_bytes"] > report["bytes"]["image_bytes"]  # base64 + JSON
    for r in records:
        assert r["request_bytes"] > (r["image_bytes"] * 4 // 3 if r["image_bytes"] else 0)

    # The fake counts a frame-cache hit for every frame it already holds.
    mm = report["caches"]["mm_cache"]
    assert mm["queries"] == n * FRAMES
    assert mm["hits"] == (n - 3) * FRAMES
    assert 0 < report["caches"]["prefix_cache"]["hit_rate"] < 1


def test_sweep_writes_one_report_per_concurrency_and_the_sweep_plot(tmp_path, videos,
                                                                     fake_url):
    args = ["bench", "--server", fake_url, "--requests", "6", "--sweep", "1,3",
            "--frames", "2", "--max-tokens", "4", "--videos", "3", "--questions-per-video",
            "2", "--video-dir", str(videos[0].parent), "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    reports = json.loads((tmp_path / "bench.json").read_text())
    assert [r["settings"]["concurrency"] for r in reports] == [1, 3]
    assert all(r["requests"]["completed"] == 6 for r in reports)
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_poisson_arrivals_complete_every_request(videos, fake_url):
    settings = BenchSettings(fake_url, requests=8, concurrency=None, rate=40.0, frames=2,
                             max_tokens=4, videos=2, questions_per_video=2)
    report = run_bench(settings, videos[:2], progress=False)
    assert report["requests"]["completed"] == 8
    # Open loop: no request starts before its Poisson arrival time.
    offsets = arrival_times(8, 40.0, settings.seed)
    assert all(r["start_s"] >= offsets[r["index"]] - 0.005 for r in report["records"])


def test_the_deadline_cancels_what_is_in_flight(videos):
    with running_fake_server(delay_s=30) as url:
        settings = BenchSettings(url, requests=4, concurrency=2, frames=1, max_tokens=4,
                                 videos=2, questions_per_video=2, max_seconds=1.0)
        report = run_bench(settings, videos[:2], progress=False)
    req = report["requests"]
    assert (req["completed"], req["failed"], req["incomplete"]) == (0, 0, 4)
    assert report["duration_s"] < 10


def test_plan_is_first_questions_first_and_cycles():
    assert plan_requests(7, 3, 2) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 0)]


def test_poisson_offsets_are_seeded_and_average_the_rate():
    a = arrival_times(2000, 10.0, seed=1)
    assert a == arrival_times(2000, 10.0, seed=1) and a[0] == 0.0
    assert 9.0 < len(a) / a[-1] < 11.0


def test_metrics_are_summed_over_labels_and_diffed():
    text = "\n".join([
        "# HELP vllm:prefix_cache_queries Prefix cache queries",
        "# TYPE vllm:prefix_cache_queries counter",
        'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0',
        'vllm:prefix_cache_queries_total{engine="1",model_name="m"} 50.0',
        'vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9',
        'vllm:prefix_cache_hits_total{engine="0",model_name="a b"} 30.0',
        "vllm:mm_cache_queries_total 8",
        "vllm:mm_cache_hits_total 6",
        "vllm:num_requests_running 3",
    ])
    m = parse_metrics(text)
    assert m == {"vllm:prefix_cache_queries": 150.0, "vllm:prefix_cache_hits": 30.0,
                 "vllm:mm_cache_queries": 8.0, "vllm:mm_cache_hits": 6.0}
    before = {k: 0.0 for k in m}
    rates = cache_rates(before, m)
    assert rates["prefix_cache"]["hit_rate"] == pytest.approx(0.2)
    assert rates["mm_cache"]["hit_rate"] == pytest.approx(0.75)
    assert cache_rates(None, m) == {"prefix_cache": None, "mm_cache": None}


def test_distribution_of_nothing_and_of_something():
    assert distribution([])["p50"] is None
    d = distribution([float(x) for x in range(1, 101)])
    assert d["p50"] == pytest.approx(50.5) and d["p99"] == pytest.approx(99.01)
    assert ordered(d)


def test_questions_never_repeat_within_a_video():
    texts = [question_text(q) for q in range(3 * len(QUESTIONS))]
    assert len(set(texts)) == len(texts)
    assert texts[len(QUESTIONS)] == f"{QUESTIONS[0]} (follow-up 1)"


def test_bench_videos_are_distinct_patterns():
    patterns = [bench_pattern(i) for i in range(40)]
    assert len(set(patterns)) == 40
    assert bench_pattern(0) == ("testsrc2", 0) and bench_pattern(5) == ("testsrc2", 47)


def test_the_metrics_url_is_beside_the_api_not_under_it():
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h:8000/v1") == server_root("http://h:8000") == "http://h:8000"


def test_summary_separates_completed_failed_and_incomplete_requests():
    settings = BenchSettings("http://h/v1", api_key="secret", requests=4, concurrency=2)
    done = RequestRecord(0, 0, 0, ok=True, ttft_s=0.1, e2e_s=0.5, itl_s=[0.1] * 4,
                         prompt_tokens=100, completion_tokens=5, image_bytes=10,
                         request_bytes=100)
    one_token = RequestRecord(3, 1, 0, ok=True, ttft_s=0.2, e2e_s=0.2, prompt_tokens=90,
                              completion_tokens=1, request_bytes=30)
    failed = RequestRecord(1, 1, 0, error="BadRequestError", status_code=400,
                           request_bytes=50)
    incomplete = RequestRecord(2, 0, 1, error="incomplete")
    frames = [SimpleNamespace(uuid=u) for u in ("a", "b", "a")]  # one frame in both videos
    videos = [SimpleNamespace(frames=frames[:2], payload_bytes=7),
              SimpleNamespace(frames=frames[2:], payload_bytes=3)]
    report = summarize(settings, [done, failed, incomplete, one_token], duration_s=2.0,
                       prepare_s=0.3, caches={"prefix_cache": None, "mm_cache": None},
                       videos=videos)

    assert report["settings"]["api_key"] is None  # the key never reaches bench.json
    assert report["requests"] == {"planned": 4, "sent": 4, "completed": 2, "failed": 1,
                                  "incomplete": 1, "errors": {"BadRequestError": 1}}
    assert report["request_throughput"] == pytest.approx(1.0)
    assert report["output_throughput"] == pytest.approx(3.0)  # (5 + 1) tokens / 2 s
    assert report["prompt_tokens"] == 190
    # TPOT needs two tokens: (0.5 - 0.1) / 4 from the first request, nothing from the other.
    assert (report["tpot_s"]["n"], report["tpot_s"]["mean"]) == (1, pytest.approx(0.1))
    assert report["ttft_s"]["n"] == 2 and report["itl_s"]["n"] == 4
    # Bytes count every request sent, failed ones too.
    assert report["bytes"]["request_bytes"] == 180
    assert report["bytes"]["request_bytes_per_request"] == pytest.approx(45.0)
    assert report["videos"] == {"count": 2, "frames": 3, "distinct_frames": 2,
                                "payload_bytes": [7, 3]}
    assert [r["index"] for r in report["records"]] == [0, 1, 2, 3]

    text = format_report(report)
    assert "2 ok / 1 failed / 1 incomplete of 4" in text
    assert "BadRequestError: 1" in text
    assert "prefix cache        n/a" in text
