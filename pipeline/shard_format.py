"""The one sample layout shared by the shards writer (pipeline/shards.py) and the loader (training/data.py).

One sample = one sequence (a fixed camera under changing light). In a WebDataset tar every entry is named
`<key>.<extension>`; WebDataset splits an entry name at the FIRST dot of its basename, so the key (the source
name, `pipeline.params.SOURCE_NAME`: no dots) is everything before it and the per-frame index goes into the
extension:

    <key>.frame0000.png ... <key>.frameNNNN.png   8-bit sRGB RGB PNG, n frames in time order, all (H, W)
    <key>.mask0000.png  ... <key>.maskNNNN.png    1-bit PNG (PIL mode "1"), 1 = valid pixel, (H, W)
    <key>.weights.npz                            shading-smoothness weights, arrays `w0`..`w{L-1}`, float32,
                                                 `w{l}` (4, H >> l, W >> l) (or (n, 4, H >> l, W >> l) with
                                                 `reduce: none`), NEIGHBOUR_OFFSETS order (pipeline/shading_weights.py)
    <key>.meta.json                              {format, key, source, scene, licence, attribution, width, height,
                                                 n_frames, frames: [{file, index, time_s, mean_log_lum,
                                                 valid_fraction}], weights: {scales, reduce, params}}
    <key>.groundtruth.npz                        synthetic only: the frames stage's ground truth (reflectance
                                                 (n,H,W,3) linear, shading (n,H,W) linear, light_rgb (n,3), sky,
                                                 dynamic, clipped (n,H,W) bool, ...), aligned with the frames

The same dict ({"__key__": key, extension: bytes, ...}) is one Parquet row's content too (pipeline/shards.py
stores the lists and blobs; `sample_from_row` rebuilds the dict), so one decoder serves both readers.

Encoding is deterministic (same input -> same bytes): PNG bytes are passed through or encoded by OpenCV,
`.npz` blobs are written with fixed zip timestamps (`npz_bytes`), JSON with sorted keys. `sha256_file` is the
file checksum the manifest records (pipeline/shards.py) and the loader verifies (training/data.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

FORMAT_VERSION = 1
FRAME_EXT = "frame{:04d}.png"
MASK_EXT = "mask{:04d}.png"
WEIGHTS_EXT = "weights.npz"
META_EXT = "meta.json"
GROUNDTRUTH_EXT = "groundtruth.npz"
MAX_FRAMES = 10000  # four digits in the entry names
_FRAME_RE = re.compile(r"^frame(\d{4})\.png$")
_MASK_RE = re.compile(r"^mask(\d{4})\.png$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class SampleFormatError(ValueError):
    """A sample does not follow the layout (missing entry, bad key, frames/masks mismatch)."""


# --------------------------------------------------------------------------------------------- blobs
def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic `.npz` (deflated zip of `.npy`, fixed timestamps, keys in sorted order); `np.load` reads it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            array = io.BytesIO()
            np.lib.format.write_array(array, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, array.getvalue(), compresslevel=1)
    return buffer.getvalue()


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 sRGB -> PNG bytes (OpenCV, default compression)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SampleFormatError(f"frames must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise SampleFormatError("PNG encoding failed")
    return buf.tobytes()


def mask_png_bytes(valid: np.ndarray) -> bytes:
    """(H, W) bool -> 1-bit PNG bytes (the masks stage's format: PIL mode "1")."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(valid, dtype=bool)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png_rgb(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, 3) uint8 sRGB RGB."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SampleFormatError("undecodable frame image")
    return image[..., ::-1]


def decode_png_mask(data: bytes) -> np.ndarray:
    """1-bit (or 8-bit) PNG bytes -> (H, W) bool, True = valid."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SampleFormatError("undecodable mask image")
    return image > 127


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- samples
@dataclass
class DecodedSequence:
    """One decoded sample. `frames` (k,H,W,3) uint8 sRGB and `masks` (k,H,W) bool hold the selected frames
    (`indices`, positions in the sequence's n frames); `weights` is the stored list (see module docstring)."""

    key: str
    indices: np.ndarray  # (k,) int, into the n frames
    frames: np.ndarray
    masks: np.ndarray
    weights: list[np.ndarray]
    meta: dict
    groundtruth: dict[str, np.ndarray] | None  # per-frame arrays already indexed at `indices`


def encode_sample(
    key: str,
    frames: Sequence[bytes] | np.ndarray,
    masks: Sequence[bytes] | np.ndarray,
    weights: Sequence[np.ndarray],
    meta: dict,
    groundtruth: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Build the sample dict {"__key__", "frame0000.png", ..., "mask0000.png", ..., "weights.npz", "meta.json"
    [, "groundtruth.npz"]} (all values bytes). `frames`/`masks` are PNG bytes (passed through unchanged) or
    arrays (n,H,W,3) uint8 / (n,H,W) bool (encoded here)."""
    if not _KEY_RE.match(key or ""):
        raise SampleFormatError(f"key {key!r} must match {_KEY_RE.pattern} (WebDataset keys cannot hold dots)")
    frames = [f if isinstance(f, (bytes, bytearray)) else png_bytes(f) for f in frames]
    masks = [m if isinstance(m, (bytes, bytearray)) else mask_png_bytes(m) for m in masks]
    if not frames or len(frames) != len(masks):
        raise SampleFormatError(f"{key}: {len(frames)} frames but {len(masks)} masks")
    if len(frames) > MAX_FRAMES:
        raise SampleFormatError(f"{key}: {len(frames)} frames > {MAX_FRAMES}")
    sample = {"__key__": key}
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        sample[FRAME_EXT.format(i)] = bytes(frame)
        sample[MASK_EXT.format(i)] = bytes(mask)
    sample[WEIGHTS_EXT] = npz_bytes({f"w{level}": np.asarray(w, np.float32) for level, w in enumerate(weights)})
    sample[META_EXT] = json.dumps({**meta, "format": FORMAT_VERSION, "key": key, "n_frames": len(frames)},
                                  sort_keys=True, separators=(",", ":")).encode("utf-8")
    if groundtruth is not None:
        sample[GROUNDTRUTH_EXT] = npz_bytes(dict(groundtruth))
    return sample


def frame_count(sample: Mapping) -> int:
    n = sum(1 for name in sample if _FRAME_RE.match(name))
    if n == 0 or any(FRAME_EXT.format(i) not in sample or MASK_EXT.format(i) not in sample for i in range(n)):
        raise SampleFormatError(f"{sample.get('__key__')}: frame/mask entries missing or not numbered 0..n-1")
    return n


def decode_weights(data: bytes) -> list[np.ndarray]:
    arrays = load_npz(data)
    return [arrays[f"w{level}"].astype(np.float32, copy=False) for level in range(len(arrays))]


def decode_sample(sample: Mapping, indices: Sequence[int] | None = None) -> DecodedSequence:
    """Sample dict (WebDataset or Parquet) -> DecodedSequence, decoding only the frames at `indices`
    (default: all, in time order). Raises SampleFormatError naming the key on a malformed sample."""
    key = sample.get("__key__")
    for entry in (WEIGHTS_EXT, META_EXT):
        if entry not in sample:
            raise SampleFormatError(f"{key}: missing entry {entry!r} (have {sorted(k for k in sample if not k.startswith('__'))})")
    n = frame_count(sample)
    indices = np.arange(n) if indices is None else np.asarray(indices, dtype=int)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise SampleFormatError(f"{key}: frame index out of range 0..{n - 1}")
    try:
        frames = np.stack([decode_png_rgb(sample[FRAME_EXT.format(i)]) for i in indices])
        masks = np.stack([decode_png_mask(sample[MASK_EXT.format(i)]) for i in indices])
    except SampleFormatError as err:
        raise SampleFormatError(f"{key}: {err}") from None
    if frames.shape[:3] != masks.shape:
        raise SampleFormatError(f"{key}: frames {frames.shape[1:3]} and masks {masks.shape[1:]} differ in size")
    weights = decode_weights(sample[WEIGHTS_EXT])
    if weights and weights[0].ndim == 4:  # reduce: none -> per-frame weights, keep the selected frames
        weights = [w[indices] for w in weights]
    meta = json.loads(sample[META_EXT])
    groundtruth = None
    if sample.get(GROUNDTRUTH_EXT):
        groundtruth = {name: (a[indices] if a.ndim >= 1 and a.shape[0] == n else a)
                       for name, a in load_npz(sample[GROUNDTRUTH_EXT]).items()}
    return DecodedSequence(key, indices, frames, masks, weights, meta, groundtruth)


# --------------------------------------------------------------------------------------------- parquet rows
PARQUET_COLUMNS = ("key", "frames", "masks", "weights", "meta", "groundtruth")


def row_from_sample(sample: Mapping) -> dict:
    """Sample dict -> one Parquet row {key: str, frames: list<binary>, masks: list<binary>, weights: binary,
    meta: str (JSON), groundtruth: binary or None}."""
    n = frame_count(sample)
    return {
        "key": sample["__key__"],
        "frames": [sample[FRAME_EXT.format(i)] for i in range(n)],
        "masks": [sample[MASK_EXT.format(i)] for i in range(n)],
        "weights": sample[WEIGHTS_EXT],
        "meta": sample[META_EXT].decode("utf-8"),
        "groundtruth": sample.get(GROUNDTRUTH_EXT),
    }


def sample_from_row(row: Mapping) -> dict:
    """Inverse of `row_from_sample`."""
    sample = {"__key__": row["key"], WEIGHTS_EXT: row["weights"], META_EXT: row["meta"].encode("utf-8")}
    for i, (frame, mask) in enumerate(zip(row["frames"], row["masks"])):
        sample[FRAME_EXT.format(i)] = frame
        sample[MASK_EXT.format(i)] = mask
    if row.get("groundtruth") is not None:
        sample[GROUNDTRUTH_EXT] = row["groundtruth"]
    return sample
