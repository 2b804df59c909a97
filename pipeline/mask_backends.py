"""Per-pixel validity cues for one sequence of frames from a static camera.

Consumes `frames_srgb` (m, H, W, 3) uint8 sRGB (the frames stage's PNGs, in time order). Produces boolean
"invalid" maps (m, H, W), True = exclude the pixel from training:

- `saturation_invalid`: any channel >= `high` (sRGB in [0,1]) or sRGB-encoded Rec.709 luminance <= `low`,
  grown by `dilate` pixels (Euclidean distance).
- semantic backends (sky and dynamic objects), chosen by name from `BACKENDS`:
  * "temporal" (`TemporalBackend`, model-free): a pixel is dynamic in frame t when its log-intensity or
    log-chromaticity departs from its temporal median by more than `dynamic_threshold` robust z-scores after
    removing what an illumination change explains (a per-frame smooth gain field and light colour). Sky is a
    large, low-texture region connected to the top border whose intensity/colour over time does not follow
    the scene's global gain.
  * "detectron2" (`Detectron2Backend`): COCO Panoptic FPN; sky stuff and moving thing classes are invalid.
  * "none": nothing is invalid.
- `manual_invalid`: a per-source PNG (white = valid) resized to the frame size.

Backend contract (the registry's): `Backend.from_params(masks_params)` builds one; `backend(frames_srgb)` returns
`(result, error)`: on success `(BackendResult, None)`, on failure `(None, "human sentence")`; never raises for
bad input data. `BackendResult.invalid` is (m, H, W) bool; `.info` is a JSON-able dict (what was found).

Units inside the temporal backend: log values are natural logs of linear RGB (`pipeline.color.srgb_to_linear`)
plus `LOG_EPS`; "log-intensity" is the mean of the three log channels, "log-chromaticity" the log channels
minus that mean (3 numbers summing to 0, 2 degrees of freedom).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import cv2
import numpy as np
from scipy import ndimage

from pipeline.color import linear_to_srgb, luminance, srgb_to_linear
from pipeline.params import MasksParams

LOG_EPS = 0.005  # linear; keeps log() of near-black pixels from amplifying 8-bit noise without bound
MAD_TO_SIGMA = 1.4826  # robust sigma of a 1-D Gaussian from its median absolute deviation
HYSTERESIS = 0.75  # dynamic regions grow through pixels above this fraction of the threshold
RADIUS_TO_SIGMA = 1.1774  # median of the radius of an isotropic 2-D Gaussian, in sigmas (sqrt(2 ln 2))
# Shadow-line fit (TemporalBackend.shadow_line_of): departures stronger than SHADOW_STRONG log units fit it;
# inliers lie within SHADOW_INLIER x |d_i| + SHADOW_NOISE of it in log-chroma.
SHADOW_STRONG, SHADOW_INLIER, SHADOW_NOISE, SHADOW_MIN_SAMPLES, SHADOW_REFITS = 0.3, 0.15, 0.05, 50, 3


# --------------------------------------------------------------------------------------------- helpers
def _as_frames(frames_srgb: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_srgb)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames_srgb must be (m,H,W,3) uint8, got {frames.shape} {frames.dtype}")
    return frames


def dilate_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grow a (..., H, W) bool mask by `radius` pixels (Euclidean): out = distance to a True pixel <= radius."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    flat = mask.reshape(-1, *mask.shape[-2:])
    out = np.stack([ndimage.distance_transform_edt(~m) <= radius if m.any() else m for m in flat])
    return out.reshape(mask.shape)


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 8-connected components of a (H, W) bool mask with fewer than `min_pixels` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Pixels of `weak` (H, W) that are 8-connected, through `weak`, to a pixel of `strong`."""
    labels, n = ndimage.label(weak | strong, structure=np.ones((3, 3), bool))
    hit = np.zeros(n + 1, bool)
    hit[np.unique(labels[strong])] = True
    hit[0] = False
    return hit[labels]


def _smooth_field(residual: np.ndarray, cells: int) -> np.ndarray:
    """Per-frame low-frequency field of `residual` (m, H, W): medians over a grid of cells (`cells` along the
    long side), bilinearly interpolated back to (H, W). cells = 0 gives one global median per frame."""
    m, h, w = residual.shape
    if cells <= 0:
        return np.broadcast_to(np.median(residual.reshape(m, -1), axis=1)[:, None, None], residual.shape).copy()
    long_side = max(h, w)
    gy, gx = max(1, round(cells * h / long_side)), max(1, round(cells * w / long_side))
    ys, xs = np.linspace(0, h, gy + 1).astype(int), np.linspace(0, w, gx + 1).astype(int)
    grid = np.empty((m, gy, gx), np.float32)
    for i in range(gy):
        for j in range(gx):
            grid[:, i, j] = np.median(residual[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].reshape(m, -1), axis=1)
    # Bilinear interpolation between cell centres, edge cells held out to the border (cv2's INTER_LINEAR maps
    # pixel centres the same way for equal cells).
    return np.stack([cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR) for g in grid]).astype(np.float32)


# --------------------------------------------------------------------------------------------- saturation
def saturated_or_dark(frames_srgb: np.ndarray, *, high: float, low: float) -> np.ndarray:
    """(m,H,W,3) uint8 sRGB -> (m,H,W) bool: any channel >= high, or sRGB-encoded luminance <= low (no dilation)."""
    srgb = _as_frames(frames_srgb).astype(np.float32) / 255.0
    lum_srgb = linear_to_srgb(luminance(srgb_to_linear(srgb)))
    return (srgb >= high).any(axis=-1) | (lum_srgb <= low)


def saturation_invalid(frames_srgb: np.ndarray, *, high: float, low: float, dilate: int) -> np.ndarray:
    """(m,H,W,3) uint8 sRGB -> (m,H,W) bool: `saturated_or_dark`, dilated by `dilate` pixels."""
    return dilate_mask(saturated_or_dark(frames_srgb, high=high, low=low), dilate)


def manual_invalid(mask_image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A manual mask image (h,w) or (h,w,C), white = valid, any size -> (H,W) bool invalid (resized bilinearly,
    then valid where >= half of the image's maximum code value)."""
    from PIL import Image

    image = np.asarray(mask_image)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    image = image.astype(np.float32)
    top = 255.0 if image.max() > 1 else 1.0
    resized = np.asarray(Image.fromarray(image, mode="F").resize((width, height), Image.BILINEAR))
    return resized < 0.5 * top


# --------------------------------------------------------------------------------------------- backends
@dataclass
class BackendResult:
    invalid: np.ndarray  # (m, H, W) bool, True = sky or dynamic
    info: dict[str, Any] = field(default_factory=dict)


class NoneBackend:
    """No semantic masking: every pixel valid."""

    name: ClassVar[str] = "none"

    @classmethod
    def from_params(cls, params: MasksParams) -> "NoneBackend":
        return cls()

    def __call__(self, frames_srgb: np.ndarray) -> tuple[BackendResult | None, str | None]:
        frames = _as_frames(frames_srgb)
        return BackendResult(np.zeros(frames.shape[:3], bool), {}), None


class TemporalBackend:
    """Model-free sky and dynamic-object masks from the sequence itself (static camera assumed).

    Illumination model: log I_t(p) = log I_ref(p) + g_t(p) + c_t, with I_ref the per-pixel temporal median,
    g_t a smooth per-frame gain field (cell medians on a `shading_cells` grid) and c_t a per-frame light colour.
    What it does not explain is scored per pixel with robust z-scores (MAD over time, floored at the scene's
    median MAD so flat pixels are not hypersensitive):

    - shadow line (`shadow_line`): outdoors a pixel entering a hard shadow loses the sun but keeps the sky's
      fill light, so it darkens AND shifts towards the sky's colour: in (log-intensity, log-chroma) its
      departure lies on a line d_c = k d_i through the origin, the same for every albedo (`shadow_line_of`
      fits k per frame to the strong departures outside the sky). Where darkening along the line turns blue
      by at least `shadow_min_chroma` (sky light is bluer than sunlight) and the fit is coherent, the
      component of each departure along it is removed (it is light), and the line's relative error
      (`shadow_tolerance` x that component) is added to the noise scale. Under a white fill (overcast) the
      line stays off: a grey shadow and a grey object cannot be told apart by colour.
    - dynamic(t, p): max(z_intensity, z_chroma) >= dynamic_threshold after a 3x3 spatial median, grown by
      hysteresis through pixels above HYSTERESIS x the threshold, opened (drops speckle), components smaller
      than `min_object` of the image dropped, closed, holes filled, dilated by `dilate` px into pixels whose
      score is at least `dilate_floor` x the threshold. The z-scores are
      also divided by each frame's own typical z (when above 1): a frame lit in a way the gain field cannot
      follow (dusk, night) departs everywhere, which is illumination, not objects.
    - sky(p), same for all frames: pixels whose median over time of the departure from a per-frame affine
      (in x, y) light field fitted to the textured scene is above `sky_deviation` (log units) and whose
      temporal-median texture (log-intensity gradient) is below `sky_texture`; 8-connected components touching
      the top border with >= `sky_min_area` of the image are kept, grown by up to 3 px into departing pixels,
      closed and hole-filled. A dynamic object departs rarely (the median ignores it); sky departs in most
      frames (its brightness and colour follow the weather, not the light on the ground).
    """

    name: ClassVar[str] = "temporal"

    def __init__(
        self,
        *,
        dynamic_threshold: float = 4.0,
        sky: bool = True,
        shading_cells: int = 4,
        min_object: float = 0.0005,
        dilate: int = 2,
        sky_deviation: float = 0.15,
        sky_texture: float = 0.04,
        sky_min_area: float = 0.02,
        shadow_line: bool = True,
        shadow_min_chroma: float = 0.2,
        shadow_min_coherence: float = 0.5,
        shadow_tolerance: float = 0.05,
        dilate_floor: float = 0.5,
    ) -> None:
        if dynamic_threshold <= 0:
            raise ValueError("dynamic_threshold must be > 0")
        if shading_cells < 0 or dilate < 0:
            raise ValueError("shading_cells and dilate must be >= 0")
        self.dynamic_threshold = float(dynamic_threshold)
        self.sky = bool(sky)
        self.shading_cells = int(shading_cells)
        self.min_object = float(min_object)
        self.dilate = int(dilate)
        self.sky_deviation = float(sky_deviation)
        self.sky_texture = float(sky_texture)
        self.sky_min_area = float(sky_min_area)
        self.shadow_line = bool(shadow_line)
        self.shadow_min_chroma = float(shadow_min_chroma)
        self.shadow_min_coherence = float(shadow_min_coherence)
        self.shadow_tolerance = float(shadow_tolerance)
        self.dilate_floor = float(dilate_floor)

    @classmethod
    def from_params(cls, params: MasksParams) -> "TemporalBackend":
        t = params.temporal
        return cls(**t.model_dump())

    # -- pieces (public so the benchmark and tests can look at them) --
    @staticmethod
    def log_channels(frames_srgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m,H,W,3) uint8 -> (log-intensity (m,H,W), log-chromaticity (m,H,W,3)) float32."""
        lin = srgb_to_linear(_as_frames(frames_srgb).astype(np.float32) / 255.0)
        logs = np.log(lin + LOG_EPS).astype(np.float32)
        intensity = logs.mean(axis=-1)
        return intensity, logs - intensity[..., None]

    def shadow_line_of(self, d_i: np.ndarray, d_c: np.ndarray, use: np.ndarray | None = None
                       ) -> tuple[np.ndarray | None, float, float]:
        """The shadow line of departures (..., H, W) log-intensity `d_i` and (..., H, W, 3) log-chroma `d_c`.

        Returns (k (3,) with d_c ~ k * d_i, blueness k_R - k_B, coherence) fitted to the strong departures
        (|d_i| > SHADOW_STRONG, where `use` (H, W) is True): start at the per-channel median ratio, then
        SHADOW_REFITS least-squares refits on the inliers (chroma residual < SHADOW_INLIER x |d_i| +
        SHADOW_NOISE). Coherence = inlier fraction. Blueness > 0 when darkening shifts towards blue (a shadow lit
        by the sky). k is None when fewer than SHADOW_MIN_SAMPLES departures are strong.
        """
        strong = np.abs(d_i) > SHADOW_STRONG
        if use is not None:
            strong &= use
        if strong.sum() < SHADOW_MIN_SAMPLES:
            return None, 0.0, 0.0
        a, c = d_i[strong].astype(np.float64), d_c[strong].astype(np.float64)
        k = np.median(c / a[:, None], axis=0)
        for _ in range(SHADOW_REFITS):
            k -= k.mean()  # log-chroma sums to 0
            inliers = np.linalg.norm(c - a[:, None] * k, axis=1) < SHADOW_INLIER * np.abs(a) + SHADOW_NOISE
            if inliers.sum() < SHADOW_MIN_SAMPLES:
                break
            k = (c[inliers] * a[inliers, None]).sum(axis=0) / (a[inliers] ** 2).sum()
        k -= k.mean()
        coherence = float((np.linalg.norm(c - a[:, None] * k, axis=1) < SHADOW_INLIER * np.abs(a) + SHADOW_NOISE).mean())
        return k, float(k[0] - k[2]), coherence

    def _usable_line(self, fit: tuple[np.ndarray | None, float, float]) -> bool:
        k, blueness, coherence = fit
        return k is not None and blueness >= self.shadow_min_chroma and coherence >= self.shadow_min_coherence

    def remove_shadow_line(self, d_i: np.ndarray, d_c: np.ndarray, use: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """Project each departure (d_i, d_c) off the shadow line: -> (d_i', d_c', along (m,H,W), per-frame k).

        The line is fitted per frame (the sun's colour changes over a day) to the pixels where `use` (H, W) is
        True (the caller leaves the sky out: its uniform colour shift would fit any line), falling back to the
        fit over all frames. It is used only when darkening shifts towards blue by at least
        `shadow_min_chroma` per log-intensity unit (sky light is bluer than sunlight; under a white overcast sky
        a shadow is a grey darkening, indistinguishable from a grey object by colour) and when it is coherent
        (>= shadow_min_coherence of the strong departures on it). `along` is the signed length of the removed
        component (0 where no line is used).
        """
        overall = self.shadow_line_of(d_i, d_c, use)
        v = np.concatenate([d_i[..., None], d_c], axis=-1).astype(np.float32)
        along = np.zeros(d_i.shape, np.float32)
        lines: list = []
        for t in range(len(v)):
            frame = self.shadow_line_of(d_i[t], d_c[t], use)
            k = frame[0] if self._usable_line(frame) else overall[0] if self._usable_line(overall) else None
            lines.append(None if k is None else [round(float(x), 4) for x in k])
            if k is None:
                continue
            u = np.concatenate([[1.0], k]).astype(np.float32)
            u /= np.linalg.norm(u)
            along[t] = v[t] @ u
            v[t] -= along[t][..., None] * u
        return v[..., 0], v[..., 1:], along, lines

    def dynamic_scores(self, log_i: np.ndarray, log_c: np.ndarray, sky: np.ndarray | None = None) -> np.ndarray:
        """Robust z-score (m,H,W) of each pixel's departure from its illumination-explained appearance.

        `sky` (H, W) bool: pixels left out of the shadow-line fit (scored like the others).
        """
        # departures from the temporal median, less each frame's global light change (median over the image)
        d_i = log_i - np.median(log_i, axis=0)
        d_i = d_i - np.median(d_i.reshape(len(d_i), -1), axis=1)[:, None, None]
        d_c = log_c - np.median(log_c, axis=0)
        d_c = d_c - np.median(d_c.reshape(len(d_c), -1, 3), axis=1)[:, None, None, :]
        # hard shadows and sun/sky colour: what lies on the shadow line is light; then the smooth gain field (its
        # cell medians are robust once bimodal lit/shadowed cells have collapsed onto the line)
        along = np.zeros(d_i.shape, np.float32)
        if self.shadow_line:
            d_i, d_c, along, _ = self.remove_shadow_line(d_i - np.median(d_i, axis=0), d_c - np.median(d_c, axis=0),
                                                         None if sky is None else ~sky)
        d_i = d_i - _smooth_field(d_i, self.shading_cells)
        d_c = d_c - np.stack([_smooth_field(d_c[..., k], self.shading_cells) for k in range(3)], axis=-1)
        # the line model's relative error adds to each pixel's noise scale
        model = (self.shadow_tolerance * along) ** 2
        # intensity: 1-D robust z. Scale = the pixel's own MAD over time (floored at the scene's median MAD)
        # times the frame's own typical departure (a frame whose light changed in ways the gain field cannot
        # follow, dusk or night, departs everywhere: that is illumination, not objects).
        centred = d_i - np.median(d_i, axis=0)
        sig_i = MAD_TO_SIGMA * np.median(np.abs(centred), axis=0)
        sig_i = np.maximum(sig_i, max(float(np.median(sig_i)), 1e-3))
        z_i = np.abs(centred) / np.sqrt(sig_i ** 2 + model)
        z_i /= np.maximum(np.median(z_i.reshape(len(z_i), -1), axis=1) / 0.6745, 1.0)[:, None, None]
        # chroma: radius of the 2-D departure, in sigmas of an isotropic Gaussian, same scaling
        radius = np.linalg.norm(d_c - np.median(d_c, axis=0), axis=-1)
        sig_c = np.median(radius, axis=0) / RADIUS_TO_SIGMA
        sig_c = np.maximum(sig_c, max(float(np.median(sig_c)), 1e-3))
        z_c = radius / np.sqrt(sig_c ** 2 + model)
        z_c /= np.maximum(np.median(z_c.reshape(len(z_c), -1), axis=1) / RADIUS_TO_SIGMA, 1.0)[:, None, None]
        return np.maximum(z_i, z_c).astype(np.float32)

    def dynamic_mask(self, scores: np.ndarray) -> np.ndarray:
        """(m,H,W) z-scores -> (m,H,W) bool dynamic objects after morphological cleanup."""
        m, h, w = scores.shape
        min_pixels = max(4, int(round(self.min_object * h * w)))
        out = np.zeros(scores.shape, bool)
        # 3x3 spatial median first: objects are spatially coherent, 8-bit/JPEG noise and texture edges are not.
        scores = ndimage.median_filter(scores, size=(1, 3, 3))
        for t in range(m):
            strong = scores[t] >= self.dynamic_threshold
            if not strong.any():
                continue
            mask = _hysteresis(strong, scores[t] >= HYSTERESIS * self.dynamic_threshold)
            mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
            mask = _remove_small(mask, min_pixels)
            mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, structure=_disk(1), border_value=0))
            out[t] = mask
        # the safety margin grows only into pixels that depart somewhat (blurred object edges), not into light
        # changes around the object (a shadow it walks through)
        return out | (dilate_mask(out, self.dilate) & (scores >= self.dilate_floor * self.dynamic_threshold))

    def sky_features(self, log_i: np.ndarray, log_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(deviation (H,W), texture (H,W)) for the sky test.

        texture: temporal median of the log-intensity gradient magnitude (per pixel), 5x5 box-averaged.
        deviation: median over time of the (intensity, chroma) distance, in log units, between a pixel's
        departure from its temporal median and an affine-in-(x,y) per-frame field fitted to the textured
        pixels (the scene: its shading and light colour change smoothly); sky, lit by itself, departs.
        """
        m, h, w = log_i.shape
        gy, gx = np.gradient(log_i, axis=(1, 2))
        texture = ndimage.uniform_filter(np.median(np.hypot(gy, gx), axis=0), size=5).astype(np.float32)
        scene = texture > self.sky_texture
        if scene.sum() < 16:  # nothing textured: fall back to all pixels
            scene = np.ones_like(scene)
        departures = np.concatenate([(log_i - np.median(log_i, axis=0))[..., None], log_c - np.median(log_c, axis=0)], axis=-1)
        yy, xx = np.mgrid[0:h, 0:w]
        design = np.stack([np.ones(h * w), (xx.ravel() / w) - 0.5, (yy.ravel() / h) - 0.5], axis=1).astype(np.float32)
        idx = np.flatnonzero(scene.ravel())[:: max(1, int(scene.sum()) // 4000)]
        residual = np.empty(departures.shape, np.float32)
        for t in range(m):
            values = departures[t].reshape(-1, 4)
            coef = np.linalg.lstsq(design[idx], values[idx], rcond=None)[0]
            # one robust refit without the worst 20% (objects, cast shadows) of the scene samples
            err = np.abs(design[idx] @ coef - values[idx]).sum(axis=1)
            keep = idx[err <= np.quantile(err, 0.8)]
            coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
            residual[t] = (values - design @ coef).reshape(h, w, 4)
        deviation = np.median(np.linalg.norm(residual, axis=-1), axis=0)
        return deviation.astype(np.float32), texture

    def sky_mask(self, log_i: np.ndarray, log_c: np.ndarray) -> np.ndarray:
        """(H,W) bool: sky, from the features above."""
        h, w = log_i.shape[1:]
        deviation, texture = self.sky_features(log_i, log_c)
        cand = (deviation >= self.sky_deviation) & (texture <= self.sky_texture)
        cand = ndimage.binary_opening(cand, structure=np.ones((3, 3), bool))
        labels, n = ndimage.label(cand, structure=np.ones((3, 3), bool))
        if n == 0:
            return np.zeros((h, w), bool)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        top = np.unique(labels[0][labels[0] > 0])
        keep = np.zeros(n + 1, bool)
        keep[top] = sizes[top] >= self.sky_min_area * h * w
        sky = keep[labels]
        # The 5x5 texture average blurs the horizon: take back departing pixels within 3 px of the sky.
        sky |= ndimage.binary_dilation(sky, structure=_disk(3)) & (deviation >= self.sky_deviation)
        # Enclosed gaps (a bird, a lamp-post tip, a cloud's textured edge) belong to the sky.
        return ndimage.binary_fill_holes(ndimage.binary_closing(sky, structure=_disk(2), border_value=0))

    def __call__(self, frames_srgb: np.ndarray) -> tuple[BackendResult | None, str | None]:
        frames = _as_frames(frames_srgb)
        m, h, w = frames.shape[:3]
        if m < 3:
            return None, f"the temporal backend needs >= 3 frames, got {m}"
        log_i, log_c = self.log_channels(frames)
        sky = self.sky_mask(log_i, log_c) if self.sky else np.zeros((h, w), bool)
        dynamic = self.dynamic_mask(self.dynamic_scores(log_i, log_c, sky))
        info = {
            "sky_fraction": float(sky.mean()),
            "dynamic_fraction": [float(f) for f in dynamic.reshape(m, -1).mean(axis=1)],
        }
        return BackendResult(dynamic | sky[None], info), None


# COCO panoptic classes treated as invalid. Names as in detectron2's builtin metadata for
# "coco_2017_*_panoptic_separated": things keep COCO names, stuff names lose "-other"/"-merged"
# ("sky-other-merged" -> "sky").
DYNAMIC_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "skateboard", "surfboard",
)
SKY_STUFF = ("sky",)


def panoptic_invalid(panoptic_seg: np.ndarray, segments_info: list[dict], invalid_thing_ids: set[int],
                     invalid_stuff_ids: set[int]) -> np.ndarray:
    """detectron2 panoptic output -> (H,W) bool invalid.

    `panoptic_seg` (H,W) int: segment id per pixel (0 = void); `segments_info`: dicts with "id", "isthing"
    and "category_id" (contiguous thing id when isthing, contiguous stuff id otherwise).
    """
    bad_ids = [s["id"] for s in segments_info
               if s["category_id"] in (invalid_thing_ids if s["isthing"] else invalid_stuff_ids)]
    return np.isin(np.asarray(panoptic_seg), bad_ids)


class Detectron2Backend:
    """COCO Panoptic FPN (detectron2 model zoo config) -> sky and moving-thing pixels.

    detectron2 is an optional install (`bash bootstrap.sh --detectron2` builds it into `.venv-d2`); when it is
    not importable the call returns an error saying so. `weights` is a local path (or a URL detectron2's
    checkpointer can open); empty means random initialisation (for plumbing tests only: the masks mean
    nothing). `min_size_test` overrides the config's test resize (0 keeps the config's 800).
    """

    name: ClassVar[str] = "detectron2"

    def __init__(self, *, config: str = "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml", weights: str = "",
                 device: str = "cpu", min_size_test: int = 0) -> None:
        self.config = config
        self.weights = weights
        self.device = device
        self.min_size_test = int(min_size_test)
        self._model = None
        self._ids: tuple[set[int], set[int]] | None = None

    @classmethod
    def from_params(cls, params: MasksParams) -> "Detectron2Backend":
        d = params.detectron2
        return cls(config=d.config, weights=d.weights, device=d.device,
                   min_size_test=d.min_size_test)

    def build(self):
        """Build (once) and return the detectron2 model in eval mode; raises ImportError without detectron2."""
        if self._model is None:
            from detectron2 import model_zoo
            from detectron2.checkpoint import DetectionCheckpointer
            from detectron2.config import get_cfg
            from detectron2.data import MetadataCatalog
            from detectron2.modeling import build_model

            cfg = get_cfg()
            # A model-zoo name ("COCO-PanopticSegmentation/...yaml") unless it is an existing file.
            cfg.merge_from_file(self.config if os.path.isfile(self.config) else model_zoo.get_config_file(self.config))
            cfg.MODEL.DEVICE = self.device
            cfg.MODEL.WEIGHTS = self.weights
            if self.min_size_test:
                cfg.INPUT.MIN_SIZE_TEST = self.min_size_test
                cfg.INPUT.MAX_SIZE_TEST = max(cfg.INPUT.MAX_SIZE_TEST, self.min_size_test)
            cfg.freeze()
            model = build_model(cfg).eval()
            if self.weights:
                DetectionCheckpointer(model).load(self.weights)
            meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
            things = {i for i, n in enumerate(meta.thing_classes) if n in DYNAMIC_THINGS}
            stuff = {i for i, n in enumerate(meta.stuff_classes) if n in SKY_STUFF}
            self._model, self._ids, self._input_format = model, (things, stuff), cfg.INPUT.FORMAT
            self._meta = meta
        return self._model

    @property
    def invalid_ids(self) -> tuple[set[int], set[int]]:
        """(contiguous thing ids, contiguous stuff ids) mapped to invalid."""
        self.build()
        assert self._ids is not None
        return self._ids

    def predict(self, frame_srgb: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """One (H,W,3) uint8 RGB frame -> (panoptic_seg (H,W) int32, segments_info) at the frame's size."""
        import torch

        model = self.build()
        image = frame_srgb[..., ::-1] if self._input_format == "BGR" else frame_srgb
        h, w = frame_srgb.shape[:2]
        with torch.no_grad():
            out = model([{"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                          "height": h, "width": w}])[0]
        panoptic_seg, segments_info = out["panoptic_seg"]
        return panoptic_seg.cpu().numpy().astype(np.int32), list(segments_info)

    def __call__(self, frames_srgb: np.ndarray) -> tuple[BackendResult | None, str | None]:
        frames = _as_frames(frames_srgb)
        try:
            self.build()
        except ImportError as err:
            return None, (f"detectron2 is not importable ({err}); run `bash bootstrap.sh --detectron2` and run the "
                          "stage with .venv-d2/bin/python")
        things, stuff = self.invalid_ids
        invalid = np.zeros(frames.shape[:3], bool)
        counts: dict[str, int] = {}
        for t, frame in enumerate(frames):
            panoptic_seg, segments_info = self.predict(frame)
            invalid[t] = panoptic_invalid(panoptic_seg, segments_info, things, stuff)
            for s in segments_info:
                ids, names = (things, self._meta.thing_classes) if s["isthing"] else (stuff, self._meta.stuff_classes)
                if s["category_id"] in ids:
                    counts[names[s["category_id"]]] = counts.get(names[s["category_id"]], 0) + 1
        return BackendResult(invalid, {"weights": self.weights or "random-init", "segments": counts}), None


Backend = Callable[[np.ndarray], "tuple[BackendResult | None, str | None]"]

BACKENDS: dict[str, type] = {
    NoneBackend.name: NoneBackend,
    TemporalBackend.name: TemporalBackend,
    Detectron2Backend.name: Detectron2Backend,
}


def build_backend(params: MasksParams):
    """The backend named by `params.backend`, built from its params section."""
    return BACKENDS[params.backend].from_params(params)
