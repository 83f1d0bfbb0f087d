"""Scale-out: replica planning and the router's argv (pure), the compose file (validated offline
by Debian's docker-compose), the production-stack Helm values, the images, and one end-to-end
run of `serve_replicas` with 2 CPU engines behind vllm-router (marker: engine)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vidchat.errors import ConfigError
from vidchat.server.body_limit import LIMIT_ENV, MIDDLEWARE_PATH
from vidchat.server.config import ServeConfig, load_config
from vidchat.server.drain import MIDDLEWARE_PATH as DRAIN_MIDDLEWARE_PATH
from vidchat.server.engine import build_engine_command
from vidchat.server.replicas import (
    ROUTER_MODULE,
    ROUTER_VERSION,
    SESSION_HEADER,
    build_router_command,
    gpu_groups,
    plan_replica_set,
    replica_ports,
    visible_gpus,
)

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
HELM_VALUES = DOCKER / "helm" / "values.yaml"
GPU_PROFILE = ROOT / "configs" / "llava-interleave-qwen-0.5b.yaml"
CPU_PROFILE = ROOT / "configs" / "cpu-tiny.yaml"
DOCKER_COMPOSE_APT = "apt-get install -y --no-install-recommends docker-compose"


def flags(argv: list[str]) -> dict[str, str | bool]:
    """`--name value` / `--switch` pairs of an argv, names with '_' spelled '-'."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        name = argv[i].replace("_", "-")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[name] = argv[i + 1]
            i += 2
        else:
            out[name] = True
            i += 1
    return out


def cpu_cfg(**update: object) -> ServeConfig:
    return load_config(CPU_PROFILE).model_copy(update=update)


def gpu_cfg(*overrides: str) -> ServeConfig:
    return load_config(GPU_PROFILE, list(overrides))


# ---------------------------------------------------------------------------------------------
# Replica planning (pure)


def test_replica_ports_are_consecutive_and_bounded():
    assert replica_ports(9001, 3) == [9001, 9002, 9003]
    with pytest.raises(ConfigError, match="at least 1"):
        replica_ports(9001, 0)
    with pytest.raises(ConfigError, match="65535"):
        replica_ports(65535, 2)


def test_gpu_groups_give_each_replica_its_own_gpus():
    assert gpu_groups(2, 1) == ["0", "1"]
    assert gpu_groups(2, 2) == ["0,1", "2,3"]
    assert gpu_groups(2, 1, ["4", "7", "9"]) == ["4", "7"]
    with pytest.raises(ConfigError, match="need 4 GPUs but only 3"):
        gpu_groups(2, 2, ["0", "1", "2"])


def test_visible_gpus_reads_cuda_visible_devices():
    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3,"}) == ["2", "3"]


def test_gpu_plan_sets_cuda_visible_devices_per_replica():
    plan = plan_replica_set(gpu_cfg(), 2, environ={"CUDA_VISIBLE_DEVICES": "4,5,6"})
    assert [p.cuda_visible_devices for p in plan.replicas] == ["4", "5"]
    for p in plan.replicas:
        assert p.command.env["CUDA_VISIBLE_DEVICES"] == p.cuda_visible_devices
    tp = plan_replica_set(gpu_cfg("tensor_parallel_size=2"), 2)
    assert [p.cuda_visible_devices for p in tp.replicas] == ["0,1", "2,3"]
    assert flags(tp.replicas[1].command.argv)["--tensor-parallel-size"] == "2"


def test_cpu_plan_has_no_gpu_variable_and_keeps_engines_on_loopback():
    cfg = cpu_cfg(host="0.0.0.0")
    plan = plan_replica_set(cfg, 3, 18000)
    assert [p.port for p in plan.replicas] == [18001, 18002, 18003]
    assert plan.metrics_port == 18004
    for p in plan.replicas:
        assert p.cuda_visible_devices is None
        assert "CUDA_VISIBLE_DEVICES" not in p.command.env
        f = flags(p.command.argv[3:])
        # Only the router is reachable from outside; engines listen on loopback.
        assert (f["--host"], f["--port"]) == ("127.0.0.1", str(p.port))
        # Everything else is the profile's own command line.
        single = flags(build_engine_command(cfg).argv[3:])
        assert {k: v for k, v in f.items() if k not in ("--host", "--port")} == \
            {k: v for k, v in single.items() if k not in ("--host", "--port")}
    assert plan.base_url == "http://0.0.0.0:18000"


def test_plan_defaults_put_the_router_on_the_profile_port():
    plan = plan_replica_set(cpu_cfg(port=8000), 2)
    assert plan.router_port == 8000
    assert [p.port for p in plan.replicas] == [8001, 8002]


def test_plan_refuses_a_router_port_among_the_replicas():
    with pytest.raises(ConfigError, match="distinct"):
        plan_replica_set(cpu_cfg(), 2, 9002, base_port=9001)


def test_router_argv_routes_by_session_with_a_body_cap():
    cfg = cpu_cfg()
    plan = plan_replica_set(cfg, 2, 18000)
    argv = plan.router.argv
    assert argv[1:3] == ["-m", ROUTER_MODULE]
    f = flags(argv[3:])
    assert f["--policy"] == "consistent_hash"
    assert f["--max-payload-size"] == str(cfg.max_request_bytes)
    assert f["--health-check-endpoint"] == "/health"
    assert (f["--host"], f["--port"]) == (cfg.host, "18000")
    assert f["--prometheus-port"] == "18003"
    i = argv.index("--worker-urls")
    assert argv[i + 1:i + 3] == ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]


def test_router_and_engines_cap_bodies_at_one_number():
    cfg = cpu_cfg(max_request_mb=7, api_servers=2)
    plan = plan_replica_set(cfg, 2, 18000)
    assert plan.max_body_bytes == 7 * 2**20
    assert flags(plan.router.argv[3:])["--max-payload-size"] == str(7 * 2**20)
    for replica in plan.replicas:
        # Each engine runs the body-limit middleware with the same cap, and its API servers.
        assert replica.command.env[LIMIT_ENV] == str(7 * 2**20)
        argv = replica.command.argv
        assert argv[argv.index("--middleware") + 1] == MIDDLEWARE_PATH
        assert flags(argv[4:])["--api-server-count"] == "2"


def need_router() -> None:
    if importlib.util.find_spec("vllm_router") is None:
        reason = f"vllm-router is not installed (pip install vllm-router=={ROUTER_VERSION})"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must exercise the router, not skip it
        pytest.skip(reason)


def test_router_flags_are_the_real_vllm_router_flags():
    need_router()
    from vllm_router import launch_router as launch

    cmd = build_router_command(["http://127.0.0.1:1", "http://127.0.0.1:2"], host="127.0.0.1",
                               port=3, metrics_port=4, max_body_bytes=12345)
    args = launch.parse_router_args(cmd.argv[3:])
    from importlib.metadata import version

    assert version("vllm-router") == ROUTER_VERSION
    assert args.policy == "consistent_hash"
    assert args.max_payload_size == 12345
    assert args.worker_urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert args.prometheus_port == 4


def test_session_header_matches_the_client():
    from vidchat.client import _constants

    sent = getattr(_constants, "SESSION_HEADER", None)
    if sent is None:
        pytest.skip("the client does not name its session header yet")
    assert sent.lower() == SESSION_HEADER.lower()


# ---------------------------------------------------------------------------------------------
# Compose, validated offline


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = f"docker-compose is not installed (Debian: {DOCKER_COMPOSE_APT})"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must validate the compose file, not skip it
        pytest.skip(reason)
    return exe


def compose_config(env: dict[str, str], path: Path = COMPOSE) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "VIDCHAT_API_KEY"}
    return subprocess.run([docker_compose(), "-f", str(path), "config"], capture_output=True,
                          text=True, env={**clean, **env}, timeout=60, check=False)


def test_compose_file_is_valid():
    res = subprocess.run([docker_compose(), "-f", str(COMPOSE), "config", "-q"],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "VIDCHAT_API_KEY": "test"})
    assert res.returncode == 0, res.stderr


def test_compose_validation_catches_mistakes(tmp_path: Path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace('device_ids: ["0"]', 'device_ids: "0"'))
    res = compose_config({"VIDCHAT_API_KEY": "test"}, broken)
    assert res.returncode != 0 and "device_ids" in res.stderr


def test_compose_refuses_to_start_without_an_api_key():
    res = compose_config({})
    assert res.returncode != 0
    assert "VIDCHAT_API_KEY" in res.stderr


def test_compose_services_match_the_replica_plan():
    res = compose_config({"VIDCHAT_API_KEY": "test"})
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    replicas = sorted(s for s in services if s.startswith("replica-"))
    assert len(replicas) >= 2
    cfg = gpu_cfg()
    gpus = []
    for name in replicas:
        svc = services[name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert [d["capabilities"] for d in devices] == [["gpu"]]
        gpus += [g for d in devices for g in d["device_ids"]]
        assert "/health" in " ".join(svc["healthcheck"]["test"])
        assert str(GPU_PROFILE.name) in " ".join(svc["command"])
        # The launcher drains for shutdown_timeout_s, then needs a moment to stop.
        grace = svc["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > cfg.shutdown_timeout_s + 5
    assert len(gpus) == len(set(gpus)) == len(replicas), "one GPU per replica, none shared"

    router = services["router"]
    assert router["entrypoint"] == ["vllm-router"]
    expected = build_router_command(
        [f"http://{name}:8000" for name in replicas], host="0.0.0.0", port=8000,
        metrics_port=29000, metrics_host="0.0.0.0", max_body_bytes=cfg.max_request_bytes,
        startup_timeout_s=cfg.startup_timeout_s)
    assert router["command"] == expected.argv[3:], "compose and --replicas route alike"
    # Published on loopback only, unless the user opens it.
    assert [p.removesuffix("/tcp") for p in router["ports"]] == ["127.0.0.1:8000:8000"]
    assert set(router["depends_on"]) == set(replicas)
    assert all(d["condition"] == "service_healthy" for d in router["depends_on"].values())


# ---------------------------------------------------------------------------------------------
# Helm values for vLLM production-stack


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


@pytest.fixture(scope="module")
def model_spec(values: dict) -> dict:
    specs = values["servingEngineSpec"]["modelSpec"]
    assert len(specs) == 1
    return specs[0]


def chart_engine_argv(spec: dict, container_port: int) -> list[str]:
    """The engine argv production-stack's deployment-vllm-multi.yaml renders from a modelSpec
    (the part of the template these values use)."""
    cfg = spec["vllmConfig"]
    argv = ["vllm", "serve", spec["modelURL"], "--host", "0.0.0.0", "--port",
            str(container_port)]
    if "enableChunkedPrefill" in cfg:
        argv.append("--enable-chunked-prefill" if cfg["enableChunkedPrefill"]
                    else "--no-enable-chunked-prefill")
    argv.append("--enable-prefix-caching" if cfg.get("enablePrefixCaching")
                else "--no-enable-prefix-caching")
    for key, name in [("maxModelLen", "--max-model-len"), ("dtype", "--dtype"),
                      ("tensorParallelSize", "--tensor-parallel-size"),
                      ("maxNumSeqs", "--max-num-seqs"),
                      ("gpuMemoryUtilization", "--gpu_memory_utilization")]:
        if key in cfg:
            argv += [name, str(cfg[key])]
    argv += [str(a) for a in cfg.get("extraArgs", [])]
    if spec.get("chatTemplate"):
        argv += ["--chat-template", f"/templates/{spec['chatTemplate']}"]
    return argv


def test_helm_engine_args_agree_with_the_profile(values: dict, model_spec: dict):
    cfg = gpu_cfg()
    port = values["servingEngineSpec"]["containerPort"]
    chart = flags(chart_engine_argv(model_spec, port)[3:])
    argv = build_engine_command(cfg).argv
    # The chart's image is vLLM's own, without vidchat, so without its middleware: the
    # ingress caps request bodies at the same number (test_helm_ingress_caps_the_body_like_
    # compose), and Kubernetes stops sending requests to a terminating pod itself.
    middleware = [argv[i + 1] for i, a in enumerate(argv) if a == "--middleware"]
    assert middleware == [MIDDLEWARE_PATH, DRAIN_MIDDLEWARE_PATH]
    ours = flags(argv[4:])  # after `python -m vidchat.server.vllm_serve MODEL`
    ours.pop("--middleware")
    assert model_spec["modelURL"] == cfg.model == argv[3]
    # Where the chart necessarily differs: listen address, and where the template is mounted.
    assert (chart.pop("--host"), chart.pop("--port")) == ("0.0.0.0", str(port))
    for name in ("--host", "--port"):
        ours.pop(name)
    assert chart.pop("--chat-template") == "/templates/" + Path(cfg.chat_template_path).name
    ours.pop("--chat-template")
    assert chart == ours
    # The frame limit and the context agree with each other and with the profile.
    assert json.loads(chart["--limit-mm-per-prompt"])["image"] == cfg.max_frames
    assert int(chart["--max-model-len"]) == cfg.context_length


def test_helm_engine_env_and_template_agree_with_the_profile(model_spec: dict):
    cfg = gpu_cfg()
    env = {e["name"]: e["value"] for e in model_spec["env"]}
    ours = build_engine_command(cfg).env
    assert ours.pop(LIMIT_ENV) == str(cfg.max_request_bytes)  # the middleware's: not there
    assert env == ours
    template = Path(cfg.chat_template_path).read_text()
    assert model_spec["chatTemplateConfigMap"] == template.rstrip("\n")


def test_helm_engine_image_is_the_pinned_vllm(model_spec: dict):
    pinned = re.search(r"^VLLM_VERSION=(\S+)", (ROOT / "scripts" / "setup.sh").read_text(),
                       re.M)
    assert pinned
    assert (model_spec["repository"], model_spec["tag"]) == ("vllm/vllm-openai",
                                                             "v" + pinned.group(1))
    assert model_spec["requestGPU"] == 1
    assert model_spec["replicaCount"] >= 2


def test_helm_routes_sessions_on_the_client_header(values: dict):
    router = values["routerSpec"]
    assert router["enableRouter"] is True
    assert router["routingLogic"] == "session"
    # The router reads it with request.headers.get(): case-insensitive.
    assert router["sessionKey"].lower() == SESSION_HEADER.lower()


def test_helm_probes_hit_health_on_the_engine_port(values: dict):
    engine = values["servingEngineSpec"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health",
                                            "port": engine["containerPort"]}
    startup = engine["startupProbe"]
    budget = startup["initialDelaySeconds"] + startup["periodSeconds"] * \
        startup["failureThreshold"]
    assert budget >= gpu_cfg().startup_timeout_s  # the weights download on first start


def test_helm_grace_period_outlasts_prestop_and_drain(values: dict, model_spec: dict):
    shutdown = values["gracefulShutdown"]
    drain = int(flags(model_spec["vllmConfig"]["extraArgs"])["--shutdown-timeout"])
    assert drain == gpu_cfg().shutdown_timeout_s
    assert shutdown["terminationGracePeriodSeconds"] > shutdown["preStopSleepSeconds"] + drain


def test_helm_ingress_caps_the_body_like_compose(values: dict):
    ingress = values["routerSpec"]["ingress"]
    assert ingress["enabled"] is True
    size = ingress["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size.endswith("m")
    assert int(size[:-1]) * 2**20 == gpu_cfg().max_request_bytes


def load_post_render():
    spec = importlib.util.spec_from_file_location("post_render",
                                                  DOCKER / "helm" / "post_render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered_chart() -> list[dict]:
    """The two Deployments production-stack renders, reduced to what the patch touches."""
    engine = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "vidchat-llava-qwen-05b-deployment-vllm"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"}]}}}}
    router = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "vidchat-deployment-router"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "router-container", "image": "lmcache/lmstack-router"}]}}}}
    return [engine, router, {"apiVersion": "v1", "kind": "Service", "metadata": {}}]


def test_post_renderer_adds_prestop_and_grace_to_engines_only():
    docs = rendered_chart()
    assert load_post_render().add_graceful_shutdown(docs, 10, 60) == 1
    engine_pod, router_pod = docs[0]["spec"]["template"]["spec"], \
        docs[1]["spec"]["template"]["spec"]
    assert engine_pod["terminationGracePeriodSeconds"] == 60
    assert engine_pod["containers"][0]["lifecycle"]["preStop"] == {
        "exec": {"command": ["sleep", "10"]}}
    assert "terminationGracePeriodSeconds" not in router_pod
    with pytest.raises(ValueError, match="must exceed"):
        load_post_render().add_graceful_shutdown(rendered_chart(), 30, 30)


def test_post_renderer_runs_as_helm_calls_it(values: dict):
    script = DOCKER / "helm" / "post_render.py"
    assert os.access(script, os.X_OK)
    res = subprocess.run([sys.executable, str(script)], input=yaml.safe_dump_all(
        rendered_chart()), capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    engine = list(yaml.safe_load_all(res.stdout))[0]["spec"]["template"]["spec"]
    assert engine["terminationGracePeriodSeconds"] == \
        values["gracefulShutdown"]["terminationGracePeriodSeconds"]


# ---------------------------------------------------------------------------------------------
# Images


def dockerfile(name: str) -> str:
    return (DOCKER / name).read_text()


def test_gpu_image_is_the_official_vllm_image_at_the_pinned_version():
    text = dockerfile("Dockerfile.gpu")
    pinned = re.search(r"^VLLM_VERSION=(\S+)", (ROOT / "scripts" / "setup.sh").read_text(),
                       re.M)
    assert pinned and f"ARG VLLM_VERSION={pinned.group(1)}" in text
    assert "FROM vllm/vllm-openai:v${VLLM_VERSION}" in text
    assert 'ENTRYPOINT ["vidchat", "serve"]' in text
    config = re.search(r'CMD \["--config", "/opt/vidchat/configs/([^"]+)"', text)
    assert config and (ROOT / "configs" / config.group(1)).is_file()


def test_cpu_image_uses_the_setup_script_on_the_cpu_engine():
    text = dockerfile("Dockerfile.cpu")
    assert "VIDCHAT_ENGINE=cpu" in text and "scripts/setup.sh" in text
    assert 'ENTRYPOINT ["vidchat", "serve"]' in text
    config = re.search(r'CMD \["--config", "/opt/vidchat/configs/([^"]+)"', text)
    assert config and (ROOT / "configs" / config.group(1)).is_file()
    for path in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / path).exists(), f"COPY {path}: not in the repository"


@pytest.mark.parametrize("name", ["Dockerfile.gpu", "Dockerfile.cpu"])
def test_images_carry_the_checked_router_release(name: str):
    assert f"ARG VLLM_ROUTER_VERSION={ROUTER_VERSION}" in dockerfile(name)


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache"} <= ignored


# ---------------------------------------------------------------------------------------------
# End to end: serve_replicas with 2 CPU engines and vllm-router, on loopback


@dataclass
class Deployment:
    proc: subprocess.Popen[bytes]
    output: Path
    router_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def engine_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.router_port + 1 + i}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def replica_pid(self, i: int) -> int:
        found = re.findall(rf"starting replica {i} at \S+ \(pid (\d+)", self.text())
        assert found, self.text()
        return int(found[-1])


def free_port_block(size: int) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    need_router()
    tmp = tmp_path_factory.mktemp("replicas")
    port = free_port_block(4)
    output = tmp / "serve.out"
    code = ("import sys; from pathlib import Path; "
            "from vidchat.server.config import load_config; "
            "from vidchat.server.replicas import serve_replicas; "
            f"sys.exit(serve_replicas(load_config({str(CPU_PROFILE)!r}), 2, {port}, "
            f"log_dir=Path({str(tmp)!r})))")
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    dep = Deployment(proc, output, port)
    deadline = time.monotonic() + 600
    while "vidchat: ready in" not in dep.text():
        if proc.poll() is not None:
            pytest.fail(f"serve_replicas exited with {proc.returncode}:\n{dep.text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve_replicas failed to start in time:\n{dep.text()[-3000:]}")
        time.sleep(0.5)
    yield dep
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def frame_url(seed: int) -> str:
    from PIL import Image

    image = Image.new("RGB", (384, 384), ((seed * 40) % 256, (seed * 90) % 256, 30))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(dep: Deployment, session: str | None, seed: int, pad: int = 0) -> tuple[int, str]:
    import httpx

    content: list[dict] = [{"type": "image_url", "image_url": {"url": frame_url(seed)}}] * 2
    content.append({"type": "text", "text": "What happens?" + " " * pad})
    body = {"model": "tiny-llava-interleave-qwen", "max_tokens": 4,
            "messages": [{"role": "user", "content": content}]}
    headers = {SESSION_HEADER: session} if session else {}
    r = httpx.post(dep.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    return r.status_code, r.text


def successes(dep: Deployment) -> list[float]:
    import httpx

    counts = []
    for i in range(2):
        text = httpx.get(dep.engine_url(i) + "/metrics", timeout=10).text
        counts.append(sum(float(v) for v in re.findall(
            r"^vllm:request_success_total\{[^}]*\} (\S+)", text, re.M)))
    return counts


@pytest.mark.engine
def test_replicas_one_video_one_replica_and_videos_spread(deployment: Deployment):
    used = set()
    # The router hashes the session onto the workers' URLs, whose ports change from run to
    # run: six given videos all land on one replica in 1 run of 32 (seen once). So at least
    # six videos, and more until both replicas have one: 16 all on one replica is 1 in 32768.
    for video in range(16):
        before = successes(deployment)
        for _ in range(3):
            status, text = ask(deployment, f"video-{video}", video)
            assert status == 200, text
        delta = [b - a for a, b in zip(before, successes(deployment), strict=True)]
        assert sorted(delta) == [0, 3], f"video-{video} was split across replicas: {delta}"
        used.add(delta.index(3))
        if video >= 5 and used == {0, 1}:
            break
    assert used == {0, 1}, f"{video + 1} videos all landed on one replica"


@pytest.mark.engine
def test_replicas_router_caps_the_body(deployment: Deployment):
    import httpx

    limit = load_config(CPU_PROFILE).max_request_bytes
    status, text = ask(deployment, "video-big", 1, pad=limit)
    assert status == 413, text
    status, _ = ask(deployment, "video-0", 0)
    assert status == 200
    # The engines behind it refuse the same body themselves (their middleware, one number).
    body = b'{"pad": "' + b" " * limit + b'"}'
    direct = httpx.post(deployment.engine_url(0) + "/v1/chat/completions", content=body,
                        headers={"content-type": "application/json"}, timeout=60)
    assert direct.status_code == 413
    assert f"limit of {limit} bytes" in direct.json()["error"]["message"]


@pytest.mark.engine
def test_replicas_failover_keeps_answering(deployment: Deployment):
    os.killpg(deployment.replica_pid(0), signal.SIGKILL)
    for video in range(6):  # half of these sessions lived on the killed replica
        status, text = ask(deployment, f"video-{video}", video)
        assert status == 200, text
    deadline = time.monotonic() + 30
    while "restarting replica 0" not in deployment.text():
        assert time.monotonic() < deadline, deployment.text()[-2000:]
        time.sleep(0.5)


@pytest.mark.engine
def test_replicas_sigterm_stops_everything(deployment: Deployment):
    pids = [int(p) for p in re.findall(r"\(pid (\d+)", deployment.text())]
    deployment.proc.send_signal(signal.SIGTERM)
    # Worst case: the drain (shutdown_timeout_s + 5), SIGKILL and reaping (10), the router
    # (10 + 10); replica 0 may still be loading after the failover test.
    budget = load_config(CPU_PROFILE).shutdown_timeout_s + 5 + 40 + 30
    assert deployment.proc.wait(timeout=budget) == 0
    assert "vidchat: stopped" in deployment.text()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"pid {pid} outlived serve_replicas"
    for port in range(deployment.router_port, deployment.router_port + 4):
        with socket.socket() as s:
            # SO_REUSEADDR: the client's closed connections may linger in TIME_WAIT; a bind
            # still fails while anything listens.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
