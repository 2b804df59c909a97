"""End to end on a BigTime release: real `dvc repro` in a throwaway git repo builds shards and trains.

The fixture release (tests/release_fixture.py, the authors' layout, rendered by pipeline.synthetic: one frame
without a mask, one unreadable frame) lives outside the repo. The `sources` entries are written by the command
a user runs (`python -m pipeline.bigtime --params params.yaml`): the listed sequences with the official list's
format, plus one unlisted sequence; one synthetic source is kept so evaluate has ground truth. With tiny params
(96 px frames, 2 training steps) `dvc repro` runs every stage; the shards hold every release sequence with the
listed frames, the model trains, and `dvc plots show` lists the masks overview and the evaluation grids.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.release_fixture import LISTED, UNREADABLE, build_release

VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_on_a_release_builds_shards_trains_and_plots(tmp_path):
    if not DVC.exists():
        pytest.skip(f"dvc not installed beside {sys.executable}")
    release, frame_list, _ = build_release(tmp_path / "download")
    repo = tmp_path / "repo"
    for package in ("pipeline", "training"):
        (repo / package).mkdir(parents=True)
        for source in (REPO / package).glob("*.py"):
            shutil.copy2(source, repo / package / source.name)
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # every key dvc.yaml interpolates
    params.update(
        sources=[{"name": "synth_sun", "url": "synthetic://sun", "licence": "CC0", "attribution": "renderer"}],
        synthetic={"width": 96, "height": 64, "fps": 4, "seconds": 2, "seed": 0},
        download={"allow_local": True},
        frames={"long_side": 96, "per_sequence": 4},
        masks={"backend": "temporal", "min_valid_fraction": 0.1},
        shards={"sequences_per_shard": 2, "val_fraction": 0.0, "seed": 0},
        train={"steps": 2, "frames_per_step": 2, "num_workers": 0, "log_every": 1, "checkpoint_every": 1, "seed": 0},
        evaluate={**params["evaluate"], "mit_dir": "", "max_images": 2},
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
    # the user's command: the listed sequences, then one more sequence of the release without a list
    _run(["python", "-m", "pipeline.bigtime", "--release", str(release), "--list", str(frame_list),
          "--params", "params.yaml"], repo, env)
    _run(["python", "-m", "pipeline.bigtime", "--release", str(release), "--sequences", "0003",
          "--params", "params.yaml"], repo, env)
    names = [s["name"] for s in yaml.safe_load((repo / "params.yaml").read_text())["sources"]]
    assert names == ["synth_sun", "bigtime_0001", "bigtime_0002", "bigtime_0003"]

    _run(["git", "init", "-q"], repo, env)
    _run([str(DVC), "init", "-q"], repo, env)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "pipeline"], repo, env)
    _run([str(DVC), "repro"], repo, env, timeout=900)

    manifest = json.loads((repo / "data" / "shards" / "manifest.json").read_text())
    keys = sorted(k for split in manifest["splits"].values() for shard in split["shards"] for k in shard["keys"])
    assert keys == sorted(names) and not manifest["skipped"], manifest["skipped"]
    assert {n: s["n_frames"] for n, s in manifest["sequences"].items()} == {
        "synth_sun": 4, "bigtime_0001": len(LISTED["0001"]), "bigtime_0002": len(LISTED["0002"]) - 1, "bigtime_0003": 4}
    frames = {n: json.loads((repo / "data" / "frames" / n / "meta.json").read_text())["frames"] for n in names[1:]}
    assert len(frames["bigtime_0001"]) == len(LISTED["0001"])  # the release's frame choice
    assert len(frames["bigtime_0002"]) == len(LISTED["0002"]) - 1  # the unreadable frame skipped
    assert len(frames["bigtime_0003"]) == 4  # unlisted: selected like any image folder
    download = json.loads((repo / "data" / "raw" / "bigtime_0002" / "info.json").read_text())["bigtime"]
    assert [s["file"] for s in download["skipped"]] == ["/".join(UNREADABLE).replace("/", "/data/", 1)]
    masks_meta = json.loads((repo / "data" / "masks" / "bigtime_0001" / "meta.json").read_text())
    assert "release" in masks_meta["invalid_fraction"]
    checkpoint = repo / "data" / "models" / "checkpoint.pt"
    assert checkpoint.exists() and json.loads((repo / "data" / "dvclive" / "metrics.json").read_text())

    # dvc plots: the masks overview (one picture per source) and the evaluation grids
    overview = sorted(p.name for p in (repo / "data" / "plots" / "masks").glob("*.png"))
    assert overview == sorted(f"{n}.png" for n in names)
    shown = _run([str(DVC), "plots", "show", "--json"], repo, env)
    images = {path for path, rows in json.loads(shown[shown.index("{"):])["data"].items()
              if rows and rows[0]["type"] == "image"}
    assert {f"data/plots/masks/{n}.png" for n in names} <= images, images
    assert any(path.startswith("data/eval/grids/synthetic/") for path in images), images
