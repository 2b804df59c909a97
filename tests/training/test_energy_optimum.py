"""training/energy_optimum.py: the per-pixel minimiser of the training energy (a diagnostic)."""
import json

import numpy as np
import pytest
import torch

from pipeline.color import linear_to_srgb
from pipeline.params import LossParams, ShardsParams
from training.energy_optimum import main, optimise_sequence
from training.loss import LossConfig

from tests.conftest import shared_path


def exact_sequence(m=4, h=24, w=32, seed=0):
    """Frames that ARE R x grey S_i x c_i (float, no quantisation): two reflectance patches, a shading ramp
    whose direction changes per frame, a per-frame light colour."""
    rng = np.random.default_rng(seed)
    refl = np.empty((h, w, 3))
    refl[:, : w // 2] = [0.6, 0.3, 0.2]
    refl[:, w // 2:] = [0.2, 0.5, 0.4]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    frames = []
    for i in range(m):
        angle = 2 * np.pi * i / m
        shading = 0.4 + 0.5 * (0.5 + 0.5 * np.cos(angle) * xx + 0.5 * np.sin(angle) * yy)
        colour = 1.0 + 0.1 * rng.standard_normal(3)
        frames.append(refl * shading[..., None] * colour)
    return linear_to_srgb(np.clip(np.stack(frames), 0, 1)), refl


def test_the_data_terms_alone_reach_zero_energy_on_an_exact_sequence():
    """With the priors off, a sequence that is exactly R x S_i x c_i has an energy-0 decomposition (one R for every
    frame); the optimiser must get there from its grey-shading start (which is not at 0: frames differ in colour)."""
    srgb, _ = exact_sequence()
    valid = np.ones(srgb.shape[:3], bool)
    config = LossConfig(w_rsmooth=0.0, w_ssmooth=0.0, w_shading_l1=0.0)
    start = optimise_sequence(srgb, valid, ShardsParams(), config, 1)[1]
    layers, energy, terms = optimise_sequence(srgb, valid, ShardsParams(), config, 200)
    assert start > 1e-4
    assert energy < 1e-7 and terms["consistency"] < 1e-7
    assert layers["log_r"].shape == (4, 3, 24, 32) and layers["log_s"].shape == (4, 1, 24, 32)
    # one reflectance for all frames, equal to the truth up to one grey field (the data terms' ambiguity)
    spread = (layers["log_r"] - layers["log_r"].mean(0, keepdim=True)).abs().max()
    assert spread < 1e-3


def test_the_full_energy_decreases_and_invalid_pixels_are_ignored():
    srgb, _ = exact_sequence(seed=1)
    valid = np.ones(srgb.shape[:3], bool)
    valid[:, :4, :4] = False
    noisy = srgb.copy()
    noisy[:, :4, :4] = np.random.default_rng(2).random((4, 4, 4, 3))  # garbage where invalid
    config = LossConfig.from_params(LossParams())
    start = optimise_sequence(srgb, valid, ShardsParams(), config, 1)[1]
    _, energy_clean, _ = optimise_sequence(srgb, valid, ShardsParams(), config, 60)
    _, energy_noisy, _ = optimise_sequence(noisy, valid, ShardsParams(), config, 60)
    assert energy_clean < 0.5 * start
    # masked pixels enter only shading_l1 (all pixels), which both runs drive to the same value there
    assert energy_noisy == pytest.approx(energy_clean, rel=0.05)


def test_cli_scores_an_mit_object_beside_weiss(tmp_path, repo_root):
    mit = shared_path("mit-intrinsic")
    out = tmp_path / "optimum.json"
    rc = main(["--params", str(repo_root / "params-mit.yaml"), "--mit-dir", str(mit), "--objects", "paper1",
               "--iterations", "15", "--long-side", "64", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    row = result["objects"]["paper1"]
    assert set(row) == {"energy", "terms", "optimum", "weiss"}
    assert 0 < row["optimum"]["mse_avg"] < 0.2 and 0 < row["weiss"]["lmse_avg"] < 0.2
    assert result["mean"]["optimum"]["mse_avg"] == pytest.approx(row["optimum"]["mse_avg"])


def test_cli_names_an_unknown_object(repo_root, capsys):
    mit = shared_path("mit-intrinsic")
    assert main(["--params", str(repo_root / "params-mit.yaml"), "--mit-dir", str(mit), "--objects", "unicorn"]) == 1
    assert "unicorn" in capsys.readouterr().err
