"""training/model.py: shapes, parameter counts, gradients to every head, determinism, checkpoint round trip."""
from __future__ import annotations

import dataclasses

import pytest
import torch

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
    small = count_parameters(IntrinsicUNet(ModelConfig.preset("small")))
    paper = count_parameters(IntrinsicUNet(ModelConfig.preset("paper")))
    print(f"\nparameters: small {small:,}  paper {paper:,} (authors' network: ~69M)")
    assert 66e6 < paper < 71e6
    assert small < 3e6
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
    assert ModelConfig.from_params(ModelParams(preset="paper")) == ModelConfig.preset("paper")
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
