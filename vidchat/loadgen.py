"""`vidchat bench`: a load generator for video questions, through vidchat's own client.

    videos ──► AsyncVideoChat.prepare (sample + encode ONCE per video) ──► EncodedVideo
    plan: (video, question) pairs, first questions first ──► closed loop (--concurrency C)
                                                         or open loop (--rate R, Poisson)
    session order: a video's follow-ups wait until its first answer starts streaming
    each request: the client's request path (frame uuid cache, session header, cache-miss
    resend), streamed, timed per chunk ──► RequestRecord
    /metrics before and after ──► prefix-cache and multimodal-cache hit rates of the run
    records ──► report (JSON) + plots (PNG)

Like `vllm bench serve`, but the prompts are real sampled frames: what a vidchat user sends.
Every run is bounded by the request count and by ``max_seconds``; at the deadline requests in
flight are cancelled and counted as ``incomplete``.

Each run sends a fresh ``cache_salt`` (vLLM keys its prefix cache by it), so runs in a sweep
do not reuse each other's KV cache; caching *within* a run works as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import os
import platform
import random
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vidchat.client import AsyncVideoChat, EncodedVideo
from vidchat.errors import APIError, StreamInterruptedError, VidchatError

PERCENTILES = (50, 90, 99)
# Counters read from the server's /metrics (Prometheus text). vLLM 0.32 names; a server that
# lacks them (another engine, a proxy) just reports no hit rate.
METRICS = (
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:mm_cache_queries",
    "vllm:mm_cache_hits",
)
# Moving ffmpeg test patterns (every frame differs, so no two sampled frames are identical);
# a hue rotation per cycle makes as many distinct videos as asked for.
VIDEO_SOURCES = ("testsrc2", "testsrc", "gradients=speed=0.05", "rgbtestsrc", "yuvtestsrc")
HUE_STEP_DEG = 47
QUESTIONS = (
    "What is happening in this video?",
    "Describe the colours and shapes you see.",
    "What changes between the first and the last frame?",
    "Summarize the video in one sentence.",
    "How many distinct objects are visible?",
    "Is there any text or numbers on screen? Read them.",
    "What moves, and in which direction?",
    "Describe the background.",
)
# Time allowed to cancel in-flight requests after the deadline.
CANCEL_GRACE_S = 5.0


@dataclass(frozen=True)
class BenchSettings:
    """One load-generator run. Exactly one of concurrency / rate drives the arrivals
    (rate with a concurrency is an open loop capped at that many requests in flight)."""

    server: str
    model: str | None = None
    api_key: str | None = None
    requests: int = 32
    concurrency: int | None = 16
    rate: float | None = None
    frames: int = 8
    max_tokens: int = 64
    videos: int = 8
    questions_per_video: int = 4
    max_seconds: float = 600.0
    timeout_s: float = 600.0
    seed: int = 0
    salt: bool = True  # a fresh cache_salt per run (see the module docstring)
    session_order: bool = True  # follow-ups wait until their video's first answer starts

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise VidchatError("--requests must be at least 1")
        if self.rate is None and not self.concurrency:
            raise VidchatError("give --concurrency C (closed loop) or --rate R (Poisson)")
        if self.concurrency is not None and self.concurrency < 1:
            raise VidchatError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise VidchatError("--rate must be a positive number of requests per second")
        if self.frames < 1 or self.max_tokens < 1:
            raise VidchatError("--frames and --max-tokens must be at least 1")
        if self.videos < 1 or self.questions_per_video < 1:
            raise VidchatError("--videos and --questions-per-video must be at least 1")
        if self.max_seconds <= 0:
            raise VidchatError("--max-seconds must be positive")


@dataclass
class RequestRecord:
    """What one request did, as seen by the client."""

    index: int
    video: int
    question: int
    start_s: float = 0.0  # since the start of the run
    ok: bool = False
    error: str | None = None
    status_code: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    image_bytes: int = 0  # JPEG bytes uploaded (0 when the server held every frame)
    request_bytes: int = 0  # HTTP request bodies, resends included

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.completion_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)


# ------------------------------------------------------------------------------ workload


def question_text(q: int) -> str:
    base = QUESTIONS[q % len(QUESTIONS)]
    return base if q < len(QUESTIONS) else f"{base} (follow-up {q // len(QUESTIONS)})"


def plan_requests(requests: int, videos: int, questions_per_video: int) -> list[tuple[int, int]]:
    """(video, question) per request: every video's first question, then every video's
    second, ... (a session asks its follow-ups after the first); cycles when
    ``requests`` exceeds videos x questions."""
    pairs = [(v, q) for q in range(questions_per_video) for v in range(videos)]
    return [pairs[i % len(pairs)] for i in range(requests)]


def arrival_times(n: int, rate: float, seed: int) -> list[float]:
    """Poisson arrivals: offsets (s) of ``n`` requests at ``rate`` per second."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def make_bench_clip(path: Path, index: int, *, seconds: float = 6, size: str = "1280x720",
                    rate: int = 30) -> Path:
    """The ``index``-th benchmark video: a moving test pattern, distinct from every other
    index. Made once; an existing file is reused."""
    if path.exists() and path.stat().st_size > 0:
        return path
    source = VIDEO_SOURCES[index % len(VIDEO_SOURCES)]
    name, _, opts = source.partition("=")
    spec = f"{name}=size={size}:rate={rate}:duration={seconds}" + (f":{opts}" if opts else "")
    hue = (index // len(VIDEO_SOURCES)) * HUE_STEP_DEG % 360
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "lavfi", "-i", spec, "-vf", f"hue=h={hue},format=yuv420p",
           "-c:v", "libx264", "-preset", "veryfast", "-g", str(rate * 2), str(tmp)]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        os.replace(tmp, path)
    except FileNotFoundError:
        raise VidchatError("ffmpeg is not installed: run `make setup` (it installs it)") from None
    except subprocess.CalledProcessError as exc:
        raise VidchatError(f"ffmpeg failed to make a benchmark video: "
                           f"{exc.stderr.decode(errors='replace')[-300:]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_bench_videos(directory: str | os.PathLike[str], count: int, *, seconds: float = 6,
                      size: str = "1280x720", rate: int = 30) -> list[Path]:
    """``count`` distinct benchmark videos in ``directory`` (cached by name)."""
    d = Path(directory)
    return [make_bench_clip(d / f"bench-{i:02d}-{size}-{seconds:g}s.mp4", i, seconds=seconds,
                            size=size, rate=rate) for i in range(count)]


# ------------------------------------------------------------------------------- metrics


def parse_metrics(text: str, names: Sequence[str] = METRICS) -> dict[str, float]:
    """Sum each counter over its label sets; ``name`` matches ``name`` and ``name_total``."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        cut = [i for i in (line.find("{"), line.find(" ")) if i >= 0]
        if not cut:
            continue
        name = line[: min(cut)]
        base = name.removesuffix("_total")
        if base not in names:
            continue
        rest = line[line.rindex("}") + 1 :] if line[min(cut)] == "{" else line[min(cut) :]
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        totals[base] = totals.get(base, 0.0) + value
    return totals


def scrape_metrics(server_root: str, timeout: float = 10.0) -> dict[str, float] | None:
    """The server's cache counters now, or None when it has no /metrics."""
    try:
        with urllib.request.urlopen(server_root + "/metrics", timeout=timeout) as resp:  # noqa: S310
            return parse_metrics(resp.read().decode("utf-8", "replace"))
    except OSError:
        return None


def cache_rates(before: dict[str, float] | None, after: dict[str, float] | None
                ) -> dict[str, Any]:
    """Hit rates over the run (counter deltas): None when the server does not count."""
    out: dict[str, Any] = {}
    for kind in ("prefix_cache", "mm_cache"):
        q, h = f"vllm:{kind}_queries", f"vllm:{kind}_hits"
        if not before or not after or q not in after:
            out[kind] = None
            continue
        queries = after.get(q, 0.0) - before.get(q, 0.0)
        hits = after.get(h, 0.0) - before.get(h, 0.0)
        out[kind] = {"queries": queries, "hits": hits,
                     "hit_rate": hits / queries if queries > 0 else None}
    return out


def server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


# -------------------------------------------------------------------------------- stats


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 (linear interpolation), min and max."""
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None,
                **{f"p{p}": None for p in PERCENTILES}}
    arr = np.asarray(values, dtype=float)
    pct = np.percentile(arr, PERCENTILES)
    return {"n": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min()),
            "max": float(arr.max()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)}}


def summarize(settings: BenchSettings, records: Sequence[RequestRecord], duration_s: float,
              prepare_s: float, caches: dict[str, Any], videos: Sequence[EncodedVideo]
              ) -> dict[str, Any]:
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok and r.error != "incomplete"]
    incomplete = [r for r in records if r.error == "incomplete"]
    out_tokens = sum(r.completion_tokens for r in done)
    in_tokens = sum(r.prompt_tokens for r in done)
    frame_uuids = [f.uuid for v in videos for f in v.frames]
    return {
        "settings": asdict(settings) | {"api_key": None},
        "requests": {"planned": settings.requests, "sent": len(records),
                     "completed": len(done), "failed": len(failed),
                     "incomplete": len(incomplete),
                     "errors": dict(Counter(r.error for r in failed))},
        "duration_s": duration_s,
        "prepare_s": prepare_s,
        "request_throughput": len(done) / duration_s if duration_s > 0 else 0.0,
        "output_throughput": out_tokens / duration_s if duration_s > 0 else 0.0,
        "input_throughput": in_tokens / duration_s if duration_s > 0 else 0.0,
        "prompt_tokens": in_tokens,
        "completion_tokens": out_tokens,
        "ttft_s": distribution([r.ttft_s for r in done if r.ttft_s is not None]),
        "tpot_s": distribution([t for r in done if (t := r.tpot_s) is not None]),
        "itl_s": distribution([x for r in done for x in r.itl_s]),
        "e2e_s": distribution([r.e2e_s for r in done if r.e2e_s is not None]),
        "bytes": {
            "image_bytes": sum(r.image_bytes for r in records),
            "request_bytes": sum(r.request_bytes for r in records),
            "request_bytes_per_request": (sum(r.request_bytes for r in records) / len(records)
                                          if records else 0.0),
        },
        "videos": {"count": len(videos), "frames": len(frame_uuids),
                   "distinct_frames": len(set(frame_uuids)),
                   "payload_bytes": [v.payload_bytes for v in videos]},
        "caches": caches,
        "env": environment(),
        "records": [asdict(r) for r in records],
    }


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "load_avg": list(os.getloadavg())}


# ------------------------------------------------------------------------------ the run

# The record of the request running in the current task: the HTTP hook adds body sizes to it.
_CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "vidchat_bench_record", default=None)


async def _count_request_bytes(request: httpx.Request) -> None:
    rec = _CURRENT.get()
    if rec is not None:
        try:
            rec.request_bytes += len(request.content)
        except httpx.RequestNotRead:  # a streamed body: not what the OpenAI SDK sends
            pass


def _http_client(concurrency: int) -> httpx.AsyncClient:
    # One connection per request in flight; the SDK sets timeouts per request.
    limits = httpx.Limits(max_connections=max(100, 2 * concurrency),
                          max_keepalive_connections=max(20, 2 * concurrency))
    return httpx.AsyncClient(limits=limits, event_hooks={"request": [_count_request_bytes]})


async def _one(chat: AsyncVideoChat, video: EncodedVideo, question: str,
               gen: dict[str, Any], rec: RequestRecord, t_run: float,
               on_first_token: Callable[[], None] | None = None) -> None:
    """One streamed request through the client's request path, timed chunk by chunk;
    ``on_first_token`` runs when the answer starts (the prompt is then in the server's
    prefix cache)."""
    _CURRENT.set(rec)
    t0 = time.perf_counter()
    rec.start_s = t0 - t_run
    stream = None
    try:
        # The raw chunks of the client's own request path: their arrival times (TTFT,
        # inter-token latency) and the usage chunk (token counts).
        stream = await chat.open_stream(video, question, **gen)
        rec.image_bytes = stream.bytes_sent
        last = None
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices:
                if last is None:
                    rec.ttft_s = now - t0
                    if on_first_token is not None:
                        on_first_token()
                else:
                    rec.itl_s.append(now - last)
                last = now
            if chunk.usage:
                rec.prompt_tokens = chunk.usage.prompt_tokens
                rec.completion_tokens = chunk.usage.completion_tokens
        rec.e2e_s = time.perf_counter() - t0
        rec.ok = rec.ttft_s is not None
        if not rec.ok:
            rec.error = "EmptyStream"
    except asyncio.CancelledError:
        rec.error = "incomplete"
        raise
    except VidchatError as exc:
        rec.error = type(exc).__name__
        rec.status_code = exc.status_code if isinstance(exc, APIError) else None
    except Exception as exc:  # noqa: BLE001 - a broken stream mid-answer; counted, not raised
        rec.error = StreamInterruptedError.__name__ + f"({type(exc).__name__})"
    finally:
        if stream is not None:
            try:
                await stream.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass


async def prepare_videos(chat: AsyncVideoChat, videos: Sequence[str | os.PathLike[str]
                                                                | EncodedVideo],
                         frames: int) -> tuple[list[EncodedVideo], float]:
    """Sample and encode every video once (the client's own prepare); seconds taken."""
    t0 = time.perf_counter()
    encoded = [await chat.prepare(v, frames) for v in videos]
    return encoded, time.perf_counter() - t0


async def run_bench_async(settings: BenchSettings,
                          videos: Sequence[str | os.PathLike[str] | EncodedVideo],
                          *, progress: bool = True) -> dict[str, Any]:
    """One run: prepare the videos, send the planned requests, return the report."""
    from tqdm import tqdm

    if len(videos) < settings.videos:
        raise VidchatError(f"{settings.videos} videos planned but {len(videos)} given")
    videos = list(videos)[: settings.videos]
    cap = settings.concurrency or settings.requests
    http = _http_client(cap)
    chat = AsyncVideoChat(settings.server, api_key=settings.api_key, model=settings.model,
                          timeout=settings.timeout_s, max_retries=0, http_client=http)
    try:
        await chat.limits()
        encoded, prepare_s = await prepare_videos(chat, videos, settings.frames)
        extra_body: dict[str, Any] = {"ignore_eos": True}
        if settings.salt:
            extra_body["cache_salt"] = uuid.uuid4().hex
        gen = {"max_tokens": settings.max_tokens, "temperature": 0.0,
               "stream_options": {"include_usage": True}, "extra_body": extra_body}
        plan = plan_requests(settings.requests, settings.videos, settings.questions_per_video)
        records = [RequestRecord(i, v, q) for i, (v, q) in enumerate(plan)]
        root = server_root(chat.base_url)
        before = await asyncio.to_thread(scrape_metrics, root)
        bar = tqdm(total=len(records), disable=not progress, unit="req", desc="vidchat bench",
                   dynamic_ncols=True)
        t_run = time.perf_counter()
        deadline = t_run + settings.max_seconds
        finished: list[float] = []

        # Session order: a video's follow-up questions wait until its first answer starts
        # streaming: by then its frames are prefilled and in the prefix cache, so the
        # follow-ups reuse them instead of prefilling the same frames side by side.
        leaders: dict[int, int] = {}
        for rec in records:
            leaders.setdefault(rec.video, rec.index)
        warmed = {v: asyncio.Event() for v in leaders}
        changed = asyncio.Event()

        def release(video: int) -> None:
            warmed[video].set()
            changed.set()

        def eligible(rec: RequestRecord) -> bool:
            return (not settings.session_order or leaders[rec.video] == rec.index
                    or warmed[rec.video].is_set())

        async def run_one(rec: RequestRecord) -> None:
            leader = leaders[rec.video] == rec.index
            try:
                await _one(chat, encoded[rec.video], question_text(rec.question), gen, rec,
                           t_run, (lambda: release(rec.video)) if leader else None)
            finally:
                if leader:
                    release(rec.video)  # failed or cancelled: release the follow-ups anyway
            finished.append(time.perf_counter())
            bar.update()

        tasks: list[asyncio.Task[None]] = []
        if settings.rate is None:
            waiting = list(records)

            async def next_record() -> RequestRecord | None:
                while waiting and time.perf_counter() < deadline:
                    for i, rec in enumerate(waiting):
                        if eligible(rec):
                            return waiting.pop(i)
                    changed.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), deadline - time.perf_counter())
                return None

            async def worker() -> None:
                while (rec := await next_record()) is not None:
                    await run_one(rec)

            tasks = [asyncio.create_task(worker()) for _ in range(min(cap, len(records)))]
        else:
            gate = asyncio.Semaphore(cap)
            offsets = arrival_times(len(records), settings.rate, settings.seed)

            async def gated(rec: RequestRecord) -> None:
                if not eligible(rec):
                    await warmed[rec.video].wait()
                async with gate:
                    await run_one(rec)

            for rec, offset in zip(records, offsets, strict=True):
                delay = t_run + offset - time.perf_counter()
                if t_run + offset >= deadline:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(gated(rec)))
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter())
                                        ) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        end = max(finished) if finished else time.perf_counter()
        bar.close()
        for rec in records:
            if not rec.ok and rec.error is None:
                rec.error = "incomplete"  # never started (deadline) or cancelled
        after = await asyncio.to_thread(scrape_metrics, root)
        return summarize(settings, records, end - t_run, prepare_s, cache_rates(before, after),
                         encoded)
    finally:
        await chat.close()
        await http.aclose()


def run_bench(settings: BenchSettings, videos: Sequence[str | os.PathLike[str] | EncodedVideo],
              *, progress: bool = True) -> dict[str, Any]:
    return asyncio.run(run_bench_async(settings, videos, progress=progress))


def run_sweep(settings: BenchSettings, concurrencies: Sequence[int],
              videos: Sequence[str | os.PathLike[str] | EncodedVideo], *,
              progress: bool = True) -> list[dict[str, Any]]:
    """The same requests at each concurrency (fresh cache salt each, so runs are independent)."""
    from dataclasses import replace

    return [run_bench(replace(settings, concurrency=c, rate=None), videos, progress=progress)
            for c in concurrencies]


# -------------------------------------------------------------------------------- output


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:9.1f}"


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary, like `vllm bench serve` prints."""
    s, req = report["settings"], report["requests"]
    mode = (f"rate {s['rate']:g} req/s (Poisson)" if s["rate"] else
            f"concurrency {s['concurrency']}")
    lines = [
        f"{'=' * 22} vidchat bench {'=' * 22}",
        f"server              {s['server']}",
        f"workload            {s['videos']} videos x {s['questions_per_video']} questions, "
        f"{s['frames']} frames, {s['max_tokens']} output tokens, {mode}"
        + (", session order" if s.get("session_order") else ""),
        f"requests            {req['completed']} ok / {req['failed']} failed / "
        f"{req['incomplete']} incomplete of {req['planned']}",
    ]
    if req["errors"]:
        lines.append("errors              " + ", ".join(f"{k}: {v}" for k, v in
                                                      req["errors"].items()))
    lines += [
        f"sample+encode       {report['prepare_s']:.2f} s for {report['videos']['count']} "
        "videos (once each)",
        f"duration            {report['duration_s']:.2f} s",
        f"request throughput  {report['request_throughput']:.2f} req/s",
        f"output throughput   {report['output_throughput']:.1f} tok/s",
        f"input throughput    {report['input_throughput']:.1f} tok/s",
        f"request body        {report['bytes']['request_bytes_per_request'] / 1024:.1f} "
        "KiB per request (mean)",
    ]
    for kind in ("prefix_cache", "mm_cache"):
        c = report["caches"].get(kind)
        rate = c and c["hit_rate"]
        lines.append(f"{kind.replace('_', ' '):<20}"
                     + ("n/a" if c is None else
                        f"{'-' if rate is None else f'{rate:.1%}'} hit rate "
                        f"({c['hits']:.0f}/{c['queries']:.0f})"))
    lines.append(f"{'latency (ms)':<20}{'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}")
    for key, label in (("ttft_s", "TTFT"), ("itl_s", "inter-token"), ("tpot_s", "TPOT"),
                       ("e2e_s", "end-to-end")):
        d = report[key]
        lines.append(f"{label:<20}{_ms(d['mean'])} {_ms(d['p50'])} {_ms(d['p90'])} "
                     f"{_ms(d['p99'])}")
    lines.append("=" * 58)
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_latency(report: dict[str, Any], path: str | os.PathLike[str], title: str = ""
                 ) -> bool:
    """Histograms of TTFT, inter-token and end-to-end latency with p50/p90/p99 marked."""
    plt = _pyplot()
    if plt is None:
        return False
    done = [r for r in report["records"] if r["ok"]]
    series = (("TTFT", [r["ttft_s"] for r in done], "ttft_s"),
              ("inter-token latency", [x for r in done for x in r["itl_s"]], "itl_s"),
              ("end-to-end latency", [r["e2e_s"] for r in done], "e2e_s"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (label, values, key) in zip(axes, series, strict=True):
        ms = [v * 1000 for v in values if v is not None]
        if ms:
            ax.hist(ms, bins=min(40, max(5, int(math.sqrt(len(ms))) * 2)), color="#4c72b0")
            for p, style in zip(PERCENTILES, (":", "--", "-"), strict=True):
                v = report[key][f"p{p}"]
                if v is not None:
                    ax.axvline(v * 1000, color="#c44e52", linestyle=style, label=f"p{p}")
            ax.legend(fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("ms")
    s = report["settings"]
    fig.suptitle(title or f"{s['videos']} videos x {s['questions_per_video']} questions, "
                 f"{s['frames']} frames, {s['max_tokens']} tokens, "
                 f"{report['request_throughput']:.2f} req/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_sweep(reports: Sequence[dict[str, Any]], path: str | os.PathLike[str],
               title: str = "") -> bool:
    """Throughput and latency against concurrency."""
    plt = _pyplot()
    if plt is None or not reports:
        return False
    xs = [r["settings"]["concurrency"] for r in reports]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(xs, [r["request_throughput"] for r in reports], "o-", label="requests/s")
    a.set_xlabel("concurrency")
    a.set_ylabel("requests/s")
    a2 = a.twinx()
    a2.plot(xs, [r["output_throughput"] for r in reports], "s--", color="#dd8452",
            label="output tokens/s")
    a2.set_ylabel("output tokens/s")
    a.set_xscale("log", base=2)
    a.set_title("throughput")
    a.legend(loc="upper left", fontsize=8)
    a2.legend(loc="lower right", fontsize=8)
    for key, label, style in (("ttft_s", "TTFT", "o-"), ("e2e_s", "end-to-end", "s-")):
        for p, ls in ((50, "-"), (99, ":")):
            b.plot(xs, [(r[key][f"p{p}"] or 0) * 1000 for r in reports], style[0] + ls,
                   label=f"{label} p{p}")
    b.set_xscale("log", base=2)
    for ax in (a, b):
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off()
    b.set_xlabel("concurrency")
    b.set_ylabel("ms")
    b.set_title("latency")
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(reports: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str], *,
                  sweep: bool = False) -> list[Path]:
    """bench.json (one report, or a list for a sweep), latency.png, and sweep.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json"]
    payload: Any = list(reports) if sweep else reports[0]
    written[0].write_text(json.dumps(payload, indent=1))
    if plot_latency(reports[-1], out / "latency.png"):
        written.append(out / "latency.png")
    if sweep and plot_sweep(reports, out / "sweep.png"):
        written.append(out / "sweep.png")
    return written
