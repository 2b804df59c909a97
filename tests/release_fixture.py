"""A tiny BigTime release, built by the tests in exactly the authors' layout.

`build_release(root)` renders three `pipeline.synthetic` scenes and writes `root/BigTime_v1/<sequence>/data/`:
`<frame>.png` (or `.jpg` for sequence 0003) with `<frame>_mask.png` beside each (8-bit grey, 255 = valid =
neither sky nor a moving object in the renderer's ground truth), plus `root/train_frames.csv` in the official
list's format (`sequence,frame`). Deliberate defects, as a real release download may have them:
- 0001/data/0003.png has no mask (`MISSING_MASK`);
- 0002/data/0004.png is truncated, not a readable image (`UNREADABLE`).
The list names 6 frames of 0001 and of 0002 (including both defects) and nothing of 0003.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.synthetic import render_scene

SEQUENCES = {"0001": "sun", "0002": "street", "0003": "sunset"}
SIZE = (96, 64)  # (w, h)
N_FRAMES = 10
LISTED = {"0001": [f"{i:04d}.png" for i in (0, 1, 3, 5, 7, 9)], "0002": [f"{i:04d}.png" for i in (0, 2, 4, 5, 7, 9)]}
MISSING_MASK = ("0001", "0003.png")
UNREADABLE = ("0002", "0004.png")


def render(scene: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T,H,W,3) uint8 sRGB, valid (T,H,W) bool from the ground truth) of one scene at SIZE."""
    seq = render_scene(scene, width=SIZE[0], height=SIZE[1], fps=4, seconds=N_FRAMES / 4, seed=0)
    return seq.srgb, ~(seq.sky | seq.dynamic)


def build_release(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Write the release under root; return (release folder, frame list CSV, {sequence: valid (T,H,W)})."""
    release = Path(root) / "BigTime_v1"
    truth = {}
    for sequence, scene in SEQUENCES.items():
        data = release / sequence / "data"
        data.mkdir(parents=True)
        frames, valid = render(scene)
        truth[sequence] = valid
        ext = ".jpg" if sequence == "0003" else ".png"
        for t, (frame, ok) in enumerate(zip(frames, valid)):
            name = f"{t:04d}{ext}"
            if (sequence, name) == UNREADABLE:
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="PNG")
                (data / name).write_bytes(buf.getvalue()[:60])  # header only: not decodable
            else:
                Image.fromarray(frame).save(data / name, quality=95) if ext == ".jpg" else Image.fromarray(frame).save(data / name)
            if (sequence, name) != MISSING_MASK:
                Image.fromarray((ok * 255).astype(np.uint8), mode="L").save(data / f"{t:04d}_mask.png")
    frame_list = Path(root) / "train_frames.csv"
    frame_list.write_text("sequence,frame\n" + "".join(f"{s},{f}\n" for s, frames in LISTED.items() for f in frames))
    return release, frame_list, truth
