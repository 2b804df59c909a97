#!/usr/bin/env bash
# Set up a fresh machine for this project: Debian ffmpeg, a venv with pinned deps, DVC with analytics off.
# Idempotent: a second run only checks. Usage: bash bootstrap.sh [--detectron2]
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=".venv/bin/python -m pip"
# torch 2.13.0 is the CPU wheel on this machine's disk; anything else may pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q torch==2.13.0
$PIP install -q -c requirements.lock -e '.[dev]'

# --detectron2: the optional detectron2 mask backend, in its own venv (.venv-d2) so .venv keeps torch 2.13 CPU.
# detectron2 is not on PyPI under its own name; pb1-detectron2 0.6 is an sdist of detectron2 v0.6 that lacks
# the C++ sources (layers/csrc) and packs the model-zoo configs where setup.py does not look. So: download it,
# put the configs where setup.py globs them, give it an empty extension module (Panoptic FPN inference uses
# torchvision's roi_align/nms; detectron2's deform-conv and rotated-box ops are then unavailable), build
# without isolation against torch 2.14.1 + torchvision 0.29.1 (the pair on this disk). detectron2 0.6 needs
# pkg_resources (setuptools<81) and PIL.Image.LINEAR (pillow<10).
if [ "${1:-}" = "--detectron2" ] && ! .venv-d2/bin/python -c "import detectron2" 2>/dev/null; then
    [ -x .venv-d2/bin/python ] || python3 -m venv .venv-d2
    D2PIP=".venv-d2/bin/python -m pip"
    $D2PIP install -q torch==2.14.1 torchvision==0.29.1 "setuptools<81" "pillow<10"
    D2TMP="$(mktemp -d)"
    $D2PIP download -q --no-deps --no-build-isolation pb1-detectron2==0.6 -d "$D2TMP"
    tar xzf "$D2TMP/pb1-detectron2-0.6.tar.gz" -C "$D2TMP"
    D2SRC="$D2TMP/pb1-detectron2-0.6"
    cp -r "$D2SRC/detectron2/model_zoo/configs" "$D2SRC/configs"
    mkdir -p "$D2SRC/detectron2/layers/csrc"
    printf '#include <torch/extension.h>\nPYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}\n' > "$D2SRC/detectron2/layers/csrc/vision.cpp"
    MAX_JOBS=2 $D2PIP install -q --no-build-isolation "$D2SRC"
    # what pipeline.masks and its tests import (run them from the repo root: .venv-d2/bin/python -m ...)
    $D2PIP install -q numpy==2.4.6 scipy==1.17.1 opencv-python-headless==5.0.0.93 pydantic==2.14.3 PyYAML==6.0.3 \
        pytest==9.2.0 pytest-timeout==2.4.0
    rm -rf "$D2TMP"
    echo "bootstrap: detectron2 in .venv-d2 ($(.venv-d2/bin/python -c 'import detectron2, torch; print("detectron2", detectron2.__version__, "torch", torch.__version__)'))"
fi

export DVC_NO_ANALYTICS=1
.venv/bin/dvc config --global core.analytics false >/dev/null 2>&1 || true
# DVC commits need a git identity; CI machines have none.
git config user.email >/dev/null || git config user.email "bigtime@localhost"
git config user.name >/dev/null || git config user.name "BigTime pipeline"
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $(ffmpeg -version | head -1 | cut -d' ' -f1-3))"
