"""All-Pairs Weighted Least Squares (APWLS, BigTime Sec. 5, Eq. 14-15) in O(m n) instead of O(m^2 n).

    APWLS(P, X, Q, Y) = sum_i sum_j sum_{c,p} P_i[c,p]^2 Q_j[c,p]^2 (X_i[c,p] - Y_j[c,p])^2

with P, X: (m, C_P, H, W) / (m, C, H, W) and Q, Y: (n, C_Q, H, W) / (n, C, H, W), i over the m frames on the
X side, j over the n frames on the Y side, p over the H*W pixels, c over channels. P and Q broadcast over
channels (C_P, C_Q in {1, C}). Units are whatever X and Y are in (here: natural logs of linear values).
Expanding the square, with per-pixel sums over frames
    A_k = sum_i P_i^2 X_i^k,   B_k = sum_j Q_j^2 Y_j^k   (k = 0, 1, 2),
gives APWLS = sum_{c,p} (B_0 A_2 - 2 A_1 B_1 + A_0 B_2): three frame reductions per side, O((m + n) C H W).

Numerics: the expansion cancels catastrophically when |X|, |Y| are large compared with X - Y. Because the
value is invariant to subtracting the same per-pixel shift from X and Y, both are centred by a per-(c, p)
shift (the Q^2-weighted mean of Y, detached: the exact gradient through it is zero) before expanding.
The sum is returned unnormalised; callers (training/loss.py) divide by their pair counts.
"""
from __future__ import annotations

from typing import Optional

import torch


def _check(weights: torch.Tensor, values: torch.Tensor, name: str) -> None:
    if weights.dim() != 4 or values.dim() != 4:
        raise ValueError(f"{name}: expected 4-D (frames, C, H, W) tensors, got {tuple(weights.shape)}, {tuple(values.shape)}")
    if weights.shape[0] != values.shape[0] or weights.shape[2:] != values.shape[2:]:
        raise ValueError(f"{name}: weight {tuple(weights.shape)} and value {tuple(values.shape)} disagree")
    if weights.shape[1] not in (1, values.shape[1]):
        raise ValueError(f"{name}: weight channels {weights.shape[1]} must be 1 or {values.shape[1]}")


def _check_sides(P: torch.Tensor, X: torch.Tensor, Q: torch.Tensor, Y: torch.Tensor) -> None:
    _check(P, X, "P/X")
    _check(Q, Y, "Q/Y")
    if X.shape[1:] != Y.shape[1:]:
        raise ValueError(f"X {tuple(X.shape)} and Y {tuple(Y.shape)} must agree in (C, H, W)")


def _centring_shift(q2: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The Q^2-weighted frame mean of Y, (C, H, W): subtracting it from X and Y leaves APWLS unchanged."""
    b0 = q2.sum(0)
    return (q2 * Y).sum(0) / b0.clamp_min(torch.finfo(b0.dtype).tiny)


def _centred_moments(w2: torch.Tensor, v: torch.Tensor, shift: Optional[torch.Tensor]):
    """(c = v - shift, sum_i w2_i, sum_i w2_i c_i, sum_i w2_i c_i^2), each sum (C, H, W) or (C_w, H, W), with one
    full-size temporary (shift None: c = v). Autograd-safe: the in-place step is on w2 c, which no backward reads."""
    centred = v if shift is None else v - shift
    w2v = w2 * centred
    first = w2v.sum(0)
    return centred, w2.sum(0), first, w2v.mul_(centred).sum(0)


class _APWLS(torch.autograd.Function):
    """(APWLS(P, X, Q, Y), APWLS(Q, Y, Q, Y)) with analytic gradients for X and Y (P, Q constant).

    The self term reuses the Y-side moments: APWLS(Q, Y, Q, Y) = sum 2 (B_0 B_2 - B_1^2). Gradients
    (X, Y centred; the shift drops out because the values do not depend on it):
    dL/dX_i = 2 g P_i^2 (B_0 X_i - B_1),
    dL/dY_j = 2 Q_j^2 [(g A_0 + 2 g_self B_0) Y_j - (g A_1 + 2 g_self B_1)]   (g, g_self: output grads).
    Full-size temporaries are reused in place (this runs once per training step on m x 3 x H x W values).
    """

    @staticmethod
    def forward(ctx, p2, X, q2, Y, center: bool):
        shift = _centring_shift(q2, Y) if center else None
        X, a0, a1, a2 = _centred_moments(p2, X, shift)
        Y, b0, b1, b2 = _centred_moments(q2, Y, shift)
        ctx.save_for_backward(p2, X, q2, Y, a0, a1, b0, b1)
        pair = (b0 * a2 - 2.0 * a1 * b1 + a0 * b2).sum()
        self_pairs = 2.0 * (b0 * b2 - b1 * b1).sum()
        return pair, self_pairs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pair, grad_self):
        p2, X, q2, Y, a0, a1, b0, b1 = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[1]:
            gx = torch.mul(X, b0).sub_(b1).mul_(p2).mul_(2.0 * grad_pair)
        if ctx.needs_input_grad[3]:
            slope = grad_pair * a0 + (2.0 * grad_self) * b0  # per-pixel factors first
            offset = grad_pair * a1 + (2.0 * grad_self) * b1
            gy = torch.mul(Y, slope).sub_(offset).mul_(q2).mul_(2.0)
        return None, gx, None, gy, None


def apwls(P: torch.Tensor, X: torch.Tensor, Q: torch.Tensor, Y: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """sum_i sum_j ||P_i * Q_j * (X_i - Y_j)||^2 (elementwise products, squared Frobenius norm) as a scalar.

    Differentiable in all four arguments; when P and Q need no gradient (the loss's case) a custom autograd
    function with the closed-form gradients for X and Y is used.
    """
    _check_sides(P, X, Q, Y)
    p2 = P * P
    q2 = Q * Q
    if not (P.requires_grad or Q.requires_grad):
        return _APWLS.apply(p2, X, q2, Y, center)[0]
    with torch.no_grad():
        shift = _centring_shift(q2, Y) if center else None
    _, a0, a1, a2 = _centred_moments(p2, X, shift)
    _, b0, b1, b2 = _centred_moments(q2, Y, shift)
    return (b0 * a2 - 2.0 * a1 * b1 + a0 * b2).sum()


def apwls_with_self_pairs(P: torch.Tensor, X: torch.Tensor, Q: torch.Tensor, Y: torch.Tensor):
    """(apwls(P, X, Q, Y), apwls(Q, Y, Q, Y)) in one pass over Y (both centred); P, Q must need no gradient.

    The loss's reconstruction (P = L M, X = log I - log S - c, Q = M, Y = log R) and consistency (P = Q = M,
    X = Y = log R) terms share Q and Y, so the consistency numerator costs nothing extra.
    """
    _check_sides(P, X, Q, Y)
    if P.requires_grad or Q.requires_grad:
        raise ValueError("apwls_with_self_pairs: P and Q are constants (use apwls for gradients in them)")
    return _APWLS.apply(P * P, X, Q * Q, Y, True)


def apwls_naive(P: torch.Tensor, X: torch.Tensor, Q: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Reference O(m n) pairs x pixels evaluation (explicit frame pairs; for benchmarks and checks)."""
    total = X.new_zeros(())
    for i in range(X.shape[0]):
        diff = X[i : i + 1] - Y  # (n, C, H, W)
        total = total + ((P[i : i + 1] * Q * diff) ** 2).sum()
    return total
