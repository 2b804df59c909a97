"""training/model.py: shapes, parameter counts, gradients to every head, determinism, checkpoint round trip."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pipeline.params import ModelParams
from training.model import CheckpointError, IntrinsicUNet, ModelConfig, count_parameters, load_checkpoint


def test_forward_shapes_small():
    torch.manual_seed(0)
    model = IntrinsicUNet(ModelConfig.preset("small"))
    log_r, log_s, log_c = model(torch.rand(2, 3, 64, 96))
    assert log_r.shape == (2, 3, 64, 96) and log_s.shape == (2, 1, 64, 96) and log_c.shape == (2, 3)
    assert all(torch.isfinite(t).all() for t in (log_r, log_s, log_c))


def test_rejects_sides_not_multiple_of_2_pow_depth():
    model = IntrinsicUNet(ModelConfig.preset("small"))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 48, 64))


def test_parameter_counts():
    tiny = count_parameters(IntrinsicUNet(ModelConfig.preset("tiny")))
    small = count_parameters(IntrinsicUNet(ModelConfig.preset("small")))
    medium = count_parameters(IntrinsicUNet(ModelConfig.preset("medium")))
    paper = count_parameters(IntrinsicUNet(ModelConfig.preset("paper")))
    print(f"\nparameters: tiny {tiny:,}  small {small:,}  medium {medium:,}  paper {paper:,} (authors' network: ~69M)")
    assert 66e6 < paper < 71e6
    assert tiny < small / 3 and small < 3e6
    assert small < medium < 5e6
    assert ModelConfig.preset("medium").multiple == ModelConfig.preset("small").multiple == 32
    assert ModelConfig.preset("paper").multiple == 128


def test_paper_preset_runs_at_the_loader_bucket_size():
    with torch.no_grad():
        log_r, log_s, log_c = IntrinsicUNet(ModelConfig.preset("paper")).eval()(torch.rand(1, 3, 256, 384))
    assert log_r.shape == (1, 3, 256, 384) and log_s.shape == (1, 1, 256, 384) and log_c.shape == (1, 3)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = IntrinsicUNet(ModelConfig.preset("small"))
    log_r, log_s, log_c = model(torch.rand(2, 3, 64, 64))
    (log_r.square().mean() + log_s.square().mean() + log_c.square().mean()).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient: {dead}"
    # each head's loss reaches its own head and the shared encoder
    for index, head in ((0, "reflectance"), (1, "shading"), (2, "color")):
        model.zero_grad()
        outputs = model(torch.rand(2, 3, 64, 64))
        outputs[index].sum().backward()
        assert any(p.grad.abs().sum() > 0 for p in getattr(model, head).parameters())
        assert model.encoder[0][0].weight.grad.abs().sum() > 0


def test_deterministic_with_seed():
    def build():
        torch.manual_seed(123)
        return IntrinsicUNet(ModelConfig.preset("small")).eval()

    x = torch.rand(1, 3, 32, 32)
    a, b = build()(x), build()(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_config_presets_from_params_and_checkpoint_round_trip(tmp_path):
    assert ModelConfig.from_params(ModelParams(preset="paper", input_skip=False)) == ModelConfig.preset("paper")
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    config = ModelConfig(depth=3, base_channels=4, max_channels=8, color_hidden=5)
    model = IntrinsicUNet(config)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(config), "step": 7}, path)
    loaded, ckpt = load_checkpoint(path)
    assert loaded.config == config and not loaded.training and ckpt["step"] == 7
    x = torch.rand(1, 3, 16, 24)
    model.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="model_config"):
        load_checkpoint(path)


# ------------------------------------------------------------------ mixed precision: float32 output layers

TINY = ModelConfig(depth=3, base_channels=8, max_channels=16, color_hidden=8)


def test_bf16_cannot_hold_the_neighbour_differences_of_a_smooth_log_image():
    """The problem the float32 output layers fix: a smooth log shading (steps of 1e-3, values 1.5..2.5) loses
    its neighbour differences, what the smoothness terms act on, when stored in bf16 (8 significant bits)."""
    log_s = torch.linspace(1.5, 2.5, 1001, dtype=torch.float64)
    true = log_s.diff()
    bf16 = log_s.bfloat16().double().diff()
    fp32 = log_s.float().double().diff()
    assert (bf16 == 0).float().mean() > 0.8  # most differences vanish; the others jump by 2^-7 or 2^-6
    assert (bf16 - true).abs().mean() > 0.5 * true.abs().mean()
    assert (fp32 - true).abs().max() < 1e-3 * true.abs().mean()


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine (CPU-only)")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_output_layers_run_in_float32_under_bf16_autocast(device):
    torch.manual_seed(0)
    model = IntrinsicUNet(TINY).to(device)
    seen = {}
    heads = {"reflectance": model.reflectance[-1], "shading": model.shading[-1], "color": model.color,
             "inner": model.reflectance[0]}
    for name, layer in heads.items():
        layer.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, (args[0], out)))
    x = torch.rand(2, 3, 32, 48, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        log_r, log_s, log_c = model(x)
    assert log_r.dtype == log_s.dtype == log_c.dtype == torch.float32
    assert seen["inner"][1].dtype == torch.bfloat16  # the body still runs in bf16
    for name in ("reflectance", "shading", "color"):
        features, out = seen[name]
        assert features.dtype == torch.float32 and out.dtype == torch.float32
        assert torch.equal(features, features.bfloat16().float()), name  # the features were computed in bf16
    # each output equals a float64 evaluation of its layer on the same features, to float32 precision
    for name, output in (("reflectance", log_r), ("shading", log_s)):
        features, _ = seen[name]
        conv = heads[name][1]
        ref = F.conv_transpose2d(F.relu(features.double()), conv.weight.double(), conv.bias.double(), stride=2, padding=1)
        err = (output.double() - ref).abs().max() / ref.abs().max()
        assert err < 1e-5, (name, err)
        with torch.autocast(device, dtype=torch.bfloat16):  # what the layer gave before: 100x further off
            in_bf16 = heads[name](features)
        assert in_bf16.dtype == torch.bfloat16 and (in_bf16.double() - ref).abs().max() / ref.abs().max() > 100 * err
    features, _ = seen["color"]
    lin1, lin2 = model.color[0], model.color[2]
    ref = F.linear(F.relu(F.linear(features.double(), lin1.weight.double(), lin1.bias.double())),
                   lin2.weight.double(), lin2.bias.double())
    torch.testing.assert_close(log_c.double(), ref, rtol=1e-5, atol=1e-7)
    # the outputs are no longer on the bf16 grid: their neighbour differences survive
    assert (log_r == log_r.bfloat16().float()).float().mean() < 0.1


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_instance_norm_decomposes_each_image_on_its_own_in_training(tmp_path, norm):
    """norm="instance": in training mode a batch's outputs are each image's outputs alone (its own statistics); with
    "batch" they depend on the other images. Same parameter count; the choice survives a checkpoint."""
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig.preset("tiny"), norm=norm)
    model = IntrinsicUNet(config).train()
    assert count_parameters(model) == count_parameters(IntrinsicUNet(ModelConfig.preset("tiny")))
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    x[1] = x[1] * 0.3  # a darker second image: different statistics
    together = model(x)
    alone = [model(x[i : i + 1]) for i in range(2)]
    for k, layer in enumerate(together):
        separate = torch.cat([a[k] for a in alone])
        assert torch.allclose(layer, separate, atol=1e-5) == (norm == "instance"), (norm, k)
    assert ModelConfig.from_params(ModelParams(norm=norm)).norm == norm
    path = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(config)}, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.config.norm == norm
    assert torch.allclose(loaded(x)[1], model.eval()(x)[1], atol=1e-6)
