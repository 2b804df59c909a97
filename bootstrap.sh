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

export DVC_NO_ANALYTICS=1
.venv/bin/dvc config --global core.analytics false >/dev/null 2>&1 || true
# DVC commits need a git identity; CI machines have none.
git config user.email >/dev/null || git config user.email "bigtime@localhost"
git config user.name >/dev/null || git config user.name "BigTime pipeline"
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $(ffmpeg -version | head -1 | cut -d' ' -f1-3))"
