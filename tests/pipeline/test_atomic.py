"""Atomic writes leave the old content or the new one, never a mix; status rows use fixed categories."""
from __future__ import annotations

import json
import os

import pytest

from pipeline.atomic import atomic_dir, atomic_write_json, atomic_write_text, read_status, status_record


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
