"""Atomic outputs and per-source status records.

Every file a stage writes goes through a temp file in the same folder followed by `os.replace`, so an
interrupted stage leaves either the old file or the new one, never half of one. Folder outputs are built
in a sibling temp folder and swapped in whole.

Status records (one JSON per source per stage) are how failures become data: `status` is "ok" or
"failed", `category` is one of FAILURE_CATEGORIES, `reason` is a human sentence.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

FAILURE_CATEGORIES = (
    "not_found",  # 404 / missing file
    "unreachable",  # refused connection, DNS, timeout
    "not_media",  # not a video / no decodable frames
    "corrupt",  # truncated or undecodable file, bad archive
    "unsafe",  # archive with absolute or '..' paths
    "refused",  # policy: local path without opt-in, too large
    "camera_motion",  # frames: the camera moves
    "too_few_frames",  # frames/masks: not enough usable frames
    "too_few_valid",  # masks: not enough valid pixels
    "unusable_size",  # frames: too small or too elongated for the loader's aspect buckets
    "upstream_failed",  # an earlier stage failed for this source
    "error",  # anything else (message says what)
)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path`; on success it replaces `path` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def status_record(source: str, stage: str, category: str | None = None, reason: str = "", **extra: Any) -> dict:
    """One status row: ok when category is None, else failed with a category from FAILURE_CATEGORIES."""
    if category is not None and category not in FAILURE_CATEGORIES:
        raise ValueError(f"unknown failure category {category!r}")
    row = {"source": source, "stage": stage, "status": "ok" if category is None else "failed"}
    if category is not None:
        row.update(category=category, reason=reason)
    row.update(extra)
    return row


def read_status(path: str | Path) -> dict | None:
    """Read a status JSON written by `atomic_write_json(status_record(...))`; None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())
