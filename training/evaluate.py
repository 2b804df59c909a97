"""Evaluate stage: the trained model and classical baselines on MIT intrinsics, our synthetic ground truth, IIW, SAW.

Consumes
- `--checkpoint` {"model": state_dict, "model_config": asdict(ModelConfig), ...} (torch.load weights_only)
- `params.yaml` section `evaluate` (mit_dir, iiw_dir, saw_dir, max_images: per dataset)
- MIT (`evaluate.mit_dir`, Barron's layout `<object>/{diffuse,reflectance,shading,mask,light01..10}.png`,
  16-bit LINEAR PNG): input = `diffuse.png` (the image whose ground truth `reflectance.png` x `shading.png`
  is), converted to sRGB by `mit_srgb`; the Weiss baseline uses the object's light01..10 sequence.
  Skipped with a message when the folder is absent.
- synthetic sequences (`--frames`, `<name>/NNNN.png` 8-bit sRGB + `groundtruth.npz` from pipeline/synthetic.py:
  reflectance (T,H,W,3), shading (T,H,W) linear; sky/dynamic/clipped (T,H,W) bool are left out of the mask);
  each frame is decomposed on its own (Weiss uses the whole sequence). The split of each sequence is read
  from `--shards`/manifest.json when it names one (metrics for "val" are reported separately).
- IIW (`evaluate.iiw_dir`: `<id>.png` + `<id>.json` judgements, any depth, e.g. iiw-dataset/data) and SAW
  (`evaluate.saw_dir`: images `<id>.png` and label maps `<id>.npy`, any depth below saw_dir, e.g. the release's
  saw_images_512/ and saw_pixel_labels/<setting>/), only when set; restricted to the ids of a `test_ids.txt` /
  `test_ids.npy` found below the folder (training/fetch_eval_data.py puts them there). Images are decomposed at
  long side 384 (the baselines too) and the layers resized back. Fetch the data with the frozen DVC stages
  `fetch_iiw` / `fetch_saw` (dvc.yaml; off by default, no internet here).
Produces
- `--metrics` JSON (DVC metrics): {dataset: {"n_images": n, method: {metric: mean}, "model_beats": {metric:
  {baseline: bool}}}}; methods "model", "constant_shading" (R = I), "chromaticity" (R = I / lum, S = lum),
  "retinex", "weiss" (sequences only: MIT and synthetic).
  MIT and synthetic metrics: training/metrics.py `MIT_KEYS` (lower is better) in three reflectance scoring
  conventions: per channel (one scale per colour channel; keys without suffix: mse_r, lmse_r, dssim_r, *_avg),
  grey (Grosse et al.'s code: channels averaged first; mse_r_grey, ..., *_avg_grey) and one scale shared by
  the three channels (penalises a colour cast; mse_r_shared, ..., *_avg_shared); shading (grey) is scored once
  (mse_s, lmse_s, dssim_s) and enters every convention's *_avg.
  IIW "whdr" / SAW "ap": the linear layers as decomposed; "whdr_gamma" / "ap_gamma": R^(1/2.2) / S^(1/2.2),
  as the authors' test wrapper scores them (their published numbers). WHDR lower, AP higher is better.
- `--out`: report.md (one table per convention, which baselines the model beats, skipped datasets and why),
  per_image.json,
  config.json (resolved evaluate params + checkpoint info), grids/<dataset>/<image>.png: input | model
  reflectance | model shading (| ground-truth reflectance | ground-truth shading), linear layers shown as
  sRGB with their 99th percentile (inside the mask) as white.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from pipeline.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.color import linear_to_srgb, srgb_to_linear
from training import metrics as M
from training.baselines import chromaticity, constant_shading, retinex, weiss
from training.decompose import decompose, decompose_options, display, png_bytes, read_linear_png, read_srgb

MIT_METRICS = M.MIT_KEYS  # per channel (historical keys), then *_grey, then *_shared
WILD_METRICS = ("whdr", "whdr_gamma", "ap", "ap_gamma")  # *_gamma: scored on R^(1/2.2), S^(1/2.2) (the authors')
HIGHER_IS_BETTER = {"ap", "ap_gamma"}
SINGLE_IMAGE_BASELINES = ("constant_shading", "chromaticity", "retinex")  # all datasets
BASELINES = (*SINGLE_IMAGE_BASELINES, "weiss")  # weiss needs a sequence: MIT lights, synthetic frames
MIT_SOURCE_PREFIX = "mit_"  # the MIT recipes name the source of object <object> "mit_<object>"
WILD_LONG_SIDE = 384  # IIW / SAW images are decomposed at this long side (the training resolution)
PAPER_TABLE3 = {"mse_r": 0.0147, "mse_s": 0.0135, "mse_avg": 0.0141, "lmse_r": 0.0341, "lmse_s": 0.0253,
                "lmse_avg": 0.0297, "dssim_r": 0.1398, "dssim_s": 0.1266, "dssim_avg": 0.1332}
# report.md: one table per group of metric keys, with the sentence that says how its columns are scored
REPORT_TABLES = (
    (M.mit_keys("channel"), "Reflectance scored PER CHANNEL: each colour channel rescaled by its own least-squares "
                            "factor, then averaged (keys without suffix; a colour cast costs nothing)."),
    (M.mit_keys("grey"), "Reflectance scored on GREY (Grosse et al.'s comparison code): ground truth and estimate "
                         "averaged over the channels first, then one scale (keys `*_grey`)."),
    (M.mit_keys("shared"), "Reflectance scored with ONE SCALE SHARED by the three channels (keys `*_shared`; "
                           "penalises a colour cast)."),
    (("whdr", "whdr_gamma"), "`whdr`: the linear reflectance as decomposed; `whdr_gamma`: R^(1/2.2), as the "
                             "authors' test wrapper scores it (their published WHDR)."),
    (("ap", "ap_gamma"), "`ap`: the linear shading as decomposed; `ap_gamma`: S^(1/2.2), as the authors' test "
                         "wrapper scores it (their published AP)."),
)

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # srgb (H,W,3) -> (R (H,W,3), S (H,W)) linear


def mit_srgb(linear: np.ndarray) -> np.ndarray:
    """MIT 16-bit linear image -> the sRGB the model sees (plain sRGB encoding, no exposure change).

    training/prepare_mit.py writes the training frames with this same function."""
    return linear_to_srgb(np.clip(linear, 0.0, 1.0))


def mit_frame_8bit(linear: np.ndarray) -> np.ndarray:
    """MIT 16-bit linear light -> the 8-bit sRGB training frame (uint8) training/prepare_mit.py writes."""
    return np.round(255 * mit_srgb(linear)).astype(np.uint8)


def shading_from_reflectance(image: np.ndarray, reflectance: np.ndarray) -> np.ndarray:
    """Linear image (H, W, 3) and a reflectance (H, W, 3) found from other images -> grey shading (H, W): the
    image's channel mean over the reflectance's (how multi-image reflectances, Weiss's, are scored on MIT)."""
    return np.maximum(image, 1e-4).mean(axis=2) / reflectance.mean(axis=2)


def mit_weiss(data: dict, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weiss's reflectance from an MIT object's lights (`load_mit_object`) and the diffuse image's shading under it."""
    refl, _ = weiss(data["lights"], np.broadcast_to(mask, data["lights"].shape[:3]))
    return refl, shading_from_reflectance(data["diffuse"], refl)


def model_predictor(model, long_side: Optional[int] = None, **options) -> Predictor:
    """srgb (H, W, 3) -> the model's linear (R (H, W, 3), S (H, W)); `options`: `training.decompose.decompose`'s
    keywords (flip_average, residual_split, ...; `decompose_options(params.evaluate)` gives them all)."""
    def predict(srgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = decompose(model, srgb, long_side, **options)
        return d.reflectance, d.shading

    return predict


def single_image_baselines(linear: np.ndarray, mask: Optional[np.ndarray] = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """SINGLE_IMAGE_BASELINES on one linear image (H, W, 3) -> {name: (R (H, W, 3), S (H, W))}."""
    return {"constant_shading": constant_shading(linear), "chromaticity": chromaticity(linear),
            "retinex": retinex(linear, mask)}


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) array -> (h, w[, C]) for size (h, w), any units (resampling is linear in the values):
    area-averaged when shrinking, bilinear when enlarging; the input itself when already that size."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=interp)


def _grid(panels: list[np.ndarray], mask: Optional[np.ndarray]) -> bytes:
    """panels: [input sRGB in [0,1], then linear layers] -> one PNG row."""
    tiles = [np.round(255 * np.clip(panels[0], 0, 1)).astype(np.uint8)]
    tiles += [display(p, mask) for p in panels[1:]]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return png_bytes(np.concatenate(row, axis=1))


def _mean_rows(rows: list[dict], methods: list[str], keys: tuple[str, ...]) -> dict:
    out: dict = {"n_images": len(rows)}
    for method in methods:
        values = {k: [r[method][k] for r in rows if method in r and r[method].get(k) is not None] for k in keys}
        out[method] = {k: float(np.mean(v)) for k, v in values.items() if v}
    return out


def add_model_beats(summary: dict) -> dict:
    """summary[method][metric] -> summary["model_beats"][metric][baseline] = model better (strictly)."""
    beats: dict = {}
    for metric, value in summary.get("model", {}).items():
        for base in BASELINES:
            other = summary.get(base, {}).get(metric)
            if other is not None:
                better = value > other if metric in HIGHER_IS_BETTER else value < other
                beats.setdefault(metric, {})[base] = bool(better)
    summary["model_beats"] = beats
    return summary


# ------------------------------------------------------------------------------------------ MIT


def load_mit_object(folder: Path, lights: bool = True) -> dict:
    """Barron's layout -> {"diffuse", "reflectance" (H, W, 3), "shading" (H, W), "mask" (H, W) bool, "lights"
    (10, H, W, 3) or None}, linear; `lights` false skips reading the light sequence (only Weiss needs it)."""
    data = {name: read_linear_png(folder / f"{name}.png") for name in ("diffuse", "reflectance", "shading", "mask")}
    if data["shading"].ndim == 3:
        data["shading"] = data["shading"].mean(axis=2)
    if data["mask"].ndim == 3:
        data["mask"] = data["mask"].mean(axis=2)
    data["mask"] = data["mask"] > 0.5
    lights = sorted(folder.glob("light[0-9][0-9].png")) if lights else []
    data["lights"] = np.stack([read_linear_png(p) for p in lights]) if lights else None
    return data


def mit_objects(mit_dir: Path) -> list[Path]:
    return sorted(p for p in mit_dir.iterdir() if (p / "diffuse.png").exists() and (p / "reflectance.png").exists())


def evaluate_mit(predict: Predictor, mit_dir: Path, max_images: Optional[int], grid_dir: Optional[Path] = None,
                 objects: Optional[Iterable[str]] = None, baselines: bool = True) -> tuple[dict, list[dict]]:
    """Score `predict` (and, with `baselines`, BASELINES) on the MIT objects in `mit_dir` (only those named in
    `objects` if given; at most `max_images`, None: all) -> (means over the objects, one row per object)."""
    rows = []
    folders = mit_objects(mit_dir)
    if objects is not None:
        wanted = set(objects)
        folders = [f for f in folders if f.name in wanted]
    for folder in folders[:max_images]:
        data = load_mit_object(folder, lights=baselines)
        image, mask = data["diffuse"], data["mask"]
        preds = {"model": predict(mit_srgb(image))}
        if baselines:
            preds.update(single_image_baselines(image, mask))
        if data["lights"] is not None and len(data["lights"]) >= 2:
            preds["weiss"] = mit_weiss(data, mask)
        row = {"image": folder.name}
        for method, (r, s) in preds.items():
            row[method] = M.mit_scores(data["reflectance"], data["shading"], r, s, mask)
        rows.append(row)
        if grid_dir is not None:
            r, s = preds["model"]
            atomic_write_bytes(grid_dir / f"{folder.name}.png",
                               _grid([mit_srgb(image), r, s, data["reflectance"], data["shading"]], mask))
        print(f"evaluate: mit {folder.name}: model mse_avg {row['model']['mse_avg']:.4f}", file=sys.stderr)
    return _mean_rows(rows, ["model", *(BASELINES if baselines else ())], MIT_METRICS), rows


# ------------------------------------------------------------------------------------------ synthetic


def splits_from_manifest(shards_dir: Optional[Path]) -> dict[str, str]:
    """{source name: "train"/"val"} from `<shards>/manifest.json` "sequences" (pipeline/shards.py); {} if absent."""
    path = None if shards_dir is None else Path(shards_dir) / "manifest.json"
    if path is None or not path.exists():
        return {}
    try:
        sequences = json.loads(path.read_text()).get("sequences", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return {key: info["split"] for key, info in sequences.items() if isinstance(info, dict) and "split" in info}


def load_sequence(folder: Path) -> dict:
    try:
        gt = np.load(folder / "groundtruth.npz")
        gt = {key: gt[key] for key in gt.files}
    except Exception as err:  # noqa: BLE001 - BadZipFile, truncated arrays...: name the file
        raise ValueError(f"{folder / 'groundtruth.npz'}: unreadable ({type(err).__name__}: {err})") from None
    frames = sorted(folder.glob("[0-9][0-9][0-9][0-9].png"))
    srgb = np.stack([read_srgb(p) for p in frames])
    t = min(len(srgb), len(gt["reflectance"]))
    invalid = np.zeros(srgb.shape[:3], bool)[:t]
    for key in ("sky", "dynamic", "clipped"):
        if key in gt:
            invalid |= np.asarray(gt[key][:t], bool)
    return {"srgb": srgb[:t], "reflectance": np.asarray(gt["reflectance"][:t], np.float64),
            "shading": np.asarray(gt["shading"][:t], np.float64), "mask": ~invalid}


def evaluate_synthetic(predict: Predictor, frames_dir: Path, max_images: int, splits: dict[str, str],
                       grid_dir: Optional[Path] = None, min_valid: int = 400) -> tuple[dict, list[dict]]:
    rows = []
    folders = sorted(p for p in frames_dir.iterdir() if (p / "groundtruth.npz").exists())
    if splits:  # the shards manifest lists the dataset: folders of sources no longer in params are not scored
        folders = [p for p in folders if p.name in splits]
    for folder in folders:
        if len(rows) >= max_images:
            break
        seq = load_sequence(folder)
        linear = srgb_to_linear(seq["srgb"])
        weiss_r, weiss_s = weiss(linear, seq["mask"])
        for t in range(len(linear)):
            mask = seq["mask"][t]
            if len(rows) >= max_images or mask.sum() < min_valid:
                continue
            preds = {"model": predict(seq["srgb"][t]), **single_image_baselines(linear[t], mask),
                     "weiss": (weiss_r, weiss_s[t])}
            row = {"image": f"{folder.name}/{t:04d}", "split": splits.get(folder.name, "unknown")}
            for method, (r, s) in preds.items():
                row[method] = M.mit_scores(seq["reflectance"][t], seq["shading"][t], r, s, mask)
            rows.append(row)
            if grid_dir is not None:
                r, s = preds["model"]
                atomic_write_bytes(grid_dir / f"{folder.name}_{t:04d}.png",
                                   _grid([seq["srgb"][t], r, s, seq["reflectance"][t], seq["shading"][t]], mask))
    return _mean_rows(rows, ["model", *BASELINES], MIT_METRICS), rows


# ------------------------------------------------------------------------------------------ IIW / SAW


def test_ids(root: Path) -> Optional[set[str]]:
    """Ids listed in `test_ids.txt` (one a line) or `test_ids.npy` (SAW's saw_splits) below root; None if none."""
    for path in sorted(root.rglob("test_ids.txt")):
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    for path in sorted(root.rglob("test_ids.npy")):
        return {str(i) for i in np.load(path).ravel().tolist()}
    return None


def _pairs(root: Path, ext: str) -> list[tuple[Path, Path]]:
    """(<id>.png, <id>.<ext>) pairs below root, sorted by id, restricted to the test ids when listed. Annotation
    files come from the one folder holding the most of them (SAW ships label maps for several settings)."""
    images = {p.stem: p for p in root.rglob("*.png")}
    by_folder: dict[Path, list[Path]] = {}
    for p in root.rglob(f"*.{ext}"):
        if p.stem in images:
            by_folder.setdefault(p.parent, []).append(p)
    if not by_folder:
        return []
    folder = max(sorted(by_folder), key=lambda f: len(by_folder[f]))
    ids = test_ids(root)
    return sorted(((images[p.stem], p) for p in by_folder[folder] if ids is None or p.stem in ids),
                  key=lambda t: t[0].stem)


def _wild_predictions(predict: Predictor, srgb: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model and baselines on the image scaled to long side WILD_LONG_SIDE (if larger), layers resized back."""
    h, w = srgb.shape[:2]
    scale = min(1.0, WILD_LONG_SIDE / max(h, w))
    small = resize_image(srgb, (max(1, round(h * scale)), max(1, round(w * scale))))
    linear = srgb_to_linear(small)
    out = {"model": predict(small), **single_image_baselines(linear)}
    return {k: (resize_image(r, (h, w)), resize_image(s, (h, w))) for k, (r, s) in out.items()}


def _wild_images(predict: Predictor, root: Path, ext: str, load: Callable[[Path], Any], max_images: int,
                 grid_dir: Optional[Path]) -> Iterator[tuple[str, Any, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """For the first `max_images` (<id>.png, <id>.<ext>) pairs below root: yield (id, load(annotation path),
    `_wild_predictions`); once the caller is done with an image, its model grid (input, reflectance, shading)
    is written to grid_dir/<id>.png when grid_dir is given."""
    for image_path, annotation_path in _pairs(root, ext)[:max_images]:
        srgb = read_srgb(image_path)
        annotation = load(annotation_path)
        preds = _wild_predictions(predict, srgb)
        yield image_path.stem, annotation, preds
        if grid_dir is not None:
            atomic_write_bytes(grid_dir / f"{image_path.stem}.png", _grid([srgb, *preds["model"]], None))


def evaluate_iiw(predict: Predictor, iiw_dir: Path, max_images: int, grid_dir: Optional[Path] = None) -> tuple[dict, list[dict]]:
    rows = []
    for image_id, judgements, preds in _wild_images(predict, iiw_dir, "json", M.load_iiw_judgements, max_images, grid_dir):
        row = {"image": image_id}
        for method, (r, _) in preds.items():
            row[method] = {"whdr": M.whdr(r, judgements), "whdr_gamma": M.whdr(r, judgements, gamma=M.AUTHORS_GAMMA)}
        rows.append(row)
    return _mean_rows(rows, ["model", *SINGLE_IMAGE_BASELINES], ("whdr", "whdr_gamma")), rows


def evaluate_saw(predict: Predictor, saw_dir: Path, max_images: int, grid_dir: Optional[Path] = None) -> tuple[dict, list[dict]]:
    thresholds = M.saw_thresholds()
    gammas = {"ap": 1.0, "ap_gamma": M.AUTHORS_GAMMA}
    totals: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for image_id, labels, preds in _wild_images(predict, saw_dir, "npy", M.load_saw_labels, max_images, grid_dir):
        row = {"image": image_id}
        for method, (_, s) in preds.items():
            for key, gamma in gammas.items():
                conf = M.saw_confusion(resize_image(s, labels.shape), labels, thresholds, gamma=gamma)
                if conf is not None:
                    totals.setdefault(method, {})[key] = totals.get(method, {}).get(key, 0) + conf
        rows.append(row)
    summary: dict = {"n_images": len(rows)}
    for method, confs in totals.items():
        summary[method] = {key: M.saw_ap(*M.saw_precision_recall(conf)) for key, conf in confs.items()}
    return summary, rows


# ------------------------------------------------------------------------------------------ report


def report_markdown(results: dict, skipped: dict[str, str], checkpoint: str) -> str:
    lines = ["# Evaluation report", "", f"Checkpoint: `{checkpoint}`", ""]
    for dataset, summary in results.items():
        methods = [m for m in ("model", *BASELINES) if m in summary]
        present = {k for m in methods for k in summary[m]}
        listed: set[str] = set()  # verdicts already given (the shading keys sit in every MIT table)
        lines += [f"## {dataset} ({summary['n_images']} images)", ""]
        for keys, caption in REPORT_TABLES:
            metrics = [k for k in keys if k in present]
            if not metrics:
                continue
            lines += [caption, "", "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
            for m in methods:
                lines.append(f"| {m} | " + " | ".join(f"{summary[m][k]:.4f}" if k in summary[m] else "-" for k in metrics) + " |")
            if dataset.startswith("mit"):  # Table 3 does not say which convention: its row is beside each one
                paper = [PAPER_TABLE3.get(k.removesuffix("_grey").removesuffix("_shared")) for k in metrics]
                lines.append("| paper Table 3 (10 test objects) | " + " | ".join(f"{v:.4f}" if v is not None else "-" for v in paper) + " |")
            lines += ["", "Model beats (" + ("higher" if set(metrics) & HIGHER_IS_BETTER else "lower") + " is better):", ""]
            for metric in [k for k in metrics if k not in listed]:
                listed.add(metric)
                bases = summary.get("model_beats", {}).get(metric, {})
                verdict = ", ".join(f"{b}: {'yes' if v else 'NO'}" for b, v in bases.items())
                lines.append(f"- {metric}: {verdict}")
            lines.append("")
    if "mit" in results:
        lines += ["MIT note: `../shared/data/mit-intrinsic` holds Barron's 10 TRAINING objects, not the paper's 10 test",
                  "objects, so the numbers are not directly comparable with Table 3; if the model was trained with",
                  "params-mit.yaml it saw these objects' light sequences (never their ground truth). Weiss uses the",
                  "object's 10 light images (a multi-image method), the others the single diffuse image. The paper",
                  "does not say how its Table 3 scales colour reflectance: its row stands beside each convention.", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    return "\n".join(lines)


def run_evaluation(predict: Predictor, *, mit_dir: Optional[Path], frames_dir: Optional[Path], shards_dir: Optional[Path],
                   iiw_dir: Optional[Path], saw_dir: Optional[Path], max_images: int, out_dir: Path,
                   checkpoint: str = "", mit_predict: Optional[Predictor] = None) -> tuple[dict, dict]:
    """Run every available dataset; write grids, per_image.json and report.md into out_dir; return (results, skipped).
    `mit_predict` (default `predict`) decomposes the MIT objects (e.g. at another network size)."""
    results: dict = {}
    per_image: dict = {}
    skipped: dict[str, str] = {}
    grids = out_dir / "grids"

    def attempt(name: str, path: Optional[Path], fn, *args, predictor: Predictor = predict):
        if path is None or str(path) in ("", "."):
            skipped[name] = "not configured (empty evaluate.*_dir param or no --frames)"
            return
        if not Path(path).is_dir():
            skipped[name] = f"{path} not found"
            return
        summary, rows = fn(predictor, Path(path), max_images, *args)
        if not rows:
            skipped[name] = f"{path} holds no usable images"
            return
        results[name] = add_model_beats(summary)
        per_image[name] = rows

    splits = splits_from_manifest(shards_dir)
    attempt("mit", mit_dir, evaluate_mit, grids / "mit", predictor=mit_predict or predict)
    attempt("synthetic", frames_dir, evaluate_synthetic, splits, grids / "synthetic")
    for row in per_image.get("mit", []):  # MIT object <object> trained as source mit_<object> (params-mit*.yaml)
        row["split"] = splits.get(f"{MIT_SOURCE_PREFIX}{row['image']}", "unknown")
    for name, held_out in (("synthetic", "synthetic_val"), ("mit", "mit_heldout")):
        val_rows = [r for r in per_image.get(name, []) if r["split"] == "val"]
        if val_rows:  # sequences the model never trained on (shards.val_sequences / val_fraction)
            results[held_out] = add_model_beats(_mean_rows(val_rows, ["model", *BASELINES], MIT_METRICS))
    attempt("iiw", iiw_dir, evaluate_iiw, grids / "iiw")
    attempt("saw", saw_dir, evaluate_saw, grids / "saw")
    for name, reason in skipped.items():
        print(f"evaluate: skipping {name}: {reason}", file=sys.stderr)
    atomic_write_json(out_dir / "per_image.json", per_image)
    atomic_write_text(out_dir / "report.md", report_markdown(results, skipped, checkpoint))
    return results, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--frames", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    from pipeline.params import ParamsError, load_params
    from training.model import CheckpointError, load_checkpoint

    try:
        params = load_params(args.params).evaluate
        model, ckpt = load_checkpoint(args.checkpoint)
        return _evaluate(args, params, model, ckpt)
    except (ParamsError, CheckpointError, ValueError, OSError) as err:
        print(f"evaluate: stopped: {err}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace, params, model, ckpt: dict) -> int:
    opt = lambda s: Path(s) if s else None  # noqa: E731
    with atomic_dir(args.out) as out:
        results, skipped = run_evaluation(
            model_predictor(model, None, **decompose_options(params)),
            mit_dir=opt(params.mit_dir),
            frames_dir=args.frames, shards_dir=args.shards, iiw_dir=opt(params.iiw_dir), saw_dir=opt(params.saw_dir),
            max_images=params.max_images, out_dir=out, checkpoint=str(args.checkpoint),
            mit_predict=model_predictor(model, params.mit_long_side, **decompose_options(params)))
        atomic_write_json(out / "config.json", {"evaluate": params.model_dump(), "checkpoint": str(args.checkpoint),
                                                "model_config": ckpt["model_config"], "step": ckpt.get("step"),
                                                "skipped": skipped})
    atomic_write_json(args.metrics, results)
    print(f"evaluate: {', '.join(results) or 'nothing'} evaluated; report in {args.out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
