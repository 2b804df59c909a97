"""The energy-balance and ablation params (issue 13) against explicit references: same-frame reconstruction,
local bilateral smoothness, the all-pixel rsmooth normaliser, the colour-head switch, the shading-weight terms,
the 'fit' bucket and the explicit held-out split."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.color import linear_to_srgb, luminance, srgb_to_linear
from pipeline.params import ModelParams
from pipeline.shading_weights import shading_smoothness_weights
from pipeline.shards import split_of
from training.data import LoaderConfig, fit_bucket
from training.lattice import bilateral_features
from training.loss import LocalBilateralSmoothness, LossConfig, build_lattice, intrinsic_loss, same_frame_terms
from training.model import IntrinsicUNet, ModelConfig, _InputSkipOutput


def _sequence(seed=0, m=3, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    srgb = torch.rand(m, 3, h, w, generator=g, dtype=torch.float64) * 0.9 + 0.05
    mask = (torch.rand(m, 1, h, w, generator=g) > 0.25).double()
    log_r = torch.randn(m, 3, h, w, generator=g, dtype=torch.float64)
    log_s = torch.randn(m, 1, h, w, generator=g, dtype=torch.float64)
    log_c = torch.randn(m, 3, generator=g, dtype=torch.float64)
    return srgb, mask, log_r, log_s, log_c


def test_same_frame_reconstruction_equals_a_per_pixel_loop():
    srgb, mask, log_r, log_s, log_c = _sequence()
    config = LossConfig(reconstruct_pairs="same_frame")
    recon, _ = same_frame_terms(srgb_to_linear(srgb), mask, log_r, log_s, log_c, config)
    lin = srgb_to_linear(srgb).clamp_min(config.log_eps).numpy()
    num = den = 0.0
    m, _, h, w = srgb.shape
    for i in range(m):
        for y in range(h):
            for x in range(w):
                if mask[i, 0, y, x] == 0:
                    continue
                lum = max(float(luminance(lin[i, :, y, x], channel_axis=0)), config.log_eps)
                for c in range(3):
                    resid = math.log(lin[i, c, y, x]) - log_s[i, 0, y, x] - log_c[i, c] - log_r[i, c, y, x]
                    num += lum ** (2 * config.lum_exponent) * float(resid) ** 2
                    den += 1
    assert recon.item() == pytest.approx(num / den, rel=1e-9)


def test_local_smoothness_equals_an_explicit_pair_sum():
    srgb, mask, log_r, *_ = _sequence(1)
    config = LossConfig(rsmooth_kind="local")
    op = build_lattice(srgb, mask, config)
    assert isinstance(op, LocalBilateralSmoothness)
    feats = bilateral_features(srgb).numpy().reshape(srgb.shape[0], srgb.shape[2], srgb.shape[3], 5)
    m, _, h, w = srgb.shape
    valid = mask[:, 0].numpy() > 0.5
    num = weight_sum = 0.0
    for i in range(m):
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                    yy, xx = y + dy, x + dx
                    if not (0 <= yy < h and 0 <= xx < w) or not (valid[i, y, x] and valid[i, yy, xx]):
                        continue
                    wpq = math.exp(-0.5 * float(((feats[i, y, x] - feats[i, yy, xx]) ** 2).sum()))
                    num += wpq * float(((log_r[i, :, y, x] - log_r[i, :, yy, xx]) ** 2).sum())
                    weight_sum += wpq
    assert op.energy(log_r).item() == pytest.approx(num / (3 * 2 * weight_sum), rel=1e-6)
    assert op.num_pixels == int(valid.sum())
    # constant reflectance has zero energy; the operator is differentiable in log_r
    assert op.energy(torch.ones_like(log_r)).item() == pytest.approx(0.0, abs=1e-12)
    log_r.requires_grad_(True)
    op.energy(log_r).backward()
    assert torch.isfinite(log_r.grad).all()


@pytest.mark.parametrize("kind", ["dense", "local"])
def test_all_pixel_normaliser_scales_rsmooth_by_the_valid_fraction(kind):
    srgb, mask, log_r, log_s, log_c = (t.float() for t in _sequence(2, m=3, h=16, w=16))
    weights = [torch.ones(4, 16 >> l, 16 >> l) for l in range(2)]
    valid = LossConfig(rsmooth_kind=kind, rsmooth_normaliser="valid")
    all_pixels = dataclasses.replace(valid, rsmooth_normaliser="all")
    _, t_valid = intrinsic_loss(srgb, mask, log_r, log_s, log_c, weights, valid)
    _, t_all = intrinsic_loss(srgb, mask, log_r, log_s, log_c, weights, all_pixels)
    fraction = mask.sum().item() / mask.numel()
    assert t_all["rsmooth"].item() == pytest.approx(t_valid["rsmooth"].item() * fraction, rel=1e-5)
    assert t_all["reconstruct"].item() == t_valid["reconstruct"].item()


def test_model_without_colour_head_outputs_zero_log_c():
    config = ModelConfig.from_params(ModelParams(color_head=False))
    assert config.color_head is False
    model = IntrinsicUNet(config)
    assert model.color is None
    _, _, log_c = model(torch.rand(2, 3, 64, 64))
    assert torch.equal(log_c, torch.zeros(2, 3))
    with_head = IntrinsicUNet(ModelConfig.from_params(ModelParams()))
    assert sum(p.numel() for p in with_head.parameters()) > sum(p.numel() for p in model.parameters())


def test_shading_weight_terms_switch_off_to_one():
    rng = np.random.default_rng(0)
    srgb = rng.random((4, 8, 8, 3)) * 0.8 + 0.1
    both = shading_smoothness_weights(srgb, scales=1, reduce="none", edge_offset=1.0, edge_scale=12.0)[0]
    no_deriv = shading_smoothness_weights(srgb, scales=1, reduce="none", edge_offset=1.0, edge_scale=12.0,
                                          derivative_term=False)[0]
    no_edge = shading_smoothness_weights(srgb, scales=1, reduce="none", edge_offset=1.0, edge_scale=12.0,
                                         edge_term=False)[0]
    neither = shading_smoothness_weights(srgb, scales=1, reduce="none", derivative_term=False, edge_term=False)[0]
    inside = neither > 0  # pairs with both pixels in the image
    assert np.all(neither[inside] == 1.0)
    # the product structure: both = derivative term x edge factor
    assert np.allclose(both[inside], (no_edge * no_deriv)[inside], rtol=1e-5)
    assert not np.allclose(no_edge[inside], 1.0) and not np.allclose(no_deriv[inside], 1.0)


@pytest.mark.parametrize("hw,expect", [((256, 256), (128, 128)), ((138, 256), (64, 96)), ((384, 384), (256, 256)),
                                       ((207, 384), (128, 192)), ((128, 192), (64, 96)), ((600, 900), (256, 384))])
def test_fit_bucket_never_upsamples(hw, expect):
    config = LoaderConfig(size="fit")
    out = fit_bucket(*hw, config)
    assert out == expect
    h, w = hw
    a = out[1] / out[0]
    theta = math.radians(config.max_rotation_deg)
    smallest = config.min_crop * min(w / (a * math.cos(theta) + math.sin(theta)),
                                     h / (a * math.sin(theta) + math.cos(theta)))
    assert out[0] <= smallest  # hand-computed: every case above has a scale that fits
    assert out[0] % 32 == 0 and out[1] % 32 == 0


def test_explicit_val_sequences_override_the_hash_split():
    assert split_of("a", 0, 0.0, ["a"]) == "val"
    assert split_of("b", 0, 0.99, ["a"]) == "train"
    assert split_of("b", 0, 0.0, []) == "train"


def test_bilinear_decoder_has_no_checkerboard_period():
    """A constant feature map through one transposed decoder level comes out 2-periodic (the checkerboard); the
    bilinear level keeps it constant away from the zero-padded border."""
    torch.manual_seed(0)
    for upsample in ("transposed", "bilinear"):
        config = dataclasses.replace(ModelConfig.preset("small"), upsample=upsample)
        level = IntrinsicUNet(config).eval().reflectance[0]
        with torch.no_grad():
            out = level(torch.ones(1, config.channels()[-1], 8, 8))[0, :, 3:-3, 3:-3]  # (C, 10, 10)
        parity = (out[:, ::2, ::2] - out[:, 1::2, 1::2]).abs().max().item()
        if upsample == "transposed":
            assert parity > 1e-3
        else:
            assert parity < 1e-5 and out.std(dim=(1, 2)).max().item() < 1e-5


def test_a_train_step_runs_without_the_colour_head():
    """The grey-shading ablation trains: log_c = 0 is a constant, so the loss backward skips it."""
    from training.train import train_step

    torch.manual_seed(0)
    model = IntrinsicUNet(dataclasses.replace(ModelConfig.preset("small"), color_head=False))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    srgb = torch.rand(3, 3, 64, 64) * 0.8 + 0.1
    item = {"key": "k", "indices": torch.arange(3), "srgb": srgb, "mask": torch.ones(3, 1, 64, 64),
            "shading_weights": [torch.ones(4, 64 >> l, 64 >> l) for l in range(2)]}
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, optimizer, scaler, item, LossConfig(w_rsmooth=0.0), device=torch.device("cpu"))
    assert torch.isfinite(result.total)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_image_ratio_reflectance_reconstructs_the_input_exactly():
    """reflectance="image_ratio": no reflectance decoder, and R * S * c is the input's linear RGB (floored at
    LOG_EPS) to float32 rounding, under bf16 autocast too; the gradient of a loss on log R reaches the shading
    decoder and the colour head."""
    from training.model import LOG_EPS

    torch.manual_seed(0)
    decoder = IntrinsicUNet(ModelConfig.preset("small"))
    model = IntrinsicUNet(dataclasses.replace(ModelConfig.preset("small"), reflectance="image_ratio"))
    assert model.reflectance is None
    n_dec = sum(p.numel() for p in decoder.reflectance.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in decoder.parameters()) - n_dec
    srgb = torch.rand(2, 3, 64, 96)
    srgb[0, :, :4, :4] = 0.0  # black pixels: floored
    expected = srgb_to_linear(srgb.double()).clamp_min(LOG_EPS)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            log_r, log_s, log_c = model(srgb)
        assert log_r.dtype == torch.float32 and log_r.shape == (2, 3, 64, 96)
        rebuilt = (log_r.double() + log_s.double() + log_c.double()[:, :, None, None]).exp()
        assert torch.allclose(rebuilt, expected, rtol=1e-5, atol=0)
    log_r.pow(2).mean().backward()
    assert model.shading[-1][-1].weight.grad.abs().sum() > 0
    assert model.color[-1].weight.grad.abs().sum() > 0


def test_reflectance_param_is_validated_and_reaches_the_model():
    assert ModelConfig.from_params(ModelParams(reflectance="image_ratio")).reflectance == "image_ratio"
    with pytest.raises(ValueError, match="reflectance"):
        ModelParams(reflectance="ratio")
    with pytest.raises(ValueError, match="reflectance"):
        ModelConfig(reflectance="ratio")


def test_input_skip_output_layer_sees_the_input_at_full_resolution():
    """model.input_skip: the output layer is Conv 3x3 over [ReLU(level-1 features), 2*srgb - 1]. With the
    level-1 features switched off (BatchNorm scale and shift 0), the log outputs are that conv of the image alone:
    one changed input pixel moves exactly its 3x3 output neighbourhood (no stride-2 layer in between)."""
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig.preset("small"), input_skip=True)
    model = IntrinsicUNet(config).eval()
    for decoder in (model.reflectance, model.shading):
        norm = decoder[-2][-1]
        assert isinstance(norm, torch.nn.BatchNorm2d) and norm.num_features == config.input_skip_channels
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.zero_()
    srgb = torch.rand(1, 3, 64, 96)
    moved = srgb.clone()
    moved[0, :, 20, 30] += 0.5
    with torch.no_grad():
        (r0, s0, _), (r1, s1, _) = model(srgb), model(moved)
    for before, after in ((r0, r1), (s0, s1)):
        changed = (after - before).abs().amax(dim=1)[0] > 1e-6
        expected = torch.zeros_like(changed)
        expected[19:22, 29:32] = True
        assert torch.equal(changed, expected)
    conv = model.reflectance[-1].conv  # an independent float64 evaluation of that conv
    ref = F.conv2d(srgb.double() * 2 - 1, conv.weight.double()[:, config.input_skip_channels:], conv.bias.double(),
                   padding=1)
    assert torch.allclose(r0.double(), ref, atol=1e-5)


def test_input_skip_shading_false_leaves_the_shading_decoder_the_papers_level_1():
    """model.input_skip_shading false: the reflectance decoder ends in the full-resolution output layer, the
    shading decoder exactly as the paper's (same modules and parameter count as input_skip=False's shading)."""
    small = ModelConfig.preset("small")
    config = ModelConfig.from_params(ModelParams(input_skip=True, input_skip_shading=False))
    assert config.input_skip and not config.input_skip_shading
    model = IntrinsicUNet(config)
    paper = IntrinsicUNet(dataclasses.replace(small, input_skip=False))
    both = IntrinsicUNet(dataclasses.replace(small, input_skip=True))
    assert isinstance(model.reflectance[-1], _InputSkipOutput) and not isinstance(model.shading[-1], _InputSkipOutput)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.shading) == count(paper.shading) and count(model.reflectance) == count(both.reflectance)
    assert [type(m) for m in model.shading.modules()] == [type(m) for m in paper.shading.modules()]
    log_r, log_s, log_c = model(torch.rand(1, 3, 64, 96))
    assert log_r.shape == (1, 3, 64, 96) and log_s.shape == (1, 1, 64, 96) and log_c.shape == (1, 3)


def test_input_skip_trains_every_parameter_and_reaches_the_model():
    assert ModelConfig.from_params(ModelParams()).input_skip  # the params default (it scored better)
    assert not ModelConfig.from_params(ModelParams(input_skip=False)).input_skip  # the paper's network
    assert not ModelConfig().input_skip  # a checkpoint without the key holds the paper's network
    with pytest.raises(ValueError, match="input_skip"):
        ModelParams(input_skip="sometimes")
    torch.manual_seed(0)
    for reflectance in ("decoder", "image_ratio"):
        model = IntrinsicUNet(dataclasses.replace(ModelConfig.preset("small"), input_skip=True,
                                                  reflectance=reflectance))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_r, log_s, log_c = model(torch.rand(2, 3, 64, 64))
        assert log_r.dtype == log_s.dtype == torch.float32  # the output conv runs in float32
        (log_r.square().mean() + log_s.square().mean() + log_c.square().mean()).backward()
        dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, f"{reflectance}: no gradient: {dead}"


def _mean_frame_srgb(srgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference for rsmooth_guide="sequence_mean": every frame replaced by the per-pixel mean linear image over
    the frames valid there (all frames where none is), by an explicit loop, back in sRGB."""
    lin = srgb_to_linear(srgb.clamp(0, 1)).numpy()
    m, _, h, w = srgb.shape
    out = np.empty_like(lin)
    for y in range(h):
        for x in range(w):
            frames = [i for i in range(m) if mask[i, 0, y, x] > 0.5] or list(range(m))
            out[:, :, y, x] = sum(lin[i, :, y, x] for i in frames) / len(frames)
    return linear_to_srgb(torch.from_numpy(out))


@pytest.mark.parametrize("kind", ["local", "dense"])
def test_sequence_mean_guide_is_the_frame_guide_of_the_mean_image(kind):
    srgb, mask, log_r, *_ = _sequence(3, m=3, h=9, w=10)
    mask[:, :, 0, 0] = 0.0  # a pixel valid in no frame: the mean of all frames
    mean_srgb = _mean_frame_srgb(srgb, mask)
    guided = build_lattice(srgb, mask, LossConfig(rsmooth_kind=kind, rsmooth_guide="sequence_mean"))
    reference = build_lattice(mean_srgb, mask, LossConfig(rsmooth_kind=kind, rsmooth_guide="frame"))
    own = build_lattice(srgb, mask, LossConfig(rsmooth_kind=kind, rsmooth_guide="frame"))
    r32 = log_r.float()
    assert guided.energy(r32).item() == pytest.approx(reference.energy(r32).item(), rel=1e-4)
    assert abs(guided.energy(r32).item() - own.energy(r32).item()) > 1e-3 * own.energy(r32).item()
    # frames that are all the same image: the guide changes nothing
    same = srgb[:1].expand_as(srgb).contiguous()
    a = build_lattice(same, mask, LossConfig(rsmooth_kind=kind, rsmooth_guide="sequence_mean")).energy(r32)
    b = build_lattice(same, mask, LossConfig(rsmooth_kind=kind, rsmooth_guide="frame")).energy(r32)
    assert a.item() == pytest.approx(b.item(), rel=1e-4)


def test_unknown_rsmooth_guide_is_refused():
    srgb, mask, *_ = _sequence()
    with pytest.raises(ValueError, match="rsmooth_guide"):
        build_lattice(srgb, mask, LossConfig(rsmooth_guide="median"))
