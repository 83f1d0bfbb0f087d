"""The `vidchat` command. Library errors become one line here: no traceback for user mistakes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vidchat.errors import VidchatError
from vidchat.limits import DEFAULT_FRAMES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = PROJECT_ROOT / "configs" / "cpu-tiny.yaml"


def _cmd_serve(args: argparse.Namespace) -> int:
    from vidchat.server.config import load_config
    from vidchat.server.engine import build_engine_command
    from vidchat.server.launcher import serve

    overrides = list(args.set or [])
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port:
        overrides.append(f"port={args.port}")
    cfg = load_config(args.config, overrides)
    if args.replicas > 1:
        from vidchat.server.replicas import plan_replica_set, serve_replicas

        if args.dry_run:
            print(plan_replica_set(cfg, args.replicas, environ=os.environ).describe())
            return 0
        log_dir = Path(args.log_file).parent if args.log_file else None
        return serve_replicas(cfg, args.replicas, log_dir=log_dir)
    if args.dry_run:
        print(build_engine_command(cfg, os.environ).shell())
        return 0
    return serve(cfg, log_path=Path(args.log_file) if args.log_file else None)


def _cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from vidchat.server.tiny_model import make_tiny_model

    path = make_tiny_model(args.dir, preset=args.preset, seed=args.seed)
    print(f"vidchat: wrote a random-weight {args.preset} checkpoint to {path}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    import json

    from vidchat.client import VideoChat

    gen = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    sampling = {k: v for k, v in (("fps", args.fps), ("start", args.start), ("end", args.end),
                                  ("mode", args.mode)) if v is not None}
    how = {"timestamps": args.timestamps, "sampling": sampling}
    several = len(args.question) > 1
    if args.long:
        return _ask_long(args, sampling, gen)
    with VideoChat(args.server, model=args.model) as chat:
        if args.stream and not args.json:
            # The frames are sampled once; later questions send their ids only.
            video = chat.prepare(args.video, args.frames, **sampling)
            for question in args.question:
                if several:
                    print(f"Q: {question}\nA: ", end="", flush=True)
                for piece in chat.stream(video, question, timestamps=args.timestamps, **gen):
                    print(piece, end="", flush=True)
                print()
            return 0
        if several:
            answers = chat.ask_many(args.video, args.question, args.frames, **how, **gen)
        else:
            answers = [chat.ask(args.video, args.question[0], args.frames, **how, **gen)]
    if args.json:
        out = [a.to_dict() | {"question": q} for q, a in zip(args.question, answers, strict=True)]
        print(json.dumps(out if several else out[0], indent=2))
    elif several:
        for question, answer in zip(args.question, answers, strict=True):
            print(f"Q: {question}\nA: {answer.text}")
    else:
        print(answers[0].text)
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from vidchat.client import VideoChat

    with VideoChat(args.server, model=args.model, max_retries=args.max_retries) as chat:
        summary = chat.run_manifest(args.manifest, args.out, concurrency=args.concurrency,
                                    progress=not args.no_progress)
    print(summary.format())
    return 0 if summary.ok else 1


def _ask_long(args: argparse.Namespace, sampling: dict, gen: dict) -> int:
    import json

    from vidchat.client import VideoChat

    if args.window is None:
        raise VidchatError("--long needs --window SECONDS: the length of each window")
    out = []
    with VideoChat(args.server, model=args.model) as chat:
        for question in args.question:
            answer = chat.ask_long(args.video, question, window_s=args.window,
                                   frames_per_window=args.frames_per_window or args.frames,
                                   overlap_s=args.overlap, sampling=sampling,
                                   progress=not args.json, **gen)
            if args.json:
                out.append({"question": question, "text": answer.text,
                            "requests": answer.requests, "reduce_steps": answer.reduce_steps,
                            "prompt_tokens": answer.prompt_tokens,
                            "completion_tokens": answer.completion_tokens,
                            "timings": answer.timings,
                            "windows": [{"start": w.start, "end": w.end, "text": w.text,
                                         "frames": w.frames,
                                         "error": str(w.error) if w.error else None}
                                        for w in answer.windows]})
                continue
            print(f"Q: {question}\nA: {answer.text}")
            for w in answer.windows:
                print(f"   {w.time_range} "
                      f"{w.text if w.error is None else 'FAILED: ' + str(w.error)}")
            print(f"   ({len(answer.windows)} windows + {answer.reduce_steps} combining "
                  f"request(s), {answer.prompt_tokens} prompt + {answer.completion_tokens} "
                  f"completion tokens, {answer.timings.get('total_s', 0):.1f} s)")
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from vidchat.ui import run_ui

    return run_ui(args.server, host=args.host, port=args.port, model=args.model)


def _cmd_demo(args: argparse.Namespace) -> int:
    from vidchat.demo import run_demo

    return run_demo(config=args.config, port=args.port, frames=args.frames,
                    question=args.question)


def _cmd_parity(args: argparse.Namespace) -> int:
    from vidchat.parity import run_parity_command

    return run_parity_command(config=args.config, server=args.server, video=args.video,
                              frames=args.frames, question=args.question, tokens=args.tokens,
                              reference_device=args.reference_device)


def _cmd_bench(args: argparse.Namespace) -> int:
    from vidchat.client import default_api_key, default_base_url
    from vidchat.loadgen import (
        BenchSettings,
        format_report,
        make_bench_videos,
        run_bench,
        run_sweep,
        write_outputs,
    )

    sweep = [int(c) for c in args.sweep.split(",")] if args.sweep else []
    concurrency = args.concurrency
    if concurrency is None and args.rate is None:
        concurrency = 16
    settings = BenchSettings(
        server=args.server or default_base_url(), model=args.model,
        api_key=os.environ.get("VIDCHAT_API_KEY") or default_api_key(),
        requests=args.requests, concurrency=concurrency, rate=args.rate, frames=args.frames,
        max_tokens=args.max_tokens, videos=len(args.video) if args.video else args.videos,
        questions_per_video=args.questions_per_video, max_seconds=args.max_seconds,
        seed=args.seed, salt=not args.no_salt, session_order=not args.no_session_order,
    )
    if args.video:
        videos = list(args.video)
    else:
        videos = make_bench_videos(Path(args.video_dir).expanduser(), settings.videos,
                                   seconds=args.video_seconds, size=args.video_size)
    progress = not args.no_progress
    if sweep:
        reports = run_sweep(settings, sweep, videos, progress=progress)
    else:
        reports = [run_bench(settings, videos, progress=progress)]
    for report in reports:
        print(format_report(report))
    for path in write_outputs(reports, args.out, sweep=bool(sweep)):
        print(f"vidchat: wrote {path}")
    failed = sum(r["requests"]["failed"] for r in reports)
    return 1 if failed and args.fail_on_error else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidchat", description="Ask questions about videos through a vLLM server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="start the vLLM server for a deployment profile")
    p.add_argument("--config", required=True, help="profile YAML, e.g. configs/cpu-tiny.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a profile key (repeatable); wins over the file")
    p.add_argument("--host", help="bind address (default: the profile's, loopback)")
    p.add_argument("--port", type=int, help="port (default: the profile's)")
    p.add_argument("--log-file", help="engine log (default: ~/.cache/vidchat/logs/...)")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="N engines on consecutive ports (one GPU each) behind vllm-router, "
                   "which listens on --port and routes by the client's session header")
    p.add_argument("--dry-run", action="store_true",
                   help="print the engine command line and exit")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("make-tiny-model", help="write a random-weight checkpoint")
    p.add_argument("dir", help="output directory (must not exist or be empty)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "bench"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_tiny_model)

    p = sub.add_parser("ask", help="ask a question about a video")
    p.add_argument("video", help="a video file path or an http(s) URL")
    p.add_argument("question", nargs="+",
                   help="one or more questions; the video is sampled once for all of them")
    p.add_argument("--server", help="server URL (default: $VIDCHAT_BASE_URL or "
                   "http://127.0.0.1:8000/v1)")
    p.add_argument("--model", help="model name (default: the server's only model)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"frames to sample, uniformly in time (default {DEFAULT_FRAMES})")
    p.add_argument("--fps", type=float, help="sample at this rate instead, still at most "
                   "--frames frames")
    p.add_argument("--start", type=float, help="window start, seconds (default: 0)")
    p.add_argument("--end", type=float, help="window end, seconds (default: the end)")
    # No argparse choices: the library's one-line error names the modes.
    p.add_argument("--mode", help="how frames are chosen: uniform (default: equal steps of "
                   "time), keyframes (the nearest keyframes: fastest, maybe fewer frames), "
                   "scenes (a frame of each scene change, the rest uniform)")
    p.add_argument("--timestamps", action="store_true",
                   help="label each frame with its time (\"Frame at 0:01.5:\")")
    p.add_argument("--long", action="store_true",
                   help="a long video: ask each window of --window seconds, then combine "
                   "the answers (each window's answer is printed as evidence)")
    p.add_argument("--window", type=float, metavar="SECONDS", help="with --long: window length")
    p.add_argument("--frames-per-window", type=int, metavar="N",
                   help="with --long: frames per window (default: --frames)")
    p.add_argument("--overlap", type=float, default=0.0, metavar="SECONDS",
                   help="with --long: how much consecutive windows overlap")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--json", action="store_true", help="print the answer, usage and timings "
                   "as JSON")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("batch", help="answer every question of a JSONL manifest into a "
                       "results file (OpenAI Batch output lines; resumable)")
    p.add_argument("manifest", help='JSONL, one question a line: {"custom_id", "video", '
                   '"question"} + optional frames, fps, start, end, mode (uniform, keyframes, '
                   'scenes), timestamps, '
                   "max_tokens, temperature...")
    p.add_argument("--out", required=True, help="results JSONL; rows already in it are skipped")
    p.add_argument("--server", help="server URL (default: $VIDCHAT_BASE_URL or "
                   "http://127.0.0.1:8000/v1)")
    p.add_argument("--model", help="model name (default: the server's only model)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="requests in flight, and videos in progress (default 8)")
    p.add_argument("--max-retries", type=int, default=5,
                   help="retries of a 429/503/connection error per request, with backoff")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("bench", help="load-test a server with video questions (sampled frames)")
    p.add_argument("--server", help="server URL (default: $VIDCHAT_BASE_URL or "
                   "http://127.0.0.1:8000/v1)")
    p.add_argument("--model", help="model name (default: the server's only model)")
    p.add_argument("--requests", type=int, default=32, metavar="N", help="requests to send")
    p.add_argument("--concurrency", type=int, metavar="C",
                   help="requests in flight (closed loop; default 16 without --rate)")
    p.add_argument("--rate", type=float, metavar="R",
                   help="Poisson arrivals, requests/s (open loop; --concurrency caps it)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="F",
                   help="frames per request")
    p.add_argument("--max-tokens", type=int, default=64, metavar="T",
                   help="output tokens per request (ignore_eos: every answer is T long)")
    p.add_argument("--videos", type=int, default=8, metavar="V",
                   help="distinct videos, generated with ffmpeg unless --video is given")
    p.add_argument("--questions-per-video", type=int, default=4, metavar="Q",
                   help="distinct questions per video (requests cycle over V x Q)")
    p.add_argument("--video", action="append", metavar="PATH",
                   help="use this video (repeatable) instead of generated ones")
    p.add_argument("--video-dir", default="~/.cache/vidchat/bench-videos",
                   help="where generated videos are kept")
    p.add_argument("--video-size", default="1280x720", help="generated video size")
    p.add_argument("--video-seconds", type=float, default=6, help="generated video length")
    p.add_argument("--max-seconds", type=float, default=600,
                   help="stop sending and cancel what is in flight after this long")
    p.add_argument("--sweep", metavar="C1,C2,...",
                   help="run the same requests at each concurrency; plots against it")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    p.add_argument("--no-salt", action="store_true",
                   help="share the server's prefix cache with earlier runs (default: a "
                   "fresh cache_salt per run)")
    p.add_argument("--no-session-order", action="store_true",
                   help="send follow-up questions without waiting for their video's first "
                   "answer to start (default: wait, so they find its frames in the prefix "
                   "cache instead of prefilling them side by side)")
    p.add_argument("--out", default="out/bench/vidchat-bench",
                   help="directory for bench.json and the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fail-on-error", action="store_true",
                   help="exit 1 when any request failed")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("parity", help="check the served model against transformers on the "
                       "same frames (prompt length, first-token and greedy logprobs)")
    p.add_argument("--config", default=str(DEFAULT_PROFILE),
                   help="profile to serve and to take the checkpoint from")
    p.add_argument("--server", help="check this running server instead of starting one "
                   "(it must serve the profile's checkpoint)")
    p.add_argument("--video", help="video to sample (default: a generated test clip)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    p.add_argument("--question", default="What is happening in this video?")
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens compared")
    p.add_argument("--reference-device", choices=["cpu", "cuda"],
                   help="where transformers runs (default: cuda when available)")
    p.set_defaults(func=_cmd_parity)

    from vidchat.ui.serve import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("ui", help="a web page to try vidchat on a video: sample its frames, "
                       "see them, ask, read the answers as they stream (the ui extra)")
    p.add_argument("--server", help="vLLM server URL (default: $VIDCHAT_BASE_URL or "
                   "http://127.0.0.1:8000/v1)")
    p.add_argument("--model", help="model name (default: the server's only model)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address the page listens on (default {DEFAULT_HOST}: this machine "
                   "only; the page has no login)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port of the page (default {DEFAULT_PORT}; 0 picks a free one)")
    p.set_defaults(func=_cmd_ui)

    p = sub.add_parser("demo", help="the main job end to end on the generated CPU checkpoint")
    p.add_argument("--config", default=str(DEFAULT_PROFILE))
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    p.add_argument("--question", default="What is happening in this video?")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VidchatError as exc:
        print(f"vidchat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidchat: interrupted", file=sys.stderr)
        return 130
