"""Frame choice on real-world problems (pipeline/frames.py): night frames, too few usable frames, panoramas.

Image folders written here with hand-set brightness: a day of textured frames plus night frames that are
almost black. Night frames must never be selected (they were in a real city time-lapse: 0.3% valid pixels);
a sequence with too few usable frames, and frames too elongated or too small for the loader's buckets, are
rejected with a reason naming the rule and its key.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.download import download_source
from pipeline.frames import extract_frames, geometry_problem, usable_fraction
from pipeline.params import FramesParams, validate_params


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.8, (h // 8 + 1, w // 8 + 1, 3))
    return np.kron(base, np.ones((8, 8, 1)))[:h, :w]  # 8x8 albedo blocks, (h, w, 3) in [0.3, 0.8]


def _folder(root: Path, gains: list[float], size=(96, 64)) -> Path:
    """One PNG per gain: sRGB = albedo texture x gain (clipped), named in time order."""
    root.mkdir(parents=True)
    albedo = _texture(size[1], size[0])
    for t, gain in enumerate(gains):
        Image.fromarray(np.clip(albedo * gain * 255, 0, 255).astype(np.uint8)).save(root / f"{t:03d}.png")
    return root


def _stage(tmp: Path, folder: Path, **frames) -> tuple[dict, Path]:
    params = validate_params({"sources": [{"name": "s", "url": str(folder), "type": "images"}],
                              "download": {"allow_local": True}, "frames": {"long_side": 96, **frames}})
    raw, out = tmp / "raw", tmp / "frames"
    record = download_source(params, params.sources[0], raw)
    assert record["status"] == "ok", record
    (raw / "status.json").write_text(json.dumps(record))
    return extract_frames(params, params.sources[0], out, raw), out


def test_usable_fraction_counts_dark_and_saturated_pixels():
    frame = np.full((40, 60, 3), 128, np.uint8)
    frame[:10] = 0  # dark: 1/4
    frame[10:15, :, 1] = 255  # one channel saturated: 1/8
    assert usable_fraction(frame, low=0.02, high=0.98) == pytest.approx(1 - 0.25 - 0.125)


def test_night_frames_are_never_selected(tmp_path):
    day = [0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 0.9, 0.6, 0.35]
    gains = [0.02, 0.015, *day, 0.02]  # three night frames (sRGB ~ 2-4/255: dark under masks.saturation.low)
    record, out = _stage(tmp_path, _folder(tmp_path / "seq", gains), per_sequence=5)
    assert record["status"] == "ok", record
    picked = [row["index"] for row in json.loads((out / "meta.json").read_text())["frames"]]
    assert len(picked) == 5 and not set(picked) & {0, 1, len(gains) - 1}, picked
    # still spans the day's illumination: its darkest (0.25) and brightest (1.0) usable frames are in
    assert {2, 7} <= set(picked), picked


def test_too_few_usable_frames_is_rejected_with_the_count(tmp_path):
    gains = [0.02] * 6 + [0.5, 0.8, 1.0]
    record, out = _stage(tmp_path, _folder(tmp_path / "seq", gains), per_sequence=4)
    assert (record["status"], record["category"]) == ("failed", "too_few_frames")
    assert "3 of 9 candidate frames are usable" in record["reason"] and "frames.per_sequence=4" in record["reason"]
    assert not list(out.iterdir())


def test_panorama_is_rejected_before_decoding(tmp_path):
    record, _ = _stage(tmp_path, _folder(tmp_path / "seq", [0.5, 0.7, 0.9], size=(2469, 205)), per_sequence=2,
                       long_side=192)
    assert (record["status"], record["category"]) == ("failed", "unusable_size")
    assert "2469x205" in record["reason"] and "frames.max_aspect=2.5" in record["reason"] and "192x16" in record["reason"]


def test_geometry_rule():
    params = FramesParams(long_side=192)
    assert geometry_problem(1920, 1080, params) is None  # 16:9 -> 192x108
    assert geometry_problem(1080, 1920, params) is None
    assert "max_aspect" in geometry_problem(2469, 205, params)
    small = FramesParams(long_side=40, min_short_side=16, max_aspect=4)
    assert "min_short_side=16" in geometry_problem(400, 120, small)  # 40x12
    assert geometry_problem(400, 200, small) is None  # 40x20
