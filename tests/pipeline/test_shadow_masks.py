"""Moving cast shadows are light, not objects (pipeline/mask_backends.py `TemporalBackend`, shadow line).

An independent hand-made sequence (no renderer): textured albedo under a sun + blue sky model, a hard shadow band
sweeping across, and two moving objects (one grey, one red). The sky fill keeps shadowed pixels at the sky's
colour, so a shadow darkens a pixel AND shifts it towards blue, the same for every albedo. Checked: the line
fit recovers the hand-set log-chroma slope; the shadow band is not masked while both objects are; a grey
(overcast, white fill) shadow does not enable the line. Plus the renderer's shadow scene
(pipeline/synthetic_shadows.py): its ground truth obeys the two-light physics it documents.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.color import linear_to_srgb, srgb_to_linear
from pipeline.mask_backends import TemporalBackend
from pipeline.synthetic_shadows import render_shadow_sweep

SUN = np.array([1.0, 0.9, 0.75])
SKY = np.array([0.25, 0.33, 0.5])  # fill light: bluer and ~3x dimmer than the sun


def two_light_sequence(m: int = 14, h: int = 80, w: int = 120, sky_rgb=SKY, seed: int = 0):
    """(frames (m,h,w,3) uint8, shadow (m,h,w) bool, objects (m,h,w) bool).

    linear = albedo * (sun_visible * SUN + SKY); the shadow is a 30 px wide vertical band sweeping left to
    right; a grey 10x14 box and a red 10x14 box move in opposite directions along other rows. 1% noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    albedo = rng.uniform(0.15, 0.8, (h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    frames, shadow, objects = [], np.zeros((m, h, w), bool), np.zeros((m, h, w), bool)
    for t in range(m):
        centre = -15 + (w + 30) * t / (m - 1)
        shadow[t] = np.abs(xx - centre) < 15
        linear = albedo * ((~shadow[t])[..., None] * SUN + np.asarray(sky_rgb))
        grey = (np.abs(yy - 20) < 5) & (np.abs(xx - (10 + 100 * t / (m - 1))) < 7)
        red = (np.abs(yy - 60) < 5) & (np.abs(xx - (110 - 100 * t / (m - 1))) < 7)
        linear = np.where(grey[..., None], 0.12, linear)
        linear = np.where(red[..., None], np.array([0.7, 0.12, 0.08]), linear)
        objects[t] = grey | red
        shadow[t] &= ~objects[t]
        linear = linear * (1 + 0.01 * rng.standard_normal(linear.shape))
        frames.append(np.round(255 * linear_to_srgb(np.clip(linear, 0, 1))).astype(np.uint8))
    return np.stack(frames), shadow, objects


def test_shadow_line_fit_recovers_a_hand_set_slope():
    rng = np.random.default_rng(0)
    k = np.array([0.3, 0.05, -0.35])
    d_i = rng.choice([-1.2, -0.8, 0.0, 0.6, 1.0], (40, 40)) + 0.02 * rng.standard_normal((40, 40))
    d_c = d_i[..., None] * k + 0.01 * rng.standard_normal((40, 40, 3))
    fit_k, blueness, coherence = TemporalBackend().shadow_line_of(d_i, d_c)
    np.testing.assert_allclose(fit_k, k - k.mean(), atol=5e-3)
    assert blueness == pytest.approx(0.65, abs=0.01) and coherence > 0.99


def test_moving_shadow_is_kept_and_objects_are_masked():
    frames, shadow, objects = two_light_sequence()
    result, err = TemporalBackend(sky=False)(frames)
    assert err is None
    inv = result.invalid
    # measured: shadow band 0.0% masked, objects 95.4% (without the shadow line: band 81%, objects 98.7%)
    assert inv[shadow].mean() < 0.02, f"{inv[shadow].mean():.1%} of the shadow band masked"
    assert inv[objects].mean() > 0.9
    off = TemporalBackend(sky=False, shadow_line=False)(frames)[0].invalid
    assert off[shadow].mean() > 0.5, "without the line the band is masked: the test can fail"


def test_grey_shadows_do_not_enable_the_line():
    # a white fill light: shadows are grey darkenings, like a grey object; the line must stay off
    frames, shadow, objects = two_light_sequence(sky_rgb=SUN * 0.33)
    backend = TemporalBackend(sky=False)
    log_i, log_c = backend.log_channels(frames)
    d_i = log_i - np.median(log_i, axis=0)
    d_c = log_c - np.median(log_c, axis=0)
    _, _, along, lines = backend.remove_shadow_line(d_i, d_c)
    assert lines == [None] * len(frames) and not along.any()
    assert backend(frames)[0].invalid[objects].mean() > 0.95


def test_rendered_shadow_scene_follows_two_light_physics():
    seq = render_shadow_sweep(width=96, height=64, n_frames=8)
    assert seq.dynamic.any() and seq.sky.any() and seq.moving_shadow.mean() > 0.03
    linear = srgb_to_linear(seq.srgb.astype(np.float64) / 255)
    # pixels that are in a static shadow in one frame and lit in another (no object, no object shadow)
    ts, ys, xs = np.nonzero(seq.moving_shadow & seq.shadow)
    lit = ~seq.shadow & ~seq.dynamic & ~seq.object_shadow
    checked = 0
    for t, y, x in zip(ts[::50], ys[::50], xs[::50]):
        other = np.flatnonzero(lit[:, y, x])
        if len(other) == 0:
            continue
        u = other[np.argmin(np.abs(other - t))]
        dark, bright = linear[t, y, x], linear[u, y, x]
        if bright.max() >= 0.99 or dark.min() <= 0.01:
            continue  # clipped or at the 8-bit floor
        assert dark.sum() < 0.6 * bright.sum()  # a hard shadow: sun 1.5 x cos vs fill 0.42
        assert dark[2] / dark[0] > bright[2] / bright[0]  # bluer in shadow: the sky fill
        checked += 1
    assert checked >= 20
    assert not (seq.shadow & seq.dynamic).any() and not (seq.moving_shadow & seq.sky).any()
