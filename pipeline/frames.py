"""Frames stage: `data/raw/<name>/` -> `data/frames/<name>/` (a fixed-camera sequence under changing light).

Consumes the download output (`video.<ext>` + `info.json`, or `images/*`; `groundtruth.npz` for synthetic
sources; `status.json`; the media are checked against the sha256 `checksums` of info.json) and the `frames` params
section. Produces, in a folder built atomically:

- `NNNN.png`: `frames.per_sequence` 8-bit sRGB RGB frames in time order, long side `frames.long_side`
  (aspect kept, both sides even).
- `meta.json`: {source, scene, licence, attribution, width, height, camera_shift (fraction of the diagonal),
  frames: [{file, index (frame number in the video / position in the image list), time_s (seconds; for
  image folders the position, there is no clock), mean_log_lum (mean natural log of linear Rec.709
  luminance + 1e-3, over the frame area-downsampled to ~MOTION_SIDE px)}]}, n_candidates.
- `NNNN_mask.png` (BigTime release sequences, for frames that have a release mask): the release's mask resized
  (nearest) to the frame, 8-bit, 255 = valid; the frame's meta row names it in `release_mask` (null if none).
- `groundtruth.npz` (synthetic only): every per-frame array of the raw ground truth, indexed at the selected
  frames and resized to the output size (area for float maps, nearest for bool masks); `index` (n,) int.

Steps (each a pure function): plan which frames to decode inside [start, end] (at most
`frames.max_candidates`, evenly spaced, or at `frames.sample_fps`); decode + resize with ffmpeg; estimate the
global camera shift by phase correlation of log-luminance gradient magnitudes against the best-matching
frame (illumination-invariant, the static background dominates moving people); reject when the largest
shift exceeds `frames.max_camera_shift` x diagonal (shifts are measured at ~MOTION_SIDE pixels, so at
very small frame sizes moving shadows bias them by up to ~1 px); select, among the usable candidates (at least
`frames.min_usable_fraction` of the pixels neither dark nor saturated: `frames.usable_low` / `usable_high`), frames at
evenly spread quantiles of mean log-luminance (near-duplicates closer than `frames.min_log_lum_step` dropped,
time-uniform when the light barely changes). Rejections with a reason: frames too elongated or too small for
the loader's buckets (`unusable_size`, before decoding: see `geometry_problem`), fewer usable candidates than
`frames.per_sequence` (`too_few_frames`). A BigTime release sequence imported with a frame list keeps all its
listed frames (the release's choice) and its release masks.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import ffmpeg
import numpy as np

from pipeline.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, read_status, status_record
from pipeline.cli import cpu_budget, run_all_sources, stage_main
from pipeline.color import REC709_WEIGHTS, srgb_to_linear
from pipeline.mask_backends import saturated_or_dark
from pipeline.images import ImageReadError, read_srgb8
from pipeline.shard_format import npz_bytes, sha256_file
from pipeline.params import FramesParams, Params, Source

STAGE = "frames"
LOG_EPS = 1e-3  # linear luminance floor for mean_log_lum
MOTION_SIDE = 160  # long side (pixels) of the images used for camera-motion estimation
MOTION_EPS = 0.01  # linear luminance floor of the log image used for motion (keeps dark noise quiet)
MIN_RESPONSE = 0.15  # phase-correlation peak below which a frame counts as unregistered
REFERENCE_PROBES = 64  # candidates (evenly spread) forming the median and tried as the reference frame
MOTION_CHECKS = 128  # candidates (evenly spread) whose shift is measured, plus every selected frame
# Lossless PNG, fast: zlib level 1 with Huffman-only coding is ~2x faster than the default for ~2% more bytes.
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
MIN_REGISTERED = 0.5  # fraction of candidates that must register, else the sequence is rejected
# camera_shift is recorded to 1e-6 of the diagonal: OpenCV's threaded DFT moves it by ~1e-11 between runs, and
# outputs must be byte-identical between runs
SHIFT_DIGITS = 6
MIN_DECODED = 0.9  # fraction of the planned frames ffmpeg must deliver, else the video is corrupt/truncated


class FramesError(Exception):
    def __init__(self, category: str, reason: str):
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


# ------------------------------------------------------------------------------------------ geometry
def output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side = long_side (rounded to even), aspect kept, both even and >= 2."""
    scale = long_side / max(width, height)
    even = lambda x: max(2, int(round(x / 2)) * 2)  # noqa: E731
    return even(width * scale), even(height * scale)


def geometry_problem(width: int, height: int, params: FramesParams) -> str | None:
    """Why frames of width x height cannot feed the loader's aspect buckets, or None when they can.

    Refused: long/short side ratio above `frames.max_aspect` (the buckets are 3:2, 2:3 and 1:1; a 2469x205
    panorama would become a 192x16 strip), or a short side below `frames.min_short_side` pixels once the long
    side is `frames.long_side`. Such sequences are rejected, not cropped into tiles.
    """
    aspect = max(width, height) / max(1, min(width, height))
    w, h = output_size(width, height, params.long_side)
    if aspect > params.max_aspect:
        return (f"frames are {width}x{height} (aspect {aspect:.1f}:1 > frames.max_aspect={params.max_aspect:g}; "
                f"they would become {w}x{h})")
    if min(w, h) < params.min_short_side:
        return f"frames would be {w}x{h}: short side < frames.min_short_side={params.min_short_side}"
    return None


def usable_fraction(frame: np.ndarray, *, low: float, high: float) -> float:
    """Fraction of a (h, w, 3) uint8 sRGB frame's pixels that are neither dark nor saturated.

    The masks stage's saturation rule without its dilation (`pipeline.mask_backends.saturated_or_dark`), on
    every k-th pixel so that ~MOTION_SIDE remain along the long side.
    """
    k = max(1, round(max(frame.shape[:2]) / MOTION_SIDE))
    bad = saturated_or_dark(np.ascontiguousarray(frame[None, ::k, ::k]), high=high, low=low)
    return float(1.0 - bad.mean())


@dataclass(frozen=True)
class Plan:
    """Which video frames to decode: indices first, first + step, ... (count of them)."""

    first: int
    step: int
    count: int

    @property
    def indices(self) -> np.ndarray:
        return self.first + self.step * np.arange(self.count)


def plan_candidates(n_frames: int, fps: float, start: float | None, end: float | None, *,
                    sample_fps: float | None, max_candidates: int) -> Plan:
    """Frames with time i/fps in [start, end), every `step`-th so that at most max_candidates remain."""
    first = max(0, math.ceil((start or 0.0) * fps - 1e-6))
    stop = n_frames if end is None else min(n_frames, math.ceil(end * fps - 1e-6))
    available = max(0, stop - first)
    step = max(1, round(fps / sample_fps) if sample_fps else 1)
    step = max(step, math.ceil(available / max_candidates)) if available else step
    return Plan(first, step, math.ceil(available / step) if available else 0)


# ------------------------------------------------------------------------------------------ decoding
def video_command(path: Path, plan: Plan, fps: float, size: tuple[int, int]) -> list[str]:
    """The ffmpeg command that writes the planned frames, resized (area) to size=(w, h), as raw rgb24; its
    decoder and filter threads stay within `cpu_budget()` (a Ray task's CPUs), so parallel tasks do not oversubscribe."""
    w, h = size
    # Accurate input seeking keeps frames with pts >= ss; seeking half a frame before `first` makes the
    # first frame out exactly `first` whatever the rounding of ss.
    stream = ffmpeg.input(str(path), ss=(plan.first - 0.5) / fps) if plan.first else ffmpeg.input(str(path))
    video = stream.video
    if plan.step > 1:
        video = video.filter("framestep", step=plan.step)
    video = video.filter("scale", w, h, flags="area")
    out = video.output("pipe:", format="rawvideo", pix_fmt="rgb24", vsync="passthrough", vframes=plan.count)
    threads = cpu_budget()
    command = out.global_args("-nostdin", "-loglevel", "error").compile()
    if threads is not None:  # before -i: decoder threads; then the scale filter graph's
        command[1:1] = ["-threads", str(threads), "-filter_complex_threads", str(threads)]
    return command


def iter_video(path: Path, plan: Plan, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yield the planned frames as (h, w, 3) uint8 sRGB while ffmpeg decodes (decode overlaps analysis)."""
    w, h = size
    frame_bytes = w * h * 3
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty ffmpeg can never block on it
        process = subprocess.Popen(video_command(path, plan, fps, size), stdout=subprocess.PIPE, stderr=errors)
        try:
            while len(buf := process.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
        finally:
            process.stdout.close()
            code = process.wait()
        if code != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip().splitlines()
            raise FramesError("corrupt", f"ffmpeg could not decode {path.name}: {detail[-1] if detail else f'exit {code}'}")


def decode_video(path: Path, plan: Plan, fps: float, size: tuple[int, int]) -> np.ndarray:
    """Decode the planned frames resized to size=(w, h): (n, h, w, 3) uint8 sRGB (n <= plan.count)."""
    frames = list(iter_video(path, plan, fps, size))
    return np.stack(frames) if frames else np.zeros((0, size[1], size[0], 3), np.uint8)


def iter_images(paths: list[Path], size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yield images as RGB resized (area) to size=(w, h): (h, w, 3) uint8 sRGB (16-bit files scaled, not clipped)."""
    for path in paths:
        try:
            rgb = read_srgb8(path)
        except ImageReadError as err:
            raise FramesError("corrupt", str(err)) from None
        yield cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if rgb.shape[1::-1] != size else rgb


def load_images(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Read images as RGB and resize (area) to size=(w, h): (n, h, w, 3) uint8 sRGB."""
    return np.stack(list(iter_images(paths, size)))


# ------------------------------------------------------------------------------------------ analysis
_LINEAR_LUT = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)  # uint8 sRGB -> linear
_REC709 = np.array([REC709_WEIGHTS], np.float32)  # (1, 3): cv2.transform weights for luminance


def frame_features(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """(h, w, 3) uint8 sRGB -> (motion map (h', w') float32, mean log-luminance), both at ~MOTION_SIDE long side.

    The motion map is the gradient magnitude of log(linear luminance + MOTION_EPS): gradients of
    log-luminance do not change when the light is scaled, so a brightening scene does not look like motion,
    and phase correlation of these maps is dominated by static edges. The mean log-luminance is
    mean(log(linear Rec.709 luminance + LOG_EPS)) of the same small image (area-downsampled sRGB).
    """
    h, w = frame.shape[:2]
    factor = max(1, round(max(h, w) / MOTION_SIDE))  # integer factor: cv2's fast area path
    small = cv2.resize(frame, (max(8, w // factor), max(8, h // factor)), interpolation=cv2.INTER_AREA) if factor > 1 else frame
    lum = cv2.transform(cv2.LUT(small, _LINEAR_LUT.reshape(1, 256)), _REC709)  # (h', w') linear luminance
    # numpy, not cv2.log / cv2.magnitude: OpenCV splits an image into stripes by its thread count and rounds
    # the SIMD body and the scalar tail of each stripe differently, so the maps (and the camera shift in
    # meta.json) changed in the last bit with the CPUs a Ray task got (tests/pipeline/test_frames.py).
    mean_log_lum = float(np.log(lum + np.float32(LOG_EPS), dtype=np.float32).mean())
    log_lum = np.log(lum + np.float32(MOTION_EPS), dtype=np.float32)
    gx = cv2.Sobel(log_lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(log_lum, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy), mean_log_lum


def mean_log_luminance(frames: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) uint8 sRGB -> (n,) mean log-luminance (see frame_features)."""
    return np.array([frame_features(f)[1] for f in frames])


def motion_image(frame: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 sRGB -> log-luminance gradient magnitude at MOTION_SIDE long side (see frame_features)."""
    return frame_features(frame)[0]


def estimate_camera_shift(frames: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Camera shift of (n, h, w, 3) uint8 sRGB frames, every frame measured; see `camera_shift_from_maps`."""
    return camera_shift_from_maps(np.stack([motion_image(f) for f in frames]))


def evenly_spread(n: int, k: int) -> np.ndarray:
    """At most k indices in [0, n) spread evenly, first and last included."""
    return np.unique(np.round(np.linspace(0, n - 1, min(n, k))).astype(int)) if n else np.zeros(0, int)


def camera_shift_from_maps(maps: np.ndarray, check: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Global shift of frames from their motion maps (n, h', w') float32.

    Returns (max shift as a fraction of the diagonal, shifts (n, 2) (dx, dy) as fractions of the diagonal,
    phase-correlation responses (n,)); only the frames in `check` (default: all) are measured, the others
    are NaN. Shifts are relative to a reference: the frame (of REFERENCE_PROBES evenly spread) that best
    matches the temporal median of those probes (robust to transient people/cars; for a pan it is the
    middle of the pan). The max is the largest shift norm over checked frames that registered (response
    >= MIN_RESPONSE); unregistered frames (night, fog) are ignored. It is infinite when fewer than
    MIN_REGISTERED of the checked frames register.
    """
    n = len(maps)
    check = np.arange(n) if check is None else np.unique(np.asarray(check, int))
    probes = evenly_spread(n, REFERENCE_PROBES)
    # The Hann window is applied here, not through phaseCorrelate's `window` argument: OpenCV 5.0's
    # phaseCorrelate multiplies its inputs by the window in place, corrupting arrays reused across calls.
    window = cv2.createHanningWindow((maps.shape[2], maps.shape[1]), cv2.CV_32F)
    median = np.median(maps[probes], axis=0).astype(np.float32) * window
    to_median = [cv2.phaseCorrelate(median.copy(), maps[i] * window)[1] for i in probes]
    reference = maps[probes[int(np.argmax(to_median))]] * window
    shifts = np.full((n, 2), np.nan)
    responses = np.full(n, np.nan)
    for i in check:
        (dx, dy), responses[i] = cv2.phaseCorrelate(reference.copy(), maps[i] * window)
        shifts[i] = dx, dy
    shifts /= math.hypot(*maps.shape[1:])
    registered = check[responses[check] >= MIN_RESPONSE]
    if len(registered) < max(2, MIN_REGISTERED * len(check)):
        return float("inf"), shifts, responses
    return float(np.hypot(*shifts[registered].T).max()), shifts, responses


def select_frames(mean_log_lum: np.ndarray, n: int, min_step: float) -> np.ndarray:
    """Pick n candidate indices spanning the illumination change; returned in time (index) order.

    Evenly spread rank quantiles of mean log-luminance (always including the darkest and brightest),
    near-duplicates (< min_step apart in mean log-luminance) dropped, then topped up with the candidate
    farthest in log-luminance from those kept (while >= min_step), then farthest in time. When the whole
    range is below min_step * (n - 1) the light barely changes and the pick is time-uniform.
    """
    lum = np.asarray(mean_log_lum, np.float64)
    total = len(lum)
    if total < n:
        raise ValueError(f"need {n} candidates, have {total}")
    if np.ptp(lum) < min_step * (n - 1):
        return np.unique(np.round(np.linspace(0, total - 1, n)).astype(int))
    order = np.argsort(lum, kind="stable")
    picks = order[np.round(np.linspace(0, total - 1, n)).astype(int)]
    kept: list[int] = []
    for idx in picks:  # ascending luminance
        if not kept or lum[idx] - lum[kept[-1]] >= min_step:
            kept.append(int(idx))
    if lum[picks[-1]] - lum[kept[-1]] < min_step and kept[-1] != picks[-1] and len(kept) > 1:
        kept[-1] = int(picks[-1])  # keep the brightest as the top of the span
    rest = np.setdiff1d(np.arange(total), kept)
    while len(kept) < n and len(rest):
        gap = np.abs(lum[rest][:, None] - lum[kept][None, :]).min(axis=1)
        if gap.max() < min_step:
            break
        best = int(rest[np.argmax(gap)])
        kept.append(best)
        rest = rest[rest != best]
    while len(kept) < n and len(rest):
        gap = np.abs(rest[:, None] - np.array(kept)[None, :]).min(axis=1)
        best = int(rest[np.argmax(gap)])
        kept.append(best)
        rest = rest[rest != best]
    return np.sort(np.array(kept, dtype=int))


def resize_groundtruth(arrays: dict[str, np.ndarray], indices: np.ndarray, n_total: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Index per-frame arrays (first axis n_total) at `indices` and resize maps (T,H,W[,C]) to size=(w, h).

    Float maps use area interpolation, bool/integer masks nearest. Arrays without a per-frame axis are
    copied unchanged.
    """
    out: dict[str, np.ndarray] = {"index": np.asarray(indices, np.int64)}
    for key, value in arrays.items():
        if value.ndim == 0 or value.shape[0] != n_total:
            out[key] = value
            continue
        picked = value[indices]
        if picked.ndim >= 3 and picked.shape[1:3] != (size[1], size[0]):
            if picked.dtype.kind == "f":
                picked = np.stack([cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) for m in picked]).astype(value.dtype)
            else:
                as_u8 = picked.astype(np.uint8)
                picked = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in as_u8]).astype(value.dtype)
        out[key] = picked
    return out


# ------------------------------------------------------------------------------------------ stage
@dataclass
class Candidates:
    """Decoded candidate frames of one source with their per-frame features."""

    frames: list[np.ndarray]  # n frames (h, w, 3) uint8 sRGB at the output size (read-only views)
    index: np.ndarray  # (n,) int frame number in the video / position in the image list
    time_s: np.ndarray  # (n,) float seconds (image folders: the position)
    mean_log_lum: np.ndarray  # (n,) float
    motion_maps: np.ndarray  # (n, h', w') float32
    info: dict  # the download's info.json


def _collect(iterator: Iterator[np.ndarray], count: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Keep up to `count` frames (no copies) and compute their features as they arrive: (frames, lum, maps)."""
    frames: list[np.ndarray] = []
    lums = np.empty(count)
    maps = None
    for n, frame in enumerate(iterator):
        frames.append(frame)
        motion, lums[n] = frame_features(frame)
        if maps is None:
            maps = np.empty((count, *motion.shape), np.float32)
        maps[n] = motion
    n = len(frames)
    return frames, lums[:n], maps[:n] if maps is not None else np.zeros((0, 1, 1), np.float32)


def load_candidates(raw: Path, source: Source, params: FramesParams) -> Candidates:
    """Decode candidates from a download folder (features computed while ffmpeg decodes).

    Raises FramesError("unusable_size") before decoding when `geometry_problem` refuses the frame size.
    A BigTime release sequence imported from a frame list keeps every listed frame as a candidate.
    """
    info = json.loads((raw / "info.json").read_text())
    problem = geometry_problem(int(info["width"]), int(info["height"]), params)
    if problem is not None:
        raise FramesError("unusable_size", problem)
    for name, digest in sorted(info.get("checksums", {}).items()):  # recorded by the download stage
        if not (raw / name).is_file() or sha256_file(raw / name) != digest:
            raise FramesError("corrupt", f"{raw / name}: missing or its sha256 differs from the one the download "
                                         "recorded in info.json (damaged or modified since; rerun the download)")
    size = output_size(int(info["width"]), int(info["height"]), params.long_side)
    if info.get("type") == "images":
        paths = sorted(p for p in (raw / "images").iterdir() if p.is_file())
        total = len(paths)
        keep = total if release_listed(info) else min(total, params.max_candidates)
        index = np.unique(np.round(np.linspace(0, total - 1, keep)).astype(int)) if total else np.zeros(0, int)
        frames, lums, maps = _collect(iter_images([paths[i] for i in index], size), len(index))
        return Candidates(frames, index, index.astype(float), lums, maps, info)
    video = next((p for p in raw.iterdir() if p.name.startswith("video.")), None)
    if video is None:
        raise FramesError("upstream_failed", f"no video.* in {raw}")
    fps = float(info["fps"])
    plan = plan_candidates(int(info["n_frames"]), fps, source.start, source.end,
                           sample_fps=params.sample_fps, max_candidates=params.max_candidates)
    if plan.count == 0:
        raise FramesError("too_few_frames", f"no frames inside [{source.start}, {source.end}] s (video is {info.get('duration_s', 0):.1f} s)")
    frames, lums, maps = _collect(iter_video(video, plan, fps, size), plan.count)
    if len(frames) < MIN_DECODED * plan.count:
        raise FramesError("corrupt", f"{video}: decoded {len(frames)} of the {plan.count} planned frames "
                                     f"(info.json declares {info['n_frames']}): truncated or corrupt video")
    index = plan.indices[: len(frames)]
    return Candidates(frames, index, index / fps, lums, maps, info)


def release_listed(info: dict) -> bool:
    """True when the download is a BigTime release sequence imported from a frame list (keep its frames)."""
    return bool(info.get("bigtime", {}).get("listed"))


def choose_frames(cand: Candidates, fp: FramesParams) -> np.ndarray:
    """Indices into the candidates of the frames to keep, in time order; FramesError when too few are usable.

    A release sequence with a frame list keeps all of them (the release's choice). Otherwise only usable
    candidates (`usable_fraction` >= `frames.min_usable_fraction`: a night frame is not) are selected, by
    `select_frames` over their mean log-luminance.
    """
    n = len(cand.frames)
    if release_listed(cand.info):
        if n < 2:
            raise FramesError("too_few_frames", f"{n} readable listed frame(s); need at least 2")
        return np.arange(n)
    if n < fp.per_sequence:
        raise FramesError("too_few_frames", f"{n} candidate frames < frames.per_sequence={fp.per_sequence}")
    fractions = np.array([usable_fraction(f, low=fp.usable_low, high=fp.usable_high) for f in cand.frames])
    usable = np.flatnonzero(fractions >= fp.min_usable_fraction)
    if len(usable) < fp.per_sequence:
        raise FramesError("too_few_frames", f"{len(usable)} of {n} candidate frames are usable (>= "
                                            f"{fp.min_usable_fraction:.0%} pixels neither dark nor saturated) < "
                                            f"frames.per_sequence={fp.per_sequence}")
    return usable[select_frames(cand.mean_log_lum[usable], fp.per_sequence, fp.min_log_lum_step)]


def write_release_masks(raw: Path, out_dir: Path, index: np.ndarray, size: tuple[int, int]) -> list[str | None]:
    """Resize (nearest) the release masks `raw/release_masks/NNNNNN.png` of image positions `index` to
    size=(w, h) and write them as `out_dir/NNNN_mask.png` (8-bit, 255 = valid); None where a frame has none."""
    from PIL import Image

    names: list[str | None] = []
    for k, i in enumerate(index):
        mask = raw / "release_masks" / f"{int(i):06d}.png"
        if not mask.exists():
            names.append(None)
            continue
        with Image.open(mask) as image:
            grey = np.asarray(image.convert("L"))
        valid = cv2.resize(grey, size, interpolation=cv2.INTER_NEAREST) >= 128
        names.append(f"{k:04d}_mask.png")
        if not cv2.imwrite(str(out_dir / names[-1]), (valid * 255).astype(np.uint8), PNG_OPTIONS):
            raise FramesError("error", f"could not write {names[-1]}")
    return names


def extract_frames(params: Params, source: Source, out_dir: Path, raw: Path) -> dict:
    """The frames stage for one source: read `raw`, write `out_dir` atomically, return the status record."""
    fp = params.frames
    out_dir, raw = Path(out_dir), Path(raw)
    upstream = read_status(raw / "status.json")
    try:
        if upstream is None or upstream.get("status") != "ok":
            why = "no download status" if upstream is None else f"download {upstream.get('category')}: {upstream.get('reason', '')}"
            raise FramesError("upstream_failed", why)
        cand = load_candidates(raw, source, fp)
        frames, index, times, info, lum = cand.frames, cand.index, cand.time_s, cand.info, cand.mean_log_lum
        chosen = choose_frames(cand, fp)
        check = np.union1d(evenly_spread(len(frames), MOTION_CHECKS), chosen)  # every output frame is checked
        shift, _, responses = camera_shift_from_maps(cand.motion_maps, check)
        if shift > fp.max_camera_shift:
            measured = "frames could not be registered" if math.isinf(shift) else f"camera shift {shift:.4f}"
            raise FramesError("camera_motion", f"{measured} of the diagonal > frames.max_camera_shift={fp.max_camera_shift:g}"
                              + (f" ({int((responses[check] >= MIN_RESPONSE).sum())}/{len(check)} frames registered)" if math.isinf(shift) else ""))
        height, width = frames[0].shape[:2]
        with atomic_dir(out_dir) as tmp:
            names = [f"{k:04d}.png" for k in range(len(chosen))]
            with ThreadPoolExecutor(max_workers=cpu_budget() or 2) as pool:  # cv2 releases the GIL while encoding
                written = list(pool.map(lambda name, c: cv2.imwrite(str(tmp / name), np.ascontiguousarray(frames[c][..., ::-1]), PNG_OPTIONS), names, chosen))
            if not all(written):
                raise FramesError("error", f"could not write {names[written.index(False)]}")
            rows = [{"file": name, "index": int(index[c]), "time_s": float(times[c]), "mean_log_lum": float(lum[c])}
                    for name, c in zip(names, chosen)]
            if (raw / "release_masks").is_dir():
                for row, mask in zip(rows, write_release_masks(raw, tmp, index[chosen], (width, height))):
                    row["release_mask"] = mask
            if (raw / "groundtruth.npz").exists():
                try:
                    with np.load(raw / "groundtruth.npz") as gt:
                        arrays = {key: gt[key] for key in gt.files}
                except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                    raise FramesError("corrupt", f"{raw / 'groundtruth.npz'}: unreadable ({err})") from None
                total = int(info.get("n_frames", 0)) or max(len(v) for v in arrays.values() if v.ndim)
                # npz_bytes: fixed zip timestamps, so equal inputs give equal bytes (np.savez stamps the time)
                atomic_write_bytes(tmp / "groundtruth.npz",
                                   npz_bytes(resize_groundtruth(arrays, index[chosen], total, (width, height))))
            atomic_write_json(tmp / "meta.json", {
                "source": source.name, "url": source.url, "scene": source.scene, "licence": source.licence,
                "attribution": source.attribution, "width": width, "height": height,
                "camera_shift": round(shift, SHIFT_DIGITS),
                "n_candidates": int(len(frames)), "frames": rows,
            })
    except FramesError as err:
        with atomic_dir(out_dir):
            pass
        return status_record(source.name, STAGE, err.category, err.reason)
    except Exception as err:  # noqa: BLE001 - one bad source must not stop the others
        with atomic_dir(out_dir):
            pass
        return status_record(source.name, STAGE, "error", f"{type(err).__name__}: {err}")
    span = float(lum[chosen].max() - lum[chosen].min())
    return status_record(source.name, STAGE, camera_shift=round(shift, SHIFT_DIGITS), n_frames=len(chosen),
                         summary=f"{len(chosen)} frames {width}x{height} from {len(frames)} candidates, "
                                 f"log-lum span {span:.2f}, camera shift {shift:.4f}")


def frames_all(params: Params, raw_root: Path, out_root: Path, status_root: Path | None = None, *, progress: bool = True) -> list[dict]:
    """Run `extract_frames` for every source (raw_root/<name> -> out_root/<name>) with a tqdm bar."""
    return run_all_sources(STAGE, extract_frames, params, out_root, status_root, input_roots={"raw": raw_root},
                           progress=progress)


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, extract_frames, argv, inputs={"raw": "download stage output"})


if __name__ == "__main__":
    sys.exit(main())
