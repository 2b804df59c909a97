"""Masks stage: one binary validity mask per selected frame of one source.

Consumes `data/frames/<name>/` (`NNNN.png` 8-bit sRGB RGB, `meta.json` listing them in time order,
`status.json`) and optionally the source's `manual_mask` PNG (white = valid). Produces `data/masks/<name>/`:
`NNNN.png` (PIL mode "1", same size and name as the frame, 1 = valid) and `meta.json` {source, backend, width,
height, files, valid_fraction [per frame], invalid_fraction {saturation, semantic, manual: [per frame]},
backend_info, params}; the stage CLI adds `status.json`.

valid = NOT saturation/darkness AND NOT semantic (sky, dynamic; `masks.backend`, see pipeline/mask_backends.py)
AND NOT manual AND the BigTime release's own mask where the frames stage wrote one (`NNNN_mask.png`, named by
the meta row's `release_mask`; `invalid_fraction.release`). A source whose frames have fewer than `masks.min_valid_frames` frames with at least
`masks.min_valid_fraction` valid pixels fails with category "too_few_valid" (meta.json is still written, the
PNGs are not); a failed frames stage gives "upstream_failed".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.atomic import atomic_dir, atomic_write_json, read_status, status_record
from pipeline.mask_backends import build_backend, manual_invalid, saturation_invalid
from pipeline.params import MasksParams, Params, Source

STAGE = "masks"


@dataclass
class MaskSet:
    valid: np.ndarray  # (m, H, W) bool, True = use the pixel
    saturation: np.ndarray  # (m, H, W) bool invalid
    semantic: np.ndarray  # (m, H, W) bool invalid
    manual: np.ndarray  # (H, W) bool invalid
    backend_info: dict
    release: np.ndarray | None = None  # (m, H, W) bool invalid: the BigTime release's own masks (None: no release)

    def fractions(self) -> dict:
        """Per-frame valid fraction and per-component invalid fractions (lists of floats, one per frame)."""
        per_frame = lambda a: [round(float(f), 5) for f in a.reshape(a.shape[0], -1).mean(axis=1)]  # noqa: E731
        m = self.valid.shape[0]
        return {
            "valid_fraction": per_frame(self.valid),
            "invalid_fraction": {
                "saturation": per_frame(self.saturation),
                "semantic": per_frame(self.semantic),
                "manual": per_frame(np.broadcast_to(self.manual, (m, *self.manual.shape))),
                **({"release": per_frame(self.release)} if self.release is not None else {}),
            },
        }


def compute_masks(frames_srgb: np.ndarray, params: MasksParams, manual_image: np.ndarray | None = None,
                  backend=None, release_invalid: np.ndarray | None = None) -> tuple[MaskSet | None, str | None]:
    """(m,H,W,3) uint8 sRGB frames -> (MaskSet, None), or (None, error) when the semantic backend fails.

    `backend` defaults to `build_backend(params)` (pass one to reuse a loaded model across sources).
    `release_invalid` (m,H,W) bool (a BigTime release's masks, True = invalid) is ANDed in like the others.
    """
    m, h, w = frames_srgb.shape[:3]
    sat = saturation_invalid(frames_srgb, high=params.saturation.high, low=params.saturation.low,
                             dilate=params.saturation.dilate)
    backend = build_backend(params) if backend is None else backend
    result, error = backend(frames_srgb)
    if error is not None:
        return None, f"{params.backend} backend: {error}"
    manual = manual_invalid(manual_image, h, w) if manual_image is not None else np.zeros((h, w), bool)
    valid = ~sat & ~result.invalid & ~manual[None]
    if release_invalid is not None:
        valid &= ~release_invalid
    return MaskSet(valid, sat, result.invalid, manual, result.info, release_invalid), None


def accept(valid_fraction: list[float], params: MasksParams) -> tuple[bool, str]:
    """The rejection rule: enough frames with enough valid pixels? -> (ok, sentence)."""
    good = sum(f >= params.min_valid_fraction for f in valid_fraction)
    sentence = (f"{good}/{len(valid_fraction)} frames have >= {params.min_valid_fraction:.0%} valid pixels "
                f"(need {params.min_valid_frames})")
    return good >= params.min_valid_frames, sentence


def load_frames(frames_dir: Path) -> tuple[list[str], np.ndarray]:
    """The frames stage's PNGs in time order (from meta.json, else sorted NNNN.png) -> (names, (m,H,W,3) uint8)."""
    meta_path = frames_dir / "meta.json"
    if meta_path.exists():
        names = [f["file"] for f in json.loads(meta_path.read_text())["frames"]]
    else:
        names = sorted(p.name for p in frames_dir.glob("[0-9][0-9][0-9][0-9].png"))
    if not names:
        raise FileNotFoundError(f"no frames in {frames_dir}")
    frames = []
    for n in names:
        try:
            with Image.open(frames_dir / n) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as err:  # FileNotFoundError included: the message names the file
            raise ValueError(f"{frames_dir / n}: not a readable frame ({err})") from None
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"frames in {frames_dir} differ in size")
    return names, np.stack(frames)


def load_release_masks(frames_dir: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The frames stage's `NNNN_mask.png` (meta rows' `release_mask`, 255 = valid) -> (m,H,W) bool invalid.

    None when no frame has a release mask; frames without one are all valid. Raises ValueError naming both
    files when a mask's size differs from its frame's.
    """
    meta_path = frames_dir / "meta.json"
    rows = json.loads(meta_path.read_text()).get("frames", []) if meta_path.exists() else []
    if not any(row.get("release_mask") for row in rows):
        return None
    invalid = np.zeros(shape, bool)
    for t, row in enumerate(rows):
        if row.get("release_mask"):
            mask = np.asarray(Image.open(frames_dir / row["release_mask"]).convert("L"))
            if mask.shape != shape[1:]:
                raise ValueError(f"release mask {frames_dir / row['release_mask']} is {mask.shape[1]}x{mask.shape[0]} "
                                 f"but frame {frames_dir / row['file']} is {shape[2]}x{shape[1]}")
            invalid[t] = mask < 128
    return invalid


def make_masks(params: Params, source: Source, out_dir: Path, *, frames: Path) -> dict:
    """Stage body for one source: read frames, compute masks, write them atomically; return the status record."""
    out_dir, frames_dir = Path(out_dir), Path(frames)
    fail = lambda category, reason, **extra: status_record(source.name, STAGE, category, reason, **extra)  # noqa: E731
    upstream = read_status(frames_dir / "status.json")
    if upstream is None or upstream.get("status") != "ok":
        why = "no frames status" if upstream is None else f"frames {upstream.get('category')}: {upstream.get('reason', '')}"
        _clear(out_dir)
        return fail("upstream_failed", why)
    try:
        names, frames_srgb = load_frames(frames_dir)
        release_invalid = load_release_masks(frames_dir, frames_srgb.shape[:3])
    except (OSError, ValueError, KeyError) as err:
        _clear(out_dir)
        return fail("corrupt", f"cannot read frames: {err}")
    manual_image = None
    if source.manual_mask:
        try:
            manual_image = np.asarray(Image.open(source.manual_mask).convert("L"))
        except OSError as err:
            _clear(out_dir)
            return fail("not_found", f"manual_mask {source.manual_mask!r}: {err}")
    masks, error = compute_masks(frames_srgb, params.masks, manual_image, release_invalid=release_invalid)
    if error is not None:
        _clear(out_dir)
        return fail("error", error)
    fractions = masks.fractions()
    ok, sentence = accept(fractions["valid_fraction"], params.masks)
    meta = {
        "source": source.name, "backend": params.masks.backend, "width": int(frames_srgb.shape[2]),
        "height": int(frames_srgb.shape[1]), "files": names, **fractions, "backend_info": masks.backend_info,
        "accepted": ok, "rule": sentence, "params": params.masks.model_dump(),
    }
    with atomic_dir(out_dir) as tmp:
        if ok:
            for name, valid in zip(names, masks.valid):
                Image.fromarray(valid).convert("1").save(tmp / name)
        atomic_write_json(tmp / "meta.json", meta)
    mean_valid = float(np.mean(fractions["valid_fraction"]))
    if not ok:
        return fail("too_few_valid", sentence, n_frames=len(names), mean_valid_fraction=round(mean_valid, 4))
    return status_record(source.name, STAGE, n_frames=len(names), mean_valid_fraction=round(mean_valid, 4),
                         summary=f"{len(names)} masks, mean valid {mean_valid:.0%} ({params.masks.backend})")


def _clear(out_dir: Path) -> None:
    """Leave an empty output folder (no stale masks from an earlier run)."""
    with atomic_dir(out_dir):
        pass


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main(STAGE, make_masks, argv, inputs={"frames": "frames stage output"})


if __name__ == "__main__":
    raise SystemExit(main())
