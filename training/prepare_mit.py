"""Recipe helper: MIT intrinsic light sequences -> folders of 8-bit sRGB frames usable as `images` sources.

Consumes `--mit-dir` (Barron's layout `<object>/light01..light10.png`, 16-bit LINEAR PNG; the folders also hold
diffuse/reflectance/shading/mask PNGs, which the `images` source type would otherwise copy as frames, and PIL
would truncate the 16-bit values). Produces `--out/<object>/lightNN.png`: 8-bit sRGB RGB, encoded with
`training.evaluate.mit_frame_8bit` (`mit_srgb`'s plain sRGB curve, no exposure change) - the same conversion the
evaluation applies to MIT inputs. No ground truth is read or written.

Used by params-mit.yaml (the "train on MIT light sequences, no ground truth" recipe of the paper's Table 3):
    python -m training.prepare_mit --mit-dir ../shared/data/mit-intrinsic --out data/mit-lights
    cp params-mit.yaml params.yaml && dvc repro     # on a branch / in `dvc exp` workspace
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.atomic import atomic_dir, atomic_write_bytes
from training.decompose import png_bytes, read_linear_png
from training.evaluate import mit_frame_8bit


def prepare_object(folder: Path, out: Path) -> int:
    lights = sorted(folder.glob("light[0-9][0-9].png"))
    with atomic_dir(out) as tmp:
        for path in lights:
            atomic_write_bytes(tmp / path.name, png_bytes(mit_frame_8bit(read_linear_png(path))))
    return len(lights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mit-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    objects = sorted(p for p in args.mit_dir.iterdir() if (p / "light01.png").exists()) if args.mit_dir.is_dir() else []
    if not objects:
        print(f"prepare_mit: no <object>/light01.png under {args.mit_dir}", file=sys.stderr)
        return 1
    for folder in objects:
        print(f"prepare_mit: {folder.name}: {prepare_object(folder, args.out / folder.name)} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
