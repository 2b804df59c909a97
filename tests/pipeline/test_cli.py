"""Stage CLIs: params validated before anything is written, paths built from the validated name."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.sources import main as sources_main
from tests.conftest import REPO


def _masks_cli(tmp_path, *selector: str) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"sources": [{"name": "a", "url": "https://example.invalid/a.mp4"},
                                              {"name": "b", "url": "https://example.invalid/b.mp4"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline.masks", *selector, "--params", str(params), "--frames-root",
                           str(tmp_path / "frames"), "--out-root", str(tmp_path / "masks"), "--status-root",
                           str(tmp_path / "status")], env=env, capture_output=True, text=True, timeout=60)


def test_stage_cli_runs_the_selected_source_into_its_validated_names_folder(tmp_path):
    proc = _masks_cli(tmp_path, "--index", "1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["b"]  # upstream_failed, but its own folder
    assert json.loads((tmp_path / "status" / "b.json").read_text())["category"] == "upstream_failed"


def test_stage_cli_needs_a_selection(tmp_path):
    proc = _masks_cli(tmp_path)
    assert proc.returncode == 2 and "--index" in proc.stderr and not (tmp_path / "masks").exists()
    proc = _masks_cli(tmp_path, "--index", "7")
    assert proc.returncode == 2 and "sources: no entry [7]" in proc.stderr


def test_sources_stage_validates_params_before_writing_anything(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"sources": [{"name": "a;rm -rf x", "url": "https://example.invalid/a.mp4"}]}))
    roots = ["--raw", str(tmp_path / "raw"), "--frames", str(tmp_path / "frames"), "--masks", str(tmp_path / "masks"),
             "--status", str(tmp_path / "status")]
    with pytest.raises(SystemExit) as exit_info:
        sources_main(["--params", str(params), *roots])
    assert exit_info.value.code == 2 and "sources[0].name" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [params]
    params.write_text(json.dumps({"sources": [{"name": "a", "url": "https://x/a.mp4"}, {"name": "a", "url": "https://x/b.mp4"}]}))
    with pytest.raises(SystemExit):
        sources_main(["--params", str(params), *roots])
    assert "duplicate source name 'a'" in capsys.readouterr().err and sorted(tmp_path.iterdir()) == [params]
