"""Shared fixtures. The engine tests share ONE real vLLM server (cpu-tiny profile, generated
checkpoint) per test session: it takes ~40 s to start on 2 cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidchat.demo import free_port

ROOT = Path(__file__).resolve().parent.parent
CPU_PROFILE = ROOT / "configs" / "cpu-tiny.yaml"
STARTUP_TIMEOUT_S = 600



@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    model_dir: Path
    model: str = "tiny-llava-interleave-qwen"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_vidchat_serve(tmp: Path, *extra: str, env: dict[str, str] | None = None
                        ) -> RunningServer:
    """`vidchat serve` on the CPU profile as a real subprocess; waits for /health."""
    port = free_port()
    log = tmp / f"engine-{port}.log"
    out = open(tmp / f"serve-{port}.out", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidchat", "serve", "--config", str(CPU_PROFILE),
         "--port", str(port), "--log-file", str(log), *extra],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    server = RunningServer(proc, port, log, ROOT / ".cache" / "models" /
                           "tiny-llava-interleave-qwen")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n"
                        f"{(tmp / f'serve-{port}.out').read_text()[-3000:]}\n"
                        f"{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    stop_vidchat_serve(server)
    pytest.fail(f"server failed to start in {STARTUP_TIMEOUT_S} s:\n{server.log_text()[-3000:]}")


def stop_vidchat_serve(server: RunningServer, timeout: float = 60) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real vLLM server on CPU for the whole session."""
    srv = start_vidchat_serve(tmp_path_factory.mktemp("server"))
    yield srv
    stop_vidchat_serve(srv)


@pytest.fixture(scope="session")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4 s H.264 clip (640x360, 24 fps)."""
    from vidchat.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("clips") / "testsrc.mp4", seconds=4,
                          size="640x360", rate=24, gop=48)
