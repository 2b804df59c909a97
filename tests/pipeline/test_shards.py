"""Shards stage: split rule, sample layout round trip, stage CLI (skips with reasons, failure exit), deterministic
and kill -9-safe output, and real webcam sequences through the stage."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.params import ShardsParams
from pipeline.shard_format import (
    SampleFormatError, decode_sample, encode_sample, npz_bytes, row_from_sample, sample_from_row,
)
from pipeline.shading_weights import shading_smoothness_weights
from pipeline.shards import build_shards, split_of
from tests.conftest import REPO, shared_path
from tests.shard_fixtures import random_sequence, write_params, write_source

PY = sys.executable


def run_stage(root: Path, out: Path, params: Path, **kw) -> subprocess.CompletedProcess:
    cmd = [PY, "-m", "pipeline.shards", "--params", str(params), "--frames", str(root / "frames"),
           "--masks", str(root / "masks"), "--out", str(out), "--stats", str(root / "stats.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, **kw)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- split / layout
def test_split_is_a_stable_per_name_hash():
    names = [f"cam{i}" for i in range(2000)]
    splits = {n: split_of(n, 0, 0.1) for n in names}
    assert 0.08 < sum(s == "val" for s in splits.values()) / len(names) < 0.12
    # adding sources never moves an existing one; the seed changes the draw
    assert all(split_of(n, 0, 0.1) == splits[n] for n in names[::7])
    assert [split_of(n, 1, 0.1) for n in names] != list(splits.values())
    assert all(split_of(n, 0, 0.0) == "train" for n in names[:50])


def test_sample_layout_round_trip_and_webdataset_keys(tmp_path):
    rng = np.random.default_rng(1)
    frames, masks = random_sequence(rng, 3, 16, 24)
    weights = shading_smoothness_weights(frames / 255.0, scales=2)
    gt = {"reflectance": rng.random((3, 16, 24, 3), dtype=np.float32), "shading": rng.random((3, 16, 24), dtype=np.float32)}
    sample = encode_sample("cam_1", frames, masks, weights, {"scene": "outdoor"}, gt)
    assert sorted(k for k in sample if k != "__key__") == [
        "frame0000.png", "frame0001.png", "frame0002.png", "groundtruth.npz",
        "mask0000.png", "mask0001.png", "mask0002.png", "meta.json", "weights.npz"]
    # through a real tar and webdataset's own key splitting
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "x.tar"), encoder=False, mtime=0) as sink:
        sink.write(sample)
    (read,) = list(wds.WebDataset(str(tmp_path / "x.tar"), shardshuffle=False, empty_check=False))
    decoded = decode_sample(read)
    np.testing.assert_array_equal(decoded.frames, frames)
    np.testing.assert_array_equal(decoded.masks, masks)
    for a, b in zip(decoded.weights, weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(decoded.groundtruth["shading"], gt["shading"])
    assert decoded.meta["n_frames"] == 3 and decoded.meta["key"] == "cam_1"
    # a subset decodes only the chosen frames; parquet row <-> sample is lossless
    sub = decode_sample(sample, [2, 0])
    np.testing.assert_array_equal(sub.frames, frames[[2, 0]])
    np.testing.assert_array_equal(sub.groundtruth["reflectance"], gt["reflectance"][[2, 0]])
    assert sample_from_row(row_from_sample(sample)) == sample
    # npz blobs are byte-stable; bad keys are refused
    assert npz_bytes({"a": np.arange(3)}) == npz_bytes({"a": np.arange(3)})
    with pytest.raises(SampleFormatError, match="dots"):
        encode_sample("bad.key", frames, masks, weights, {})


# --------------------------------------------------------------------------------------------- the stage
@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    names = ["cam_a", "cam_b", "cam_c", "synth"]
    for name in names[:3]:
        write_source(tmp_path, name, *random_sequence(rng, 4, 32, 48))
    f, m = random_sequence(rng, 4, 32, 48)
    gt = {"reflectance": rng.random((4, 32, 48, 3), dtype=np.float32), "shading": rng.random((4, 32, 48), dtype=np.float32),
          "light_rgb": rng.random((4, 3), dtype=np.float32), "index": np.arange(4)}
    write_source(tmp_path, "synth", f, m, groundtruth=gt)
    write_source(tmp_path, "moving", *random_sequence(rng, 4, 32, 48),
                 frames_status={"status": "failed", "category": "camera_motion", "reason": "camera shift 0.05"})
    write_source(tmp_path, "dark", *random_sequence(rng, 4, 32, 48),
                 masks_status={"status": "failed", "category": "too_few_valid", "reason": "1/4 frames"})
    broken = tmp_path / "masks" / "cam_c" / "0002.png"  # cam_c's third mask goes missing
    broken.unlink()
    all_names = names + ["moving", "dark", "never_downloaded"]
    return tmp_path, all_names


def test_stage_writes_shards_parquet_manifest_and_reasons(tree):
    root, names = tree
    params = write_params(root / "params.yaml", names, sequences_per_shard=2, val_fraction=0.3)
    result = run_stage(root, root / "shards", params)
    assert result.returncode == 0, result.stderr
    out = root / "shards"
    manifest = json.loads((out / "manifest.json").read_text())
    stats = json.loads((root / "stats.json").read_text())
    ok = sorted(manifest["sequences"])
    assert ok == ["cam_a", "cam_b", "synth"]
    skipped = {s["source"]: s for s in manifest["skipped"]}
    assert skipped["moving"]["category"] == "upstream_failed" and "camera_motion" in skipped["moving"]["reason"]
    assert skipped["dark"]["category"] == "upstream_failed" and "too_few_valid" in skipped["dark"]["reason"]
    assert skipped["cam_c"]["category"] == "corrupt" and "masks/cam_c/0002.png" in skipped["cam_c"]["reason"]
    assert skipped["never_downloaded"]["category"] == "upstream_failed"
    assert stats["n_ok"] == 3 and stats["n_skipped"] == 4 and {r["source"] for r in stats["sources"]} == set(names)
    assert "skipped (upstream_failed)" in result.stderr
    # split rule, shard sizes, checksums, tar members deterministic
    for name in ok:
        assert manifest["sequences"][name]["split"] == split_of(name, 0, 0.3)
    for split, entry in manifest["splits"].items():
        keys = [k for s in entry["shards"] for k in s["keys"]]
        assert keys == sorted(n for n in ok if split_of(n, 0, 0.3) == split)
        for shard in entry["shards"]:
            assert shard["file"].startswith(f"{split}-") and 1 <= shard["n_sequences"] <= 2
            assert sha(out / shard["file"]) == shard["sha256"]
            with tarfile.open(out / shard["file"]) as tar:
                members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
            assert {m.name.split(".", 1)[0] for m in members} == set(shard["keys"])
        assert sha(out / entry["parquet"]["file"]) == entry["parquet"]["sha256"]
        assert pq.ParquetFile(out / entry["parquet"]["file"]).metadata.num_rows == entry["n_sequences"]
    # metadata table and statistics
    table = pq.read_table(out / "parquet" / "sequences.parquet").to_pylist()
    assert [r["key"] for r in table] == ok and table[0]["time_s"] == [0.0, 0.5, 1.0, 1.5]
    assert table[0]["frame_index"] == [0, 3, 6, 9]
    st = manifest["statistics"]
    assert st["n_sequences"] == 3 and st["n_frames"] == 12 and st["frame_sizes"] == {"48x32": 3} and st["n_synthetic"] == 1
    assert 0.85 < st["mean_valid_fraction"] < 0.95
    assert "groundtruth.npz" in {m.name.split(".", 1)[1] for shard in manifest["splits"][manifest["sequences"]["synth"]["split"]]["shards"]
                                 for m in tarfile.open(out / shard["file"]).getmembers()}


def test_a_named_val_sequence_without_a_sample_fails_the_stage_and_keeps_the_shards(tree):
    """A fold scored on nothing must not pass silently: val_sequences naming a failed source (or no source) is an
    error naming it and why, and the shards already built stay as they were."""
    root, names = tree
    assert run_stage(root, root / "shards", write_params(root / "params.yaml", names, val_sequences=["cam_a"])).returncode == 0
    manifest = sha(root / "shards" / "manifest.json")
    for val, why in ((["cam_a", "moving"], "camera_motion"), (["cam_a", "elsewhere"], "not a source")):
        result = run_stage(root, root / "shards", write_params(root / "params.yaml", names, val_sequences=val))
        assert result.returncode == 1 and "shards.val_sequences" in result.stderr
        assert val[1] in result.stderr and why in result.stderr and "cam_a" not in result.stderr.split("val_sequences")[1]
        assert sha(root / "shards" / "manifest.json") == manifest


def test_stage_fails_when_no_sequence_succeeds(tmp_path):
    rng = np.random.default_rng(0)
    write_source(tmp_path, "moving", *random_sequence(rng, 3, 16, 16),
                 frames_status={"status": "failed", "category": "camera_motion", "reason": "camera shift 0.05"})
    params = write_params(tmp_path / "params.yaml", ["moving", "absent"])
    result = run_stage(tmp_path, tmp_path / "shards", params)
    assert result.returncode == 1
    assert "no sequence succeeded" in result.stderr and "camera_motion" in result.stderr and "absent" in result.stderr
    assert not (tmp_path / "shards").exists()
    assert json.loads((tmp_path / "stats.json").read_text())["status"] == "failed"


def test_output_is_deterministic_and_survives_kill_9(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"seq{i:02d}" for i in range(10)]
    for name in names:
        write_source(tmp_path, name, *random_sequence(rng, 8, 96, 128))
    params = write_params(tmp_path / "params.yaml", names, sequences_per_shard=2, val_fraction=0.3, shading_scales=4)
    reference = run_stage(tmp_path, tmp_path / "ref", params)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PY, "-m", "pipeline.shards", "--params", str(params), "--frames", str(tmp_path / "frames"),
                             "--masks", str(tmp_path / "masks"), "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.*.tmp/*-000000.tar")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the stage finished before it could be killed; make the fixture bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(tmp_path.glob(".out.*.tmp"))  # nothing half-written at the output path

    rerun = run_stage(tmp_path, out, params)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "manifest.json").read_text() == (tmp_path / "ref" / "manifest.json").read_text()
    for path in sorted((tmp_path / "ref").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (out / path.relative_to(tmp_path / "ref")).read_bytes(), path.name
    assert not list(tmp_path.glob(".out.*"))  # the killed run's temp folder was cleaned


def test_build_shards_in_process_matches_recomputed_weights(tmp_path):
    rng = np.random.default_rng(5)
    frames, masks = random_sequence(rng, 5, 24, 40)
    write_source(tmp_path, "one", frames, masks)
    params = ShardsParams(shading_scales=2, val_fraction=0.0)
    manifest, records = build_shards(["one"], tmp_path / "frames", tmp_path / "masks", tmp_path / "shards", params)
    assert records[0]["status"] == "ok" and manifest["splits"]["train"]["n_sequences"] == 1
    import webdataset as wds

    (sample,) = list(wds.WebDataset(str(tmp_path / "shards" / "train-000000.tar"), shardshuffle=False))
    decoded = decode_sample(sample)
    # the params defaults (the authors' factor, per-frame weights, chroma scale 0.05; pipeline/params.py
    # ShadingWeightsParams)
    ref = shading_smoothness_weights(frames.astype(np.float32) / 255.0, scales=2, edge_offset=1.0, edge_scale=12.0,
                                     reduce="none", sigma_chroma=0.05)
    for a, b in zip(decoded.weights, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert decoded.meta["frames"][2]["valid_fraction"] == pytest.approx(masks[2].mean(), abs=1e-6)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sample_cache_gives_the_same_bytes_and_encodes_only_changed_sources(tree, tmp_path):
    root, names = tree
    params = ShardsParams(sequences_per_shard=2, val_fraction=0.3)
    build_shards(names, root / "frames", root / "masks", tmp_path / "plain", params)
    cache = tmp_path / "cache"
    build_shards(names, root / "frames", root / "masks", tmp_path / "cold", params, cache_dir=cache)
    build_shards(names, root / "frames", root / "masks", tmp_path / "warm", params, cache_dir=cache)
    assert _files(tmp_path / "cold") == _files(tmp_path / "plain") == _files(tmp_path / "warm")
    entries = sorted(cache.glob("*.tar"))
    assert len(entries) == 3  # cam_a, cam_b, synth (cam_c misses a mask; failed sources are never cached)
    # a warm build reads the cache: a (valid, different) weights member planted in cam_a's entry shows up in
    # the shards; packing params (the split) never change a key
    import io, tarfile  # noqa: E401
    from pipeline.shards import read_raw, sample_cache_key

    key = sample_cache_key(read_raw("cam_a", root / "frames" / "cam_a", root / "masks" / "cam_a"), params)
    assert key == sample_cache_key(read_raw("cam_a", root / "frames" / "cam_a", root / "masks" / "cam_a"),
                                   ShardsParams(sequences_per_shard=1, val_fraction=0.9, seed=3))
    with tarfile.open(cache / f"{key}.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    planted = npz_bytes({"w0": np.zeros((1, 1), np.float32)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {**members, "weights.npz": planted}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (cache / f"{key}.tar").write_bytes(buffer.getvalue())
    build_shards(names, root / "frames", root / "masks", tmp_path / "planted", params, cache_dir=cache)
    shards = b"".join(p.read_bytes() for p in sorted((tmp_path / "planted").glob("*.tar")))
    assert planted in shards
    # a changed frame changes the key: that source is encoded again; its old entry and dropped sources are pruned
    write_source(root, "cam_a", *random_sequence(np.random.default_rng(9), 4, 32, 48))
    build_shards(["cam_a", "synth"], root / "frames", root / "masks", tmp_path / "changed", params, cache_dir=cache)
    assert planted not in b"".join(p.read_bytes() for p in sorted((tmp_path / "changed").glob("*.tar")))
    assert len(list(cache.glob("*.tar"))) == 2 and (cache / f"{key}.tar").exists() is False


# --------------------------------------------------------------------------------------------- real data
def test_webcam_sequences_through_the_stage(tmp_path):
    webcams = shared_path("webcams")
    names = []
    for cam in sorted(p for p in webcams.iterdir() if p.is_dir()):
        files = sorted(cam.glob("*.jpg"))[:6]
        frames = []
        for f in files:
            img = cv2.imread(str(f))[..., ::-1]
            h, w = img.shape[:2]
            scale = 96 / max(h, w)
            size = (2 * round(w * scale / 2), 2 * round(h * scale / 2))
            frames.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        frames = np.stack(frames)
        write_source(tmp_path, cam.name, frames, np.ones(frames.shape[:3], bool))
        names.append(cam.name)
    params = write_params(tmp_path / "params.yaml", names, sequences_per_shard=2, val_fraction=0.0, shading_scales=3)
    result = run_stage(tmp_path, tmp_path / "shards", params)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert sorted(manifest["sequences"]) == names and manifest["statistics"]["mean_valid_fraction"] == 1.0
    assert manifest["statistics"]["n_frames"] == 6 * len(names)
    assert -6 < manifest["statistics"]["mean_log_lum"] < 0  # real outdoor images: linear luminance well below 1

    from training.data import LoaderConfig, ShardedSequences

    items = list(ShardedSequences(tmp_path / "shards", "train", LoaderConfig(frames=4)))
    assert sorted(i["key"] for i in items) == names
    for item in items:
        h, w = item["srgb"].shape[-2:]
        assert (h, w) in ((256, 384), (384, 256), (256, 256)) and item["srgb"].shape[0] == 4
        assert item["mask"].mean() > 0.99 and all(torch_finite(x) for x in item["shading_weights"])


def torch_finite(t) -> bool:
    return bool(t.isfinite().all())
