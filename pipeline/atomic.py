"""Atomic outputs, cleanup after killed runs, per-source status records, and the fault-injection seam.

Every file a stage writes goes through a temp file in the same folder followed by `os.replace`, so an
interrupted stage leaves either the old file or the new one, never half of one. Folder outputs are built
in a sibling temp folder and swapped in whole. Temporaries are named `.<name>.<random>.tmp` (and
`.<name>.old` while a folder is swapped); a run that was killed leaves them behind, so every atomic write
first removes the leftovers of its own target (`clean_temporaries`): an interrupted stage is simply rerun.
Outputs get ordinary permissions (0644 files, 0755 folders, less the umask), not mkstemp's 0600/0700.

Status records (one JSON per source per stage) are how failures become data: `status` is "ok" or
"failed", `category` is one of FAILURE_CATEGORIES, `reason` is a human sentence.

`fault_point(name)` is the seam of the fault-injection tests (tests/faults/): when the environment variable
BIGTIME_KILL_AT is `<stage>:<name>` (stage = the per-source stage a Ray worker is running, set by
`in_stage`, else the running script's stem, e.g. `sources`, `train`) the process SIGKILLs itself there, once
per marker file BIGTIME_KILL_ONCE when that is set. Unset, it does nothing. Points:
`dir.created`, `dir.filled`, `dir.renamed` (atomic_dir: temp folder empty, full, swapped in), `written:<file>`,
`renamed:<file>` (atomic_file: temp file complete, renamed), and the trainer's `step<k>`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

FAILURE_CATEGORIES = (
    "not_found",  # 404 / missing file
    "unreachable",  # refused connection, DNS, timeout
    "not_media",  # not a video / no decodable frames
    "corrupt",  # truncated or undecodable file, bad archive
    "unsafe",  # archive with absolute or '..' paths, a symlink in an image folder, a redirect to file://
    "refused",  # policy: local path without opt-in, too large
    "camera_motion",  # frames: the camera moves
    "too_few_frames",  # frames/masks: not enough usable frames
    "too_few_valid",  # masks: not enough valid pixels
    "unusable_size",  # frames: too small or too elongated for the loader's aspect buckets
    "upstream_failed",  # an earlier stage failed for this source
    "error",  # anything else (message says what)
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK
KILL_ENV = "BIGTIME_KILL_AT"
KILL_ONCE_ENV = "BIGTIME_KILL_ONCE"


_current_stage: str | None = None  # the per-source stage this process is running (`in_stage`)


@contextlib.contextmanager
def in_stage(stage: str) -> Iterator[None]:
    """Within the block, `fault_point` names `stage` (a Ray worker runs any stage; its argv says nothing)."""
    global _current_stage
    previous, _current_stage = _current_stage, stage
    try:
        yield
    finally:
        _current_stage = previous


def fault_point(name: str) -> None:
    """SIGKILL this process here when BIGTIME_KILL_AT names `<stage>:<name>` (module docstring); else nothing.

    BIGTIME_KILL_AT may list several points, comma-separated; with BIGTIME_KILL_ONCE=M the k-th point (from 0)
    kills once, marked by the file `M.k` (a single point: by M itself).
    """
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    points = spec.split(",")
    here = f"{_current_stage or Path(sys.argv[0]).stem}:{name}"
    if here not in points:
        return
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker:
        if len(points) > 1:
            marker = f"{marker}.{points.index(here)}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def temporaries(path: str | Path) -> list[Path]:
    """The temp files/folders an atomic write of `path` creates: `.<name>.*.tmp` and `.<name>.old` beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{path.name}.*")
                  if p.name.endswith(".tmp") or p.name == f".{path.name}.old")


def clean_temporaries(path: str | Path) -> None:
    """Remove what a killed earlier atomic write of `path` left behind (see `temporaries`)."""
    for stale in temporaries(path):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary handle on a temp file beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        fault_point(f"written:{path.name}")
        os.replace(tmp, path)
        fault_point(f"renamed:{path.name}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path`; on success it replaces `path` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, DIR_MODE)
    try:
        fault_point("dir.created")
        yield tmp
        fault_point("dir.filled")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fault_point("dir.renamed")
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
