"""Shading-smoothness weights against a straightforward per-pixel Python loop, and behaviour."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from pipeline.color import linear_to_srgb
from pipeline.params import ShardsParams
from pipeline.shading_weights import (
    NEIGHBOUR_OFFSETS,
    shading_smoothness_weights,
    weights_from_params,
)


def _srgb_to_linear_scalar(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _reference(srgb, scales, k_abs, k_rel, s_int, s_chr, edge_scale, edge_offset, reduce, intensity, downsample, eps,
               edge_source="affinity", s_logd=0.25, persistence=None):
    """Per-pixel loops over plain Python floats; an independent reading of the module docstring."""
    m, h, w, _ = srgb.shape
    img = [[[[_srgb_to_linear_scalar(float(srgb[i, y, x, c])) for c in range(3)] for x in range(w)] for y in range(h)] for i in range(m)]
    out = []
    for level in range(scales):
        if level:
            h2, w2 = h // 2, w // 2
            new = []
            for i in range(m):
                rows = []
                for y in range(h2):
                    row = []
                    for x in range(w2):
                        if downsample == "nearest":
                            row.append(list(img[i][2 * y][2 * x]))
                        else:
                            row.append([sum(img[i][2 * y + a][2 * x + b][c] for a in (0, 1) for b in (0, 1)) / 4 for c in range(3)])
                    rows.append(row)
                new.append(rows)
            img, h, w = new, h2, w2
        res = np.zeros((m, 4, h, w) if reduce == "none" else (4, h, w))
        for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
            for y in range(h):
                for x in range(w):
                    qy, qx = y + dy, x + dx
                    if not (0 <= qy < h and 0 <= qx < w):
                        continue
                    ds, affs, dcs = [], [], []
                    for i in range(m):
                        a = [max(v, eps) for v in img[i][y][x]]
                        b = [max(v, eps) for v in img[i][qy][qx]]
                        if intensity == "mean_rgb":
                            ia, ib = sum(a) / 3, sum(b) / 3
                        else:
                            ia = 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2]
                            ib = 0.2126 * b[0] + 0.7152 * b[1] + 0.0722 * b[2]
                        ds.append(math.log(ia) - math.log(ib))
                        ca = [a[0] / sum(a), a[1] / sum(a)]
                        cb = [b[0] / sum(b), b[1] / sum(b)]
                        dc = (ca[0] - cb[0]) ** 2 + (ca[1] - cb[1]) ** 2
                        dcs.append(dc)
                        affs.append(math.exp(-dc / s_chr**2 - (ia - ib) ** 2 / s_int**2))
                    med = statistics.median(ds)
                    vs = [max(math.exp(-k_abs * (d - med) ** 2), math.exp(-k_rel * ((d - med) / (abs(med) + 1e-6)) ** 2)) for d in ds]
                    if edge_source == "affinity":
                        aff = statistics.median(affs)
                    else:
                        aff = math.exp(-statistics.median(dcs) / s_chr**2 - med**2 / s_logd**2)
                    boost = 1 - aff
                    if persistence is not None:
                        spread = statistics.median([abs(d - med) for d in ds])
                        boost *= math.exp(-((spread / persistence) ** 2))
                    factor = edge_offset + edge_scale * boost
                    if reduce == "none":
                        for i in range(m):
                            res[i, k, y, x] = vs[i] * factor
                    else:
                        agg = sum(vs) / m if reduce == "mean" else statistics.median(vs)
                        res[k, y, x] = agg * factor
        out.append(res)
    return out


CASES = [
    dict(reduce="mean", intensity="mean_rgb", downsample="average", edge_scale=1.0, edge_offset=0.0),
    dict(reduce="median", intensity="rec709", downsample="nearest", edge_scale=12.0, edge_offset=1.0),
    dict(reduce="none", intensity="mean_rgb", downsample="average", edge_scale=2.0, edge_offset=0.5),
    dict(reduce="none", intensity="rec709", downsample="average", edge_scale=12.0, edge_offset=1.0,
         edge_source="median_derivative", sigma_log_derivative=0.3),
    dict(reduce="median", intensity="mean_rgb", downsample="average", edge_scale=12.0, edge_offset=1.0,
         edge_persistence=0.5),
]


@pytest.mark.parametrize("case", CASES, ids=[c["reduce"] + "-" + c.get("edge_source", "affinity")
                                             + ("-persistence" if "edge_persistence" in c else "") for c in CASES])
@pytest.mark.parametrize("m", [4, 5])  # even and odd: the median of an even count averages the middle two
def test_matches_per_pixel_loop(case, m):
    rng = np.random.default_rng(m)
    srgb = rng.random((m, 9, 11, 3))
    srgb[0, 0, 0] = 0.0  # exercises the clamp before log
    kw = dict(scales=3, k_abs=20.0, k_rel=4.0, sigma_intensity=0.3, sigma_chroma=0.2, eps=1e-4, **case)
    got = shading_smoothness_weights(srgb, **kw)
    ref = _reference(srgb, 3, 20.0, 4.0, 0.3, 0.2, case["edge_scale"], case["edge_offset"], case["reduce"], case["intensity"],
                     case["downsample"], 1e-4, case.get("edge_source", "affinity"), case.get("sigma_log_derivative", 0.25),
                     case.get("edge_persistence"))
    assert len(got) == 3
    for level, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert g.shape[-2:] == (9 >> level, 11 >> level)
        np.testing.assert_allclose(g, r, rtol=2e-6, atol=1e-7)


def test_outside_neighbours_are_zero_and_contract_shapes():
    srgb = np.random.default_rng(0).random((3, 16, 24, 3))
    ws = shading_smoothness_weights(srgb)  # defaults: 4 scales, per-sequence
    assert [w.shape for w in ws] == [(4, 16, 24), (4, 8, 12), (4, 4, 6), (4, 2, 3)]
    for w in ws:
        assert np.all(w[0, :, -1] == 0) and np.all(w[1, -1, :] == 0)
        assert np.all(w[2, -1, :] == 0) and np.all(w[2, :, -1] == 0)
        assert np.all(w[3, -1, :] == 0) and np.all(w[3, :, 0] == 0)
        assert np.all(w >= 0) and np.all(np.isfinite(w))


def test_moving_shadow_lowers_weight_only_in_frames_it_crosses():
    """Constant reflectance edge + a shadow edge that crosses pair (p, q) in one frame only."""
    m, h, w = 7, 4, 8
    albedo = np.full((h, w, 3), 0.5)
    albedo[:, 4:] = [0.2, 0.5, 0.3]  # colour (reflectance) edge between columns 3 and 4
    shading = np.ones((m, h, w))
    shading[2, :, 6:] = 0.3  # frame 2: shadow edge between columns 5 and 6
    linear = albedo[None] * shading[..., None] * np.linspace(0.6, 1.0, m)[:, None, None, None]
    srgb = np.clip(linear, 0, 1) ** (1 / 2.2)
    per_frame = shading_smoothness_weights(srgb, scales=1, reduce="none", edge_offset=1.0)[0]
    horiz = per_frame[:, 0, 1]  # (m, w): pair (x, x+1) on row 1
    assert horiz[2, 5] < 1e-3 and np.all(np.delete(horiz[:, 5], 2) > 0.99)  # shadow only in frame 2
    # the reflectance edge is stable over time: full smoothness weight, boosted by (1 - median W)
    assert np.all(horiz[:, 3] > 1.9) and np.allclose(horiz[:, 1], 1.0)  # factor 1 + (1 - W), W ~ 0 vs 1
    seq = shading_smoothness_weights(srgb, scales=1, reduce="mean", edge_offset=1.0)[0]
    np.testing.assert_allclose(seq, per_frame.mean(0), rtol=1e-6)


def test_median_derivative_edge_ignores_a_geometric_edge_that_flips_with_the_light():
    """A crease lit from either side: its image edge changes sign with the light, so Weiss's median derivative is 0
    and edge_source="median_derivative" does not call it a reflectance edge; the per-frame affinity does."""
    m, h, w = 5, 3, 8
    shading = np.ones((m, h, w))
    for i, right in enumerate([0.3, 0.3, 1.0, 1.0, 1.0]):
        shading[i, :, 4:] = right
    for i in (2, 3):
        shading[i, :, :4] = 0.3  # lit from the right: the left face is dark
    albedo = np.ones((h, w, 3)) * 0.6
    albedo[:, 6:] = [0.6, 0.2, 0.2]  # a true (colour) reflectance edge between columns 5 and 6
    srgb = (albedo[None] * shading[..., None]) ** (1 / 2.2)
    kw = dict(scales=1, reduce="mean", edge_offset=1.0, edge_scale=12.0, derivative_term=False)
    affinity = shading_smoothness_weights(srgb, **kw)[0][0, 1]  # horizontal pairs on row 1
    weiss = shading_smoothness_weights(srgb, edge_source="median_derivative", **kw)[0][0, 1]
    assert affinity[3] > 12 and weiss[3] < 1.01  # the crease: boosted vs left alone
    assert affinity[5] > 12 and weiss[5] > 12  # the colour edge: boosted by both
    np.testing.assert_allclose([affinity[1], weiss[1]], 1.0, atol=1e-6)  # flat: the offset


def test_edge_persistence_boosts_paint_edges_not_a_crease_whose_contrast_changes_with_the_light():
    """A box crease: the right face's shading changes from frame to frame but never flips, so both the affinity and
    Weiss's median derivative call it a reflectance edge. Its log-derivative spreads over the frames; a paint edge's
    is the same in every frame, so edge_persistence keeps the boost there and drops it at the crease."""
    m, h, w = 5, 3, 8
    shading = np.ones((m, h, w))
    for i, right in enumerate([0.3, 0.5, 0.8, 1.0, 0.6]):
        shading[i, :, 4:] = right
    albedo = np.full((h, w, 3), 0.6)
    albedo[:, 6:] = [0.6, 0.2, 0.2]  # paint: a colour edge between columns 5 and 6
    albedo[:, 1] *= 0.5  # paint: a darker grey column 1 (grey steps between columns 0|1 and 1|2)
    srgb = linear_to_srgb(albedo[None] * shading[..., None] * np.linspace(0.7, 1.0, m)[:, None, None, None])
    kw = dict(scales=1, reduce="mean", edge_offset=1.0, edge_scale=12.0, derivative_term=False, sigma_chroma=0.05)
    plain = shading_smoothness_weights(srgb, **kw)[0][0, 1]  # horizontal pairs on row 1
    weiss = shading_smoothness_weights(srgb, edge_source="median_derivative", **kw)[0][0, 1]
    gated = shading_smoothness_weights(srgb, edge_persistence=0.1, **kw)[0][0, 1]
    assert plain[3] > 5 and weiss[3] > 5  # the crease: boosted without the gate
    assert gated[3] < 1.01  # ... and left at the offset with it (log-derivative spread ~0.3 >> 0.1)
    for x in (0, 5):  # the paint edges keep their boost: spread 0, gate 1
        assert plain[x] > 5
        np.testing.assert_allclose(gated[x], plain[x], rtol=1e-5)
    np.testing.assert_allclose(gated[2], 1.0, atol=1e-6)  # flat paint, flat shading: the offset


def test_weights_from_params_uses_the_section():
    section = {"edge_scale": 12.0, "edge_offset": 1.0, "reduce": "median", "edge_source": "median_derivative",
               "sigma_log_derivative": 0.4, "sigma_chroma": 0.05, "edge_persistence": 0.2}
    params = ShardsParams(shading_scales=2, shading_weights=section)
    srgb = np.random.default_rng(1).random((5, 8, 8, 3))
    got = weights_from_params(srgb, params)
    want = shading_smoothness_weights(srgb, scales=2, **section)
    assert len(got) == 2
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        shading_smoothness_weights(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError):
        shading_smoothness_weights(np.zeros((2, 8, 8, 3)), scales=4)  # 8 >> 3 = 1 pixel
