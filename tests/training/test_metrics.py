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


# ------------------------------------------------------------------ scoring conventions (per channel, grey, shared)


def _grosse_local_error(correct, estimate, mask, window_size, window_shift):
    """Naive transcription of Grosse et al.'s `ssq_error` / `local_error` (intrinsic.py), grey images only."""
    def ssq_error(c, e, m):
        alpha = np.sum(c * e * m) / np.sum(e**2 * m) if np.sum(e**2 * m) > 1e-5 else 0.0
        return np.sum(m * (c - alpha * e) ** 2)

    rows, cols = correct.shape
    ssq = total = 0.0
    for i in range(0, rows - window_size + 1, window_shift):
        for j in range(0, cols - window_size + 1, window_shift):
            sl = (slice(i, i + window_size), slice(j, j + window_size))
            ssq += ssq_error(correct[sl], estimate[sl], mask[sl])
            total += np.sum(mask[sl] * correct[sl] ** 2)
    return ssq / total


def test_colour_cast_is_free_per_channel_and_on_grey_but_costs_with_one_shared_scale():
    gt = np.ones((2, 2, 3))
    est = np.ones((2, 2, 3)) * np.array([2.0, 1.0, 1.0])  # a pure colour cast
    full = np.ones((2, 2))
    for fn in (M.si_mse, M.dssim):
        assert fn(gt, est, full) == pytest.approx(0.0, abs=1e-12)
        assert fn(gt, est, full, convention="grey") == pytest.approx(0.0, abs=1e-12)  # grey 1 vs 4/3: a scale
    assert M.lmse(gt, est, full, window=2, step=1) == pytest.approx(0.0, abs=1e-12)
    # shared: alpha = sum(gt est) / sum(est^2) = 16 / 24 = 2/3 -> residuals 1 - 4/3, 1 - 2/3, 1 - 2/3: each 1/9
    assert M.fit_scale(gt, est, full, shared=True) == pytest.approx([2 / 3] * 3)
    assert M.si_mse(gt, est, full, convention="shared") == pytest.approx(1 / 9)
    # one 2x2 window over 3 channels: ssq 12 / 9, energy 12
    assert M.lmse(gt, est, full, window=2, step=1, convention="shared") == pytest.approx(1 / 9)
    assert M.dssim(gt, est, full, convention="shared") > 1e-4
    with pytest.raises(ValueError, match="convention"):
        M.si_mse(gt, est, full, convention="gray")


def test_grey_convention_reproduces_grosse_on_grey_images():
    rng = np.random.default_rng(4)
    gt, est = rng.uniform(0.05, 1, (30, 45, 3)), rng.uniform(0.05, 1, (30, 45, 3))
    mask = rng.uniform(size=(30, 45)) > 0.3
    g, e, m = gt.mean(axis=2), est.mean(axis=2), mask.astype(float)
    assert M.lmse(gt, est, mask, convention="grey") == pytest.approx(_grosse_local_error(g, e, m, 20, 10), rel=1e-12)
    alpha = np.sum(m * g * e) / np.sum(m * e**2)
    assert M.si_mse(gt, est, mask, convention="grey") == pytest.approx(np.sum(m * (g - alpha * e) ** 2) / m.sum())
    # per channel = Grosse's local error of each channel, averaged
    per_channel = np.mean([_grosse_local_error(gt[..., c], est[..., c], m, 20, 10) for c in range(3)])
    assert M.lmse(gt, est, mask) == pytest.approx(per_channel, rel=1e-12)


def test_shared_lmse_against_naive_windows():
    rng = np.random.default_rng(5)
    gt, est = rng.uniform(0.05, 1, (25, 33, 3)), rng.uniform(0.05, 1, (25, 33, 3))
    mask = (rng.uniform(size=(25, 33)) > 0.2).astype(float)
    ssq = total = 0.0
    for i in range(0, 25 - 20 + 1, 10):
        for j in range(0, 33 - 20 + 1, 10):
            g, e, m = gt[i:i + 20, j:j + 20], est[i:i + 20, j:j + 20], mask[i:i + 20, j:j + 20, None]
            alpha = np.sum(m * g * e) / np.sum(m * e * e)  # one scale for the three channels of the window
            ssq += np.sum(m * (g - alpha * e) ** 2)
            total += np.sum(m * g * g)
    assert M.lmse(gt, est, mask, convention="shared") == pytest.approx(ssq / total, rel=1e-12)


def test_mit_scores_names_every_convention():
    rng = np.random.default_rng(6)
    r, s = rng.uniform(0.1, 1, (25, 25, 3)), rng.uniform(0.1, 1, (25, 25))
    cast = r * np.array([1.0, 0.6, 0.3])
    scores = M.mit_scores(r, s, cast, s * 3, np.ones((25, 25)))
    assert tuple(scores) == M.MIT_KEYS and len(M.MIT_KEYS) == 21
    assert M.mit_keys("channel") == ("mse_r", "mse_s", "mse_avg", "lmse_r", "lmse_s", "lmse_avg",
                                     "dssim_r", "dssim_s", "dssim_avg")
    assert "lmse_r_grey" in M.mit_keys("grey") and "dssim_avg_shared" in M.mit_keys("shared")
    assert scores["mse_r"] == pytest.approx(0.0, abs=1e-12) and scores["mse_s"] == pytest.approx(0.0, abs=1e-12)
    assert scores["mse_r_shared"] > 1e-3 and scores["mse_r_grey"] > 1e-4
    for name in ("mse", "lmse", "dssim"):
        for x in ("", "_grey", "_shared"):
            assert scores[f"{name}_avg{x}"] == pytest.approx((scores[f"{name}_r{x}"] + scores[f"{name}_s"]) / 2)
        assert scores[f"{name}_r_shared"] == pytest.approx(M.MIT_FUNCTIONS[name](r, cast, np.ones((25, 25)),
                                                                                 convention="shared"))


# ------------------------------------------------------------------ the authors' 1/2.2 output gamma (IIW, SAW)


def test_whdr_with_the_authors_gamma_hand_computed():
    refl = np.array([[0.2, 0.5, 0.6, 0.575]])  # one row, 4 pixels; points at the pixel centres
    points = [{"id": i + 1, "x": (i + 0.5) / 4, "y": 0.5, "opaque": True} for i in range(4)]
    judgements = {"intrinsic_points": points, "intrinsic_comparisons": [
        {"point1": 1, "point2": 2, "darker": "1", "darker_score": 0.9},  # 2.5; ^(1/2.2) 1.52: '1' both ways
        {"point1": 2, "point2": 3, "darker": "E", "darker_score": 1.0},  # 1.2 -> '1'; 1.2^(1/2.2) = 1.086 -> 'E'
        {"point1": 2, "point2": 4, "darker": "1", "darker_score": 0.4},  # 1.15 -> '1'; 1.066 -> 'E'
    ]}
    assert 1.2 ** M.AUTHORS_GAMMA < 1.1 < 1.15 and 1.15 ** M.AUTHORS_GAMMA < 1.1
    assert M.whdr(refl, judgements) == pytest.approx(1.0 / 2.3)
    assert M.whdr(refl, judgements, gamma=M.AUTHORS_GAMMA) == pytest.approx(0.4 / 2.3)


def test_saw_with_the_authors_gamma_hand_computed(tmp_path):
    shading, path = _saw_fixture(tmp_path)
    labels = M.load_saw_labels(path)
    # log(S^(1/2.2)) = log(S) / 2.2: the unit step's Sobel response 4 becomes 4 / 2.2 = 1.82
    np.testing.assert_allclose(M.log_shading_gradmag(shading, M.AUTHORS_GAMMA),
                               np.tile([0, 0, 4, 4, 0, 0], (5, 1)) / 2.2, atol=1e-12)
    linear = M.saw_confusion(shading, labels, [2.0], filter_size=3)
    authors = M.saw_confusion(shading, labels, [2.0], filter_size=3, gamma=M.AUTHORS_GAMMA)
    np.testing.assert_array_equal(linear[0], [[0, 4], [4, 0], [2, 4]])  # 4 > 2: the step is non-smooth
    np.testing.assert_array_equal(authors[0], [[0, 4], [0, 4], [0, 6]])  # 1.82 < 2: everything smooth
