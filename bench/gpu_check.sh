#!/usr/bin/env bash
# The GPU check of issue 13 (item 7). First run on a lent H200 on 2026-12-04: every part ok in 130 s.
#
# What it does on the device (one NVIDIA H200, the machine's own python3 and torch, offline), in under 8 minutes:
# the CUDA tests, paper-preset training steps (m = 8, 256x384) timed in fp32 and bf16 autocast with the loss's
# share, the MIT recipe (fold 0) trained for --steps steps (default 300) and scored on its five held-out objects;
# all figures in ONE JSON, $OUT/gpu_check.json (bench/gpu_check.py says what is in it).
#
# Here, once, in the checkout that calls the device tool (CPU; the lent machine gets only what is carried):
#   bash bench/gpu_wheels.sh                                  # .whl/: the wheels the device's python3 lacks
#   bash bench/gpu_check.sh --prepare --mit-dir ../shared/data/mit-intrinsic   # .gpu-data/: frames, masks, eval images
#   bash bench/gpu_check.sh --cpu-dry-run --out /tmp/gpu-check                 # optional: tiny parts on the CPU
# On the device (the `run` tool, carry [".whl", ".gpu-data"], timeout_s 540):
#   bash bench/gpu_check.sh --out "$OUT"
# Flags go to bench/gpu_check.py: --steps N, --preset NAME (MIT run), --budget SECONDS (450), --data DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
case " $* " in
  *" --cpu-dry-run "* | *" --prepare "*) python=${PYTHON:-.venv/bin/python} ;;  # here: the project's venv
  *)
    # the device: its python3 holds torch; install only the carried wheels, beside it (never over it)
    if compgen -G ".whl/*.whl" > /dev/null; then
      "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "gpu_check: no .whl/*.whl (run bench/gpu_wheels.sh here and carry .whl): using $python's packages" >&2
    fi
    ;;
esac
export PYTHONUNBUFFERED=1
exec "$python" -m bench.gpu_check "$@"
