"""Dense spatio-temporal bilateral reflectance smoothness (BigTime, Li & Snavely 2018, Eq. 7-9), pure PyTorch.

Consumes
    srgb   (m, 3, H, W) float in [0, 1]: the m frames of ONE sequence, gamma-encoded sRGB.
    valid  (m, 1, H, W) bool/{0,1} or None: pixels that take part (None = all pixels).
    log_r  (m, 3, H, W): predicted log reflectance (natural log of linear reflectance).
Produces
    `BilateralSmoothness.energy(log_r)` -> scalar
        L_rsmooth = 1/(C*N) * sum_c r_c^T (I - N A N) r_c,   C = 3 channels, N = number of lattice pixels,
    i.e. the authors' normalisation (their `(p'p - p'Ap) / Z` with Z = channels * pixels). The loss owner
    multiplies by `w_rsmooth`. Gradient: dL/dr = 2 (I - N A N) r / (C*N), flowing to log_r only.
    `BilateralSmoothness.apply(values (N, c))` -> (N, c) = N A N v on the lattice pixels (pixel order below).

Pixels / ordering. The N lattice pixels are the valid pixels of all m frames in (frame, row, column) order
(`BilateralSmoothness.pixel_index` gives their flat indices into m*H*W). Invalid pixels are dropped from the
lattice: they neither smooth nor are smoothed and get zero gradient (the paper's masks exclude saturated /
dynamic / sky pixels; the authors' code included every pixel -> pass valid=None for that; LossParams
`rsmooth_masked_pixels: true` means exactly that and is how training/loss.py chooses).

Features (`bilateral_features`), one 5-vector per pixel, all frames sharing ONE lattice (time is not a
feature, so the same place in different frames are neighbours — that is what makes it spatio-temporal):
    f_p = [ x / (s_xy * diag), y / (s_xy * diag), I / s_I, r/(r+g+b) / s_c, g/(r+g+b) / s_c ]
with x, y in pixels, diag = sqrt(H^2 + W^2), and, following the authors' code (image_util.rgb_to_irg applied
to the linearised image), rgb = LINEAR rgb (pipeline.color.srgb_to_linear, clamped at 1e-4 like the authors),
I = mean(r, g, b) of linear rgb and the chromaticities also from linear rgb. Defaults s_xy = 0.1,
s_I = 0.12, s_c = 0.025 (the paper's / authors' theta_p, theta_l, theta_c).

Maths. The affinity A_pq ~ exp(-1/2 ||f_p - f_q||^2) is applied with a permutohedral lattice (Adams, Baek,
Davis 2010; the scaling of Kraehenbuehl's densecrf permutohedral.cpp that the authors used):
    A = S^T Bbar S,   Bbar = 1/2 (B_0 B_1 ... B_d + B_d ... B_0),  d = 5,
S (V x N) splats each pixel onto the d+1 vertices of its enclosing simplex with barycentric weights, B_j blurs
with [1/2, 1, 1/2] along lattice direction j (absent neighbours count as 0). Each B_j is symmetric, so Bbar and
A are symmetric. The lattice's kernel fits the unit Gaussian best (vs 0.7x / 1.4x widths) with ~10-20%
Frobenius error after normalisation and smoothness energies within ~10% (tests/training/test_lattice.py);
any global scale of A cancels in the normalisation below.
Bistochastic normalisation (as in the authors' code / Barron & Poole's bilateral solver): n (N,) > 0 with
N A N 1 = 1 (N = diag(n)): the authors' fixed point n <- sqrt(n / (A n)) from n = 1, over-relaxed after the
first step (see `bistochastic_scaling`; same fixed point, ~7 instead of ~10 updates), at most `iterations`
updates, stopping once the row sums of N A N are within `tolerance` of 1. Hence r = const has zero energy
(up to the tolerance); I - N A N was PSD in every test (smallest eigenvalue > -1e-6), so the energy is >= 0.

Implementation: all vectorised torch ops (sort / direct-address hashing, embedding_bag, index_select),
no Python loop over pixels, no C++ extension; runs on CPU and CUDA.
 - Elevation, rounding, rank (d(d+1)/2 contiguous comparisons, int8) on (d+1, N) rows; barycentric weights
   from the elevated differentials sorted across the d+1 rows by a sorting network (no int64 scatter).
 - Each pixel's simplex (rounded remainder-0 point + rank) is packed into one exact int (int32 when it fits)
   and de-duplicated with ONE sort of N keys; pixels are kept in that order, so each simplex's pixels are a
   contiguous range.
 - The (d+1) vertex keys of the S << N simplices are packed as (remainder mod d+1, quotients) with a margin,
   de-duplicated by a direct-address table (or a sort), and neighbour tables come from looking up the
   stepped keys (vectorised over vertices, d+1 directions x 2 sides).
 - Splat = embedding_bag over each simplex's pixel range (weights rows x values), then a sum of the
   (simplex, slot) entries per vertex (weighted bincount on CPU; on CUDA an embedding_bag over the entries
   grouped by vertex, which keeps the float additions in a fixed order);
   slice = embedding_bag of the d+1 vertex values per pixel with the barycentric weights (fused gathers).
 - energy(): E = (r.r - u^T B_0..B_d u) / (C N) with u = S N r (u^T Bbar u = u^T B_0..B_d u since the B_j are
   symmetric), a custom autograd Function whose backward is 2 (r - N S^T Bbar u) / (C N) (one slice).
Everything runs in float32 (float64 if srgb is float64) with autocast disabled, so bf16/fp16 autocast cannot
reach it, and the build uses no matmul, so TF32 / bf16 matmul modes (allow_tf32, set_float32_matmul_precision)
cannot either; the lattice is built under no_grad. Cost at m = 8, 256x384 (N = 786k): see bench/lattice.py.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from pipeline.color import srgb_to_linear

FEATURE_DIM = 5
LINEAR_FLOOR = 1e-4  # the authors clamp linear rgb at 1e-4 before taking chromaticity
MAX_PACKED_KEY = 2.0**62  # larger key spaces use row-wise torch.unique (slow; only for extreme sigmas)
DENSE_TABLE_KEYS = 2.0**20  # vertex keys de-duplicated by a direct-address table up to max(this, 8 x keys)


# --------------------------------------------------------------------------------------------- features
def bilateral_features(
    srgb: torch.Tensor,
    *,
    sigma_xy: float = 0.1,
    sigma_intensity: float = 0.12,
    sigma_chroma: float = 0.025,
    linear: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(m,3,H,W) sRGB in [0,1] -> (m*H*W, 5) features [x, y, I, r/s, g/s] / sigmas (float32, or float64 input).

    The result is the transposed view of a contiguous (5, m*H*W) tensor (build_lattice works on feature rows).

    Row order is (frame, row, column). x, y in pixels divided by sigma_xy * sqrt(H^2+W^2); I = mean of linear
    rgb; chromaticity r/(r+g+b), g/(r+g+b) of linear rgb (linear clamped at 1e-4, as the authors).
    `linear`: srgb_to_linear(srgb.clamp(0, 1)) if the caller already has it (then srgb is not converted).
    """
    if srgb.dim() != 4 or srgb.shape[1] != 3:
        raise ValueError(f"srgb must be (m,3,H,W), got {tuple(srgb.shape)}")
    dtype = torch.float64 if srgb.dtype == torch.float64 else torch.float32
    m, _, h, w = srgb.shape
    if linear is None:
        linear = srgb_to_linear(srgb.to(dtype).clamp(0.0, 1.0))
    elif linear.shape != srgb.shape:
        raise ValueError(f"linear {tuple(linear.shape)} must match srgb {tuple(srgb.shape)}")
    lin = linear.to(dtype).clamp_min(LINEAR_FLOOR)
    total = lin.sum(1)
    scale_xy = 1.0 / (sigma_xy * math.hypot(h, w))
    ys = torch.arange(h, device=srgb.device, dtype=dtype) * scale_xy
    xs = torch.arange(w, device=srgb.device, dtype=dtype) * scale_xy
    rows = torch.empty(FEATURE_DIM, m, h, w, device=srgb.device, dtype=dtype)  # one contiguous row per feature
    rows[0] = xs.view(1, 1, w)
    rows[1] = ys.view(1, h, 1)
    torch.div(total, 3.0 * sigma_intensity, out=rows[2])
    torch.div(lin[:, 0], total, out=rows[3]).div_(sigma_chroma)
    torch.div(lin[:, 1], total, out=rows[4]).div_(sigma_chroma)
    return rows.view(FEATURE_DIM, m * h * w).t()


# --------------------------------------------------------------------------------------------- hashing
def _sort_unique(keys: torch.Tensor):
    """Unique of a 1-D integer tensor via one (unstable) sort: (sorted unique keys, inverse ids).

    inverse: the unique id of each input element. torch.unique sorts stably, ~10x slower on CPU.
    """
    sorted_keys, perm = torch.sort(keys)
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    ids_sorted = torch.cumsum(first, 0) - 1
    inverse = torch.empty_like(ids_sorted)
    inverse[perm] = ids_sorted
    return sorted_keys[first], inverse


def _narrow(keys: torch.Tensor, total: float) -> torch.Tensor:
    """int32 keys when every key is < total <= 2^31 (sorting int32 is faster), else the int64 keys."""
    return keys.to(torch.int32) if total <= 2.0**31 else keys


def _point_keys(digits: torch.Tensor, radices: list[int]) -> Optional[torch.Tensor]:
    """One exact integer key per point: mixed radix of its (k, N) digits (exact non-negative integers in a
    float dtype, digit i < radices[i]). None when the key would need more than 62 bits (or one digit more
    than the float dtype holds exactly).

    The digits are combined into chunks that stay exact in the float dtype
    (< 2^24 for float32, 2^53 for float64: every partial sum is a non-negative integer below the chunk's
    radix product), then the chunks are combined in int64 (int32 when the key space fits).
    """
    exact = 2**24 if digits.dtype == torch.float32 else 2**53
    if math.prod(radices) > MAX_PACKED_KEY or max(radices) > exact:
        return None
    # Chunks of consecutive digits, each summed elementwise in the float dtype (not by a matmul: TF32 / bf16
    # matmul modes such as allow_tf32 or set_float32_matmul_precision must not touch these exact integers).
    chunks: list[list[tuple[int, float]]] = []  # per chunk: (digit index, place value within the chunk)
    chunk_radix: list[int] = []  # the radix product of each chunk
    for i, radix in enumerate(radices):
        if not chunks or chunk_radix[-1] * radix > exact:
            chunks.append([])
            chunk_radix.append(1)
        chunks[-1].append((i, float(chunk_radix[-1])))
        chunk_radix[-1] *= radix
    key, key_mult = None, 1
    for members, radix in zip(chunks, chunk_radix):
        (first, place), *rest = members
        chunk = digits[first] * place
        for i, place in rest:
            chunk.add_(digits[i], alpha=place)
        part = chunk.to(torch.int64)
        key = part if key is None else key.add_(part, alpha=key_mult)
        key_mult *= radix
    return _narrow(key, float(key_mult))


def _direction_offsets(d: int) -> list[list[int]]:
    """Offset (first d coordinates) of the lattice step +direction j: -1 everywhere, +d at j (j = d: all -1)."""
    return [[d if k == j else -1 for k in range(d)] for j in range(d + 1)]


def _present_keys(flat: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct values of integer keys in [0, total) by a direct-address table, without a sort.

    Returns (distinct keys ascending, int64; present (>= total,) bool table). The table is scanned by one
    nonzero over its 8-byte words, then over the bytes of the occupied words only (~8x less work than a
    nonzero over the bytes when, as here, the keys occupy a small fraction of the table).
    """
    words = -(-total // 8)
    present = torch.zeros(words * 8, dtype=torch.bool, device=flat.device)
    present[flat] = True
    occupied = torch.nonzero(present.view(torch.int64)).squeeze(1)
    hits = torch.nonzero(present.view(words, 8).index_select(0, occupied))
    return occupied.index_select(0, hits[:, 0]).mul_(8).add_(hits[:, 1]), present


def _vertex_table(s_rounded: torch.Tensor, s_rank: torch.Tensor):
    """Vertices of S simplices from their (d, S) rounded remainder-0 points (rem0 / (d+1)) and (d, S) ranks.

    Vertex r of a simplex (Adams et al.'s canonical simplex): key_k = (d+1) q_k + r with
    q_k = rounded_k - [rank_k > d - r] (k < d): all coordinates of a lattice point share their remainder
    r mod (d+1), so a key packs r and the quotients q_k into one int (int32 when it fits), mixed radix with
    field k spanning [min_k - 2, max_k + 1]: vertices have q_k in [min_k - 1, max_k] and a lattice step
    moves each q_k by at most 1, so a stepped key never carries between fields. A direct-address table
    (small key spaces) or one sort de-duplicates them; neighbours are looked up there / by searchsorted of
    the stepped keys. Returns (simplex_vertex (S, d+1) vertex ids (int32 for int32 keys), neighbours
    (d+1, 2, V+1) int64, coords (V, d) int64). Falls back to row-wise unique for key spaces beyond 62 bits.
    """
    d, n_simplex = s_rounded.shape
    d1 = d + 1
    dev = s_rounded.device
    lo = [int(v) for v in (s_rounded.amin(1) - 2).tolist()]
    span = [int(hi - low + 1) for hi, low in zip((s_rounded.amax(1) + 1).tolist(), lo)]
    total = d1 * math.prod(span)
    if total > MAX_PACKED_KEY:
        return _vertex_table_rows(s_rounded.to(torch.int64), s_rank.to(torch.int64))
    key_dtype = torch.int32 if total < 2**31 else torch.int64
    mult = [d1 * math.prod(span[:k]) for k in range(d)]  # key = r + sum_k (q_k - lo_k) * mult_k
    base = torch.full((n_simplex,), -sum(m * low for m, low in zip(mult, lo)), dtype=key_dtype, device=dev)
    for k in range(d):
        base.add_(s_rounded[k].to(key_dtype), alpha=mult[k])
    # Vertex r: key = base + r - sum_k mult_k [rank_k > d - r] = base + r - sum_{t >= d+1-r} at_rank[t],
    # with at_rank[t] = mult_k of the coordinate k < d of rank t (0 where coordinate d has rank t).
    at_rank = torch.zeros(d1, n_simplex, dtype=key_dtype, device=dev)
    mult_rows = torch.tensor(mult, dtype=key_dtype, device=dev).view(d, 1).expand(d, n_simplex)
    at_rank.scatter_(0, s_rank.to(torch.int64), mult_rows)
    keys = torch.empty(n_simplex, d1, dtype=key_dtype, device=dev)  # (simplex, vertex)
    keys[:, 0] = base
    for r in range(1, d1):
        torch.sub(keys[:, r - 1], at_rank[d1 - r], out=keys[:, r]).add_(1)
    flat = keys.view(-1)
    dense = total <= max(8.0 * flat.numel(), DENSE_TABLE_KEYS) and DENSE_TABLE_KEYS > 0
    if dense:  # small key space: direct-address table instead of a sort (ids in key order, as a sort gives)
        packed, present = _present_keys(flat, total)
        # only entries at present keys are ever read, so the table needs no initialisation
        table = torch.empty(present.numel(), dtype=key_dtype, device=dev)
        table[packed] = torch.arange(packed.numel(), dtype=key_dtype, device=dev)
        vinv = table.index_select(0, flat)
    else:
        sorted_keys, vinv = _sort_unique(flat)
        packed = sorted_keys.to(torch.int64)
    n_vert = packed.numel()
    rem = packed % d1
    mult_j = torch.tensor(mult + [0], dtype=torch.int64, device=dev).view(d1, 1)  # direction j's multiplier
    span_t, lo_t = (torch.tensor(v, dtype=torch.int64, device=dev).view(d, 1) for v in (span, lo))
    coords = ((packed // mult_j[:d]) % span_t + lo_t).mul_(d1).add_(rem).t().contiguous()
    # A step by +-off_j (off_j = -1 on every coordinate but +d on j; j = d: -1 everywhere) changes the
    # remainder by -+1; the quotients change only when the remainder wraps (0 <-> d) and on coordinate j.
    # All 2 (d+1) stepped keys of all vertices at once, (d+1, 2, V):
    # minus side (key - off_j): r -> r + 1; no wrap: q_j - 1; wrap (r = d): q_k + 1 for k != j
    minus = torch.where((rem == d).view(1, -1), (sum(mult) - d) - mult_j, 1 - mult_j)
    # plus side (key + off_j): r -> r - 1; no wrap: q_j + 1; wrap (r = 0): q_k - 1 for k != j
    plus = torch.where((rem == 0).view(1, -1), (d - sum(mult)) + mult_j, mult_j - 1)
    query = torch.stack([minus, plus], 1).add_(packed)
    if dense:
        found = torch.where(present[query], table[query].to(torch.int64), n_vert)
    else:
        query = query.to(sorted_keys.dtype)
        pos = torch.searchsorted(sorted_keys, query.reshape(-1)).clamp_max_(n_vert - 1).view(query.shape)
        found = torch.where(sorted_keys[pos] == query, pos, n_vert)
    neighbours = torch.cat([found, found.new_full((d1, 2, 1), n_vert)], 2)  # column V: the padding vertex
    return vinv.view(n_simplex, d1), neighbours, coords


def _vertex_table_rows(s_rounded: torch.Tensor, s_rank: torch.Tensor):
    """_vertex_table by explicit coordinates and row-wise torch.unique (slow; extreme feature ranges)."""
    d, n_simplex = s_rounded.shape
    d1 = d + 1
    dev = s_rounded.device
    r = torch.arange(d1, device=dev).view(1, d1, 1)
    keys = d1 * s_rounded.t().unsqueeze(1) + r - d1 * (s_rank.t().unsqueeze(1) > d - r).to(torch.int64)  # (S,d+1,d)
    coords, vinv = torch.unique(keys.reshape(-1, d), dim=0, return_inverse=True)
    n_vert = coords.shape[0]
    neighbours = torch.full((d1, 2, n_vert + 1), n_vert, dtype=torch.int64, device=dev)
    for j, off in enumerate(_direction_offsets(d)):
        off_t = torch.tensor(off, device=dev, dtype=torch.int64)
        for side, sign in ((0, -1), (1, 1)):
            both = torch.cat([coords, coords + sign * off_t], 0)
            _, inv = torch.unique(both, dim=0, return_inverse=True)
            lookup = torch.full((int(inv.max()) + 1,), n_vert, dtype=torch.int64, device=dev)
            lookup[inv[:n_vert]] = torch.arange(n_vert, device=dev)
            neighbours[j, side, :n_vert] = lookup[inv[n_vert:]]
    return vinv.view(n_simplex, d1), neighbours, coords


# Knuth's optimal 6-input sorting network (12 comparators, depth 5; TAOCP vol. 3, 5.3.4); d = 5 features.
_NETWORK_6 = ((0, 5), (1, 3), (2, 4), (1, 2), (3, 4), (0, 3), (2, 5), (0, 1), (2, 3), (4, 5), (1, 2), (3, 4))


def _sort_rows_ascending(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sort a list of equal-length 1-D tensors elementwise across the list (a compare-exchange network:
    the optimal one for 6 rows, odd-even transposition otherwise)."""
    rows = list(rows)
    n = len(rows)
    pairs = _NETWORK_6 if n == 6 else [(i, i + 1) for rnd in range(n) for i in range(rnd % 2, n - 1, 2)]
    for i, j in pairs:
        rows[i], rows[j] = torch.minimum(rows[i], rows[j]), torch.maximum(rows[i], rows[j])
    return rows


# --------------------------------------------------------------------------------------------- lattice
@dataclass
class PermutohedralLattice:
    """Splat / blur / slice operators of a permutohedral lattice over N points (d = features' width).

    Points are stored in simplex order: point i (in this order) is input point `order[i]`; the points of
    simplex s are the contiguous range starting at simplex_start[s] (simplex ids non-decreasing).
    weights (N, d+1) barycentric (column r: the vertex of remainder r); point_vertex (N, d+1) int32 their
    vertex ids; simplex_vertex (S, d+1) vertex ids; neighbours (d+1, 2, V+1) ids of v -/+ direction j (V =
    missing; column V is the always-zero padding vertex); vertex_coords (V, d) lattice coordinates.
    Splat and slice are fused gather-multiply-sum kernels (F.embedding_bag); blur is index_select.
    """

    order: torch.Tensor
    simplex_start: torch.Tensor
    weights: torch.Tensor
    point_vertex: torch.Tensor
    simplex_vertex: torch.Tensor
    neighbours: torch.Tensor
    vertex_coords: torch.Tensor

    def __post_init__(self):
        self._points = torch.arange(self.num_points, device=self.weights.device, dtype=self.simplex_start.dtype)
        self._csr: Optional[torch.Tensor] = None
        self._vertex_bags: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def _sum_entries_per_vertex(self, entry_values: torch.Tensor) -> torch.Tensor:
        """(S*(d+1),) values of the (simplex, slot) entries -> (V+1,) sums per vertex (padding vertex 0).

        CPU: a weighted bincount (serial, deterministic, as fast as the parallel alternative at this size).
        Elsewhere `_sum_entries_grouped`, because a weighted bincount there uses atomics (non-deterministic
        order of the float additions; refused under torch.use_deterministic_algorithms).
        """
        if entry_values.device.type != "cpu":
            return self._sum_entries_grouped(entry_values)
        return torch.bincount(self.simplex_vertex.reshape(-1), weights=entry_values, minlength=self.num_vertices + 1)

    def _sum_entries_grouped(self, entry_values: torch.Tensor) -> torch.Tensor:
        """`_sum_entries_per_vertex` as one embedding_bag over the entries grouped by vertex (grouped on first
        use by a stable sort of small ints, then cached)."""
        if self._vertex_bags is None:
            flat = self.simplex_vertex.reshape(-1)
            narrow = torch.int16 if self.num_vertices < 2**15 - 1 else torch.int32  # small ints sort fastest
            order = torch.sort(flat.to(narrow), stable=True)[1].to(flat.dtype)
            counts = torch.bincount(flat, minlength=self.num_vertices + 1)
            self._vertex_bags = (order, (torch.cumsum(counts, 0) - counts).to(flat.dtype))
        order, starts = self._vertex_bags
        return F.embedding_bag(order, entry_values.view(-1, 1), starts, mode="sum").view(-1)

    @property
    def d(self) -> int:
        return self.weights.shape[1] - 1

    @property
    def num_points(self) -> int:
        return self.weights.shape[0]

    @property
    def num_simplices(self) -> int:
        return self.simplex_vertex.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.vertex_coords.shape[0]

    @property
    def simplex_of(self) -> torch.Tensor:
        """(N,) simplex id of each ordered point."""
        counts = torch.diff(self.simplex_start, append=self.simplex_start.new_tensor([self.num_points]))
        return torch.repeat_interleave(torch.arange(self.num_simplices, device=counts.device), counts.long())

    # ---- operators on channel-first values (c, N) in lattice order / (c, V+1) on vertices
    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(c, N) ordered point values -> (c, V+1) vertex values (last column 0)."""
        rows = []
        for i in range(values.shape[0]):
            # per simplex: sum over its points of weights * value (S, d+1), then per vertex over its entries
            per_simplex = F.embedding_bag(
                self._points, self.weights, self.simplex_start, per_sample_weights=values[i].contiguous(), mode="sum"
            )
            rows.append(self._sum_entries_per_vertex(per_simplex.view(-1)))
        return torch.stack(rows)

    def slice(self, vertex_values: torch.Tensor) -> torch.Tensor:
        """(c, V+1) vertex values -> (c, N) ordered point values."""
        c = vertex_values.shape[0]
        if c == 1 and vertex_values.device.type == "cpu":  # one channel: a CSR mat-vec is ~25% faster on CPU
            return (self._slice_matrix() @ vertex_values.reshape(-1, 1)).reshape(1, -1)
        # (V+1, c) table with standard strides (for c = 1 a transposed view keeps odd strides -> slow kernel)
        table = vertex_values.reshape(-1, 1) if c == 1 else vertex_values.t().contiguous()
        return F.embedding_bag(self.point_vertex, table, per_sample_weights=self.weights, mode="sum").t()

    def __getstate__(self):
        """Pickled (e.g. from a DataLoader worker) without the cached CSR view, rebuilt on first use."""
        return {**self.__dict__, "_csr": None, "_vertex_bags": None}

    def _slice_matrix(self) -> torch.Tensor:
        """S^T as a sparse CSR (N, V+1) matrix: row p holds the weights of point p at its d+1 vertices (views)."""
        if self._csr is None:
            d1 = self.d + 1
            rows = torch.arange(0, d1 * self.num_points + 1, d1, device=self.weights.device, dtype=self.point_vertex.dtype)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore")
                self._csr = torch.sparse_csr_tensor(
                    rows, self.point_vertex.reshape(-1), self.weights.reshape(-1), size=(self.num_points, self.num_vertices + 1)
                )
        return self._csr

    def blur(self, vertex_values: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """B_0 B_1 ... B_d x (B_d applied first), or with reverse=True B_d ... B_0 x (B_0 applied first)."""
        x = vertex_values
        directions = range(self.d + 1) if reverse else range(self.d, -1, -1)
        for j in directions:
            x = x + 0.5 * (x.index_select(1, self.neighbours[j, 0]) + x.index_select(1, self.neighbours[j, 1]))
        return x

    def blur_symmetric(self, vertex_values: torch.Tensor) -> torch.Tensor:
        """Bbar x = 1/2 (B_0..B_d + B_d..B_0) x."""
        return 0.5 * (self.blur(vertex_values) + self.blur(vertex_values, reverse=True))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """A v = S^T Bbar S v for (c, N) ordered values."""
        return self.slice(self.blur_symmetric(self.splat(values)))


def _elevate(features: torch.Tensor) -> torch.Tensor:
    """(N, d) features -> (d+1, N) points on the hyperplane sum = 0 of R^{d+1}, Kraehenbuehl's scaled embedding:
    elevated_j = sum_{i >= j} s_i f_i - j s_{j-1} f_{j-1},  s_i = sqrt(2/3) (d+1) / sqrt((i+1)(i+2)).

    Elementwise on feature rows, not a matmul: TF32 / bf16 matmul modes (allow_tf32,
    set_float32_matmul_precision, mkldnn fp32_precision) would move the points off the hyperplane.
    """
    rows = features.t().contiguous()  # (d, N); already contiguous (no copy) for bilateral_features' output
    d, n_pts = rows.shape
    scale = [math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    elevated = torch.empty(d + 1, n_pts, device=rows.device, dtype=rows.dtype)
    suffix = rows[d - 1] * scale[d - 1]  # sum_{i >= j} s_i f_i, for j = d - 1 down to 0
    torch.mul(suffix, -float(d), out=elevated[d])
    for j in range(d - 1, 0, -1):
        scaled = rows[j - 1] * scale[j - 1]
        torch.add(suffix, scaled, alpha=-j, out=elevated[j])
        suffix.add_(scaled)
    elevated[0] = suffix
    return elevated


def build_lattice(features: torch.Tensor) -> PermutohedralLattice:
    """Permutohedral lattice of N points with (N, d) features (Adams et al. 2010, Kraehenbuehl's scaling)."""
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be (N, d) with N > 0, got {tuple(features.shape)}")
    n_pts, d = features.shape
    dev = features.device
    d1 = d + 1

    # Elevate onto the hyperplane sum = 0 of R^{d+1}, kept as (d+1, N) so all row ops are contiguous.
    elevated = _elevate(features)
    # Closest remainder-0 point (rem0 = rounded * (d+1)) and the rank of the differential (descending, ties
    # broken by coordinate index as in Kraehenbuehl's code): of each pair a < b exactly one outranks the
    # other, so rank_a = a + #{b > a: diff_a < diff_b} - #{b < a: diff_b < diff_a} (int8 counts).
    rounded = elevated.mul(1.0 / d1).round_()
    diff = elevated.add_(rounded, alpha=-d1)  # in place: the elevated values are not needed again
    # the rounded point is off the plane by sum(rounded) (exact small integers): shift the ranks by it
    rank = torch.arange(d1, device=dev, dtype=torch.int8).view(d1, 1) + rounded.sum(0).to(torch.int8)
    for a in range(d):
        less = (diff[a : a + 1] < diff[a + 1 :]).view(torch.int8)  # coordinate a is below coordinate b > a
        rank[a] += less.sum(0, dtype=torch.int8)
        rank[a + 1 :] -= less
    wrap = (rank < 0).to(torch.int8)  # bring it back: +-(d+1) on wrapped coordinates
    wrap -= (rank > d).to(torch.int8)
    rank[:d].add_(wrap[:d], alpha=d1)  # (only the first d coordinates are read below)
    rounded[:d].add_(wrap[:d])
    # Barycentric weights: with y = the d+1 values v = (elevated - rem0) / (d+1) sorted ascending (y_j is the
    # coordinate of rank d - j), weight[0] = 1 + y_0 - y_d and weight[r] = y_r - y_{r-1} (Adams et al. p.10).
    v = diff.mul_(1.0 / d1).sub_(wrap)  # (elevated - rounded_before * d1 - wrap * d1) / d1, in place
    y = _sort_rows_ascending(list(v.unbind(0)))
    weights = torch.stack([1.0 + y[0] - y[d]] + [y[r] - y[r - 1] for r in range(1, d1)], 1)  # (N, d+1)

    # Hash the simplices: (rounded, rank) of the first d coordinates determine all d+1 vertex keys. One digit
    # per coordinate, (d+1) (rounded - min) + rank (exact integers, in place in `rounded`), then one key.
    low = rounded[:d].amin(1)
    radices = [d1 * int(span) for span in (rounded[:d].amax(1) - low + 1).tolist()]
    digits = rounded[:d].sub_(low.view(d, 1)).mul_(d1).add_(rank[:d])
    keys = _point_keys(digits, radices)
    if keys is None:  # feature ranges too wide for an int64 key: row-wise unique ids (slower, same lattice)
        keys = torch.unique(digits.t(), dim=0, return_inverse=True)[1]
    # Points are taken in key order, so a simplex's points are a contiguous range starting at simplex_start.
    sorted_keys, order = torch.sort(keys)
    is_start = torch.ones(n_pts, dtype=torch.bool, device=dev)
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=is_start[1:])
    index_dtype = torch.int32 if n_pts < 2**31 - 1 else torch.int64
    simplex_sorted = torch.cumsum(is_start, 0, dtype=index_dtype).sub_(1)  # simplex id of each ordered point
    starts = torch.nonzero(is_start).squeeze(1)
    first_point = order.index_select(0, starts)
    weights = weights.index_select(0, order)
    s_digits = digits.index_select(1, first_point)  # (d, S)
    s_rank = s_digits.remainder(d1)
    s_rounded = s_digits.sub_(s_rank).mul_(1.0 / d1).round_().add_(low.view(d, 1))  # exact integers
    simplex_vertex, neighbours, coords = _vertex_table(s_rounded, s_rank)
    simplex_vertex = simplex_vertex.to(index_dtype)
    point_vertex = simplex_vertex.index_select(0, simplex_sorted)
    simplex_start = starts.to(index_dtype)
    return PermutohedralLattice(order, simplex_start, weights, point_vertex, simplex_vertex, neighbours, coords)


# --------------------------------------------------------------------------------------------- normalisation
def bistochastic_scaling(
    lattice: PermutohedralLattice, iterations: int = 10, tolerance: float = 1e-3, relaxation: float = 4.0 / 3.0
) -> tuple[torch.Tensor, int]:
    """(n (N,) in lattice order with N A N 1 ~ 1, updates applied).

    The authors' fixed point n <- sqrt(n / (A n)) = n (n A n)^(-1/2), from n = 1, over-relaxed after the
    first step: n <- n (n A n)^(-relaxation/2). Same fixed point; linearised, the error e = log n - log n*
    maps to (1 - w/2) e - (w/2) P e (P = N A N, spectrum ~[0, 1]), contracting by 1/2 per step for w = 1 and
    by 1/3 for w = 4/3 (~7 instead of ~10 updates to 1e-3 on webcam frames). Each step first evaluates
    n A n = N A N 1, the row sums for the current n: it stops (without updating) once
    max_p |(N A N 1)_p - 1| < tolerance, else after `iterations` updates.
    """
    n = lattice.weights.new_ones(1, lattice.num_points)
    tiny = torch.finfo(n.dtype).tiny
    for done in range(iterations + 1):
        row_sums = lattice.filter(n).mul_(n)  # n A n
        if done:  # (the unnormalised A's row sums are far from 1)
            low, high = torch.aminmax(row_sums)
            if max(float(high) - 1.0, 1.0 - float(low)) < tolerance:
                return n[0], done
        if done == iterations:
            break
        factor = row_sums.clamp_min_(tiny)
        # n_new / n = (n A n)^(-w/2); exp(log) is ~3x faster than pow on CPU
        factor = factor.rsqrt_() if done == 0 else factor.log_().mul_(-0.5 * relaxation).exp_()
        n.mul_(factor)
    return n[0], iterations


# --------------------------------------------------------------------------------------------- energy
class _Energy(torch.autograd.Function):
    """E = (r.r - (S n r)^T Bbar (S n r)) / (C N), r (C, N) in lattice order; dE/dr = 2 (r - N A N r) / (C N)."""

    @staticmethod
    def forward(ctx, r, lattice: PermutohedralLattice, n: torch.Tensor):
        u = lattice.splat(r * n)
        bu = lattice.blur(u)  # u^T B_0..B_d u == u^T Bbar u since every B_j is symmetric
        denom = r.numel()
        energy = ((r * r).sum() - (u * bu).sum()) / denom
        ctx.lattice = lattice
        ctx.save_for_backward(r, n, u, bu)
        return energy

    @staticmethod
    def backward(ctx, grad_out):
        r, n, u, bu = ctx.saved_tensors
        lattice = ctx.lattice
        bbar_u = 0.5 * (bu + lattice.blur(u, reverse=True))
        # N A N r - r in one contiguous (C, N) buffer (the slice of C > 1 channels is a transposed view)
        grad = torch.mul(lattice.slice(bbar_u), n, out=torch.empty_like(r)).sub_(r)
        return grad.mul_(-2.0 / r.numel() * grad_out), None, None


class _Apply(torch.autograd.Function):
    """y = N A N v for (c, N) lattice-ordered v; N A N is symmetric so the backward is the same operator."""

    @staticmethod
    def forward(ctx, v, lattice: PermutohedralLattice, n: torch.Tensor):
        ctx.lattice = lattice
        ctx.save_for_backward(n)
        return n * lattice.filter(v * n)

    @staticmethod
    def backward(ctx, grad_out):
        (n,) = ctx.saved_tensors
        return n * ctx.lattice.filter(grad_out * n), None, None


class _GatherDistinct(torch.autograd.Function):
    """flat.index_select(0, index) for DISTINCT indices: the backward writes (index_copy) instead of adding."""

    @staticmethod
    def forward(ctx, flat, index):
        ctx.save_for_backward(index)
        ctx.size = flat.numel()
        return flat.index_select(0, index)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.size).index_copy_(0, index, grad), None


class BilateralSmoothness:
    """The bistochastised bilateral operator N A N of one sequence, built once per training step.

    Attributes: `lattice` (PermutohedralLattice), `n` (N,) scaling in lattice order, `pixel_index` (N,) flat
    indices into m*H*W of the lattice pixels in (frame, row, column) order, `shape` (m, H, W),
    `iterations_run` (bistochastic iterations used).
    """

    def __init__(
        self, lattice: PermutohedralLattice, n: torch.Tensor, pixel_index: torch.Tensor, shape, iterations_run: int = 0
    ):
        self.lattice = lattice
        self.n = n
        self.pixel_index = pixel_index
        self.shape = tuple(shape)
        self.iterations_run = iterations_run
        self._lattice_pixels = pixel_index.index_select(0, lattice.order)  # flat m*H*W index, lattice order
        self._gather_index: dict[int, torch.Tensor] = {}
        self._inverse_order: Optional[torch.Tensor] = None

    @property
    def _to_pixel(self) -> torch.Tensor:
        """Lattice position of each pixel (pixel order = pixel_index order)."""
        if self._inverse_order is None:
            order = self.lattice.order
            self._inverse_order = torch.empty_like(order)
            self._inverse_order[order] = torch.arange(order.numel(), device=order.device)
        return self._inverse_order

    @property
    def num_pixels(self) -> int:
        return self.lattice.num_points

    @classmethod
    def build(
        cls,
        srgb: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
        *,
        sigma_xy: float = 0.1,
        sigma_intensity: float = 0.12,
        sigma_chroma: float = 0.025,
        iterations: int = 10,
        tolerance: float = 1e-3,
        linear: Optional[torch.Tensor] = None,
    ) -> "BilateralSmoothness":
        """Lattice + bistochastic scaling from srgb (m,3,H,W) in [0,1]; valid (m,1,H,W) or None (all pixels).

        `linear`: the caller's srgb_to_linear(srgb.clamp(0, 1)), to skip the conversion (optional).
        """
        m, _, h, w = srgb.shape
        with torch.no_grad(), torch.autocast(device_type=srgb.device.type, enabled=False):
            feats = bilateral_features(
                srgb.detach(),
                sigma_xy=sigma_xy,
                sigma_intensity=sigma_intensity,
                sigma_chroma=sigma_chroma,
                linear=None if linear is None else linear.detach(),
            )
            if valid is not None:
                if tuple(valid.shape) != (m, 1, h, w):
                    raise ValueError(f"valid must be {(m, 1, h, w)}, got {tuple(valid.shape)}")
                keep = valid.reshape(-1) if valid.dtype == torch.bool else valid.reshape(-1) > 0.5
                pixel_index = torch.nonzero(keep).squeeze(1)
                if pixel_index.numel() == 0:
                    raise ValueError("valid selects no pixel")
                feats = feats.t().index_select(1, pixel_index).t()  # (keeps the feature rows contiguous)
            else:
                pixel_index = torch.arange(m * h * w, device=srgb.device)
            lattice = build_lattice(feats)
            n, done = bistochastic_scaling(lattice, iterations, tolerance)
        return cls(lattice, n.unsqueeze(0), pixel_index, (m, h, w), done)

    # ---- pixel layout helpers
    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """(m, C, H, W) -> (C, N) in lattice order, in the lattice's float dtype."""
        m, h, w = self.shape
        if x.dim() != 4 or x.shape[0] != m or tuple(x.shape[2:]) != (h, w):
            raise ValueError(f"expected (m={m}, C, {h}, {w}), got {tuple(x.shape)}")
        c, hw = x.shape[1], h * w
        index = self._gather_index.get(c)
        if index is None:  # flat index into (m, C, H, W) of (channel, lattice point): one gather, no copy
            q = self._lattice_pixels
            base = torch.div(q, hw, rounding_mode="floor") * (c * hw) + q % hw
            index = (base.unsqueeze(0) + hw * torch.arange(c, device=q.device).unsqueeze(1)).reshape(-1)
            self._gather_index[c] = index
        return _GatherDistinct.apply(x.to(self.n.dtype).reshape(-1), index).view(c, -1)

    def energy(self, log_r: torch.Tensor) -> torch.Tensor:
        """L_rsmooth = sum_c r_c^T (I - N A N) r_c / (C * N) for log_r (m, C, H, W); differentiable in log_r."""
        with torch.autocast(device_type=log_r.device.type, enabled=False):
            r = self._gather(log_r)
            return _Energy.apply(r, self.lattice, self.n)

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """N A N v for values (N, c) given in pixel order (= pixel_index order); returns (N, c)."""
        with torch.autocast(device_type=values.device.type, enabled=False):
            v = values.to(self.n.dtype).t()  # (c, N) pixel order
            order = self.lattice.order
            y = _Apply.apply(v.index_select(1, order), self.lattice, self.n)
            return y.index_select(1, self._to_pixel).t()

    def scaling(self) -> torch.Tensor:
        """n (N,) in pixel order."""
        return self.n[0].index_select(0, self._to_pixel)
