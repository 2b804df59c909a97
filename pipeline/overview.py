"""Masks overview: one picture per source of what the masks stage kept, for `dvc plots show`.

Consumes `data/frames/<name>/` (`NNNN.png` 8-bit sRGB, `meta.json`, `status.json`) and `data/masks/<name>/`
(`NNNN.png` mode "1", 1 = valid, `status.json`) for every source in params.yaml's `sources`. Produces, in a
folder built atomically, `<name>.png` (8-bit sRGB): the top row holds up to MAX_FRAMES of the sequence's
frames (evenly spread over time), the bottom row the same frames with every invalid pixel tinted magenta
(half-way), each tile at most TILE_SIDE pixels on its long side. Sources whose frames or masks stage failed get
no picture (their status files say why; the CLI prints them). Only PNGs go into the folder: `dvc plots show`
renders every file in it.

CLI (the `masks_overview` stage of dvc.yaml, which declares the folder as plots):
``python -m pipeline.overview --frames data/frames --masks data/masks --out data/plots/masks [--params P]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.atomic import atomic_dir, read_status
from pipeline.frames import evenly_spread
from pipeline.masks import load_frames
from pipeline.cli import parse_with_params

MAX_FRAMES = 8
TILE_SIDE = 160  # pixels, long side of one tile
TINT = np.array([255, 0, 255], np.float32)  # invalid pixels are blended half-way towards this sRGB colour


def overview_image(frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(m,H,W,3) uint8 sRGB frames and (m,H,W) bool valid masks -> (2h, k*w, 3) uint8: frames over tinted frames.

    k = min(m, MAX_FRAMES) frames evenly spread; tiles resized (area) so the long side is <= TILE_SIDE.
    """
    pick = evenly_spread(len(frames), MAX_FRAMES)
    h, w = frames.shape[1:3]
    scale = min(1.0, TILE_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resize = (lambda a: cv2.resize(a, size, interpolation=cv2.INTER_AREA)) if scale < 1 else (lambda a: a)  # noqa: E731
    top, bottom = [], []
    for i in pick:
        tinted = np.where(valid[i][..., None], frames[i], (frames[i].astype(np.float32) + TINT) / 2).astype(np.uint8)
        top.append(resize(frames[i]))
        bottom.append(resize(tinted))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


def source_overview(frames_dir: Path, masks_dir: Path) -> tuple[np.ndarray | None, dict]:
    """One source -> (overview image or None, index row {status, [category, reason]})."""
    for stage, folder in (("frames", frames_dir), ("masks", masks_dir)):
        status = read_status(folder / "status.json")
        if status is None or status.get("status") != "ok":
            reason = "not run" if status is None else status.get("reason", "")
            return None, {"status": "skipped", "stage": stage, "category": (status or {}).get("category", "missing"),
                          "reason": reason}
    names, frames = load_frames(frames_dir)
    valid = np.stack([np.asarray(Image.open(masks_dir / name).convert("L")) > 0 for name in names])
    if valid.shape != frames.shape[:3]:
        return None, {"status": "skipped", "stage": "masks", "category": "corrupt",
                      "reason": f"masks {valid.shape[1:]} and frames {frames.shape[1:3]} differ in size"}
    return overview_image(frames, valid), {"status": "ok", "valid_fraction": round(float(valid.mean()), 4)}


def write_overviews(names: list[str], frames_root: Path, masks_root: Path, out_dir: Path) -> dict:
    """Write `<name>.png` for every source that has frames and masks; return {name: status row}."""
    index = {}
    with atomic_dir(out_dir) as tmp:
        for name in names:
            image, row = source_overview(Path(frames_root) / name, Path(masks_root) / name)
            if image is not None:
                Image.fromarray(image).save(tmp / f"{name}.png")
            index[name] = row
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Masks overview pictures (one per source) for dvc plots")
    parser.add_argument("--frames", required=True, type=Path, help="frames root (data/frames)")
    parser.add_argument("--masks", required=True, type=Path, help="masks root (data/masks)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (data/plots/masks)")
    args, params = parse_with_params(parser, argv)
    index = write_overviews([s.name for s in params.sources], args.frames, args.masks, args.out)
    ok = sum(row["status"] == "ok" for row in index.values())
    skipped = "; ".join(f"{name}: {row['stage']} {row['category']}" for name, row in index.items() if row["status"] != "ok")
    print(f"masks_overview: {ok} pictures, {len(index) - ok} sources skipped" + (f" ({skipped})" if skipped else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
