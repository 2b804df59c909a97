"""A throwaway copy of the project as its own git + DVC repo, with a tiny params.yaml, for end-to-end tests.

`make_repo(root)` copies pipeline/, training/, dvc.yaml, .gitignore and .dvc/config into `root`, writes tiny
params (`tiny_params`: two synthetic sources, 4 training steps, no MIT), runs `git init` + `dvc init` and
commits. `dvc(repo, ...)` runs the venv's DVC there with the copy first on PYTHONPATH; `tree(repo)` maps every file under data/
(temporaries included) to its sha256, the byte-identity reference of the fault-injection tests.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent
DVC = VENV_BIN / "dvc"

_TINY = {
    "sources": [
        {"name": "synth_a", "url": "synthetic://sun", "licence": "CC0", "attribution": "BigTime synthetic renderer"},
        {"name": "synth_b", "url": "synthetic://indoor", "scene": "indoor", "licence": "CC0",
         "attribution": "BigTime synthetic renderer"},
    ],
    "synthetic": {"width": 96, "height": 64, "fps": 4, "seconds": 2.0, "seed": 0},
    "download": {"allow_local": False, "timeout_s": 30, "max_filesize_mb": 64, "format": "best", "retries": 0},
    "frames": {"long_side": 96, "per_sequence": 4},
    "masks": {"backend": "temporal", "min_valid_fraction": 0.05},
    "shards": {"sequences_per_shard": 1, "val_fraction": 0.0, "seed": 0},
    "model": {"preset": "small"},
    "train": {"steps": 4, "frames_per_step": 2, "num_workers": 0, "log_every": 1, "checkpoint_every": 2, "seed": 0},
    "evaluate": {"mit_dir": "", "max_images": 2, "fetch_iiw": False, "fetch_saw": False},
}


def tiny_params(**sections) -> dict:
    """The project's params.yaml (its loss/model sections as they are) with the _TINY sections, then `sections`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(_TINY)
    params.update(sections)
    return params


def env_for(repo: Path) -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python -m ...` = this venv
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def run(args: list, repo: Path, *, check: bool = True, env: dict | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=repo, env=env or env_for(repo), capture_output=True, text=True,
                          timeout=timeout)
    if check:
        command = " ".join(map(str, args))
        assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def dvc(repo: Path, *args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([DVC, *args], repo, check=check, env=env)


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(root: Path, params: dict | None = None) -> Path:
    """A committed git + DVC repo at `root` holding a copy of the project code and `params` (default tiny_params())."""
    root.mkdir(parents=True, exist_ok=True)
    for package in ("pipeline", "training"):
        (root / package).mkdir()
        for source in (REPO / package).glob("*.py"):
            shutil.copy2(source, root / package / source.name)
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    write_params(root, params or tiny_params())
    run(["git", "init", "-q"], root)
    dvc(root, "init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline"], root)
    located = run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], root).stdout.strip()
    assert located.startswith(str(root)), f"stages would import {located}, not the copy"
    return root


def ran(output: str) -> set[str]:
    """Names of the stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def tree(repo: Path, folder: str = "data") -> dict[str, str]:
    """{relative path: sha256} of every file under repo/folder (hidden temporaries included), less data/cache/
    (a build cache, not a DVC output: a `dvc pull` does not bring it)."""
    out = {}
    for path in sorted((repo / folder).rglob("*")):
        if path.relative_to(repo).as_posix().startswith("data/cache/"):  # the shards' sample cache: no output
            continue
        if path.is_file() or path.is_symlink():
            out[path.relative_to(repo).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def kill_tagged(tag: str) -> int:
    """SIGKILL every process whose environment holds BIGTIME_TEST_TAG=`tag` (what a killed Ray driver leaves:
    Ray's dashboard and runtime-env agents outlive a SIGKILLed driver); returns how many."""
    import signal

    needle = f"BIGTIME_TEST_TAG={tag}".encode()
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed
