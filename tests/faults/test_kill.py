"""kill -9 every stage at points before, during and after its atomic rename; `dvc repro` then finishes cleanly.

Each test clones the reference repo (tests/faults/conftest.py) and runs `dvc repro` repeatedly. Every run but the
last has BIGTIME_KILL_AT=<stage>:<point> set, so the named stage SIGKILLs itself at that point
(`pipeline.atomic.fault_point`, once per marker file): the run fails there, the next run picks up after it.
After the last, uninterrupted run every file under data/ must be byte-identical to the uninterrupted reference
run (checkpoint, shards, statuses, metrics included), no temporaries may be left, and `dvc status` must be clean.

Points: `dir.created` / `dir.filled` / `dir.renamed` are the three moments of `atomic_dir` (temp folder empty,
complete, swapped in); `written:<file>` / `renamed:<file>` those of `atomic_file`; `train:step<k>` kills
training after k steps (the checkpoint of step 2 exists from step 3 on, so step3 tests resuming under
`dvc repro`, step1 a fresh restart).
"""
from __future__ import annotations

import pytest

from tests.faults.conftest import clone
from tests.faults.repo import dvc, env_for, ran, tree

CHAINS = {
    "before": [("sources", "dir.created"), ("download", "dir.created"), ("frames", "dir.created"),
               ("masks", "dir.created"), ("shards", "dir.created"), ("train", "step1"), ("evaluate", "dir.created")],
    "during": [("download", "written:info.json"), ("frames", "written:meta.json"), ("masks", "dir.filled"),
               ("shards", "written:manifest.json"), ("train", "step3"), ("evaluate", "written:report.md")],
    "after": [("sources", "dir.renamed"), ("download", "dir.renamed"), ("frames", "renamed:status.json"),
              ("masks", "dir.renamed"), ("shards", "dir.renamed"), ("train", "renamed:checkpoint.pt"),
              ("evaluate", "dir.renamed")],
}


def _temporaries(files: dict[str, str]) -> list[str]:
    return [f for f in files if any(part.endswith((".tmp", ".old")) for part in f.split("/"))]


@pytest.mark.slow
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_killed_stages_rerun_to_identical_outputs(reference, tmp_path, chain):
    ref_repo, ref_tree = reference
    repo = clone(ref_repo, tmp_path / "repo")
    for k, (stage, point) in enumerate(CHAINS[chain]):
        marker = tmp_path / f"killed-{k}"
        env = {**env_for(repo), "BIGTIME_KILL_AT": f"{stage}:{point}", "BIGTIME_KILL_ONCE": str(marker)}
        proc = dvc(repo, "repro", check=False, env=env)
        assert marker.exists(), f"{stage}:{point} was never reached:\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode != 0, f"dvc repro succeeded although {stage} was killed at {point}"
        killed = [s for s in ran(proc.stdout) if s.split("@")[0] == stage]
        assert killed, f"no {stage} stage ran:\n{proc.stdout}"
    dvc(repo, "repro")
    files = tree(repo)
    assert not _temporaries(files), f"stale temporaries left: {_temporaries(files)}"
    differ = sorted(f for f in set(files) | set(ref_tree) if files.get(f) != ref_tree.get(f))
    assert not differ, f"outputs differ from the uninterrupted run: {differ}"
    assert dvc(repo, "status", "--json").stdout.strip() in ("{}", "")
