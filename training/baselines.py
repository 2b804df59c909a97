"""Classical intrinsic-image baselines the model is compared with (training/evaluate.py).

Every baseline takes LINEAR RGB and returns `(reflectance (H, W, 3), shading (H, W))`, both linear and
positive, with reflectance * shading[..., None] ~= image (up to the illumination colour); the absolute scale is
arbitrary (all metrics are scale-invariant).

- `constant_shading(image)`: R = I, S = 1 (the trivial baseline of Grosse et al.).
- `chromaticity(image)`: S = lum, R = I / lum, lum = Rec.709 luminance of the linear image (every intensity
  change is shading, every colour change reflectance; the baseline issue 13 names).
- `retinex(image, mask)`: colour Retinex (Land & McCann; Grosse et al.'s variant): a log-intensity derivative
  between neighbours belongs to reflectance when |d log intensity| > `threshold_intensity` or the rg-chromaticity
  changes by more than `threshold_chroma` (Euclidean); the kept derivatives are reintegrated by least squares
  into log reflectance intensity; shading = intensity / reflectance intensity, R = I / S.
- `weiss(frames, masks)`: Weiss (ICCV 2001) multi-image method for a fixed camera and changing light: per colour
  channel the median over frames of each log-derivative is the reflectance derivative (shading edges move,
  reflectance edges stay), reintegrated by least squares -> log R (H, W, 3); per-frame shading
  S_t = exp(mean over channels of (log I_t - log R)) -> (T, H, W).

`integrate_gradients(gx, gy, wx, wy)`: least-squares reintegration of forward differences gx (H, W-1)
(x[:, 1:] - x[:, :-1]) and gy (H-1, W) with optional per-difference weights; returns (H, W) with zero mean
(a tiny ridge term fixes the free constant and isolated pixels, which come out 0). Solved by sparse LU, or above
`DIRECT_MAX_UNKNOWNS` pixels by multigrid-preconditioned conjugate gradients (pyamg; same result to ~1e-7).
Intensities are clamped at `eps` = 1e-4 before the log.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pipeline.color import luminance

EPS = 1e-4


def _diff_ops(h: int, w: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Sparse forward-difference operators Dx ((h*(w-1)) x (h*w)) and Dy (((h-1)*w) x (h*w)), row-major pixels."""
    dx1 = sp.diags([-np.ones(w - 1), np.ones(w - 1)], [0, 1], shape=(w - 1, w))
    dy1 = sp.diags([-np.ones(h - 1), np.ones(h - 1)], [0, 1], shape=(h - 1, h))
    return sp.kron(sp.identity(h), dx1).tocsr(), sp.kron(dy1, sp.identity(w)).tocsr()


DIRECT_MAX_UNKNOWNS = 50_000  # larger systems go to algebraic multigrid, faster from ~0.1 MP (bench/decompose.py)


def integrate_gradients(gx: np.ndarray, gy: np.ndarray, wx: Optional[np.ndarray] = None,
                        wy: Optional[np.ndarray] = None, ridge: float = 1e-8,
                        direct_max_unknowns: int = DIRECT_MAX_UNKNOWNS) -> np.ndarray:
    h, w = gy.shape[0] + 1, gx.shape[1] + 1
    if gx.shape != (h, w - 1) or gy.shape != (h - 1, w):
        raise ValueError(f"gx {gx.shape} / gy {gy.shape} are not forward differences of one image")
    dx, dy = _diff_ops(h, w)
    wx = np.ones_like(gx) if wx is None else wx
    wy = np.ones_like(gy) if wy is None else wy
    a = sp.vstack([dx, dy]).tocsr()
    weights = sp.diags(np.concatenate([wx.ravel(), wy.ravel()]).astype(np.float64))
    b = np.concatenate([gx.ravel(), gy.ravel()]).astype(np.float64)
    normal = (a.T @ weights @ a).tocsr()
    rhs = a.T @ (weights @ b)
    # A pixel in no weighted pair has a zero row and right-hand side: the ridge makes it exactly 0, so only the
    # others are unknowns (on MIT objects ~70% of the frame is black background: a system a third the size).
    active = normal.diagonal() > 0
    x = np.zeros(h * w)
    if active.any():
        sub = normal[active][:, active] + ridge * sp.identity(int(active.sum()), format="csr")
        x[active] = _solve_symmetric(sub, rhs[active], direct_max_unknowns)
    x = x.reshape(h, w)
    return x - x.mean()


def _solve_symmetric(lhs: sp.csr_matrix, rhs: np.ndarray, direct_max_unknowns: int) -> np.ndarray:
    """x of lhs x = rhs for a weighted graph Laplacian plus a ridge: sparse LU up to `direct_max_unknowns`
    unknowns; above, conjugate gradients preconditioned by smoothed-aggregation algebraic multigrid (pyamg), whose
    time grows about linearly with the pixels where LU's fill-in grows faster (~4x less time at 1 MP)."""
    if lhs.shape[0] <= direct_max_unknowns:
        return spla.spsolve(lhs.tocsc(), rhs)
    import pyamg

    residuals: list[float] = []
    outer_state = np.random.get_state()  # pyamg draws its spectral-radius start vectors from numpy's global RNG:
    np.random.seed(0)  # a fixed one makes reruns bit-identical (DVC outputs), and the caller's stream is restored
    try:
        solver = pyamg.smoothed_aggregation_solver(lhs, symmetry="symmetric")
        x = solver.solve(rhs, tol=1e-10, accel="cg", maxiter=500, residuals=residuals)
    finally:
        np.random.set_state(outer_state)
    if residuals and residuals[-1] > 1e-6 * max(residuals[0], 1e-300):
        warnings.warn(f"integrate_gradients: multigrid stopped at relative residual "
                      f"{residuals[-1] / residuals[0]:.1e} after {len(residuals) - 1} iterations")
    return x


def forward_diffs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) -> horizontal (H, W-1) and vertical (H-1, W) neighbour differences x[q] - x[p]."""
    return x[:, 1:] - x[:, :-1], x[1:, :] - x[:-1, :]


def pair_mask(mask: Optional[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Float 0/1 weights of the horizontal / vertical pairs whose two pixels are both in `mask` (None: all)."""
    m = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    return (m[:, 1:] & m[:, :-1]).astype(np.float64), (m[1:, :] & m[:-1, :]).astype(np.float64)


def chromaticity_steps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear (H, W, 3) -> |chroma(q) - chroma(p)| of the horizontal (H, W-1) and vertical (H-1, W) pairs
    (chroma = RGB / its sum, the image floored at EPS; Euclidean norm): Retinex's reflectance-edge test."""
    image = np.maximum(np.asarray(image, np.float64), EPS)
    chroma = image / image.sum(axis=2, keepdims=True)
    return np.linalg.norm(chroma[:, 1:] - chroma[:, :-1], axis=2), np.linalg.norm(chroma[1:] - chroma[:-1], axis=2)


def constant_shading(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, np.float64)
    return np.maximum(image, EPS), np.ones(image.shape[:2])


def chromaticity(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.maximum(np.asarray(image, np.float64), EPS)
    lum = luminance(image)
    return image / lum[..., None], lum


def retinex(image: np.ndarray, mask: Optional[np.ndarray] = None, threshold_intensity: float = 0.1,
            threshold_chroma: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    image = np.maximum(np.asarray(image, np.float64), EPS)
    intensity = image.mean(axis=2)
    log_i = np.log(intensity)
    gx, gy = forward_diffs(log_i)
    cx, cy = chromaticity_steps(image)
    keep_x = (np.abs(gx) > threshold_intensity) | (cx > threshold_chroma)
    keep_y = (np.abs(gy) > threshold_intensity) | (cy > threshold_chroma)
    wx, wy = pair_mask(mask, log_i.shape)
    log_r_int = integrate_gradients(np.where(keep_x, gx, 0.0), np.where(keep_y, gy, 0.0), wx, wy)
    shading = np.exp(log_i - log_r_int)
    return image / shading[..., None], shading


def weiss(frames: np.ndarray, masks: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """frames (T, H, W, 3) linear; masks (T, H, W) bool (1 = valid) or None -> (R (H, W, 3), S (T, H, W))."""
    frames = np.maximum(np.asarray(frames, np.float64), EPS)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    log_i = np.log(frames)
    valid = np.ones((t, h, w), bool) if masks is None else np.asarray(masks, bool)
    vx = valid[:, :, 1:] & valid[:, :, :-1]
    vy = valid[:, 1:, :] & valid[:, :-1, :]
    log_r = np.empty((h, w, 3))
    wx, wy = vx.any(axis=0).astype(np.float64), vy.any(axis=0).astype(np.float64)
    for c in range(3):
        dx = np.where(vx, log_i[:, :, 1:, c] - log_i[:, :, :-1, c], np.nan)
        dy = np.where(vy, log_i[:, 1:, :, c] - log_i[:, :-1, :, c], np.nan)
        with warnings.catch_warnings():  # pixels never valid: "All-NaN slice", median set to 0
            warnings.simplefilter("ignore", RuntimeWarning)
            mx = np.nan_to_num(np.nanmedian(dx, axis=0))
            my = np.nan_to_num(np.nanmedian(dy, axis=0))
        log_r[..., c] = integrate_gradients(mx, my, wx, wy)
    shading = np.exp((log_i - log_r[None]).mean(axis=3))
    return np.exp(log_r), shading

