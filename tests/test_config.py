"""Profiles -> engine command line: pure functions, no processes (except the CLI checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidchat.errors import ConfigError
from vidchat.limits import MIB, TOKENS_PER_IMAGE
from vidchat.server.body_limit import LIMIT_ENV, MIDDLEWARE_PATH
from vidchat.server.config import load_config
from vidchat.server.drain import MIDDLEWARE_PATH as DRAIN_MIDDLEWARE_PATH
from vidchat.server.engine import ENGINE_MODULE, build_engine_command
from vidchat.server.launcher import check_safe_to_serve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PROFILES = sorted(CONFIGS.glob("*.yaml"))


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_every_profile_is_present():
    names = {p.name for p in PROFILES}
    assert {"llava-interleave-qwen-0.5b.yaml", "llava-interleave-qwen-7b.yaml",
            "cpu-tiny.yaml"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_flags_agree_with_the_frame_limit(profile: Path):
    cfg = load_config(profile)
    argv = build_engine_command(cfg, environ={}).argv
    assert argv[1:4] == ["-m", ENGINE_MODULE, cfg.model_path]
    assert flag(argv, "--served-model-name") == cfg.served_model_name
    assert json.loads(flag(argv, "--limit-mm-per-prompt")) == {"image": cfg.max_frames,
                                                               "video": 0}
    max_len = int(flag(argv, "--max-model-len"))
    # Every allowed frame fits, with room for the question, and the context is not exceeded.
    assert cfg.max_frames * TOKENS_PER_IMAGE + 256 <= max_len <= 32768
    assert "--enable-prefix-caching" in argv
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--dtype") == "bfloat16"
    assert int(flag(argv, "--shutdown-timeout")) == int(cfg.shutdown_timeout_s)


# The whole engine command line of every profile, pinned: a change to any profile or to the
# command builder shows up here. MODEL and TEMPLATE stand for paths resolved on this machine.
COMMON_TAIL = ["--enable-prefix-caching", "--no-trust-request-chat-template",
               "--no-trust-request-mm-kwargs", "--allowed-media-domains",
               "media-fetching-disabled.invalid"]
PINNED = {
    "cpu-bench": (
        {LIMIT_ENV: "9437184", "VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_CPU_OMP_THREADS_BIND": "0-1",
         "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0"},
        ["MODEL", "--served-model-name", "bench-llava-interleave-qwen", "--dtype", "bfloat16",
         "--max-model-len", "12304", "--limit-mm-per-prompt", '{"image": 16, "video": 0}',
         "--max-num-seqs", "32", "--host", "127.0.0.1", "--port", "8000",
         "--shutdown-timeout", "20", "--api-server-count", "1", "--middleware", MIDDLEWARE_PATH,
         "--middleware", DRAIN_MIDDLEWARE_PATH,
         *COMMON_TAIL, "--max-num-batched-tokens", "2048", "--chat-template", "TEMPLATE"]),
    "cpu-tiny": (
        {LIMIT_ENV: "9437184", "VLLM_CPU_KVCACHE_SPACE": "1",
         "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0"},
        ["MODEL", "--served-model-name", "tiny-llava-interleave-qwen", "--dtype", "bfloat16",
         "--max-model-len", "12304", "--limit-mm-per-prompt", '{"image": 16, "video": 0}',
         "--max-num-seqs", "16", "--host", "127.0.0.1", "--port", "8000",
         "--shutdown-timeout", "20", "--api-server-count", "1", "--middleware", MIDDLEWARE_PATH,
         "--middleware", DRAIN_MIDDLEWARE_PATH,
         *COMMON_TAIL, "--enforce-eager", "--chat-template", "TEMPLATE"]),
    "llava-interleave-qwen-0.5b": (
        {LIMIT_ENV: "17825792", "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0"},
        ["llava-hf/llava-interleave-qwen-0.5b-hf", "--served-model-name",
         "llava-interleave-qwen-0.5b", "--dtype", "bfloat16", "--max-model-len", "23968",
         "--limit-mm-per-prompt", '{"image": 32, "video": 0}', "--max-num-seqs", "128",
         "--host", "127.0.0.1", "--port", "8000", "--shutdown-timeout", "30",
         "--api-server-count", "4", "--middleware", MIDDLEWARE_PATH,
         "--middleware", DRAIN_MIDDLEWARE_PATH, *COMMON_TAIL,
         "--max-num-batched-tokens", "16384", "--gpu-memory-utilization", "0.9",
         "--chat-template", "TEMPLATE"]),
    "llava-interleave-qwen-7b": (
        {LIMIT_ENV: "9437184", "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0"},
        ["llava-hf/llava-interleave-qwen-7b-hf", "--served-model-name",
         "llava-interleave-qwen-7b", "--dtype", "bfloat16", "--max-model-len", "12304",
         "--limit-mm-per-prompt", '{"image": 16, "video": 0}', "--max-num-seqs", "32",
         "--host", "127.0.0.1", "--port", "8000", "--shutdown-timeout", "60",
         "--api-server-count", "4", "--middleware", MIDDLEWARE_PATH,
         "--middleware", DRAIN_MIDDLEWARE_PATH, *COMMON_TAIL,
         "--max-num-batched-tokens", "16384", "--gpu-memory-utilization", "0.9",
         "--chat-template", "TEMPLATE"]),
}


def test_every_profile_is_pinned():
    assert {p.stem for p in PROFILES} == set(PINNED)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_command_line_is_pinned(profile: Path):
    cfg = load_config(profile)
    cmd = build_engine_command(cfg, environ={}, python="python")
    shown = {cfg.chat_template_path: "TEMPLATE"}
    if cfg.generate_model:  # a generated checkpoint: a path resolved on this machine
        shown[cfg.model_path] = "MODEL"
    env, args = PINNED[profile.stem]
    assert cmd.argv[:3] == ["python", "-m", "vidchat.server.vllm_serve"]
    assert [shown.get(a, a) for a in cmd.argv[3:]] == args
    assert cmd.env == env


def test_every_profile_parses_with_vllms_own_serve_parser():
    # The argv after `python -m vidchat.server.vllm_serve` is `vllm serve`'s: vLLM's parser
    # takes every flag, the GPU profiles' too (parsing needs no GPU).
    from vidchat.server.vllm_serve import parse_serve_args

    for profile in PROFILES:
        cfg = load_config(profile)
        args = parse_serve_args(build_engine_command(cfg, {}).argv[3:])
        assert args.subparser == "serve" and args.model_tag == cfg.model_path
        assert args.api_server_count == cfg.api_servers
        assert args.middleware == [MIDDLEWARE_PATH, DRAIN_MIDDLEWARE_PATH]
        assert args.limit_mm_per_prompt == {"image": cfg.max_frames, "video": 0}
        assert args.max_model_len == cfg.context_length


def test_api_servers_and_request_cap_overrides_reach_the_command_line():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["api_servers=2", "max_request_mb=3"])
    cmd = build_engine_command(cfg, {})
    assert flag(cmd.argv, "--api-server-count") == "2"
    assert cmd.env[LIMIT_ENV] == str(3 * MIB)
    # Several API processes: the launcher drains the engine core before stopping them.
    assert cmd.drain_engine_core_first
    one = build_engine_command(load_config(CONFIGS / "cpu-tiny.yaml"), {})
    assert not one.drain_engine_core_first


@pytest.mark.parametrize(("frames", "mb"), [(1, 2), (16, 9), (32, 17), (44, 23)])
def test_default_request_cap_holds_max_frames_of_worst_case_frames(frames: int, mb: int):
    import base64

    import numpy as np
    from PIL import Image

    from vidchat.client._encoding import encode_jpeg

    cfg = load_config(CONFIGS / "cpu-tiny.yaml", [f"max_frames={frames}"])
    assert cfg.request_limit_mb == mb and cfg.max_request_bytes == mb * MIB
    # Uniform noise is the worst case for JPEG; the client's own encoder, at its own size.
    noise = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    worst_frame = len(base64.b64encode(encode_jpeg(Image.fromarray(noise))))
    assert cfg.max_request_bytes > frames * worst_frame + MIB
    # ...and not far more than that: the cap exists to bound memory.
    assert cfg.max_request_bytes < 2 * (frames * worst_frame + MIB)


@pytest.mark.parametrize(("override", "key", "says"), [
    ("api_servers=0", "api_servers", "greater than or equal to 1"),
    ("api_servers=two", "api_servers", "valid integer"),
    ("api_servers=1.5", "api_servers", "valid integer"),
    ("api_servers=65", "api_servers", "less than or equal to 64"),
    ("max_request_mb=0", "max_request_mb", "greater than or equal to 1"),
    ("max_request_mb=big", "max_request_mb", "valid integer"),
    ("max_request_mb=5242880", "max_request_mb", "in MiB"),
    ('extra_args=["--api-server-count", "3"]', "extra_args", "use the key 'api_servers'"),
    ('env={"VIDCHAT_MAX_REQUEST_BYTES": "1"}', "env", "use the key 'max_request_mb'"),
])
def test_bad_values_for_the_front_end_keys_are_one_line_naming_the_key(override: str, key: str,
                                                                      says: str):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "cpu-tiny.yaml", [override])
    message = str(info.value)
    assert f"bad value for '{key}'" in message and says in message, message
    assert "\n" not in message


def test_gpu_profiles_pin_the_real_checkpoints():
    small = build_engine_command(load_config(CONFIGS / "llava-interleave-qwen-0.5b.yaml"), {})
    big = build_engine_command(load_config(CONFIGS / "llava-interleave-qwen-7b.yaml"), {})
    assert small.argv[3] == "llava-hf/llava-interleave-qwen-0.5b-hf"
    assert big.argv[3] == "llava-hf/llava-interleave-qwen-7b-hf"
    for cmd in (small, big):
        # Several API processes: the front end keeps up with the GPU (reasons in the profiles).
        assert flag(cmd.argv, "--api-server-count") == "4"
        assert "--gpu-memory-utilization" in cmd.argv
        assert int(flag(cmd.argv, "--max-num-batched-tokens")) >= 16384
        assert "--enforce-eager" not in cmd.argv  # CUDA graphs on GPU
        assert not any(k.startswith("VLLM_CPU") for k in cmd.env)


def test_cpu_profile_sizes_the_kv_cache_and_generates_its_checkpoint():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    cmd = build_engine_command(cfg, {})
    assert cfg.device == "cpu" and cfg.generate_model == "tiny"
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == str(cfg.kv_cache_space_gib)
    assert "--enforce-eager" in cmd.argv
    # Relative model paths resolve against the profile's folder, not the working directory.
    assert Path(cmd.argv[3]).is_absolute()


def test_overrides_win_over_the_file_and_are_typed():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["max_frames=4", "enforce_eager=false"])
    assert cfg.max_frames == 4 and cfg.enforce_eager is False
    argv = build_engine_command(cfg, {}).argv
    assert json.loads(flag(argv, "--limit-mm-per-prompt"))["image"] == 4
    assert "--enforce-eager" not in argv


def test_a_typo_in_a_key_names_the_key_and_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "cpu-tiny.yaml").read_text() + "max_frame: 12\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert "unknown key 'max_frame'" in message and str(bad) in message
    assert "\n" not in message


def test_the_cli_prints_one_line_for_a_typo(tmp_path: Path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("model: x\nserved_model_name: x\nmax_framez: 3\n")
    run = subprocess.run([sys.executable, "-m", "vidchat", "serve", "--config", str(bad),
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "unknown key 'max_framez'" in run.stderr and "typo.yaml" in run.stderr


def test_max_model_len_too_small_for_the_frames_is_refused():
    with pytest.raises(ConfigError, match="holds only 2 frames"):
        load_config(CONFIGS / "cpu-tiny.yaml", ["max_model_len=2100"])


def test_dry_run_prints_the_gpu_command_line():
    run = subprocess.run(
        [sys.executable, "-m", "vidchat", "serve", "--config",
         str(CONFIGS / "llava-interleave-qwen-0.5b.yaml"), "--dry-run"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    assert f"-m {ENGINE_MODULE} llava-hf/llava-interleave-qwen-0.5b-hf " in line
    assert "--limit-mm-per-prompt" in line and "--enable-prefix-caching" in line
    # The front end: 4 API processes, the body-cap middleware and its cap (32 frames: 17 MiB).
    assert "--api-server-count 4" in line
    assert f"--middleware {MIDDLEWARE_PATH}" in line
    assert f"{LIMIT_ENV}={17 * MIB} " in line


def test_the_api_key_never_reaches_argv_or_printed_output():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    cmd = build_engine_command(cfg, {"VIDCHAT_API_KEY": "s3cret-key"})
    assert "s3cret-key" not in " ".join(cmd.argv)
    assert cmd.env["VLLM_API_KEY"] == "s3cret-key"
    assert "s3cret-key" not in cmd.shell() and "VLLM_API_KEY=***" in cmd.shell()


def test_a_public_bind_needs_an_api_key():
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["host=0.0.0.0"])
    with pytest.raises(ConfigError, match="without an API key"):
        check_safe_to_serve(cfg, {})
    check_safe_to_serve(cfg, {"VIDCHAT_API_KEY": "k"})  # allowed with a key
    check_safe_to_serve(load_config(CONFIGS / "cpu-tiny.yaml"), {})  # loopback: fine


def test_secure_defaults_are_on_the_command_line():
    cmd = build_engine_command(load_config(CONFIGS / "cpu-tiny.yaml"), {})
    assert "--no-trust-request-chat-template" in cmd.argv
    assert "--no-trust-request-mm-kwargs" in cmd.argv
    assert "--allowed-local-media-path" not in cmd.argv
    # Server-side fetching of media URLs: only an unresolvable reserved domain is allowed.
    assert flag(cmd.argv, "--allowed-media-domains").endswith(".invalid")
    assert cmd.env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"
    opened = build_engine_command(load_config(CONFIGS / "cpu-tiny.yaml", ["media_fetch=true"]),
                                  {})
    assert "--allowed-media-domains" not in opened.argv


def test_queue_bound_maps_to_max_num_queued_reqs():
    cmd = build_engine_command(load_config(CONFIGS / "cpu-tiny.yaml",
                                           ["max_queued_requests=5"]), {})
    assert flag(cmd.argv, "--max-num-queued-reqs") == "5"


def test_restart_backoff_doubles_and_is_capped():
    from vidchat.server.launcher import restart_delay

    assert [restart_delay(i, 2.0) for i in range(4)] == [2.0, 4.0, 8.0, 16.0]
    assert restart_delay(10, 2.0) == 60.0
