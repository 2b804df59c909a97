"""training/baselines.py on a hand-made Lambertian scene: piecewise-constant coloured albedo on a bumpy surface,
lit from 10 directions with a moving cast shadow (what Weiss's median-derivative method assumes)."""
from __future__ import annotations

import numpy as np
import pytest

from training import metrics as M
from training.baselines import chromaticity, constant_shading, integrate_gradients, retinex, weiss

H, W, T = 48, 64, 10


def lambertian_sequence(seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    # albedo: 8x8 blocks of random colours
    blocks = rng.uniform(0.15, 0.9, (H // 8 + 1, W // 8 + 1, 3))
    albedo = blocks[(yy // 8).astype(int), (xx // 8).astype(int)]
    # smooth height field -> normals
    height = 6 * np.sin(xx / 11.0) * np.cos(yy / 9.0) + 0.05 * (xx - W / 2) ** 2 / 10
    gy, gx = np.gradient(height)
    normals = np.dstack([-gx, -gy, np.ones_like(gx)])
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    frames, shadings = [], []
    for t in range(T):
        angle = 2 * np.pi * t / T
        light = np.array([0.6 * np.cos(angle), 0.6 * np.sin(angle), 1.0])
        light /= np.linalg.norm(light)
        shading = np.clip(normals @ light, 0.05, None)
        shadow = np.abs(xx - (5 + 6 * t) - 0.3 * yy) < 3  # a cast shadow stripe sweeping across
        shading = np.where(shadow, 0.3 * shading, shading)
        frames.append(albedo * shading[..., None] * 0.9)
        shadings.append(shading)
    return np.stack(frames), albedo, np.stack(shadings)


def test_integrate_gradients_recovers_a_field_up_to_a_constant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 30))
    y = integrate_gradients(x[:, 1:] - x[:, :-1], x[1:] - x[:-1])
    np.testing.assert_allclose(y, x - x.mean(), atol=1e-5)


def test_integrate_gradients_ignores_zero_weight_differences():
    x = np.arange(12, dtype=float).reshape(3, 4)
    gx, gy = x[:, 1:] - x[:, :-1], x[1:] - x[:-1]
    gx_bad = gx.copy()
    gx_bad[1, 1] = 100.0  # a corrupted difference with weight 0 must not matter
    wx = np.ones_like(gx)
    wx[1, 1] = 0
    np.testing.assert_allclose(integrate_gradients(gx_bad, gy, wx, None), x - x.mean(), atol=1e-5)


def test_integrate_gradients_multigrid_matches_the_dense_least_squares_solution():
    """Both solvers (sparse LU on a small system, multigrid CG when forced with direct_max_unknowns=0) against the
    dense normal equations on 9x11 pixels: two weighted regions with no pair between them (each gets its own
    least-squares field; the ridge sets each one's constant to make its sum 0) and three pixels in no weighted pair,
    which come out 0 (the solvers leave them out of the system)."""
    rng = np.random.default_rng(5)
    h, w = 9, 11
    gx, gy = rng.normal(size=(h, w - 1)), rng.normal(size=(h - 1, w))
    inside = np.ones((h, w), bool)
    inside[:, 5] = False  # splits the frame into columns 0-4 and 6-10
    inside[0, 0] = False  # column 0's top pixel: no pair left (its neighbours are (0, 1) and (1, 0))
    inside[0, 1] = inside[1, 0] = False
    wx = (inside[:, 1:] & inside[:, :-1]).astype(float)
    wy = (inside[1:] & inside[:-1]).astype(float)
    pairs = [((i, j), (i, j + 1), gx[i, j], wx[i, j]) for i in range(h) for j in range(w - 1)]
    pairs += [((i, j), (i + 1, j), gy[i, j], wy[i, j]) for i in range(h - 1) for j in range(w)]
    a = np.zeros((len(pairs), h * w))
    for row, (p, q, _, _) in enumerate(pairs):
        a[row, p[0] * w + p[1]], a[row, q[0] * w + q[1]] = -1.0, 1.0
    weights = np.array([pair[3] for pair in pairs])
    b = np.array([pair[2] for pair in pairs])
    dense = np.linalg.solve(a.T @ (weights[:, None] * a) + 1e-8 * np.eye(h * w), a.T @ (weights * b)).reshape(h, w)
    dense -= dense.mean()
    for limit in (10 ** 6, 0):
        np.testing.assert_allclose(integrate_gradients(gx, gy, wx, wy, direct_max_unknowns=limit), dense, atol=1e-6)


def test_integrate_gradients_multigrid_is_bit_identical_across_runs_and_leaves_the_global_rng_alone():
    """pyamg's setup draws from numpy's global RNG; the solve must not depend on that stream (DVC outputs are
    compared byte for byte between reruns) nor advance it."""
    rng = np.random.default_rng(2)
    gx, gy = rng.normal(size=(40, 49)), rng.normal(size=(39, 50))
    np.random.seed(1)
    untouched = np.random.rand()  # the stream's first draw when nothing else draws from it
    np.random.seed(1)
    first = integrate_gradients(gx, gy, direct_max_unknowns=0)
    assert np.random.rand() == untouched
    np.random.seed(123)
    second = integrate_gradients(gx, gy, direct_max_unknowns=0)
    assert np.array_equal(first, second)


def test_weiss_recovers_reflectance_of_a_multi_light_sequence():
    frames, albedo, shadings = lambertian_sequence()
    refl, shading = weiss(frames)
    mask = np.ones((H, W))
    weiss_err = M.si_mse(albedo, refl, mask)
    naive_err = np.mean([M.si_mse(albedo, constant_shading(f)[0], mask) for f in frames])
    print(f"\nreflectance si-MSE: weiss {weiss_err:.2e}, R = I {naive_err:.2e}")
    assert weiss_err < 0.1 * naive_err
    assert weiss_err < 2e-3
    assert M.lmse(albedo, refl, mask) < 0.02
    assert shading.shape == (T, H, W)
    # shading per frame follows the true one (up to scale): the moving shadow is in S, not in R
    assert np.mean([M.si_mse(s, e, mask) for s, e in zip(shadings, shading)]) < 0.1 * np.mean(
        [M.si_mse(s, np.ones((H, W)), mask) for s in shadings])


def test_weiss_uses_only_valid_frames_per_pixel():
    frames, albedo, _ = lambertian_sequence()
    corrupted = frames.copy()
    masks = np.ones((T, H, W), bool)
    corrupted[:6, 10:20, 10:20] = 1.0  # a saturated blob in most frames (more than half: the median breaks)
    masks[:6, 10:20, 10:20] = False
    err_masked = M.si_mse(albedo, weiss(corrupted, masks)[0], np.ones((H, W)))
    err_unmasked = M.si_mse(albedo, weiss(corrupted)[0], np.ones((H, W)))
    assert err_masked < 0.5 * err_unmasked


def test_retinex_beats_constant_shading_when_shading_is_smooth():
    frames, albedo, _ = lambertian_sequence()
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = 0.3 + 0.7 * (xx / W) * (0.5 + 0.5 * np.cos(yy / 15.0))
    image = albedo * smooth[..., None]
    mask = np.ones((H, W))
    refl, shading = retinex(image)
    assert M.si_mse(albedo, refl, mask) < 0.2 * M.si_mse(albedo, constant_shading(image)[0], mask)
    assert M.si_mse(smooth, shading, mask) < 0.2 * M.si_mse(smooth, np.ones((H, W)), mask)
    np.testing.assert_allclose(refl * shading[..., None], np.maximum(image, 1e-4), rtol=1e-6)


def test_weiss_input_validation():
    with pytest.raises(ValueError, match="T, H, W, 3"):
        weiss(np.ones((4, 5, 3)))


def test_weiss_on_a_rendered_synthetic_sequence():
    synthetic = pytest.importorskip("pipeline.synthetic", reason="pipeline/synthetic.py not present")
    from pipeline.color import srgb_to_linear

    seq = synthetic.render_scene("indoor", width=96, height=64, fps=4, seconds=3.0, seed=0)
    linear = srgb_to_linear(seq.srgb / 255.0)
    mask = ~(seq.sky | seq.dynamic | seq.clipped)
    refl, _ = weiss(linear, mask)
    weiss_err = np.mean([M.si_mse(seq.reflectance[t], refl, mask[t]) for t in range(len(linear))])
    naive_err = np.mean([M.si_mse(seq.reflectance[t], constant_shading(linear[t])[0], mask[t]) for t in range(len(linear))])
    assert weiss_err < 0.5 * naive_err


def test_chromaticity_puts_intensity_in_shading_and_colour_in_reflectance():
    image = np.array([[[0.2, 0.4, 0.1], [0.02, 0.04, 0.01]], [[0.5, 0.5, 0.5], [0.0, 0.3, 0.6]]])
    refl, shading = chromaticity(image)
    lum = 0.2126 * image[..., 0] + 0.7152 * image[..., 1] + 0.0722 * image[..., 2]  # Rec.709, computed by hand here
    lum[1, 1] = 0.2126 * 1e-4 + 0.7152 * 0.3 + 0.0722 * 0.6  # the zero channel is clamped at 1e-4
    np.testing.assert_allclose(shading, lum, rtol=1e-12)
    np.testing.assert_allclose(refl * shading[..., None], np.maximum(image, 1e-4), rtol=1e-12)
    np.testing.assert_allclose(refl[0, 0], refl[0, 1], rtol=1e-12)  # same colour, 10x darker: same reflectance
    np.testing.assert_allclose(refl[1, 0], [1.0, 1.0, 1.0], rtol=1e-12)  # grey has luminance = its value
    # on a scene whose shading and light are grey, lum(I) = lum(albedo) x shading, so R = I / lum is exactly
    # albedo / lum(albedo): its error is the albedo's own luminance variation, whatever the shading
    frames, albedo, _ = lambertian_sequence()
    mask = np.ones((H, W))
    chroma_err = M.si_mse(albedo, chromaticity(frames[0])[0], mask)
    expected = M.si_mse(albedo, albedo / chromaticity(albedo)[1][..., None], mask)
    assert chroma_err == pytest.approx(expected, rel=1e-3)
