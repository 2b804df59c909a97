"""Faults in the Ray run of the per-source stages (pipeline/sources.py), on real Ray clusters on this machine.

- Every worker point of download, frames and masks (before, during and after each atomic rename) SIGKILLs its
  Ray worker once in one run: Ray retries the tasks and the outputs are byte-identical to the stage functions run
  one after another in this process, with no temporaries left.
- A task that keeps dying (no retries left) becomes a failed status record ("error", naming the Ray task), its
  downstream stage says "upstream_failed", the other source builds, and the next run retries it.
- A node leaving a 2-worker-node cluster (`ray.cluster_utils.Cluster`) mid-run: its tasks are rerun on the other
  node and the run completes with the same outputs.
"""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from pipeline.params import validate_params
from pipeline.sources import STAGES, Roots, fingerprints, process_source_stage, run_sources

pytestmark = pytest.mark.slow

WORKER_POINTS = [
    "download:dir.created", "download:written:info.json", "download:dir.renamed",
    "frames:dir.created", "frames:written:meta.json", "frames:renamed:status.json",
    "masks:dir.created", "masks:dir.filled", "masks:dir.renamed",
]


def _params(n: int = 2, **ray):
    scenes = ["sun", "indoor", "sunset", "street"]
    return validate_params({
        "sources": [{"name": f"s{k}", "url": f"synthetic://{scenes[k % 4]}"} for k in range(n)],
        "synthetic": {"width": 96, "height": 64, "fps": 4, "seconds": 2.0, "seed": 0},
        "frames": {"long_side": 96, "per_sequence": 4}, "masks": {"min_valid_fraction": 0.05},
        "ray": {"num_cpus": 2, **ray}})


def _roots(root: Path) -> Roots:
    return Roots(root / "raw", root / "frames", root / "masks", root / "status")


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _reference(params, root: Path) -> dict[str, str]:
    for source in params.sources:
        for stage, fp in fingerprints(params, source).items():
            process_source_stage(stage, params, source, _roots(root), fp)
    return _tree(root)


def test_killed_workers_are_retried_to_identical_outputs(tmp_path, monkeypatch):
    params = _params(max_retries=6)  # a download task may die at all three of its points
    monkeypatch.setenv("BIGTIME_KILL_AT", ",".join(WORKER_POINTS))  # inherited by the local cluster's workers
    monkeypatch.setenv("BIGTIME_KILL_ONCE", str(tmp_path / "killed"))
    results = run_sources(params, _roots(tmp_path / "run"), progress=False)
    monkeypatch.delenv("BIGTIME_KILL_AT")
    missed = [p for k, p in enumerate(WORKER_POINTS) if not Path(f"{tmp_path / 'killed'}.{k}").exists()]
    assert not missed, f"never reached: {missed}"
    assert all(r["status"] == "ok" for stage in STAGES for r in results[stage]), results
    files = _tree(tmp_path / "run")
    assert not [f for f in files if any(part.endswith((".tmp", ".old")) for part in f.split("/"))]
    assert files == _reference(params, tmp_path / "ref")


def test_a_task_out_of_retries_is_a_failed_record_and_is_retried_next_run(tmp_path, monkeypatch):
    params = _params(max_retries=0)
    monkeypatch.setenv("BIGTIME_KILL_AT", "frames:dir.filled")
    monkeypatch.setenv("BIGTIME_KILL_ONCE", str(tmp_path / "killed"))  # the first frames task dies, once
    results = run_sources(params, _roots(tmp_path / "run"), progress=False)
    failed = [r for r in results["frames"] if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["category"] == "error" and f"frames:{failed[0]['source']}" in failed[0]["reason"]
    assert "fingerprint" not in failed[0]
    masks = {r["source"]: r for r in results["masks"]}
    assert masks[failed[0]["source"]]["category"] == "upstream_failed"
    assert sum(r["status"] == "ok" for r in results["masks"]) == 1  # the other source built
    monkeypatch.delenv("BIGTIME_KILL_AT")
    again = run_sources(params, _roots(tmp_path / "run"), progress=False)
    assert all(r["status"] == "ok" for stage in STAGES for r in again[stage])
    assert _tree(tmp_path / "run") == _reference(params, tmp_path / "ref")


def test_a_node_leaving_mid_run_has_its_tasks_rerun_elsewhere(tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    params = _params(n=6)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
        cluster.wait_for_nodes()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(run_sources(params, _roots(tmp_path / "run"),
                                                                           progress=False, keep_ray=True)))
        thread.start()
        deadline = time.monotonic() + 120
        while not list((tmp_path / "run" / "status" / "download").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ray.nodes()) == 3
        cluster.remove_node(nodes[0])  # tasks running there are lost with it
        thread.join(timeout=300)
        assert not thread.is_alive(), "the run did not finish after a node left"
        assert sum(node["Alive"] for node in ray.nodes()) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert all(r["status"] == "ok" for stage in STAGES for r in result[stage]), result
    assert _tree(tmp_path / "run") == _reference(params, tmp_path / "ref")
