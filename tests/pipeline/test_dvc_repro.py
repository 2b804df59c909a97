"""The one end-to-end test of the download + frames part: real `dvc repro` in a throwaway git repo.

Copies pipeline/, dvc.yaml, .dvc/config and the project's params.yaml (with a tiny 2-source synthetic
config) into tmp, then checks: the first `dvc repro sources` builds both sources; a second run and
`dvc status` report everything up to date; appending a third source reruns the stage, which processes only that
source (the others' outputs keep their mtimes); removing a source deletes its outputs. Only the `sources` stage is
targeted: shards/train/evaluate belong to other parts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"


def _run(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _write_params(repo: Path, sources: list[dict]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # keeps every key dvc.yaml interpolates
    params["sources"] = sources
    params["synthetic"] = {"width": 96, "height": 64, "fps": 4, "seconds": 2, "seed": 0}
    params["frames"] = {"long_side": 96, "per_sequence": 4}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_dvc_repro_download_frames(tmp_path):
    if not DVC.exists():
        pytest.skip(f"dvc not installed beside {sys.executable}")
    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    for source in (REPO / "pipeline").glob("*.py"):
        shutil.copy2(source, repo / "pipeline" / source.name)
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    sources = [
        {"name": "synth_a", "url": "synthetic://sun", "licence": "CC0", "attribution": "BigTime synthetic renderer"},
        {"name": "synth_b", "url": "synthetic://sunset", "licence": "CC0", "attribution": "BigTime synthetic renderer"},
    ]
    _write_params(repo, sources)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python -m pipeline...` = this venv
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
    _run(["git", "init", "-q"], repo, env)
    _run([str(DVC), "init", "-q"], repo, env)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "pipeline"], repo, env)
    located = _run(["python", "-c", "import pipeline; print(pipeline.__file__)"], repo, env)
    assert located.strip().startswith(str(repo)), f"stages would import {located.strip()}, not the copy"

    # 1. first run builds both sources, all in the one `sources` stage
    first = _run([str(DVC), "repro", "sources"], repo, env)
    assert _ran(first) == {"sources"}, first
    for name in ("synth_a", "synth_b"):
        meta = json.loads((repo / "data" / "frames" / name / "meta.json").read_text())
        assert len(meta["frames"]) == 4 and (meta["width"], meta["height"]) == (96, 64)
        assert (repo / "data" / "frames" / name / "groundtruth.npz").exists()
        for stage in ("download", "frames", "masks"):
            assert json.loads((repo / "data" / "status" / stage / f"{name}.json").read_text())["status"] == "ok"
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "first run"], repo, env)

    # 2. nothing changed: nothing runs, dvc status is clean
    second = _run([str(DVC), "repro", "sources"], repo, env)
    assert _ran(second) == set(), second
    assert json.loads(_run([str(DVC), "status", "--json", "sources"], repo, env) or "{}") == {}
    before = {(stage, name): _mtimes(repo / "data" / stage / name) for stage in ("raw", "frames", "masks")
              for name in ("synth_a", "synth_b")}

    # 3. a third source: the stage reruns and processes only that source (the others' files keep their mtimes)
    _write_params(repo, sources + [{"name": "synth_c", "url": "synthetic://indoor", "scene": "indoor"}])
    assert set(json.loads(_run([str(DVC), "status", "--json", "sources"], repo, env))) == {"sources"}
    third = _run([str(DVC), "repro", "sources"], repo, env)
    assert _ran(third) == {"sources"} and "3 sources, 1 to process (3 tasks)" in third, third
    after = {(stage, name): _mtimes(repo / "data" / stage / name) for stage in ("raw", "frames", "masks")
             for name in ("synth_a", "synth_b")}
    assert after == before, "outputs of the unchanged sources were rewritten"
    assert len(list((repo / "data" / "frames" / "synth_c").glob("*.png"))) == 4
    assert json.loads(_run([str(DVC), "status", "--json", "sources"], repo, env) or "{}") == {}

    # 4. a source removed from params: its outputs and status records go, the others stay untouched
    _write_params(repo, sources[:1] + [{"name": "synth_c", "url": "synthetic://indoor", "scene": "indoor"}])
    fourth = _run([str(DVC), "repro", "sources"], repo, env)
    assert "2 sources, 0 to process (0 tasks), removed 1" in fourth, fourth
    for sub in ("raw", "frames", "masks", "status/download", "status/frames", "status/masks"):
        assert not any(p.name.startswith("synth_b") for p in (repo / "data" / sub).iterdir()), sub
    assert _mtimes(repo / "data" / "frames" / "synth_a") == before[("frames", "synth_a")]
