"""Loader throughput: seconds per sequence item (m frames at the 256x384 bucket, augmentation + shading weights).

Input: the shared webcam sequences (../shared/data/webcams/<camera>/*.jpg, first `--per-sequence` frames, long
side 384, masks all valid), or synthetic frames made here when they are absent. They are written as frames/masks
folders (CONTRACTS.md layout) in a temp dir and turned into shards by the production `pipeline.shards.build_shards`.

Measured, both on one process (one loader worker):
- shards: `training.data.ShardedSequences` (tar read + PNG decode of the m sampled frames + flip/rotation/crop/
  resize + transforming the precomputed weights), items/s over `--items` items.
- baseline (how the authors' loader works): read the m PNGs from the frames folder (PIL), apply the same
  augmentation (production `sample_augmentation`/`transform_images`), then compute the multiscale weights on the
  fly on the augmented frames (`pipeline.shading_weights.weights_from_params`, numpy).
Also reported: `make_loader(num_workers=1)` wall time per item (includes worker start-up). Target: <= 0.13 s
per sequence (the authors' loader ~1.26 s).

Usage: OMP_NUM_THREADS=1 python -m bench.loader [--items 24] [--frames 8] [--per-sequence 20]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench._common import WEBCAMS
from pipeline.params import ShardsParams
from pipeline.shading_weights import weights_from_params
from pipeline.shards import build_shards
from training.data import (
    LoaderConfig, ShardedSequences, choose_bucket, choose_frames, item_rng, make_loader, sample_augmentation,
    transform_images,
)


def _write(root: Path, name: str, frames: np.ndarray) -> None:
    fdir, mdir = root / "frames" / name, root / "masks" / name
    fdir.mkdir(parents=True)
    mdir.mkdir(parents=True)
    files = [f"{i:04d}.png" for i in range(len(frames))]
    for f, frame in zip(files, frames):
        cv2.imwrite(str(fdir / f), np.ascontiguousarray(frame[..., ::-1]))
        Image.fromarray(np.ones(frame.shape[:2], bool)).convert("1").save(mdir / f)
    (fdir / "meta.json").write_text(json.dumps({"source": name, "frames": [{"file": f} for f in files]}))
    for d, stage in ((fdir, "frames"), (mdir, "masks")):
        (d / "status.json").write_text(json.dumps({"source": name, "stage": stage, "status": "ok"}))


def make_input(root: Path, per_sequence: int, long_side: int = 384) -> list[str]:
    """Frames/masks folders from the webcams (or synthetic frames); returns the sequence names."""
    names = []
    cams = sorted(p for p in WEBCAMS.iterdir() if p.is_dir()) if WEBCAMS.exists() else []
    for cam in cams:
        frames = []
        for f in sorted(cam.glob("*.jpg"))[:per_sequence]:
            img = cv2.imread(str(f))[..., ::-1]
            h, w = img.shape[:2]
            s = long_side / max(h, w)
            frames.append(cv2.resize(img, (2 * round(w * s / 2), 2 * round(h * s / 2)), interpolation=cv2.INTER_AREA))
        _write(root, cam.name, np.stack(frames))
        names.append(cam.name)
    if not names:
        print(f"(no webcams at {WEBCAMS}: synthetic frames)")
        rng = np.random.default_rng(0)
        for k in range(3):
            yy, xx = np.mgrid[0:256, 0:384]
            base = 0.25 + 0.5 * np.stack([np.sin(xx / 9.0 + k) ** 2, np.cos(yy / 13.0) ** 2, ((xx + yy) % 31) / 31], -1)
            gains = np.linspace(0.3, 1.1, per_sequence)[:, None, None, None]
            frames = np.clip(base * gains * 255 + rng.normal(0, 4, (per_sequence, 256, 384, 3)), 0, 255).astype(np.uint8)
            _write(root, f"synthetic{k}", frames)
            names.append(f"synthetic{k}")
    return names


def baseline_item(frames_dir: Path, masks_dir: Path, key: str, config: LoaderConfig, params: ShardsParams, epoch: int):
    """Authors-style item: decode the PNG files, augment, compute the weights on the fly."""
    files = [f["file"] for f in json.loads((frames_dir / "meta.json").read_text())["frames"]]
    rng = item_rng(config.seed, epoch, key)
    idx = choose_frames(rng, len(files), config.frames)
    frames = np.stack([np.asarray(Image.open(frames_dir / files[i]).convert("RGB")) for i in idx])
    masks = np.stack([np.asarray(Image.open(masks_dir / files[i])) for i in idx]).astype(np.uint8)
    out_hw = choose_bucket(*frames.shape[1:3], config.buckets)
    aug = sample_augmentation(rng, frames.shape[1:3], out_hw, config)
    srgb = transform_images(frames.astype(np.float32) / 255, aug)
    mask = transform_images(masks, aug, nearest=True)
    weights = weights_from_params(srgb, params)
    return srgb, mask, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--baseline-items", type=int, default=6)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--per-sequence", type=int, default=20)
    args = parser.parse_args()
    params = ShardsParams(sequences_per_shard=2, val_fraction=0.0, shading_scales=4)
    config = LoaderConfig(frames=args.frames, buckets=((256, 384),))  # every item at 256x384
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = make_input(root, args.per_sequence)
        t0 = time.perf_counter()
        manifest, _ = build_shards(names, root / "frames", root / "masks", root / "shards", params)
        build_s = time.perf_counter() - t0
        st = manifest["statistics"]
        print(f"input: {len(names)} sequences x {args.per_sequence} frames, sizes {st['frame_sizes']}; "
              f"shards built in {build_s:.1f} s ({build_s / len(names):.2f} s/sequence incl. weights)")

        ds = ShardedSequences(root / "shards", "train", config, repeat=True)
        stream = iter(ds)
        item = next(stream)  # warm-up
        assert tuple(item["srgb"].shape) == (args.frames, 3, 256, 384), item["srgb"].shape
        t0 = time.perf_counter()
        for _ in range(args.items):
            next(stream)
        shards_s = (time.perf_counter() - t0) / args.items

        loader = make_loader(root / "shards", "train", config, num_workers=1, repeat=True)
        t0 = time.perf_counter()
        it = iter(loader)
        for _ in range(args.items):
            next(it)
        worker_s = (time.perf_counter() - t0) / args.items
        del it

        baseline_item(root / "frames" / names[0], root / "masks" / names[0], names[0], config, params, 0)  # warm-up
        t0 = time.perf_counter()
        for i in range(args.baseline_items):
            name = names[i % len(names)]
            baseline_item(root / "frames" / name, root / "masks" / name, name, config, params, i)
        base_s = (time.perf_counter() - t0) / args.baseline_items

    print(f"m={args.frames} at 256x384, augmentation + {params.shading_scales}-scale weights, one process:")
    print(f"  shards loader        {shards_s:.4f} s/sequence  ({1 / shards_s:6.1f} sequences/s)")
    print(f"  make_loader(1 worker) {worker_s:.4f} s/sequence  ({1 / worker_s:6.1f} sequences/s, incl. start-up)")
    print(f"  baseline (PNG files + weights on the fly) {base_s:.4f} s/sequence  ({1 / base_s:6.1f} sequences/s)")
    print(f"  speed-up {base_s / shards_s:.1f}x; target <= 0.13 s/sequence: {'met' if shards_s <= 0.13 else 'NOT met'}")


if __name__ == "__main__":
    main()
