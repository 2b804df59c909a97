"""kill -9 every stage at points before, during and after its atomic rename; `dvc repro` then finishes cleanly.

The test clones the reference repo (tests/faults/conftest.py) and runs `dvc repro` repeatedly. Every run but the
last has BIGTIME_KILL_AT=<stage>:<point> set, so the named stage SIGKILLs itself at that point
(`pipeline.atomic.fault_point`, once per marker file): the run fails there and the next run picks up after it,
so one pass through the pipeline kills each stage several times. After the last, uninterrupted run every file
under data/ must be byte-identical to the uninterrupted reference run (checkpoint, shards, statuses, metrics
included), no temporaries may be left, and `dvc status` must be clean.

Points: `dir.created` / `dir.filled` / `dir.renamed` are the three moments of `atomic_dir` (temp folder empty,
complete, swapped in); `written:<file>` / `renamed:<file>` those of `atomic_file` (temp file complete, renamed);
`step<k>` kills training after k steps. The `sources` stage is a Ray driver (pipeline/sources.py): it is killed
before it starts Ray (`planned`), with tasks in flight (`task.done`: after the first task's result, others
running) and after its summary was renamed into place. The per-source stages run in Ray workers: a worker killed
mid-task is retried by Ray within the same run (here `download:written:info.json` beside the driver's kill; every
worker point of download, frames and masks is in tests/faults/test_ray.py). Training checkpoints every 2 of 4 steps: step1 dies before any
checkpoint (a fresh restart), step3 after the step-2 checkpoint (resumed under `dvc repro`), and
renamed:checkpoint.pt after the final checkpoint was renamed into place (nothing left to train).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import clone
from tests.faults.repo import dvc, env_for, kill_tagged, ran, tree

BEFORE, DURING, AFTER = "before", "during", "after"
KILLS = [  # (script stem, fault point(s) (comma-separated), which moment of the atomic write it stands for)
    ("sources", "planned", BEFORE),
    ("sources", "download:written:info.json,sources:task.done", DURING),  # a worker (retried) and the driver
    ("sources", "renamed:sources.json", AFTER),
    ("shards", "dir.created", BEFORE), ("shards", "written:manifest.json", DURING), ("shards", "dir.renamed", AFTER),
    ("train", "step1", BEFORE), ("train", "step3", DURING), ("train", "renamed:checkpoint.pt", AFTER),
    ("fetch_eval_data", "dir.filled", DURING),
    ("evaluate", "dir.created", BEFORE), ("evaluate", "written:report.md", DURING), ("evaluate", "dir.renamed", AFTER),
]
DVC_STAGES = {"fetch_eval_data": ("fetch_iiw", "fetch_saw")}  # script stem -> its dvc.yaml stages, where they differ


def _explain(differ: list[str], files: dict[str, str], ref_tree: dict[str, str], repo: Path, ref_repo: Path) -> str:
    """The failure message: which side lacks each differing file, and both runs' source summaries (a source that
    failed on one side only makes every file of it, and the model, differ)."""
    only_run = [f for f in differ if f not in ref_tree]
    only_ref = [f for f in differ if f not in files]
    changed = [f for f in differ if f in files and f in ref_tree]
    def summary(root: Path) -> str:
        path = root / "data/status/sources.json"
        return path.read_text() if path.exists() else "missing"

    return (f"outputs differ from the uninterrupted run: only in this run {only_run}; only in the reference "
            f"{only_ref}; different content {changed}; data/status/sources.json here: {summary(repo)}; in the "
            f"reference: {summary(ref_repo)}")


def _temporaries(files: dict[str, str]) -> list[str]:
    return [f for f in files if any(part.endswith((".tmp", ".old")) for part in f.split("/"))]


@pytest.mark.slow
def test_killed_stages_rerun_to_identical_outputs(reference, tmp_path):
    ref_repo, ref_tree = reference
    repo = clone(ref_repo, tmp_path / "repo")
    try:
        _kill_and_rerun(repo, ref_repo, ref_tree, tmp_path)
    finally:
        kill_tagged(str(tmp_path))


def _kill_and_rerun(repo, ref_repo, ref_tree, tmp_path):
    for k, (stage, point, _) in enumerate(KILLS):
        marker = tmp_path / f"killed-{k}"
        spec = point if "," in point else f"{stage}:{point}"  # several points: each spelled <stage>:<point>
        env = {**env_for(repo), "BIGTIME_KILL_AT": spec, "BIGTIME_KILL_ONCE": str(marker), "BIGTIME_TEST_TAG": str(tmp_path)}
        proc = dvc(repo, "repro", check=False, env=env)
        markers = [marker] if "," not in spec else [Path(f"{marker}.{i}") for i in range(spec.count(",") + 1)]
        assert all(m.exists() for m in markers), f"{spec} was never reached:\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode != 0, f"dvc repro succeeded although {stage} was killed at {point}"
        killed = [s for s in ran(proc.stdout) if s.split("@")[0] in DVC_STAGES.get(stage, (stage,))]
        assert killed, f"no {stage} stage ran:\n{proc.stdout}"
    dvc(repo, "repro")
    files = tree(repo)
    assert not _temporaries(files), f"stale temporaries left: {_temporaries(files)}"
    differ = sorted(f for f in set(files) | set(ref_tree) if files.get(f) != ref_tree.get(f))
    assert not differ, _explain(differ, files, ref_tree, repo, ref_repo)
    assert dvc(repo, "status", "--json").stdout.strip() in ("{}", "")
