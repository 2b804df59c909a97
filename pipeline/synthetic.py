"""Synthetic time-lapse scenes with known albedo and shading: the embedded offline default source.

Consumes a scene name (one of `SCENES`) and the `synthetic` params section (size, fps, duration, seed,
x264 crf). Produces a `SyntheticSequence` of T = round(fps * seconds) frames of H x W pixels:

- `srgb` (T,H,W,3) uint8: 8-bit sRGB frames, exactly what is encoded into `video.mp4`.
- `reflectance` (T,H,W,3) float32: linear albedo in [0,1] (per frame, because moving objects cover it).
- `shading` (T,H,W) float32: linear grey shading (>= 0, may exceed 1: bright light clips).
- `light_rgb` (T,3) float32: linear light colour of each frame, max channel 1.
- `sky` (T,H,W) bool, `dynamic` (T,H,W) bool (pixels of moving objects), `clipped` (T,H,W) bool.
- `times` (T,) float64 seconds (frame t at t / fps).

Image formation (CONTRACTS.md): linear = reflectance * shading[..., None] * light_rgb[t] (float64 products of
the float32 arrays, in that order); clipped = any channel > 1; srgb = round(255 * linear_to_srgb(clip(linear,
0, 1))). `image_formation` is that function; the renderer uses it, so the ground truth recomposes the frames
exactly.

The renderer is a small vectorised ray caster: a pinhole camera over an infinite ground plane (y = 0) with
axis-aligned boxes and spheres, procedural albedo textures (stripes, checkers, hashed tiles, window grids,
value noise), a directional sun with ray-traced cast shadows, a hemispherical ambient term and (indoor) a point
light with inverse-square falloff and shadows: shading = max(0, n.l) * visible * sun + ambient * (0.6 + 0.4 n_y)
+ point * max(0, n.p) * visible / (d^2 + 0.05). Rays that hit nothing see the sky: a gradient whose colour and
brightness follow their own schedule (not the scene light); its ground truth is shading = max_c(sky / light_rgb),
reflectance = sky / (light_rgb * shading) (max channel 1), flagged in `sky`.

Scenes (progress s = t / (T - 1) in [0, 1], so fps and duration do not change what happens):
- "sun": courtyard (hashed paving tiles, striped/checkered boxes, a white sphere, a tall pillar, a striped
  wall); the sun arcs from east to west (elevation 12 -> 60 -> 15 deg), shadows sweep; sky; the white sphere
  and box top clip near noon.
- "sunset": houses with window grids, balls, a fence and grass; a low sun sinking (25 -> 1 deg) while the
  light turns from white to deep orange and dims; orange-purple sky with a glow around the sun.
- "indoor": a room (plank floor, wallpaper, shelf, table, ball) lit by sunlight through a side window whose
  patch moves over the floor, dim ambient, and a ceiling-corner lamp (point light) switched on for
  1/3 <= s < 2/3: shading jumps at both switches; the wall beside the lamp clips. No sky.
- "street": side view of a road, sidewalk and building facades under sky; clouds dim the sun at times; a car
  (white roof that clips in the sun) drives left to right and a person walks right to left (`dynamic`).
- "objects": a row of 3-5 spheres and boxes on a grey table, each painted at random (plain, stripes, checkers,
  tiles or sharp-edged paint blotches, random colours, often with value noise), under one white-ish light that
  circles them (azimuth sweeps 120-200 deg, elevation rises and falls) and dims: attached and cast shadows move
  over painted albedo. Black sky behind (above the horizon, mostly out of view). Every draw, object count and
  placement included, comes from the seed and the variant, so `synthetic://objects?variant=N` gives as many
  different sequences as wanted (training data beside real sequences: the MIT recipe's `--synthetic-objects`).
  `synthetic.tonal_paint` (params) makes that share of the objects' paints differ mostly in lightness (the first
  paint's hue, blended toward white, 2-5x lighter or darker), drawn from its own stream: same geometry.
- "carved": the "objects" scene (its own random stream) whose objects carry surface relief: each object's
  shading normals are tilted by smooth random bumps (`Relief`; the geometry, its silhouette and cast shadows
  stay those of the sphere or box), so fine shading detail (creases, dents) moves with the circling light
  over the painted albedo, as on sculpted real objects.

`camera_pan` (pixels per frame) shifts the principal point: frame t shows the window of a wider canvas that
starts camera_pan * t pixels to the right (sub-pixel exact), so static content moves LEFT by camera_pan px
per frame. Everything is deterministic given the seed (textures and object placement draw from it).

`write_scene` writes `video.mp4` (libx264, yuv444p, BT.601 limited range, given crf), `groundtruth.npz`
(the arrays above except srgb) and `scene.json` (settings, conventions, statistics), all atomically.
CLI: `python -m pipeline.synthetic SCENE --out DIR [--params params.yaml] [--camera-pan PX]`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import ffmpeg
import numpy as np

from pipeline.atomic import atomic_write_bytes, atomic_write_json
from pipeline.color import linear_to_srgb
from pipeline.params import SyntheticParams, load_params

SCENES = ("sun", "sunset", "indoor", "street", "objects", "carved")
GROUNDTRUTH_KEYS = ("reflectance", "shading", "light_rgb", "sky", "dynamic", "clipped", "times")
EPS = 1e-4  # ray distance below which a hit is ignored
SHADOW_OFFSET = 1e-3  # shadow rays start this far off the surface (world units, ~metres)
ALBEDO_RANGE = (0.02, 0.95)  # every surface albedo is clipped into this range

Material = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (u, v, normal) -> albedo (n, 3)


# ============================================================================================ output type
@dataclass
class SyntheticSequence:
    """One rendered scene: frames plus per-pixel ground truth (see the module docstring for units)."""

    scene: str
    srgb: np.ndarray  # (T,H,W,3) uint8
    reflectance: np.ndarray  # (T,H,W,3) float32 linear
    shading: np.ndarray  # (T,H,W) float32 linear
    light_rgb: np.ndarray  # (T,3) float32 linear
    sky: np.ndarray  # (T,H,W) bool
    dynamic: np.ndarray  # (T,H,W) bool
    clipped: np.ndarray  # (T,H,W) bool
    times: np.ndarray  # (T,) float64 seconds
    fps: float
    seed: int = 0
    camera_pan: float = 0.0
    description: str = ""
    variant: int = 0  # synthetic://SCENE?variant=N

    @property
    def n_frames(self) -> int:
        return int(self.srgb.shape[0])

    @property
    def height(self) -> int:
        return int(self.srgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.srgb.shape[2])

    def groundtruth(self) -> dict[str, np.ndarray]:
        """The arrays stored in groundtruth.npz (everything but srgb)."""
        return {key: getattr(self, key) for key in GROUNDTRUTH_KEYS}


def image_formation(reflectance: np.ndarray, shading: np.ndarray, light_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,H,W,3) reflectance, (T,H,W) shading, (T,3) light -> ((T,H,W,3) uint8 sRGB, (T,H,W) bool clipped).

    linear = reflectance * shading[..., None] * light_rgb[t], computed in float64 from the given arrays.
    """
    linear = (np.asarray(reflectance, np.float64) * np.asarray(shading, np.float64)[..., None]
              * np.asarray(light_rgb, np.float64)[:, None, None, :])
    clipped = (linear > 1.0).any(axis=-1)
    srgb = np.round(255.0 * linear_to_srgb(np.clip(linear, 0.0, 1.0))).astype(np.uint8)
    return srgb, clipped


# ============================================================================================ textures
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (ix, iy) (splitmix64 finaliser)."""
    ix, iy = np.broadcast_arrays(np.atleast_1d(np.asarray(ix, np.int64)), np.atleast_1d(np.asarray(iy, np.int64)))
    x = ix.astype(np.uint64) * _K1
    x ^= iy.astype(np.uint64) * _K2
    x ^= np.full_like(x, (seed * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) % 2**64)
    x ^= x >> np.uint64(30)
    x *= _K2
    x ^= x >> np.uint64(27)
    x *= _K3
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: hashed lattice values, smoothstep-interpolated, lattice spacing `scale`."""
    x, y = u / scale, v / scale
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash01(x0, y0, seed), _hash01(x0 + 1, y0, seed)
    c, d = _hash01(x0, y0 + 1, seed), _hash01(x0 + 1, y0 + 1, seed)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _rgb(colour) -> np.ndarray:
    return np.asarray(colour, np.float64).reshape(1, 3)


def solid(colour) -> Material:
    c = _rgb(colour)
    return lambda u, v, n: np.repeat(c, len(u), axis=0)


def stripes(a, b, period: float, axis: str = "v", duty: float = 0.5) -> Material:
    """Alternating bands of colours a and b along u or v (period in world units)."""
    ca, cb = _rgb(a), _rgb(b)

    def material(u, v, n):
        w = u if axis == "u" else v
        return np.where((np.mod(w / period, 1.0) < duty)[:, None], ca, cb)
    return material


def checker(a, b, size: float) -> Material:
    ca, cb = _rgb(a), _rgb(b)
    return lambda u, v, n: np.where((np.mod(np.floor(u / size) + np.floor(v / size), 2) == 0)[:, None], ca, cb)


def tiles(palette, size: float | tuple[float, float], seed: int, grout=None, grout_width: float = 0.0) -> Material:
    """Cells of size (su, sv) each coloured by a hashed pick from `palette`; optional grout lines."""
    pal = np.asarray(palette, np.float64)
    su, sv = (size, size) if np.isscalar(size) else size
    cg = None if grout is None else _rgb(grout)

    def material(u, v, n):
        iu, iv = np.floor(u / su), np.floor(v / sv)
        out = pal[np.minimum((_hash01(iu, iv, seed) * len(pal)).astype(int), len(pal) - 1)]
        if cg is not None:
            fu, fv = u / su - iu, v / sv - iv
            line = (np.minimum(fu, 1 - fu) * su < grout_width) | (np.minimum(fv, 1 - fv) * sv < grout_width)
            out = np.where(line[:, None], cg, out)
        return out
    return material


def windows(wall, glass, spacing: tuple[float, float], size: tuple[float, float], offset: tuple[float, float] = (0, 0)) -> Material:
    """A facade: rectangles of `glass` (size in world units) on a grid `spacing` over `wall`."""
    cw, cg = _rgb(wall), _rgb(glass)

    def material(u, v, n):
        fu = np.mod(u - offset[0], spacing[0]) / spacing[0]
        fv = np.mod(v - offset[1], spacing[1]) / spacing[1]
        inside = (np.abs(fu - 0.5) * spacing[0] < size[0] / 2) & (np.abs(fv - 0.5) * spacing[1] < size[1] / 2)
        inside &= v > offset[1] + 0.3  # no windows at street level below the first row
        return np.where(inside[:, None], cg, cw)
    return material


def by_face(top: Material, side: Material) -> Material:
    """Top-facing surfaces (normal y > 0.5) get `top`, all others `side`."""
    def material(u, v, n):
        up = n[:, 1] > 0.5
        return np.where(up[:, None], top(u, v, n), side(u, v, n))
    return material


def where(predicate: Callable[[np.ndarray, np.ndarray], np.ndarray], a: Material, b: Material) -> Material:
    """`a` where predicate(u, v) holds, else `b`."""
    return lambda u, v, n: np.where(predicate(u, v)[:, None], a(u, v, n), b(u, v, n))


def _two_octave_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Value noise at `scale` and scale / 3.7 (seeds seed, seed + 1), weighted 0.65 / 0.35: values in [0, 1]."""
    return 0.65 * _value_noise(u, v, scale, seed) + 0.35 * _value_noise(u, v, scale / 3.7, seed + 1)


def noisy(base: Material, amount: float, scale: float, seed: int) -> Material:
    """Multiply `base` by 1 + amount * (value noise - 0.5) (two octaves): albedo that is not piecewise flat."""
    def material(u, v, n):
        return base(u, v, n) * (1.0 + amount * (_two_octave_noise(u, v, scale, seed) - 0.5))[:, None]
    return material


# ============================================================================================ geometry
# Ray batches are component tuples: origin (ox, oy, oz), direction (dx, dy, dz) and inverse direction, each a
# float or an (n,) array (numpy reductions over a length-3 axis are slow; per-component arithmetic is not).
def _split(a: np.ndarray) -> tuple:
    a = np.asarray(a, np.float64)
    return (float(a[0]), float(a[1]), float(a[2])) if a.ndim == 1 else tuple(np.ascontiguousarray(a[:, k]) for k in range(3))


def _inverse(d: tuple) -> tuple:
    return tuple(1.0 / np.where(np.abs(c) < 1e-12, np.copysign(1e-12, c), c) for c in d)


class Ground:
    """The infinite plane y = 0 (normal +y); texture coordinates (u, v) = (x, z). Never casts shadows."""

    dynamic = False
    casts_shadow = False

    def __init__(self, material: Material):
        self.material = material

    def distance(self, o: tuple, d: tuple, inv: tuple) -> np.ndarray:
        t = -o[1] * inv[1]
        return np.where((d[1] < -1e-12) & (o[1] > 0) & (t > EPS), t, np.inf)

    def normal(self, points: np.ndarray) -> np.ndarray:
        return np.tile([0.0, 1.0, 0.0], (len(points), 1))

    def uv(self, points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return points[:, 0], points[:, 2]


class Box:
    """Axis-aligned box [lo, hi]; planar texture coordinates per face (walls: u horizontal, v = height)."""

    def __init__(self, lo, hi, material: Material, dynamic: bool = False, casts_shadow: bool = True):
        self.lo, self.hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        self.material, self.dynamic, self.casts_shadow = material, dynamic, casts_shadow

    def _slabs(self, o: tuple, d: tuple, inv: tuple):
        near, far = -np.inf, np.inf
        for k in range(3):
            t1, t2 = (self.lo[k] - o[k]) * inv[k], (self.hi[k] - o[k]) * inv[k]
            near, far = np.maximum(near, np.minimum(t1, t2)), np.minimum(far, np.maximum(t1, t2))
        return near, far

    def distance(self, o: tuple, d: tuple, inv: tuple) -> np.ndarray:
        near, far = self._slabs(o, d, inv)
        return np.where((far >= near) & (near > EPS), near, np.inf)

    def blocks(self, o: tuple, d: tuple, inv: tuple, limit) -> np.ndarray:
        near, far = self._slabs(o, d, inv)
        return (far >= near) & (near > EPS) & (near < limit)

    def normal(self, points: np.ndarray) -> np.ndarray:
        gaps = np.concatenate([np.abs(points - self.lo), np.abs(points - self.hi)], axis=1)  # (n, 6)
        face = gaps.argmin(axis=1)
        normals = np.zeros_like(points)
        normals[np.arange(len(points)), face % 3] = np.where(face < 3, -1.0, 1.0)
        return normals

    def uv(self, points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axis = np.abs(normals).argmax(axis=1)
        u = np.where(axis == 0, points[:, 2], points[:, 0])
        v = np.where(axis == 1, points[:, 2], points[:, 1])
        return u, v


class Sphere:
    """Sphere; texture coordinates are arc lengths (longitude * r, latitude * r)."""

    def __init__(self, centre, radius: float, material: Material, dynamic: bool = False, casts_shadow: bool = True):
        self.centre, self.radius = np.asarray(centre, np.float64), float(radius)
        self.material, self.dynamic, self.casts_shadow = material, dynamic, casts_shadow

    def _near(self, o: tuple, d: tuple):
        ox, oy, oz = o[0] - self.centre[0], o[1] - self.centre[1], o[2] - self.centre[2]
        b = ox * d[0] + oy * d[1] + oz * d[2]
        disc = b * b - (ox * ox + oy * oy + oz * oz - self.radius ** 2)
        return -b - np.sqrt(np.maximum(disc, 0.0)), disc

    def distance(self, o: tuple, d: tuple, inv: tuple) -> np.ndarray:
        t, disc = self._near(o, d)
        return np.where((disc > 0) & (t > EPS), t, np.inf)

    def blocks(self, o: tuple, d: tuple, inv: tuple, limit) -> np.ndarray:
        t, disc = self._near(o, d)
        return (disc > 0) & (t > EPS) & (t < limit)

    def normal(self, points: np.ndarray) -> np.ndarray:
        n = points - self.centre
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def uv(self, points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.arctan2(normals[:, 0], normals[:, 2]) * self.radius,
                np.arcsin(np.clip(normals[:, 1], -1, 1)) * self.radius)


class Relief:
    """A sphere or box whose shading normals carry relief: the prim's normal n tilted by `amount` times a smooth
    random vector field (two-octave value noise at `scale` in the prim's texture coordinates, one draw per
    component, centred, projected onto the tangent plane), renormalised. Ray hits, texture coordinates and
    shadows are the prim's own; only shading sees the relief (bump mapping)."""

    def __init__(self, prim, amount: float, scale: float, seed: int):
        self.prim, self.amount, self.scale, self.seed = prim, float(amount), float(scale), int(seed)
        self.material, self.dynamic, self.casts_shadow = prim.material, prim.dynamic, prim.casts_shadow

    def distance(self, o: tuple, d: tuple, inv: tuple) -> np.ndarray:
        return self.prim.distance(o, d, inv)

    def blocks(self, o: tuple, d: tuple, inv: tuple, limit) -> np.ndarray:
        return self.prim.blocks(o, d, inv, limit)

    def normal(self, points: np.ndarray) -> np.ndarray:
        n = self.prim.normal(points)
        u, v = self.prim.uv(points, n)
        tilt = np.stack([_two_octave_noise(u, v, self.scale, self.seed + 2 * k) - 0.5 for k in range(3)], axis=1)
        tilt -= (tilt * n).sum(axis=1, keepdims=True) * n
        bumped = n + self.amount * tilt
        return bumped / np.linalg.norm(bumped, axis=1, keepdims=True)

    def uv(self, points: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.prim.uv(points, self.prim.normal(points))


@dataclass
class Lighting:
    """Illumination of one frame. `sun_dir` points from the scene towards the sun."""

    sun_dir: np.ndarray  # (3,) unit
    sun: float  # directional intensity
    ambient: float  # hemispherical ambient intensity (for an upward normal)
    light_rgb: np.ndarray  # (3,) linear colour, max channel 1
    point_pos: Optional[np.ndarray] = None  # (3,) point light position (indoor)
    point: float = 0.0  # point light intensity (0 = off)


@dataclass
class Scene:
    """A scene recipe: camera, static geometry, moving geometry and lighting as functions of progress s."""

    description: str
    camera_height: float
    pitch: float  # radians, camera tilted down
    focal: float  # focal length as a fraction of the image width
    static: list
    lighting: Callable[[float], Lighting]
    moving: Callable[[float], list] = lambda s: []
    sky: Optional[Callable[[np.ndarray, float, Lighting], np.ndarray]] = None  # (rays, s, light) -> (n,3)
    camera_x: float = 0.0
    camera_z: float = 0.0


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _sun_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Azimuth 0 = towards +z (in front of the camera), 90 = +x (right); elevation above the horizon."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])


def _normalise_light(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.float64)
    return rgb / rgb.max()


def _lerp(a, b, w):
    return np.asarray(a, np.float64) * (1 - w) + np.asarray(b, np.float64) * w


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _pitch_for_horizon(horizon: float, focal: float, width: int, height: int) -> float:
    """Downward pitch that puts the horizon at fraction `horizon` of the image height from the top."""
    return float(np.arctan((0.5 - horizon) * height / (focal * width)))


def _gradient_sky(zenith: Callable[[float], np.ndarray], horizon: Callable[[float], np.ndarray],
                  glow: Optional[Callable[[float], np.ndarray]] = None, glow_width: float = 0.03):
    """Sky radiance: horizon colour blended to zenith colour with ray elevation, plus a glow around the sun."""
    def sky(rays: np.ndarray, s: float, light: Lighting) -> np.ndarray:
        w = np.clip(rays[:, 1], 0.0, 1.0)[:, None] ** 0.6
        out = _lerp(horizon(s), zenith(s), w)
        if glow is not None:
            closeness = np.exp(((rays @ light.sun_dir) - 1.0) / glow_width)
            out = out + closeness[:, None] * np.asarray(glow(s))
        return out
    return sky


# ============================================================================================ palette
RED, BRICK, ORANGE = (0.55, 0.07, 0.05), (0.42, 0.14, 0.08), (0.75, 0.32, 0.05)
YELLOW, CREAM, SAND = (0.75, 0.6, 0.12), (0.72, 0.66, 0.5), (0.55, 0.45, 0.3)
GREEN, OLIVE, TEAL = (0.1, 0.38, 0.08), (0.3, 0.33, 0.1), (0.05, 0.33, 0.35)
BLUE, NAVY, PURPLE = (0.08, 0.16, 0.55), (0.04, 0.05, 0.2), (0.32, 0.08, 0.42)
BROWN, GREY, SLATE = (0.3, 0.15, 0.07), (0.33, 0.33, 0.32), (0.18, 0.2, 0.25)
WHITE, DARK, PINK = (0.93, 0.93, 0.91), (0.05, 0.05, 0.06), (0.7, 0.3, 0.4)


# ============================================================================================ scenes
def _scene_sun(rng: np.random.Generator, width: int, height: int) -> Scene:
    seed = int(rng.integers(2**31))
    focal = 0.9
    ground = Ground(noisy(tiles([SAND, (0.45, 0.3, 0.22), (0.48, 0.48, 0.44), (0.35, 0.28, 0.2), (0.25, 0.3, 0.35)],
                                0.6, seed, grout=(0.2, 0.19, 0.18), grout_width=0.03), 0.35, 0.9, seed + 1))
    jitter = rng.uniform(-0.15, 0.15, (6, 2))
    static = [
        ground,
        Sphere((-0.9 + jitter[0, 0], 0.6, 5.0 + jitter[0, 1]), 0.6, solid(WHITE)),
        Box((0.6 + jitter[1, 0], 0, 6 + jitter[1, 1]), (1.8 + jitter[1, 0], 1.4, 7.2 + jitter[1, 1]),
            by_face(solid(WHITE), stripes(BRICK, CREAM, 0.25, "v", 0.7))),
        Box((-2.6 + jitter[2, 0], 0, 8 + jitter[2, 1]), (-2.2 + jitter[2, 0], 3.2, 8.4 + jitter[2, 1]), stripes(SLATE, BLUE, 0.4, "v")),
        Box((2.2 + jitter[3, 0], 0, 4.4 + jitter[3, 1]), (2.9 + jitter[3, 0], 0.7, 5.1 + jitter[3, 1]), checker(PURPLE, YELLOW, 0.175)),
        Box((-1.8 + jitter[4, 0], 0, 9.5), (0.2 + jitter[4, 0], 0.9, 10.3), noisy(solid(TEAL), 0.8, 0.3, seed + 2)),
        Box((-9, 0, 12), (9, 1.6, 12.5), stripes(GREEN, CREAM, 0.6, "u", 0.6)),
        Sphere((3.4 + jitter[5, 0], 0.35, 8.5 + jitter[5, 1]), 0.35, stripes(RED, YELLOW, 0.15, "v")),
    ]

    def lighting(s: float) -> Lighting:
        elevation = 12 + 48 * np.sin(np.pi * min(s / 0.55, 1.0) / 2) - 45 * max(0.0, s - 0.55) / 0.45
        sin_el = np.sin(np.radians(elevation))
        warm = 1 - sin_el
        return Lighting(sun_dir=_sun_direction(-110 + 220 * s, elevation), sun=1.5 * sin_el ** 0.6,
                        ambient=0.1 + 0.15 * sin_el, light_rgb=_normalise_light((1.0, 1 - 0.2 * warm, 1 - 0.45 * warm)))

    sky = _gradient_sky(zenith=lambda s: _lerp((0.3, 0.32, 0.55), (0.06, 0.2, 0.7), np.sin(np.pi * s)),
                        horizon=lambda s: _lerp((0.85, 0.6, 0.5), (0.5, 0.65, 0.95), np.sin(np.pi * s)),
                        glow=lambda s: (1.5, 1.4, 1.2), glow_width=0.004)
    return Scene("sunny courtyard, the sun arcs east to west: moving cast shadows, sky, clipped white surfaces",
                 camera_height=1.7, pitch=_pitch_for_horizon(0.3, focal, width, height), focal=focal,
                 static=static, lighting=lighting, sky=sky)


def _scene_sunset(rng: np.random.Generator, width: int, height: int) -> Scene:
    seed = int(rng.integers(2**31))
    focal = 0.85
    grass = noisy(tiles([GREEN, OLIVE, (0.15, 0.3, 0.06), (0.2, 0.42, 0.12)], 0.35, seed), 0.6, 0.5, seed + 1)
    path = noisy(checker(SAND, (0.4, 0.36, 0.3), 0.4), 0.3, 0.7, seed + 2)
    ground = Ground(where(lambda u, v: np.abs(u - 0.15 * v) < 0.8, path, grass))
    houses, x = [], -8.0
    colours = [CREAM, BRICK, (0.5, 0.4, 0.25), PINK, (0.4, 0.45, 0.5), YELLOW]
    for i in range(7):
        w, h = rng.uniform(1.6, 2.6), rng.uniform(1.6, 3.2)
        wall = colours[(i + int(rng.integers(6))) % len(colours)]
        houses.append(Box((x, 0, 9 + rng.uniform(0, 1)), (x + w, h, 12),
                          windows(wall, NAVY, (0.8, 0.9), (0.35, 0.45), (x, 0.0))))
        x += w + rng.uniform(0.1, 0.5)
    static = [ground, *houses,
              Box((-3.5, 0, 6.5), (3.5, 0.7, 6.6), stripes(WHITE, BROWN, 0.3, "u", 0.35)),  # fence
              Sphere((-1.5, 0.45, 4.6), 0.45, stripes(ORANGE, WHITE, 0.2, "v")),
              Sphere((1.6, 0.35, 4.0), 0.35, solid(BLUE)),
              Box((0.4, 0, 5.2), (1.4, 0.5, 5.7), by_face(solid(RED), stripes(RED, DARK, 0.2, "u")))]

    def lighting(s: float) -> Lighting:
        elevation = 25 - 24 * s
        w = _smoothstep(s * 1.1)
        sin_el = np.sin(np.radians(elevation))
        return Lighting(sun_dir=_sun_direction(70 + 12 * s, elevation), sun=1.6 * sin_el ** 0.45,
                        ambient=0.26 - 0.2 * w,
                        light_rgb=_normalise_light(_lerp((1.0, 0.93, 0.82), (1.0, 0.42, 0.15), w)))

    sky = _gradient_sky(zenith=lambda s: _lerp((0.12, 0.25, 0.65), (0.12, 0.06, 0.22), _smoothstep(s)),
                        horizon=lambda s: _lerp((0.7, 0.7, 0.75), (0.95, 0.35, 0.12), _smoothstep(s)),
                        glow=lambda s: _lerp((1.2, 1.1, 0.9), (1.5, 0.6, 0.2), s), glow_width=0.01)
    return Scene("garden at sunset: the low sun sinks, light turns white -> deep orange and dims; long shadows, sky",
                 camera_height=1.6, pitch=_pitch_for_horizon(0.3, focal, width, height), focal=focal,
                 static=static, lighting=lighting, sky=sky)


def _scene_indoor(rng: np.random.Generator, width: int, height: int) -> Scene:
    seed = int(rng.integers(2**31))
    wood = [(0.45, 0.25, 0.1), (0.38, 0.2, 0.08), (0.5, 0.3, 0.14), (0.32, 0.17, 0.07)]
    floor = noisy(tiles(wood, (1.7, 0.22), seed, grout=(0.15, 0.08, 0.04), grout_width=0.01), 0.3, 0.6, seed + 1)
    paper = stripes((0.7, 0.62, 0.5), (0.62, 0.55, 0.42), 0.18, "u", 0.5)
    white = noisy(solid((0.88, 0.87, 0.84)), 0.08, 0.5, seed + 2)
    wx0, wx1, wy0, wy1, wz0, wz1 = -3.2, -3.0, 1.0, 2.4, 2.0, 4.5  # window hole in the left wall
    books = noisy(tiles([RED, BLUE, GREEN, YELLOW, PURPLE, CREAM, TEAL], (0.09, 0.4), seed + 3,
                        grout=DARK, grout_width=0.02), 0.2, 0.3, seed + 4)
    static = [
        Ground(floor),
        Box((wx0, 0, -1.2), (wx1, wy0, 8.2), paper), Box((wx0, wy1, -1.2), (wx1, 3.0, 8.2), paper),
        Box((wx0, wy0, -1.2), (wx1, wy1, wz0), paper), Box((wx0, wy0, wz1), (wx1, wy1, 8.2), paper),
        Box((3.0, 0, -1.2), (3.2, 3.0, 8.2), white),  # right wall (white: clips beside the lamp)
        Box((-3.2, 0, 8.0), (3.2, 3.0, 8.2), paper),  # back wall
        Box((-3.2, 3.0, -1.2), (3.2, 3.2, 8.2), solid((0.8, 0.8, 0.78))),  # ceiling
        Box((-3.2, 0, -1.2), (3.2, 3.0, -1.0), paper),  # wall behind the camera
        Box((-1.2, 1.2, 7.95), (0.4, 2.2, 8.0), checker(TEAL, ORANGE, 0.2)),  # painting
        Box((1.9, 0, 4.5), (2.95, 2.0, 6.2), by_face(solid(BROWN), books)),  # bookshelf
        Box((-1.6, 0, 4.0), (-0.2, 0.75, 5.2), by_face(checker(RED, WHITE, 0.14), solid(BROWN))),  # table
        Sphere((0.8 + rng.uniform(-0.2, 0.2), 0.3, 3.4), 0.3, stripes(BLUE, YELLOW, 0.12, "u")),
    ]
    lamp = np.array([2.4, 2.7, 7.2])

    def lighting(s: float) -> Lighting:
        on = 1 / 3 <= s < 2 / 3
        return Lighting(sun_dir=_sun_direction(-70 - 60 * s, 38 - 14 * s), sun=1.3 - 0.3 * s,
                        ambient=0.1 + 0.05 * np.sin(np.pi * s), point_pos=lamp, point=3.0 if on else 0.0,
                        light_rgb=_normalise_light((1.0, 0.9, 0.78) if on else (0.96, 0.97, 1.0)))

    return Scene("room: sunlight patch moves over the floor through a side window, a lamp switches on at s=1/3 and "
                 "off at s=2/3 (the wall beside it clips); no sky",
                 camera_height=1.5, pitch=np.radians(14), focal=0.75, static=static, lighting=lighting,
                 sky=_gradient_sky(lambda s: (0.3, 0.45, 0.8), lambda s: (0.7, 0.75, 0.85)))


def _scene_street(rng: np.random.Generator, width: int, height: int) -> Scene:
    seed = int(rng.integers(2**31))
    focal = 0.8
    asphalt = noisy(solid((0.14, 0.14, 0.15)), 0.6, 0.25, seed)
    lane = lambda u, v: (np.abs(v - 5.5) < 0.08) & (np.mod(u, 2.0) < 1.0)
    pavement = noisy(checker((0.5, 0.48, 0.45), (0.42, 0.4, 0.38), 0.5), 0.25, 0.5, seed + 1)
    ground = Ground(where(lambda u, v: (v > 3.5) & (v < 7.5), where(lane, solid(WHITE), asphalt), pavement))
    facades = [CREAM, BRICK, (0.55, 0.45, 0.3), (0.35, 0.4, 0.45), PINK, YELLOW, (0.45, 0.5, 0.4)]
    buildings, x = [], -10.0
    while x < 10:
        w, h = rng.uniform(2.5, 4.0), rng.uniform(2.6, 5.0)
        wall = facades[int(rng.integers(len(facades)))]
        buildings.append(Box((x, 0, 10.0), (x + w, h, 14), windows(wall, NAVY, (1.0, 1.2), (0.5, 0.7), (x, 0.2))))
        x += w + 0.15
    static = [ground, *buildings,
              Box((1.0, 0, 8.6), (1.12, 3.2, 8.72), solid(SLATE)),  # lamp post
              Box((0.6, 3.1, 8.55), (1.12, 3.2, 8.77), solid(SLATE)),
              Box((-6.5, 0, 8.9), (-5.2, 0.9, 9.6), stripes(GREEN, DARK, 0.12, "u", 0.8)),  # bench / planter
              Sphere((-3.0, 0.5, 9.4), 0.5, noisy(solid(GREEN), 0.8, 0.15, seed + 2))]  # bush

    body, cabin = by_face(solid(WHITE), stripes(RED, (0.4, 0.04, 0.03), 0.35, "v", 0.8)), by_face(solid(WHITE), solid(NAVY))
    person_top = stripes(TEAL, YELLOW, 0.12, "v")

    def moving(s: float) -> list:
        xc = -5.5 + 11.0 * s  # the car drives left to right along the near lane
        xp = 4.0 - 7.0 * s  # a person walks right to left on the far sidewalk
        return [Box((xc - 1.2, 0.25, 4.4), (xc + 1.2, 0.95, 5.5), body, dynamic=True),
                Box((xc - 0.7, 0.95, 4.5), (xc + 0.5, 1.4, 5.4), cabin, dynamic=True),
                Sphere((xp, 0.45, 8.3), 0.22, solid(NAVY), dynamic=True),
                Sphere((xp, 0.95, 8.3), 0.3, person_top, dynamic=True),
                Sphere((xp, 1.45, 8.3), 0.16, solid((0.6, 0.4, 0.3)), dynamic=True)]

    cloud_times, cloud_depths = np.sort(rng.uniform(0.15, 0.85, 2)), rng.uniform(0.5, 0.7, 2)

    def cloud(s: float) -> float:
        return float(np.prod(1 - cloud_depths * np.exp(-0.5 * ((s - cloud_times) / 0.07) ** 2)))

    def lighting(s: float) -> Lighting:
        c = cloud(s)
        elevation = 50 - 22 * s
        return Lighting(sun_dir=_sun_direction(-150 + 50 * s, elevation), sun=1.55 * c, ambient=0.28 - 0.06 * c,
                        light_rgb=_normalise_light(_lerp((0.88, 0.93, 1.0), (1.0, 0.97, 0.92), c)))

    sky = _gradient_sky(zenith=lambda s: _lerp((0.5, 0.52, 0.55), (0.12, 0.28, 0.7), cloud(s)),
                        horizon=lambda s: _lerp((0.7, 0.7, 0.72), (0.55, 0.65, 0.85), cloud(s)))
    return Scene("street side view: a car drives and a person walks across (dynamic), clouds dim the sun, "
                 "facades with windows, sky, the car's white roof clips",
                 camera_height=2.2, pitch=_pitch_for_horizon(0.42, focal, width, height), focal=focal,
                 static=static, lighting=lighting, moving=moving, sky=sky)


def blotches(a, b, scale: float, cover: float, seed: int) -> Material:
    """Paint `b` over `a` where two-octave value noise exceeds 1 - cover: irregular patches with sharp edges."""
    a, b = _rgb(a), _rgb(b)

    def material(u, v, n):
        return np.where((_two_octave_noise(u, v, scale, seed) > 1 - cover)[:, None], b, a)
    return material


def _random_colour(rng: np.random.Generator) -> tuple:
    """A linear albedo colour: a random hue and saturation at a random level in [0.04, 0.9]."""
    rgb = rng.uniform(0.15, 1.0, 3) ** rng.uniform(0.5, 3.0)
    return tuple(rgb / rgb.max() * rng.uniform(0.04, 0.9))


TONAL_STREAM = 7  # _random_material's tonal-paint stream: default_rng([material seed, TONAL_STREAM])


def _tonal_colour(colour: tuple, rng: np.random.Generator) -> tuple:
    """`colour`'s hue at another lightness: its chromaticity blended toward neutral by w ~ U(0, 1) (w = 1: white or
    grey paint) at its level (max channel) times or divided by f ~ U(2, 5) (the way with room), kept in
    [0.04, 0.9]. The step from `colour` is mostly one of lightness, as white print on coloured card or a white
    patch on brown fur."""
    rgb = np.asarray(colour, np.float64)
    level = float(rgb.max())
    w, f, brighter = rng.uniform(), rng.uniform(2.0, 5.0), rng.uniform() < 0.5
    if (0.9 / level if brighter else level / 0.04) < f:  # no room that way: the other
        brighter = not brighter
    hue = (1.0 - w) * rgb / level + w  # max channel 1
    new_level = float(np.clip(level * f if brighter else level / f, 0.04, 0.9))
    return tuple(hue * new_level)


def _random_material(rng: np.random.Generator, tonal_paint: float = 0.0) -> Material:
    """One painted surface: solid, stripes, checker, tiles or paint blotches in random colours, often noisy.
    With probability `tonal_paint` the second and third colours are the first's hue at other lightnesses
    (`_tonal_colour`); that choice has its own random stream (from the material's seed), so `rng` draws the same
    numbers, and the scene the same geometry, whatever `tonal_paint` is."""
    a, b, c = _random_colour(rng), _random_colour(rng), _random_colour(rng)
    seed = int(rng.integers(2**31))
    if tonal_paint > 0:
        tonal_rng = np.random.default_rng([seed, TONAL_STREAM])
        if tonal_rng.uniform() < tonal_paint:
            b, c = _tonal_colour(a, tonal_rng), _tonal_colour(a, tonal_rng)
    kind = rng.integers(5)
    if kind == 0:
        base = solid(a)
    elif kind == 1:
        base = stripes(a, b, rng.uniform(0.06, 0.3), "u" if rng.random() < 0.5 else "v", rng.uniform(0.2, 0.8))
    elif kind == 2:
        base = checker(a, b, rng.uniform(0.05, 0.2))
    elif kind == 3:
        base = tiles([a, b, c], rng.uniform(0.05, 0.25), seed)
    else:
        base = blotches(a, b, rng.uniform(0.08, 0.4), rng.uniform(0.2, 0.5), seed)
    return noisy(base, rng.uniform(0.0, 0.4), rng.uniform(0.1, 0.5), seed + 2) if rng.random() < 0.6 else base


def _scene_objects(rng: np.random.Generator, width: int, height: int, relief: bool = False,
                   tonal_paint: float = 0.0) -> Scene:
    """The "objects" scene; `relief`: each object wrapped in `Relief` (draws made after the object's own);
    `tonal_paint`: `_random_material`'s."""
    focal = 1.0
    grey = rng.uniform(0.05, 0.3)
    ground = Ground(noisy(solid((grey, grey, grey * rng.uniform(0.85, 1.0))), 0.3, 0.4, int(rng.integers(2**31))))
    static = [ground]
    count = int(rng.integers(3, 6))
    for x in np.linspace(-1.0, 1.0, count) + rng.uniform(-0.1, 0.1, count):  # a row, left to right
        z, size = rng.uniform(2.4, 3.2), 2.1 / count
        if rng.random() < 0.5:
            r = size * rng.uniform(0.35, 0.5)
            static.append(Sphere((x, r, z), r, _random_material(rng, tonal_paint)))
        else:
            w, d = size * rng.uniform(0.5, 0.9, 2)
            static.append(Box((x - w / 2, 0, z - d / 2), (x + w / 2, rng.uniform(0.3, 0.9), z + d / 2),
                              _random_material(rng, tonal_paint)))
        if relief:
            static[-1] = Relief(static[-1], rng.uniform(0.4, 1.2), size * rng.uniform(0.05, 0.2), int(rng.integers(2**31)))
    azimuth0, sweep = rng.uniform(-120, -60), rng.uniform(120, 200)
    elevation0, tint = rng.uniform(20, 45), _normalise_light(rng.uniform(0.85, 1.0, 3))

    def lighting(s: float) -> Lighting:
        elevation = elevation0 + 35 * np.sin(np.pi * s)
        return Lighting(sun_dir=_sun_direction(azimuth0 + sweep * s, elevation), sun=1.4 - 0.7 * s, ambient=0.06,
                        light_rgb=tint)

    return Scene(("carved (surface relief) " if relief else "") +
                 "painted objects (spheres and boxes: stripes, checkers, tiles, paint blotches, plain) on a table "
                 "in the dark, one light circling them and dimming: moving attached and cast shadows; black sky",
                 camera_height=1.4, pitch=_pitch_for_horizon(-0.05, focal, width, height), focal=focal,
                 static=static, lighting=lighting, sky=lambda rays, s, light: np.full((len(rays), 3), 5e-4))


_BUILDERS = {"sun": _scene_sun, "sunset": _scene_sunset, "indoor": _scene_indoor, "street": _scene_street,
             "objects": _scene_objects,
             "carved": lambda rng, width, height, **paint: _scene_objects(rng, width, height, True, **paint)}
PAINTED_SCENES = ("objects", "carved")  # the scenes of randomly painted objects (`tonal_paint` applies to these)
_SCENE_SEEDS = {"sun": 11, "sunset": 23, "indoor": 37, "street": 41, "objects": 43, "carved": 47}  # distinct streams per scene


# ============================================================================================ renderer
def _camera_rays(scene: Scene, width: int, height: int, shift: float) -> np.ndarray:
    """(H*W, 3) unit ray directions; `shift` moves the principal point (pixels) so content moves left."""
    f = scene.focal * width
    u = (np.arange(width) + 0.5 - width / 2 + shift) / f
    v = -(np.arange(height) + 0.5 - height / 2) / f
    a, b = np.meshgrid(u, v)
    cp, sp = np.cos(scene.pitch), np.sin(scene.pitch)
    # right = (1,0,0), up = (0, cos p, sin p), forward = (0, -sin p, cos p)
    rays = np.stack([a, b * cp - sp, b * sp + cp], axis=-1).reshape(-1, 3)
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _occluded(prims: list, origins: np.ndarray, direction: np.ndarray, limit) -> np.ndarray:
    """(m,) bool: the segment from each origin along direction ((3,) or (m,3) unit) meets a prim before limit."""
    o, d = _split(origins), _split(direction)
    inv = _inverse(d)
    blocked = np.zeros(len(origins), bool)
    for prim in prims:
        if prim.casts_shadow:
            blocked |= prim.blocks(o, d, inv, limit)
    return blocked


@dataclass
class _Surface:
    """Primary-ray result for n rays: nearest distance, prim index (-1 = none), hit points, normals, albedo."""

    nearest: np.ndarray
    which: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray
    dynamic: np.ndarray


def _trace(prims: list, camera: np.ndarray, rays: np.ndarray, base: Optional[_Surface] = None, offset: int = 0) -> _Surface:
    """Nearest hit of each ray among `prims` (indices start at `offset`), on top of an earlier result `base`."""
    n = len(rays)
    o, d = _split(camera), _split(rays)
    inv = _inverse(d)
    nearest = np.full(n, np.inf) if base is None else base.nearest.copy()
    which = np.full(n, -1) if base is None else base.which.copy()
    for index, prim in enumerate(prims, start=offset):
        t = prim.distance(o, d, inv)
        closer = t < nearest
        nearest[closer], which[closer] = t[closer], index
    if base is None:
        surface = _Surface(nearest, which, np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n, bool))
    else:
        surface = _Surface(nearest, which, base.points.copy(), base.normals.copy(), base.albedo.copy(), base.dynamic.copy())
    for index, prim in enumerate(prims, start=offset):
        sel = which == index
        if not sel.any():
            continue
        p = camera + nearest[sel, None] * rays[sel]
        nrm = prim.normal(p)
        u, v = prim.uv(p, nrm)
        surface.albedo[sel] = np.clip(prim.material(u, v, nrm), *ALBEDO_RANGE)
        surface.points[sel], surface.normals[sel], surface.dynamic[sel] = p, nrm, prim.dynamic
    return surface


def _shade(scene: Scene, prims: list, light: Lighting, rays: np.ndarray, surface: _Surface, s: float):
    """Shading of one frame -> (reflectance (n,3), shading (n,), sky (n,))."""
    n = len(rays)
    hit = surface.which >= 0
    p, nrm = surface.points[hit], surface.normals[hit]
    origins = p + SHADOW_OFFSET * nrm
    s_hit = light.ambient * (0.6 + 0.4 * nrm[:, 1])
    facing = nrm @ light.sun_dir
    lit = (facing > 0) & (light.sun > 0)
    lit[lit] &= ~_occluded(prims, origins[lit], light.sun_dir, np.inf)
    s_hit = s_hit + np.where(lit, facing, 0.0) * light.sun
    if light.point > 0 and light.point_pos is not None:
        to_light = light.point_pos - p
        dist = np.linalg.norm(to_light, axis=1)
        to_light /= dist[:, None]
        cos = (nrm * to_light).sum(axis=1)
        ok = cos > 0
        ok[ok] &= ~_occluded(prims, origins[ok], to_light[ok], dist[ok])
        s_hit = s_hit + np.where(ok, cos, 0.0) * light.point / (dist ** 2 + 0.05)

    reflectance, shading = surface.albedo.copy(), np.zeros(n)
    shading[hit] = s_hit
    sky = ~hit
    if sky.any():
        radiance = np.maximum(scene.sky(rays[sky], s, light), 1e-4) if scene.sky is not None else np.full((sky.sum(), 3), 0.5)
        ratio = radiance / light.light_rgb
        level = ratio.max(axis=1)
        reflectance[sky], shading[sky] = ratio / level[:, None], level
    return reflectance, shading, sky


def build_scene(scene: str, *, width: int, height: int, seed: int = 0, variant: int = 0,
                tonal_paint: float = 0.0) -> Scene:
    """The recipe of a named scene (geometry, materials, lighting schedule) for a seed and variant (variant 0
    is the scene as it was before variants existed: its random stream is unchanged). `tonal_paint` in [0, 1]:
    the share of the painted objects (PAINTED_SCENES only; other scenes ignore it) whose paints differ mostly
    in lightness (`_random_material`)."""
    if not 0.0 <= tonal_paint <= 1.0:
        raise ValueError(f"synthetic tonal_paint must be in [0, 1], got {tonal_paint}")
    if scene not in _BUILDERS:
        raise ValueError(f"unknown synthetic scene {scene!r} (have: {', '.join(SCENES)})")
    if variant < 0:
        raise ValueError(f"synthetic scene variant must be >= 0, got {variant}")
    rng = np.random.default_rng([_SCENE_SEEDS[scene], int(seed) % 2**32, *([int(variant)] if variant else [])])
    return _BUILDERS[scene](rng, width, height, **({"tonal_paint": tonal_paint} if scene in PAINTED_SCENES else {}))


def render_scene(scene: str, *, width: int, height: int, fps: float, seconds: float, seed: int = 0,
                 camera_pan: float = 0.0, variant: int = 0, tonal_paint: float = 0.0) -> SyntheticSequence:
    """Render a named scene (and variant and tonal_paint, see build_scene) to frames + ground truth (see the
    module docstring)."""
    recipe = build_scene(scene, width=width, height=height, seed=seed, variant=variant, tonal_paint=tonal_paint)
    n_frames = max(1, int(round(fps * seconds)))
    refl = np.zeros((n_frames, height, width, 3), np.float32)
    shading = np.zeros((n_frames, height, width), np.float32)
    sky = np.zeros((n_frames, height, width), bool)
    dynamic = np.zeros((n_frames, height, width), bool)
    light_rgb = np.zeros((n_frames, 3), np.float32)
    camera = np.array([recipe.camera_x, recipe.camera_height, recipe.camera_z])
    static_cache: dict[float, tuple[np.ndarray, _Surface]] = {}  # shift -> static primary hits (pan 0: one entry)
    for t in range(n_frames):
        s = t / (n_frames - 1) if n_frames > 1 else 0.0
        light, moving = recipe.lighting(s), recipe.moving(s)
        shift = float(camera_pan * t)
        if shift not in static_cache:
            static_cache.clear()
            rays = _camera_rays(recipe, width, height, shift)
            static_cache[shift] = (rays, _trace(recipe.static, camera, rays))
        rays, surface = static_cache[shift]
        if moving:
            surface = _trace(moving, camera, rays, base=surface, offset=len(recipe.static))
        r, sh, sk = _shade(recipe, recipe.static + moving, light, rays, surface, s)
        refl[t], shading[t] = r.reshape(height, width, 3), sh.reshape(height, width)
        sky[t], dynamic[t] = sk.reshape(height, width), surface.dynamic.reshape(height, width)
        light_rgb[t] = light.light_rgb
    srgb, clipped = image_formation(refl, shading, light_rgb)
    return SyntheticSequence(scene=scene, srgb=srgb, reflectance=refl, shading=shading, light_rgb=light_rgb,
                             sky=sky, dynamic=dynamic, clipped=clipped, times=np.arange(n_frames) / float(fps),
                             fps=float(fps), seed=int(seed), camera_pan=float(camera_pan),
                             description=recipe.description, variant=int(variant))


def render_scene_from_params(scene: str, synthetic_params: SyntheticParams, camera_pan: float = 0.0,
                             variant: int = 0) -> SyntheticSequence:
    p = synthetic_params
    return render_scene(scene, width=p.width, height=p.height, fps=p.fps, seconds=p.seconds, seed=p.seed,
                        camera_pan=camera_pan, variant=variant, tonal_paint=p.tonal_paint)


# ============================================================================================ output
def encode_mp4(frames: np.ndarray, path: str | Path, *, fps: float, crf: int) -> None:
    """(T,H,W,3) uint8 sRGB -> H.264 mp4 (yuv444p, BT.601 limited range, tagged sRGB transfer), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.mp4")
    os.close(fd)
    try:
        stream = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
                  .filter("scale", out_color_matrix="bt601", out_range="tv")
                  .output(tmp, format="mp4", vcodec="libx264", pix_fmt="yuv444p", crf=int(crf), preset="medium",
                          colorspace="smpte170m", color_primaries="bt709", color_trc="iec61966-2-1",
                          color_range="tv", movflags="+faststart")
                  .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
                  .overwrite_output())
        try:
            stream.run(input=np.ascontiguousarray(frames, np.uint8).tobytes(), capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as err:
            raise RuntimeError(f"ffmpeg failed to encode {path.name}: {err.stderr.decode(errors='replace').strip()}") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def scene_summary(seq: SyntheticSequence, crf: Optional[int] = None) -> dict:
    """The scene.json record: settings, conventions and simple statistics of the ground truth."""
    return {
        "scene": seq.scene, "description": seq.description, "width": seq.width, "height": seq.height,
        "fps": seq.fps, "n_frames": seq.n_frames, "seconds": seq.n_frames / seq.fps, "seed": seq.seed,
        "variant": seq.variant, "camera_pan_px_per_frame": seq.camera_pan, "crf": crf,
        "conventions": {
            "image_formation": "linear = reflectance * shading[..., None] * light_rgb[t]; clipped = any(linear > 1); "
                               "srgb = round(255 * linear_to_srgb(clip(linear, 0, 1)))",
            "units": "reflectance, shading, light_rgb: linear; times: seconds",
            "camera_pan": "the view moves right by camera_pan px per frame: static content moves left",
            "sky": "reflectance = sky / (light_rgb * shading), shading = max_c(sky / light_rgb)",
            "video": "libx264 yuv444p, BT.601 limited range",
        },
        "stats": {
            "sky_fraction": float(seq.sky.mean()), "dynamic_fraction": float(seq.dynamic.mean()),
            "clipped_fraction": float(seq.clipped.mean()),
            "shading_min": float(seq.shading.min()), "shading_max": float(seq.shading.max()),
            "mean_srgb_per_frame": [round(float(m), 2) for m in seq.srgb.reshape(seq.n_frames, -1).mean(axis=1)],
        },
    }


def write_scene(seq: SyntheticSequence, out_dir: str | Path, *, crf: int, fps: Optional[float] = None) -> dict[str, Path]:
    """Write video.mp4, groundtruth.npz and scene.json into out_dir (each atomically); return their paths.

    `fps` defaults to the sequence's own frame rate.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"video": out_dir / "video.mp4", "groundtruth": out_dir / "groundtruth.npz", "scene": out_dir / "scene.json"}
    encode_mp4(seq.srgb, paths["video"], fps=seq.fps if fps is None else fps, crf=crf)
    from pipeline.shard_format import npz_bytes  # fixed zip timestamps: equal scenes give equal bytes

    atomic_write_bytes(paths["groundtruth"], npz_bytes(seq.groundtruth()))
    atomic_write_json(paths["scene"], scene_summary(seq, crf))
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Render a synthetic time-lapse scene to video.mp4 + groundtruth.npz.")
    parser.add_argument("scene", choices=SCENES)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--params", default="params.yaml", help="params file (its `synthetic` section is used)")
    parser.add_argument("--camera-pan", type=float, default=0.0, help="pixels per frame (content moves left)")
    args = parser.parse_args(argv)
    params = load_params(args.params).synthetic
    seq = render_scene_from_params(args.scene, params, camera_pan=args.camera_pan)
    paths = write_scene(seq, args.out, crf=params.crf)
    print(f"{args.scene}: {seq.n_frames} frames {seq.width}x{seq.height} @ {seq.fps:g} fps -> {paths['video'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
