"""Corrupt each artifact kind of a finished run; the next stage that reads it names the file and what is wrong.

Copies of the reference run's folders (tests/faults/conftest.py) are damaged one at a time: a raw video (one
byte flipped: ffmpeg would decode it silently, the download's sha256 in info.json catches it), a frame PNG, a
mask PNG, a tar shard, the Parquet file, the manifest, the checkpoint. The reading stage's CLI (the project code
under test, on the copies) must stop that source or itself with a message naming the file, while everything
else already built stays byte for byte as it was.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.atomic import read_status
from tests.conftest import REPO
from tests.faults.repo import env_for, tree


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy(reference: Path, work: Path, *folders: str) -> None:
    for folder in folders:
        shutil.copytree(reference / "data" / folder, work / folder)


def _stage(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env_for(REPO),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def setup(reference, tmp_path):
    repo, _ = reference
    return repo, repo / "params.yaml", tmp_path


def test_flipped_byte_in_raw_video_stops_frames(setup):
    repo, params, work = setup
    _copy(repo, work, "raw", "frames")
    _flip(work / "raw" / "synth_a" / "video.mp4")
    other = tree(work, "frames/synth_b")
    proc = _stage("pipeline.frames", "--name", "synth_a", "--params", params, "--raw-root", work / "raw",
                  "--out-root", work / "frames")
    assert proc.returncode == 0, proc.stderr
    status = read_status(work / "frames" / "synth_a" / "status.json")
    assert status["category"] == "corrupt" and "video.mp4" in status["reason"] and "sha256" in status["reason"]
    assert tree(work, "frames/synth_b") == other


def test_damaged_frame_png_stops_masks(setup):
    repo, params, work = setup
    _copy(repo, work, "frames", "masks")
    _flip(work / "frames" / "synth_a" / "0001.png")
    other = tree(work, "masks/synth_b")
    proc = _stage("pipeline.masks", "--name", "synth_a", "--params", params, "--frames-root", work / "frames",
                  "--out-root", work / "masks")
    assert proc.returncode == 0, proc.stderr
    status = read_status(work / "masks" / "synth_a" / "status.json")
    assert status["category"] == "corrupt" and "synth_a/0001.png" in status["reason"], status
    assert tree(work, "masks/synth_b") == other


def test_damaged_mask_png_skips_the_sequence_in_shards(setup):
    repo, params, work = setup
    _copy(repo, work, "frames", "masks")
    _flip(work / "masks" / "synth_a" / "0001.png")
    proc = _stage("pipeline.shards", "--params", params, "--frames", work / "frames", "--masks", work / "masks",
                  "--out", work / "shards", "--stats", work / "stats.json")
    assert proc.returncode == 0, proc.stderr
    assert "masks/synth_a/0001.png" in proc.stderr
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert list(manifest["sequences"]) == ["synth_b"]
    assert manifest["skipped"][0]["category"] == "corrupt"


@pytest.mark.parametrize("damage, named", [
    ("train-000000.tar", "train-000000.tar"), ("parquet/train.parquet", "train.parquet"),
    ("manifest.json", "manifest.json")])
def test_damaged_shards_stop_training(setup, damage, named):
    repo, params, work = setup
    _copy(repo, work, "shards", "models")
    if damage == "manifest.json":
        path = work / "shards" / damage
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        _flip(work / "shards" / damage)
    models = tree(work, "models")
    proc = _stage("training.train", "--params", params, "--shards", work / "shards", "--out", work / "models",
                  "--resume-if-valid")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert tree(work, "models") == models


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_damaged_checkpoint_stops_evaluate(setup, damage):
    repo, params, work = setup
    _copy(repo, work, "models", "shards", "frames", "eval")
    checkpoint = work / "models" / "checkpoint.pt"
    if damage == "text":
        checkpoint.write_text("this is not a checkpoint\n")
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = tree(work, "eval")
    proc = _stage("training.evaluate", "--params", params, "--checkpoint", checkpoint, "--shards", work / "shards",
                  "--frames", work / "frames", "--out", work / "eval", "--metrics", work / "metrics.json")
    assert proc.returncode == 1, proc.stderr
    assert "checkpoint.pt" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert tree(work, "eval") == before and not (work / "metrics.json").exists()


def test_damaged_checkpoint_is_not_resumed(setup):
    """Under `dvc repro` (--resume-if-valid) an unreadable checkpoint means a fresh start, not a crash."""
    repo, params, work = setup
    _copy(repo, work, "shards", "models")
    (work / "models" / "checkpoint.pt").write_text("garbage")
    proc = _stage("training.train", "--params", params, "--shards", work / "shards", "--out", work / "models",
                  "--resume-if-valid")
    assert proc.returncode == 0, proc.stderr
    assert "starting fresh" in proc.stdout and "checkpoint.pt" in proc.stdout
    assert (work / "models" / "checkpoint.pt").read_bytes() == (repo / "data" / "models" / "checkpoint.pt").read_bytes()
