"""`vidchat serve` as a child process: start it on a free loopback port, wait until /health
answers, stop it with a drain. One implementation for the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vidchat.errors import EngineError

HEALTH_POLL_S = 0.5


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServeProcess:
    """A running `vidchat serve`; `start` it, then `wait_ready`, then `stop`."""

    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path | None = None
    """The engine's log (`--log-file`), when one was asked for."""
    output_file: Path | None = None
    """Where `vidchat serve`'s own stdout and stderr went, when not to ours."""
    ready_after_s: float = 0.0

    @classmethod
    def start(
        cls,
        config: str | os.PathLike[str],
        *extra_args: str,
        port: int | None = None,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ServeProcess:
        """Spawn `vidchat serve --config CONFIG --port PORT EXTRA_ARGS...`.

        With ``log_dir`` the engine logs to ``log_dir/engine-PORT.log`` and the launcher's
        messages go to ``log_dir/serve-PORT.out``; without, both stay on our terminal.
        """
        port = port or free_port()
        argv = [sys.executable, "-m", "vidchat", "serve", "--config", os.fspath(config),
                "--port", str(port)]  # fmt: skip
        log_file = output_file = None
        output: IO[bytes] | None = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_file, output_file = log_dir / f"engine-{port}.log", log_dir / f"serve-{port}.out"
            argv += ["--log-file", str(log_file)]
            output = open(output_file, "wb")  # noqa: SIM115 - the child holds it from here
        try:
            proc = subprocess.Popen(
                [*argv, *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                env={**os.environ, **env} if env else None,
                cwd=cwd,
            )
        finally:
            if output is not None:
                output.close()  # the child has its own descriptor
        return cls(proc, port, log_file, output_file)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What the OpenAI SDK wants as ``base_url``."""
        return self.url + "/v1"

    def output_tail(self, chars: int = 3000) -> str:
        """The end of the launcher's messages and of the engine's log, for a failure report."""
        parts = []
        for path in (self.output_file, self.log_file):
            if path is not None and path.exists():
                parts.append(path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    def wait_ready(self, timeout: float) -> float:
        """Block until /health answers 200; the seconds it took.

        Raises EngineError if the process exits first or ``timeout`` passes (the process is
        then stopped).
        """
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"`vidchat serve` exited with code {self.proc.returncode} before it was "
                    "ready; its messages say why"
                    + (f":\n{self.output_tail()}" if self.output_file else " (above).")
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        self.ready_after_s = time.monotonic() - t0
                        return self.ready_after_s
            except OSError:
                pass
            time.sleep(HEALTH_POLL_S)
        self.stop()
        raise EngineError(
            f"`vidchat serve` was not ready within {timeout:.0f} s; its messages say where it "
            "stopped" + (f":\n{self.output_tail()}" if self.output_file else " (above).")
        )

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the launcher drains the engine), SIGKILL after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
