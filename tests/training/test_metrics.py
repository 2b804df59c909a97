"""training/metrics.py against answers computed by hand on tiny fixtures written in the published formats."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training import metrics as M


def test_si_mse_hand_computed_and_scale_invariant():
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    est = np.ones((2, 2))
    full = np.ones((2, 2))
    # alpha = (1+2+3+4)/4 = 2.5; residuals -1.5, -0.5, 0.5, 1.5 -> (2.25+0.25+0.25+2.25)/4
    assert M.si_mse(gt, est, full) == pytest.approx(1.25)
    assert M.si_mse(gt, 7.0 * est, full) == pytest.approx(1.25)
    assert M.si_mse(gt, 3.0 * gt, full) == pytest.approx(0.0, abs=1e-12)
    # masked: pixel (1,1) left out -> alpha = 2, residuals -1, 0, 1 -> 2/3
    assert M.si_mse(gt, est, np.array([[1, 1], [1, 0]])) == pytest.approx(2 / 3)


def test_si_mse_scales_each_channel_on_its_own():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.1, 1, (8, 8, 3))
    assert M.si_mse(gt, gt * np.array([2.0, 0.5, 9.0]), np.ones((8, 8))) == pytest.approx(0.0, abs=1e-12)
    assert M.si_mse(gt, gt[..., ::-1], np.ones((8, 8))) > 1e-3


def test_lmse_hand_computed():
    gt = np.array([[1.0, 2.0, 1.0, 1.0], [3.0, 4.0, 1.0, 1.0]])
    est = np.array([[1.0, 1.0, 2.0, 0.0], [1.0, 1.0, 0.0, 2.0]])
    # window 1 (cols 0-1): alpha 2.5, ssq 5, energy 1+4+9+16 = 30
    # window 2 (cols 2-3): alpha (2+2)/(4+4) = 0.5, residuals 0, 1, 1, 0 -> ssq 2, energy 4
    assert M.lmse(gt, est, np.ones_like(gt), window=2, step=2) == pytest.approx(7 / 34)
    # step 1 adds the middle window (cols 1-2): gt 2,1,4,1 est 1,2,1,0 -> alpha (2+2+4)/(1+4+1) = 4/3
    mid_ssq = (2 - 4 / 3) ** 2 + (1 - 8 / 3) ** 2 + (4 - 4 / 3) ** 2 + 1.0
    assert M.lmse(gt, est, np.ones_like(gt), window=2, step=1) == pytest.approx((7 + mid_ssq) / (34 + 22))


def test_lmse_is_scale_invariant_per_window_and_bounded():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.1, 1, (40, 40))
    est = gt.copy()
    est[:, 20:] *= 5.0  # a different scale in each half: windows that do not straddle the seam are exact
    value = M.lmse(gt, est, np.ones((40, 40)))
    assert 0 < value < M.si_mse(gt, est, np.ones((40, 40))) / np.mean(gt**2)
    assert M.lmse(gt, rng.uniform(0, 1, (40, 40)), np.ones((40, 40))) <= 1.0


def test_ssim_of_identical_images_is_one_and_dssim_scale_invariant():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, (30, 30, 3))
    mask = np.ones((30, 30))
    assert M.ssim(img, img, mask) == pytest.approx(1.0)
    assert M.dssim(img, 0.3 * img, mask) == pytest.approx(0.0, abs=1e-9)
    assert M.dssim(img, rng.uniform(0, 1, (30, 30, 3)), mask) > 0.3


def test_mit_scores_average_reflectance_and_shading():
    rng = np.random.default_rng(3)
    r, s = rng.uniform(0.1, 1, (25, 25, 3)), rng.uniform(0.1, 1, (25, 25))
    scores = M.mit_scores(r, s, r * 2, np.ones_like(s), np.ones((25, 25)))
    assert scores["mse_r"] == pytest.approx(0.0, abs=1e-12)
    assert scores["mse_avg"] == pytest.approx(scores["mse_s"] / 2)
    assert scores["lmse_avg"] == pytest.approx((scores["lmse_r"] + scores["lmse_s"]) / 2)


def _iiw_fixture(tmp_path):
    """2x2 grey reflectance + 4 points at pixel centres + judgements in Bell et al.'s JSON layout."""
    judgements = {
        "intrinsic_points": [
            {"id": 1, "x": 0.25, "y": 0.25, "opaque": True},  # pixel (0, 0): 0.2
            {"id": 2, "x": 0.75, "y": 0.25, "opaque": True},  # pixel (0, 1): 0.5
            {"id": 3, "x": 0.25, "y": 0.75, "opaque": True},  # pixel (1, 0): 0.5
            {"id": 4, "x": 0.75, "y": 0.75, "opaque": True},  # pixel (1, 1): 0.52
            {"id": 5, "x": 0.75, "y": 0.75, "opaque": False},
        ],
        "intrinsic_comparisons": [
            {"point1": 1, "point2": 2, "darker": "1", "darker_score": 0.9},  # 0.5/0.2 > 1.1 -> '1': agree
            {"point1": 3, "point2": 4, "darker": "2", "darker_score": 0.6},  # ratio 1.04 -> 'E': disagree
            {"point1": 2, "point2": 3, "darker": "E", "darker_score": 0.5},  # equal -> 'E': agree
            {"point1": 1, "point2": 4, "darker": "2", "darker_score": None},  # no score: skipped
            {"point1": 1, "point2": 5, "darker": "2", "darker_score": 1.0},  # non-opaque point: skipped
        ],
    }
    path = tmp_path / "123.json"
    path.write_text(json.dumps(judgements))
    refl = np.repeat(np.array([[0.2, 0.5], [0.5, 0.52]])[..., None], 3, axis=2)
    return refl, path


def test_whdr_hand_computed(tmp_path):
    refl, path = _iiw_fixture(tmp_path)
    judgements = M.load_iiw_judgements(path)
    assert M.whdr(refl, judgements) == pytest.approx(0.6 / 2.0)
    # delta 0.01: pair (3, 4) now says '1' (0.52/0.5 = 1.04 > 1.01), still against the humans' '2'
    assert M.whdr(refl, judgements, delta=0.01) == pytest.approx(0.3)
    # the metric is scale invariant and sees only the mean over channels
    assert M.whdr(refl * 7.0, judgements) == pytest.approx(0.3)
    assert M.whdr(refl, {"intrinsic_points": [], "intrinsic_comparisons": []}) is None


def test_iiw_loader_rejects_other_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="intrinsic_points"):
        M.load_iiw_judgements(bad)


def _saw_fixture(tmp_path):
    """5x6: log shading steps by 1 between columns 2 and 3; label map in the release's .npy format."""
    shading = np.ones((5, 6))
    shading[:, 3:] = np.e
    labels = np.full((5, 6), M.SAW_IGNORED, dtype=np.int64)
    labels[1:3, 0:3] = 2  # smooth: columns 0, 1 (gradient 0) and 2 (gradient 4)
    labels[1:5, 4] = 1  # shadow boundary: gradient 0, max-filtered (size 3) 4
    labels[1:5, 5] = 0  # normal/depth discontinuity: gradient 0, max-filtered 0
    path = tmp_path / "42.npy"
    np.save(path, labels)
    return shading, path


def test_saw_gradient_is_sobel_of_log_shading(tmp_path):
    shading, _ = _saw_fixture(tmp_path)
    grad = M.log_shading_gradmag(shading)
    # scipy's Sobel: derivative [-1, 0, 1] x smoothing [1, 2, 1] -> 4 beside a unit step in log shading
    np.testing.assert_allclose(grad, np.tile([0, 0, 4, 4, 0, 0], (5, 1)), atol=1e-12)


def test_saw_ap_hand_computed(tmp_path):
    shading, path = _saw_fixture(tmp_path)
    labels = M.load_saw_labels(path)
    conf = M.saw_confusion(shading, labels, [1.0, 5.0], filter_size=3)
    expected = np.array([
        [[0, 4], [4, 0], [2, 4]],  # threshold 1: NS-ND all smooth, NS-SB all non-smooth (max-filtered), S 4 of 6
        [[0, 4], [0, 4], [0, 6]],  # threshold 5: everything smooth
    ])
    np.testing.assert_array_equal(conf, expected)
    precision, recall = M.saw_precision_recall(conf)  # class weights 1, 1, 2 on row-normalised counts
    np.testing.assert_allclose(recall, [2 / 3, 1.0])
    np.testing.assert_allclose(precision, [(4 / 3) / (1 + 4 / 3), 0.5])
    # trapezoids over recall 0 -> 2/3 -> 1 -> 1 with precision 4/7, 4/7, 1/2, 1/2
    assert M.saw_ap(precision, recall) == pytest.approx(47 / 84)


def test_saw_all_ignored_and_bad_labels(tmp_path):
    assert M.saw_confusion(np.ones((4, 4)), np.full((4, 4), 100), [1.0]) is None
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((3, 3), 7))
    with pytest.raises(ValueError, match="SAW label map"):
        M.load_saw_labels(bad)
    thresholds = M.saw_thresholds(400)
    assert len(thresholds) == 400 and np.all(np.diff(thresholds) > 0)
