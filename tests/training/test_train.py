"""Train stage on tiny real shards (2 sequences x 4 frames 64x96, written by pipeline.shards.build_shards, read by
the real loader, small IntrinsicUNet, full loss): finite, decreasing loss; DVCLive files; checkpoint loadable with
weights_only=True; resume bit-identical to a straight run; a non-finite loss stops naming the sequence."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.code_closure import source_digest
from pipeline.params import ParamsError, ShardsParams, validate_params
from pipeline.shards import build_shards
from tests.conftest import REPO
from tests.shard_fixtures import random_sequence, write_source
from training import train as T
from training.data import LoaderConfig, ParquetSequences
from training.loss import LossConfig, intrinsic_loss
from training.model import load_checkpoint

NAMES = ["seq_a", "seq_b"]


def raw_params(**train) -> dict:
    return {
        "sources": [{"name": n, "url": f"https://example.com/{n}.mp4"} for n in NAMES],
        "model": {"preset": "small"},
        "train": {"steps": 4, "frames_per_step": 3, "num_workers": 0, "log_every": 1, "checkpoint_every": 2,
                  "seed": 3, **train},
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for name in NAMES:
        frames, masks = random_sequence(rng, 4, 64, 96)
        write_source(root, name, frames, masks)
    params = ShardsParams(sequences_per_shard=1, val_fraction=0.0, shading_scales=4)
    manifest, _ = build_shards(NAMES, root / "frames", root / "masks", root / "shards", params)
    assert [k for s in manifest["splits"]["train"]["shards"] for k in s["keys"]] == NAMES
    return root / "shards"


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine (CPU-only)")


@pytest.mark.parametrize("asked, expected", [("cpu", torch.device("cpu")),
                                             pytest.param("cuda", torch.device("cuda", 0), marks=CUDA),
                                             pytest.param(None, torch.device("cuda", 0), marks=CUDA)])
def test_setup_device_resolves_cpu_and_cuda(asked, expected):
    """`train(device="cuda")` (bench/gpu_check's call) once died in torch.cuda.set_device, which rejects an
    index-less device: only a GPU showed it. Autocast is bf16 on a GPU that has it, off on the CPU."""
    setup = T.setup_device(validate_params(raw_params(amp=True)), asked)
    assert setup.device == expected
    if expected.type == "cuda":
        assert torch.cuda.current_device() == 0 and setup.amp_dtype in (torch.bfloat16, torch.float16)
    else:
        assert setup.amp_dtype is None


def test_cli_trains_logs_and_checkpoints(shards, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw_params(num_workers=1, lr_schedule="step")))
    out, live = tmp_path / "models", tmp_path / "dvclive"
    assert T.main(["--shards", str(shards), "--out", str(out), "--live", str(live), "--params", str(params_file)]) == 0

    # DVCLive: one row per logged step per term; metrics.json holds the last values and the step
    total = (live / "plots/metrics/loss/total.tsv").read_text().splitlines()
    assert total[0] == "step\ttotal" and [int(r.split("\t")[0]) for r in total[1:]] == [1, 2, 3, 4]
    losses = [float(r.split("\t")[1]) for r in total[1:]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    for term in T.TERMS:
        assert (live / f"plots/metrics/loss/{term}.tsv").exists()
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 4 and set(metrics["loss"]) == {"total", *T.TERMS}
    lrs = [float(r.split("\t")[1]) for r in (live / "plots/metrics/lr.tsv").read_text().splitlines()[1:]]
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])  # halved at steps round(4/3), round(8/3)
    assert not (live / "dvc.yaml").exists()  # the stage's dvc.yaml declares the files, DVCLive writes none

    # checkpoint: tensors / plain Python only, everything needed to resume, loadable by the evaluate side
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "model_config", "optimizer", "scheduler", "scaler", "step", "rng", "params", "data"} <= set(ckpt)
    assert ckpt["step"] == 4 and ckpt["params"]["train"]["steps"] == 4 and ckpt["data"]["keys"] == NAMES
    model, _ = load_checkpoint(out / "checkpoint.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["params"]["model"]["preset"] == "small" and config["train_keys"] == NAMES
    assert not list(out.glob(".*tmp"))  # no temp files left by the atomic writes


def test_resume_is_bit_identical(shards, tmp_path):
    # straight 4 steps with a worker process vs 2 steps in the main process + resume for 2 more
    straight = T.train(validate_params(raw_params(num_workers=1)), shards=shards, out=tmp_path / "a",
                       live=tmp_path / "live_a")
    params = validate_params(raw_params())
    T.train(params, shards=shards, out=tmp_path / "b", live=tmp_path / "live_b", stop_at=2)
    assert torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)["step"] == 2
    resumed = T.train(params, shards=shards, out=tmp_path / "b", live=tmp_path / "live_b", resume=True)

    a = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name  # weights and BatchNorm statistics
    for key, state in a["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][field]), (key, field)
    assert a["scheduler"] == b["scheduler"]
    assert straight["loss/total"] == resumed["loss/total"]
    rows = (tmp_path / "live_b/plots/metrics/loss/total.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == [1, 2, 3, 4]

    # changing the run-defining settings is refused
    with pytest.raises(ValueError, match="train.lr"):
        T.train(validate_params(raw_params(lr=2e-3)), shards=shards, out=tmp_path / "b", live=None, resume=True)


def test_cosine_schedule_logs_the_hand_computed_lr_and_resumes_bit_identical(shards, tmp_path):
    # 4 steps: step k (0-based) runs at lr (1 + cos(pi k / 4)) / 2; the log's row k + 1 is the lr step k used
    lr = 1e-3
    params = validate_params(raw_params(lr=lr, lr_schedule="cosine"))
    T.train(params, shards=shards, out=tmp_path / "a", live=tmp_path / "live_a")
    rows = (tmp_path / "live_a/plots/metrics/lr.tsv").read_text().splitlines()[1:]
    logged = [float(r.split("\t")[-1]) for r in rows]
    assert logged == pytest.approx([lr * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)], rel=1e-6)
    assert logged[0] == pytest.approx(lr) and logged[2] == pytest.approx(lr / 2)  # not the step schedule's lr at 2
    T.train(params, shards=shards, out=tmp_path / "b", live=None, stop_at=2)
    T.train(params, shards=shards, out=tmp_path / "b", live=None, resume=True)
    a = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)
    assert a["scheduler"] == b["scheduler"] and all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    with pytest.raises(ValueError, match="train.lr_schedule"):  # the step schedule does not resume it
        T.train(validate_params(raw_params(lr=lr, lr_schedule="step")), shards=shards, out=tmp_path / "b", live=None,
                resume=True)


def test_weight_decay_is_decoupled_from_the_adam_step(shards, tmp_path):
    # one step from the same initial weights w0 and the same gradients: AdamW's weights are Adam's minus lr * wd * w0
    # (decoupled decay, applied beside the Adam update, not added to the gradient)
    lr, decay = 1e-3, 0.5
    w0 = T.build_training(validate_params(raw_params()), T.Setup(torch.device("cpu"), None))[1].state_dict()
    for name, wd in (("adam", 0.0), ("adamw", decay)):
        T.train(validate_params(raw_params(lr=lr, weight_decay=wd)), shards=shards, out=tmp_path / name, live=None,
                stop_at=1)
    adam = torch.load(tmp_path / "adam/checkpoint.pt", weights_only=True)["model"]
    adamw = torch.load(tmp_path / "adamw/checkpoint.pt", weights_only=True)["model"]
    weights = [n for n, p in T.build_training(validate_params(raw_params()), T.Setup(torch.device("cpu"), None))[1]
               .named_parameters()]
    for name in weights:
        torch.testing.assert_close(adamw[name], adam[name] - lr * decay * w0[name], rtol=1e-5, atol=1e-8, msg=name)
    assert any(not torch.equal(adamw[n], adam[n]) for n in weights)


def test_ema_is_the_hand_computed_average_of_the_steps_weights(shards, tmp_path):
    # the weights after 1, 2 and 3 steps (straight runs stopped there; the schedule of 4 steps kept), averaged by
    # hand: e1 = w1, e_k = d e_(k-1) + (1 - d) w_k, for every parameter and floating-point buffer
    decay = 0.75
    params = validate_params(raw_params(ema_decay=decay))
    weights = []
    for k in (1, 2, 3):
        T.train(params, shards=shards, out=tmp_path / f"s{k}", live=None, stop_at=k)
        weights.append(torch.load(tmp_path / f"s{k}/checkpoint.pt", weights_only=True)["model"])
    ckpt = torch.load(tmp_path / "s3/checkpoint.pt", weights_only=True)
    assert ckpt["ema_updates"] == 3 and ckpt["ema"].keys() == ckpt["model"].keys()
    floats = [name for name, value in ckpt["ema"].items() if value.is_floating_point()]
    for name in floats:
        expect = weights[0][name].double()
        for w in weights[1:]:
            expect = decay * expect + (1 - decay) * w[name].double()
        torch.testing.assert_close(ckpt["ema"][name].double(), expect, rtol=1e-5, atol=1e-7, msg=name)
    assert len(floats) > 10
    last = floats[-1]
    assert not torch.equal(ckpt["ema"][last], ckpt["model"][last])  # the average is not the last weights
    # and the evaluate side decomposes with the average
    model, _ = load_checkpoint(tmp_path / "s3/checkpoint.pt")
    assert all(torch.equal(v, ckpt["ema"][k]) for k, v in model.state_dict().items())

    # a resumed run's average is the straight run's, bit for bit
    T.train(params, shards=shards, out=tmp_path / "s2", live=None, resume=True, stop_at=3)
    resumed = torch.load(tmp_path / "s2/checkpoint.pt", weights_only=True)
    assert all(torch.equal(v, resumed["ema"][k]) for k, v in ckpt["ema"].items()) and resumed["ema_updates"] == 3
    with pytest.raises(ValueError, match="train.ema_decay"):  # another decay does not resume it
        T.train(validate_params(raw_params(ema_decay=0.5)), shards=shards, out=tmp_path / "s2", live=None,
                resume=True)


def test_step_sampler_is_a_function_of_seed_and_step(shards):
    config = LoaderConfig(frames=3, seed=3)
    one = T.StepSequences(ParquetSequences(shards, "train", config), seed=3)
    again = T.StepSequences(ParquetSequences(shards, "train", config), seed=3)
    # every sequence once per epoch, for one process or split over two
    assert sorted(one.locate(s)[0] for s in range(2)) == [0, 1]
    ranks = [T.StepSequences(one.sequences, seed=3, rank=r, world=2) for r in range(2)]
    assert sorted(r.locate(5)[0] for r in ranks) == [0, 1]
    for step in (3, 0, 7):  # any order: no state carried between steps
        x, y = one[step], again[step]
        assert x["key"] == y["key"] and torch.equal(x["srgb"], y["srgb"]) and torch.equal(x["mask"], y["mask"])
    assert tuple(one[0]["srgb"].shape) == (3, 3, 256, 384)  # the loader's paper bucket


def test_non_finite_loss_stops_naming_the_sequence(shards, tmp_path, capsys):
    raw = raw_params()
    raw["loss"] = {"w_shading_l1": float("inf")}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "models"
    code = T.main(["--shards", str(shards), "--out", str(out), "--live", str(tmp_path / "live"),
                   "--params", str(params_file)])
    assert code == 1
    first = T.StepSequences(ParquetSequences(shards, "train", LoaderConfig()), seed=3)
    expected = NAMES[first.locate(0)[0]]
    err = capsys.readouterr().err
    assert "non-finite loss" in err and f"sequence {expected!r}" in err and "step 0" in err, err
    assert not (out / "checkpoint.pt").exists()  # nothing written over a good checkpoint


def test_lattice_built_in_loader_gives_the_same_step(shards):
    """On CPU the loader workers prebuild the reflectance-smoothness lattice; the loss must not change."""
    params = validate_params(raw_params())
    loss_config = LossConfig.from_params(params.loss)
    _, plain = T.make_step_loader(shards, params, start=0, stop=1)
    _, prebuilt = T.make_step_loader(shards, params, start=0, stop=1, lattice_config=loss_config)
    item, item_with_lattice = plain[0], prebuilt[0]
    assert "lattice" not in item and "lattice" in item_with_lattice
    m, _, h, w = item["srgb"].shape
    torch.manual_seed(0)
    outputs = (torch.randn(m, 3, h, w), torch.randn(m, 1, h, w), torch.randn(m, 3))
    inside, _ = intrinsic_loss(item["srgb"], item["mask"], *outputs, item["shading_weights"], loss_config)
    outside, _ = intrinsic_loss(item["srgb"], item["mask"], *outputs, item["shading_weights"], loss_config,
                                lattice=item_with_lattice["lattice"])
    assert inside.item() > 0 and torch.equal(inside, outside)


def test_crop_and_rotation_params_reach_the_step_loader(shards):
    """train.min_crop 1 and max_rotation_deg 0 with the fit bucket (64x96 frames -> the 64x96 bucket) and no light
    contrast: the only augmentation left is the flip, so every item is the unaugmented frames or their mirror
    image; the defaults (0.8, 5 degrees) crop and rotate."""
    exact = validate_params(raw_params(bucket="fit", min_crop=1.0, max_rotation_deg=0.0, contrast_lights=0.0))
    default = validate_params(raw_params(bucket="fit", contrast_lights=0.0))
    _, loader = T.make_step_loader(shards, exact, start=0, stop=4)
    _, augmented = T.make_step_loader(shards, default, start=0, stop=4)
    plain = ParquetSequences(shards, "train", LoaderConfig(frames=None, augment=False, size="native"))
    frames = {item["key"]: item["srgb"] for item in plain}

    def stored_or_mirrored(item: dict, atol: float) -> bool:
        reference = frames[item["key"]][item["indices"]]
        assert item["srgb"].shape == reference.shape
        return any(torch.allclose(item["srgb"], r, atol=atol) for r in (reference, reference.flip(-1)))

    for step in range(4):
        assert stored_or_mirrored(loader[step], atol=1e-6)
        assert not stored_or_mirrored(augmented[step], atol=1e-3)


def test_torchrun_ddp_on_cpu(shards, tmp_path, repo_root):
    """`torchrun` with two CPU processes: DDP over gloo initialises, both train, rank 0 writes the checkpoint."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not found beside the interpreter")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw_params(steps=2, checkpoint_every=2)))
    out = tmp_path / "models"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    proc = subprocess.run(
        [str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nproc_per_node=2", "-m",
         "training.train", "--shards", str(shards), "--out", str(out), "--params", str(params_file)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout + proc.stderr
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_if_valid_is_byte_identical_or_starts_fresh(shards, tmp_path, capsys):
    """The DVC stage's mode: a killed run continues to the straight run's bytes; changed params or data restart."""
    params = validate_params(raw_params())
    T.train(params, shards=shards, out=tmp_path / "a", live=tmp_path / "live_a")
    T.train(params, shards=shards, out=tmp_path / "b", live=tmp_path / "live_b", stop_at=2)
    with open(tmp_path / "live_b/plots/metrics/loss/total.tsv", "a") as handle:
        handle.write("3\t1.2")  # a row cut short by the kill
    T.train(params, shards=shards, out=tmp_path / "b", live=tmp_path / "live_b", resume_if_valid=True)
    assert "resuming from step 2" in capsys.readouterr().out
    for name in ("checkpoint.pt", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for path in sorted((tmp_path / "live_a").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "live_b" / path.relative_to(tmp_path / "live_a")).read_bytes(), path

    # other training code: not resumable
    saved = torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)
    assert saved["data"]["code_sha256"] == T.code_hash()
    with pytest.raises(ValueError, match="training code"):
        T.check_resumable(saved, params, NAMES, 1, saved["data"]["manifest_sha256"], "0" * 64)
    # other data (the manifest changed): fresh start
    other = tmp_path / "shards"
    shutil.copytree(shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "note": "rebuilt"}))
    T.train(params, shards=other, out=tmp_path / "b", live=None, resume_if_valid=True, stop_at=1)
    assert "starting fresh" in (out := capsys.readouterr().out) and "shards manifest" in out
    # other params: fresh start, with the reason
    T.train(validate_params(raw_params(lr=2e-3)), shards=shards, out=tmp_path / "b", live=None, resume_if_valid=True)
    assert "starting fresh" in (out := capsys.readouterr().out) and "train.lr" in out
    # an augmentation param alone: a fresh start too (before, only a named list of train keys was compared, so
    # `dvc exp run -S train.contrast_lights=0.75` beside a finished checkpoint resumed at its last step)
    saved = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)
    changed = {"contrast_lights": 0.75, "contrast_gamma": 2.0, "mix_lights": 0.5, "color_gain": 0.1, "min_crop": 1.0,
               "max_rotation_deg": 0.0, "permute_channels": True, "bucket": "fit"}
    for key, value in changed.items():
        with pytest.raises(ValueError, match=f"train.{key}: checkpoint"):
            T.check_resumable(saved, validate_params(raw_params(**{key: value})), NAMES, 1)
    for key, value in {"num_workers": 2, "checkpoint_every": 4, "log_every": 2}.items():  # the run is the same
        T.check_resumable(saved, validate_params(raw_params(**{key: value})), NAMES, 1)


def test_checkpoint_every_may_not_exceed_steps():
    with pytest.raises(ParamsError, match="train.checkpoint_every"):
        validate_params(raw_params(steps=60, checkpoint_every=100))


def test_code_hash_covers_exactly_the_code_dvc_tracks_for_the_train_stage():
    """The checkpoint's code_sha256 is part of data/models, which dvc.lock records: it must hash exactly the train
    stage's code deps. Before, it hashed every training/*.py, so editing training/baselines.py (no train dep) left
    the lock's checkpoint up to date while a fresh clone's training wrote different bytes."""
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    tracked = [dep[:-3].replace("/", ".") for dep in deps if dep.endswith(".py")]
    assert T.code_hash() == source_digest(tracked, salt=torch.__version__.encode())
