"""The `vidchat` command. Library errors become one line here: no traceback for user mistakes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vidchat.errors import VidchatError

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
    with VideoChat(args.server, model=args.model) as chat:
        if args.stream and not args.json:
            for piece in chat.stream(args.video, args.question, args.frames, **gen):
                print(piece, end="", flush=True)
            print()
            return 0
        answer = chat.ask(args.video, args.question, args.frames, **gen)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    else:
        print(answer.text)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vidchat.demo import run_demo

    return run_demo(config=args.config, port=args.port, frames=args.frames,
                    question=args.question)


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
    p.add_argument("question")
    p.add_argument("--server", help="server URL (default: $VIDCHAT_BASE_URL or "
                   "http://127.0.0.1:8000/v1)")
    p.add_argument("--model", help="model name (default: the server's only model)")
    p.add_argument("--frames", type=int, default=8, help="frames to sample (default 8)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--json", action="store_true", help="print the answer, usage and timings "
                   "as JSON")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("demo", help="the main job end to end on the generated CPU checkpoint")
    p.add_argument("--config", default=str(DEFAULT_PROFILE))
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--frames", type=int, default=8)
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
