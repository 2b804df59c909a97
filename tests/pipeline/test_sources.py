"""The sources stage (pipeline/sources.py): fingerprints, the plan, removal of dropped sources, and the Ray run.

References are independent of the code under test: the Ray run's outputs are compared byte for byte with the
stage functions called one after another in this process, and "processed only the new source" is read from
the other sources' file mtimes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipeline.params import validate_params
from pipeline.sources import (STAGES, Roots, fingerprints, plan, process_source_stage, remove_stale, run_sources,
                              stage_modules, summary)
from tests.conftest import REPO

SYNTH = {"width": 96, "height": 64, "fps": 4, "seconds": 2.0, "seed": 0}


def _params(sources: list[dict], **sections):
    raw = {"sources": sources, "synthetic": SYNTH, "frames": {"long_side": 96, "per_sequence": 4},
           "masks": {"min_valid_fraction": 0.05}, "download": {"retries": 0, "timeout_s": 10}, **sections}
    return validate_params(raw)


def _synth(name: str, scene: str = "sun") -> dict:
    return {"name": name, "url": f"synthetic://{scene}"}


def _roots(root: Path) -> Roots:
    return Roots(root / "raw", root / "frames", root / "masks", root / "status")


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path, name: str) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for sub in ("raw", "frames", "masks") for p in (root / sub / name).rglob("*")}


def test_fingerprints_follow_what_makes_each_output():
    base = _params([_synth("a")])
    fp = fingerprints(base, base.sources[0])
    assert list(fp) == list(STAGES) and len(set(fp.values())) == 3
    # allowing local sources, the shards/train params and Ray's address change no output
    same = _params([_synth("a")], download={"retries": 0, "timeout_s": 10, "allow_local": True},
                   shards={"seed": 7}, ray={"address": "auto"})
    assert fingerprints(same, same.sources[0]) == fp
    # a frames param: frames and (through the upstream fingerprint) masks, not download
    frames = _params([_synth("a")], frames={"long_side": 96, "per_sequence": 3})
    changed = fingerprints(frames, frames.sources[0])
    assert changed["download"] == fp["download"] and changed["frames"] != fp["frames"] and changed["masks"] != fp["masks"]
    masks = _params([_synth("a")], masks={"min_valid_fraction": 0.2})
    assert [fingerprints(masks, masks.sources[0])[s] == fp[s] for s in STAGES] == [True, True, False]
    synthetic = _params([_synth("a")], synthetic={**SYNTH, "seed": 1})
    assert all(fingerprints(synthetic, synthetic.sources[0])[s] != fp[s] for s in STAGES)
    # ... but a renderer setting or the renderer's code never re-fetches a source that is not rendered
    video = {"name": "v", "url": "https://example.com/v.mp4"}
    plain, reseeded = _params([video]), _params([video], synthetic={**SYNTH, "seed": 1})
    assert fingerprints(plain, plain.sources[0]) == fingerprints(reseeded, reseeded.sources[0])
    assert "pipeline.synthetic" not in stage_modules("download", rendered=False)
    entry = _params([{**_synth("a"), "licence": "CC-BY"}])
    assert all(fingerprints(entry, entry.sources[0])[s] != fp[s] for s in STAGES)


def test_fingerprinted_code_is_what_each_stage_imports_and_dvc_tracks_it():
    assert {"pipeline.download", "pipeline.synthetic", "pipeline.bigtime"} <= set(stage_modules("download"))
    assert {"pipeline.frames", "pipeline.images"} <= set(stage_modules("frames"))
    assert {"pipeline.masks", "pipeline.mask_backends"} <= set(stage_modules("masks"))
    assert "pipeline.params" not in stage_modules("download")  # its values are hashed, not its text
    deps = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["sources"]["deps"])
    for stage in STAGES:  # a code change must make DVC rerun the stage, or no fingerprint is ever checked
        missing = {f"pipeline/{m.split('.')[1]}.py" for m in stage_modules(stage)} - deps
        assert not missing, f"dvc.yaml sources deps lack {missing}"


def test_plan_skips_up_to_date_work_and_dropped_sources_are_removed(tmp_path):
    params = _params([_synth("a"), _synth("b", "indoor")])
    roots = _roots(tmp_path)
    assert plan(params, roots).n_tasks == 6
    for source in params.sources:
        fps = fingerprints(params, source)
        for stage in STAGES:
            assert process_source_stage(stage, params, source, roots, fps[stage])["status"] == "ok"
    assert plan(params, roots).n_tasks == 0
    # a masks param: the masks of both sources, nothing upstream
    stricter = _params([_synth("a"), _synth("b", "indoor")], masks={"min_valid_fraction": 0.2})
    assert {name: [s for s, _ in todo] for name, todo in plan(stricter, roots).todo.items()} == {"a": ["masks"], "b": ["masks"]}
    # a damaged record (its DVC metric copy differs) makes that stage and those after it stale
    roots.status_file("frames", "b").write_text("{}")
    assert [s for s, _ in plan(params, roots).todo["b"]] == ["frames", "masks"]
    # dropping a source deletes its outputs and records and the leftovers of killed runs, nothing else
    (tmp_path / "raw" / ".a.x1.tmp").mkdir()
    (tmp_path / "masks" / ".b.old").mkdir()
    (tmp_path / "frames" / "NOTES.txt.bak").write_text("not a source folder")
    only_a = _params([_synth("a")])
    assert remove_stale(only_a, roots) == ["b"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["NOTES.txt.bak", "a"]
    assert [p.name for p in (tmp_path / "status" / "frames").iterdir()] == ["a.json"]
    assert plan(only_a, roots).n_tasks == 0


@pytest.mark.slow
def test_ray_run_matches_the_stage_functions_and_adds_one_source_only(tmp_path):
    sources = [_synth("a"), _synth("b", "indoor"), {"name": "gone", "url": str(tmp_path / "missing.mp4")}]
    params = _params(sources, download={"allow_local": True, "retries": 0, "timeout_s": 10}, ray={"num_cpus": 2})
    # reference: each stage function in order, in this process
    reference = _roots(tmp_path / "ref")
    for source in params.sources:
        for stage, fp in fingerprints(params, source).items():
            process_source_stage(stage, params, source, reference, fp)
    ray_root = tmp_path / "ray"
    results = run_sources(params, _roots(ray_root), progress=False)
    assert _tree(ray_root) == _tree(tmp_path / "ref")
    assert [r["status"] for r in results["masks"]] == ["ok", "ok", "failed"]
    assert results["download"][2]["category"] == "not_found" and results["masks"][2]["category"] == "upstream_failed"
    assert summary(results)["frames"] == {"sources": 3, "ok": 2, "failed": 1, "categories": {"upstream_failed": 1}}
    # nothing stale: no Ray at all, nothing rewritten
    before = {name: _mtimes(ray_root, name) for name in ("a", "b")}
    run_sources(params, _roots(ray_root), progress=False)
    # one more source: only it is processed
    more = _params(sources + [_synth("c", "sunset")], download={"allow_local": True, "retries": 0, "timeout_s": 10},
                   ray={"num_cpus": 2})
    results = run_sources(more, _roots(ray_root), progress=False)
    assert [r["status"] for r in results["masks"]] == ["ok", "ok", "failed", "ok"]
    assert {name: _mtimes(ray_root, name) for name in ("a", "b")} == before
    assert len(list((ray_root / "frames" / "c").glob("*.png"))) == 4


def test_status_table_has_one_row_per_source_and_the_first_failure(tmp_path):
    import json

    from pipeline.status import status_table

    params = _params([_synth("a"), _synth("b"), _synth("c")])
    records = {("download", "a"): {"status": "ok"}, ("frames", "a"): {"status": "ok"}, ("masks", "a"): {"status": "ok"},
               ("download", "b"): {"status": "ok"},
               ("frames", "b"): {"status": "failed", "category": "camera_motion", "reason": "camera shift 0.1"},
               ("masks", "b"): {"status": "failed", "category": "upstream_failed", "reason": "frames camera_motion"}}
    for (stage, name), record in records.items():
        (tmp_path / stage).mkdir(exist_ok=True)
        (tmp_path / stage / f"{name}.json").write_text(json.dumps({"source": name, "stage": stage, **record}))
    table = status_table(params, tmp_path)
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", ["download", "frames", "masks"]].tolist() == ["ok", "ok", "ok"]
    assert table.loc["b", ["download", "frames", "masks"]].tolist() == ["ok", "camera_motion", "upstream_failed"]
    assert table.loc["b", "reason"] == "camera shift 0.1" and table.loc["a", "reason"] == ""
    assert table.loc["c", ["download", "frames", "masks"]].tolist() == ["-", "-", "-"]


def test_digest_changes_with_a_sources_records_only():
    from pipeline.sources import digests

    records = {stage: [{"source": n, "stage": stage, "status": "ok", "fingerprint": f"{stage}{n}"} for n in "ab"]
               for stage in STAGES}
    base = digests(records)
    assert sorted(base) == ["a", "b"] and base["a"] != base["b"]
    changed = {stage: [dict(r) for r in rows] for stage, rows in records.items()}
    changed["masks"][1]["fingerprint"] = "other"
    after = digests(changed)
    assert after["a"] == base["a"] and after["b"] != base["b"]
    # the stages that read the per-source folders depend on the digest, not on the folders
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("masks_overview", "shards", "evaluate"):
        deps = stages[name]["deps"]
        assert "data/status/sources_digest.json" in deps and not {"data/frames", "data/masks", "data/raw"} & set(deps)


def test_tasks_declare_their_resources():
    from pipeline.sources import task_resources

    cpu = _params([_synth("a")], ray={"cpus_per_task": 2})
    assert task_resources(cpu, "frames") == {"num_cpus": 2.0}
    assert task_resources(cpu, "masks") == {"num_cpus": 2.0}  # the temporal backend needs no GPU
    gpu = _params([_synth("a")], masks={"backend": "detectron2", "detectron2": {"device": "cuda"}})
    assert task_resources(gpu, "masks") == {"num_cpus": 1.0, "num_gpus": 1}
    assert task_resources(gpu, "download") == {"num_cpus": 1.0}


def test_a_stage_run_by_hand_is_kept_by_the_next_sources_run(tmp_path):
    """e.g. detectron2 masks run with .venv-d2's python: the records carry the same fingerprints."""
    from pipeline.cli import run_all_sources
    from pipeline.download import download_source
    from pipeline.frames import extract_frames
    from pipeline.masks import make_masks

    params = _params([_synth("a")])
    roots = _roots(tmp_path)
    run_all_sources("download", download_source, params, roots.raw, roots.status / "download", progress=False)
    run_all_sources("frames", extract_frames, params, roots.frames, roots.status / "frames",
                    input_roots={"raw": roots.raw}, progress=False)
    run_all_sources("masks", make_masks, params, roots.masks, roots.status / "masks",
                    input_roots={"frames": roots.frames}, progress=False)
    assert plan(params, roots).n_tasks == 0
