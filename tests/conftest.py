"""Shared fixtures: paths to the repo and to the real data in ../shared/data (tests skip when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BIGTIME_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or pytest.skip with a message naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set BIGTIME_SHARED_DATA or place ../shared/data beside the repo)")
    return path


@pytest.fixture
def repo_root() -> Path:
    return REPO
