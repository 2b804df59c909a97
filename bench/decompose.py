"""Benchmark of `training.decompose.decompose`'s test-time steps against the network pass, CPU, 2 threads by default.

Consumes an MIT object's diffuse image (../shared/data/mit-intrinsic/apple/diffuse.png, linear 16-bit, converted
to sRGB) or, if absent, the first chamonix webcam frame at 480x640, or random smooth colours. The network is the
MIT recipe's (`small` preset, input_skip on the reflectance decoder) at random init: time does not depend on the
weights. Prints seconds (median of --runs after one warm-up) and each step's ratio to the network pass:
network pass (decompose with every option off), residual_split 0.5, chroma_edges 0.06 (one sparse solve),
flatten_reflectance 0.3 without and with flatten_chroma_bandwidth 0.1 (one sparse solve; the bandwidth adds one
O(pixels) kernel regression), soften_light 0.6 (a second network pass on the softened image),
`chromaticity_explained` alone, and the full MIT recipe (params-mit.yaml's evaluate).
Then the sparse solve those steps share (`training.baselines.integrate_gradients`, every pixel in the system) by
sparse LU and by multigrid-preconditioned CG at 0.12, 0.48 and 1 MP (the 1 MP row one run), with LU / multigrid.
Run: `.venv/bin/python -m bench.decompose [--threads 2] [--runs 5]`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench._common import CHAMONIX, timed, torch_bench_args, webcam_frames
from pipeline.color import linear_to_srgb
from training.baselines import integrate_gradients
from training.decompose import chromaticity_explained, decompose
from training.model import IntrinsicUNet, ModelConfig

MIT_APPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mit-intrinsic" / "apple"


def load_image() -> tuple[np.ndarray, str]:
    """(H, W, 3) float32 sRGB in [0, 1] and where it came from."""
    if (MIT_APPLE / "diffuse.png").exists():
        from training.evaluate import load_mit_object, mit_srgb

        srgb = mit_srgb(load_mit_object(MIT_APPLE)["diffuse"]).astype(np.float32)
        return srgb, f"MIT apple diffuse, {srgb.shape[0]}x{srgb.shape[1]}"
    frames = webcam_frames(1, 480, 640, CHAMONIX)
    if frames is not None:
        return frames[0], "chamonix webcam frame, 480x640"
    rng = np.random.default_rng(0)
    low = rng.uniform(0.02, 1.0, (15, 20, 3))
    srgb = linear_to_srgb(np.kron(low, np.ones((32, 32, 1)))).astype(np.float32)
    return srgb, "random smooth colours, 480x640"


def main() -> None:
    args = torch_bench_args(__doc__.split("\n")[0])
    srgb, source = load_image()
    model = IntrinsicUNet(ModelConfig(**ModelConfig.PRESETS["small"], input_skip=True, input_skip_shading=False))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs} runs; {source}")
    off = dict(residual_split=None, chroma_edges=None, flatten_reflectance=None)
    cases = {
        "network pass (every option off)": off,
        "+ residual_split 0.5": {**off, "residual_split": 0.5},
        "+ chroma_edges 0.06": {**off, "residual_split": 0.5, "chroma_edges": 0.06, "chroma_edge_min_pixels": 100},
        "+ flatten_reflectance 0.3": {**off, "residual_split": 0.5, "flatten_reflectance": 0.3,
                                      "chroma_edge_min_pixels": 100},
        "+ flatten 0.3, chroma bandwidth 0.1 (default)": {**off, "residual_split": 0.5, "flatten_reflectance": 0.3,
                                                          "chroma_edge_min_pixels": 100, "flatten_chroma_bandwidth": 0.1},
        "+ soften_light 0.6 (a second network pass)": {**off, "soften_light": 0.6},
        "MIT recipe (all of them)": {"residual_split": 0.5, "chroma_edges": 0.06, "chroma_edge_min_pixels": 100,
                                     "flatten_reflectance": 0.3, "flatten_chroma_bandwidth": 0.1, "soften_light": 0.6},
    }
    with torch.no_grad():
        base = None
        for name, options in cases.items():
            t = timed(lambda: decompose(model, srgb, **options), args.runs)
            base = base or t
            print(f"  {name:48s} {t:7.3f} s  {t / base:5.2f}x the network pass")
        grey = np.log(np.clip(srgb, 1e-3, 1)).mean(axis=2)
        t = timed(lambda: chromaticity_explained(srgb, grey, 0.1), args.runs)
        print(f"  {'chromaticity_explained alone':48s} {t:7.3f} s  {t / base:5.2f}x the network pass")
    print("integrate_gradients, every pixel an unknown: sparse LU vs multigrid CG")
    rng = np.random.default_rng(0)
    for (h, w), runs in (((300, 400), args.runs), ((600, 800), args.runs), ((1000, 1000), 1)):
        gx, gy = rng.normal(size=(h, w - 1)), rng.normal(size=(h - 1, w))
        t_lu = timed(lambda: integrate_gradients(gx, gy, direct_max_unknowns=h * w), runs)
        t_mg = timed(lambda: integrate_gradients(gx, gy, direct_max_unknowns=0), runs)
        print(f"  {h}x{w}: LU {t_lu:6.2f} s, multigrid {t_mg:6.2f} s, LU / multigrid {t_lu / t_mg:4.1f}x")


if __name__ == "__main__":
    main()
