"""`vidchat serve --replicas N`: N engines on one host behind vllm-router, one URL.

    client ──X-Session-ID──► vllm-router (consistent_hash, body cap)  :router_port
                                 ├──► engine 0 (GPU 0)                 :base_port
                                 ├──► engine 1 (GPU 1)                 :base_port + 1
                                 └──► ...                              :base_port + N - 1
                              router metrics (Prometheus)              :base_port + N

The planning is pure (ports, GPUs, each engine's command via `build_engine_command`, the
router's argv, the body cap) and tested without processes; `serve_replicas` is the thin
process shell, reusing the launcher's `EngineProcess` for the engines and the router alike.

The router is the PyPI package `vllm-router` (Rust). Its `consistent_hash` policy reads the
session from the `x-session-id` header first (the header names are built in, not a flag), so
every question about one video lands on the replica whose prefix cache holds its frames.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vidchat.errors import ConfigError, EngineError
from vidchat.limits import SESSION_HEADER
from vidchat.server.config import ServeConfig
from vidchat.server.engine import EngineCommand, build_engine_command
from vidchat.server.launcher import (
    EngineProcess,
    _health_ok,
    check_safe_to_serve,
    default_log_path,
    ensure_model,
    restart_delay,
    say_dtype_advice,
    wait_until_ready,
)

ROUTER_MODULE = "vllm_router.launch_router"
ROUTER_VERSION = "0.1.17"  # the release whose flags and header names were checked
ROUTER_POLICY = "consistent_hash"
HEALTH_PATH = "/health"
# The router probes each engine this often and marks it unhealthy after this many misses: a
# dead replica's sessions go elsewhere within ~10 s (the default, 60 s x 3, takes minutes).
ROUTER_HEALTH_INTERVAL_S = 5
ROUTER_HEALTH_FAILURES = 2
# The router retries a failed request on the worker its hash picks; after this many failures
# the worker's circuit opens and the next attempt goes to a healthy one. At the default (10)
# the first requests for a dead replica's sessions fail outright (measured: two 500s).
ROUTER_BREAKER_FAILURES = 3
ROUTER_STARTUP_TIMEOUT_S = 60.0
SUPERVISE_POLL_S = 1.0
ENGINE_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ReplicaPlan:
    """One engine: its index, loopback port, GPUs, profile and command line."""

    index: int
    port: int
    cuda_visible_devices: str | None
    cfg: ServeConfig
    command: EngineCommand

    @property
    def url(self) -> str:
        return f"http://{ENGINE_LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class ReplicaSet:
    """Everything `serve_replicas` starts, decided before anything starts."""

    replicas: tuple[ReplicaPlan, ...]
    router: EngineCommand
    host: str
    router_port: int
    metrics_port: int
    max_body_bytes: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.router_port}"

    def describe(self) -> str:
        """Every command line, secrets masked (for --dry-run)."""
        lines = [f"# replica {p.index}: {p.url}\n{p.command.shell()}" for p in self.replicas]
        lines.append(f"# router: {self.base_url}\n{self.router.shell()}")
        return "\n".join(lines)


def replica_ports(base_port: int, replicas: int) -> list[int]:
    """Consecutive ports from `base_port`, one per replica."""
    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {replicas}")
    last = base_port + replicas - 1
    if base_port < 1 or last > 65535:
        raise ConfigError(
            f"{replicas} replicas from port {base_port} need ports up to {last}: pick a base "
            "port between 1 and 65535 that leaves room for them"
        )
    return list(range(base_port, base_port + replicas))


def visible_gpus(environ: Mapping[str, str]) -> list[str] | None:
    """The GPU ids this process may use, from CUDA_VISIBLE_DEVICES; None when it is unset."""
    raw = environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [g.strip() for g in raw.split(",") if g.strip()]


def gpu_groups(replicas: int, tensor_parallel_size: int,
               gpu_ids: Sequence[str] | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each replica: `tensor_parallel_size` GPUs each, no sharing.

    `gpu_ids` are the GPUs to spread over (default 0, 1, 2 ...: as many as needed).
    """
    need = replicas * tensor_parallel_size
    ids = [str(i) for i in range(need)] if gpu_ids is None else list(gpu_ids)
    if len(ids) < need:
        raise ConfigError(
            f"{replicas} replicas x tensor_parallel_size {tensor_parallel_size} need {need} "
            f"GPUs but only {len(ids)} are visible ({','.join(ids) or 'none'}): lower "
            "--replicas or set CUDA_VISIBLE_DEVICES"
        )
    return [",".join(ids[i * tensor_parallel_size:(i + 1) * tensor_parallel_size])
            for i in range(replicas)]


def build_router_command(
    worker_urls: Sequence[str],
    *,
    host: str,
    port: int,
    metrics_port: int,
    max_body_bytes: int,
    metrics_host: str = ENGINE_LOOPBACK,
    startup_timeout_s: float = 600,
    python: str = sys.executable,
) -> EngineCommand:
    """vllm-router's argv: consistent hashing on the session header, body cap, health checks.

    `argv[3:]` (after `python -m vllm_router.launch_router`) is what the `vllm-router`
    console script takes, as in docker/compose.yaml.
    """
    if not worker_urls:
        raise ConfigError("the router needs at least one worker URL")
    argv = [
        python, "-m", ROUTER_MODULE,
        "--host", host,
        "--port", str(port),
        "--worker-urls", *worker_urls,
        # Hashes x-session-id (then x-user-id, ..., then the body): same video, same replica.
        "--policy", ROUTER_POLICY,
        # Oversized bodies are refused by the router before any engine sees them (413).
        "--max-payload-size", str(max_body_bytes),
        "--health-check-endpoint", HEALTH_PATH,
        "--health-check-interval-secs", str(ROUTER_HEALTH_INTERVAL_S),
        "--health-failure-threshold", str(ROUTER_HEALTH_FAILURES),
        "--cb-failure-threshold", str(ROUTER_BREAKER_FAILURES),
        # Workers are already healthy when the router starts: check at once, not every 30 s.
        "--worker-startup-timeout-secs", str(int(startup_timeout_s)),
        "--worker-startup-check-interval", "1",
        # The default metrics port (29000) would collide between two deployments on one host.
        "--prometheus-host", metrics_host,
        "--prometheus-port", str(metrics_port),
    ]
    return EngineCommand(argv=argv)


def plan_replica_set(
    cfg: ServeConfig,
    replicas: int,
    router_port: int | None = None,
    *,
    base_port: int | None = None,
    gpu_ids: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> ReplicaSet:
    """Plan N engines and the router for a profile. Pure: nothing is started or probed.

    The router listens where a single server would (`cfg.host`, `router_port`, default
    `cfg.port`); engines listen on loopback only, on `base_port` (default router_port + 1)
    and up; the router's metrics take the next port. On GPU each engine gets its own
    `tensor_parallel_size` GPUs from `gpu_ids` (default: CUDA_VISIBLE_DEVICES, else 0..);
    on CPU no GPU variable is set.
    """
    environ = {} if environ is None else environ
    router_port = cfg.port if router_port is None else router_port
    base_port = router_port + 1 if base_port is None else base_port
    ports = replica_ports(base_port, replicas)
    metrics_port = base_port + replicas
    taken = {*ports, metrics_port}
    if router_port in taken or metrics_port > 65535:
        raise ConfigError(
            f"router port {router_port} and replica ports {ports[0]}-{metrics_port} (the last "
            "one for the router's metrics) must be distinct ports below 65536: choose another "
            "base port"
        )
    if cfg.device == "cuda":
        groups: list[str | None] = list(gpu_groups(
            replicas, cfg.tensor_parallel_size,
            gpu_ids if gpu_ids is not None else visible_gpus(environ)))
    else:
        groups = [None] * replicas

    plans = []
    for index, (port, gpus) in enumerate(zip(ports, groups, strict=True)):
        env = dict(cfg.env)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        one = cfg.model_copy(update={"host": ENGINE_LOOPBACK, "port": port, "env": env})
        plans.append(ReplicaPlan(index, port, gpus, one, build_engine_command(one, environ,
                                                                              python)))
    # The engines' own cap (their body-limit middleware) and the router's are one number.
    limit = cfg.max_request_bytes
    router = build_router_command(
        [p.url for p in plans], host=cfg.host, port=router_port, metrics_port=metrics_port,
        max_body_bytes=limit, startup_timeout_s=cfg.startup_timeout_s, python=python)
    return ReplicaSet(tuple(plans), router, cfg.host, router_port, metrics_port, limit)


# ---------------------------------------------------------------------------------------------
# The process shell.


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _stop_all(processes: Sequence[EngineProcess], timeout: float) -> None:
    """Stop several process groups at once: the drain takes one timeout, not N."""
    # stop() also reaps the group of a leader that has already exited.
    threads = [threading.Thread(target=p.stop, args=(timeout,), daemon=True)
               for p in processes if p.proc is not None]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 15)


def serve_replicas(
    cfg: ServeConfig,
    replicas: int,
    router_port: int | None = None,
    *,
    base_port: int | None = None,
    gpu_ids: Sequence[str] | None = None,
    log_dir: Path | None = None,
    out: TextIO = sys.stderr,
) -> int:
    """Run N engines and vllm-router until told to stop; return the exit code.

    Engines start together (they load in parallel), the router starts once all answer
    /health, and one line gives the single URL. A replica that dies later is restarted with
    the launcher's backoff (up to `max_restarts` times each) while the router sends its
    sessions to the others. SIGTERM/SIGINT: engines drain (`shutdown_timeout_s`) while the
    router still relays their answers, then the router stops; every process group is reaped.
    """
    environ = dict(os.environ)
    check_safe_to_serve(cfg, environ)
    if importlib.util.find_spec(ROUTER_MODULE.split(".")[0]) is None:
        raise ConfigError(
            f"--replicas needs vllm-router in this environment: pip install "
            f"vllm-router=={ROUTER_VERSION}"
        )
    plan = plan_replica_set(cfg, replicas, router_port, base_port=base_port, gpu_ids=gpu_ids,
                            environ=environ)
    ensure_model(cfg, out)
    say_dtype_advice(cfg, out)

    def log_for(name: str, default: Path) -> Path:
        return log_dir / name if log_dir is not None else default

    engines = [EngineProcess(p.command, log_for(f"engine-{p.port}.log",
                                                default_log_path(p.cfg)))
               for p in plan.replicas]
    router = EngineProcess(plan.router, log_for(
        f"router-{plan.router_port}.log",
        default_log_path(cfg).with_name(f"router-{plan.router_port}.log")))
    everything = [*engines, router]

    def say(message: str) -> None:
        print(f"vidchat: {message}", file=out, flush=True)

    def on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        t0 = time.monotonic()
        for p, engine in zip(plan.replicas, engines, strict=True):
            engine.start()
            gpu = f", GPU {p.cuda_visible_devices}" if p.cuda_visible_devices else ""
            say(f"starting replica {p.index} at {p.url}{gpu} (pid {engine.pid}, "
                f"log {engine.log_path})")
        for p, engine in zip(plan.replicas, engines, strict=True):
            left = max(1.0, cfg.startup_timeout_s - (time.monotonic() - t0))
            wait_until_ready(engine, p.url + HEALTH_PATH, left, out)
        router.start()
        wait_until_ready(router, plan.base_url + HEALTH_PATH, ROUTER_STARTUP_TIMEOUT_S, out)
        say(f"ready in {time.monotonic() - t0:.0f} s at {plan.base_url}/v1 "
            f"model={cfg.served_model_name} max_frames={cfg.max_frames} replicas={replicas} "
            f"api_servers={cfg.api_servers} max_request_mb={cfg.request_limit_mb} "
            f"(vllm-router, {SESSION_HEADER} affinity)")
        _supervise(cfg, plan, engines, router, say)
        return 1  # not reached: _supervise returns only by raising
    except _Stop as stop:
        name = signal.Signals(stop.signum).name
        say(f"{name}: draining {replicas} replicas (up to {cfg.shutdown_timeout_s:.0f} s), "
            "then stopping the router")
        try:
            _stop_all(engines, cfg.shutdown_timeout_s + 5)
            _stop_all([router], 10)
        except _Stop:  # a second signal: no more waiting
            say("stopping now")
            _stop_all(everything, 0)
        say("stopped")
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_all(everything, 10)


def _supervise(cfg: ServeConfig, plan: ReplicaSet, engines: list[EngineProcess],
               router: EngineProcess, say: Callable[[str], None]) -> None:
    """Watch the router and the engines; restart dead engines with backoff. Never returns."""
    restarts = [0] * len(engines)
    due: dict[int, float] = {}  # replica index -> when to restart it
    rejoining: set[int] = set()
    down: set[int] = set()  # out of restarts: left down, the router serves its sessions
    while True:
        time.sleep(SUPERVISE_POLL_S)
        code = router.poll()
        if code is not None:
            raise EngineError(
                f"the router exited with code {code}; its log is {router.log_path} "
                f"(last line: {router.last_line()[:200]!r})"
            )
        now = time.monotonic()
        for i, (p, engine) in enumerate(zip(plan.replicas, engines, strict=True)):
            if i in down:
                continue
            if i in due:
                if now >= due[i]:
                    del due[i]
                    engine.start()
                    rejoining.add(i)
                    say(f"restarting replica {i} (pid {engine.pid})")
                continue
            code = engine.poll()
            if code is None:
                if i in rejoining and _health_ok(p.url + HEALTH_PATH):
                    rejoining.discard(i)
                    say(f"replica {i} is back at {p.url}")
                continue
            last = engine.last_line()[:160]
            engine.stop(timeout=5)  # reap what the dead engine left in its group
            rejoining.discard(i)
            if restarts[i] >= cfg.max_restarts:
                down.add(i)
                if len(down) == len(engines):
                    raise EngineError(
                        f"every replica has exited and used up its {cfg.max_restarts} "
                        f"restarts (replica {i}: code {code}, {last!r}); logs: "
                        + ", ".join(str(e.log_path) for e in engines))
                say(f"replica {i} exited with code {code} ({last!r}) after {restarts[i]} "
                    "restarts: leaving it down; the router serves its sessions from the others")
                continue
            delay = restart_delay(restarts[i], cfg.restart_backoff_s)
            restarts[i] += 1
            due[i] = now + delay
            say(f"replica {i} exited with code {code} ({last!r}); the router sends its "
                f"sessions elsewhere; restart {restarts[i]} of {cfg.max_restarts} in "
                f"{delay:.0f} s")
