"""Session fixture of the fault-injection suite: one clean `dvc repro` of the tiny pipeline, the reference."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.repo import DVC, dvc, make_repo, run, tree


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(repo, tree) of an uninterrupted run: dvc.lock committed, every file under data/ hashed."""
    if not DVC.exists():
        pytest.skip(f"dvc not installed beside the test interpreter ({DVC})")
    repo = make_repo(tmp_path_factory.mktemp("reference") / "repo")
    dvc(repo, "repro")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "reproduced"], repo)
    return repo, tree(repo)


def clone(reference_repo: Path, target: Path) -> Path:
    """A fresh `git clone` of the reference repo (code, params, dvc.lock; no data)."""
    run(["git", "clone", "-q", str(reference_repo), str(target)], reference_repo.parent)
    return target
