"""Shared helpers of the bench scripts: the shared webcam frames and median timings.

Consumes the shared webcam folders (../shared/data/webcams/<camera>/*.jpg, beside the repository). Produces
frames as (m, h, w, 3) float32 sRGB in [0, 1] (`webcam_frames`, None when fewer than m frames exist, so each
benchmark picks its own synthetic fallback) and timings in seconds (`timed`: median of `runs` calls after one
warm-up call; `timings`: all of them). `torch_bench_args` is the common `--threads 2 --runs 5` command line of the torch benchmarks.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

WEBCAMS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "webcams"
CHAMONIX = WEBCAMS / "chamonix"


def webcam_frames(m: int, h: int, w: int, folder: Path = CHAMONIX) -> Optional[np.ndarray]:
    """The first m `*.jpg` of `folder` (by name) resized bilinearly to h x w: (m, h, w, 3) float32 sRGB in [0, 1].

    None when the folder is missing or holds fewer than m frames.
    """
    files = sorted(folder.glob("*.jpg"))[:m] if folder.is_dir() else []
    if len(files) < m:
        return None
    from PIL import Image

    imgs = [np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255 for f in files]
    return np.stack(imgs)


def timings(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall times in seconds of `runs` calls of fn() after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median wall time in seconds of `runs` calls of fn() after one warm-up call."""
    return statistics.median(timings(fn, runs))


def torch_bench_args(description: str) -> argparse.Namespace:
    """Parse ``--threads`` (default 2; applied with torch.set_num_threads) and ``--runs`` (default 5)."""
    import torch

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args
