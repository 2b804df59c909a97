"""Reproducible, versioned outputs: two clean runs agree byte for byte; push / clone / pull leaves nothing to rerun.

Against the reference run of tests/faults/conftest.py (tiny params, real DVC in a temp git repo):
- a fresh clone reproduced from scratch has every file under data/ byte-identical (checkpoint included) and a
  clean `dvc status`;
- `dvc push` to a local remote, `git clone`, `dvc pull`: `dvc status` is clean and `dvc repro` runs nothing (the
  status and metrics files are cached outputs, so the pull brings them; data/ is git-ignored);
- turning `download.allow_local` on reruns only the `sources` stage, which processes no source.
"""
from __future__ import annotations

import json

import pytest
import yaml

from tests.faults.conftest import clone
from tests.faults.repo import dvc, ran, run, tree


def _clean(repo) -> bool:
    out = dvc(repo, "status", "--json").stdout.strip()
    return out in ("", "{}") or json.loads(out) == {}


@pytest.mark.slow
def test_second_clean_run_is_byte_identical(reference, tmp_path):
    ref_repo, ref_tree = reference
    repo = clone(ref_repo, tmp_path / "second")
    dvc(repo, "repro")
    files = tree(repo)
    differ = sorted(f for f in set(files) | set(ref_tree) if files.get(f) != ref_tree.get(f))
    assert not differ, f"two clean runs differ in {differ}"
    assert "data/models/checkpoint.pt" in files and _clean(repo)
    for info in (repo / "data" / "raw").glob("*/info.json"):
        text = info.read_text()
        assert "/tmp" not in text and '"epoch"' not in text, f"{info} records the run, not the video"


@pytest.mark.slow
def test_push_clone_pull_leaves_nothing_to_rerun(reference, tmp_path):
    ref_repo, ref_tree = reference
    source = clone(ref_repo, tmp_path / "origin")
    run(["cp", "-a", str(ref_repo / ".dvc" / "cache"), str(source / ".dvc" / "cache")], source)  # the run's cache
    dvc(source, "checkout")
    dvc(source, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    run(["git", "commit", "-qam", "remote"], source)
    dvc(source, "push")

    collaborator = tmp_path / "collaborator"
    run(["git", "clone", "-q", str(source), str(collaborator)], tmp_path)
    dvc(collaborator, "pull")
    assert _clean(collaborator), dvc(collaborator, "status").stdout
    again = dvc(collaborator, "repro")
    assert ran(again.stdout) == set(), again.stdout
    assert tree(collaborator) == ref_tree


@pytest.mark.slow
def test_allow_local_reruns_no_download(reference, tmp_path):
    repo = clone(reference[0], tmp_path / "repo")
    run(["cp", "-a", str(reference[0] / ".dvc" / "cache"), str(repo / ".dvc" / "cache")], repo)
    dvc(repo, "checkout")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"]["allow_local"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro")
    assert ran(out.stdout) == {"sources"}, out.stdout  # a params dep of the stage, which then has nothing to do
    assert "0 to process (0 tasks)" in out.stdout + out.stderr, out.stderr
