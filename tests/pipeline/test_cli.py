"""Per-source stage CLI: the source comes from DVC's DVC_STAGE (`<stage>@<i>`), paths from the validated name."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.cli import dvc_stage_index
from pipeline.params import ParamsError
from pipeline.sources import main as sources_main
from tests.conftest import REPO


def test_dvc_stage_index():
    assert dvc_stage_index("frames", {"DVC_STAGE": "frames@3"}) == 3
    assert dvc_stage_index("frames", {"DVC_STAGE": "sub/dvc.yaml:frames@12"}) == 12
    for bad in ("frames@x", "masks@1", "frames@1;touch x", ""):
        with pytest.raises(ParamsError, match="--index"):
            dvc_stage_index("frames", {"DVC_STAGE": bad})


def test_stage_under_dvc_stage_writes_the_validated_names_folder(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"sources": [{"name": "a", "url": "https://example.invalid/a.mp4"},
                                              {"name": "b", "url": "https://example.invalid/b.mp4"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_STAGE": "masks@1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.masks", "--params", str(params), "--frames-root",
                           str(tmp_path / "frames"), "--out-root", str(tmp_path / "masks"), "--status-root",
                           str(tmp_path / "status")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["b"]  # upstream_failed, but its own folder
    assert json.loads((tmp_path / "status" / "b.json").read_text())["category"] == "upstream_failed"


def test_sources_stage_validates_first_and_writes_one_json_per_source(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"sources": [{"name": "a;rm -rf x", "url": "https://example.invalid/a.mp4"}]}))
    with pytest.raises(SystemExit) as exit_info:
        sources_main(["--params", str(params), "--out", str(tmp_path / "sources")])
    assert exit_info.value.code == 2 and "sources[0].name" in capsys.readouterr().err
    assert not (tmp_path / "sources").exists()
    params.write_text(json.dumps({"sources": [{"name": "a", "url": "https://example.invalid/a.mp4"}]}))
    assert sources_main(["--params", str(params), "--out", str(tmp_path / "sources")]) == 0
    entry = json.loads((tmp_path / "sources" / "a.json").read_text())
    assert entry["url"] == "https://example.invalid/a.mp4" and entry["type"] == "video"
