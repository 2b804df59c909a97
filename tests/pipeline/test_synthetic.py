"""Synthetic renderer: exact image formation, real mp4 round trip (ffmpeg), advertised scene properties,
camera pan, determinism and the CLI. References are independent: the sRGB curve is written out here, videos
are decoded with the ffmpeg / ffprobe binaries, shifts are measured with OpenCV's phase correlation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from pipeline.params import SyntheticParams
from pipeline.synthetic import (GROUNDTRUTH_KEYS, SCENES, Relief, Sphere, _random_material, render_scene,
                                render_scene_from_params, solid, write_scene)

W, H, FPS, SECONDS = 192, 128, 8, 3.0  # the params.yaml defaults
T = 24


@pytest.fixture(scope="module")
def scenes():
    return {name: render_scene(name, width=W, height=H, fps=FPS, seconds=SECONDS, seed=0) for name in SCENES}


def srgb_reference(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encode of clipped linear values, rounded to 8 bits (written independently of pipeline.color)."""
    x = np.clip(linear, 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    return np.round(255.0 * encoded).astype(np.uint8)


# --------------------------------------------------------------------------------------------- formation
@pytest.mark.parametrize("name", SCENES)
def test_ground_truth_recomposes_frames_exactly(scenes, name):
    seq = scenes[name]
    assert seq.srgb.shape == (T, H, W, 3) and seq.srgb.dtype == np.uint8
    assert seq.reflectance.shape == (T, H, W, 3) and seq.reflectance.dtype == np.float32
    assert seq.shading.shape == (T, H, W) and seq.shading.dtype == np.float32
    assert seq.light_rgb.shape == (T, 3) and seq.light_rgb.dtype == np.float32
    for mask in (seq.sky, seq.dynamic, seq.clipped):
        assert mask.shape == (T, H, W) and mask.dtype == bool
    np.testing.assert_allclose(seq.times, np.arange(T) / FPS)

    linear = (seq.reflectance.astype(np.float64) * seq.shading.astype(np.float64)[..., None]
              * seq.light_rgb.astype(np.float64)[:, None, None, :])
    np.testing.assert_array_equal(srgb_reference(linear), seq.srgb)
    np.testing.assert_array_equal((linear > 1).any(-1), seq.clipped)
    assert (seq.srgb[seq.clipped].max(-1) == 255).all()
    assert seq.reflectance.min() >= 0 and seq.reflectance.max() <= 1 and seq.shading.min() >= 0
    np.testing.assert_allclose(seq.light_rgb.max(-1), 1.0, rtol=1e-6)
    assert not (seq.sky & seq.dynamic).any()
    # static surfaces keep their albedo: only sky and moving-object pixels change reflectance over time
    static = ~(seq.sky | seq.dynamic).any(0)
    assert static.mean() > 0.3 and (seq.reflectance[:, static] == seq.reflectance[0, static]).all()
    # the illumination changes substantially over the sequence (frame selection spans it)
    mean_srgb = seq.srgb.reshape(T, -1).mean(1)
    assert mean_srgb.max() / mean_srgb.min() > 1.3


def test_frame_count_follows_fps_and_duration():
    seq = render_scene("indoor", width=40, height=30, fps=5, seconds=2.2)
    assert seq.srgb.shape == (11, 30, 40, 3)
    np.testing.assert_allclose(seq.times, np.arange(11) / 5)
    params = SyntheticParams(width=48, height=32, fps=4, seconds=1.0, seed=3)
    seq = render_scene_from_params("sun", params)
    assert seq.srgb.shape == (4, 32, 48, 3) and seq.seed == 3
    with pytest.raises(ValueError, match="unknown synthetic scene"):
        render_scene("moon", width=32, height=32, fps=1, seconds=1)


# --------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("name", SCENES)
def test_written_video_decodes_close_to_srgb(scenes, name, tmp_path):
    seq = scenes[name]
    paths = write_scene(seq, tmp_path, crf=12)
    assert {p.name for p in tmp_path.iterdir()} == {"video.mp4", "groundtruth.npz", "scene.json"}
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=width,height,nb_read_frames,pix_fmt,codec_name", "-of", "json", str(paths["video"])],
        capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert (probe["codec_name"], probe["pix_fmt"]) == ("h264", "yuv444p")
    assert (probe["width"], probe["height"], int(probe["nb_read_frames"])) == (W, H, T)

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(paths["video"]), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(T, H, W, 3)
    error = np.abs(decoded.astype(np.int16) - seq.srgb.astype(np.int16))
    # measured at crf 12: mean 0.9-1.3 levels, 99th percentile 5-7 (hard geometric edges); colours survive
    assert error.mean() < 3.0, error.mean()
    assert np.percentile(error, 99) <= 12
    assert np.abs(decoded.reshape(T, -1, 3).mean(1) - seq.srgb.reshape(T, -1, 3).mean(1)).max() < 1.0  # no colour shift

    with np.load(paths["groundtruth"]) as gt:
        assert set(gt.files) == set(GROUNDTRUTH_KEYS)
        for key in GROUNDTRUTH_KEYS:
            np.testing.assert_array_equal(gt[key], getattr(seq, key))
            assert gt[key].dtype == getattr(seq, key).dtype
    info = json.loads(paths["scene"].read_text())
    assert (info["scene"], info["width"], info["height"], info["n_frames"], info["fps"], info["crf"]) == (name, W, H, T, FPS, 12)


# --------------------------------------------------------------------------------------------- scenes
def test_sun_scene_has_moving_cast_shadows_sky_and_clipping(scenes):
    seq = scenes["sun"]
    s = seq.shading.astype(np.float64)
    both = ~seq.sky[1:] & ~seq.sky[:-1]
    # a moving shadow edge: a pixel's shading falls below 40% (or rises 2.5x) from one frame to the next while the
    # sun itself changes slowly; this happens at every frame transition, at moving places
    into_shadow = (s[1:] < 0.4 * s[:-1]) & both
    out_of_shadow = (s[1:] > 2.5 * s[:-1]) & both
    changes = (into_shadow | out_of_shadow).sum((1, 2))
    assert (changes > 10).mean() > 0.9, changes
    median = np.median(s.reshape(T, -1), 1)
    assert np.abs(np.diff(np.log(median))).max() < 0.35
    early, late = (into_shadow | out_of_shadow)[2:6].any(0), (into_shadow | out_of_shadow)[-6:-2].any(0)
    assert (early & late).sum() < 0.5 * min(early.sum(), late.sum())
    # sky at the top, with its own colour schedule; clipped highlights exist
    assert seq.sky[:, : H // 10].mean() > 0.9 and seq.sky[:, -H // 3:].mean() == 0
    always_sky = seq.sky.all(0)
    sky_albedo = seq.reflectance[:, always_sky]  # sky colour / light colour: not a static surface's albedo
    assert np.abs(sky_albedo - sky_albedo[0]).max() > 0.05
    assert seq.clipped.any() and 0 < seq.clipped.mean() < 0.05


def test_sunset_light_colour_changes_and_dims(scenes):
    seq = scenes["sunset"]
    ratio = seq.light_rgb[:, 0] / seq.light_rgb[:, 2]  # red / blue chroma of the light
    assert ratio[-1] > 4 * ratio[0] and (np.diff(ratio) >= 0).all()
    mean = seq.srgb.reshape(T, -1, 3).mean(1)
    assert mean[-1].sum() < 0.6 * mean[0].sum()
    assert (mean[-1, 0] / mean[-1, 2]) > 1.5 * (mean[0, 0] / mean[0, 2])  # the picture itself turns orange
    assert seq.sky.any()


def test_indoor_light_switches_on_and_off(scenes):
    seq = scenes["indoor"]
    assert not seq.sky.any() and not seq.dynamic.any()
    step = np.diff(np.log(seq.shading.reshape(T, -1).mean(1)))
    order = np.argsort(-np.abs(step))
    big = np.abs(step[order[:2]])
    assert big.min() > 5 * np.median(np.abs(step)) and big.min() > 0.3
    assert step[order[:2]].max() > 0 > step[order[:2]].min()  # one switch on, one switch off
    on, off = sorted(order[:2]) + np.array([1, 1])
    # the wall beside the lamp clips only while it is on
    assert seq.clipped[on:off].any() and not seq.clipped[:on].any() and not seq.clipped[off:].any()
    # per pixel: the lamp adds light abruptly somewhere, by more than 3x
    jump = seq.shading[on] / np.maximum(seq.shading[on - 1], 1e-6)
    assert (jump > 3).mean() > 0.01


def test_street_has_moving_objects_sky_and_clipping(scenes):
    seq = scenes["street"]
    counts = seq.dynamic.reshape(T, -1).sum(1)
    assert (counts > 50).mean() > 0.8
    iou = [(seq.dynamic[t] & seq.dynamic[t + 6]).sum() / max((seq.dynamic[t] | seq.dynamic[t + 6]).sum(), 1) for t in range(T - 6)]
    assert max(iou) < 0.5  # the objects move
    assert seq.dynamic.any(axis=(0, 1)).mean() > 0.7  # ... across most of the image width
    # dynamic ground truth describes the object, not the background behind it
    covered = seq.dynamic[10] & ~seq.dynamic[0] & ~seq.dynamic[-1]
    assert np.abs(seq.reflectance[10][covered] - seq.reflectance[0][covered]).max(-1).mean() > 0.1
    assert seq.sky[:, :5].mean() > 0.9 and seq.clipped.any()


def test_objects_scene_paints_albedo_that_the_moving_light_leaves_alone(scenes):
    seq = scenes["objects"]
    assert not seq.dynamic.any() and seq.sky.mean() < 0.05
    # painted objects: the grey table is one chromaticity (its noise scales all channels alike), every object adds
    # one to three colours; each colour covers a real area, not a stray pixel
    chroma = seq.reflectance[0] / np.maximum(seq.reflectance[0].sum(-1, keepdims=True), 1e-6)
    colours, counts = np.unique(np.round(chroma.reshape(-1, 3), 2), axis=0, return_counts=True)
    assert (counts > 20).sum() >= 5
    # the light circles: shadows (shading under 30% of the frame's bright level) cover a similar area early and
    # late but mostly other pixels (attached and cast shadows move); the albedo never changes
    s = seq.shading.reshape(T, -1).astype(np.float64)
    early, late = (s[t] < 0.3 * np.percentile(s[t], 90) for t in (2, T - 3))
    assert min(early.mean(), late.mean()) > 0.05 and (early != late).mean() > 0.05
    assert (seq.reflectance == seq.reflectance[0]).all()


def test_relief_tilts_only_the_shading_normals():
    sphere = Sphere((0.0, 0.0, 3.0), 1.0, solid((0.5, 0.5, 0.5)))
    amount = 0.8
    bumpy = Relief(sphere, amount, 0.3, seed=5)
    camera = np.zeros(3)
    a, b = np.meshgrid(np.linspace(-0.25, 0.25, 40), np.linspace(-0.25, 0.25, 40))
    rays = np.stack([a.ravel(), b.ravel(), np.ones(a.size)], 1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    o, d = tuple(camera), tuple(rays[:, k] for k in range(3))
    inv = tuple(1.0 / c for c in d)
    t = bumpy.distance(o, d, inv)
    np.testing.assert_array_equal(t, sphere.distance(o, d, inv))  # same hits and silhouette
    points = camera + t[:, None] * rays
    base, tilted = sphere.normal(points), bumpy.normal(points)
    np.testing.assert_allclose(np.linalg.norm(tilted, axis=1), 1.0, atol=1e-12)
    for got, want in zip(bumpy.uv(points, tilted), sphere.uv(points, base)):  # texture stays on the geometry
        np.testing.assert_array_equal(got, want)
    # the tilt is tangent and at most amount * |centred noise| <= amount * sqrt(3) / 2 before renormalising
    angle = np.arccos(np.clip((base * tilted).sum(1), -1, 1))
    assert angle.max() <= np.arctan(amount * np.sqrt(3) / 2) + 1e-9 and np.median(angle) > 0.05
    # smooth bumps: neighbouring hits (about 0.04 apart on a 0.3-wide noise lattice) have close normals
    grid = tilted.reshape(40, 40, 3)
    assert np.arccos(np.clip((grid[:, 1:] * grid[:, :-1]).sum(-1), -1, 1)).max() < 0.5


def test_carved_scene_adds_relief_that_moves_with_the_light(scenes):
    def fine_detail(seq):
        """(T, H, W - 2) bool: lit pixels whose log shading bends by more than 0.01 between horizontal
        neighbours (second difference), edges (> 0.3) left out: smooth spheres and flat faces have none."""
        s = np.log(np.maximum(seq.shading.astype(np.float64), 1e-4))
        bend = np.abs(s[:, :, 2:] - 2 * s[:, :, 1:-1] + s[:, :, :-2])
        return (bend > 0.01) & (bend < 0.3) & (s[:, :, 1:-1] > np.log(0.3))

    carved, plain = scenes["carved"], scenes["objects"]
    assert (carved.reflectance == carved.reflectance[0]).all() and not carved.dynamic.any()
    assert fine_detail(carved).mean() > 3 * fine_detail(plain).mean() and fine_detail(carved).mean() > 0.01
    early, late = fine_detail(carved)[2], fine_detail(carved)[T - 3]  # the relief's shading moves with the light
    assert (early & ~late).sum() > 20 and (late & ~early).sum() > 20


def test_variants_are_other_draws_and_variant_0_is_the_plain_scene():
    kwargs = dict(width=48, height=32, fps=2, seconds=1.0)
    plain, zero = render_scene("sun", **kwargs), render_scene("sun", variant=0, **kwargs)
    np.testing.assert_array_equal(plain.srgb, zero.srgb)
    one, again = render_scene("objects", variant=1, **kwargs), render_scene("objects", variant=1, **kwargs)
    np.testing.assert_array_equal(one.srgb, again.srgb)
    assert np.abs(one.reflectance - render_scene("objects", variant=2, **kwargs).reflectance).mean() > 0.01
    with pytest.raises(ValueError, match="variant must be >= 0"):
        render_scene("objects", variant=-1, **kwargs)


def _paints(material) -> np.ndarray:
    """(k, 3) the distinct paint directions of a material (unit RGB vectors: its value noise only scales them)."""
    u, v = np.meshgrid(np.linspace(0, 2, 120), np.linspace(0, 2, 120))
    albedo = material(u.ravel(), v.ravel(), np.tile([0.0, 0.0, -1.0], (u.size, 1)))
    return np.unique(np.round(albedo / np.linalg.norm(albedo, axis=1, keepdims=True), 6), axis=0)


def _off_plane(paints: np.ndarray) -> float:
    """How far the paints and neutral are from one plane through 0 (smallest singular value): 0 when every paint
    is one hue blended toward white at some level."""
    return float(np.linalg.svd(np.vstack([paints, np.ones(3) / np.sqrt(3)]), compute_uv=False)[-1])


def test_tonal_paint_changes_only_the_paints_and_keeps_their_hue():
    off = {t: [] for t in (0.0, 1.0)}
    for k in range(40):
        for t in off:
            paints = _paints(_random_material(np.random.default_rng(k), tonal_paint=t))
            if len(paints) > 1:
                off[t].append(_off_plane(paints))
    # tonal: the second and third paints share the first's hue (on the plane of it and white); random paints don't
    assert len(off[1.0]) >= 20 and max(off[1.0]) < 1e-5
    assert np.median(off[0.0]) > 0.02
    # same geometry and light (own random stream), other albedo; scenes without painted objects ignore it
    kwargs = dict(width=48, height=32, fps=2, seconds=1.0, variant=3)
    plain, tonal = (render_scene("objects", tonal_paint=t, **kwargs) for t in (0.0, 1.0))
    np.testing.assert_array_equal(plain.shading, tonal.shading)
    assert np.abs(plain.reflectance - tonal.reflectance).mean() > 0.005
    np.testing.assert_array_equal(render_scene("sun", **kwargs).srgb, render_scene("sun", tonal_paint=1.0, **kwargs).srgb)
    with pytest.raises(ValueError, match="tonal_paint must be in"):
        render_scene("objects", tonal_paint=1.5, **kwargs)


# --------------------------------------------------------------------------------------------- camera pan
@pytest.mark.parametrize("pan", [1.5, -2.0])
def test_camera_pan_shifts_content(scenes, pan):
    seq = render_scene("sun", width=W, height=H, fps=FPS, seconds=SECONDS, camera_pan=pan)
    lum = seq.reflectance.mean(-1).astype(np.float64)  # albedo: static content, independent of the light
    window = cv2.createHanningWindow((W, H), cv2.CV_64F)
    for t in (4, 8):
        (dx, dy), response = cv2.phaseCorrelate(lum[0], lum[t], window)
        assert abs(dx - (-pan * t)) < 0.25 and abs(dy) < 0.25, (t, dx, dy, response)
    # frame t of the panned render is frame t of the still render moved left by pan * t (pixel-exact when integral)
    if float(pan).is_integer():
        k = int(abs(pan) * 8)
        still, moved = scenes["sun"].reflectance[8], seq.reflectance[8]
        same = (moved[:, : W - k] == still[:, k:]) if pan > 0 else (moved[:, k:] == still[:, : W - k])
        assert same.all(-1).mean() > 0.98


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_output_other_seed_differs(scenes):
    again = render_scene("street", width=W, height=H, fps=FPS, seconds=SECONDS, seed=0)
    for key in ("srgb", *GROUNDTRUTH_KEYS):
        np.testing.assert_array_equal(getattr(again, key), getattr(scenes["street"], key))
    other = render_scene("street", width=W, height=H, fps=FPS, seconds=SECONDS, seed=1)
    assert (other.srgb != again.srgb).mean() > 0.05


def test_cli_writes_scene(tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["synthetic"] = {"width": 64, "height": 48, "fps": 4, "seconds": 1.5, "seed": 2, "crf": 18}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pipeline.synthetic", "street", "--out", str(tmp_path / "out"),
                           "--params", str(tmp_path / "params.yaml")], cwd=repo_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert (info["width"], info["height"], info["n_frames"], info["seed"], info["crf"]) == (64, 48, 6, 2, 18)
    with np.load(tmp_path / "out" / "groundtruth.npz") as gt:
        assert gt["reflectance"].shape == (6, 48, 64, 3)
    bad = subprocess.run([sys.executable, "-m", "pipeline.synthetic", "moon", "--out", str(tmp_path / "x")],
                         cwd=repo_root, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
