"""`vidchat serve`: start the engine, show progress, wait for /health, stop it cleanly.

A thin shell around a process: all decisions about flags live in `engine.py`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import TextIO

from vidchat.errors import ConfigError, EngineError
from vidchat.server.config import ServeConfig
from vidchat.server.cpu_dtype import bf16_advice, this_cpu_flags
from vidchat.server.drain import DRAIN_ENV
from vidchat.server.engine import EngineCommand, build_engine_command

HEALTH_POLL_S = 0.5
PROGRESS_EVERY_S = 10.0
LOG_TAIL_LINES = 30
# vLLM titles its engine core processes "VLLM::EngineCore" (setproctitle, a vLLM dependency).
ENGINE_CORE_TITLE = "VLLM::EngineCore"
# After a drain, the leader still gets this long to stop its API processes.
ENGINE_STOP_MIN_S = 10.0


def default_log_path(cfg: ServeConfig) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidchat" / "logs"
    return base / f"engine-{cfg.served_model_name}-{cfg.port}.log"


def check_safe_to_serve(cfg: ServeConfig, environ: dict[str, str]) -> None:
    """Refuse deployments that would expose an open server."""
    if not cfg.is_loopback and not environ.get(cfg.api_key_env):
        raise ConfigError(
            f"refusing to bind {cfg.host} without an API key: set {cfg.api_key_env}, "
            "or bind 127.0.0.1"
        )


def say_dtype_advice(cfg: ServeConfig, out: TextIO) -> None:
    """One line when the profile's dtype would run emulated on this CPU (`cpu_dtype`); said
    once per `vidchat serve`, for one engine or for all the replicas."""
    advice = bf16_advice(cfg.device, cfg.dtype, this_cpu_flags())
    if advice:
        print(f"vidchat: {advice}", file=out, flush=True)


def ensure_model(cfg: ServeConfig, out: TextIO = sys.stderr) -> None:
    """Generate the profile's random-weight checkpoint on first use, and again when an older
    version of the generator made the one there."""
    if not cfg.generate_model:
        return
    from vidchat.server.tiny_model import is_current, make_tiny_model

    path = Path(cfg.model_path)
    if (path / "config.json").is_file() and is_current(path, cfg.generate_model):
        return
    why = "an older generator made the one there" if path.exists() else "first use"
    print(f"vidchat: generating the {cfg.generate_model} checkpoint at {path} ({why})",
          file=out, flush=True)
    make_tiny_model(path, preset=cfg.generate_model, replace=True)


def _health_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the launcher dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class EngineProcess:
    """The engine subprocess in its own process group, with its log tail kept in memory."""

    def __init__(self, cmd: EngineCommand, log_path: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        # Created when a stop begins: the API processes then answer new requests 503.
        self._drain_flag: Path | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.tail.clear()
        self._drain_flag = Path(tempfile.mkdtemp(prefix="vidchat-drain-")) / "draining"
        env = {**os.environ, **self.cmd.env, DRAIN_ENV: str(self._drain_flag)}
        self.proc = subprocess.Popen(
            self.cmd.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: a stop reaches the engine's worker processes too.
            start_new_session=True,
            # If the launcher itself is killed, the engine goes with it: no orphans.
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.tail.append(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    def stop(self, timeout: float) -> int | None:
        """SIGTERM the API server, wait up to `timeout`, then SIGKILL whatever is left.

        Only the API server gets SIGTERM: it drains in-flight requests (--shutdown-timeout)
        and then stops its engine core. Signalling the whole group would kill the engine core
        at once and fail every request in flight.

        With several API processes (`drain_engine_core_first`) vLLM's own order cuts the
        streams in flight, so the engine core is drained first (see `_drain_engine_cores`).
        """
        if self.proc is None:
            return None
        wait_s = timeout
        if self.proc.poll() is None:
            self._begin_drain()
            if self.cmd.drain_engine_core_first and timeout > 0:
                t0 = time.monotonic()
                self._drain_engine_cores(timeout)
                wait_s = max(ENGINE_STOP_MIN_S, timeout - (time.monotonic() - t0))
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Worker processes may outlive the leader for a moment: make sure none is left.
        self._signal_group(signal.SIGKILL)
        if self._drain_flag is not None:
            shutil.rmtree(self._drain_flag.parent, ignore_errors=True)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def _begin_drain(self) -> None:
        """From now on the API processes answer new requests 503 (server/drain.py)."""
        if self._drain_flag is not None and self._drain_flag.parent.is_dir():
            self._drain_flag.touch()

    def _drain_engine_cores(self, timeout: float) -> None:
        """SIGTERM the engine core processes and wait up to `timeout` for them to exit.

        An engine core drains on SIGTERM: requests in flight run to the end (up to
        --shutdown-timeout) and their tokens still reach the API processes, which keep
        streaming them (new requests are already refused: `_begin_drain`). Only then is the
        leader told to stop, and vLLM then reports the engine core as having died: expected.
        """
        import psutil  # installed with vLLM, which this process starts

        try:
            cores = [p for p in psutil.Process(self.pid).children()
                     if p.name().startswith(ENGINE_CORE_TITLE)]
        except psutil.Error:
            return
        for core in cores:
            try:
                core.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        psutil.wait_procs(cores, timeout=timeout)

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until_ready(
    engine: EngineProcess, health_url: str, timeout: float, out: TextIO = sys.stderr
) -> float:
    """Poll /health; report progress; raise EngineError if the engine dies or takes too long."""
    t0 = time.monotonic()
    last_report = t0
    tty = out.isatty()
    while True:
        elapsed = time.monotonic() - t0
        if _health_ok(health_url):
            if tty:
                out.write("\r\033[K")
            return elapsed
        code = engine.poll()
        if code is not None:
            if tty:
                out.write("\n")
            raise EngineError(
                f"the engine exited with code {code} while starting; its log is "
                f"{engine.log_path} (last line: {engine.last_line()[:200]!r})"
            )
        if elapsed > timeout:
            raise EngineError(
                f"the engine did not answer {health_url} within {timeout:.0f} s: see "
                f"{engine.log_path}, or raise startup_timeout_s"
            )
        now = time.monotonic()
        status = f"vidchat: loading the engine ({elapsed:4.0f} s) {engine.last_line()[:90]}"
        if tty:
            out.write("\r\033[K" + status)
            out.flush()
        elif now - last_report >= PROGRESS_EVERY_S:
            print(status, file=out, flush=True)
            last_report = now
        time.sleep(HEALTH_POLL_S)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def restart_delay(restart: int, base: float, cap: float = 60.0) -> float:
    """Exponential backoff: base, 2 base, 4 base ... capped."""
    return min(cap, base * (2**restart))


def serve(cfg: ServeConfig, *, log_path: Path | None = None, out: TextIO = sys.stderr) -> int:
    """Run and supervise the engine until told to stop. Returns the process exit code.

    If the engine dies on its own after it was ready once (one failing request can take the
    whole vLLM server down), it is restarted with backoff up to `max_restarts` times; /health
    gates readiness again each time. A failure on the very first start is not retried: it is
    almost always a configuration problem that a restart would only repeat.
    """
    check_safe_to_serve(cfg, dict(os.environ))
    ensure_model(cfg, out)
    say_dtype_advice(cfg, out)
    cmd = build_engine_command(cfg, os.environ)
    engine = EngineProcess(cmd, log_path or default_log_path(cfg))
    host = "[::1]" if cfg.host == "::1" else cfg.host
    base = f"http://{host}:{cfg.port}"

    def on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    def say(message: str) -> None:
        print(f"vidchat: {message}", file=out, flush=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts = 0
    try:
        while True:
            engine.start()
            say(f"starting {cfg.served_model_name} (engine pid {engine.pid}, "
                f"log {engine.log_path})")
            try:
                took = wait_until_ready(engine, base + "/health", cfg.startup_timeout_s, out)
            except EngineError:
                if restarts == 0:
                    raise
                code = engine.poll()
            else:
                say(f"ready in {took:.0f} s at {base}/v1 model={cfg.served_model_name} "
                    f"max_frames={cfg.max_frames} api_servers={cfg.api_servers} "
                    f"max_request_mb={cfg.request_limit_mb}")
                code = engine.wait()
            last = engine.last_line()[:160]
            engine.stop(timeout=5)  # reap whatever the dead engine left in its group
            if restarts >= cfg.max_restarts:
                raise EngineError(
                    f"the engine exited with code {code} and was restarted {restarts} times "
                    f"(max_restarts); giving up. Log: {engine.log_path} (last line: {last!r})"
                )
            delay = restart_delay(restarts, cfg.restart_backoff_s)
            restarts += 1
            say(f"the engine exited on its own with code {code} ({last!r}); restart "
                f"{restarts} of {cfg.max_restarts} in {delay:.0f} s")
            time.sleep(delay)
    except _Stop as stop:
        name = signal.Signals(stop.signum).name
        say(f"{name}: draining in-flight requests and stopping the engine (up to "
            f"{cfg.shutdown_timeout_s:.0f} s)")
        engine.stop(cfg.shutdown_timeout_s + 5)
        say("stopped")
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if engine.poll() is None and engine.proc is not None:
            engine.stop(cfg.shutdown_timeout_s)
