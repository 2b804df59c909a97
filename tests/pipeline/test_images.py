"""pipeline.images reads 8- and 16-bit, grey and colour files by value, and names unreadable files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.images import ImageReadError, read_srgb, read_srgb8


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 1000, 32768, 65535]], np.uint16)
    assert cv2.imwrite(str(tmp_path / "g.png"), grey)  # an independent writer
    assert np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))[0, 1, 0] == 255  # PIL's convert clips: the bug
    values = read_srgb(tmp_path / "g.png")
    assert values.shape == (1, 4, 3)
    np.testing.assert_allclose(values[0, :, 0], grey[0] / 65535.0)
    assert read_srgb8(tmp_path / "g.png")[0, :, 1].tolist() == [0, 4, 128, 255]


def test_8bit_colour_and_palette(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(read_srgb8(tmp_path / "c.png"), rgb)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_srgb8(tmp_path / "p.png").shape == (5, 7, 3)


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "copy.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="holiday.jpg"):
        read_srgb(tmp_path / "copy.png", shown_name="holiday.jpg")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_srgb(tmp_path / "missing.png")
