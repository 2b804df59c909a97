"""Atomic writes leave the old content or the new one, never a mix; status rows use fixed categories."""
from __future__ import annotations

import json
import os

import pytest

from pipeline.atomic import atomic_dir, atomic_write_json, atomic_write_text, read_status, status_record
from tests.conftest import REPO


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["a.txt"]


def test_atomic_dir_keeps_old_output_on_error(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "f").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_dir_swaps_whole_folder(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "stale").write_text("x")
    with atomic_dir(out) as tmp:
        (tmp / "fresh").write_text("y")
    assert sorted(os.listdir(out)) == ["fresh"]


def test_status_records(tmp_path):
    ok = status_record("cam", "download", frames=3)
    assert ok == {"source": "cam", "stage": "download", "status": "ok", "frames": 3}
    failed = status_record("cam", "download", "not_found", "HTTP 404")
    assert failed["status"] == "failed" and failed["category"] == "not_found"
    with pytest.raises(ValueError, match="unknown failure category"):
        status_record("cam", "download", "oops")
    atomic_write_json(tmp_path / "s.json", failed)
    assert read_status(tmp_path / "s.json") == json.loads((tmp_path / "s.json").read_text())
    assert read_status(tmp_path / "missing.json") is None


def test_leftovers_of_a_killed_write_are_removed(tmp_path):
    out = tmp_path / "frames" / "cam"
    (tmp_path / "frames" / ".cam.abc123.tmp").mkdir(parents=True)  # a killed atomic_dir
    (tmp_path / "frames" / ".cam.abc123.tmp" / "groundtruth.npz").write_bytes(b"PK\x03\x04 half")
    (tmp_path / "frames" / ".cam.old").mkdir()  # killed between the two renames
    (tmp_path / "frames" / ".other.x.tmp").mkdir()  # another target's temporaries are not ours
    (tmp_path / "frames" / ".meta.json.q.tmp").write_text("{")  # a killed atomic_file
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("new")
    atomic_write_text(tmp_path / "frames" / "meta.json", "{}")
    assert sorted(os.listdir(tmp_path / "frames")) == [".other.x.tmp", "cam", "meta.json"]


def test_outputs_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_fault_point_kills_only_the_named_stage(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "frames.py"  # the stage name is the script's stem
    script.write_text("from pipeline.atomic import atomic_write_text\nimport sys\n"
                      "atomic_write_text(sys.argv[1], 'done')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "BIGTIME_KILL_AT": "frames:written:out.txt", "BIGTIME_KILL_ONCE": str(tmp_path / "marker")}
    first = subprocess.run([sys.executable, str(script), str(tmp_path / "out.txt")], env=env)
    assert first.returncode == -9 and not (tmp_path / "out.txt").exists() and (tmp_path / "marker").exists()
    assert [p.name for p in tmp_path.glob(".out.txt.*.tmp")]  # the killed write's leftover
    second = subprocess.run([sys.executable, str(script), str(tmp_path / "out.txt")], env=env)  # marker: once
    assert second.returncode == 0 and (tmp_path / "out.txt").read_text() == "done"
    assert not list(tmp_path.glob(".out.txt.*"))
