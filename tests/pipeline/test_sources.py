"""The sources stage: one validated JSON per source plus the download settings, allow_local left out."""
from __future__ import annotations

import json

from pipeline.params import validate_params
from pipeline.sources import DOWNLOAD_SETTINGS, write_sources


def _params(allow_local: bool, timeout: float = 60.0):
    return validate_params({"sources": [{"name": "a", "url": "synthetic://sun"}, {"name": "b", "url": "/x/y", "type": "images"}],
                            "download": {"allow_local": allow_local, "timeout_s": timeout}} if allow_local else
                           {"sources": [{"name": "a", "url": "synthetic://sun"}], "download": {"timeout_s": timeout}})


def test_each_source_and_the_download_settings_are_written(tmp_path):
    paths = write_sources(_params(True), tmp_path / "s")
    assert [p.name for p in paths] == ["a.json", "b.json"]
    assert json.loads(paths[1].read_text())["type"] == "images"
    settings = json.loads((tmp_path / "s" / DOWNLOAD_SETTINGS).read_text())
    assert "allow_local" not in settings["download"] and settings["download"]["timeout_s"] == 60.0
    assert settings["synthetic"]["width"] == 192


def test_allowing_local_sources_leaves_the_download_settings_unchanged(tmp_path):
    write_sources(_params(False), tmp_path / "off")
    write_sources(_params(True), tmp_path / "on")
    assert (tmp_path / "off" / DOWNLOAD_SETTINGS).read_bytes() == (tmp_path / "on" / DOWNLOAD_SETTINGS).read_bytes()
    write_sources(_params(False, timeout=5.0), tmp_path / "short")
    assert (tmp_path / "short" / DOWNLOAD_SETTINGS).read_bytes() != (tmp_path / "off" / DOWNLOAD_SETTINGS).read_bytes()
