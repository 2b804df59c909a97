"""A synthetic scene for mask quality under moving cast shadows and a coloured sky fill light, with ground truth.

Real day-long time-lapses taught that hard cast shadows sweeping over textured ground are the illumination
changes the method learns from, and that a mask backend must not take them for moving objects. The renderer's
pipeline scenes (`pipeline.synthetic`) light each frame with ONE colour (grey shading x light_rgb[t]); here
the sun and the sky have different colours, so a pixel entering a shadow moves along the line between its
sun-lit and its sky-lit colour, as outdoors:

    linear = albedo * (sun_term * sun_rgb[t] + sky_term * sky_rgb[t]),
    sun_term = sun[t] * max(0, n.l) * visible,   sky_term = ambient[t] * (0.6 + 0.4 n_y)

Consumes: size, frame count, seed. Produces a `ShadowSweep` (T frames of H x W): `srgb` (T,H,W,3) uint8
(round(255 * linear_to_srgb(clip(linear, 0, 1)))); `dynamic` (T,H,W) bool (moving people and a cart);
`sky` (T,H,W) bool; `shadow` (T,H,W) bool: static, non-sky pixels facing the sun but in the cast shadow of
STATIC geometry in frame t; `moving_shadow` (T,H,W) bool: static pixels whose cast-shadow state in frame t
differs from their state in most frames (entered or left a shadow: where a temporal method sees a change); `object_shadow` (T,H,W) bool: pixels
shadowed only by the moving objects (reported separately: attached to the objects); `sun_rgb`, `sky_rgb` (T,3)
linear colours (max channel 1).

The scene, seen from a high viewpoint (camera 7 m up, looking down): textured paving (hashed tiles with value
noise), four blocks and a pillar casting long shadows; the sun's azimuth sweeps 200 degrees at 20-40 degrees
elevation so the shadows sweep over the ground; the sun warms from (1, .93, .82) to (1, .78, .55) while the
blue sky fill (.45, .6, 1) stays; three walkers and a cart cross the square (they cast shadows too). Used by
`bench/masks.py` ("shadows" lines) and tests/pipeline/test_shadow_masks.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.color import linear_to_srgb
from pipeline.synthetic import (
    BRICK, CREAM, SAND, SLATE, TEAL, Box, Ground, Sphere, _camera_rays, _gradient_sky, _lerp, _occluded,
    _pitch_for_horizon, _sun_direction, _trace, Lighting, Scene, checker, noisy, solid, stripes, tiles,
)

SUN_RGB = ((1.0, 0.93, 0.82), (1.0, 0.78, 0.55))  # linear, start -> end of the sequence
SKY_FILL_RGB = (0.45, 0.6, 1.0)  # linear colour of the sky's fill light
SUN, AMBIENT = 1.5, 0.42  # intensities: a hard shadow is ~4x darker than sunlit ground


@dataclass
class ShadowSweep:
    srgb: np.ndarray  # (T,H,W,3) uint8
    dynamic: np.ndarray  # (T,H,W) bool
    sky: np.ndarray  # (T,H,W) bool
    shadow: np.ndarray  # (T,H,W) bool: in the cast shadow of static geometry
    moving_shadow: np.ndarray  # (T,H,W) bool: cast-shadow state differs from the pixel's usual state
    object_shadow: np.ndarray  # (T,H,W) bool: shadowed by moving objects only
    sun_rgb: np.ndarray  # (T,3)
    sky_rgb: np.ndarray  # (T,3)


def _scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    seed = int(rng.integers(2**31))
    focal = 0.8
    paving = noisy(tiles([SAND, (0.5, 0.36, 0.28), (0.46, 0.46, 0.42), (0.33, 0.3, 0.24), (0.28, 0.33, 0.38)],
                         0.5, seed, grout=(0.22, 0.2, 0.18), grout_width=0.025), 0.4, 0.8, seed + 1)
    static = [
        Ground(paving),
        Box((-7.0, 0, 16.0), (-3.5, 4.0, 19.0), stripes(BRICK, CREAM, 0.5, "v", 0.7)),
        Box((2.5, 0, 15.0), (6.0, 5.0, 18.0), checker(SLATE, CREAM, 0.6)),
        Box((-1.0, 0, 11.0), (0.2, 3.2, 12.2), noisy(solid(TEAL), 0.6, 0.4, seed + 2)),
        Box((4.5, 0, 9.0), (5.1, 4.5, 9.6), solid(SLATE)),  # pillar: a long thin shadow
        Box((-6.0, 0, 9.5), (-4.0, 1.5, 10.5), stripes((0.6, 0.2, 0.1), CREAM, 0.3, "u")),
    ]
    offsets = rng.uniform(-0.5, 0.5, 4)

    def moving(s: float) -> list:
        out = []
        for k, (x0, x1, z) in enumerate(((-6.0, 5.0, 8.0), (6.0, -5.0, 12.5), (-3.0, 4.0, 14.0))):
            x = x0 + (x1 - x0) * s + offsets[k]
            out += [Box((x - 0.22, 0, z - 0.15), (x + 0.22, 1.3, z + 0.15), stripes((0.1, 0.2, 0.6), (0.7, 0.6, 0.1), 0.3, "v"), dynamic=True),
                    Sphere((x, 1.5, z), 0.2, solid((0.55, 0.38, 0.3)), dynamic=True)]
        xc = 4.0 - 9.0 * s + offsets[3]
        out.append(Box((xc - 1.0, 0, 10.0), (xc + 1.0, 1.0, 11.0), noisy(solid((0.7, 0.1, 0.1)), 0.3, 0.3, 7), dynamic=True))
        return out

    def lighting(s: float) -> Lighting:
        elevation = 20 + 20 * np.sin(np.pi * s)
        sun_rgb = _lerp(*SUN_RGB, s)
        return Lighting(sun_dir=_sun_direction(-100 + 200 * s, elevation), sun=SUN, ambient=AMBIENT,
                        light_rgb=np.asarray(sun_rgb) / max(sun_rgb))

    sky = _gradient_sky(zenith=lambda s: (0.2, 0.35, 0.85), horizon=lambda s: _lerp((0.75, 0.8, 0.95), (0.9, 0.75, 0.6), s))
    return Scene("square from above: sweeping cast shadows on textured paving, blue sky fill, walkers and a cart",
                 camera_height=7.0, pitch=_pitch_for_horizon(0.12, focal, width, height), focal=focal,
                 static=static, lighting=lighting, moving=moving, sky=sky)


def render_shadow_sweep(*, width: int = 192, height: int = 128, n_frames: int = 16, seed: int = 0) -> ShadowSweep:
    """Render the scene (see the module docstring) with its ground truth."""
    rng = np.random.default_rng([97, int(seed) % 2**32])
    recipe = _scene(rng, width, height)
    camera = np.array([recipe.camera_x, recipe.camera_height, recipe.camera_z])
    rays = _camera_rays(recipe, width, height, 0.0)
    static_hits = _trace(recipe.static, camera, rays)
    shape = (n_frames, height, width)
    srgb = np.zeros((*shape, 3), np.uint8)
    dynamic, sky, shadow, object_shadow = (np.zeros(shape, bool) for _ in range(4))
    sun_rgb, sky_rgb = np.zeros((n_frames, 3)), np.tile(np.asarray(SKY_FILL_RGB), (n_frames, 1))
    for t in range(n_frames):
        s = t / max(1, n_frames - 1)
        light, moving = recipe.lighting(s), recipe.moving(s)
        surface = _trace(moving, camera, rays, base=static_hits, offset=len(recipe.static))
        hit = surface.which >= 0
        p, nrm = surface.points[hit], surface.normals[hit]
        origins = p + 1e-3 * nrm
        facing = np.maximum(nrm @ light.sun_dir, 0.0)
        faces = facing > 0
        by_static, by_moving = np.zeros(len(p), bool), np.zeros(len(p), bool)
        by_static[faces] = _occluded(recipe.static, origins[faces], light.sun_dir, np.inf)
        by_moving[faces] = _occluded(moving, origins[faces], light.sun_dir, np.inf)
        sun_term = light.sun * facing * ~(by_static | by_moving)
        sky_term = light.ambient * (0.6 + 0.4 * nrm[:, 1])
        sun_rgb[t] = light.light_rgb
        linear = np.zeros((len(rays), 3))
        linear[hit] = surface.albedo[hit] * (sun_term[:, None] * sun_rgb[t] + sky_term[:, None] * sky_rgb[t])
        linear[~hit] = np.maximum(recipe.sky(rays[~hit], s, light), 1e-4)
        srgb[t] = np.round(255 * linear_to_srgb(np.clip(linear, 0, 1))).reshape(height, width, 3)
        dyn = surface.dynamic.copy()
        static_px = hit & ~dyn
        shadow_t, object_t = np.zeros(len(rays), bool), np.zeros(len(rays), bool)
        shadow_t[hit] = faces & by_static
        object_t[hit] = faces & by_moving & ~by_static
        dynamic[t], sky[t] = dyn.reshape(height, width), (~hit).reshape(height, width)
        shadow[t] = (shadow_t & static_px).reshape(height, width)
        object_shadow[t] = (object_t & static_px).reshape(height, width)
    usual = shadow.mean(axis=0) >= 0.5
    moving_shadow = (shadow != usual[None]) & ~dynamic & ~sky & ~object_shadow
    return ShadowSweep(srgb, dynamic, sky, shadow, moving_shadow, object_shadow, sun_rgb, sky_rgb)
