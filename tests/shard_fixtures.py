"""Tiny on-disk fixtures for the shards stage and the loader: frames/masks folders in the CONTRACTS.md layout.

`write_source(root, name, frames, masks)` writes `root/frames/<name>/` (NNNN.png by OpenCV, meta.json,
status.json ok, optional groundtruth.npz) and `root/masks/<name>/` (NNNN.png PIL mode "1", meta.json,
status.json ok); `write_params(path, names, **shards)` a params.yaml listing those sources.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image


def random_sequence(rng: np.random.Generator, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,h,w,3) uint8 frames (smooth scene x per-frame gain + noise) and (n,h,w) bool masks (~90% valid)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.3 + 0.4 * np.stack([np.sin(xx / 5.0) ** 2, np.cos(yy / 7.0) ** 2, ((xx + yy) % 17) / 17.0], -1)
    gains = np.linspace(0.4, 1.2, n)[:, None, None, None]
    frames = np.clip(base[None] * gains * 255 + rng.normal(0, 3, (n, h, w, 3)), 0, 255).astype(np.uint8)
    masks = rng.random((n, h, w)) > 0.1
    return frames, masks


def write_source(root: Path, name: str, frames: np.ndarray, masks: np.ndarray, *, groundtruth: dict | None = None,
                 frames_status: dict | None = None, masks_status: dict | None = None, scene: str = "outdoor") -> None:
    fdir, mdir = Path(root) / "frames" / name, Path(root) / "masks" / name
    fdir.mkdir(parents=True, exist_ok=True)
    mdir.mkdir(parents=True, exist_ok=True)
    n, h, w = frames.shape[:3]
    files = [f"{i:04d}.png" for i in range(n)]
    for i, f in enumerate(files):
        assert cv2.imwrite(str(fdir / f), np.ascontiguousarray(frames[i][..., ::-1]))
        Image.fromarray(masks[i]).convert("1").save(mdir / f)
    (fdir / "meta.json").write_text(json.dumps({
        "source": name, "scene": scene, "licence": "CC0", "attribution": "test", "width": w, "height": h,
        "camera_shift": 0.0, "frames": [{"file": f, "index": 3 * i, "time_s": 0.5 * i, "mean_log_lum": 0.0}
                                        for i, f in enumerate(files)]}))
    (mdir / "meta.json").write_text(json.dumps({"source": name, "files": files,
                                                "valid_fraction": [float(m.mean()) for m in masks]}))
    if groundtruth is not None:
        np.savez_compressed(fdir / "groundtruth.npz", **groundtruth)
    (fdir / "status.json").write_text(json.dumps(frames_status or {"source": name, "stage": "frames", "status": "ok"}))
    (mdir / "status.json").write_text(json.dumps(masks_status or {"source": name, "stage": "masks", "status": "ok"}))


def write_params(path: Path, names: list[str], **shards) -> Path:
    params = {"sources": [{"name": n, "url": f"https://example.com/{n}.mp4"} for n in names],
              "shards": {"sequences_per_shard": 2, "val_fraction": 0.0, "seed": 0, "shading_scales": 3, **shards}}
    Path(path).write_text(yaml.safe_dump(params))
    return Path(path)
