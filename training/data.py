"""Training loader: BigTime shards (`data/shards/`, written by pipeline/shards.py) -> one sequence per item.

Consumes the shards folder: `manifest.json` (shard files, sha256, keys per shard), the WebDataset tars
`<split>-%06d.tar` (read with webdataset's tar expander/grouper) or the Parquet files `parquet/<split>.parquet`
(`ParquetSequences`). Both readers hand the same sample dict (layout: pipeline/shard_format.py) to
`make_item`, so for the same (seed, epoch, key) they return identical items.

Item (CONTRACTS.md "Loader output"): dict
  key              str, the source name
  indices          (m,) int64, which of the sequence's frames were sampled (sorted, time order)
  srgb             (m, 3, H, W) float32 sRGB in [0, 1]
  mask             (m, 1, H, W) float32 {0, 1}, 1 = valid
  shading_weights  list of `scales` float32 tensors (4, H >> l, W >> l) (or (m, 4, H >> l, W >> l) when the
                   shards were written with `reduce: none`), transformed with the frames (below)
  gt_reflectance   (m, 3, H, W) float32 linear (synthetic sequences only)
  gt_shading       (m, 1, H, W) float32 linear grey (synthetic sequences only)
(H, W) is the aspect bucket closest (in log aspect) to the stored frames: 256x384, 384x256 or 256x256 as in
the paper (`LoaderConfig.buckets`); with `size="fit"` that bucket scaled by 1, 3/4, 1/2 or 1/4 so that it fits
in the smallest crop (frames downsampled, never upsampled; `fit_bucket`); the stored size with `size="native"`. m = `LoaderConfig.frames`
frames drawn without replacement (all frames when the sequence has fewer; `frames=None` keeps all).

Augmentation, one draw per sequence applied to every frame, mask, weight map and ground-truth map:
horizontal flip (p = `flip_prob`), rotation by U(-max_rotation_deg, max_rotation_deg), a random crop of the
bucket's aspect with side U(min_crop, 1) x the largest crop whose rotated rectangle stays inside the image
(so no border pixels are invented), resized to the bucket. Frames and ground truth: bilinear; masks: nearest.
Shading weights w[k, y, x] (pair (y, x)-(y + dy, x + dx), (dy, dx) = NEIGHBOUR_OFFSETS[k]):
- flip: exact permutation. (0,1): w'[y, x] = w[y, W-2-x] (flipped and shifted by one pixel, last column 0);
  (1,0): flipped; (1,1) and (1,-1) swap, each flipped (the anchor is the top pixel of the pair, which maps to
  the top pixel, so no shift).
- rotation/crop/resize: each direction map is resampled bilinearly at the pair midpoints (anchor + d/2 mapped
  through the transform, minus d/2), then the border where the neighbour falls outside is zeroed. This is an
  approximation: a rotated pair is no longer along its offset and a resized pair spans a different distance;
  for the small rotations and near-1 scales used it is close to the weights of the transformed frames. At scale
  l the same continuous transform is used on the (H >> l, W >> l) grid (pixel-area convention of the 2x2
  averaging pyramid).
With `permute_channels` (params `train.permute_channels`), one random permutation of the RGB channels per
sequence, drawn after the geometry, is applied to the frames and the ground-truth reflectance: a green object
becomes a red or blue one of the same shape and light, so the decomposer cannot learn colour-specific rules from
a handful of training objects. The shading weights are kept: their intensity (mean of RGB) is unchanged and
their chromaticity term is a distance between rg chromaticities, which a permutation changes only slightly.
With `color_gain` > 0 (params `train.color_gain`), one RGB gain per sequence, drawn after the permutation,
exp(N(0, color_gain^2)) per channel divided by its largest channel (so it only darkens and nothing new
saturates), multiplies every frame in linear light (sRGB decoded, scaled, re-encoded) and the ground-truth
reflectance: the same object under the same light, with another albedo colour and brightness. Every frame gets
the same gain, so the time-lapse's shading (and its precomputed weights, up to the chromaticity term) holds.
With `mix_lights` > 0 (params `train.mix_lights`), light superposition, drawn after the gain: with that
probability each frame becomes a x itself + (1 - a) x another frame of the item, a ~ U(0, 1), in linear light
(`LightMix`; the gain and the mix share one sRGB decode and encode). A static scene under the sum of two lights
keeps its reflectance under a new shading (exact for linear data such as the MIT lights, approximate for
tone-mapped frames). The mixed frame's mask is the AND of the two masks; per-frame shading weights ((m, 4, H, W))
and the ground truth are mixed with the same a.
With `contrast_lights` > 0 (params `train.contrast_lights`), light contrast, drawn after the mix: with that
probability each frame I_k becomes I_k x (I_k / I_j) ** g for another frame j of the item, g ~ U(0,
`contrast_gamma`), per channel in linear light (`LightContrast`). For a static scene under lights of one colour,
I = R S c, this keeps R and c and gives the shading S_k ** (1 + g) / S_j ** g: the mix makes softer lights, this
makes harsher ones (a face the light leaves darker in frame k than in frame j is darker still), which the ten
MIT lights lack against the test images' light. The frame's mask is the AND of the two masks minus the pixels
it pushes above 1; per-frame shading weights are kept (the edges stay where they were); the ground-truth shading
gets the same power law.

Distribution: the manifest's shards are ordered by a (seed, epoch) permutation shared by all processes;
slot = rank * num_workers + worker of S = world_size * num_workers. With at least S shards, slot s reads shards
s, s + S, ... (webdataset-style shard split); with fewer shards than slots, every slot reads the shards
holding its sequences and keeps the sequences at global positions j with j % S == s. Either way each sequence
is read once per epoch across all ranks and workers. Randomness (frame choice, augmentation) comes from
(seed, epoch, key) only, so it does not depend on the number of workers; call `set_epoch(e)` before each epoch
(with `persistent_workers=False`, the default of `make_loader`).

Integrity: with `verify_checksums` each shard's sha256 is checked against the manifest when a process first
opens it; a mismatch, a truncated or unreadable tar, or a sample count that differs from the manifest raises
ShardError naming the shard.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from pipeline.shard_format import (
    DecodedSequence, SampleFormatError, decode_sample, frame_count, sample_from_row, sha256_file,
)
from pipeline.color import linear_to_srgb, srgb_to_linear
from pipeline.shading_weights import NEIGHBOUR_OFFSETS

PAPER_BUCKETS = ((256, 384), (384, 256), (256, 256))  # (H, W)


class ShardError(RuntimeError):
    """A shard (tar or Parquet file) is missing, corrupt, truncated or does not match the manifest."""


@dataclass(frozen=True)
class LoaderConfig:
    frames: int | None = 8  # m frames sampled per sequence; None = all frames in time order
    augment: bool = True
    size: str = "bucket"  # "bucket" (nearest paper aspect bucket) | "fit" (that bucket scaled down to fit) | "native"
    size_multiple: int = 32  # "fit": output sides stay multiples of this (the model's 2**depth)
    buckets: tuple[tuple[int, int], ...] = PAPER_BUCKETS  # (H, W)
    flip_prob: float = 0.5
    max_rotation_deg: float = 5.0
    min_crop: float = 0.8  # crop side as a fraction of the largest crop that fits
    permute_channels: bool = False  # one random RGB permutation per sequence (frames, GT reflectance)
    color_gain: float = 0.0  # std of the per-sequence log RGB gain (frames, GT reflectance); 0 = off
    mix_lights: float = 0.0  # probability that a frame becomes a linear-light mix of itself and another frame
    contrast_lights: float = 0.0  # probability that a frame's shading is exaggerated against another frame's
    contrast_gamma: float = 1.0  # the exaggeration's largest exponent g (drawn U(0, contrast_gamma))
    seed: int = 0
    shuffle: bool = True  # shard order per epoch + a sample buffer per slot
    shuffle_buffer: int = 8
    verify_checksums: bool = True

    def __post_init__(self):
        if self.size not in ("bucket", "fit", "native"):
            raise ValueError(f"size must be 'bucket', 'fit' or 'native', got {self.size!r}")
        if self.frames is not None and self.frames < 1:
            raise ValueError("frames must be >= 1 or None")
        if not 0 < self.min_crop <= 1:
            raise ValueError("min_crop must be in (0, 1]")
        if not self.color_gain >= 0:
            raise ValueError("color_gain must be >= 0")
        if not 0 <= self.mix_lights <= 1:
            raise ValueError("mix_lights must be in [0, 1]")
        if not 0 <= self.contrast_lights <= 1:
            raise ValueError("contrast_lights must be in [0, 1]")
        if not self.contrast_gamma > 0:
            raise ValueError("contrast_gamma must be > 0")


# --------------------------------------------------------------------------------------------- geometry
def choose_bucket(height: int, width: int, buckets=PAPER_BUCKETS) -> tuple[int, int]:
    """The (H, W) bucket whose aspect is closest to width/height in log terms."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda hw: abs(math.log(hw[1] / hw[0]) - aspect))


FIT_SCALES = (1.0, 0.75, 0.5, 0.25)


def fit_bucket(height: int, width: int, config: "LoaderConfig") -> tuple[int, int]:
    """The aspect bucket of (height, width) scaled by the largest of FIT_SCALES whose sides are multiples of
    `config.size_multiple` and fit inside the smallest crop `sample_augmentation` can draw (min_crop x the
    largest crop at the maximum rotation), so frames are only ever downsampled; the smallest such scale
    when none fits. (H, W)."""
    hb, wb = choose_bucket(height, width, config.buckets)
    aspect = wb / hb
    if config.augment:
        theta = math.radians(config.max_rotation_deg)
        c, s = math.cos(theta), math.sin(theta)
        smallest = config.min_crop * min(width / (aspect * c + s), height / (aspect * s + c))
    else:
        smallest = min(height, width / aspect)
    options = [(round(hb * k), round(wb * k)) for k in FIT_SCALES]
    options = [(h, w) for h, w in options if h % config.size_multiple == 0 and w % config.size_multiple == 0]
    if not options:
        raise ValueError(f"no scale of the bucket {hb}x{wb} has sides that are multiples of {config.size_multiple}")
    return next(((h, w) for h, w in options if h <= smallest), options[-1])


@dataclass
class Augmentation:
    """One draw. `linear` (2x2) and `offset` (2,) map OUTPUT continuous coordinates (x, y) (pixel centres at
    i + 0.5) to INPUT continuous coordinates of the (already flipped) input at scale 0."""

    flip: bool
    angle_deg: float
    linear: np.ndarray
    offset: np.ndarray
    out_hw: tuple[int, int]
    crop_hw: tuple[float, float] = (0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return np.allclose(self.linear, np.eye(2)) and np.allclose(self.offset, 0)


def sample_augmentation(rng: np.random.Generator, in_hw: tuple[int, int], out_hw: tuple[int, int],
                        config: LoaderConfig) -> Augmentation:
    """Draw flip / rotation / crop for an input of size in_hw resized to out_hw (see module docstring)."""
    h, w = in_hw
    ho, wo = out_hw
    if not config.augment:
        scale = np.diag([w / wo, h / ho])
        return Augmentation(False, 0.0, scale, np.zeros(2), out_hw, (float(h), float(w)))
    flip = bool(rng.random() < config.flip_prob)
    angle = float(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    theta = math.radians(angle)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    aspect = wo / ho
    h_max = min(w / (aspect * c + s), h / (aspect * s + c))  # rotated crop's bounding box fits the image
    hc = h_max * float(rng.uniform(config.min_crop, 1.0))
    wc = aspect * hc
    bw, bh = wc * c + hc * s, wc * s + hc * c
    cx = float(rng.uniform(bw / 2, max(bw / 2, w - bw / 2)))
    cy = float(rng.uniform(bh / 2, max(bh / 2, h - bh / 2)))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    linear = rot @ np.diag([wc / wo, hc / ho])
    offset = np.array([cx, cy]) - linear @ np.array([wo / 2, ho / 2])
    return Augmentation(flip, angle, linear, offset, out_hw, (hc, wc))


def _pixel_matrix(aug: Augmentation, level: int, d_yx: tuple[int, int] = (0, 0)) -> np.ndarray:
    """cv2 2x3 matrix: output pixel index (x, y) at scale `level` -> input pixel index, for maps whose value at
    (x, y) belongs to the pair midpoint (x, y) + d/2 (d = (0, 0): the pixel itself)."""
    d = np.array([d_yx[1], d_yx[0]], dtype=float) / 2
    offset = aug.offset / 2**level + aug.linear @ (np.array([0.5, 0.5]) + d) - np.array([0.5, 0.5]) - d
    return np.hstack([aug.linear, offset[:, None]])


def _warp(image: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int], *, nearest=False, zero_border=False):
    return cv2.warpAffine(image, matrix, (out_hw[1], out_hw[0]),
                          flags=(cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REFLECT_101, borderValue=0)


def flip_weights(w: np.ndarray) -> np.ndarray:
    """Exact horizontal flip of pair weights (..., 4, H, W) in NEIGHBOUR_OFFSETS order (module docstring)."""
    f = w[..., ::-1]
    out = np.zeros_like(w)
    out[..., 0, :, :-1] = f[..., 0, :, 1:]
    out[..., 1, :, :] = f[..., 1, :, :]
    out[..., 2, :, :] = f[..., 3, :, :]
    out[..., 3, :, :] = f[..., 2, :, :]
    return out


def zero_outside_pairs(w: np.ndarray) -> np.ndarray:
    """Set w[..., k, y, x] = 0 where the neighbour (y + dy, x + dx) is outside the grid (in place)."""
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        if dy:
            w[..., k, -dy:, :] = 0
        if dx > 0:
            w[..., k, :, -dx:] = 0
        elif dx < 0:
            w[..., k, :, :-dx] = 0
    return w


def transform_weights(weights: list[np.ndarray], aug: Augmentation) -> list[np.ndarray]:
    """Apply an augmentation to stored weights (list over scales of (4, h_l, w_l) or (m, 4, h_l, w_l))."""
    out = []
    for level, w in enumerate(weights):
        if aug.flip:
            w = flip_weights(w)
        if aug.is_identity and w.shape[-2:] == (aug.out_hw[0] >> level, aug.out_hw[1] >> level):
            out.append(np.ascontiguousarray(w, dtype=np.float32))
            continue
        hw = (aug.out_hw[0] >> level, aug.out_hw[1] >> level)
        lead = w.shape[:-3]
        flat = w.reshape(-1, 4, *w.shape[-2:])
        res = np.empty((flat.shape[0], 4, *hw), np.float32)
        for k, d in enumerate(NEIGHBOUR_OFFSETS):
            matrix = _pixel_matrix(aug, level, d)
            for i in range(flat.shape[0]):
                res[i, k] = _warp(np.ascontiguousarray(flat[i, k], dtype=np.float32), matrix, hw, zero_border=True)
        out.append(zero_outside_pairs(res.reshape(*lead, 4, *hw)))
    return out


def transform_images(images: np.ndarray, aug: Augmentation, *, nearest=False) -> np.ndarray:
    """(k, H, W[, C]) -> (k, Ho, Wo[, C]): flip then warp each image (bilinear, or nearest for masks)."""
    if aug.flip:
        images = images[:, :, ::-1]
    if aug.is_identity and images.shape[1:3] == tuple(aug.out_hw):
        return np.ascontiguousarray(images)
    matrix = _pixel_matrix(aug, 0)
    return np.stack([_warp(np.ascontiguousarray(im), matrix, aug.out_hw, nearest=nearest) for im in images])


# --------------------------------------------------------------------------------------------- items
def item_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The per-item generator: depends on (seed, epoch, key) only."""
    key_hash = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, epoch, key_hash])


def choose_frames(rng: np.random.Generator, n: int, m: int | None) -> np.ndarray:
    if m is None or m >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=m, replace=False))


def sample_color_gain(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """(3,) float32 linear RGB gain exp(N(0, sigma^2)) per channel, divided by its largest channel (max 1)."""
    gain = np.exp(rng.normal(0.0, sigma, 3))
    return (gain / gain.max()).astype(np.float32)


@dataclass(frozen=True)
class LightMix:
    """Frame k of the mixed batch = weight[k] x frame k + (1 - weight[k]) x frame partner[k] (linear light);
    weight 1 (partner k) leaves frame k as it was."""
    partner: np.ndarray  # (m,) int
    weight: np.ndarray  # (m,) float32 in [0, 1]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(m, ...) -> (m, ...): the convex combinations along axis 0 (from the unmixed stack)."""
        a = self.weight.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
        return a * x + (1 - a) * x[self.partner]


def sample_partners(rng: np.random.Generator, m: int, probability: float) -> np.ndarray:
    """(m,) int: each of m frames, with `probability`, is paired with another of the m frames (uniform); the
    others with themselves."""
    chosen = rng.random(m) < probability
    offset = rng.integers(1, max(m, 2), size=m)  # another frame: k + offset mod m, offset in 1..m-1
    return np.where(chosen & (m > 1), (np.arange(m) + offset) % max(m, 1), np.arange(m))


def sample_light_mix(rng: np.random.Generator, m: int, probability: float) -> LightMix:
    """Each of m frames, with `probability`, is paired with another of the m frames (uniform) at a weight
    U(0, 1); the others keep weight 1."""
    partner = sample_partners(rng, m, probability)
    weight = np.where(partner != np.arange(m), rng.random(m), 1.0).astype(np.float32)
    return LightMix(partner, weight)


CONTRAST_FLOOR = 1e-4  # linear value below which LightContrast's ratios are taken at the floor (8-bit sRGB 0)


@dataclass(frozen=True)
class LightContrast:
    """Frame k of the new batch = frame k x (frame k / frame partner[k]) ** gamma[k], per channel in linear light
    (values floored at CONTRAST_FLOOR in the ratio); gamma 0 (partner k) leaves frame k as it was."""
    partner: np.ndarray  # (m,) int
    gamma: np.ndarray  # (m,) float32 >= 0

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(m, ...) positive linear values -> (m, ...) (from the unchanged stack)."""
        g = self.gamma.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
        floored = np.maximum(x, x.dtype.type(CONTRAST_FLOOR))
        return x * (floored / floored[self.partner]) ** g


def sample_light_contrast(rng: np.random.Generator, m: int, probability: float, max_gamma: float) -> LightContrast:
    """Each of m frames, with `probability`, is paired with another of the m frames (uniform) at an exponent
    U(0, max_gamma); the others keep exponent 0."""
    partner = sample_partners(rng, m, probability)
    gamma = np.where(partner != np.arange(m), rng.uniform(0.0, max_gamma, m), 0.0).astype(np.float32)
    return LightContrast(partner, gamma)


def make_item(sample: Mapping, config: LoaderConfig, epoch: int = 0) -> dict:
    """One sample dict (shard_format layout) -> the loader item (module docstring)."""
    key = sample["__key__"]
    rng = item_rng(config.seed, epoch, key)
    indices = choose_frames(rng, frame_count(sample), config.frames)
    seq: DecodedSequence = decode_sample(sample, indices)
    h, w = seq.frames.shape[1:3]
    if config.size == "bucket":
        out_hw = choose_bucket(h, w, config.buckets)
    elif config.size == "fit":
        out_hw = fit_bucket(h, w, config)
    else:
        out_hw = (h, w)
    aug = sample_augmentation(rng, (h, w), out_hw, config)
    frames = transform_images(seq.frames.astype(np.float32) / np.float32(255), aug)
    masks = transform_images(seq.masks.astype(np.uint8), aug, nearest=True)
    channels = rng.permutation(3) if (config.augment and config.permute_channels) else None
    if channels is not None:  # (fancy indexing copies: only when permuting)
        frames = frames[..., channels]
    gain = sample_color_gain(rng, config.color_gain) if (config.augment and config.color_gain > 0) else None
    mix = sample_light_mix(rng, len(frames), config.mix_lights) if (config.augment and config.mix_lights > 0) else None
    contrast = (sample_light_contrast(rng, len(frames), config.contrast_lights, config.contrast_gamma)
                if (config.augment and config.contrast_lights > 0) else None)
    weights = transform_weights(seq.weights, aug)
    if gain is not None or mix is not None or contrast is not None:  # in linear light: one sRGB decode and encode
        linear = srgb_to_linear(frames)
        if gain is not None:  # another albedo colour under the same light
            linear = linear * gain
        if mix is not None:  # light superposition: the same surfaces under the sum of two lights
            linear = mix.apply(linear)
            masks = np.minimum(masks, masks[mix.partner])  # valid in both frames
            weights = [mix.apply(w) if w.ndim == 4 else w for w in weights]
        if contrast is not None:  # harsher lights: the same surfaces, the shading raised to a power
            linear = contrast.apply(linear)
            masks = np.minimum(masks, masks[contrast.partner])  # valid in both frames
            masks = np.where((linear > 1).any(axis=-1), 0, masks).astype(masks.dtype)  # and not clipped
        frames = linear_to_srgb(linear).astype(np.float32)
    item = {
        "key": key,
        "indices": torch.from_numpy(indices.astype(np.int64)),
        "srgb": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).clamp_(0, 1),
        "mask": torch.from_numpy(masks.astype(np.float32)[:, None]),
        "shading_weights": [torch.from_numpy(x) for x in weights],  # contiguous float32 (transform_weights, LightMix)
    }
    gt = seq.groundtruth
    if gt is not None and "reflectance" in gt and "shading" in gt:
        refl = transform_images(gt["reflectance"].astype(np.float32), aug)
        refl = refl if channels is None else refl[..., channels]
        refl = refl if gain is None else refl * gain
        shad = transform_images(gt["shading"].astype(np.float32), aug)
        if mix is not None:  # (exact for the shading; the reflectance mix is exact where it is the same in both)
            refl, shad = mix.apply(refl), mix.apply(shad)
        if contrast is not None:  # the reflectance is what it was
            shad = contrast.apply(shad)
        item["gt_reflectance"] = torch.from_numpy(np.ascontiguousarray(refl.transpose(0, 3, 1, 2)))
        item["gt_shading"] = torch.from_numpy(np.ascontiguousarray(shad[:, None]))
    return item


# --------------------------------------------------------------------------------------------- shards
def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest (run the shards stage)") from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON ({err})") from None


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise ShardError naming `path` when it is missing or its sha256 differs from the manifest."""
    if not path.exists():
        raise ShardError(f"shard {path}: missing")
    got = sha256_file(path)
    if got != expected_sha256:
        raise ShardError(f"shard {path}: sha256 {got[:16]}... does not match the manifest's {expected_sha256[:16]}... "
                         "(corrupt, truncated or rewritten; rerun the shards stage)")


def manifest_files(manifest: dict) -> list[dict]:
    """Every file entry ({file, sha256, ...}) the manifest lists: tar shards, Parquet files, metadata."""
    entries = []
    for split in manifest.get("splits", {}).values():
        entries += list(split.get("shards", []))
        if "parquet" in split:
            entries.append(split["parquet"])
    if "metadata" in manifest:
        entries.append(manifest["metadata"])
    return entries


def verify_shards(root: str | Path) -> dict:
    """Check every file of a shards folder against its manifest sha256 (tars too, though training reads Parquet,
    so a published dataset artifact is never silently corrupt); ShardError names the file. Returns the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    try:
        entries = manifest_files(manifest)
        for entry in entries:
            verify_file(root / entry["file"], entry["sha256"])
    except (KeyError, TypeError, AttributeError) as err:
        raise ShardError(f"{root / 'manifest.json'}: not a shards manifest (missing {err})") from None
    return manifest


def iter_shard(path: Path, expected_keys: list[str] | None = None) -> Iterator[dict]:
    """Samples of one WebDataset tar (webdataset's tar expander + key grouping); ShardError names the shard when
    the tar is unreadable/truncated or its keys differ from `expected_keys`."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    seen = []
    try:
        with open(path, "rb") as stream:
            for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}])):
                if expected_keys is not None and sample["__key__"] not in expected_keys:
                    raise ShardError(f"shard {path}: unexpected sequence {sample['__key__']!r} (not in the manifest)")
                seen.append(sample["__key__"])
                yield sample
    except ShardError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise ShardError(f"shard {path}: unreadable tar after {len(seen)} sequences ({type(err).__name__}: "
                         f"{err.args[0] if err.args else err}); truncated or corrupt") from err
    if expected_keys is not None and seen != list(expected_keys):
        raise ShardError(f"shard {path}: read {len(seen)} sequences {seen}, the manifest lists {len(expected_keys)} "
                         "(truncated?)")


def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    from webdataset.utils import pytorch_worker_info  # RANK/WORLD_SIZE env or torch.distributed

    r, w, _, _ = pytorch_worker_info()
    return (r if rank is None else rank), (w if world_size is None else world_size)


def plan_slot(shards: list[dict], slot: int, slots: int, order: np.ndarray) -> list[tuple[dict, set | None]]:
    """Which shards slot `slot` of `slots` reads, in `order`, and which of their keys it keeps (None = all)."""
    ordered = [shards[i] for i in order]
    if len(ordered) >= slots:
        return [(s, None) for s in ordered[slot::slots]]
    plan, position = [], 0
    for shard in ordered:
        keep = {k for j, k in enumerate(shard["keys"], start=position) if j % slots == slot}
        position += len(shard["keys"])
        if keep:
            plan.append((shard, keep))
    return plan


class ShardedSequences(IterableDataset):
    """Iterable over one split's WebDataset shards (module docstring: distribution, seeding, integrity)."""

    def __init__(self, root: str | Path, split: str = "train", config: LoaderConfig = LoaderConfig(), *,
                 rank: int | None = None, world_size: int | None = None, repeat: bool = False):
        self.root, self.split, self.config, self.repeat = Path(root), split, config, repeat
        self.manifest = read_manifest(self.root)
        if split not in self.manifest["splits"]:
            raise ShardError(f"{self.root}/manifest.json: no split {split!r}")
        self.shards = self.manifest["splits"][split]["shards"]
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._verified: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def keys(self) -> list[str]:
        return [k for s in self.shards for k in s["keys"]]

    def slot_plan(self, epoch: int, rank: int, world_size: int, worker: int, num_workers: int):
        n = len(self.shards)
        order = (np.random.default_rng([self.config.seed, epoch, 7]).permutation(n) if self.config.shuffle
                 else np.arange(n))
        return plan_slot(self.shards, rank * num_workers + worker, world_size * num_workers, order)

    def _samples(self, epoch: int) -> Iterator[dict]:
        rank, world = _dist_info(self.rank, self.world_size)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # no cv2.setNumThreads here: in a forked worker it deadlocks once the parent has used OpenCV's pool
        for shard, keep in self.slot_plan(epoch, rank, world, worker, num_workers):
            path = self.root / shard["file"]
            if self.config.verify_checksums and shard["file"] not in self._verified:
                verify_file(path, shard["sha256"])
                self._verified.add(shard["file"])
            for sample in iter_shard(path, shard["keys"]):
                if keep is None or sample["__key__"] in keep:
                    yield sample

    def _shuffled(self, samples: Iterator[dict], epoch: int) -> Iterator[dict]:
        if not self.config.shuffle or self.config.shuffle_buffer <= 1:
            yield from samples
            return
        info = get_worker_info()
        rng = np.random.default_rng([self.config.seed, epoch, 11, info.id if info else 0])
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.config.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(rng.integers(len(buffer))))

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        while True:
            for sample in self._shuffled(self._samples(epoch), epoch):
                try:
                    yield make_item(sample, self.config, epoch)
                except SampleFormatError as err:
                    raise ShardError(f"split {self.split}: {err}") from err
            if not self.repeat:
                return
            epoch += 1


class ParquetSequences(Dataset):
    """Map-style twin of ShardedSequences over `parquet/<split>.parquet` (one row group per sequence): item i
    is the i-th sequence in manifest order, equal to the tar reader's item for the same (seed, epoch, key)."""

    def __init__(self, root: str | Path, split: str = "train", config: LoaderConfig = LoaderConfig()):
        self.root, self.split, self.config = Path(root), split, config
        self.manifest = read_manifest(self.root)
        entry = self.manifest["splits"][split]["parquet"]
        self.path = self.root / entry["file"]
        if config.verify_checksums:
            verify_file(self.path, entry["sha256"])
        self.keys = [k for s in self.manifest["splits"][split]["shards"] for k in s["keys"]]
        self.epoch = 0
        self._file = None
        self._pid = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.keys)

    def _parquet(self):
        import pyarrow.parquet as pq

        if self._file is None or self._pid != os.getpid():  # one handle per process (DataLoader workers)
            try:
                self._file = pq.ParquetFile(self.path)
            except Exception as err:  # noqa: BLE001
                raise ShardError(f"shard {self.path}: unreadable Parquet ({err})") from err
            self._pid = os.getpid()
        return self._file

    def sample(self, index: int) -> dict:
        try:
            rows = self._parquet().read_row_group(index).to_pylist()
        except ShardError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ShardError(f"shard {self.path}: cannot read row group {index} ({err})") from err
        if len(rows) != 1 or rows[0]["key"] != self.keys[index]:
            raise ShardError(f"shard {self.path}: row group {index} does not hold {self.keys[index]!r}")
        return sample_from_row(rows[0])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return make_item(self.sample(index), self.config, self.epoch)


def make_loader(root: str | Path, split: str = "train", config: LoaderConfig = LoaderConfig(), *,
                num_workers: int = 1, rank: int | None = None, world_size: int | None = None,
                repeat: bool = False, prefetch_factor: int = 2) -> DataLoader:
    """DataLoader over ShardedSequences yielding one sequence per step (batch_size=None: buckets differ)."""
    dataset = ShardedSequences(root, split, config, rank=rank, world_size=world_size, repeat=repeat)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None, persistent_workers=False)
