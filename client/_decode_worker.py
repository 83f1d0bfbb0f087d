"""Decoding in child processes, so a decoder that hangs or crashes cannot take the caller down.

    caller ── run_isolated(request) ──► an idle worker (started on first use, then kept)
                                        stdin:  [8-byte length][pickle: DecodeRequest]
           ◄── DecodeResult or error ── stdout: [8-byte length][pickle: ("ok", result) |
                                                                        ("err", VidchatError)]

- A worker is a plain ``python -c`` child process, so nothing of the caller's ``__main__`` is
  re-imported (unlike multiprocessing's spawn/forkserver), and it works the same from
  scripts, servers and notebooks.
- Past the timeout the worker is killed and VideoDecodeError raised; if it dies (segfault,
  out of memory) VideoDecodeError names the signal. Either way the next call starts a fresh
  worker. Errors the decoder raises on purpose come back as the same VidchatError subclass.
- Workers are reused: start-up (Python, numpy, PyAV) is paid once per worker; one idle for
  WORKER_IDLE_S exits and gives its memory back.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

from vidchat.client._decode import CORES
from vidchat.errors import VidchatError, VideoDecodeError

__all__ = ["DECODE_TIMEOUT_S", "MAX_WORKERS", "prestart", "run_isolated", "shutdown"]

# One call: index the file, decode the frames. Generous: a long file on a slow disk, long
# GOPs at 4K; a hang is what it guards against, not a slow decode.
DECODE_TIMEOUT_S = 120.0
# Decodes in parallel (each worker is a process holding a decoder: ~50-100 MB at 1080p), one
# per core the process may use (the same count `decoding_share` divides among the calls).
MAX_WORKERS = max(1, min(4, CORES))
# A worker being shut down gets this long to exit on its own before it is killed.
EXIT_GRACE_S = 2.0
# An idle worker exits after this long, giving back its memory (its decoder's high-water
# mark: ~35 MB at 1080p, plus ~60 MB of interpreter and libraries).
WORKER_IDLE_S = 60.0

_HEADER = struct.Struct("<Q")

# The child imports this module without running vidchat/client/__init__.py, which pulls in
# the OpenAI SDK and pydantic: that would add ~0.45 s and ~40 MB to every worker (measured).
# (If vidchat/__init__.py ever imports vidchat.client itself, the stub is simply not used.)
_BOOTSTRAP = (
    "import sys, types\n"
    "import vidchat\n"
    "if 'vidchat.client' not in sys.modules:\n"
    "    pkg = types.ModuleType('vidchat.client')\n"
    "    pkg.__path__ = [sys.argv[1]]\n"
    "    sys.modules['vidchat.client'] = pkg\n"
    "from vidchat.client._decode_worker import _serve\n"
    "_serve()\n"
)


def _write_message(stream: IO[bytes], obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("the pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_message(stream: IO[bytes]) -> Any:
    (length,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, length))


class _WorkerGone(Exception):
    """The worker had exited before the request reached it."""


class _Worker:
    """One child process serving decode requests, one at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child must import vidchat from wherever the caller did.
        paths = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.dirname(os.path.abspath(__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.broken = False
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None

    def call(self, request: Any, timeout: float) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        box: dict[str, Any] = {}

        def read() -> None:
            try:
                box["reply"] = _read_message(self.proc.stdout)  # type: ignore[arg-type]
            except BaseException as e:  # EOF (the child died) or a torn message
                box["error"] = e

        try:
            _write_message(self.proc.stdin, request)
        except (BrokenPipeError, ConnectionResetError, ValueError) as e:
            self.kill()  # it died while idle: not this request's fault
            raise _WorkerGone from e
        except BaseException:
            self.kill()
            raise
        try:
            reader = threading.Thread(target=read, name="vidchat-decode-reply", daemon=True)
            reader.start()
            reader.join(timeout)
        except BaseException:
            self.kill()  # interrupted mid-request: its reply would confuse the next caller
            raise
        if reader.is_alive():
            self.kill()
            reader.join(EXIT_GRACE_S)
            raise VideoDecodeError(
                f"Decoding {request.path} took longer than {timeout:g}s and was stopped; "
                "the file may make the decoder hang: re-encode it, or pass a larger timeout.",
                source=request.path,
            )
        if "error" in box:
            reason = self._death()  # before kill(), which would be the cause otherwise
            self.kill()
            raise VideoDecodeError(
                f"The decoder crashed on {request.path} ({reason}); the file is probably "
                "damaged: re-encode it with ffmpeg.",
                source=request.path,
            )
        status, payload = box["reply"]
        if status == "ok":
            return payload
        raise payload

    def _death(self) -> str:
        try:
            code = self.proc.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def kill(self) -> None:
        self.broken = True
        if self.proc.poll() is None:
            self.proc.kill()
        self._close()
        try:
            self.proc.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        """Ask the child to exit (its stdin closes), kill it if it does not."""
        self.broken = True
        self._close()
        try:
            self.proc.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


class _Pool:
    """Up to ``max_workers`` workers; idle ones are kept for the next call."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._idle: list[_Worker] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._reaper: threading.Thread | None = None

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._busy >= self.max_workers:
                self._cond.wait()
            self._busy += 1
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        try:
            return _Worker()
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            self._busy -= 1
            if worker.alive():
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="vidchat-decode-reaper", daemon=True
                    )
                    self._reaper.start()
            self._cond.notify()

    def _reap(self) -> None:
        """Stop workers idle for WORKER_IDLE_S; exit when no worker is left."""
        while True:
            time.sleep(WORKER_IDLE_S / 4)
            now = time.monotonic()
            with self._cond:
                expired = [w for w in self._idle if now - w.idle_since >= WORKER_IDLE_S]
                self._idle = [w for w in self._idle if w not in expired]
                done = not self._idle and not self._busy
                if done:
                    self._reaper = None
            for worker in expired:
                worker.stop()
            if done:
                return

    def run(self, request: Any, timeout: float) -> Any:
        for attempt in range(2):
            worker = self._acquire()
            try:
                return worker.call(request, timeout)
            except _WorkerGone:
                if attempt:
                    raise VideoDecodeError(
                        "The decode worker could not be started; decode in-process with "
                        "isolate=False, or check that this Python can run subprocesses.",
                        source=getattr(request, "path", None),
                    ) from None
            finally:
                self._release(worker)
        raise AssertionError("unreachable")

    def prestart(self, n: int) -> None:
        with self._cond:
            missing = min(n, self.max_workers) - len(self._idle) - self._busy
        for _ in range(max(0, missing)):
            worker = _Worker()
            with self._cond:
                self._idle.append(worker)

    def shutdown(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(MAX_WORKERS)
        return _pool


def run_isolated(request: Any, *, timeout: float | None = None) -> Any:
    """``_sampling.decode(request)`` in a worker process, within ``timeout`` seconds."""
    timeout = DECODE_TIMEOUT_S if timeout is None else float(timeout)
    if not timeout > 0:
        raise VideoDecodeError(f"timeout must be positive, got {timeout}; pass seconds > 0.")
    return _get_pool().run(request, timeout)


def prestart(n: int = 1) -> None:
    """Start ``n`` workers now, so the first decode does not pay their start-up (~0.3-1 s)."""
    _get_pool().prestart(n)


def shutdown() -> None:
    """Stop the idle workers (busy ones stop when their call ends). Runs at exit."""
    if _pool is not None:
        _pool.shutdown()


def _forget_pool_in_child() -> None:
    # A forked child must not share the parent's workers (their pipes belong to the parent).
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


# ----------------------------------------------------------------------------------------------
# The child


def _serve() -> None:
    from vidchat.client._decode import decode

    # Replies go to a private copy of stdout; fd 1 then points at stderr, so whatever a C
    # library or a stray print writes cannot land inside a reply.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C reaches the whole process group: the caller decides what to do, not the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    while True:
        try:
            request = _read_message(requests)
        except EOFError:
            return  # the caller closed the pipe (or exited)
        try:
            reply: tuple[str, Any] = ("ok", decode(request))
        except VidchatError as e:
            reply = ("err", e)
        except Exception as e:  # an unexpected failure still answers, with a typed error
            message = (
                f"Decoding {request.path} failed ({type(e).__name__}: {e}); re-encode the file "
                "with ffmpeg, or report the file if it plays elsewhere."
            )
            reply = ("err", VideoDecodeError(message, source=request.path))
        try:
            _write_message(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            _write_message(replies, ("err", VideoDecodeError(f"{reply[1]} ({e})")))


if __name__ == "__main__":
    _serve()
