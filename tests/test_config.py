"""Profiles -> engine command line: pure functions, no processes (except the CLI checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidchat.errors import ConfigError
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.server.config import load_config
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
    assert argv[1:3] == ["-m", ENGINE_MODULE]
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


def test_gpu_profiles_pin_the_real_checkpoints():
    small = build_engine_command(load_config(CONFIGS / "llava-interleave-qwen-0.5b.yaml"), {})
    big = build_engine_command(load_config(CONFIGS / "llava-interleave-qwen-7b.yaml"), {})
    assert flag(small.argv, "--model") == "llava-hf/llava-interleave-qwen-0.5b-hf"
    assert flag(big.argv, "--model") == "llava-hf/llava-interleave-qwen-7b-hf"
    for cmd in (small, big):
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
    assert Path(flag(cmd.argv, "--model")).is_absolute()


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
    assert ENGINE_MODULE in line
    assert "--model llava-hf/llava-interleave-qwen-0.5b-hf" in line
    assert "--limit-mm-per-prompt" in line and "--enable-prefix-caching" in line


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
