"""Benchmark of the permutohedral bilateral smoothness (training/lattice.py), CPU, 2 threads by default.

Consumes real webcam frames (../shared/data/webcams/chamonix/*.jpg resized to HxW, sRGB in [0,1]) or, if
absent, random smooth synthetic frames. Prints (seconds, medians of >= 5 runs after one warm-up):
1. lattice build (features + hashing + neighbours + bistochastic scaling) against m*n at 4 sizes, m = 8,
   with seconds per pixel (should stay roughly constant: linear growth);
2. at m = 8, 256x384: build, energy forward+backward, their sum (target ~0.15 s), and a breakdown
   (features, lattice hashing, bistochastic iterations, lattice sizes N / simplices / vertices).
Run: `.venv/bin/python -m bench.lattice [--threads 2] [--runs 5]`. `run_benchmark()` is callable from other
benchmarks (bench/loss.py).
"""
from __future__ import annotations

import torch

from bench._common import CHAMONIX, timed, torch_bench_args, webcam_frames
from training.lattice import BilateralSmoothness, bilateral_features, bistochastic_scaling, build_lattice

FRAMES = CHAMONIX


def load_frames(m: int, h: int, w: int) -> tuple[torch.Tensor, str]:
    """(m, 3, h, w) float32 sRGB in [0, 1] and where it came from."""
    frames = webcam_frames(m, h, w, FRAMES)
    if frames is not None:
        return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), f"chamonix webcam, {m}x{h}x{w}"
    g = torch.Generator().manual_seed(0)
    low = torch.rand(m, 3, max(h // 16, 1), max(w // 16, 1), generator=g)
    img = torch.nn.functional.interpolate(low, (h, w), mode="bilinear", align_corners=False)
    img = (img + 0.02 * torch.rand(m, 3, h, w, generator=g)).clamp(0, 1)
    return img.contiguous(), f"random smooth frames, {m}x{h}x{w}"


def run_benchmark(runs: int = 5) -> dict:
    """Print the two tables above and return the headline numbers (seconds)."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {runs} runs")
    print("\n[1] lattice build vs m*n (m = 8)")
    for h, w in ((64, 96), (128, 192), (192, 288), (256, 384)):
        srgb, _ = load_frames(8, h, w)
        t = timed(lambda: BilateralSmoothness.build(srgb), runs)
        mn = srgb.shape[0] * h * w
        print(f"  m*n = {mn:7d} ({h}x{w}): {t:.3f} s = {t / mn * 1e9:6.1f} ns per pixel")

    srgb, source = load_frames(8, 256, 384)
    print(f"\n[2] m = 8, 256x384 ({source})")
    noise = torch.randn(srgb.shape, generator=torch.Generator().manual_seed(1))
    log_r = (torch.log(srgb.clamp_min(1e-3) ** 2.2) + 0.05 * noise).requires_grad_()
    t_build = timed(lambda: BilateralSmoothness.build(srgb), runs)
    op = BilateralSmoothness.build(srgb)

    def fwd_bwd():
        log_r.grad = None
        op.energy(log_r).backward()

    t_energy = timed(fwd_bwd, runs)
    t_feat = timed(lambda: bilateral_features(srgb), runs)
    feats = bilateral_features(srgb)
    t_hash = timed(lambda: build_lattice(feats), runs)
    lat = build_lattice(feats)
    t_one = timed(lambda: lat.filter(lat.weights.new_ones(1, lat.num_points)), runs)
    t_norm = timed(lambda: bistochastic_scaling(lat), runs)
    print(
        f"  N = {lat.num_points}, simplices = {lat.num_simplices}, vertices = {lat.num_vertices}, "
        f"bistochastic iterations = {op.iterations_run}"
    )
    print(
        f"  features {t_feat:.3f} s, hashing+neighbours {t_hash:.3f} s, bistochastic {t_norm:.3f} s "
        f"({t_one * 1e3:.1f} ms per A-application)"
    )
    print(f"  build {t_build:.3f} s + energy fwd+bwd {t_energy:.3f} s = {t_build + t_energy:.3f} s (target ~0.15 s)")
    return {"build": t_build, "energy": t_energy, "total": t_build + t_energy}


def main() -> None:
    args = torch_bench_args(__doc__.splitlines()[0])
    run_benchmark(max(args.runs, 1))


if __name__ == "__main__":
    main()
