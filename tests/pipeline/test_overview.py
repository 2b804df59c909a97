"""Masks overview pictures (pipeline/overview.py): layout and tint hand-checked, failed sources listed."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.atomic import atomic_write_json, status_record
from pipeline.overview import MAX_FRAMES, overview_image, write_overviews


def test_overview_image_is_frames_over_tinted_frames():
    frames = np.zeros((3, 4, 6, 3), np.uint8)
    frames[:, :, :, 1] = [[[10 * t]] for t in range(3)]
    valid = np.ones((3, 4, 6), bool)
    valid[1, 0, 0] = False
    image = overview_image(frames, valid)
    assert image.shape == (8, 18, 3)
    np.testing.assert_array_equal(image[:4], np.concatenate(list(frames), axis=1))
    # invalid pixel of frame 1: half-way from (0, 10, 0) to magenta (255, 0, 255), rounded down
    np.testing.assert_array_equal(image[4, 6], [127, 5, 127])
    assert (image[4:][valid.transpose(1, 0, 2).reshape(4, 18)] == image[:4][valid.transpose(1, 0, 2).reshape(4, 18)]).all()


def test_overview_spreads_long_sequences_and_shrinks_tiles():
    frames = np.full((20, 320, 480, 3), 100, np.uint8)
    image = overview_image(frames, np.ones((20, 320, 480), bool))
    assert image.shape == (2 * 107, MAX_FRAMES * 160, 3)


def test_write_overviews_skips_failed_sources(tmp_path):
    frames_root, masks_root = tmp_path / "frames", tmp_path / "masks"
    ok_frames, ok_masks = frames_root / "good", masks_root / "good"
    ok_frames.mkdir(parents=True)
    ok_masks.mkdir(parents=True)
    for t in range(2):
        Image.fromarray(np.full((8, 12, 3), 50 * t, np.uint8)).save(ok_frames / f"{t:04d}.png")
        Image.fromarray(np.ones((8, 12), bool)).convert("1").save(ok_masks / f"{t:04d}.png")
    atomic_write_json(ok_frames / "status.json", status_record("good", "frames"))
    atomic_write_json(ok_masks / "status.json", status_record("good", "masks"))
    (masks_root / "bad").mkdir()
    (frames_root / "bad").mkdir()
    atomic_write_json(frames_root / "bad" / "status.json", status_record("bad", "frames", "camera_motion", "shift 0.1"))
    index = write_overviews(["good", "bad"], frames_root, masks_root, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    assert index["good"]["status"] == "ok" and index["good"]["valid_fraction"] == 1.0
    assert index["bad"] == {"status": "skipped", "stage": "frames", "category": "camera_motion", "reason": "shift 0.1"}
