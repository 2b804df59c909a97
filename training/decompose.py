"""Decompose any photo into reflectance and shading with a trained checkpoint.

Library: `decompose(model, srgb, long_side=None, flip_average=False, residual_split=None,
residual_chroma_to_reflectance=False, chroma_edges=None, chroma_edge_min_pixels=0, flatten_reflectance=None,
flatten_threshold=0.03, flatten_chroma_bandwidth=None, scale_average=(), norm_statistics="running",
soften_light=None) -> Decomposition`
  srgb         (H, W, 3) float in [0, 1], gamma-encoded (an ordinary photo)
  reflectance  (H, W, 3) float64 LINEAR albedo = exp(log_r), scale arbitrary (the model fixes it only up to
               the illumination colour: image_linear ~= reflectance * shading * light)
  shading      (H, W)    float64 LINEAR grey shading = exp(log_s)
  light        (3,)      float64 LINEAR illumination colour = exp(log_c)
The network needs sides that are multiples of 2**depth: the image is resized (bilinear, antialiased) to the
nearest such size — after first scaling its long side to `long_side` if given — and the log outputs are
resized back to (H, W). `flip_average`: the log layers are the mean of the network's outputs on the image and
on its mirror image (mirrored back), a test-time average that cancels left/right-asymmetric artefacts (twice the
time). `scale_average` (s, ...): the log layers are the mean of that pass and passes at the network size scaled
by each s (sides again multiples of 2**depth), resized back to (H, W); log c is averaged alike.
`norm_statistics`: "running" (default), the BatchNorm layers use the running averages training left; "image",
each network pass is normalised by the statistics of its own input image (pix2pix's choice at test time, and what
training did: each step's batch is one sequence's frames), the running averages untouched (`image_statistics`).
`soften_light` g in (0, 1]: decode the image again under a softer light (`softened_image`): in linear light it is
divided by (S / median S) ** g, S the pass's shading, so the network sees the same surfaces with the shading's
contrast lowered to 1 - g of what it estimated (a harsh light the training lights never made is where it errs
most); the second pass's reflectance and light are kept and its shading is multiplied back by what was taken out.
The test-time steps below then apply once, to those layers against the input image.
`residual_split` a in [0, 1] makes the layers reproduce the image: with the log residual
eps = log I - log R - log S - log c (I the input's linear RGB at full size, floored at `training.model.LOG_EPS`;
(H, W, 3)), log R += a * eps and log S += (1 - a) * mean_c(eps), so R * S * c = I up to the colour part of eps
left with weight 1 - a (exactly at a = 1). None: the decoders' layers as they are; the training energy never
makes them reproduce the image exactly, and the residual holds full-resolution detail the decoders did not place.
`residual_chroma_to_reflectance` (with a split): only the grey part mean_c(eps) is shared; its colour part
eps - mean_c(eps) all goes to the reflectance, log R += eps - (1 - a) * mean_c(eps), so R * S * c = I exactly at
any a. Under light of one colour (the shading is grey times c) a colour residual can only be reflectance; under
mixed light (sun and sky) it may be coloured shading.
`chroma_edges` t (after the split): the shading gets no step where the image's chromaticity changes by more
than t between neighbours (`chroma_edge_shading`: the log shading re-integrated from its own differences, those
across chromaticity edges set to 0, the step moved into the reflectance): paint and print whose luminance the
network took for shading go back to reflectance (grey shadows and shading keep their edges); edge pixels in
8-connected groups of fewer than `chroma_edge_min_pixels` are ignored (chromaticity noise). A sparse solve
over the image's pixels brighter than DARK_SRGB (multigrid above 50k of them: ~1.7 s at 600x800, ~4.5 s at 1 MP
on 2 cores; bench/decompose.py).
`flatten_reflectance` k in [0, 1] (last): Retinex's assumption applied to the network's reflectance. Inside regions
of one chromaticity (bounded by chromaticity steps > `flatten_threshold`, edge groups as above) the grey variation
of log R is kept at k and the rest moves to log S (`shading_in_reflectance`; one more sparse solve): shading the
network left in the reflectance (the inside of a box, an animal's flanks) goes back to the shading.
`flatten_chroma_bandwidth` b: before that, the part of the grey log R that the image's chromaticity predicts
(kernel regression over rg chromaticity, bandwidth b: `chromaticity_explained`) is set aside and kept, so a
lightness that follows a gradual change of colour (an apple's yellow flank) stays reflectance.
`display(linear)` maps a linear layer to 8-bit sRGB for viewing (its 99th percentile
-> white).

CLI: `python -m training.decompose IMAGE --checkpoint data/models/checkpoint.pt --out DIR [--linear]
[--long-side N] [--input-linear] [--flip-average] [--scale-average S [S ...]] [--residual-split A|none]
[--residual-chroma-to-reflectance|--residual-chroma-split] [--chroma-edges T|none] [--chroma-edge-min-pixels N]
[--flatten-reflectance K|none] [--flatten-threshold T] [--flatten-chroma-bandwidth B|none]
[--norm-statistics running|image] [--soften-light G|none]` writes DIR/<stem>_reflectance.png, DIR/<stem>_shading.png and
DIR/<stem>_light.json. Default output is 8-bit sRGB PNG, each layer scaled so its 99th percentile is 1
(scales are arbitrary); `--linear` writes 16-bit LINEAR PNGs (value / 65535, same scaling; read them with
cv2.imread(p, cv2.IMREAD_UNCHANGED), never PIL). The input is read as sRGB (any PIL image: 8- or 16-bit, grey
or colour; pipeline/images.py) unless `--input-linear`, which reads a 16-bit linear PNG (e.g. MIT intrinsic
images) and converts it to sRGB.
"""
from __future__ import annotations

import argparse
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage
import torch
import torch.nn.functional as F

from pipeline import images
from pipeline.atomic import atomic_write_bytes, atomic_write_json
from pipeline.color import linear_to_srgb, srgb_to_linear
from training.baselines import chromaticity_steps, forward_diffs, integrate_gradients, pair_mask
from training.loss import log_linear_image
from training.model import LOG_EPS, CheckpointError, load_checkpoint

DARK_SRGB = 0.02  # mean sRGB at or below which a pixel is too dark to trust (masks.saturation.low's default)


@dataclass
class Decomposition:
    reflectance: np.ndarray  # (H, W, 3) linear
    shading: np.ndarray  # (H, W) linear
    light: np.ndarray  # (3,) linear


def network_size(height: int, width: int, multiple: int, long_side: Optional[int] = None) -> tuple[int, int]:
    """(h, w) multiples of `multiple`, nearest to the image size (long side scaled to `long_side` first)."""
    scale = 1.0 if long_side is None else long_side / max(height, width)
    return tuple(max(multiple, int(round(s * scale / multiple)) * multiple) for s in (height, width))  # type: ignore[return-value]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


NORM_STATISTICS = ("running", "image")


@contextmanager
def image_statistics(model: torch.nn.Module, enabled: bool = True):
    """Within the block, every BatchNorm layer of `model` normalises by the statistics of the batch it is given
    (torch's behaviour with no running buffers), not by its running averages, which are put back unchanged on
    exit; `enabled=False` changes nothing."""
    saved = []
    if enabled:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                saved.append((module, module.running_mean, module.running_var))
                module.running_mean = module.running_var = None
    try:
        yield model
    finally:
        for module, mean, var in saved:
            module.running_mean, module.running_var = mean, var


def _network_layers(model: torch.nn.Module, full: torch.Tensor, size: tuple[int, int], out_hw: tuple[int, int],
                    flip_average: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The network's log layers for sRGB `full` (1, 3, H, W) resized to `size`, resized back to `out_hw`:
    log R (1, 3, *out_hw), log S (1, 1, *out_hw), log c (1, 3); with `flip_average` the log-space mean with the
    mirror image's outputs (mirrored back; log c is one value per image)."""
    x = _resize(full, size).clamp(0, 1)
    log_r, log_s, log_c = model(x)
    if flip_average:
        log_r_f, log_s_f, log_c_f = model(x.flip(-1))
        log_r, log_s, log_c = (log_r + log_r_f.flip(-1)) / 2, (log_s + log_s_f.flip(-1)) / 2, (log_c + log_c_f) / 2
    return _resize(log_r.float(), out_hw), _resize(log_s.float(), out_hw), log_c.float()


def chromaticity_edge_pixels(srgb: np.ndarray, threshold: float, min_pixels: int = 0) -> np.ndarray:
    """(H, W) bool: pixels of a 4-neighbour pair whose chromaticity differs by more than `threshold`.

    srgb (H, W, 3) in [0, 1]; chroma = linear RGB / its sum, Euclidean norm of the difference (Retinex's test,
    training/baselines.py). `min_pixels` > 0: edge pixels in an 8-connected group smaller than that are not an edge
    (the specks of chromaticity noise on dark, fine-textured surfaces; a paint boundary is one long group)."""
    steps_x, steps_y = chromaticity_steps(srgb_to_linear(np.clip(np.asarray(srgb, np.float64), 0.0, 1.0)))
    step_x, step_y = steps_x > threshold, steps_y > threshold
    on_edge = np.zeros(srgb.shape[:2], bool)  # pixels of a chromaticity-edge pair, in either direction
    on_edge[:, 1:] |= step_x
    on_edge[:, :-1] |= step_x
    on_edge[1:] |= step_y
    on_edge[:-1] |= step_y
    if min_pixels > 0:
        groups, count = ndimage.label(on_edge, structure=np.ones((3, 3)))
        sizes = np.bincount(groups.ravel(), minlength=count + 1)
        on_edge &= (sizes >= min_pixels)[groups]  # groups is 0 only where on_edge is already false
    return on_edge


def _reintegrate(srgb: np.ndarray, log_layer: np.ndarray, on_edge: np.ndarray, edge_factor: float,
                 other_factor: float, dark: float) -> np.ndarray:
    """(H, W) log layer re-integrated (least squares) from its own 4-neighbour differences, those of pairs touching
    `on_edge` times `edge_factor` and the others times `other_factor`, over the pixels brighter than `dark` (mean
    sRGB), shifted to the same mean there; darker pixels keep their values."""
    valid = np.asarray(srgb, np.float64).mean(axis=2) > dark
    if not valid.any():
        return log_layer
    gx, gy = forward_diffs(log_layer)
    cut_x, cut_y = on_edge[:, 1:] | on_edge[:, :-1], on_edge[1:] | on_edge[:-1]  # a pair touching an edge
    wx, wy = pair_mask(valid, log_layer.shape)
    integral = integrate_gradients(np.where(cut_x, edge_factor, other_factor) * gx,
                                   np.where(cut_y, edge_factor, other_factor) * gy, wx, wy)
    return np.where(valid, integral - integral[valid].mean() + log_layer[valid].mean(), log_layer)


def chroma_edge_shading(srgb: np.ndarray, log_s: np.ndarray, threshold: float,
                        dark: float = DARK_SRGB, min_pixels: int = 0) -> np.ndarray:
    """Log shading (H, W) with no step across chromaticity edges: the re-integrated `log_s`.

    srgb (H, W, 3) in [0, 1]; edges as `chromaticity_edge_pixels(srgb, threshold, min_pixels)`. The shading's log
    difference is set to 0 on every pair with a pixel of such an edge (a band about the edge two pairs wide, since
    the network's shading step is not one pixel sharp), every other pair keeps the model's, and the least-squares
    integral of those differences over the pixels brighter than `dark` (mean sRGB) replaces log_s there, shifted to
    the same mean; darker pixels keep log_s."""
    return _reintegrate(srgb, log_s, chromaticity_edge_pixels(srgb, threshold, min_pixels), 0.0, 1.0, dark)


CHROMA_BINS = 128  # bins per rg-chromaticity axis in `chromaticity_explained` (bin width 1/128)


def chromaticity_explained(srgb: np.ndarray, layer: np.ndarray, bandwidth: float,
                           dark: float = DARK_SRGB) -> np.ndarray:
    """(H, W): the part of `layer` (H, W, any units, e.g. grey log R) that the image's chromaticity predicts.

    Nadaraya-Watson kernel regression of `layer` on rg chromaticity (r, g = linear RGB / its sum, in [0, 1]) over
    the pixels brighter than `dark` (mean sRGB), Gaussian kernel of standard deviation `bandwidth` (chromaticity
    units), evaluated at every pixel's chromaticity: sum_q k(c_p - c_q) layer_q / sum_q k(c_p - c_q). Pixels are
    binned on a CHROMA_BINS^2 grid and the sums blurred there (O(pixels), not O(pixels^2)). All zeros when no pixel
    is brighter than `dark`."""
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    srgb = np.asarray(srgb, np.float64)
    linear = srgb_to_linear(np.clip(srgb, 0.0, 1.0))
    valid = srgb.mean(axis=2) > dark
    if not valid.any():
        return np.zeros(srgb.shape[:2])
    chroma = linear[..., :2] / np.maximum(linear.sum(axis=2, keepdims=True), 1e-12)
    bins = np.clip((chroma * CHROMA_BINS).astype(np.int64), 0, CHROMA_BINS - 1)
    flat = bins[..., 0] * CHROMA_BINS + bins[..., 1]  # (H, W) bin index
    counts = np.bincount(flat[valid], minlength=CHROMA_BINS ** 2).reshape(CHROMA_BINS, CHROMA_BINS)
    sums = np.bincount(flat[valid], weights=np.asarray(layer, np.float64)[valid],
                       minlength=CHROMA_BINS ** 2).reshape(CHROMA_BINS, CHROMA_BINS)
    sd_bins = bandwidth * CHROMA_BINS
    counts = ndimage.gaussian_filter(counts.astype(np.float64), sd_bins, mode="constant")
    sums = ndimage.gaussian_filter(sums, sd_bins, mode="constant")
    return (sums / np.maximum(counts, 1e-300)).ravel()[flat]


def shading_in_reflectance(srgb: np.ndarray, log_r: np.ndarray, keep: float, threshold: float,
                           dark: float = DARK_SRGB, min_pixels: int = 0,
                           chroma_bandwidth: Optional[float] = None) -> np.ndarray:
    """(H, W) log: the grey variation of `log_r` (H, W, 3) inside regions of one chromaticity, times 1 - keep.

    The channel mean of log R, re-integrated with its 4-neighbour differences on pairs touching no chromaticity edge
    (`chromaticity_edge_pixels(srgb, threshold, min_pixels)`) times `keep` in [0, 1] and the others kept (over the
    pixels brighter than `dark`, same mean), subtracted from that channel mean. Retinex's assumption applied to the
    network's reflectance: variation inside one paint is shading, so log R -= this and log S += this.
    `chroma_bandwidth` b: first the part of that channel mean the chromaticity predicts
    (`chromaticity_explained(srgb, mean, b, dark)`) is set aside and kept, so a lightness that changes with a
    gradual change of colour (an apple's yellow flank, too gradual for any step to pass the threshold) stays
    reflectance; only what is left is flattened."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    grey = np.asarray(log_r, np.float64).mean(axis=2)
    if chroma_bandwidth is not None:
        grey = grey - chromaticity_explained(srgb, grey, chroma_bandwidth, dark)
    return grey - _reintegrate(srgb, grey, chromaticity_edge_pixels(srgb, threshold, min_pixels), 1.0, keep, dark)


# `decompose`'s keywords that are also keys of params.yaml's evaluate
DECOMPOSE_OPTIONS = ("flip_average", "scale_average", "residual_split", "residual_chroma_to_reflectance",
                     "chroma_edges", "chroma_edge_min_pixels", "flatten_reflectance", "flatten_threshold",
                     "flatten_chroma_bandwidth", "norm_statistics", "soften_light")


def decompose_options(settings) -> dict:
    """{keyword: value} for `decompose` from anything with those attributes: `pipeline.params.EvaluateParams`
    (params.yaml's evaluate section) or the CLI's parsed arguments."""
    return {key: getattr(settings, key) for key in DECOMPOSE_OPTIONS}


def softened_image(srgb: torch.Tensor, log_s: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The image under a softer light: sRGB `srgb` (1, 3, H, W) in [0, 1] with its estimated log shading `log_s`
    (1, 1, H, W) -> (sRGB (1, 3, H, W), the log shading taken out (1, 1, H, W)). In linear light the image is divided
    by (S / median S) ** strength (median over pixels brighter than DARK_SRGB) and scaled down if that lifts any
    pixel above 1, so image = softened * exp(taken out) wherever the softened image is not clipped."""
    bright = srgb.mean(dim=1, keepdim=True) > DARK_SRGB
    centre = (log_s[bright] if bool(bright.any()) else log_s).median()
    taken_out = strength * (log_s - centre)
    linear = srgb_to_linear(srgb.clamp(0.0, 1.0)) * torch.exp(-taken_out)
    peak = float(linear.amax())
    if peak > 1.0:
        linear, taken_out = linear / peak, taken_out + float(np.log(peak))
    return linear_to_srgb(linear), taken_out


@torch.no_grad()
def decompose(model: torch.nn.Module, srgb: np.ndarray, long_side: Optional[int] = None,
              flip_average: bool = False, residual_split: Optional[float] = None,
              residual_chroma_to_reflectance: bool = False,
              chroma_edges: Optional[float] = None, chroma_edge_min_pixels: int = 0,
              flatten_reflectance: Optional[float] = None, flatten_threshold: float = 0.03,
              flatten_chroma_bandwidth: Optional[float] = None, scale_average: tuple[float, ...] = (),
              norm_statistics: str = "running", soften_light: Optional[float] = None) -> Decomposition:
    srgb = np.asarray(srgb, np.float32)
    if srgb.ndim != 3 or srgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) sRGB image, got {srgb.shape}")
    if norm_statistics not in NORM_STATISTICS:
        raise ValueError(f"norm_statistics must be one of {NORM_STATISTICS}, got {norm_statistics!r}")
    if not all(scale > 0 for scale in scale_average):
        raise ValueError(f"scale_average must hold scales > 0, got {list(scale_average)}")
    if residual_split is not None and not 0.0 <= residual_split <= 1.0:
        raise ValueError(f"residual_split must be in [0, 1] or None, got {residual_split}")
    if chroma_edges is not None and not chroma_edges > 0:
        raise ValueError(f"chroma_edges must be > 0 or None, got {chroma_edges}")
    if chroma_edge_min_pixels < 0:
        raise ValueError(f"chroma_edge_min_pixels must be >= 0, got {chroma_edge_min_pixels}")
    if flatten_reflectance is not None and not 0.0 <= flatten_reflectance <= 1.0:
        raise ValueError(f"flatten_reflectance must be in [0, 1] or None, got {flatten_reflectance}")
    if not flatten_threshold > 0:
        raise ValueError(f"flatten_threshold must be > 0, got {flatten_threshold}")
    if flatten_chroma_bandwidth is not None and not flatten_chroma_bandwidth > 0:
        raise ValueError(f"flatten_chroma_bandwidth must be > 0 or None, got {flatten_chroma_bandwidth}")
    if soften_light is not None and not 0.0 < soften_light <= 1.0:
        raise ValueError(f"soften_light must be in (0, 1] or None, got {soften_light}")
    h, w = srgb.shape[:2]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    full = torch.from_numpy(np.ascontiguousarray(srgb.transpose(2, 0, 1)))[None].to(device)
    base = network_size(h, w, model.config.multiple, long_side)

    def network(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with image_statistics(model, norm_statistics == "image"):
            passes = [_network_layers(model, image, network_size(*base, model.config.multiple,
                                                                 round(max(base) * scale)), (h, w), flip_average)
                      for scale in (1.0, *scale_average)]
        return tuple(torch.stack(layer).mean(dim=0) for layer in zip(*passes))

    log_r, log_s, log_c = network(full)
    if soften_light is not None:  # decode again under a softer light: the same surfaces, flatter shading
        softer, log_s_removed = softened_image(full, log_s, soften_light)
        log_r, log_s, log_c = network(softer)
        log_s = log_s + log_s_removed
    if residual_split is not None:
        residual = log_linear_image(full, LOG_EPS) - log_r - log_s - log_c[:, :, None, None]  # clamps to [0, 1]
        grey = residual.mean(dim=1, keepdim=True)
        if residual_chroma_to_reflectance:  # the colour part is reflectance; only the grey part is shared
            log_r = log_r + residual - (1.0 - residual_split) * grey
        else:
            log_r = log_r + residual_split * residual
        log_s = log_s + (1.0 - residual_split) * grey
    model.train(was_training)
    log_r = log_r[0].permute(1, 2, 0).cpu().double().numpy()
    log_s = log_s[0, 0].cpu().double().numpy()
    if chroma_edges is not None:  # what leaves the shading goes to the reflectance: R * S * c is unchanged
        refined = chroma_edge_shading(srgb, log_s, chroma_edges, min_pixels=chroma_edge_min_pixels)
        log_r, log_s = log_r + (log_s - refined)[..., None], refined
    if flatten_reflectance is not None:  # what leaves the reflectance goes to the shading: R * S * c is unchanged
        moved = shading_in_reflectance(srgb, log_r, flatten_reflectance, flatten_threshold,
                                       min_pixels=chroma_edge_min_pixels, chroma_bandwidth=flatten_chroma_bandwidth)
        log_r, log_s = log_r - moved[..., None], log_s + moved
    return Decomposition(reflectance=np.exp(log_r), shading=np.exp(log_s), light=np.exp(log_c[0].cpu().double().numpy()))


def normalise(linear: np.ndarray, mask: Optional[np.ndarray] = None, percentile: float = 99.0) -> np.ndarray:
    """Scale a linear layer so the given percentile (over mask) is 1, then clip to [0, 1]."""
    values = linear[mask] if mask is not None and mask.any() else linear
    top = float(np.percentile(values, percentile)) if values.size else 1.0
    return np.clip(linear / (top if top > 0 else 1.0), 0.0, 1.0)


def display(linear: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Linear (H, W[, 3]) -> uint8 sRGB (H, W, 3) for viewing."""
    x = normalise(np.asarray(linear, np.float64), mask)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    return np.round(255 * linear_to_srgb(x)).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) RGB or uint16 (H, W[, 3]) -> PNG bytes (16-bit through cv2, which writes BGR order)."""
    if image.dtype == np.uint16:
        import cv2

        bgr = image[..., ::-1] if image.ndim == 3 else image
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def read_linear_png(path: str | Path) -> np.ndarray:
    """16-bit (or 8-bit) linear PNG -> float64 in [0, 1], RGB order (H, W, 3) or (H, W)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    image = image.astype(np.float64) / scale
    if image.ndim == 3:
        image = image[..., 2::-1] if image.shape[2] >= 3 else image[..., 0]
    return image


def read_srgb(path: str | Path) -> np.ndarray:
    """Any image as (H, W, 3) float64 sRGB in [0, 1]; 16-bit files are scaled, not clipped (pipeline.images)."""
    return images.read_srgb(path)


def write_decomposition(result: Decomposition, out_dir: Path, stem: str, linear: bool) -> list[Path]:
    paths = [out_dir / f"{stem}_reflectance.png", out_dir / f"{stem}_shading.png"]
    for path, layer in zip(paths, (result.reflectance, result.shading)):
        if linear:
            atomic_write_bytes(path, png_bytes(np.round(65535 * normalise(layer)).astype(np.uint16)))
        else:
            atomic_write_bytes(path, png_bytes(display(layer)))
    atomic_write_json(out_dir / f"{stem}_light.json", {"light_rgb_linear": result.light.tolist(),
                                                         "encoding": "linear16" if linear else "srgb8"})
    return paths


def _evaluate_default(key: str) -> Optional[float]:
    """The params schema's default of evaluate.<key> (the CLI defaults to what the evaluate stage uses)."""
    from pipeline.params import EvaluateParams

    return getattr(EvaluateParams(), key)


def _optional_number(accepts, expected: str, allow_none: bool = True):
    """argparse type: 'none' -> None (if `allow_none`), else a float that `accepts` (NaN never does), else an error
    naming `expected`."""
    def parse(text: str) -> Optional[float]:
        if allow_none and text.lower() == "none":
            return None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not accepts(value):
            alternative = " or 'none'" if allow_none else ""
            raise argparse.ArgumentTypeError(f"expected {expected}{alternative}, got {text!r}")
        return value
    return parse


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0, checked before anything is loaded."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--linear", action="store_true", help="write 16-bit linear PNGs instead of 8-bit sRGB")
    parser.add_argument("--long-side", type=int, default=None, help="network input long side (default: native)")
    parser.add_argument("--input-linear", action="store_true", help="the input is a 16-bit linear PNG")
    parser.add_argument("--flip-average", action="store_true", help="average with the mirror image's decomposition")
    parser.add_argument("--scale-average", nargs="+", default=[],
                        type=_optional_number(lambda v: 0 < v <= 4, "a scale in (0, 4]", allow_none=False),
                        help="input scales besides 1 whose log layers are averaged with the 1x pass's "
                             "(e.g. 0.75 1.25; default: none)")
    parser.add_argument("--residual-split", type=_optional_number(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
                        default=_evaluate_default("residual_split"),
                        help="share a in [0, 1] of the log reconstruction residual given to reflectance, or 'none' "
                             "(default: evaluate.residual_split's default)")
    chroma = parser.add_mutually_exclusive_group()
    chroma.add_argument("--residual-chroma-to-reflectance", dest="residual_chroma_to_reflectance",
                        action="store_true", default=_evaluate_default("residual_chroma_to_reflectance"),
                        help="with a split, the residual's colour part all goes to reflectance (light of one colour)")
    chroma.add_argument("--residual-chroma-split", dest="residual_chroma_to_reflectance", action="store_false",
                        help="with a split, the residual's colour part is shared like its grey part")
    parser.add_argument("--chroma-edges", type=_optional_number(lambda v: v > 0, "a number > 0"),
                        default=_evaluate_default("chroma_edges"),
                        help="chromaticity step above which shading gets no edge, or 'none' "
                             "(default: evaluate.chroma_edges's default)")
    parser.add_argument("--chroma-edge-min-pixels", type=_non_negative_int,
                        default=_evaluate_default("chroma_edge_min_pixels"),
                        help="smallest 8-connected group of chromaticity-edge pixels that counts as an edge "
                             "(default: evaluate.chroma_edge_min_pixels's default)")
    parser.add_argument("--flatten-reflectance", type=_optional_number(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
                        default=_evaluate_default("flatten_reflectance"),
                        help="share k in [0, 1] of the reflectance's grey variation kept inside regions of one "
                             "chromaticity (the rest goes to shading), or 'none' (default: evaluate.flatten_reflectance's "
                             "default)")
    parser.add_argument("--flatten-threshold", type=_optional_number(lambda v: v > 0, "a number > 0", allow_none=False),
                        default=_evaluate_default("flatten_threshold"),
                        help="chromaticity step that bounds those regions (default: evaluate.flatten_threshold's "
                             "default)")
    parser.add_argument("--flatten-chroma-bandwidth", type=_optional_number(lambda v: v > 0, "a number > 0"),
                        default=_evaluate_default("flatten_chroma_bandwidth"),
                        help="kernel bandwidth (rg chromaticity) of the lightness kept as reflectance because the "
                             "colour predicts it, or 'none' (default: evaluate.flatten_chroma_bandwidth's default)")
    parser.add_argument("--norm-statistics", choices=NORM_STATISTICS, default=_evaluate_default("norm_statistics"),
                        help="BatchNorm statistics: the running averages or each input image's own "
                             "(default: evaluate.norm_statistics's default)")
    parser.add_argument("--soften-light", type=_optional_number(lambda v: 0.0 < v <= 1.0, "a number in (0, 1]"),
                        default=_evaluate_default("soften_light"),
                        help="decode again with the image divided by its first-pass shading to this power, or "
                             "'none' (default: evaluate.soften_light's default)")
    args = parser.parse_args(argv)
    try:
        model, _ = load_checkpoint(args.checkpoint)
        srgb = linear_to_srgb(read_linear_png(args.image)) if args.input_linear else read_srgb(args.image)
    except (CheckpointError, images.ImageReadError, FileNotFoundError) as err:
        parser.exit(1, f"decompose: {err}\n")
    if srgb.ndim == 2:
        srgb = np.repeat(srgb[..., None], 3, axis=2)
    result = decompose(model, srgb, args.long_side, **decompose_options(args))
    for path in write_decomposition(result, args.out, args.image.stem, args.linear):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
