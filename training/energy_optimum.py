"""The training energy's own optimum: minimise it per pixel over one sequence, with no network (a diagnostic).

    python -m training.energy_optimum --params params.yaml --mit-dir ../shared/data/mit-intrinsic \
        [--objects squirrel,apple] [--iterations 400] [--long-side 256] [--out optimum.json]

For each MIT object, its ten lights (encoded like the training frames: `training.prepare_mit`'s 8-bit sRGB,
resized to `--long-side`, valid = the object's mask minus `masks.saturation`'s saturated/dark pixels) are one
sequence; free variables log R (m,3,H,W), log S (m,1,H,W), log c (m,3) minimise `training.loss.intrinsic_loss`
with the params' `loss` and `shards.shading_weights` settings (L-BFGS, `optimise_sequence`). The reflectance
scored is exp of the valid frames' mean log R, resized to native size, and the shading diffuse / R (channel
means), as the Weiss baseline of training/evaluate.py is scored, beside Weiss's own scores.

What it answers: the network is trained on this energy, so the optimum bounds what training can reach on the
light sequences; a network well above the optimum's energy (and scores) on the objects it trained on is limited by
the network, one whose optimum loses to Weiss by the energy. Prints one line per object (si-MSE / LMSE / DSSIM of
R and S) and the means; `--out` writes them as JSON. Takes about 4 minutes per object at long side 256 on one CPU
core (400 iterations).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import atomic_write_text
from pipeline.mask_backends import saturation_invalid
from pipeline.params import Params, ParamsError, ShardsParams, load_params
from pipeline.shading_weights import weights_from_params
from training import metrics as M
from training.evaluate import (load_mit_object, mit_frame_8bit, mit_objects, mit_weiss, resize_image,
                               shading_from_reflectance)
from training.loss import LossConfig, build_lattice, intrinsic_loss, log_linear_image

SCORES = ("mse_r", "mse_s", "lmse_r", "lmse_s", "dssim_r", "dssim_s", "mse_avg", "lmse_avg", "dssim_avg")


def optimise_sequence(srgb: np.ndarray, valid: np.ndarray, shards: ShardsParams, config: LossConfig,
                      iterations: int) -> tuple[dict[str, torch.Tensor], float, dict]:
    """Minimise the energy of one sequence over per-pixel layers.

    srgb (m, H, W, 3) gamma-encoded in [0, 1]; valid (m, H, W) bool. Starts from grey shading = the frame's mean
    linear RGB (log), log R = log I - log S, log c = 0; `iterations` L-BFGS iterations (strong-Wolfe line search).
    Returns ({"log_r": (m,3,H,W), "log_s": (m,1,H,W), "log_c": (m,3)} natural logs of linear values, the final
    energy, its unweighted terms as floats).
    """
    frames = torch.from_numpy(np.ascontiguousarray(srgb, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    mask = torch.from_numpy(np.asarray(valid, np.float32)[:, None]).contiguous()
    weights = [torch.from_numpy(w) for w in weights_from_params(srgb, shards)]
    lattice = build_lattice(frames, mask, config) if config.w_rsmooth else None
    log_i = log_linear_image(frames, config.log_eps)
    log_s0 = log_i.exp().mean(1, keepdim=True).log() * mask  # invalid pixels start at S = 1
    layers = {"log_r": (log_i - log_s0).contiguous(), "log_s": log_s0.contiguous(),
              "log_c": torch.zeros(len(srgb), 3)}
    for t in layers.values():
        t.requires_grad_(True)
    optimiser = torch.optim.LBFGS(list(layers.values()), lr=1, max_iter=iterations, history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

    def energy():
        return intrinsic_loss(frames, mask, layers["log_r"], layers["log_s"], layers["log_c"], weights, config,
                              lattice=lattice)

    def closure():
        optimiser.zero_grad()
        total, _ = energy()
        total.backward()
        return total

    optimiser.step(closure)
    with torch.no_grad():
        total, terms = energy()
    return {k: v.detach() for k, v in layers.items()}, float(total), {k: float(v) for k, v in terms.items()}


def mit_light_sequence(data: dict, params: Params, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An MIT object's lights as a training sequence: (srgb (m, h, w, 3) 8-bit values in [0, 1], valid (m, h, w))."""
    height, width = data["mask"].shape
    scale = min(1.0, long_side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    srgb8 = np.stack([resize_image(mit_frame_8bit(light), size) for light in data["lights"]])
    object_mask = resize_image((data["mask"] > 0.5).astype(np.float64), size) > 0.99
    sat = params.masks.saturation
    valid = object_mask[None] & ~saturation_invalid(srgb8, high=sat.high, low=sat.low, dilate=sat.dilate)
    return srgb8.astype(np.float64) / 255.0, valid


def score_object(folder: Path, params: Params, iterations: int, long_side: int) -> dict:
    """{"optimum": scores, "weiss": scores, "energy": float, "terms": dict} for one MIT object folder."""
    data = load_mit_object(folder)
    if data["lights"] is None or len(data["lights"]) < 2:
        raise ValueError(f"{folder}: needs at least two light*.png images")
    srgb, valid = mit_light_sequence(data, params, long_side)
    layers, total, terms = optimise_sequence(srgb, valid, params.shards, LossConfig.from_params(params.loss),
                                              iterations)
    log_r, m = layers["log_r"], torch.from_numpy(valid[:, None].astype(np.float32))
    mean_log_r = (log_r * m).sum(0) / m.sum(0).clamp_min(1.0)  # (3, h, w)
    mask = data["mask"] > 0.5
    refl = resize_image(np.exp(mean_log_r.permute(1, 2, 0).double().numpy()), mask.shape)
    optimum = (refl, shading_from_reflectance(data["diffuse"], refl))
    out = {"energy": total, "terms": terms}
    for name, (r, s) in {"optimum": optimum, "weiss": mit_weiss(data, mask)}.items():
        scores = M.mit_scores(data["reflectance"], data["shading"], r, s, mask)
        out[name] = {k: float(scores[k]) for k in SCORES}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--mit-dir", type=Path, required=True)
    parser.add_argument("--objects", default="", help="comma-separated object names (default: all)")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--long-side", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"energy_optimum: {exc}", file=sys.stderr)
        return 2
    if args.iterations < 1 or args.long_side < 8:
        print("energy_optimum: --iterations must be >= 1 and --long-side >= 8", file=sys.stderr)
        return 2
    folders = mit_objects(args.mit_dir) if args.mit_dir.is_dir() else []
    wanted = [o for o in args.objects.split(",") if o]
    unknown = sorted(set(wanted) - {f.name for f in folders})
    if unknown or not folders:
        print(f"energy_optimum: no MIT object{'s ' + ', '.join(unknown) if unknown else 's'} under {args.mit_dir}",
              file=sys.stderr)
        return 1
    results = {}
    for folder in folders:
        if wanted and folder.name not in wanted:
            continue
        results[folder.name] = row = score_object(folder, params, args.iterations, args.long_side)
        for method in ("optimum", "weiss"):
            shown = " ".join(f"{k} {row[method][k]:.4f}" for k in SCORES[:6])
            print(f"{folder.name:10s} {method:8s} {shown}", flush=True)
    means = {method: {k: float(np.mean([r[method][k] for r in results.values()])) for k in SCORES}
             for method in ("optimum", "weiss")}
    for method, mean in means.items():
        print(f"{'mean':10s} {method:8s} " + " / ".join(f"{mean[k]:.4f}" for k in SCORES[6:]))
    if args.out:
        atomic_write_text(args.out, json.dumps({"objects": results, "mean": means,
                                                "iterations": args.iterations, "long_side": args.long_side},
                                               indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
