"""The BigTime training energy (Li & Snavely CVPR 2018, Sec. 5) for one image sequence.

`intrinsic_loss(srgb, mask, log_r, log_s, log_c, shading_weights, config) -> (total, terms)`
  srgb            (m, 3, H, W) float in [0, 1], gamma-encoded input frames of ONE sequence (constant)
  mask            (m, 1, H, W) float {0, 1}; 1 = valid pixel (not sky / dynamic / saturated)
  log_r           (m, 3, H, W) predicted log reflectance (natural log of linear albedo)
  log_s           (m, 1, H, W) predicted log shading (grey)
  log_c           (m, 3)       predicted log illumination colour; model: log I = log R + log S + log c
  shading_weights list of `scales` tensors (4, H_l, W_l) (or per frame (m, 4, H_l, W_l)), H_l = H >> l,
                  from pipeline/shading_weights.py (4 forward neighbour offsets NEIGHBOUR_OFFSETS)
  total           scalar; terms: dict of the unweighted scalar terms (reconstruct, consistency, rsmooth,
                  ssmooth, shading_l1)

total = w_reconstruct L_reconstruct + w_consistency L_consistency + w_rsmooth L_rsmooth
        + w_ssmooth L_ssmooth + w_shading_l1 mean|log S|

Terms (i, j frames; p pixels; c colour channels; M masks; log I = log(clamp(srgb_to_linear(srgb), log_eps))):
- L_reconstruct (Eq. 6-7, APWLS with P_i = L_i M_i, Q_j = M_j, X_i = log I_i - log S_i - log c_i,
  Y_j = log R_j, L_i = lum(I_i)^lum_exponent (paper: Rec.709-style luminance^(1/8); the authors' code used the
  mean of linear RGB, `lum_definition="mean_rgb"`); since P enters squared the squared error is weighted by
  lum^(2 lum_exponent) = lum^(1/4)):
      sum_{i,j,p,c} P_i^2 Q_j^2 (X_i - Y_j)^2 / sum_{i,j,p,c} M_i M_j
  i.e. normalised by the number of ordered valid (frame pair incl. i = j, pixel, channel) terms (the authors'
  normaliser sum_p (sum_i M_i)^2 x 3 channels).
- L_consistency (Eq. 8, APWLS with P = Q = M, X = Y = log R):
      (1/2) sum_{i,j,p,c} M_i M_j (log R_i - log R_j)^2 / sum_{i != j,p,c} M_i M_j
  i.e. the sum over unordered pairs i < j divided by the number of ordered valid i != j terms; this equals the
  authors' (sum M sum M R^2 - (sum M R)^2) / sum (sum M)^2 - sum M, so the weight 2 means the same.
- L_rsmooth (Eq. 9): dense spatio-temporal bilateral reflectance smoothness, energy of log R under the
  bistochastised permutohedral-lattice filter built from srgb (training/lattice.py owns the definition and
  its normalisation). The lattice is built ONCE per call; pixels with mask 0 are left out of it unless
  `rsmooth_masked_pixels`. Skipped (and the lattice not built) when w_rsmooth == 0 and no lattice is given.
- L_ssmooth (Eq. 10-13): multiscale weighted L2 on log S over 8-neighbour pairs (`ssmooth_robust_scale` delta:
  each squared difference d^2 replaced by the Charbonnier 2 delta^2 (sqrt(1 + d^2/delta^2) - 1), equal to d^2 to
  second order, so the weights keep their scale, and linear in |d| beyond delta; `ssmooth_robust_by_weight`: delta
  times the pair's weight v_pq, so reflectance edges (large v) stay quadratic),
      sum_{l=1..L} (1/l) * (1/4) sum_{k=1..4} [ sum_{i,p} v^l_{k,p} M_i(p) M_i(q) (s^l_i(p) - s^l_i(q))^2
                                                / sum_{i,p} M_i(p) M_i(q) ],   q = p + offset_k
  where s^l is log S reduced l-1 times by 2x2 average pooling and M^l is valid only where all its 2x2
  children are (min pooling). Only the 4 forward offsets are summed: each unordered 8-neighbour pair once.
  The authors summed all 8 neighbours (every pair twice, the weights being symmetric) and divided by 8, which
  equals our (1/4) over the 4 forward offsets; each offset is normalised by its own valid-pair count, as
  theirs. (Their border handling dropped the outermost pixel ring; we keep every pair inside the image.)
  `rsmooth_normaliser`: "all" (default; the authors' Z) rescales it to a division by all m*H*W pixels,
  "valid" keeps the lattice's N (pipeline/params.py cites the measured rows).
  `rsmooth_kind="local"`: 8-neighbour bilateral weights within each frame (`LocalBilateralSmoothness`).
  `rsmooth_guide="sequence_mean"`: the intensity and chromaticity features of every frame are those of the
  sequence's per-pixel mean linear image over its valid frames (`sequence_mean_linear`), not the frame's own.
- `reconstruct_pairs="same_frame"`: L_reconstruct over the i = j pairs only (`same_frame_terms`).
- shading_l1: mean over all pixels of |log S| (a prior toward unit shading, from the authors' code).

Paper vs the authors' code: the paper text does not give the term weights; the defaults 2, 2, 4, 1 and the
0.1 mean|log S| shading prior (which the paper text does not mention) reproduce the authors' training code.
Everything is computed in float32 with autocast disabled (bf16/fp16 inputs are cast up), so the quadratic
forms and the lattice are safe under mixed precision.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from pipeline.color import luminance, srgb_to_linear
from pipeline.shading_weights import NEIGHBOUR_OFFSETS, _pair_slices
from training.apwls import apwls, apwls_with_self_pairs


@dataclass(frozen=True)
class LossConfig:
    """Mirror of `pipeline.params.LossParams` (see that class and this module's docstring)."""

    w_reconstruct: float = 2.0
    w_consistency: float = 4.0  # pipeline/params.py LossParams cites the rows that chose it
    w_rsmooth: float = 4.0
    w_ssmooth: float = 4.0  # pipeline/params.py LossParams cites the rows that chose it
    w_shading_l1: float = 0.1
    lum_exponent: float = 0.125
    lum_definition: str = "rec709"
    log_eps: float = 1e-4
    sigma_xy: float = 0.1
    sigma_intensity: float = 0.12
    sigma_chroma: float = 0.025
    bistochastic_iterations: int = 10
    bistochastic_tolerance: float = 1e-3
    rsmooth_masked_pixels: bool = False
    rsmooth_normaliser: str = "all"
    rsmooth_kind: str = "dense"
    rsmooth_guide: str = "frame"  # as pipeline/params.py LossParams (the measured rows are there)
    reconstruct_pairs: str = "same_frame"  # as pipeline/params.py LossParams (the measured rows are there)
    ssmooth_robust_scale: Optional[float] = None
    ssmooth_robust_by_weight: bool = False

    @classmethod
    def from_params(cls, params) -> "LossConfig":
        """From `pipeline.params.LossParams` (or any object/dict with these fields)."""
        raw = params if isinstance(params, dict) else params.model_dump()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"loss params not in LossConfig: {sorted(unknown)}")
        return cls(**raw)


def log_linear_image(srgb: torch.Tensor, eps: float) -> torch.Tensor:
    """srgb (m,3,H,W) [0,1] -> log of linear RGB clamped at eps (m,3,H,W)."""
    return torch.log(srgb_to_linear(srgb.clamp(0.0, 1.0)).clamp_min(eps))


def _reconstruction_sides(linear, mask, log_s, log_c, config: LossConfig):
    """(P, X) of L_reconstruct from linear rgb (m,3,H,W) (unclamped): P = lum^exponent M, X = log I - log S - c."""
    linear = linear.clamp_min(config.log_eps)
    if config.lum_definition == "rec709":
        lum = luminance(linear, channel_axis=1).unsqueeze(1)
    elif config.lum_definition == "mean_rgb":
        lum = linear.mean(1, keepdim=True)
    else:
        raise ValueError(f"lum_definition must be rec709|mean_rgb, got {config.lum_definition!r}")
    P = lum.clamp_min(config.log_eps).log_().mul_(config.lum_exponent).exp_() * mask  # lum^exponent
    return P, _LogResidual.apply(linear.log_(), log_s, log_c)  # (log_ in place on the clamped copy)


class _LogResidual(torch.autograd.Function):
    """X = log I - log S - log c: (m,3,H,W) from constant log I (m,3,H,W), log S (m,1,H,W), log c (m,3).

    Gradients: -sum over channels (log S), -sum over pixels (log c); autograd's broadcasting subtractions
    would negate the full (m,3,H,W) gradient twice before reducing it.
    """

    @staticmethod
    def forward(ctx, log_i, log_s, log_c):
        return torch.sub(log_i, log_s).sub_(log_c[:, :, None, None])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grad_s = grad.sum(1, keepdim=True).neg_() if ctx.needs_input_grad[1] else None
        grad_c = grad.sum((2, 3)).neg_() if ctx.needs_input_grad[2] else None
        return None, grad_s, grad_c


def _pair_counts(mask: torch.Tensor, channels: int):
    """(ordered valid frame pairs incl. i = j, ordered valid pairs i != j), each x pixels x channels."""
    msum = mask.sum(0)
    all_pairs = (msum * msum).sum() * channels
    return all_pairs.clamp_min(1.0), (all_pairs - (mask * mask).sum() * channels).clamp_min(1.0)


def reconstruction_loss(srgb, mask, log_r, log_s, log_c, config: LossConfig) -> torch.Tensor:
    """L_reconstruct (see module docstring); all inputs float32."""
    P, X = _reconstruction_sides(srgb_to_linear(srgb.clamp(0.0, 1.0)), mask, log_s, log_c, config)
    return apwls(P, X, mask, log_r) / _pair_counts(mask, log_r.shape[1])[0]


def consistency_loss(mask, log_r) -> torch.Tensor:
    """L_consistency (see module docstring)."""
    return 0.5 * apwls(mask, log_r, mask, log_r) / _pair_counts(mask, log_r.shape[1])[1]


def data_terms(linear, mask, log_r, log_s, log_c, config: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_reconstruct, L_consistency) from linear rgb (m,3,H,W), sharing the log R moments (one APWLS pass).

    Equal to (reconstruction_loss, consistency_loss) of the same frames; the mask must need no gradient.
    """
    P, X = _reconstruction_sides(linear, mask, log_s, log_c, config)
    pair, self_pairs = apwls_with_self_pairs(P, X, mask, log_r)
    all_pairs, distinct_pairs = _pair_counts(mask, log_r.shape[1])
    return pair / all_pairs, 0.5 * self_pairs / distinct_pairs


def same_frame_terms(linear, mask, log_r, log_s, log_c, config: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_reconstruct over i = j pairs only, L_consistency): the paper's "per-image reconstruction" ablation.

    L_reconstruct = sum_{i,p,c} P_i^2 M_i (X_i - log R_i)^2 / sum_{i,p,c} M_i^2 (the i = j terms of the
    all-pairs sum, normalised by their count); L_consistency as `consistency_loss`.
    """
    P, X = _reconstruction_sides(linear, mask, log_s, log_c, config)
    channels = log_r.shape[1]
    recon = (P * P * (X - log_r) ** 2).sum() / ((mask * mask).sum() * channels).clamp_min(1.0)
    return recon, consistency_loss(mask, log_r)


class LocalBilateralSmoothness:
    """8-neighbour bilateral reflectance smoothness within each frame (the paper's "local" ablation of L_rsmooth).

    Pair weights w_pq = exp(-|f_p - f_q|^2 / 2) with the dense term's features (training/lattice.py
    `bilateral_features`: x, y, intensity, chromaticity over their sigmas) for the 4 forward neighbour offsets
    (each unordered 8-neighbour pair once), 0 unless both pixels are valid. Energy of log_r (m, C, H, W):
        sum_pairs w_pq |r_p - r_q|^2 / (C * 2 * sum_pairs w_pq)
    which matches the scale of the dense energy r^T (I - N A N) r / (C N) = sum_{p<q} (NAN)_pq |r_p - r_q|^2 / (C N)
    (rows of N A N sum to 1, so its pair weights sum to N / 2). `num_pixels`: valid pixels (for the "all"
    normaliser).
    """

    def __init__(self, weights: list[torch.Tensor], num_pixels: int, shape):
        self.weights, self.num_pixels, self.shape = weights, num_pixels, tuple(shape)

    @classmethod
    def build(cls, srgb, valid, *, sigma_xy, sigma_intensity, sigma_chroma, linear=None) -> "LocalBilateralSmoothness":
        from training.lattice import bilateral_features

        m, _, h, w = srgb.shape
        with torch.no_grad():
            feats = bilateral_features(srgb, sigma_xy=sigma_xy, sigma_intensity=sigma_intensity,
                                       sigma_chroma=sigma_chroma, linear=linear)
            feats = feats.t().reshape(-1, m, h, w)  # (5, m, H, W)
            valid = torch.ones(m, h, w, dtype=feats.dtype, device=feats.device) if valid is None else valid.reshape(m, h, w).to(feats.dtype)
            weights, total = [], 0.0
            for dy, dx in NEIGHBOUR_OFFSETS:
                (py, px), (qy, qx) = _pair_slices(h, w, dy, dx)
                dist2 = ((feats[:, :, py, px] - feats[:, :, qy, qx]) ** 2).sum(0)
                wk = torch.exp(-0.5 * dist2) * valid[:, py, px] * valid[:, qy, qx]
                weights.append(wk)
                total = total + wk.sum()
            weights = [wk / (2.0 * total).clamp_min(1e-12) for wk in weights]
        return cls(weights, int(valid.sum().item()), (m, h, w))

    def energy(self, log_r: torch.Tensor) -> torch.Tensor:
        _, h, w = self.shape
        channels = log_r.shape[1]
        total = log_r.new_zeros(())
        for wk, (dy, dx) in zip(self.weights, NEIGHBOUR_OFFSETS):
            (py, px), (qy, qx) = _pair_slices(h, w, dy, dx)
            diff = log_r[:, :, py, px] - log_r[:, :, qy, qx]
            total = total + (wk.unsqueeze(1) * diff * diff).sum()
        return total / channels


def _reduce_mask(mask: torch.Tensor) -> torch.Tensor:
    return -F.max_pool2d(-mask, 2)  # valid only if all 2x2 children are valid


class _NeighbourEnergy(torch.autograd.Function):
    """sum_k sum_{i,p} coeff_k[i,p] rho(s_i(p) - s_i(p + offset_k)) over NEIGHBOUR_OFFSETS; s (m, h, w).

    rho(d) = d^2, or with `robust_scales` (one delta per offset k: a float or a tensor shaped like coeff_k) the
    Charbonnier 2 delta^2 (sqrt(1 + d^2 / delta^2) - 1): d^2 for |d| << delta, 2 delta |d| for |d| >> delta.
    coeff_k (1 or m, h_k, w_k) constants on the pair grid of offset k (see _pair_slices). The gradient is
    accumulated in place into one buffer (autograd through the 8 slices would allocate one per slice).
    """

    @staticmethod
    def forward(ctx, s, robust_scales, *coeffs):
        h, w = s.shape[-2:]
        total = s.new_zeros(())
        scaled = []
        for k, (coeff, (dy, dx)) in enumerate(zip(coeffs, NEIGHBOUR_OFFSETS)):
            (py, px), (qy, qx) = _pair_slices(h, w, dy, dx)
            diff = s[:, py, px] - s[:, qy, qx]
            if robust_scales is None:
                weighted = coeff * diff  # rho'(d) / 2 times the weight
                total += (weighted * diff).sum()
            else:
                delta = robust_scales[k]  # a float, or a tensor on the pair grid like coeff
                root = torch.sqrt(1.0 + (diff / delta) ** 2)
                total += (coeff * (2.0 * delta**2) * (root - 1.0)).sum()
                weighted = coeff * diff / root
            scaled.append(weighted)
        ctx.save_for_backward(*scaled)
        ctx.size = (h, w)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h, w = ctx.size
        scaled = ctx.saved_tensors
        out = scaled[0].new_zeros(scaled[0].shape[0], h, w)
        for weighted, (dy, dx) in zip(scaled, NEIGHBOUR_OFFSETS):
            (py, px), (qy, qx) = _pair_slices(h, w, dy, dx)
            g = (2.0 * grad) * weighted
            out[:, py, px] += g
            out[:, qy, qx] -= g
        return (out, None) + (None,) * len(scaled)


def shading_smoothness_loss(
    log_s,
    mask,
    shading_weights: Sequence[torch.Tensor],
    robust_scale: Optional[float] = None,
    robust_by_weight: bool = False,
) -> torch.Tensor:
    """L_ssmooth (see module docstring). log_s, mask (m,1,H,W); weights per scale (4,H_l,W_l) or (m,4,H_l,W_l).

    `robust_scale`: None for the paper's squared differences, else the Charbonnier scale delta (log units);
    `robust_by_weight`: the pair's delta is robust_scale times its weight v_pq, so pairs the weights mark as
    reflectance edges (v >> 1) stay quadratic while unit-weight pairs may hold a shading discontinuity."""
    total = log_s.new_zeros(())
    s, msk = log_s, mask
    for level, w in enumerate(shading_weights):
        if level:
            s = F.avg_pool2d(s, 2)
            msk = _reduce_mask(msk)
        h, wd = s.shape[-2:]
        if tuple(w.shape[-3:]) != (len(NEIGHBOUR_OFFSETS), h, wd):
            raise ValueError(f"shading_weights[{level}] has shape {tuple(w.shape)}, expected (..., 4, {h}, {wd})")
        w = w.to(device=s.device, dtype=s.dtype)
        w = w.unsqueeze(0) if w.dim() == 3 else w  # (1 or m, 4, h, w)
        coeffs, deltas = [], None if robust_scale is None else []
        with torch.no_grad():
            for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
                (py, px), (qy, qx) = _pair_slices(h, wd, dy, dx)
                pair_mask = msk[:, 0, py, px] * msk[:, 0, qy, qx]  # (m, hp, wp)
                pair_weight = w[:, k, py, px]  # (1 or m, hp, wp)
                coeffs.append(pair_weight * (pair_mask / pair_mask.sum().clamp_min(1.0)))
                if deltas is not None:  # a zero weight's pair costs 0 whatever its delta: keep delta > 0
                    deltas.append(robust_scale * pair_weight.clamp_min(1e-6) if robust_by_weight else robust_scale)
        total = total + _NeighbourEnergy.apply(s[:, 0], deltas, *coeffs) / (4.0 * (level + 1))
    return total


def sequence_mean_linear(linear: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(m, 3, H, W) linear RGB, mask (m, 1, H, W) {0, 1} or None -> (m, 3, H, W) linear: every frame replaced by
    the per-pixel mean over the frames where that pixel is valid (over all frames where it is valid in none)."""
    if mask is None:
        return linear.mean(0, keepdim=True).expand_as(linear)
    weight = (mask.to(linear.dtype) > 0.5).to(linear.dtype)
    count = weight.sum(0, keepdim=True)
    valid_mean = (linear * weight).sum(0, keepdim=True) / count.clamp_min(1.0)
    return torch.where(count > 0, valid_mean, linear.mean(0, keepdim=True)).expand_as(linear)


def build_lattice(
    srgb: torch.Tensor, mask: Optional[torch.Tensor], config: LossConfig, *, linear: Optional[torch.Tensor] = None
):
    """The reflectance-smoothness operator for this sequence (float32): the dense bilateral one of
    training/lattice.py, or `LocalBilateralSmoothness` with `rsmooth_kind="local"`; its features from each frame
    (`rsmooth_guide="frame"`) or from the sequence's mean image (`"sequence_mean"`).

    `linear`: srgb_to_linear of the clamped srgb when the caller already has it (saves the conversion).
    """
    from training.lattice import BilateralSmoothness

    if config.rsmooth_guide not in ("frame", "sequence_mean"):
        raise ValueError(f"rsmooth_guide must be frame|sequence_mean, got {config.rsmooth_guide!r}")
    with torch.autocast(device_type=srgb.device.type, enabled=False):
        valid = None if (config.rsmooth_masked_pixels or mask is None) else mask.float() > 0.5
        if config.rsmooth_guide == "sequence_mean":
            if linear is None:
                linear = srgb_to_linear(srgb.float().clamp(0.0, 1.0))
            linear = sequence_mean_linear(linear.float(), None if mask is None else mask.float())
        if config.rsmooth_kind == "local":
            return LocalBilateralSmoothness.build(
                srgb.float(), valid, sigma_xy=config.sigma_xy, sigma_intensity=config.sigma_intensity,
                sigma_chroma=config.sigma_chroma, linear=None if linear is None else linear.float())
        if config.rsmooth_kind != "dense":
            raise ValueError(f"rsmooth_kind must be dense|local, got {config.rsmooth_kind!r}")
        return BilateralSmoothness.build(
            srgb.float(),
            valid,
            linear=None if linear is None else linear.float(),
            sigma_xy=config.sigma_xy,
            sigma_intensity=config.sigma_intensity,
            sigma_chroma=config.sigma_chroma,
            iterations=config.bistochastic_iterations,
            tolerance=config.bistochastic_tolerance,
        )


def intrinsic_loss(
    srgb: torch.Tensor,
    mask: torch.Tensor,
    log_r: torch.Tensor,
    log_s: torch.Tensor,
    log_c: torch.Tensor,
    shading_weights: Sequence[torch.Tensor],
    config: LossConfig,
    *,
    lattice=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total BigTime energy of one sequence and its unweighted terms (see module docstring for shapes).

    `lattice`: an already built `BilateralSmoothness` for this srgb/mask (optional; otherwise built here,
    once). Runs in float32 with autocast disabled whatever the caller's autocast state.
    """
    m = srgb.shape[0]
    if srgb.dim() != 4 or srgb.shape[1] != 3:
        raise ValueError(f"srgb must be (m,3,H,W), got {tuple(srgb.shape)}")
    expect = {"mask": (mask, (m, 1)), "log_r": (log_r, (m, 3)), "log_s": (log_s, (m, 1))}
    for name, (t, lead) in expect.items():
        if tuple(t.shape) != lead + tuple(srgb.shape[2:]):
            raise ValueError(f"{name} must be {lead + tuple(srgb.shape[2:])}, got {tuple(t.shape)}")
    if tuple(log_c.shape) != (m, 3):
        raise ValueError(f"log_c must be ({m}, 3), got {tuple(log_c.shape)}")

    with torch.autocast(device_type=srgb.device.type, enabled=False):
        srgb32 = srgb.detach().float()
        mask32 = mask.detach().float()
        log_r, log_s, log_c = log_r.float(), log_s.float(), log_c.float()
        terms: dict[str, torch.Tensor] = {}
        linear = srgb_to_linear(srgb32.clamp(0.0, 1.0))
        if lattice is None and config.w_rsmooth != 0:  # first: its temporaries are freed before the terms'
            lattice = build_lattice(srgb32, mask32, config, linear=linear)
        pairs = same_frame_terms if config.reconstruct_pairs == "same_frame" else data_terms
        terms["reconstruct"], terms["consistency"] = pairs(linear, mask32, log_r, log_s, log_c, config)
        if lattice is not None:
            terms["rsmooth"] = lattice.energy(log_r).float()
            if config.rsmooth_normaliser == "all":  # the authors' Z: all m*H*W pixels, not the lattice's N
                terms["rsmooth"] = terms["rsmooth"] * (lattice.num_pixels / mask32[:, 0].numel())
        else:
            terms["rsmooth"] = log_r.new_zeros(())
        terms["ssmooth"] = shading_smoothness_loss(
            log_s, mask32, shading_weights, config.ssmooth_robust_scale, config.ssmooth_robust_by_weight
        )
        terms["shading_l1"] = log_s.abs().mean()
        total = (
            config.w_reconstruct * terms["reconstruct"]
            + config.w_consistency * terms["consistency"]
            + config.w_rsmooth * terms["rsmooth"]
            + config.w_ssmooth * terms["ssmooth"]
            + config.w_shading_l1 * terms["shading_l1"]
        )
    return total, terms
