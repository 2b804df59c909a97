"""Benchmark of the BigTime loss (training/loss.py), CPU, 2 threads by default.

Consumes real webcam frames (../shared/data/webcams/chamonix/*.jpg, resized to 256x384 sRGB in [0,1]) or, if
absent, random smooth synthetic frames. Prints (seconds, medians of >= 5 runs):
1. the full training-step loss: forward + backward of `intrinsic_loss` INCLUDING the permutohedral lattice
   build, m = 8 frames of 256x384 (target <= 0.28 s; the authors' implementation: 1.66 s), with a
   breakdown (lattice build, rsmooth energy fwd+bwd, the step with a prebuilt lattice, APWLS terms, shading
   smoothness, and its Charbonnier variants as ratios to the L2 one). The machine is shared: under contention
   single figures can be several times slower, so the headline also prints the fastest run;
2. naive O(m^2 n) vs fast O(m n) APWLS (forward + backward) at m = 8 and m = 32, per pixel, and their ratio
   (the naive one on 64x96 pixels, the fast one on 64x96 and 256x384);
3. lattice build time against m*n at 4 sizes.
Run: `.venv/bin/python -m bench.loss [--threads 2] [--runs 5]`.
"""
from __future__ import annotations

import statistics

import numpy as np
import torch

from bench._common import CHAMONIX, timed, timings, torch_bench_args, webcam_frames
from pipeline.shading_weights import shading_smoothness_weights
from training.apwls import apwls, apwls_naive
from training.loss import (
    LossConfig,
    build_lattice,
    consistency_loss,
    intrinsic_loss,
    reconstruction_loss,
    shading_smoothness_loss,
)

FRAMES = CHAMONIX


def load_frames(m: int, h: int, w: int) -> tuple[np.ndarray, str]:
    """(m, h, w, 3) float32 sRGB in [0, 1] and a description of where they came from."""
    frames = webcam_frames(m, h, w, FRAMES)
    if frames is not None:
        return frames, f"{m} frames of {FRAMES} resized to {h}x{w}"
    rng = np.random.default_rng(0)
    base = rng.random((h // 16, w // 16, 3)).repeat(16, 0).repeat(16, 1)
    gains = np.linspace(0.4, 1.0, m)[:, None, None, None]
    return np.clip(base[None] * gains, 0, 1).astype(np.float32), f"{m} synthetic piecewise-constant frames {h}x{w}"


def predictions(srgb: torch.Tensor, seed: int = 0):
    """Plausible network outputs (requires_grad): log R ~ log I - log S with noise, smooth log S, log c ~ 0."""
    g = torch.Generator().manual_seed(seed)
    m, _, h, w = srgb.shape
    log_i = torch.log(srgb.clamp_min(1e-3) ** 2.2)
    log_s = torch.nn.functional.avg_pool2d(log_i.mean(1, keepdim=True), 9, 1, 4, count_include_pad=False)
    log_r = (log_i - log_s).mean(0, keepdim=True).expand(m, -1, -1, -1) + 0.05 * torch.randn(m, 3, h, w, generator=g)
    log_c = 0.05 * torch.randn(m, 3, generator=g)
    return [t.contiguous().requires_grad_() for t in (log_r, log_s, log_c)]


def main() -> None:
    args = torch_bench_args(__doc__.splitlines()[0])
    runs = args.runs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {runs} runs")

    try:
        import training.lattice  # noqa: F401

        have_lattice = True
    except ImportError as err:
        have_lattice = False
        print(f"!! training.lattice unavailable ({err}); rsmooth and lattice timings skipped")

    # ---------------------------------------------------------------- 1. full step
    m, h, w = 8, 256, 384
    frames, source = load_frames(m, h, w)
    print(f"\n[1] full loss step, m={m}, {h}x{w}: {source}")
    weights = [torch.from_numpy(x) for x in shading_smoothness_weights(frames)]
    srgb = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    mask = ((srgb.max(1, keepdim=True).values < 0.98) & (srgb.mean(1, keepdim=True) > 0.02)).float()
    log_r, log_s, log_c = predictions(srgb)
    cfg = LossConfig(w_rsmooth=LossConfig().w_rsmooth if have_lattice else 0.0)

    def step():
        for t in (log_r, log_s, log_c):
            t.grad = None
        total, _ = intrinsic_loss(srgb, mask, log_r, log_s, log_c, weights, cfg)
        total.backward()
        return total

    total = step()
    step_times = timings(step, runs)
    t_step = statistics.median(step_times)
    _, terms = intrinsic_loss(srgb, mask, log_r, log_s, log_c, weights, cfg)
    print("  terms: " + ", ".join(f"{k}={v.item():.5f}" for k, v in terms.items()) + f", total={total.item():.5f}")
    label = "incl. lattice build" if have_lattice else "WITHOUT rsmooth/lattice"
    print(
        f"  forward+backward {label}: {t_step:.3f} s (fastest {min(step_times):.3f} s)   "
        "(target <= 0.28 s; authors 1.66 s)"
    )

    def fb(fn):
        def run():
            for t in (log_r, log_s, log_c):
                t.grad = None
            fn().backward()

        return run

    if have_lattice:
        t_build = timed(lambda: build_lattice(srgb, mask, cfg), runs)
        lat = build_lattice(srgb, mask, cfg)
        t_energy = timed(fb(lambda: lat.energy(log_r)), runs)
        print(f"  lattice build: {t_build:.3f} s; rsmooth energy fwd+bwd: {t_energy:.3f} s")

        def step_prebuilt():
            for t in (log_r, log_s, log_c):
                t.grad = None
            intrinsic_loss(srgb, mask, log_r, log_s, log_c, weights, cfg, lattice=lat)[0].backward()

        t_pre = timed(step_prebuilt, runs)
        print(f"  forward+backward with the lattice prebuilt (e.g. in a loader worker, `lattice=`): {t_pre:.3f} s")
    t_rec = timed(fb(lambda: reconstruction_loss(srgb, mask, log_r, log_s, log_c, cfg) + consistency_loss(mask, log_r)), runs)
    t_ss = timed(fb(lambda: shading_smoothness_loss(log_s, mask, weights)), runs)
    print(f"  APWLS reconstruct+consistency fwd+bwd: {t_rec:.3f} s; shading smoothness fwd+bwd: {t_ss:.3f} s")
    t_rob = timed(fb(lambda: shading_smoothness_loss(log_s, mask, weights, 0.05)), runs)
    t_robw = timed(fb(lambda: shading_smoothness_loss(log_s, mask, weights, 0.05, robust_by_weight=True)), runs)
    print(f"  shading smoothness, Charbonnier (loss.ssmooth_robust_scale 0.05): {t_rob:.3f} s = {t_rob / t_ss:.2f}x L2; "
          f"delta by weight: {t_robw:.3f} s = {t_robw / t_ss:.2f}x L2")

    # ---------------------------------------------------------------- 2. naive vs fast APWLS
    print("\n[2] APWLS forward+backward, naive O(m^2 n) vs fast O(m n)")
    for mm in (8, 32):
        res = {}
        for name, fn, (hh, ww) in (
            ("naive", apwls_naive, (64, 96)),
            ("fast_small", apwls, (64, 96)),
            ("fast", apwls, (256, 384)),
        ):
            g = torch.Generator().manual_seed(mm)
            P, Q = (torch.rand(mm, 1, hh, ww, generator=g) for _ in range(2))
            X, Y = (torch.randn(mm, 3, hh, ww, generator=g).requires_grad_() for _ in range(2))

            def run():
                X.grad = Y.grad = None
                fn(P, X, Q, Y).backward()

            t = timed(run, runs)
            res[name] = t / (hh * ww)
            print(f"  m={mm:2d} {name:10s} on {hh}x{ww}: {t * 1e3:8.2f} ms = {res[name] * 1e9:8.2f} ns/pixel")
        print(
            f"  m={mm:2d} naive/fast per-pixel ratio: {res['naive'] / res['fast']:.1f}x vs fast at 256x384, "
            f"{res['naive'] / res['fast_small']:.1f}x at equal size 64x96"
        )

    # ---------------------------------------------------------------- 3. lattice build vs m*n
    if have_lattice:
        print("\n[3] lattice build time vs m*n (m=8 frames)")
        all_frames, _ = load_frames(8, 256, 384)
        for hh, ww in ((64, 96), (128, 192), (192, 288), (256, 384)):
            from PIL import Image

            small = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((ww, hh), Image.BILINEAR), np.float32) / 255 for f in all_frames])
            s = torch.from_numpy(small).permute(0, 3, 1, 2).contiguous()
            t = timed(lambda: build_lattice(s, None, cfg), runs)
            mn = 8 * hh * ww
            print(f"  m*n = {mn:8d} ({hh}x{ww}): {t:.3f} s = {t / mn * 1e9:7.1f} ns per pixel")


if __name__ == "__main__":
    main()
