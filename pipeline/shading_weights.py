"""Multiscale shading-smoothness pair weights v_pq (BigTime, Li & Snavely CVPR 2018, Sec. 5, Eq. 10-13).

Consumes one sequence of frames `srgb` (m, H, W, 3) float in [0, 1] (gamma-encoded sRGB, numpy). Produces a list of `scales` float32 arrays; element l has shape
(4, H_l, W_l) with H_l = H >> l, W_l = W >> l (or (m, 4, H_l, W_l) with reduce="none"). `w[l][k, y, x]` weights
the squared log-shading difference of the pixel pair ((y, x), (y + dy, x + dx)) at scale l, with (dy, dx) =
NEIGHBOUR_OFFSETS[k]; it is 0 where that neighbour is outside the image. Each unordered 8-neighbour pair is
stored once (the 4 forward offsets). The weights depend on the images only (no masks); the loss multiplies
them by the validity of both pixels.

Definition, per scale l (the image is first reduced by 2x2 box averaging in linear RGB, l times):
  lin_i     = srgb_to_linear(srgb_i), clamped at `eps`              (linear)
  I_i       = intensity of lin_i (mean of RGB by default; Rec.709 optional)
  d_i(p,q)  = log I_i(p) - log I_i(q)                              (log-image derivative of frame i)
  med(p,q)  = median_i d_i(p,q)                                      (Weiss: the reflectance derivative)
  v_i       = max(exp(-k_abs * (d_i - med)^2),                       (frame i's derivative is the usual one)
                  exp(-k_rel * ((d_i - med) / (|med| + 1e-6))^2))   (... relative to the edge strength)
  W_i(p,q)  = exp(-|chroma_i(p) - chroma_i(q)|^2 / sigma_chroma^2 - (I_i(p) - I_i(q))^2 / sigma_intensity^2)
              (chroma = rg chromaticity of lin_i; W is the reflectance-style affinity)
  v(p,q)    = reduce_i( v_i ) * (edge_offset + edge_scale * (1 - median_i W_i) * P)
  P(p,q)    = exp(-(median_i |d_i - med|)^2 / edge_persistence^2)   (1 with edge_persistence None)
Ablations: derivative_term=False sets v_i = 1, edge_term=False sets the factor to 1.
P (optional) keeps the reflectance-edge boost for edges that persist over time: a paint edge's log-derivative is
the same in every frame (spread ~0, P ~1), a crease or a moving shadow's changes with the light (P -> 0), so the
energy does not smooth the shading hard across a crease between a lit and a shaded face.
`d_i - med` is the shading part of frame i's derivative (Weiss 2001): where it is ~0 the shading of frame i is
smooth across (p,q) and gets a high weight; where a shadow edge crosses (p,q) in frame i, the weight drops.
The factor (1 - median W) is large across persistent colour/intensity (reflectance) edges, where the image
edge is explained by reflectance, so shading should stay smooth there.

Paper vs the authors' code (lixx2938/unsupervised-learning-intrinsic-images, data loader):
- The paper's factor is (1 - median W); the authors used 12 * (1/12 + 1 - median W) = 1 + 12 (1 - median W).
  This function's keyword defaults are the paper's (edge_offset=0, edge_scale=1, reduce="mean"); the params
  defaults (`shards.shading_weights`) are the authors' (1, 12, "none"), which scored better on the cross-object
  MIT folds (pipeline/params.py cites the rows of docs/results.md).
- The authors kept the per-frame weights v_i; the contract (CONTRACTS.md) stores one (4, H_l, W_l) map per
  sequence so the loader can subsample frames, so the default reduces v_i over frames by the mean
  (reduce="median" or "none" (per-frame, (m, 4, H_l, W_l)) are available; the loss accepts both shapes).
- The authors downsampled by taking every other pixel; default here is 2x2 averaging (downsample="nearest"
  reproduces theirs). The authors' relative term divides by (med + 1e-6); we use |med| + 1e-6 (the squared
  ratio is unchanged except at med ~ 0 where the sign of the epsilon made theirs ill-defined).
- k_abs = 20, k_rel = 4, sigma_intensity = 0.12, sigma_chroma = 0.025 are the authors' constants (the paper
  text gives the form of the weights, not these numbers) and this function's keyword defaults; the params default
  `shards.shading_weights.sigma_chroma` is 0.05, which measured a little better (pipeline/params.py cites the rows).
"""
from __future__ import annotations

import numpy as np

from pipeline.color import REC709_WEIGHTS, srgb_to_linear

NEIGHBOUR_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (dy, dx): the 4 forward neighbours
REL_EPS = 1e-6


def _pair_slices(h: int, w: int, dy: int, dx: int):
    """(p-slice, q-slice) over (H, W) for the pairs ((y, x), (y+dy, x+dx)) with both inside."""
    p = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
    q = (slice(dy, h), slice(max(0, dx), w + min(0, dx)))
    return p, q


def _downsample_np(lin: np.ndarray, mode: str) -> np.ndarray:
    """(m, H, W, 3) -> (m, H >> 1, W >> 1, 3) by 2x2 averaging or nearest (every other pixel)."""
    m, h, w, c = lin.shape
    h2, w2 = h // 2, w // 2
    if mode == "nearest":
        return lin[:, : 2 * h2 : 2, : 2 * w2 : 2]
    return lin[:, : 2 * h2, : 2 * w2].reshape(m, h2, 2, w2, 2, c).mean(axis=(2, 4))


def _intensity_np(lin: np.ndarray, intensity: str) -> np.ndarray:
    if intensity == "rec709":
        return lin @ np.asarray(REC709_WEIGHTS, dtype=lin.dtype)
    return lin.mean(axis=-1)


def _check(srgb_shape, scales: int, reduce: str, intensity: str, downsample: str) -> None:
    if len(srgb_shape) != 4 or srgb_shape[-1] != 3:
        raise ValueError(f"srgb must be (m, H, W, 3), got {tuple(srgb_shape)}")
    if scales < 1 or (srgb_shape[1] >> (scales - 1)) < 2 or (srgb_shape[2] >> (scales - 1)) < 2:
        raise ValueError(f"scales={scales} too many for a {srgb_shape[1]}x{srgb_shape[2]} image")
    if reduce not in ("mean", "median", "none"):
        raise ValueError(f"reduce must be mean|median|none, got {reduce!r}")
    if intensity not in ("mean_rgb", "rec709"):
        raise ValueError(f"intensity must be mean_rgb|rec709, got {intensity!r}")
    if downsample not in ("average", "nearest"):
        raise ValueError(f"downsample must be average|nearest, got {downsample!r}")


def shading_smoothness_weights(
    srgb,
    *,
    scales: int = 4,
    k_abs: float = 20.0,
    k_rel: float = 4.0,
    sigma_intensity: float = 0.12,
    sigma_chroma: float = 0.025,
    edge_scale: float = 1.0,
    edge_offset: float = 0.0,
    reduce: str = "mean",
    intensity: str = "mean_rgb",
    downsample: str = "average",
    eps: float = 1e-4,
    derivative_term: bool = True,
    edge_term: bool = True,
    edge_source: str = "affinity",
    sigma_log_derivative: float = 0.25,
    edge_persistence: float | None = None,
) -> list[np.ndarray]:
    """Pair weights per scale (see module docstring). srgb (m, H, W, 3) in [0, 1] -> list of float32 arrays."""
    srgb = np.asarray(srgb, dtype=np.float64)
    _check(srgb.shape, scales, reduce, intensity, downsample)
    if edge_source not in ("affinity", "median_derivative"):
        raise ValueError(f"edge_source must be affinity|median_derivative, got {edge_source!r}")
    if edge_persistence is not None and not edge_persistence > 0:
        raise ValueError(f"edge_persistence must be > 0 or None, got {edge_persistence!r}")
    lin = srgb_to_linear(np.clip(srgb, 0.0, 1.0))
    out = []
    for level in range(scales):
        if level:
            lin = _downsample_np(lin, downsample)
        m, h, w, _ = lin.shape
        clamped = np.maximum(lin, eps)
        inten = _intensity_np(clamped, intensity)  # (m, h, w)
        log_i = np.log(inten)
        chroma = (clamped / clamped.sum(axis=-1, keepdims=True))[..., :2]
        shape = (m, 4, h, w) if reduce == "none" else (4, h, w)
        weights = np.zeros(shape, dtype=np.float64)
        for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
            (py, px), (qy, qx) = _pair_slices(h, w, dy, dx)
            d = log_i[:, py, px] - log_i[:, qy, qx]  # (m, hp, wp)
            med = np.median(d, axis=0)
            dev = d - med
            if derivative_term:
                v = np.maximum(np.exp(-k_abs * dev**2), np.exp(-k_rel * (dev / (np.abs(med) + REL_EPS)) ** 2))
            else:
                v = np.ones_like(dev)
            if edge_term:
                dchroma = ((chroma[:, py, px] - chroma[:, qy, qx]) ** 2).sum(axis=-1)
                if edge_source == "affinity":
                    dint = (inten[:, py, px] - inten[:, qy, qx]) ** 2
                    affinity = np.median(np.exp(-dchroma / sigma_chroma**2 - dint / sigma_intensity**2), axis=0)
                else:  # the persistent (Weiss) edge: median chroma step and median log-derivative
                    affinity = np.exp(-np.median(dchroma, axis=0) / sigma_chroma**2 - med**2 / sigma_log_derivative**2)
                boost = 1.0 - affinity
                if edge_persistence is not None:  # the spread of the log-derivative over frames (log units)
                    spread = np.median(np.abs(dev), axis=0)
                    boost = boost * np.exp(-(spread / edge_persistence) ** 2)
                factor = edge_offset + edge_scale * boost
            else:
                factor = 1.0
            if reduce == "none":
                weights[:, k, py, px] = v * factor
            else:
                agg = v.mean(axis=0) if reduce == "mean" else np.median(v, axis=0)
                weights[k, py, px] = agg * factor
        out.append(weights.astype(np.float32))
    return out


def weights_from_params(srgb, params) -> list[np.ndarray]:
    """`shading_smoothness_weights` with settings from `pipeline.params.ShardsParams` (scales, shading_weights)."""
    sw = params.shading_weights
    return shading_smoothness_weights(
        srgb,
        scales=params.shading_scales,
        k_abs=sw.k_abs,
        k_rel=sw.k_rel,
        sigma_intensity=sw.sigma_intensity,
        sigma_chroma=sw.sigma_chroma,
        edge_scale=sw.edge_scale,
        edge_offset=sw.edge_offset,
        reduce=sw.reduce,
        intensity=sw.intensity,
        downsample=sw.downsample,
        eps=sw.eps,
        derivative_term=sw.derivative_term,
        edge_term=sw.edge_term,
        edge_source=sw.edge_source,
        sigma_log_derivative=sw.sigma_log_derivative,
        edge_persistence=sw.edge_persistence,
    )
