"""Tests of pipeline/color.py: the sRGB transfer curve (numpy and torch paths) against the IEC 61966-2-1
formula evaluated point by point in plain Python, and the Rec.709 luminance."""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.color import linear_to_srgb, luminance, srgb_to_linear


def _iec_decode(x: float) -> float:
    return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4


def test_srgb_to_linear_follows_the_iec_curve_on_both_paths():
    xs = [0.0, 0.01, 0.04045, 0.0405, 0.1, 0.5, 0.75, 1.0]
    want = np.array([_iec_decode(x) for x in xs])
    np.testing.assert_allclose(srgb_to_linear(np.array(xs)), want, rtol=1e-12, atol=0)
    torch_in = torch.tensor(xs, dtype=torch.float64).view(2, 4)
    got = srgb_to_linear(torch_in)
    np.testing.assert_allclose(got.reshape(-1).numpy(), want, rtol=1e-12, atol=0)
    assert torch.equal(torch_in, torch.tensor(xs, dtype=torch.float64).view(2, 4))  # the input is not modified


def test_linear_to_srgb_inverts_srgb_to_linear():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, rtol=0, atol=1e-6)
    assert math.isclose(float(linear_to_srgb(np.array([0.5]))[0]), 1.055 * 0.5 ** (1 / 2.4) - 0.055, rel_tol=1e-12)


def test_luminance_rec709_weights():
    rgb = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(luminance(rgb), [0.2126, 0.7152, 0.0722, 1.0], rtol=1e-12)
    t = torch.from_numpy(rgb.T.copy())  # channels first
    np.testing.assert_allclose(luminance(t, channel_axis=0).numpy(), [0.2126, 0.7152, 0.0722, 1.0], rtol=1e-12)
