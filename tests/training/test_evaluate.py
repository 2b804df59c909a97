"""training/evaluate.py and training/decompose.py end to end on tiny fixtures in the published formats
(MIT 16-bit linear PNG folders, frames + groundtruth.npz, IIW JSON, SAW .npy), with a tiny checkpoint."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.color import linear_to_srgb, srgb_to_linear
from tests.conftest import shared_path
from tests.training.test_baselines import lambertian_sequence
from training import decompose as D
from training import evaluate as E
from training.model import IntrinsicUNet, ModelConfig

TINY = ModelConfig(depth=3, base_channels=4, max_channels=8, color_hidden=4)


def write_png16(path, linear):
    image = np.round(np.clip(linear, 0, 1) * 65535).astype(np.uint16)
    cv2.imwrite(str(path), image[..., ::-1] if image.ndim == 3 else image)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": IntrinsicUNet(TINY).state_dict(), "model_config": dataclasses.asdict(TINY), "step": 3}, path)
    return path


def make_fixtures(root):
    frames, albedo, shadings = lambertian_sequence()
    mit = root / "mit" / "blocks"
    mit.mkdir(parents=True)
    for i, frame in enumerate(frames):
        write_png16(mit / f"light{i + 1:02d}.png", frame)
    write_png16(mit / "diffuse.png", frames[0])
    write_png16(mit / "reflectance.png", albedo)
    write_png16(mit / "shading.png", shadings[0] / shadings[0].max())
    mask = np.ones(albedo.shape[:2])
    mask[:, :4] = 0
    write_png16(mit / "mask.png", mask)

    seq = root / "frames" / "synth_a"
    seq.mkdir(parents=True)
    srgb = np.round(255 * linear_to_srgb(frames)).astype(np.uint8)
    for t in range(4):
        Image.fromarray(srgb[t]).save(seq / f"{t:04d}.png")
    t_shape = (4,) + albedo.shape[:2]
    np.savez(seq / "groundtruth.npz", reflectance=np.repeat(albedo[None], 4, 0).astype(np.float32),
             shading=shadings[:4].astype(np.float32), light_rgb=np.full((4, 3), 0.9, np.float32),
             sky=np.zeros(t_shape, bool), dynamic=np.zeros(t_shape, bool), clipped=np.zeros(t_shape, bool))
    (root / "shards").mkdir()
    (root / "shards" / "manifest.json").write_text(json.dumps({"sequences": {"synth_a": {"split": "val", "n_frames": 4}}}))

    iiw = root / "iiw" / "data"
    iiw.mkdir(parents=True)
    Image.fromarray(srgb[0]).save(iiw / "7.png")
    Image.fromarray(srgb[2]).save(iiw / "8.png")  # not a test id: left out
    (iiw / "8.json").write_text(json.dumps({"intrinsic_points": [], "intrinsic_comparisons": []}))
    (root / "iiw" / "test_ids.txt").write_text("7\n")
    (iiw / "7.json").write_text(json.dumps({
        "intrinsic_points": [{"id": 1, "x": 0.1, "y": 0.1, "opaque": True}, {"id": 2, "x": 0.9, "y": 0.9, "opaque": True}],
        "intrinsic_comparisons": [{"point1": 1, "point2": 2, "darker": "1", "darker_score": 1.0}]}))
    saw = root / "saw"
    (saw / "saw_images_512").mkdir(parents=True)
    (saw / "labels").mkdir()
    Image.fromarray(srgb[1]).save(saw / "saw_images_512" / "9.png")
    labels = np.full(albedo.shape[:2], 100)
    labels[5:20, 5:20] = 2
    labels[30:40, 30:40] = 1
    np.save(saw / "labels" / "9.npy", labels)
    return root


def test_evaluate_main_end_to_end(tmp_path, checkpoint):
    root = make_fixtures(tmp_path)
    params = {"sources": [{"name": "synth_a", "url": "synthetic://sun"}],
              "evaluate": {"mit_dir": str(root / "mit"), "iiw_dir": str(root / "iiw"), "saw_dir": str(root / "saw"),
                           "max_images": 3}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, metrics_path = tmp_path / "eval", tmp_path / "eval_metrics.json"
    assert E.main(["--checkpoint", str(checkpoint), "--shards", str(root / "shards"), "--frames", str(root / "frames"),
                   "--out", str(out), "--metrics", str(metrics_path), "--params", str(tmp_path / "params.yaml")]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) == {"mit", "synthetic", "synthetic_val", "iiw", "saw"}
    assert metrics["mit"]["n_images"] == 1 and metrics["synthetic"]["n_images"] == 3
    for dataset in ("mit", "synthetic"):
        assert set(metrics[dataset]) >= {"model", "constant_shading", "chromaticity", "retinex", "weiss", "model_beats"}
        for method in ("model", "chromaticity", "weiss"):
            assert set(metrics[dataset][method]) == set(E.MIT_METRICS)
        assert {"mse_r", "mse_r_grey", "mse_r_shared", "lmse_avg_grey", "dssim_avg_shared"} <= set(E.MIT_METRICS)
        # the multi-image method sees the true structure of this Lambertian scene
        assert metrics[dataset]["weiss"]["mse_r"] < metrics[dataset]["constant_shading"]["mse_r"]
        # one scale for all channels can only cost more than one per channel
        for method in ("model", "chromaticity", "retinex"):
            assert metrics[dataset][method]["mse_r_shared"] >= metrics[dataset][method]["mse_r"] - 1e-12
        assert set(metrics[dataset]["model_beats"]["lmse_avg_shared"]) == set(E.BASELINES)
    for dataset, keys in (("iiw", ("whdr", "whdr_gamma")), ("saw", ("ap", "ap_gamma"))):
        assert metrics[dataset]["n_images"] == 1
        for method in ("model", "constant_shading", "chromaticity", "retinex"):
            assert all(0.0 <= metrics[dataset][method][k] <= 1.0 for k in keys), (dataset, method)
        assert set(metrics[dataset]["model_beats"][keys[1]]) == set(E.SINGLE_IMAGE_BASELINES)
    assert isinstance(metrics["mit"]["model_beats"]["mse_avg"]["weiss"], bool)
    report = (out / "report.md").read_text()
    assert "## mit (1 images)" in report and "Model beats" in report and report.count("paper Table 3 (") == 3
    for _, caption in E.REPORT_TABLES:  # every table says how its columns are scored
        assert caption in report
    assert "| chromaticity |" in report and "- whdr_gamma: constant_shading:" in report
    grid = np.asarray(Image.open(out / "grids" / "mit" / "blocks.png"))
    assert grid.shape[0] == 48 and grid.shape[1] == 5 * 64 + 4 * 4
    assert (out / "grids" / "synthetic" / "synth_a_0000.png").exists() and (out / "grids" / "iiw" / "7.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["step"] == 3 and config["model_config"]["depth"] == 3


def test_evaluate_skips_missing_datasets_with_a_message(tmp_path, checkpoint, capsys):
    results, skipped = E.run_evaluation(E.model_predictor(E_model(checkpoint)), mit_dir=tmp_path / "absent",
                                        frames_dir=None, shards_dir=None, iiw_dir=None, saw_dir=None,
                                        max_images=2, out_dir=tmp_path / "out")
    assert results == {}
    assert "not found" in skipped["mit"] and "not configured" in skipped["iiw"]
    assert "skipping mit" in capsys.readouterr().err
    assert "## Skipped" in (tmp_path / "out" / "report.md").read_text()


def E_model(path):
    from training.model import load_checkpoint

    return load_checkpoint(path)[0]


def test_decompose_sizes_and_cli(tmp_path, checkpoint):
    assert D.network_size(334, 334, 128) == (384, 384)
    assert D.network_size(1000, 500, 32, long_side=384) == (384, 192)
    model = E_model(checkpoint)
    srgb = np.random.default_rng(0).uniform(0, 1, (30, 45, 3))
    result = D.decompose(model, srgb)
    assert result.reflectance.shape == (30, 45, 3) and result.shading.shape == (30, 45) and result.light.shape == (3,)
    assert (result.reflectance > 0).all() and (result.shading > 0).all()
    Image.fromarray(np.round(255 * srgb).astype(np.uint8)).save(tmp_path / "photo.jpg")
    assert D.main([str(tmp_path / "photo.jpg"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "photo_reflectance.png")).shape == (30, 45, 3)
    assert D.main([str(tmp_path / "photo.jpg"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "l"), "--linear"]) == 0
    shading = cv2.imread(str(tmp_path / "l" / "photo_shading.png"), cv2.IMREAD_UNCHANGED)
    assert shading.dtype == np.uint16 and shading.shape == (30, 45)
    assert json.loads((tmp_path / "l" / "photo_light.json").read_text())["encoding"] == "linear16"


def test_mit_loader_on_real_data():
    obj = shared_path("mit-intrinsic", "apple")
    data = E.load_mit_object(obj)
    assert data["diffuse"].shape == data["reflectance"].shape == data["shading"].shape + (3,)
    assert data["lights"].shape[0] == 10 and data["mask"].dtype == bool and 0.1 < data["mask"].mean() < 0.9
    # diffuse = reflectance x shading up to one scale per channel (the loader keeps RGB order and linear values)
    for c in range(3):
        product = data["reflectance"][..., c] * data["shading"]
        alpha = np.sum(product * data["diffuse"][..., c] * data["mask"]) / np.sum(product**2 * data["mask"])
        residual = np.abs(data["diffuse"][..., c] - alpha * product)[data["mask"]].mean()
        assert residual < 0.1 * data["diffuse"][..., c][data["mask"]].mean()


def test_iiw_scores_both_the_linear_reflectance_and_the_authors_gamma(tmp_path):
    """A predictor with a fixed reflectance whose WHDR verdicts the 1/2.2 gamma flips (values as test_metrics)."""
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(tmp_path / "5.png")
    points = [{"id": i + 1, "x": (i + 0.5) / 4, "y": 0.5, "opaque": True} for i in range(4)]
    (tmp_path / "5.json").write_text(json.dumps({"intrinsic_points": points, "intrinsic_comparisons": [
        {"point1": 1, "point2": 2, "darker": "1", "darker_score": 0.9},  # ratio 2.5: '1' with and without gamma
        {"point1": 2, "point2": 3, "darker": "E", "darker_score": 1.0},  # 1.2: '1' linear, 'E' with gamma
        {"point1": 2, "point2": 4, "darker": "1", "darker_score": 0.4}]}))  # 1.15: '1' linear, 'E' with gamma
    refl = np.repeat(np.tile([0.2, 0.5, 0.6, 0.575], (4, 1))[..., None], 3, axis=2)
    summary, rows = E.evaluate_iiw(lambda srgb: (refl, np.ones((4, 4))), tmp_path, max_images=5)
    assert summary["model"]["whdr"] == pytest.approx(1.0 / 2.3)
    assert summary["model"]["whdr_gamma"] == pytest.approx(0.4 / 2.3)
    assert set(summary) == {"n_images", "model", *E.SINGLE_IMAGE_BASELINES}


def test_only_the_manifests_sequences_are_scored(tmp_path, checkpoint):
    """A frames folder left by a source since removed from params (not in the manifest) is not scored."""
    root = make_fixtures(tmp_path)
    shutil.copytree(root / "frames" / "synth_a", root / "frames" / "removed_source")
    splits = E.splits_from_manifest(root / "shards")
    summary, rows = E.evaluate_synthetic(E.model_predictor(E_model(checkpoint)), root / "frames", 10, splits)
    assert {r["image"].split("/")[0] for r in rows} == {"synth_a"}


def test_decompose_reads_16bit_grey_and_names_bad_inputs(tmp_path, checkpoint, capsys):
    grey = np.tile(np.linspace(2000, 40000, 40), (30, 1)).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "grey16.png"), grey)
    srgb = D.read_srgb(tmp_path / "grey16.png")
    np.testing.assert_allclose(srgb[..., 1], grey / 65535.0)  # not ~all white, as PIL's convert("RGB") made it
    assert D.main([str(tmp_path / "grey16.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 0
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(SystemExit) as exit_info:
        D.main([str(tmp_path / "notes.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 1 and "notes.png" in capsys.readouterr().err
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "grey16.png"), "--checkpoint", str(tmp_path / "text.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "text.pt" in err and "not a readable PyTorch checkpoint" in err


def test_flip_average_is_mirror_equivariant_and_the_mean_of_both_passes(checkpoint):
    model = E_model(checkpoint)
    with torch.no_grad():  # a model whose outputs are far from mirror-symmetric
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    srgb = np.random.default_rng(1).uniform(0, 1, (24, 40, 3))
    mirror = np.ascontiguousarray(srgb[:, ::-1])
    plain, plain_m = D.decompose(model, srgb), D.decompose(model, mirror)
    assert not np.allclose(np.log(plain.shading), np.log(plain_m.shading)[:, ::-1], atol=1e-3)
    avg, avg_m = D.decompose(model, srgb, flip_average=True), D.decompose(model, mirror, flip_average=True)
    np.testing.assert_allclose(np.log(avg_m.shading)[:, ::-1], np.log(avg.shading), atol=1e-4)
    np.testing.assert_allclose(np.log(avg_m.reflectance)[:, ::-1], np.log(avg.reflectance), atol=1e-4)
    expect = (np.log(plain.reflectance) + np.log(plain_m.reflectance)[:, ::-1]) / 2  # geometric mean of the passes
    np.testing.assert_allclose(np.log(avg.reflectance), expect, atol=1e-4)


def test_scale_average_is_the_log_mean_of_the_passes_at_each_scale(tmp_path, checkpoint):
    """scale_average=(0.5,) on a 32x48 image (sides multiples of the network's) is the log-space mean of the plain
    pass and the pass at long side 24, each resized back: reflectance, shading and light; the CLI takes the same."""
    model = E_model(checkpoint)
    srgb = np.random.default_rng(2).uniform(0, 1, (32, 48, 3))
    plain, half = D.decompose(model, srgb, residual_split=None), D.decompose(model, srgb, 24, residual_split=None)
    assert not np.allclose(np.log(plain.shading), np.log(half.shading), atol=1e-3)
    avg = D.decompose(model, srgb, residual_split=None, scale_average=(0.5,))
    for layer in ("reflectance", "shading", "light"):
        expect = (np.log(getattr(plain, layer)) + np.log(getattr(half, layer))) / 2
        np.testing.assert_allclose(np.log(getattr(avg, layer)), expect, atol=1e-5, err_msg=layer)
    with pytest.raises(ValueError, match="scale_average"):
        D.decompose(model, srgb, scale_average=(0.0,))
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                "--scale-average", "-1"])


def test_softened_image_divides_by_the_shading_about_its_median_by_hand():
    """Three pixels, linear 0.5, 0.2, 0.05 (all channels), shading 0.8, 0.4, 0.1: the median log shading is log 0.4,
    so with g = 1 the linear image becomes 0.5 / 2, 0.2 / 1, 0.05 / 0.25 = 0.25, 0.2, 0.2 and the log shading taken
    out is log 2, 0, log 0.25; with g = 0.5 and a pixel lifted above 1 (linear 0.9 under shading 0.1 -> 0.9 x 2 =
    1.8) everything is divided by 1.8 and log 1.8 is taken out too."""
    linear = torch.tensor([0.5, 0.2, 0.05]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    log_s = torch.tensor([0.8, 0.4, 0.1]).log().view(1, 1, 1, 3)
    softer, taken = D.softened_image(linear_to_srgb(linear), log_s, 1.0)
    np.testing.assert_allclose(srgb_to_linear(softer)[0, :, 0].numpy(), [[0.25, 0.2, 0.2]] * 3, rtol=1e-4)
    np.testing.assert_allclose(taken[0, 0, 0].numpy(), np.log([2.0, 1.0, 0.25]), atol=1e-5)
    linear = torch.tensor([0.5, 0.2, 0.9]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    log_s = torch.tensor([0.8, 0.4, 0.1]).log().view(1, 1, 1, 3)  # the median is still 0.4
    softer, taken = D.softened_image(linear_to_srgb(linear), log_s, 0.5)
    expect = np.array([0.5 / 2 ** 0.5, 0.2, 0.9 * 2]) / 1.8
    np.testing.assert_allclose(srgb_to_linear(softer)[0, 0, 0].numpy(), expect, rtol=1e-4)
    np.testing.assert_allclose(taken[0, 0, 0].numpy(), 0.5 * np.log([2.0, 1.0, 0.25]) + np.log(1.8), atol=1e-5)


def test_soften_light_decodes_the_softened_image_and_gives_back_its_shading(tmp_path, checkpoint):
    """soften_light g: the reflectance and light are the network's on the image softened by the first pass's
    shading, the shading that pass's times what was taken out, and the test-time steps apply after; the CLI and
    the params schema reject g outside (0, 1]."""
    model = E_model(checkpoint)
    with torch.no_grad():  # a model whose shading is far from flat, so that the softened image differs
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    srgb = np.random.default_rng(3).uniform(0.1, 0.9, (32, 48, 3)).astype(np.float32)
    full = torch.from_numpy(srgb.transpose(2, 0, 1).copy())[None]
    plain = D.decompose(model, srgb)
    softer, taken = D.softened_image(full, torch.from_numpy(np.log(plain.shading)).float()[None, None], 0.7)
    again = D.decompose(model, softer[0].permute(1, 2, 0).numpy())
    result = D.decompose(model, srgb, soften_light=0.7)
    expect = dict(reflectance=again.reflectance, shading=again.shading * np.exp(taken[0, 0].double().numpy()),
                  light=again.light)
    for layer, value in expect.items():
        np.testing.assert_allclose(np.log(getattr(result, layer)), np.log(value), atol=1e-4, err_msg=layer)
    assert not np.allclose(np.log(result.reflectance), np.log(plain.reflectance), atol=1e-3)
    # the test-time steps (here the residual split) apply to the second pass's layers against the input image
    log_r, log_s = np.log(again.reflectance), np.log(again.shading) + taken[0, 0].double().numpy()
    residual = np.log(srgb_to_linear(srgb.astype(np.float64))) - log_r - log_s[..., None] - np.log(again.light)
    result = D.decompose(model, srgb, residual_split=0.5, soften_light=0.7)
    np.testing.assert_allclose(np.log(result.reflectance), log_r + 0.5 * residual, atol=1e-4)
    np.testing.assert_allclose(np.log(result.shading), log_s + 0.5 * residual.mean(axis=2), atol=1e-4)
    with pytest.raises(ValueError, match="soften_light"):
        D.decompose(model, srgb, soften_light=1.5)
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "x.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                "--soften-light", "0"])
    from pipeline.params import ParamsError, validate_params
    with pytest.raises(ParamsError, match="soften_light"):
        validate_params({"evaluate": {"soften_light": 2.0}})


def test_mit_long_side_sets_the_network_size_for_mit_only(tmp_path, checkpoint):
    """The MIT object (48x64 here) is decomposed at long side 32 when evaluate.mit_long_side = 32: its model scores
    then equal those of decomposing a 24x32 network input by hand; the baselines' scores do not change."""
    root = make_fixtures(tmp_path)
    scores = {}
    for long_side in (None, 32):
        params = {"sources": [{"name": "synth_a", "url": "synthetic://sun"}],
                  "evaluate": {"mit_dir": str(root / "mit"), "max_images": 1, "mit_long_side": long_side}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        metrics = tmp_path / f"m{long_side}.json"
        assert E.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / f"e{long_side}"), "--metrics",
                       str(metrics), "--params", str(tmp_path / "params.yaml")]) == 0
        scores[long_side] = json.loads(metrics.read_text())["mit"]
    assert scores[32]["retinex"] == scores[None]["retinex"]
    assert scores[32]["model"]["mse_r"] != scores[None]["model"]["mse_r"]
    data = E.load_mit_object(root / "mit" / "blocks")
    from pipeline.params import EvaluateParams

    by_hand = D.decompose(E_model(checkpoint), E.mit_srgb(data["diffuse"]), long_side=32,
                          **D.decompose_options(EvaluateParams()))  # the params defaults apply
    expect = E.M.mit_scores(data["reflectance"], data["shading"], by_hand.reflectance, by_hand.shading, data["mask"])
    assert scores[32]["model"]["mse_r"] == pytest.approx(expect["mse_r"], rel=1e-6)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_residual_split_moves_the_reconstruction_residual_into_the_layers(checkpoint, share):
    """numpy reference: eps = log(max(linear(srgb), 1e-4)) - log R - log S - log c of the raw layers; R gets
    share * eps, S (1 - share) * its channel mean."""
    model = E_model(checkpoint)
    srgb = np.random.default_rng(2).uniform(0, 1, (20, 28, 3))
    raw = D.decompose(model, srgb)
    split = D.decompose(model, srgb, residual_split=share)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    eps = np.log(np.maximum(linear, 1e-4)) - np.log(raw.reflectance) - np.log(raw.shading)[..., None] - np.log(raw.light)
    assert np.abs(eps).mean() > 0.05  # the raw layers do not reproduce the image
    np.testing.assert_allclose(np.log(split.reflectance), np.log(raw.reflectance) + share * eps, atol=2e-4)
    np.testing.assert_allclose(np.log(split.shading), np.log(raw.shading) + (1 - share) * eps.mean(axis=2), atol=2e-4)
    product = split.reflectance * split.shading[..., None] * split.light
    if share == 1.0:  # the layers reproduce the image exactly
        np.testing.assert_allclose(product, np.maximum(linear, 1e-4), rtol=1e-3)
    with pytest.raises(ValueError, match="residual_split"):
        D.decompose(model, srgb, residual_split=1.5)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_residual_chroma_to_reflectance_gives_the_colour_part_to_the_reflectance(checkpoint, share):
    """numpy reference as above: R gets eps - (1 - share) * mean_c(eps), S (1 - share) * mean_c(eps), so the layers
    reproduce the image at any share; the shading is the same as the plain split's."""
    model = E_model(checkpoint)
    srgb = np.random.default_rng(4).uniform(0, 1, (20, 28, 3))
    raw = D.decompose(model, srgb)
    plain = D.decompose(model, srgb, residual_split=share)
    split = D.decompose(model, srgb, residual_split=share, residual_chroma_to_reflectance=True)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    eps = np.log(np.maximum(linear, 1e-4)) - np.log(raw.reflectance) - np.log(raw.shading)[..., None] - np.log(raw.light)
    grey = eps.mean(axis=2, keepdims=True)
    assert np.abs(eps - grey).mean() > 0.05  # the residual has a colour part
    np.testing.assert_allclose(np.log(split.reflectance), np.log(raw.reflectance) + eps - (1 - share) * grey, atol=2e-4)
    np.testing.assert_allclose(np.log(split.shading), np.log(plain.shading), atol=1e-9)
    product = split.reflectance * split.shading[..., None] * split.light
    np.testing.assert_allclose(product, np.maximum(linear, 1e-4), rtol=1e-3)
    # without a split there is no residual to give: the raw layers
    np.testing.assert_array_equal(D.decompose(model, srgb, residual_chroma_to_reflectance=True).reflectance,
                                  raw.reflectance)


def test_decompose_cli_residual_chroma(tmp_path, checkpoint):
    srgb = np.random.default_rng(5).uniform(0, 1, (16, 24, 3))
    Image.fromarray(np.round(255 * srgb).astype(np.uint8)).save(tmp_path / "p.png")
    base = [str(tmp_path / "p.png"), "--checkpoint", str(checkpoint), "--linear", "--flatten-reflectance", "none",
            "--chroma-edges", "none", "--residual-split", "0.5"]
    assert D.main([*base, "--out", str(tmp_path / "colour"), "--residual-chroma-to-reflectance"]) == 0
    assert D.main([*base, "--out", str(tmp_path / "shared"), "--residual-chroma-split"]) == 0
    read = lambda d, layer: cv2.imread(str(tmp_path / d / f"p_{layer}.png"), cv2.IMREAD_UNCHANGED)  # noqa: E731
    np.testing.assert_array_equal(read("colour", "shading"), read("shared", "shading"))
    assert not np.array_equal(read("colour", "reflectance"), read("shared", "reflectance"))
    with pytest.raises(SystemExit):  # one or the other
        D.main([*base, "--out", str(tmp_path / "bad"), "--residual-chroma-split", "--residual-chroma-to-reflectance"])
    assert not (tmp_path / "bad").exists()


def test_decompose_cli_residual_split(tmp_path, checkpoint):
    srgb = np.random.default_rng(3).uniform(0, 1, (16, 24, 3))
    Image.fromarray(np.round(255 * srgb).astype(np.uint8)).save(tmp_path / "p.png")
    base = ["--checkpoint", str(checkpoint), "--linear", "--flatten-reflectance", "none"]  # the split alone
    assert D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "one"), "--residual-split", "1"]) == 0
    assert D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "raw"), "--residual-split", "none"]) == 0
    one = cv2.imread(str(tmp_path / "one" / "p_shading.png"), cv2.IMREAD_UNCHANGED)
    raw = cv2.imread(str(tmp_path / "raw" / "p_shading.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(one, raw)  # a = 1 leaves the shading as the decoder made it
    assert not np.array_equal(cv2.imread(str(tmp_path / "one" / "p_reflectance.png"), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(tmp_path / "raw" / "p_reflectance.png"), cv2.IMREAD_UNCHANGED))
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "bad"), "--residual-split", "2"])
    assert D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "edges"), "--chroma-edges", "0.05"]) == 0
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "bad"), "--chroma-edges", "0"])
    with pytest.raises(SystemExit):
        D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "bad"), "--chroma-edge-min-pixels", "-1"])
    assert not (tmp_path / "bad").exists()


def _painted_image(shadow: bool) -> np.ndarray:
    """(12, 16, 3) sRGB: a green-painted left half beside white, or (shadow) a grey shadow over the left half of a
    white surface (same chromaticity, a darker level); the top row is black (too dark: not re-integrated)."""
    linear = np.full((12, 16, 3), 0.6)
    linear[:, :8] = (0.15, 0.15, 0.15) if shadow else (0.05, 0.3, 0.08)
    linear[0] = 0.0
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def test_chroma_edge_shading_flattens_a_paint_step_and_keeps_a_shadow_step():
    """Hand-computed: the shading the network gave the paint (log step -0.8 over two columns) has all its
    differences on pairs touching the green/white edge cut and none elsewhere (all 0), so the integral is flat at
    the mean; under a grey shadow edge (no chromaticity edge) the same step, plus shading that varies down the
    image, is integrated back unchanged. Dark pixels keep their log shading."""
    log_s = np.zeros((12, 16))
    log_s[:, :7], log_s[:, 7] = -0.8, -0.4  # a blurred step, as a decoder makes it
    valid = np.ones((12, 16), bool)
    valid[0] = False
    flat = D.chroma_edge_shading(_painted_image(shadow=False), log_s, threshold=0.05)
    np.testing.assert_array_equal(flat[0], log_s[0])
    np.testing.assert_allclose(flat[1:], log_s[valid].mean(), atol=1e-6)
    varying = log_s + 0.01 * np.arange(12)[:, None]
    np.testing.assert_allclose(D.chroma_edge_shading(_painted_image(shadow=True), varying, threshold=0.05), varying,
                               atol=1e-6)


def test_chroma_edge_min_pixels_ignores_a_speck_and_keeps_a_paint_boundary():
    """One green pixel on white (with the edge band, an 8-connected group of 5 edge pixels) under a shading dip:
    with min_pixels 0 its four pairs are cut, so the dip is gone; with min_pixels 6 the speck is no edge and the
    shading integrates back unchanged. The painted image's edge pixels form one group of 37 (hand-counted: the
    green/white boundary's columns 7-8 in rows 1-11, 22, plus the green's edge against the black top row, columns
    0-7 of rows 0 and 1, 15 more): cut at 37, no edge at 38."""
    linear = np.full((12, 16, 3), 0.6)
    linear[6, 4] = (0.05, 0.3, 0.08)
    speck = linear_to_srgb(linear)
    log_s = np.zeros((12, 16))
    log_s[6, 4] = -0.5
    np.testing.assert_allclose(D.chroma_edge_shading(speck, log_s, 0.05, min_pixels=0), log_s.mean(), atol=1e-6)
    np.testing.assert_allclose(D.chroma_edge_shading(speck, log_s, 0.05, min_pixels=6), log_s, atol=1e-6)
    painted = _painted_image(shadow=False)
    step = np.zeros((12, 16))
    step[:, :7], step[:, 7] = -0.8, -0.4
    flat = D.chroma_edge_shading(painted, step, 0.05, min_pixels=37)
    assert np.ptp(flat[1:]) < 1e-6
    np.testing.assert_allclose(D.chroma_edge_shading(painted, step, 0.05, min_pixels=38), step, atol=1e-6)


def test_chroma_edges_moves_shading_into_reflectance_and_keeps_the_product(checkpoint):
    model = E_model(checkpoint)
    srgb = np.repeat(np.repeat(_painted_image(shadow=False), 2, axis=0), 2, axis=1)
    plain, refined = D.decompose(model, srgb, residual_split=0.5), D.decompose(model, srgb, residual_split=0.5,
                                                                                chroma_edges=0.05)
    np.testing.assert_allclose(refined.reflectance * refined.shading[..., None],
                               plain.reflectance * plain.shading[..., None], rtol=1e-9)
    np.testing.assert_allclose(np.log(refined.shading), D.chroma_edge_shading(srgb, np.log(plain.shading), 0.05))
    with pytest.raises(ValueError, match="chroma_edges"):
        D.decompose(model, srgb, chroma_edges=0.0)
    with pytest.raises(ValueError, match="chroma_edge_min_pixels"):
        D.decompose(model, srgb, chroma_edges=0.05, chroma_edge_min_pixels=-1)


def test_shading_in_reflectance_halves_the_variation_inside_one_paint():
    """Hand-computed: green (columns 0-7) beside white (8-15), every pixel bright; the edge pixels are columns 7
    and 8. The network's grey log reflectance is a shading ramp of 0.1 per column with a paint step of -1 between
    columns 7 and 8 (constant down the columns). With keep 0.5 the pairs (6,7), (7,8), (8,9) touch the edge and keep
    0.1, -0.9, 0.1; the twelve others become 0.05; each row is a chain, so the least-squares integral is their
    running sum, shifted to the same mean. What moves to the shading is the difference; keep 1 moves nothing."""
    linear = np.full((12, 16, 3), 0.6)
    linear[:, :8] = (0.05, 0.3, 0.08)
    srgb = linear_to_srgb(linear)
    columns = 0.1 * np.arange(16) - np.where(np.arange(16) >= 8, 1.0, 0.0)
    log_r = np.repeat(np.broadcast_to(columns, (12, 16))[..., None], 3, axis=2) + np.array([0.2, -0.1, 0.0])
    kept = np.array([0.05] * 6 + [0.1, -0.9, 0.1] + [0.05] * 6)
    flat = np.concatenate([[0.0], np.cumsum(kept)])
    flat += columns.mean() - flat.mean()
    moved = D.shading_in_reflectance(srgb, log_r, keep=0.5, threshold=0.05)
    np.testing.assert_allclose(moved, np.broadcast_to(columns - flat, (12, 16)), atol=1e-6)
    np.testing.assert_allclose(D.shading_in_reflectance(srgb, log_r, keep=1.0, threshold=0.05), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="keep"):
        D.shading_in_reflectance(srgb, log_r, keep=1.5, threshold=0.05)


def test_chromaticity_explained_is_each_colours_mean_when_the_colours_are_far_apart():
    """Hand-computed: green (columns 0-7) beside white (8-15); the rg chromaticities are 0.4 apart, so with bandwidth
    0.02 each colour's kernel gives the other weight exp(-200), and the regression at a pixel is the mean of the
    layer over the bright pixels of its own colour. A dark pixel (mean sRGB below DARK_SRGB) adds nothing to that
    mean but still gets its chromaticity's value; an all-dark image gives zeros."""
    linear = np.full((6, 16, 3), 0.6)
    linear[:, :8] = (0.05, 0.3, 0.08)
    linear[0, 0] = (0.0001, 0.0006, 0.00016)  # dark, green's chromaticity
    srgb = linear_to_srgb(linear)
    layer = np.arange(96, dtype=np.float64).reshape(6, 16) % 7
    bright_green = np.ones((6, 16), bool)
    bright_green[:, 8:] = False
    bright_green[0, 0] = False
    expected = np.where(np.arange(16) < 8, layer[bright_green].mean(), layer[:, 8:].mean())
    np.testing.assert_allclose(D.chromaticity_explained(srgb, layer, 0.02), np.broadcast_to(expected, (6, 16)),
                               atol=1e-9)
    np.testing.assert_array_equal(D.chromaticity_explained(np.zeros((4, 5, 3)), np.ones((4, 5)), 0.02), 0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        D.chromaticity_explained(srgb, layer, 0.0)


def test_chromaticity_explained_matches_a_dense_kernel_regression():
    """Random colours on 9x11 pixels against the O(N^2) sum over all pixel pairs with the exact chromaticities:
    the binned regression (bin width 1/128) is within 5% of the regression's own range at bandwidth 0.1, and within
    1e-3 when the dense sum uses the bin centres too (left: the blur's sampled, truncated Gaussian)."""
    rng = np.random.default_rng(3)
    linear = rng.uniform(0.05, 1.0, (9, 11, 3))
    srgb = linear_to_srgb(linear)
    layer = rng.normal(size=(9, 11))
    chroma = (linear[..., :2] / linear.sum(axis=2, keepdims=True)).reshape(-1, 2)
    centres = (np.floor(chroma * D.CHROMA_BINS) + 0.5) / D.CHROMA_BINS

    def dense(points):
        weights = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1) / (2 * 0.1 ** 2))
        return (weights @ layer.ravel() / weights.sum(1)).reshape(9, 11)

    binned = D.chromaticity_explained(srgb, layer, 0.1)
    np.testing.assert_allclose(binned, dense(centres), atol=1e-3)
    assert np.abs(binned - dense(chroma)).max() < 0.05 * np.ptp(dense(chroma))


def test_flatten_chroma_bandwidth_keeps_lightness_that_follows_a_gradual_colour_change():
    """A red-to-yellow ramp with no chromaticity step over the threshold (one region) whose reflectance is the image
    (lightness rises with the colour): flattening everything (keep 0) moves all of its grey variation to the
    shading, while with the chromaticity's part set aside (bandwidth 0.02, the ramp spans ~0.25 in g) less than a
    fifth of it moves; a shading ramp down the rows, which the colour does not predict, still moves."""
    columns = np.linspace(0.0, 1.0, 40)
    linear = np.stack(np.broadcast_arrays(0.5, 0.1 + 0.5 * columns, 0.05), axis=-1)[None].repeat(12, axis=0)
    srgb = linear_to_srgb(linear)
    assert not D.chromaticity_edge_pixels(srgb, 0.03).any()
    log_r = np.log(linear)
    grey = log_r.mean(axis=2)
    everything = D.shading_in_reflectance(srgb, log_r, keep=0.0, threshold=0.03)
    np.testing.assert_allclose(everything, grey - grey.mean(), atol=1e-6)
    kept = D.shading_in_reflectance(srgb, log_r, keep=0.0, threshold=0.03, chroma_bandwidth=0.02)
    assert np.ptp(kept) < 0.2 * np.ptp(everything)
    rows = 0.05 * np.arange(12)[:, None, None]
    with_shading = D.shading_in_reflectance(srgb, log_r + rows, keep=0.0, threshold=0.03, chroma_bandwidth=0.02)
    np.testing.assert_allclose(with_shading - kept, np.broadcast_to(rows[..., 0] - rows.mean(), (12, 40)), atol=1e-6)


def test_flatten_reflectance_moves_reflectance_into_shading_and_keeps_the_product(checkpoint, tmp_path):
    model = E_model(checkpoint)
    srgb = np.repeat(np.repeat(_painted_image(shadow=False), 2, axis=0), 2, axis=1)
    plain = D.decompose(model, srgb, residual_split=0.5)
    flat = D.decompose(model, srgb, residual_split=0.5, flatten_reflectance=0.5, flatten_threshold=0.05)
    np.testing.assert_allclose(flat.reflectance * flat.shading[..., None], plain.reflectance * plain.shading[..., None],
                               rtol=1e-9)
    moved = D.shading_in_reflectance(srgb, np.log(plain.reflectance), 0.5, 0.05)
    np.testing.assert_allclose(np.log(flat.shading), np.log(plain.shading) + moved, atol=1e-9)
    with pytest.raises(ValueError, match="flatten_reflectance"):
        D.decompose(model, srgb, flatten_reflectance=-0.1)
    with pytest.raises(ValueError, match="flatten_threshold"):
        D.decompose(model, srgb, flatten_reflectance=0.5, flatten_threshold=0.0)
    banded = D.decompose(model, srgb, residual_split=0.5, flatten_reflectance=0.5, flatten_threshold=0.05,
                         flatten_chroma_bandwidth=0.05)
    moved = D.shading_in_reflectance(srgb, np.log(plain.reflectance), 0.5, 0.05, chroma_bandwidth=0.05)
    np.testing.assert_allclose(np.log(banded.shading), np.log(plain.shading) + moved, atol=1e-9)
    with pytest.raises(ValueError, match="flatten_chroma_bandwidth"):
        D.decompose(model, srgb, flatten_reflectance=0.5, flatten_chroma_bandwidth=0.0)
    base = ["--checkpoint", str(checkpoint), "--long-side", "32"]
    cv2.imwrite(str(tmp_path / "p.png"), np.round(255 * srgb[..., ::-1]).astype(np.uint8))
    for flag, bad in (("--flatten-reflectance", "2"), ("--flatten-threshold", "none"), ("--flatten-threshold", "0"),
                      ("--flatten-chroma-bandwidth", "0"), ("--flatten-chroma-bandwidth", "x")):
        with pytest.raises(SystemExit):
            D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "bad"), flag, bad])
    assert not (tmp_path / "bad").exists()
    assert D.main([str(tmp_path / "p.png"), *base, "--out", str(tmp_path / "ok"), "--flatten-reflectance", "none"]) == 0


class _OwnStatisticsNorm(torch.nn.Module):
    """Reference for norm_statistics="image": a BatchNorm layer's affine map after normalising by the per-channel
    mean and biased variance of the batch it is given, written out."""

    def __init__(self, bn: torch.nn.BatchNorm2d):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + self.bn.eps) * self.bn.weight.view(1, -1, 1, 1) + self.bn.bias.view(1, -1, 1, 1)


def test_image_norm_statistics_normalise_each_pass_by_its_own_input(checkpoint):
    model = E_model(checkpoint)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    with torch.no_grad():  # running averages far from what any image gives
        for m in norms:
            m.running_mean.fill_(0.5)
            m.running_var.fill_(4.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model)
    for parent in list(reference.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(parent, name, _OwnStatisticsNorm(child))
    srgb = np.random.default_rng(3).uniform(0, 1, (32, 48, 3))
    own = D.decompose(model, srgb, residual_split=None, flip_average=True, norm_statistics="image")
    expect = D.decompose(reference, srgb, residual_split=None, flip_average=True)
    running = D.decompose(model, srgb, residual_split=None, flip_average=True)
    for layer in ("reflectance", "shading", "light"):
        np.testing.assert_allclose(np.log(getattr(own, layer)), np.log(getattr(expect, layer)), atol=1e-4, err_msg=layer)
    assert not np.allclose(np.log(own.shading), np.log(running.shading), atol=1e-2)
    for key, value in model.state_dict().items():  # the running averages are back, untouched
        assert torch.equal(value, state[key]), key
    with pytest.raises(ValueError, match="norm_statistics"):
        D.decompose(model, srgb, norm_statistics="batch")


def test_resize_image_shrinks_by_block_means_and_keeps_same_size():
    """Halving is the mean of each 2x2 block (area resampling), computed here by hand; same size is the input."""
    rng = np.random.default_rng(3)
    image = rng.random((6, 8, 3))
    half = E.resize_image(image, (3, 4))
    blocks = image.reshape(3, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(half, blocks, atol=1e-6)
    assert E.resize_image(image, (6, 8)) is image
