"""How much a finished run's single-image reflectance depends on the light (a diagnostic; evaluation only).

    python -m training.light_sensitivity --repo EXP_REPO --rev ctl-f1-s0 [--rev ...] [--csv rows.csv]
    python -m training.light_sensitivity --checkpoint CKPT --params PARAMS

Each run's held-out MIT objects (`training.rescore`: its `shards.val_sequences`, every object when it holds none
out) are decomposed, with the run's own `evaluate` options, from several images of the same object:
- "diffuse": the test image the evaluate stage scores;
- "light01".."light10": each image of the object's light sequence (linear 16-bit, encoded as `mit_srgb`);
- "light mix": the non-negative combination of the lights that best fits the diffuse image over the mask
  (`light_mix_weights`, least squares on all channels), a light the training sequences could have made;
and, from the lights' decompositions, "lights log-mean": exp of the mean over the lights of log R (a multi-image
reflectance, scored as the Weiss baseline's is). Only reflectance scores are reported (training/metrics.py
`mit_scores`: mse_r, lmse_r, dssim_r; per channel): the ground-truth shading belongs to the diffuse image's light.

What it answers: whether a run's error on an object comes from the object or from its light. The MIT recipe's
seed-0 checkpoints (ctl-f{0,1}-s0) score the box's reflectance at 0.011-0.042 from its ten lights, 0.053 from the
diffuse image and 0.008 from the lights' mix fitted to it: the test light (harsher on one face than any mix of the
ten) is what the network gets wrong there; over the ten objects the mix scores better than the diffuse image on
eight (params-mit.yaml `train.contrast_lights`). Prints, per run and object, the diffuse, the lights' mean / min /
max, the mix and the log-mean si-MSE; `--csv` writes one row per (run, object, input).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from training import metrics as M
from training.evaluate import load_mit_object, mit_srgb
from training.rescore import Run, add_run_arguments, parse_run_arguments, score_named_runs

REFLECTANCE_SCORES = ("mse_r", "lmse_r", "dssim_r")
LOG_FLOOR = 1e-4  # linear reflectance floor before the log-mean


def light_input(k: int) -> str:
    """The input name of the object's k-th light image (k from 0): "light01", ..."""
    return f"light{k + 1:02d}"


def is_light_input(name: str) -> bool:
    """Whether `name` is one of the light images (not "light mix" or "lights log-mean")."""
    return name.startswith("light") and name[5:].isdigit()


def light_mix_weights(lights: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n,) non-negative weights w minimising sum over masked pixels and channels of (sum_k w_k lights_k - image)^2.

    lights (n, H, W, 3) and image (H, W, 3) linear; mask (H, W) bool."""
    from scipy.optimize import nnls

    design = np.stack([light[mask].ravel() for light in lights], axis=1).astype(np.float64)
    weights, _ = nnls(design, image[mask].ravel().astype(np.float64))
    return weights


def object_inputs(data: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({input name: linear image (H, W, 3)} in the order of the module docstring, the mix's weights) for an MIT
    object loaded with its lights (`load_mit_object`)."""
    lights = data["lights"]
    weights = light_mix_weights(lights, data["diffuse"], data["mask"])
    inputs = {"diffuse": data["diffuse"]}
    inputs.update({light_input(k): light for k, light in enumerate(lights)})
    inputs["light mix"] = np.tensordot(weights, lights, axes=1)
    return inputs, weights


def score_run(run: Run, mit_dir: Path) -> pd.DataFrame:
    """One row per (held-out object, input) of `run`: its reflectance scores (REFLECTANCE_SCORES)."""
    from training.decompose import decompose, decompose_options
    from training.evaluate import mit_objects
    from training.model import load_checkpoint

    model, _ = load_checkpoint(run.checkpoint)
    options = decompose_options(run.params.evaluate)
    long_side = run.params.evaluate.mit_long_side
    wanted = set(run.held_out) if run.held_out else None
    rows = []
    for folder in mit_objects(mit_dir):
        if wanted is not None and folder.name not in wanted:
            continue
        data = load_mit_object(folder)
        if data["lights"] is None:
            raise ValueError(f"{folder}: no light01..lightNN.png images (the light sequence is needed)")
        inputs, weights = object_inputs(data)
        scored = {}
        light_logs = []
        for name, image in inputs.items():
            reflectance = decompose(model, mit_srgb(image), long_side, **options).reflectance
            if is_light_input(name):
                light_logs.append(np.log(np.maximum(reflectance, LOG_FLOOR)))
            scored[name] = reflectance
        scored["lights log-mean"] = np.exp(np.mean(light_logs, axis=0))
        for name, reflectance in scored.items():
            scores = M.mit_scores(data["reflectance"], data["shading"], reflectance, data["shading"], data["mask"])
            rows.append({"run": run.label, "fold": run.fold, "object": folder.name, "input": name,
                         **{k: scores[k] for k in REFLECTANCE_SCORES}})
        print(f"light_sensitivity: {run.label} {folder.name}: mix weights "
              + " ".join(f"{w:.2f}" for w in weights), file=sys.stderr)
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (run, object): reflectance si-MSE of the diffuse image, the lights' mean / min / max, the mix and the
    lights' log-mean."""
    si = rows.pivot_table(index=["run", "object"], columns="input", values="mse_r", sort=False)
    lights = si[[c for c in si.columns if is_light_input(c)]]
    return pd.DataFrame({"diffuse": si["diffuse"], "lights mean": lights.mean(axis=1), "lights min": lights.min(axis=1),
                         "lights max": lights.max(axis=1), "light mix": si["light mix"],
                         "lights log-mean": si["lights log-mean"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--csv", type=Path, help="write one row per (run, object, input)")
    args = parse_run_arguments(parser, argv)
    rows = score_named_runs(args, score_run, "light_sensitivity")
    if rows is None:
        return 1
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 200):
        print("reflectance si-MSE (per channel) by input:")
        print(summary(rows).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
