"""Read any still image as sRGB: 8- or 16-bit, greyscale, RGB, palette or with alpha.

`read_srgb(path) -> (H, W, 3) float64 in [0, 1]` (gamma-encoded values as stored; alpha dropped, grey repeated
into three channels). 16-bit greyscale files (PIL modes "I;16*" / "I") are scaled by 1/65535 — converting them
with PIL's `convert("RGB")` would clip every value above 255 to white. `read_srgb8` rounds to uint8.
Unreadable files raise ImageReadError naming the file (`shown_name`, when given, replaces the path, e.g. the
user's original name of a copied file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(ValueError):
    """An image file cannot be read; the message names the file."""


def read_srgb(path: str | Path, shown_name: str | None = None) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1] from any image file PIL reads (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    name = shown_name or str(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT:
                values = np.asarray(image, np.float64) / 65535.0
            elif image.mode == "F":
                values = np.asarray(image, np.float64)
            else:
                values = np.asarray(image.convert("RGB"), np.float64) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        detail = str(err).replace(str(path), name)
        raise ImageReadError(f"{name}: not a readable image ({detail})") from None
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    return np.clip(values, 0.0, 1.0)


def read_srgb8(path: str | Path, shown_name: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 sRGB (`read_srgb` rounded)."""
    return np.round(read_srgb(path, shown_name) * 255.0).astype(np.uint8)
