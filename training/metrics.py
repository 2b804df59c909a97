"""Intrinsic-image metrics: MIT (si-MSE, LMSE, DSSIM), IIW (WHDR) and SAW (AP), with loaders for the published formats.

All images are LINEAR (not sRGB, not log): reflectance (H, W, 3) or (H, W), shading (H, W) (or (H, W, 1/3)),
mask (H, W) bool/{0,1} (1 = evaluated). Estimates are known only up to scale, so every MIT metric first
rescales the estimate by the least-squares factor alpha = sum(m gt est) / sum(m est^2). Which sums, is the
scoring CONVENTION (`convention=` of `si_mse`, `lmse`, `dssim`; CONVENTIONS, key suffixes in SUFFIX):
- "channel" (keys without suffix, the historical default): one alpha per colour channel (Grosse et al.'s
  `ssq_error` applied to each channel: "each color channel can be rescaled independently"); the score is the
  mean over channels. A colour cast of the estimate (R' = R * (a, b, c)) costs nothing.
- "grey" (suffix `_grey`): Grosse et al.'s comparison code, which scores grey images: ground truth and
  estimate are first averaged over the channels, then scored as one channel (one alpha).
- "shared" (suffix `_shared`): ONE alpha for all three channels (sums over pixels and channels); the
  channels stay apart, so a colour cast is penalised. LMSE fits one alpha per window over the three channels
  and divides the window errors summed over channels by the ground-truth energy summed over channels.
One-channel inputs (shading) score the same in every convention.

MIT intrinsic images (Grosse et al. ICCV 2009; Li & Snavely 2018 Table 3):
- `si_mse(gt, est, mask)`: sum m (gt - alpha est)^2 / sum m, i.e. the mean squared error per masked pixel
  and channel after the scale fit.
- `lmse(gt, est, mask, window=20, step=10)`: Grosse et al.'s local error: windows of `window` pixels every
  `step` pixels (those fully inside the image), each rescaled on its own; sum of window errors divided by the
  sum of m gt^2 over the same windows (the published code's later fix: the normaliser accumulates per window,
  so the score is <= 1).
- `dssim(gt, est, mask)`: (1 - SSIM) / 2 of the scale-fitted estimate, SSIM of Wang et al. 2004 (Gaussian
  window sigma 1.5, 11 x 11, K1 = 0.01, K2 = 0.03, data range 1), SSIM map averaged over masked pixels (and
  channels); pixels outside the mask are zeroed in both images first.
- `mit_scores(...)` -> for each convention c with suffix x: {mse_r<x>, lmse_r<x>, dssim_r<x>, mse_avg<x>,
  lmse_avg<x>, dssim_avg<x>}, plus mse_s, lmse_s, dssim_s (grey shading: one score for all conventions);
  "avg" = (reflectance + shading) / 2, as the paper's Table 3, which reports each averaged over test images.
  `mit_keys(convention)` lists one convention's nine keys (r, s, avg per metric), MIT_KEYS all of them.

IIW (Bell, Bala, Snavely SIGGRAPH 2014): `load_iiw_judgements(path)` reads `<id>.json` with
`intrinsic_points` [{id, x, y (normalised to [0,1], x along width), opaque}] and `intrinsic_comparisons`
[{point1, point2, darker in {'1','2','E'}, darker_score >= 0}]. `whdr(reflectance, judgements, delta=0.10,
gamma=1.0)`: each point samples reflectance[int(y * rows), int(x * cols)] ** gamma, intensity = max(mean over
channels, 1e-10);
the algorithm says '1' (point 1 darker) when r2 / r1 > 1 + delta, '2' when r1 / r2 > 1 + delta, else 'E';
WHDR = sum of darker_score over disagreeing comparisons / sum of darker_score (comparisons with a missing
or non-positive score, an unknown label, or a non-opaque point are skipped). None if nothing is scored.
`gamma=AUTHORS_GAMMA` (1/2.2) scores R^(1/2.2) as Li & Snavely's test wrapper does (it multiplies the log
outputs by 0.4545): the power moves every ratio r2 / r1 toward 1, so more pairs fall inside 1 + delta ('E').

SAW (Kovacs et al. CVPR 2017), the variant of Li & Snavely: `load_saw_labels(path)` reads the published
per-photo `<id>.npy` label map: 0 = normal/depth-discontinuity non-smooth shading (NS-ND), 1 = shadow-boundary
non-smooth (NS-SB), 2 = smooth shading (S), 100 = no data (ignored). A pixel is predicted smooth when the
Sobel gradient magnitude of log(max(shading ** gamma, 1e-4)) is below a threshold (`gamma=AUTHORS_GAMMA`:
the authors' S^(1/2.2), which divides every log gradient by 2.2 against the same thresholds); for the
non-smooth classes the gradient magnitude is first max-filtered (size 10) so a boundary nearby counts, smooth pixels use the
unfiltered one. `saw_confusion` -> (T, 3, 2) counts per threshold [gt class, predicted non-smooth/smooth];
summed over photos, `saw_precision_recall` reweights rows by class_weights / row count (default 1, 1, 2 as
the authors' code) and gives smooth-class precision and recall; `saw_ap` integrates the PR curve by the
trapezoid rule from (recall 0, first precision) to (recall 1, precision 0.5) as the authors' code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

# ------------------------------------------------------------------------------------------ helpers


def _channels(x: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, C) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x[..., None] if x.ndim == 2 else x


def _check(gt: np.ndarray, est: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt, est = _channels(gt), _channels(est)
    if est.shape[2] == 1 and gt.shape[2] > 1:
        est = np.repeat(est, gt.shape[2], axis=2)
    if gt.shape != est.shape:
        raise ValueError(f"ground truth {gt.shape} and estimate {est.shape} differ")
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape != gt.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {gt.shape[:2]}")
    return gt, est, mask


CONVENTIONS = ("channel", "grey", "shared")
SUFFIX = {"channel": "", "grey": "_grey", "shared": "_shared"}  # metric-key suffix of each convention
AUTHORS_GAMMA = 1 / 2.2  # Li & Snavely's test wrapper scores R^(1/2.2), S^(1/2.2) on IIW and SAW


def _convention(gt, est, mask, convention: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (H, W, C) arrays; "grey" averages gt and est over the channels first -> (H, W, 1)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    gt, est, mask = _check(gt, est, mask)
    if convention == "grey":
        return gt.mean(axis=2, keepdims=True), est.mean(axis=2, keepdims=True), mask
    return gt, est, mask


def _alpha(gt: np.ndarray, est: np.ndarray, m: np.ndarray, axis) -> np.ndarray:
    """Least-squares alpha over `axis` with m broadcast to gt; 0 where sum m est^2 <= 1e-5 (Grosse)."""
    den = np.sum(m * est**2, axis=axis)
    num = np.sum(m * gt * est, axis=axis)
    return np.where(den > 1e-5, num / np.maximum(den, 1e-300), 0.0)


def fit_scale(gt: np.ndarray, est: np.ndarray, mask: np.ndarray, shared: bool = False) -> np.ndarray:
    """(C,) least-squares alpha minimising sum m (gt - alpha est)^2: one per channel, or (shared) one for all."""
    gt, est, mask = _check(gt, est, mask)
    m = mask[..., None]
    if shared:
        return np.full(gt.shape[2], float(_alpha(gt, est, m, None)))
    return _alpha(gt, est, m, (0, 1))


# ------------------------------------------------------------------------------------------ MIT


def si_mse(gt, est, mask, convention: str = "channel") -> float:
    gt, est, mask = _convention(gt, est, mask, convention)
    alpha = fit_scale(gt, est, mask, shared=convention == "shared")
    n = mask.sum() * gt.shape[2]
    if n == 0:
        raise ValueError("empty mask")
    return float(np.sum(mask[..., None] * (gt - alpha * est) ** 2) / n)


def _local_error(gt: np.ndarray, est: np.ndarray, mask: np.ndarray, window: int, step: int) -> float:
    """Grosse's local error of (H, W, C) images, one alpha per window over all C channels."""
    rows, cols = gt.shape[:2]
    ssq = total = 0.0
    for i in range(0, rows - window + 1, step):
        for j in range(0, cols - window + 1, step):
            g, e = gt[i:i + window, j:j + window], est[i:i + window, j:j + window]
            m = mask[i:i + window, j:j + window, None]
            alpha = _alpha(g, e, m, None)
            ssq += np.sum(m * (g - alpha * e) ** 2)
            total += np.sum(m * g**2)
    if total == 0:
        raise ValueError("LMSE undefined: no window holds masked ground truth energy")
    return float(ssq / total)


def lmse(gt, est, mask, window: int = 20, step: int = 10, convention: str = "channel") -> float:
    gt, est, mask = _convention(gt, est, mask, convention)
    if convention == "shared":
        return _local_error(gt, est, mask, window, step)
    return float(np.mean([_local_error(gt[..., c:c + 1], est[..., c:c + 1], mask, window, step)
                          for c in range(gt.shape[2])]))


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM of two single-channel images (Gaussian window 11 x 11, sigma 1.5; reflect at borders)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: ndimage.gaussian_filter(x, sigma, truncate=3.5)  # radius 5 -> 11 x 11  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(gt, est, mask=None, data_range: float = 1.0) -> float:
    """Mean SSIM over masked pixels and channels (no rescaling)."""
    gt, est = _channels(gt), _channels(est)
    mask = np.ones(gt.shape[:2]) if mask is None else np.asarray(mask, np.float64)
    gt, est, mask = _check(gt, est, mask)
    values = []
    for c in range(gt.shape[2]):
        s = ssim_map(gt[..., c] * mask, est[..., c] * mask, data_range)
        values.append(np.sum(s * mask) / mask.sum())
    return float(np.mean(values))


def dssim(gt, est, mask, convention: str = "channel") -> float:
    gt, est, mask = _convention(gt, est, mask, convention)
    alpha = fit_scale(gt, est, mask, shared=convention == "shared")
    return (1.0 - ssim(gt, alpha * est, mask)) / 2.0


MIT_FUNCTIONS = {"mse": si_mse, "lmse": lmse, "dssim": dssim}


def mit_keys(convention: str = "channel") -> tuple[str, ...]:
    """One convention's keys: mse_r<x>, mse_s, mse_avg<x>, lmse_..., dssim_... (x = SUFFIX[convention])."""
    x = SUFFIX[convention]
    return tuple(key for name in MIT_FUNCTIONS for key in (f"{name}_r{x}", f"{name}_s", f"{name}_avg{x}"))


MIT_KEYS = tuple(dict.fromkeys(key for c in CONVENTIONS for key in mit_keys(c)))  # per channel first


def mit_scores(gt_r, gt_s, est_r, est_s, mask, window: int = 20, step: int = 10) -> dict[str, float]:
    """All MIT metrics (MIT_KEYS) for one image: reflectance (H,W,3), shading (H,W), both linear; mask (H,W)."""
    kwargs = lambda name: {"window": window, "step": step} if name == "lmse" else {}  # noqa: E731
    out = {}
    for name, fn in MIT_FUNCTIONS.items():
        out[f"{name}_s"] = fn(gt_s, est_s, mask, **kwargs(name))
        for convention, x in SUFFIX.items():
            out[f"{name}_r{x}"] = fn(gt_r, est_r, mask, convention=convention, **kwargs(name))
            out[f"{name}_avg{x}"] = (out[f"{name}_r{x}"] + out[f"{name}_s"]) / 2
    return {key: out[key] for key in MIT_KEYS}


# ------------------------------------------------------------------------------------------ IIW


def load_iiw_judgements(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    for key in ("intrinsic_points", "intrinsic_comparisons"):
        if key not in data:
            raise ValueError(f"{path}: not an IIW judgements file (no {key!r})")
    return data


def whdr(reflectance: np.ndarray, judgements: dict, delta: float = 0.10, gamma: float = 1.0) -> Optional[float]:
    """Weighted human disagreement rate of a LINEAR reflectance (H, W, 3) or (H, W), scored as reflectance ** gamma
    (AUTHORS_GAMMA: the authors' R^(1/2.2)); None if no comparison counts."""
    refl = np.maximum(_channels(reflectance), 0.0) ** gamma
    rows, cols = refl.shape[:2]
    points = {p["id"]: p for p in judgements["intrinsic_points"]}
    error = weight_sum = 0.0
    for comp in judgements["intrinsic_comparisons"]:
        darker = comp.get("darker")
        weight = comp.get("darker_score")
        if darker not in ("1", "2", "E") or weight is None or weight <= 0:
            continue
        p1, p2 = points[comp["point1"]], points[comp["point2"]]
        if not (p1.get("opaque", True) and p2.get("opaque", True)):
            continue
        r1 = max(1e-10, float(np.mean(refl[int(p1["y"] * rows), int(p1["x"] * cols)])))
        r2 = max(1e-10, float(np.mean(refl[int(p2["y"] * rows), int(p2["x"] * cols)])))
        predicted = "1" if r2 / r1 > 1.0 + delta else ("2" if r1 / r2 > 1.0 + delta else "E")
        error += weight * (predicted != darker)
        weight_sum += weight
    return error / weight_sum if weight_sum > 0 else None


# ------------------------------------------------------------------------------------------ SAW
SAW_IGNORED = 100
SAW_CLASS_WEIGHTS = (1.0, 1.0, 2.0)


def load_saw_labels(path: str | Path) -> np.ndarray:
    labels = np.load(path)
    bad = set(np.unique(labels).tolist()) - {0, 1, 2, SAW_IGNORED}
    if labels.ndim != 2 or bad:
        raise ValueError(f"{path}: not a SAW label map (shape {labels.shape}, unknown labels {sorted(bad)})")
    return labels


def saw_thresholds(count: int = 400) -> np.ndarray:
    """Gradient-magnitude thresholds: log of `count/2` ratios in [1.001, 1.5] and `count/2` in [1.501, 8] (authors)."""
    return np.log(np.concatenate([np.linspace(1.001, 1.5, count // 2), np.linspace(1.501, 8.0, count // 2)]))


def log_shading_gradmag(shading: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    s = np.asarray(shading, np.float64)
    if s.ndim == 3:
        s = s.mean(axis=2)
    s = np.log(np.maximum(np.maximum(s, 0.0) ** gamma, 1e-4))
    return np.hypot(ndimage.sobel(s, axis=0), ndimage.sobel(s, axis=1))


def saw_confusion(shading: np.ndarray, labels: np.ndarray, thresholds: Sequence[float], filter_size: int = 10,
                  gamma: float = 1.0) -> Optional[np.ndarray]:
    """(T, 3, 2) confusion counts [threshold, gt class NS-ND/NS-SB/S, predicted non-smooth/smooth] of shading ** gamma
    (AUTHORS_GAMMA: the authors' S^(1/2.2)); None if unlabelled."""
    labels = np.asarray(labels)
    grad = log_shading_gradmag(shading, gamma)
    if grad.shape != labels.shape:
        raise ValueError(f"shading {grad.shape} and labels {labels.shape} differ")
    grad_max = ndimage.maximum_filter(grad, size=filter_size) if filter_size else grad
    valid = labels != SAW_IGNORED
    if not valid.any():
        return None
    out = np.zeros((len(thresholds), 3, 2), dtype=np.int64)
    for t, thres in enumerate(thresholds):
        for cls in range(3):
            sel = labels == cls
            g = grad_max[sel] if cls < 2 else grad[sel]
            smooth = int(np.sum(g < thres))
            out[t, cls] = (g.size - smooth, smooth)
    return out


def saw_precision_recall(confusion: np.ndarray, class_weights: Sequence[float] = SAW_CLASS_WEIGHTS) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 2) summed confusion -> (precision (T,), recall (T,)) of the smooth class after row reweighting."""
    conf = np.asarray(confusion, np.float64)
    if class_weights is not None:
        counts = conf.sum(axis=2, keepdims=True)
        conf = conf * np.asarray(class_weights, np.float64)[None, :, None] / np.maximum(counts, 1e-300)
    correct = conf[:, 2, 1]
    true_smooth = conf[:, 2, :].sum(axis=1)
    pred_smooth = conf[:, :, 1].sum(axis=1)
    recall = np.where(true_smooth > 0, correct / np.maximum(true_smooth, 1e-300), 0.0)
    precision = np.where(pred_smooth > 0, correct / np.maximum(pred_smooth, 1e-300), 1.0)
    return precision, recall


def saw_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the PR curve (thresholds ascending), closed at (0, precision[0]) and (1, 0.5)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[precision[0]], precision, [0.5]])
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2))
