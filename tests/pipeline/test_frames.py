"""Frames stage: candidate planning, time window, camera-motion rejection, luminance-spanning selection,
ground-truth alignment. Videos are real files made here (lossless RGB x264 whose pixel values encode the
frame number, or scenes rendered by pipeline.synthetic), decoded by the real ffmpeg.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import pytest

from pipeline.atomic import atomic_write_json, status_record
from pipeline.cli import write_status
from pipeline.color import srgb_to_linear
from pipeline.download import download_source
from pipeline.frames import (MOTION_EPS, estimate_camera_shift, extract_frames, frame_features, output_size,
                             plan_candidates, select_frames)
from pipeline.params import validate_params
from pipeline.synthetic import render_scene, write_scene


def numbered_video(path: Path, n: int = 80, fps: int = 10, size=(64, 48)) -> Path:
    """Lossless RGB video of a static texture that brightens with time; the top-left 16x16 patch of frame k is
    flat grey 10 + 3k, so decoded pixels tell the frame number."""
    w, h = size
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0.2, 1.0, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    frames = np.stack([np.round(255 * texture * (0.3 + 0.6 * k / n)) for k in range(n)]).astype(np.uint8)
    frames[:, :16, :16] = (10 + 3 * np.arange(n)).astype(np.uint8)[:, None, None, None]
    (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
     .output(str(path), vcodec="libx264rgb", crf=0, g=12).global_args("-loglevel", "error", "-nostdin")
     .overwrite_output().run(input=frames.tobytes()))
    return path


def frame_number(png: np.ndarray) -> int:
    """Read the frame number back from the 16x16 patch (output at the source size, 64 wide)."""
    return round((png[:12, :12].astype(float).mean() - 10) / 3)


def stage(tmp_path: Path, url: str, frames: dict, **source) -> tuple[dict, Path]:
    params = validate_params({"sources": [{"name": "s", "url": url, **source}], "download": {"allow_local": True},
                              "frames": frames})
    raw, out = tmp_path / "raw", tmp_path / "frames"
    record = download_source(params, params.sources[0], raw)
    write_status(raw, None, record)
    assert record["status"] == "ok", record
    return extract_frames(params, params.sources[0], out, raw), out


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]


# ------------------------------------------------------------------------------------------ pure functions
def test_output_size_keeps_aspect_with_even_sides():
    assert output_size(480, 360, 384) == (384, 288)
    assert output_size(360, 480, 192) == (144, 192)
    w, h = output_size(97, 61, 50)
    assert w % 2 == 0 and h % 2 == 0 and w == 50 and abs(h - 50 * 61 / 97) <= 1


def test_plan_candidates():
    plan = plan_candidates(100, 10.0, 2.05, 5.0, sample_fps=None, max_candidates=400)
    assert (plan.first, plan.step, plan.count) == (21, 1, 29)  # frames 21..49 have times in [2.05, 5.0)
    plan = plan_candidates(100, 10.0, None, None, sample_fps=2.5, max_candidates=400)
    assert (plan.first, plan.step, plan.count) == (0, 4, 25)
    plan = plan_candidates(100, 10.0, 1.0, None, sample_fps=None, max_candidates=7)
    assert plan.count <= 7 and plan.indices[-1] < 100 and plan.indices[0] == 10
    assert plan_candidates(100, 10.0, 20.0, 30.0, sample_fps=None, max_candidates=5).count == 0


def test_selection_spans_the_luminance_range():
    rng = np.random.default_rng(0)
    lum = rng.normal(-2.0, 0.8, size=200)
    chosen = select_frames(lum, 10, 0.01)
    assert len(chosen) == 10 and np.all(np.diff(chosen) > 0), "time order, no repeats"
    assert lum.argmin() in chosen and lum.argmax() in chosen
    assert np.min(np.diff(np.sort(lum[chosen]))) >= 0.01, "no near-duplicates"
    # evenly spread quantiles: each decile of the sorted candidates contributes about one frame
    ranks = np.argsort(np.argsort(lum))[chosen]
    assert np.all(np.abs(np.sort(ranks) - np.linspace(0, 199, 10)) <= 1)


def test_selection_drops_near_duplicates_and_falls_back_to_time():
    flat = np.full(50, -1.0) + np.linspace(0, 0.001, 50)  # light barely changes
    assert list(select_frames(flat, 5, 0.01)) == [0, 12, 24, 37, 49]
    two_levels = np.array([-3.0] * 10 + [-1.0] * 10)  # only two distinct levels: one of each, rest by time
    chosen = select_frames(two_levels, 4, 0.01)
    assert len(chosen) == 4 and (two_levels[chosen] == -3.0).any() and (two_levels[chosen] == -1.0).any()


def test_camera_shift_ignores_illumination_and_moving_people():
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.uniform(0, 1, (120, 160, 3)).astype(np.float32), (0, 0), 2.0)
    base = (base - base.min()) / (base.max() - base.min())
    frames = []
    for t in range(12):
        frame = base * (0.2 + 0.1 * t)  # the light brightens 6x
        frame[40:80, 10 + 10 * t: 30 + 10 * t] = 0.05  # a dark "person" walks across
        frames.append(np.round(255 * np.clip(frame, 0, 1)).astype(np.uint8))
    shift, _, _ = estimate_camera_shift(np.stack(frames))
    assert shift < 0.005
    panned = np.stack([np.roll(f, 2 * t, axis=1) for t, f in enumerate(frames)])  # 22 px pan on a 200 px diagonal
    shift, shifts, _ = estimate_camera_shift(panned)
    extent = 22 / np.hypot(120, 160)
    assert 0.45 * extent <= shift <= 1.05 * extent
    assert np.ptp(shifts[:, 0]) == pytest.approx(extent, rel=0.1) and np.ptp(shifts[:, 1]) < 0.005


def test_frame_features_do_not_depend_on_the_opencv_thread_count():
    """A Ray task gets OMP_NUM_THREADS = its CPUs and OpenCV uses that many threads: the motion map and the
    mean log-luminance (hence camera_shift in meta.json) must be the same bytes for any count. They also match
    a float64 numpy reference of the documented formula (area-downsampled sRGB -> linear Rec.709 luminance)."""
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.uint8), (0, 0), sigma)
              for shape in [(64, 96, 3), (120, 160, 3), (480, 640, 3)] for sigma in (0.5, 1.5)]
    threads = cv2.getNumThreads()
    try:
        results = {}
        for count in (1, 2, 8):
            cv2.setNumThreads(count)
            results[count] = [frame_features(frame) for frame in frames]
    finally:
        cv2.setNumThreads(threads)
    for count in (2, 8):
        for (motion, lum), (motion_1, lum_1) in zip(results[count], results[1]):
            assert np.array_equal(motion, motion_1) and lum == lum_1, f"{count} OpenCV threads changed the features"
    frame, (motion, _) = frames[-1], results[1][-1]
    factor = 640 // motion.shape[1]
    small = frame.reshape(motion.shape[0], factor, motion.shape[1], factor, 3).astype(np.float64).mean(axis=(1, 3))
    linear = srgb_to_linear(np.round(small) / 255.0) @ np.array([0.2126, 0.7152, 0.0722])
    log_lum = np.log(linear + MOTION_EPS)
    padded = np.pad(log_lum, 1, mode="reflect")  # cv2.BORDER_DEFAULT
    gx = (padded[:-2, 2:] - padded[:-2, :-2]) + 2 * (padded[1:-1, 2:] - padded[1:-1, :-2]) + (padded[2:, 2:] - padded[2:, :-2])
    gy = (padded[2:, :-2] - padded[:-2, :-2]) + 2 * (padded[2:, 1:-1] - padded[:-2, 1:-1]) + (padded[2:, 2:] - padded[:-2, 2:])
    np.testing.assert_allclose(motion, np.hypot(gx, gy), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------ stage
def test_time_window_and_indices(tmp_path):
    video = numbered_video(tmp_path / "numbers.mp4")
    record, out = stage(tmp_path, str(video), {"long_side": 64, "per_sequence": 5}, start=2.0, end=6.0)
    assert record["status"] == "ok", record
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["width"], meta["height"]) == (64, 48)
    indices = [f["index"] for f in meta["frames"]]
    assert all(20 <= i < 60 for i in indices) and indices == sorted(indices)
    assert all(2.0 <= f["time_s"] < 6.0 and f["time_s"] == pytest.approx(f["index"] / 10) for f in meta["frames"])
    assert indices[0] == 20 and indices[-1] == 59, "darkest and brightest frames of the window"
    for row in meta["frames"]:  # the pixels say which frame it really is
        assert frame_number(read_png(out / row["file"])) == row["index"]
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png", "meta.json"]


def test_sample_fps_and_max_candidates(tmp_path):
    video = numbered_video(tmp_path / "numbers.mp4")
    record, out = stage(tmp_path, str(video), {"long_side": 64, "per_sequence": 4, "sample_fps": 2.0, "max_candidates": 400})
    assert record["status"] == "ok", record
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_candidates"] == 16 and all(f["index"] % 5 == 0 for f in meta["frames"])
    for row in meta["frames"]:
        assert frame_number(read_png(out / row["file"])) == row["index"]


def _pan_sequence(tmp_path: Path, camera_pan: float) -> tuple[dict, Path]:
    seq = render_scene("sun", width=96, height=64, fps=8, seconds=2, camera_pan=camera_pan)
    write_scene(seq, tmp_path / "scene", crf=12)
    return stage(tmp_path, str(tmp_path / "scene" / "video.mp4"), {"long_side": 96, "per_sequence": 4})


def test_camera_pan_is_rejected(tmp_path):
    record, out = _pan_sequence(tmp_path, camera_pan=0.6)  # 15 frames x 0.6 px = 9 px = 0.078 of the diagonal
    assert (record["status"], record["category"]) == ("failed", "camera_motion"), record
    measured = float(record["reason"].split("camera shift ")[1].split()[0])
    extent = 9 / np.hypot(96, 64)  # shifts are measured from a reference frame inside the pan
    assert 0.45 * extent <= measured <= 1.05 * extent
    assert list(out.iterdir()) == []


def test_static_camera_is_accepted(tmp_path):
    record, out = _pan_sequence(tmp_path, camera_pan=0.0)
    assert record["status"] == "ok", record
    assert record["camera_shift"] < 0.01
    assert len(list(out.glob("*.png"))) == 4


def test_synthetic_groundtruth_is_aligned_and_resized(tmp_path):
    params = {"width": 96, "height": 64, "fps": 8, "seconds": 2, "seed": 3}
    seq = render_scene("sunset", **params)
    p = validate_params({"sources": [{"name": "syn", "url": "synthetic://sunset"}], "synthetic": params,
                         "frames": {"long_side": 48, "per_sequence": 5}})
    raw, out = tmp_path / "raw", tmp_path / "frames"
    write_status(raw, None, download_source(p, p.sources[0], raw))
    record = extract_frames(p, p.sources[0], out, raw)
    assert record["status"] == "ok", record
    meta = json.loads((out / "meta.json").read_text())
    index = np.array([f["index"] for f in meta["frames"]])
    block = lambda a: a.reshape(a.shape[0], 32, 2, 48, 2, *a.shape[3:]).mean(axis=(2, 4))  # noqa: E731 2x2 area
    with np.load(out / "groundtruth.npz") as gt:
        np.testing.assert_array_equal(gt["index"], index)
        np.testing.assert_allclose(gt["reflectance"], block(seq.reflectance[index].astype(np.float64)), atol=1e-5)
        np.testing.assert_allclose(gt["shading"], block(seq.shading[index].astype(np.float64)), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gt["light_rgb"], seq.light_rgb[index])
        assert gt["clipped"].dtype == bool and gt["clipped"].shape == (5, 32, 48)
        np.testing.assert_array_equal(gt["clipped"], seq.clipped[index][:, ::2, ::2])  # nearest, not averaged
    frames = np.stack([read_png(out / f["file"]) for f in meta["frames"]]).astype(float)
    assert np.abs(frames - block(seq.srgb[index].astype(float))).mean() < 3.0, "PNGs are the rendered frames"
    lum = [f["mean_log_lum"] for f in meta["frames"]]
    assert max(lum) - min(lum) > 0.5, "the sunset's dimming is spanned"


def test_upstream_failure_and_too_few_frames(tmp_path):
    p = validate_params({"sources": [{"name": "s", "url": "https://example.invalid/v.mp4"}], "frames": {"per_sequence": 4}})
    raw = tmp_path / "raw"
    raw.mkdir()
    atomic_write_json(raw / "status.json", status_record("s", "download", "not_found", "HTTP 404"))
    record = extract_frames(p, p.sources[0], tmp_path / "f1", raw)
    assert (record["status"], record["category"]) == ("failed", "upstream_failed") and "404" in record["reason"]
    record = extract_frames(p, p.sources[0], tmp_path / "f2", tmp_path / "nothing")
    assert record["category"] == "upstream_failed"

    video = numbered_video(tmp_path / "short.mp4", n=6)
    record, _ = stage(tmp_path / "short", str(video), {"long_side": 32, "per_sequence": 10})
    assert (record["status"], record["category"]) == ("failed", "too_few_frames"), record
    record, _ = stage(tmp_path / "late", str(video), {"long_side": 32, "per_sequence": 2}, start=5.0, end=9.0)
    assert (record["status"], record["category"]) == ("failed", "too_few_frames"), record


def test_all_sources_mode_prints_summary(tmp_path, capsys):
    from pipeline.frames import main

    video = numbered_video(tmp_path / "numbers.mp4")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps({
        "sources": [{"name": "good", "url": str(video)}, {"name": "bad", "url": str(tmp_path / "missing.mp4")}],
        "download": {"allow_local": True}, "frames": {"long_side": 64, "per_sequence": 3}}))
    from pipeline.download import main as download_main

    assert download_main(["--all", "--params", str(params_file), "--out-root", str(tmp_path / "raw")]) == 0
    assert main(["--all", "--params", str(params_file), "--raw-root", str(tmp_path / "raw"),
                 "--out-root", str(tmp_path / "frames"), "--status-root", str(tmp_path / "status")]) == 0
    err = capsys.readouterr().err
    assert "download: 1 ok, 1 failed (bad: not_found)" in err and "frames: 1 ok, 1 failed (bad: upstream_failed)" in err
    assert json.loads((tmp_path / "status" / "bad.json").read_text())["category"] == "upstream_failed"
