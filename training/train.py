"""Train stage: BigTime shards (`data/shards/`) -> `IntrinsicUNet` checkpoint (`data/models/checkpoint.pt`).

    python -m training.train --shards data/shards --out data/models --live data/dvclive [--resume | --resume-if-valid]
        [--params params.yaml] [--stop-at K]
    torchrun --nproc_per_node=G -m training.train ...          (DDP, one process per GPU)

Consumes the `model`, `loss` and `train` sections of params.yaml and the train split of the shards folder, read
through `training.data.ParquetSequences` (the Parquet twin of the WebDataset tars: same items, random access).
One optimisation step = one sequence of m = `train.frames_per_step` frames per process:
    srgb (m, 3, H, W) sRGB in [0, 1], mask (m, 1, H, W) {0, 1}, shading weights (4, H >> l, W >> l) per scale
    -> IntrinsicUNet -> log_r (m, 3, H, W), log_s (m, 1, H, W), log_c (m, 3)  (natural logs of linear values)
    -> training.loss.intrinsic_loss -> total (scalar, unitless energy) and its terms.
H x W is the loader's aspect bucket (256x384, 384x256 or 256x256).

Data order is a pure function of (seed, step, rank): process `rank` of `world` at step k takes draw g = k*world +
rank; epoch e = g // n, position g % n of a (seed, e) permutation of the n train sequences; frame choice and
augmentation come from the loader's (seed, e, key) generator. Nothing is iterated statefully, so a run resumed
at step k sees exactly the sequences, frames and augmentations of the straight run (`StepSequences`).

Optimiser: Adam (lr `train.lr`: 1e-3, the authors used 5e-4; pipeline/params.py cites the rows; AdamW with
`train.weight_decay` > 0), lr decayed to 0 at the last step by a cosine (`train.lr_schedule` "cosine", the default;
"step": halved at 1/3 and 2/3 of `train.steps`, MultiStepLR).
Device: CUDA when present (bf16 autocast, or fp16 autocast + GradScaler where bf16 is unsupported, if
`train.amp`), else CPU in float32. The loss always runs in float32. Several GPUs: `torchrun` sets WORLD_SIZE > 1;
each process joins the group, wraps the model in DistributedDataParallel (SyncBatchNorm if
`train.sync_batchnorm`) and draws its own sequences; rank 0 logs and writes files.

Produces, in --out (rank 0, each file written atomically: temp file + os.replace):
- `checkpoint.pt` every `train.checkpoint_every` steps and at the end (read with torch.load(weights_only=True);
  tensors / plain Python only): model (state_dict), model_config (asdict(ModelConfig)), optimizer, scheduler,
  scaler, step (completed steps), rng {torch, cuda, numpy, python}, params (the whole resolved params.yaml),
  data {sampler, seed, world_size, keys, manifest_sha256, code_sha256}; with `train.ema_decay` also ema (the
  moving average's state_dict, the weights `load_checkpoint` decomposes with) and ema_updates (its count).
  Strings are interned before saving (`canonical`), so equal runs give equal bytes whether or not they were
  resumed.
- `config.json`: the resolved params, model config, loader config, seed, device, precision, world size, number
  of parameters, train keys, manifest sha256 and versions (nothing that differs between a resumed and a
  straight run).
And in --live (DVCLive, no dvc.yaml / experiment writing of its own; dvc.yaml declares the files): every
`train.log_every` steps `loss/total`, `loss/<term>` (unweighted terms: reconstruct, consistency, rsmooth,
ssmooth, shading_l1), `lr`, `time/step_s`, `time/data_s` (mean over the window, seconds) at step = completed
steps; `metrics.json` holds the latest values (`dvc exp show`), `plots/metrics/**.tsv` the history (`dvc plots`).

A non-finite loss stops training with `NonFiniteLoss` naming the step and the sequence key (exit status 1), and
leaves the last good checkpoint in place. `--resume` continues from `--out/checkpoint.pt`; on CPU the result is
bit-identical to an uninterrupted run (tests/training/test_train.py). `--resume-if-valid` (the DVC stage, whose
outputs are `persist: true`) resumes only when the checkpoint records the same model/loss/run-defining train
params, the same shards manifest sha256 and the same training code (`code_hash`), and otherwise starts fresh,
saying why. Every file of the shards folder is checked against the manifest's sha256 before training
(`training.data.verify_shards`). `--stop-at K` ends after K steps (with a checkpoint) while keeping the schedule
of `train.steps`, to split a run.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from pipeline.atomic import atomic_file, atomic_write_json, atomic_write_text, fault_point
from pipeline.code_closure import imported_modules, source_digest
from pipeline.params import Params, ParamsError, load_params
from pipeline.shard_format import sha256_file
from training.data import LoaderConfig, ParquetSequences, ShardError, make_item, read_manifest, verify_shards
from training.loss import LossConfig, build_lattice, intrinsic_loss
from training.model import CheckpointError, IntrinsicUNet, ModelConfig, read_checkpoint

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
TERMS = ("reconstruct", "consistency", "rsmooth", "ssmooth", "shading_l1")


class NonFiniteLoss(RuntimeError):
    """The loss (or one of its terms) is NaN or inf; the message names the step and the sequence key."""


# --------------------------------------------------------------------------------------------- data
class StepSequences(Dataset):
    """Map-style dataset indexed by STEP: item k is what process `rank` of `world` trains on at step k."""

    def __init__(self, sequences: ParquetSequences, *, seed: int, rank: int = 0, world: int = 1,
                 lattice_config: LossConfig | None = None):
        self.sequences, self.seed, self.rank, self.world = sequences, seed, rank, world
        # The reflectance-smoothness lattice depends only on the images: with a config, it is built here, in
        # the loader workers, and travels with the item (on CPU this takes the lattice off the step's path).
        self.lattice_config = lattice_config

    def locate(self, step: int) -> tuple[int, int]:
        """(sequence index, epoch) of this process's draw at `step` (module docstring)."""
        n = len(self.sequences)
        draw = step * self.world + self.rank
        epoch, position = divmod(draw, n)
        order = np.random.default_rng([self.seed, epoch, 13]).permutation(n)
        return int(order[position]), epoch

    def __len__(self) -> int:  # unbounded in principle; the sampler says which steps are read
        return 2**62

    def __getitem__(self, step: int) -> dict:
        index, epoch = self.locate(step)
        item = make_item(self.sequences.sample(index), self.sequences.config, epoch)
        if self.lattice_config is not None and self.lattice_config.w_rsmooth != 0:
            # One thread, as in a DataLoader worker, so the float sums (and a resumed run) do not depend on
            # whether this ran in a worker or in the main process.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.no_grad():
                    item["lattice"] = build_lattice(item["srgb"], item["mask"], self.lattice_config)
            finally:
                torch.set_num_threads(threads)
        return item


def make_step_loader(shards: str | Path, params: Params, *, start: int, stop: int, rank: int = 0, world: int = 1,
                     loader_config: LoaderConfig | None = None,
                     lattice_config: LossConfig | None = None) -> tuple[DataLoader, StepSequences]:
    """DataLoader yielding the items of steps start..stop-1 in order (workers prefetch; batch_size=None).

    With `lattice_config`, each item also carries its prebuilt reflectance-smoothness lattice ("lattice")."""
    config = loader_config or LoaderConfig(
        frames=params.train.frames_per_step, seed=params.train.seed,
        size="fit" if params.train.bucket == "fit" else "bucket",
        permute_channels=params.train.permute_channels, color_gain=params.train.color_gain,
        mix_lights=params.train.mix_lights, contrast_lights=params.train.contrast_lights,
        contrast_gamma=params.train.contrast_gamma,
        min_crop=params.train.min_crop, max_rotation_deg=params.train.max_rotation_deg,
        size_multiple=ModelConfig.from_params(params.model).multiple)
    sequences = ParquetSequences(shards, "train", config)
    if len(sequences) == 0:
        raise ValueError(f"{shards}: the train split has no sequences")
    dataset = StepSequences(sequences, seed=params.train.seed, rank=rank, world=world, lattice_config=lattice_config)
    workers = params.train.num_workers
    loader = DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    return loader, dataset


# --------------------------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    total: torch.Tensor  # scalar float32, detached
    terms: dict[str, torch.Tensor]  # unweighted terms, detached scalars
    times: dict[str, float]  # seconds per phase (with profile=True; synchronised on CUDA)


def train_step(model, optimizer, scaler, item: dict, loss_config: LossConfig, *, device: torch.device,
               amp_dtype: torch.dtype | None = None, step: int = 0, profile: bool = False) -> StepResult:
    """One optimisation step on one sequence: forward, loss (float32), non-finite check, backward, Adam step.

    Backward runs in two parts with the same result as total.backward(): the loss's gradient w.r.t. the network
    outputs, then the network's backward from there, so `profile` can time the loss's share of the backward.
    """
    times: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        if profile:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            times[name] = now - clock[0]
            clock[0] = now

    srgb = item["srgb"].to(device, non_blocking=True)
    mask = item["mask"].to(device, non_blocking=True)
    weights = [w.to(device, non_blocking=True) for w in item["shading_weights"]]
    lap("to_device")
    with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = model(srgb)
    lap("forward")
    lattice = item.get("lattice") if device.type == "cpu" else None  # on CUDA the loss builds it on the GPU
    total, terms = intrinsic_loss(srgb, mask, *outputs, weights, loss_config, lattice=lattice)
    lap("loss_forward")

    bad = (~torch.isfinite(torch.stack([total, *terms.values()]))).any().float().reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every process stops together
    if bad.item():
        shown = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        if torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values()):
            raise NonFiniteLoss(f"step {step}: another process hit a non-finite loss (this one: {item['key']!r})")
        raise NonFiniteLoss(f"step {step}: non-finite loss {total.item()} on sequence {item['key']!r} "
                            f"(frames {item['indices'].tolist()}; terms {shown})")

    optimizer.zero_grad(set_to_none=True)
    outputs = [o for o in outputs if o.requires_grad]  # log_c is a constant 0 without the colour head
    grads = torch.autograd.grad(scaler.scale(total), outputs)  # loss backward: d total / d outputs
    lap("loss_backward")
    torch.autograd.backward(outputs, grads)  # network backward
    lap("backward")
    scaler.step(optimizer)
    scaler.update()
    lap("optimizer")
    return StepResult(total.detach(), {k: v.detach() for k, v in terms.items()}, times)


# --------------------------------------------------------------------------------------------- setup helpers
@dataclass
class Setup:
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_device(params: Params, device: str | None = None) -> Setup:
    """Pick the device and precision; join the process group when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = 0, 0
    if world > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:  # "cuda" alone: this process's GPU (set_device rejects a device without an index)
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    amp_dtype = None
    if dev.type == "cuda" and params.train.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Setup(dev, amp_dtype, rank, local_rank, world)


def build_training(params: Params, setup: Setup):
    """(model as trained (DDP-wrapped if several processes), raw model, optimizer, scheduler, scaler)."""
    # every generator a run uses or saves: the model's initialisation is identical on every process, and the
    # checkpoint's saved RNG states (so its bytes) are identical between runs
    torch.manual_seed(params.train.seed)
    random.seed(params.train.seed)
    np.random.seed(params.train.seed)
    raw = IntrinsicUNet(ModelConfig.from_params(params.model)).to(setup.device)
    model = raw
    if setup.world > 1:
        if params.train.sync_batchnorm and setup.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw = model  # same parameter and buffer names as BatchNorm2d
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
    tp = params.train
    if tp.weight_decay:  # decoupled decay (AdamW); 0: plain Adam, the authors'
        optimizer = torch.optim.AdamW(raw.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    else:
        optimizer = torch.optim.Adam(raw.parameters(), lr=tp.lr)
    if tp.lr_schedule == "cosine":  # lr * (1 + cos(pi * step / steps)) / 2: from lr to 0 at the last step
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tp.steps, eta_min=0.0)
    else:  # "step": halved at 1/3 and 2/3 of the steps
        milestones = [max(1, round(tp.steps / 3)), max(1, round(2 * tp.steps / 3))]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.5)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.amp_dtype == torch.float16)
    return model, raw, optimizer, scheduler, scaler


def make_ema(raw: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """The exponential moving average of `raw`'s parameters and buffers (None when `decay` is None):
    `update_parameters(raw)` after each optimizer step sets ema = decay * ema + (1 - decay) * current (the first
    call copies); its `.module` is an IntrinsicUNet like `raw`."""
    if decay is None:
        return None
    return AveragedModel(raw, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def rng_state() -> dict:
    """Every generator's state as tensors / plain Python (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """torch.save through `pipeline.atomic.atomic_file` (temp file, fsync, os.replace; leftovers of a killed
    save are removed first): a crash leaves the old file or the new."""
    with atomic_file(path) as handle:
        torch.save(canonical(checkpoint), handle)


def canonical(obj):
    """A copy of nested dicts/lists/tuples with every string interned and every container fresh, so pickle's memo
    (shared objects are written once, then referenced) depends only on the values: a resumed run's checkpoint is
    byte-identical to the straight run's, whose state dicts share string objects differently."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((canonical(k), canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # nn.Module.state_dict's OrderedDict carries per-module versions
            out._metadata = canonical(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(canonical(v) for v in obj)
    return obj


def code_hash() -> str:
    """sha256 over the torch version and the source of every project module training runs (training.train's
    import closure, pipeline/code_closure.py; exactly the code dvc.yaml's train deps list, so a fresh clone writes the
    checkpoint the lock records): a checkpoint made by other code is not resumed (DVC reruns this stage when its
    code changes; resuming the old run would skip the new code)."""
    return source_digest(imported_modules("training.train"), salt=torch.__version__.encode())


def manifest_hash(shards: str | Path) -> str:
    """sha256 of the shards manifest (which holds every shard's sha256): the data a checkpoint was trained on."""
    return sha256_file(Path(shards) / "manifest.json")


def truncate_live(live: Path, step: int) -> None:
    """Drop DVCLive history rows after `step` (logged by a run that died after its last checkpoint)."""
    for tsv in Path(live).glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        columns = lines[0].count("\t") if lines else 0
        # a row cut short by a kill (no newline or missing columns) is dropped as well
        kept = lines[:1] + [line for line in lines[1:] if line.endswith("\n") and line.count("\t") == columns
                            and line.split("\t", 1)[0].isdigit() and int(line.split("\t", 1)[0]) <= step]
        if len(kept) != len(lines):
            atomic_write_text(tsv, "".join(kept))


def _scheduler_state(scheduler) -> dict:
    state = scheduler.state_dict()
    if "milestones" in state:  # MultiStepLR ("step" schedule)
        state["milestones"] = dict(state["milestones"])  # Counter is not weights_only-loadable
    return state


def _load_scheduler_state(scheduler, state: dict) -> None:
    state = dict(state)
    if "milestones" in state:
        state["milestones"] = collections.Counter(state["milestones"])
    scheduler.load_state_dict(state)


# Train params that do not change what a run computes (the loader's generator is keyed by seed, step and sequence,
# not by worker): every other train key defines the run. Before, only a named list of keys was compared, so a
# `dvc exp run -S train.contrast_lights=...` (or min_crop, mix_lights, ...) on a workspace holding the finished
# checkpoint resumed at its last step and trained nothing.
RESUME_NEUTRAL_TRAIN_KEYS = frozenset({"num_workers", "checkpoint_every", "log_every"})


def check_resumable(saved: dict, params: Params, keys: list[str], world: int, data_hash: str | None = None,
                    code: str | None = None) -> None:
    """Refuse to resume when the model, loss, data (keys and, if given, the manifest hash), the run-defining
    train settings or (if given) the training code changed."""
    problems = []
    if data_hash is not None and saved["data"].get("manifest_sha256") != data_hash:
        problems.append(f"shards manifest: checkpoint {str(saved['data'].get('manifest_sha256'))[:16]} != "
                        f"data {data_hash[:16]}")
    if code is not None and saved["data"].get("code_sha256") != code:
        problems.append("training code or torch version differs from the checkpoint's")
    now = params.model_dump(mode="json")
    for section in ("model", "loss"):
        if saved["params"][section] != now[section]:
            problems.append(f"{section}: checkpoint {saved['params'][section]} != params {now[section]}")
    for key in sorted(set(now["train"]) - RESUME_NEUTRAL_TRAIN_KEYS):
        saved_value = saved["params"]["train"].get(key)  # .get: a key added since reads None
        if saved_value != now["train"][key]:
            problems.append(f"train.{key}: checkpoint {saved_value} != params {now['train'][key]}")
    if saved["data"]["keys"] != keys:
        problems.append(f"train sequences differ: checkpoint {saved['data']['keys']} != shards {keys}")
    if saved["data"]["world_size"] != world:
        problems.append(f"world size: checkpoint {saved['data']['world_size']} != now {world}")
    if problems:
        raise ValueError("cannot resume bit-identically:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------- the loop
def load_resumable(path: Path, params: Params, keys: list[str], world: int, data_hash: str) -> tuple[dict | None, str]:
    """(checkpoint, "") when `path` can be resumed bit-identically, else (None, why not)."""
    if not path.exists():
        return None, f"no checkpoint at {path}"
    try:
        ckpt = load_training_checkpoint(path)
        check_resumable(ckpt, params, keys, world, data_hash, code_hash())
    except (ValueError, KeyError, TypeError) as err:
        return None, str(err)
    return ckpt, ""


def load_training_checkpoint(path: Path) -> dict:
    """torch.load a training checkpoint; CheckpointError (a ValueError) names the file when it is unreadable or
    lacks what resuming needs."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("optimizer", "scheduler", "scaler", "step", "rng", "params", "data") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (lacks {', '.join(missing)})")
    return ckpt


def train(params: Params, *, shards: str | Path, out: str | Path, live: str | Path | None, resume: bool = False,
          stop_at: int | None = None, device: str | None = None, loader_config: LoaderConfig | None = None,
          resume_if_valid: bool = False) -> dict:
    """Train (or resume) and write the checkpoint, config.json and DVCLive logs; return a summary dict.

    `resume`: continue from out/checkpoint.pt (an error if it cannot be resumed). `resume_if_valid` (the DVC
    stage): continue from it only when it records the same model/loss/train params and the same shards manifest
    hash, else start fresh (the reason is printed)."""
    out = Path(out)
    tp = params.train
    stop = min(tp.steps, stop_at) if stop_at is not None else tp.steps
    setup = setup_device(params, device)
    loss_config = LossConfig.from_params(params.loss)
    model, raw_model, optimizer, scheduler, scaler = build_training(params, setup)
    ema = make_ema(raw_model, tp.ema_decay)
    verify_shards(shards)
    keys = [k for shard in read_manifest(shards)["splits"]["train"]["shards"] for k in shard["keys"]]
    data_hash = manifest_hash(shards)

    start = 0
    ckpt = None
    if resume:
        ckpt = load_training_checkpoint(out / CHECKPOINT)
        check_resumable(ckpt, params, keys, setup.world, data_hash)
    elif resume_if_valid:
        ckpt, why_not = load_resumable(out / CHECKPOINT, params, keys, setup.world, data_hash)
        if setup.master:
            resuming = f"resuming from step {ckpt['step']}" if ckpt is not None else f"starting fresh ({why_not})"
            print(f"train: {resuming}", flush=True)
    resume = ckpt is not None
    if resume:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _load_scheduler_state(scheduler, ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
            ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        start = int(ckpt["step"])
    loader, dataset = make_step_loader(shards, params, start=start, stop=stop, rank=setup.rank, world=setup.world,
                                       loader_config=loader_config,
                                       lattice_config=loss_config if setup.device.type == "cpu" else None)
    n_params = sum(p.numel() for p in raw_model.parameters())

    def checkpoint(step: int) -> None:
        averaged = {} if ema is None else {"ema": ema.module.state_dict(), "ema_updates": int(ema.n_averaged)}
        save_checkpoint(out / CHECKPOINT, {
            "model": raw_model.state_dict(),
            **averaged,
            "model_config": dataclasses.asdict(raw_model.config),
            "optimizer": optimizer.state_dict(),
            "scheduler": _scheduler_state(scheduler),
            "scaler": scaler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "params": params.model_dump(mode="json"),
            "data": {"sampler": "step-indexed", "seed": tp.seed, "world_size": setup.world, "keys": keys,
                     "manifest_sha256": data_hash, "code_sha256": code_hash()},
        })

    logger = None
    if setup.master:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CONFIG, {
            "params": params.model_dump(mode="json"), "model_config": dataclasses.asdict(raw_model.config),
            "loader_config": dataclasses.asdict(dataset.sequences.config), "seed": tp.seed,
            "device": str(setup.device), "precision": str(setup.amp_dtype or torch.float32),
            "world_size": setup.world, "n_parameters": n_params, "train_keys": keys, "steps": tp.steps,
            "manifest_sha256": data_hash, "torch": torch.__version__, "numpy": np.__version__})
        if live is not None:
            from dvclive import Live

            if resume:
                truncate_live(Path(live), start)
            logger = Live(dir=str(live), resume=resume, save_dvc_exp=False, dvcyaml=None)
        print(f"train: {n_params / 1e6:.2f}M parameters, {len(keys)} sequences, steps {start}..{stop} of "
              f"{tp.steps}, device {setup.device}, precision {setup.amp_dtype or torch.float32}, world {setup.world}",
              flush=True)

    window = collections.defaultdict(float)
    n_window = 0
    last = {}
    model.train()
    batches = iter(loader)  # draws the loader's base seed from the torch generator, as in the straight run
    if resume:
        set_rng_state(ckpt["rng"])  # after that draw, so the generators continue exactly (checkpoint bytes too)
    t_prev = time.perf_counter()
    for step in range(start, stop):
        # lr: the scheduler (train.lr_schedule) is stepped after every optimizer step
        lr = scheduler.get_last_lr()[0]

        # checkpoint: every checkpoint_every completed steps (the final one is written after the loop)
        if setup.master and step > start and step % tp.checkpoint_every == 0:
            checkpoint(step)
        fault_point(f"step{step}")  # tests/faults: kill -9 here when BIGTIME_KILL_AT=train:step<k>

        # data: the prefetched item of this step (workers decode and augment ahead)
        t0 = time.perf_counter()
        item = next(batches)
        t_data = time.perf_counter() - t0

        # forward / backward / update
        result = train_step(model, optimizer, scaler, item, loss_config, device=setup.device,
                            amp_dtype=setup.amp_dtype, step=step)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(raw_model)

        # log: mean over the window of the terms (averaged over processes) and of the times
        now = time.perf_counter()
        window["time/step_s"] += now - t_prev
        window["time/data_s"] += t_data
        t_prev = now
        values = torch.stack([result.total, *(result.terms[k] for k in TERMS)])
        window_losses = values if n_window == 0 else window_losses + values
        n_window += 1
        if (step + 1) % tp.log_every == 0 or step + 1 == stop:
            losses = window_losses / n_window
            if setup.world > 1:
                dist.all_reduce(losses)
                losses /= setup.world
            losses = losses.tolist()
            last = {"loss/total": losses[0], **{f"loss/{k}": v for k, v in zip(TERMS, losses[1:])}, "lr": lr,
                    **{k: v / n_window for k, v in window.items()}}
            if setup.master:
                print(f"step {step + 1}/{tp.steps}: loss {losses[0]:.5f} "
                      + " ".join(f"{k} {v:.4g}" for k, v in zip(TERMS, losses[1:]))
                      + f" lr {lr:.2e} {last['time/step_s']:.2f}s/step (data wait {last['time/data_s']:.2f}s)",
                      flush=True)
                if logger is not None:  # losses and lr only: timings would make the DVC outputs differ per run
                    logger.step = step + 1
                    for name, value in last.items():
                        if not name.startswith("time/"):
                            logger.log_metric(name, value)
                    logger.next_step()
            window.clear()
            n_window = 0

    if setup.master:
        if stop > start or not (out / CHECKPOINT).exists():
            checkpoint(stop)
        if logger is not None:
            logger.end()
    if setup.world > 1:
        dist.barrier()
    return {"step": stop, "n_parameters": n_params, **last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True, help="shards folder (manifest.json, parquet/train.parquet)")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt and config.json")
    parser.add_argument("--live", default=None, help="DVCLive folder (metrics.json, plots/)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--resume-if-valid", action="store_true",
                        help="continue from --out/checkpoint.pt when its params and data hash match, else start fresh")
    parser.add_argument("--stop-at", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    parser.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        train(params, shards=args.shards, out=args.out, live=args.live, resume=args.resume, stop_at=args.stop_at,
              device=args.device, resume_if_valid=args.resume_if_valid)
    except (NonFiniteLoss, ParamsError, ShardError, ValueError) as err:
        print(f"train: stopped: {err}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
