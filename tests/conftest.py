"""Shared fixtures. The engine tests share ONE real vLLM server (cpu-tiny profile, generated
checkpoint) per test session: it takes ~40 s to start on 2 cores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidchat.errors import EngineError
from vidchat.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
CPU_PROFILE = ROOT / "configs" / "cpu-tiny.yaml"
STARTUP_TIMEOUT_S = 600


@dataclass
class RunningServer(ServeProcess):
    """`vidchat serve` on the cpu-tiny profile, and what the tests need to know about it."""

    model: str = "tiny-llava-interleave-qwen"
    model_dir: Path = ROOT / ".cache" / "models" / "tiny-llava-interleave-qwen"

    @property
    def base_url(self) -> str:
        return self.api_url


def start_vidchat_serve(tmp: Path, *extra: str, env: dict[str, str] | None = None
                        ) -> RunningServer:
    """`vidchat serve` on the CPU profile as a real subprocess; waits for /health."""
    server = RunningServer.start(CPU_PROFILE, *extra, log_dir=tmp, env=env)
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
    except EngineError as e:
        pytest.fail(str(e))
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real vLLM server on CPU for the whole session."""
    srv = start_vidchat_serve(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4 s H.264 clip (640x360, 24 fps, a keyframe every 2 s)."""
    from vidchat.clips import make_clip

    return make_clip(tmp_path_factory.mktemp("clips") / "testsrc.mp4", seconds=4,
                     size="640x360", rate=24, gop=48)
