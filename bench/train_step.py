"""Benchmark of one training step (training/train.py `train_step`, the loop's own function), CPU by default.

Consumes real webcam frames (../shared/data/webcams/chamonix/*.jpg via bench._common, resized to 256x384) or, if absent,
synthetic smooth frames; writes them as 2 sequences of 10 frames into temporary shards with the real shards
stage (`pipeline.shards.build_shards`) and reads them back through the train stage's step-indexed loader
(`training.train.make_step_loader`, `train.num_workers` worker processes). For each model preset (`small`,
`paper`) at m = 8 frames of 256x384 it prints (seconds, medians over --runs steps after one warm-up step):
- seconds per training step (data wait + train_step), and its phases: model forward, loss forward (incl. the
  permutohedral-lattice build), loss backward (d loss / d outputs), network backward, Adam update;
- the loss's share of the step ((loss forward + loss backward) / step; target < 25% on CPU);
- data: the time the loop waited for the next item (target ~0: hidden by the workers) and the time one item
  takes to decode + augment in the main process (what a worker must hide; it needs < step time x workers).
Run: `.venv/bin/python -m bench.train_step [--threads 2] [--runs 3] [--presets small paper] [--workers 1]
[--device cuda] [--precisions fp32 amp] [--input-skip] [--json out.json]`. `--precisions`: `fp32`, and/or `amp`
(`train.amp`: bf16 autocast on CUDA, fp16 where bf16 is unsupported; the CPU trains in float32 either way);
`--input-skip` also times each preset with `model.input_skip` (full-resolution output layers) and prints its
step-time ratio to the paper's output layers; `--json` also writes every figure (seconds, medians over the runs)
to one JSON file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import CHAMONIX, webcam_frames
from pipeline.params import ShardsParams, validate_params
from pipeline.shards import build_shards
from training.loss import LossConfig
from training.train import build_training, make_step_loader, setup_device, train_step

NAMES = ["bench_a", "bench_b"]


def load_frames(n: int, h: int, w: int) -> tuple[np.ndarray, str]:
    """(n, h, w, 3) uint8 sRGB and where they came from (the shared webcam frames, else synthetic)."""
    frames = webcam_frames(n, h, w)
    if frames is not None:
        return np.round(frames * 255).astype(np.uint8), f"{CHAMONIX} resized to {h}x{w}"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.3 + 0.4 * np.stack([np.sin(xx / 9.0) ** 2, np.cos(yy / 13.0) ** 2, ((xx + yy) % 31) / 31.0], -1)
    gains = np.linspace(0.4, 1.1, n)[:, None, None, None]
    return (np.clip(base[None] * gains * 255 + rng.normal(0, 3, (n, h, w, 3)), 0, 255).astype(np.uint8),
            f"synthetic smooth frames {h}x{w}")


def write_shards(root: Path, n: int = 10, h: int = 256, w: int = 384) -> tuple[Path, str]:
    from tests.shard_fixtures import write_source  # the frames/masks folder layout the shards stage reads

    frames, where = load_frames(n * len(NAMES), h, w)
    for i, name in enumerate(NAMES):
        write_source(root, name, frames[i * n:(i + 1) * n], np.ones((n, h, w), bool))
    params = ShardsParams(sequences_per_shard=1, val_fraction=0.0)
    build_shards(NAMES, root / "frames", root / "masks", root / "shards", params)
    return root / "shards", where


def bench_preset(shards: Path, preset: str, *, runs: int, workers: int, device: str, lattice_in_loader: bool,
                 amp: bool = True, input_skip: bool = False) -> dict:
    params = validate_params({
        "sources": [{"name": n, "url": f"https://example.com/{n}.mp4"} for n in NAMES],
        "model": {"preset": preset, "input_skip": input_skip},
        "train": {"steps": 1000, "frames_per_step": 8, "num_workers": workers, "amp": amp},
    })
    setup = setup_device(params, device)
    model, raw, optimizer, scheduler, scaler = build_training(params, setup)
    loss_config = LossConfig.from_params(params.loss)
    loader, dataset = make_step_loader(shards, params, start=0, stop=runs + 1,
                                       lattice_config=loss_config if lattice_in_loader else None)
    rows = []
    batches = iter(loader)
    for step in range(runs + 1):
        t0 = time.perf_counter()
        item = next(batches)
        wait = time.perf_counter() - t0
        result = train_step(model, optimizer, scaler, item, loss_config, device=setup.device,
                            amp_dtype=setup.amp_dtype, step=step, profile=True)
        scheduler.step()
        if step:  # step 0 is the warm-up
            rows.append({"data_wait": wait, **result.times, "step": time.perf_counter() - t0})
    del batches, loader
    decode = []
    for step in range(3):
        t0 = time.perf_counter()
        dataset[step]
        decode.append(time.perf_counter() - t0)
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out.update(decode=statistics.median(decode), shape=tuple(item["srgb"].shape), rows=rows,
               n_params=sum(p.numel() for p in raw.parameters()), precision=str(setup.amp_dtype or torch.float32),
               loss_share=(out["loss_forward"] + out["loss_backward"]) / out["step"])
    if setup.device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
        torch.cuda.reset_peak_memory_stats(setup.device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lattice-in-step", action="store_true",
                        help="build the lattice inside the loss (as on CUDA) instead of in the loader workers (CPU default)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "amp"], default=["amp"],
                        help="fp32: train.amp false; amp: train.amp true (bf16 autocast on CUDA)")
    parser.add_argument("--input-skip", action="store_true",
                        help="also time each preset with model.input_skip (full-resolution output layers) and print "
                             "the ratio of its step time to the paper's output layers'")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        shards, where = write_shards(Path(tmp))
        where += "; lattice built " + ("in the loss" if args.lattice_in_step or args.device != "cpu" else "in the loader workers")
        print(f"train_step: {args.device}, {args.threads} threads, {args.workers} loader worker(s), frames: {where}; "
              f"medians of {args.runs} steps after 1 warm-up")
        results = []
        skips = [False, True] if args.input_skip else [False]
        for preset, precision, skip in [(p, q, k) for p in args.presets for q in args.precisions for k in skips]:
            r = bench_preset(shards, preset, runs=args.runs, workers=args.workers, device=args.device,
                             lattice_in_loader=args.device == "cpu" and not args.lattice_in_step, amp=precision == "amp",
                             input_skip=skip)
            results.append({"preset": preset, "amp": precision == "amp", "input_skip": skip, **r})
            loss = r["loss_forward"] + r["loss_backward"]
            label = preset + (" + input_skip" if skip else "")
            print(f"\n[{label}, {r['precision']}] {r['n_params'] / 1e6:.1f}M parameters, input {r['shape']} (m, 3, H, W)")
            if skip:
                plain = results[-2]
                print(f"  input_skip / paper's output layers: step x{r['step'] / plain['step']:.2f}, network "
                      f"(forward + backward) x{(r['forward'] + r['backward']) / (plain['forward'] + plain['backward']):.2f}")
            each = ", ".join(f"{x['step']:.2f}" for x in r["rows"])
            sums = ", ".join(f"{sum(v for k, v in x.items() if k != 'step'):.2f}" for x in r["rows"])
            print(f"  step             {r['step']:8.3f} s   (each step: {each}; sum of its phases: {sums})")
            for phase in ("data_wait", "to_device", "forward", "loss_forward", "loss_backward", "backward",
                          "optimizer"):
                print(f"  {phase:16s} {r[phase]:8.3f} s  {100 * r[phase] / r['step']:5.1f}%")
            print(f"  loss share       {100 * loss / r['step']:5.1f}% of the step (fwd + bwd {loss:.3f} s; target < 25%)")
            print(f"  data             waited {r['data_wait']:.3f} s/step ({100 * r['data_wait'] / r['step']:.1f}%); "
                  f"one item decodes in {r['decode']:.3f} s in the main process "
                  f"({'hidden' if r['decode'] < r['step'] * max(args.workers, 1) else 'NOT hidden'} by "
                  f"{args.workers} worker(s))")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": args.device, "threads": args.threads, "workers": args.workers,
                                         "runs": args.runs, "frames": where, "results": results}, indent=1))


if __name__ == "__main__":
    main()
