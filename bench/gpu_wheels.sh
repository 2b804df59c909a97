#!/usr/bin/env bash
# Downloads, HERE, the wheels that the device machine's python3 (3.12, x86-64, its own torch, numpy, scipy,
# pyyaml, pillow, opencv, pyarrow, pytest, tqdm; /work/.library/device/KINDS.md) lacks for bench/gpu_check.sh:
# pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions), webdataset
# (+ braceexpand) and pyamg (evaluate's large sparse solves), at the versions of requirements.lock, into the git-ignored .whl/ (carry it: `carry: [".whl"]`).
# Used by the first GPU run (H200, 2026-12-04): these wheels were all the device lacked.
set -euo pipefail
cd "$(dirname "$0")/.."
names=(pydantic pydantic_core annotated-types typing-inspection typing_extensions webdataset braceexpand pyamg)
specs=()
for name in "${names[@]}"; do
  line=$(grep -i "^${name//[-_]/[-_]}==" requirements.lock || true)
  [[ -n "$line" ]] || { echo "gpu_wheels: $name is not pinned in requirements.lock" >&2; exit 1; }
  specs+=("${line%% *}")
done
rm -rf .whl && mkdir -p .whl
python=${PYTHON:-.venv/bin/python}
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls -l .whl && du -sh .whl
