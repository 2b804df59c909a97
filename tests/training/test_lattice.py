"""Tests of training/lattice.py: the permutohedral bilateral reflectance smoothness against a dense Gaussian
reference (small sequences, float64), its algebra (symmetry, bistochasticity, gradient, null space), the
spatio-temporal sharing of one lattice by all frames, masking, dtypes and autocast."""
from __future__ import annotations

import math

import pytest
import torch

import training.lattice as lattice_mod
from pipeline.color import srgb_to_linear
from training.lattice import BilateralSmoothness, bilateral_features, build_lattice

F64 = torch.float64


def smooth_sequence(m, h, w, *, amplitude=0.3, noise=0.005, seed=0, dtype=F64):
    """m smooth random sRGB frames (bilinear upsampling of a 3x4 grid) around grey, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(m, 3, 3, 4, dtype=F64, generator=g)
    img = torch.nn.functional.interpolate(low, (h, w), mode="bilinear", align_corners=True)
    img = 0.5 + amplitude * (img - 0.5) + noise * torch.rand(m, 3, h, w, dtype=F64, generator=g)
    return img.clamp(0, 1).to(dtype)


def materialise(op: BilateralSmoothness, chunk: int = 256) -> torch.Tensor:
    """Dense (N, N) matrix of N A N (pixel order) by applying it to identity columns."""
    n = op.num_pixels
    eye = torch.eye(n, dtype=op.n.dtype)
    return torch.cat([op.apply(eye[:, i : i + chunk]) for i in range(0, n, chunk)], 1)


def dense_bistochastic(features: torch.Tensor, sigma: float = 1.0, iterations: int = 400) -> torch.Tensor:
    """Reference: K = exp(-|f_p - f_q|^2 / (2 sigma^2)) made bistochastic by the same fixed point."""
    k = torch.exp(-0.5 * torch.cdist(features, features).square() / sigma**2)
    n = torch.ones(k.shape[0], dtype=k.dtype)
    for _ in range(iterations):
        n = torch.sqrt(n / (k @ n))
    return n[:, None] * k * n[None, :]


def quadratic_energy(p: torch.Tensor, log_r: torch.Tensor) -> torch.Tensor:
    """sum_c r_c^T (I - P) r_c / (C N) with r in (frame, row, column) pixel order."""
    r = log_r.permute(0, 2, 3, 1).reshape(-1, log_r.shape[1])
    return ((r * r).sum() - (r * (p @ r)).sum()) / r.numel()


# --------------------------------------------------------------------------------------------- features
def test_features_follow_the_definition():
    srgb = smooth_sequence(2, 5, 7, amplitude=0.9, noise=0.1)
    f = bilateral_features(srgb, sigma_xy=0.2, sigma_intensity=0.3, sigma_chroma=0.05)
    assert f.shape == (2 * 5 * 7, 5) and f.dtype == F64
    lin = srgb_to_linear(srgb).clamp_min(1e-4)
    frame, y, x = 1, 3, 6
    p = lin[frame, :, y, x]
    row = f[frame * 35 + y * 7 + x]
    diag = math.hypot(5, 7)
    expected = [x / (0.2 * diag), y / (0.2 * diag), p.mean() / 0.3, p[0] / p.sum() / 0.05, p[1] / p.sum() / 0.05]
    torch.testing.assert_close(row, torch.tensor(expected, dtype=F64))
    # time is not a feature: the same pixel of two identical frames has identical features
    same = bilateral_features(torch.cat([srgb[:1], srgb[:1]]))
    torch.testing.assert_close(same[:35], same[35:])
    assert bilateral_features(srgb.float()).dtype == torch.float32


def test_elevation_is_kraehenbuehls_embedding():
    """_elevate equals the explicit (d, d+1) embedding matrix of Kraehenbuehl's permutohedral.cpp (float64),
    lands on the hyperplane sum = 0, and does not depend on the memory layout of the features."""
    d = 5
    feats = torch.randn(50, d, dtype=F64, generator=torch.Generator().manual_seed(15))
    scale = [math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    embed = torch.zeros(d, d + 1, dtype=F64)
    for i in range(d):
        for j in range(d + 1):
            embed[i, j] = scale[i] * ((1.0 if i >= j else 0.0) - (j if i == j - 1 else 0.0))
    want = (feats @ embed).t()
    torch.testing.assert_close(lattice_mod._elevate(feats), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lattice_mod._elevate(feats.t().contiguous().t()), want, rtol=1e-12, atol=1e-12)
    assert float(want.sum(0).abs().max()) < 1e-12


# --------------------------------------------------------------------------------------------- vs dense
def test_matches_dense_gaussian_affinity():
    """Bistochastic lattice operator vs the bistochastic dense Gaussian exp(-|f_p - f_q|^2 / 2).

    The permutohedral lattice approximates the Gaussian by splatting to a lattice of spacing ~sigma and a
    separable [1/2, 1, 1/2] blur: a known ~10-20% Frobenius error on the filter (Adams et al. 2010 report
    similar), but it must fit the Gaussian of unit scale (the Kraehenbuehl scaling) clearly better than a
    0.7x / 1.4x one, and the smoothness energies of realistic log-reflectances agree within 10% (measured:
    5%, and 0-7% over other smooth sequences).
    Regime: sigma_xy * diag = 4 pixels, as at training resolution (46 pixels there), default sigmas.
    """
    srgb = smooth_sequence(3, 24, 32, amplitude=0.3, seed=1)
    op = BilateralSmoothness.build(srgb, iterations=300, tolerance=1e-10)
    p = materialise(op)
    feats = bilateral_features(srgb)
    errors = {}
    for sigma in (0.7, 1.0, 1.4):
        dense = dense_bistochastic(feats, sigma)
        errors[sigma] = float((p - dense).norm() / dense.norm())
    assert errors[1.0] < 0.2, errors
    assert errors[1.0] < 0.75 * min(errors[0.7], errors[1.4]), errors

    dense = dense_bistochastic(feats, 1.0)
    g = torch.Generator().manual_seed(2)
    for log_r in (
        torch.log(srgb_to_linear(srgb).clamp_min(1e-3)),  # "reflectance = image"
        torch.log(srgb_to_linear(srgb).clamp_min(1e-3)) + 0.1 * torch.randn(srgb.shape, dtype=F64, generator=g),
    ):
        e_lattice = float(op.energy(log_r))
        e_dense = float(quadratic_energy(dense, log_r))
        assert e_dense > 0
        assert abs(e_lattice - e_dense) < 0.10 * e_dense, (e_lattice, e_dense)


# --------------------------------------------------------------------------------------------- algebra
@pytest.fixture(scope="module")
def small_op():
    srgb = smooth_sequence(3, 6, 8, amplitude=0.8, noise=0.03, seed=3)
    return srgb, BilateralSmoothness.build(srgb, iterations=200, tolerance=1e-9)


def test_filter_is_symmetric(small_op):
    _, op = small_op
    lat = op.lattice
    a = lat.filter(torch.eye(lat.num_points, dtype=F64))  # row i = A e_i, A in lattice order
    assert float((a - a.t()).abs().max()) < 1e-6 * float(a.abs().max())
    p = materialise(op)
    assert float((p - p.t()).abs().max()) < 1e-6
    # I - N A N is positive semi-definite (up to the lattice's rounding)
    assert float(torch.linalg.eigvalsh(torch.eye(p.shape[0], dtype=F64) - p).min()) > -1e-6


def test_bistochastic_rows_sum_to_one(small_op):
    _, op = small_op
    rows = materialise(op).sum(1)
    assert float((rows - 1).abs().max()) < 1e-3
    # default parameters (10 iterations, tolerance 1e-3) on a webcam-like sequence: close too
    srgb = smooth_sequence(4, 24, 32, amplitude=0.6, noise=0.02, seed=4, dtype=torch.float32)
    op32 = BilateralSmoothness.build(srgb)
    ones = torch.ones(op32.num_pixels, 1)
    assert op32.iterations_run < 10  # converged: the row sums are then within the tolerance
    assert float((op32.apply(ones) - 1).abs().max()) < 1e-3


def test_gradient_is_twice_residual(small_op):
    srgb, op = small_op
    g = torch.Generator().manual_seed(5)
    log_r = (torch.log(srgb_to_linear(srgb)) + 0.2 * torch.randn(srgb.shape, dtype=F64, generator=g)).requires_grad_()
    energy = op.energy(log_r)
    energy.backward()
    p = materialise(op)
    r = log_r.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    expected = 2.0 * (r - p @ r) / r.numel()
    got = log_r.grad.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(energy.detach(), quadratic_energy(p, log_r.detach()), rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: op.energy(x), (log_r.detach().clone().requires_grad_(),))


def test_apply_and_its_gradient(small_op):
    _, op = small_op
    g = torch.Generator().manual_seed(6)
    v = torch.randn(op.num_pixels, 2, dtype=F64, generator=g).requires_grad_()
    w = torch.randn(op.num_pixels, 2, dtype=F64, generator=g)
    out = op.apply(v)
    p = materialise(op)
    torch.testing.assert_close(out, p @ v.detach())
    (out * w).sum().backward()
    torch.testing.assert_close(v.grad, p.t() @ w)


def test_constant_reflectance_has_zero_energy(small_op):
    srgb, op = small_op
    for value in (0.0, -1.3, 2.0):
        const = torch.full(srgb.shape, value, dtype=F64)
        assert abs(float(op.energy(const))) <= 1e-3 * max(value**2, 1e-12)
    # and a non-constant one does not
    assert float(op.energy(torch.log(srgb_to_linear(srgb)))) > 1e-4


def test_reflectance_edges_cost_more_across_than_along_image_edges():
    """Two flat colour regions: a log-reflectance step at the image edge is cheap, a step elsewhere is not."""
    m, h, w = 2, 16, 24
    srgb = torch.full((m, 3, h, w), 0.3, dtype=F64)
    srgb[:, :, :, w // 2 :] = torch.tensor([0.7, 0.4, 0.2], dtype=F64).view(1, 3, 1, 1)
    op = BilateralSmoothness.build(srgb, iterations=100, tolerance=1e-8)
    along = torch.zeros(m, 3, h, w, dtype=F64)
    along[..., w // 2 :] = 1.0
    across = torch.zeros(m, 3, h, w, dtype=F64)
    across[..., : h // 2, :] = 1.0
    assert float(op.energy(along)) < 0.05 * float(op.energy(across))


# --------------------------------------------------------------------------------------------- lattice
def test_frames_share_one_lattice():
    one = smooth_sequence(1, 12, 16, seed=7)
    op1 = BilateralSmoothness.build(one)
    op4 = BilateralSmoothness.build(one.expand(4, -1, -1, -1).contiguous())
    # identical frames land on identical lattice vertices: the lattice does not grow with time
    assert op4.lattice.num_vertices == op1.lattice.num_vertices
    # a pixel is smoothed with the same place in another frame (temporal neighbours) when its colour is
    # similar there (here: the frame 5% brighter), not when it changed (an independent random frame)
    first = smooth_sequence(1, 12, 16, seed=8)
    two = torch.cat([first, 1.05 * first])
    op = BilateralSmoothness.build(two, iterations=50, tolerance=1e-6)
    delta = torch.zeros(op.num_pixels, 1, dtype=F64)
    y, x = 6, 8
    delta[y * 16 + x] = 1.0
    response = op.apply(delta)[:, 0].view(2, 12, 16)
    assert float(response[1, y, x]) > 0.2 * float(response[0, y, x]) > 0
    other = torch.cat([first, smooth_sequence(1, 12, 16, amplitude=0.9, seed=18)])
    op = BilateralSmoothness.build(other, iterations=50, tolerance=1e-6)
    response = op.apply(delta)[:, 0].view(2, 12, 16)
    assert float(response[1, y, x]) < 0.01 * float(response[0, y, x])


def test_lattice_size_grows_linearly():
    g = torch.Generator().manual_seed(9)
    sizes = {}
    for n in (2000, 4000, 8000):
        feats = 6.0 * torch.rand(n, 5, dtype=F64, generator=g)  # well spread: ~every point adds vertices
        lat = build_lattice(feats)
        assert lat.num_points == n and lat.weights.shape == (n, 6)
        assert lat.num_vertices <= 6 * n and lat.num_simplices <= n
        sizes[n] = lat.num_vertices
    assert sizes[4000] / sizes[2000] < 2.2 and sizes[8000] / sizes[4000] < 2.2
    # barycentric weights: a partition of unity, non-negative
    feats = 3.0 * torch.rand(500, 5, dtype=F64, generator=g)
    lat = build_lattice(feats)
    torch.testing.assert_close(lat.weights.sum(1), torch.ones(500, dtype=F64))
    assert float(lat.weights.min()) >= -1e-12


def test_hashing_paths_give_the_same_lattice(monkeypatch):
    srgb = smooth_sequence(2, 6, 8, amplitude=0.8, noise=0.05, seed=10)
    fast = BilateralSmoothness.build(srgb, iterations=50, tolerance=1e-9)  # direct-address vertex table
    monkeypatch.setattr(lattice_mod, "DENSE_TABLE_KEYS", 0.0)  # sort + searchsorted vertex hashing
    sorted_path = BilateralSmoothness.build(srgb, iterations=50, tolerance=1e-9)
    assert torch.equal(sorted_path.lattice.vertex_coords, fast.lattice.vertex_coords)
    assert torch.equal(sorted_path.lattice.neighbours, fast.lattice.neighbours)
    torch.testing.assert_close(materialise(sorted_path), materialise(fast))
    monkeypatch.setattr(lattice_mod, "MAX_PACKED_KEY", 0.0)  # forces the row-wise unique paths
    slow = BilateralSmoothness.build(srgb, iterations=50, tolerance=1e-9)
    assert slow.lattice.num_vertices == fast.lattice.num_vertices
    same_set = torch.unique(torch.cat([slow.lattice.vertex_coords, fast.lattice.vertex_coords]), dim=0)
    assert same_set.shape[0] == slow.lattice.num_vertices
    torch.testing.assert_close(materialise(slow), materialise(fast))



def test_neighbour_table_steps_by_the_lattice_directions():
    """Every neighbour entry is the vertex at coords -/+ off_j, and every missing one is absent from the
    lattice (checked against a dictionary of coordinates), with vertices at the edges of the feature range."""
    feats = 3.0 * torch.randn(400, 5, generator=torch.Generator().manual_seed(12), dtype=F64)
    lat = build_lattice(feats)
    coords = [tuple(c) for c in lat.vertex_coords.tolist()]
    index = {c: i for i, c in enumerate(coords)}
    assert len(index) == lat.num_vertices
    d = lat.d
    offsets = [[d if k == j else -1 for k in range(d)] for j in range(d + 1)]
    for j, off in enumerate(offsets):
        for side, sign in ((0, -1), (1, 1)):
            expected = [index.get(tuple(c + sign * o for c, o in zip(v, off)), lat.num_vertices) for v in coords]
            assert lat.neighbours[j, side, :-1].tolist() == expected
    assert int(lat.neighbours[:, :, -1].min()) == lat.num_vertices  # the padding vertex has no neighbours
    assert (lat.neighbours[:, :, :-1] < lat.num_vertices).float().mean() > 0.1  # the test sees real neighbours

# --------------------------------------------------------------------------------------------- masks, dtypes
def test_valid_mask_drops_pixels():
    srgb = smooth_sequence(3, 6, 8, seed=11)
    valid = torch.zeros(3, 1, 6, 8, dtype=torch.bool)
    valid[0] = True
    masked = BilateralSmoothness.build(srgb, valid, iterations=100, tolerance=1e-10)
    first = BilateralSmoothness.build(srgb[:1], iterations=100, tolerance=1e-10)
    assert masked.num_pixels == 48
    g = torch.Generator().manual_seed(12)
    log_r = torch.randn(3, 3, 6, 8, dtype=F64, generator=g).requires_grad_()
    e = masked.energy(log_r)
    torch.testing.assert_close(e, first.energy(log_r[:1]))
    e.backward()
    assert float(log_r.grad[1:].abs().max()) == 0.0 and float(log_r.grad[0].abs().max()) > 0
    # float {0,1} masks behave like bool ones
    assert BilateralSmoothness.build(srgb, valid.float()).num_pixels == 48
    with pytest.raises(ValueError):
        BilateralSmoothness.build(srgb, torch.zeros(3, 1, 6, 8, dtype=torch.bool))


def test_float32_matches_float64_and_autocast_is_disabled():
    srgb = smooth_sequence(2, 16, 24, seed=13)
    g = torch.Generator().manual_seed(14)
    log_r = torch.log(srgb_to_linear(srgb)) + 0.1 * torch.randn(srgb.shape, dtype=F64, generator=g)
    op64 = BilateralSmoothness.build(srgb, iterations=30, tolerance=1e-6)
    op32 = BilateralSmoothness.build(srgb.float(), iterations=30, tolerance=1e-6)
    assert op64.n.dtype == F64 and op32.n.dtype == torch.float32
    e64, e32 = float(op64.energy(log_r)), float(op32.energy(log_r.float()))
    assert abs(e32 - e64) < 1e-3 * e64
    # float64 log_r on a float32 lattice is computed in float32
    assert op32.energy(log_r).dtype == torch.float32
    x = log_r.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        op_ac = BilateralSmoothness.build(srgb.float(), iterations=30, tolerance=1e-6)
        e_ac = op_ac.energy(x)
    assert e_ac.dtype == torch.float32 and torch.isfinite(e_ac)
    assert abs(float(e_ac.detach()) - e32) < 1e-5 * e32
    e_ac.backward()
    assert torch.isfinite(x.grad).all()


def test_sorting_network_sorts_every_permutation_with_ties():
    """The row-wise compare-exchange networks (optimal for 6 rows, odd-even otherwise) against torch.sort."""
    import itertools

    from training.lattice import _sort_rows_ascending

    for n in (3, 4, 6, 7):
        values = [0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0][:n]  # one tie
        perms = list(itertools.permutations(range(n)))
        cols = torch.tensor([[values[p[i]] for p in perms] for i in range(n)])
        got = torch.stack(_sort_rows_ascending(list(cols.unbind(0))))
        assert torch.equal(got, cols.sort(0).values), n


def test_pickled_operator_is_the_same_and_sends_no_sparse_tensor():
    """Loader workers send built operators to the trainer: a pickle round trip keeps N A N (the cached CSR
    slice matrix stays behind and is rebuilt on first use)."""
    import pickle

    srgb = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    op = BilateralSmoothness.build(srgb)
    assert op.lattice._csr is not None  # built by the bistochastic iterations
    copy = pickle.loads(pickle.dumps(op))
    assert copy.lattice._csr is None
    values = torch.rand(op.num_pixels, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(copy.apply(values), op.apply(values), rtol=0, atol=0)
    torch.testing.assert_close(copy.apply(values[:, :1]), op.apply(values[:, :1]), rtol=0, atol=0)  # CSR path
    torch.testing.assert_close(copy.scaling(), op.scaling(), rtol=0, atol=0)


def test_both_vertex_sums_agree():
    """The splat's per-vertex sum: weighted bincount (CPU) and the grouped embedding_bag (CUDA) agree."""
    lat = build_lattice(2.0 * torch.randn(300, 5, generator=torch.Generator().manual_seed(13), dtype=F64))
    values = torch.randn(lat.simplex_vertex.numel(), dtype=F64, generator=torch.Generator().manual_seed(14))
    want = torch.zeros(lat.num_vertices + 1, dtype=F64).index_add_(0, lat.simplex_vertex.reshape(-1).long(), values)
    torch.testing.assert_close(lat._sum_entries_per_vertex(values), want)
    torch.testing.assert_close(lat._sum_entries_grouped(values), want)
    assert float(want[-1]) == 0.0  # nothing lands on the padding vertex
