"""Mask quality of the semantic backends (production code: pipeline.mask_backends).

1. Synthetic scenes (pipeline.synthetic.render_scene, when that module exists): IoU of the predicted sky and of
   the predicted dynamic region (outside the true sky; the sky is masked whole anyway) against the renderer's
   `sky` / `dynamic` ground truth, pooled over all frames; reported with the backend's dilation off (the fair
   shape comparison) and with the params default (what the pipeline writes).
2. Moving cast shadows (pipeline.synthetic_shadows.render_shadow_sweep: shadows sweeping over textured paving, a
   blue sky fill light, sun colour warming, walkers and a cart): the fraction of moving-shadow pixels (entered or
   left a static object's cast shadow) that the backend's invalid mask covers ("falsely masked", target <= 2%),
   also counted only > 3 px away from the moving objects and their own shadows; the fraction of the static ground
   masked; the recall of the moving objects (target >= 0.9) and the IoU of the mask outside the sky with them.
3. ../shared/data/videos/vtest.avi (PETS 2009, people walking, static camera): `--frames` frames evenly spaced
   over the video, long side 256. Reference "walking people" mask per frame: max over RGB of |frame - temporal
   median of ALL decoded frames| >= 30/255, opened 3x3, closed 5x5 (ellipse), components < 30 px dropped. Reports
   the recall of that reference by the backend's invalid mask (pooled pixels), the fraction of frames whose
   reference pixels are >= 50% masked, and the invalid fraction outside the reference (false masking).

Usage: python -m bench.masks [--backend temporal] [--threshold Z] [--frames 20]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.mask_backends import BACKENDS, TemporalBackend
from pipeline.params import MasksParams, TemporalBackendParams

VTEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "vtest.avi"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def vtest_frames(path: Path, n: int, long_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(n sampled frames (n,H,W,3) uint8 RGB, temporal median of all frames (H,W,3) uint8)."""
    cap = cv2.VideoCapture(str(path))
    allf = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        s = long_side / max(h, w)
        allf.append(cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)[..., ::-1])
    allf = np.stack(allf)
    pick = np.linspace(0, len(allf) - 1, n).round().astype(int)
    return np.ascontiguousarray(allf[pick]), np.median(allf[:: max(1, len(allf) // 200)], axis=0).astype(np.uint8)


def people_reference(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    diff = np.abs(frames.astype(np.int16) - background.astype(np.int16)).max(axis=-1) >= 30
    out = []
    for d in diff.astype(np.uint8):
        d = cv2.morphologyEx(d, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(d, connectivity=8)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 30
        out.append(keep[labels])
    return np.stack(out)


def bench_synthetic(params: MasksParams) -> None:
    try:
        from pipeline.synthetic import render_scene
    except ImportError as err:
        print(f"synthetic: skipped (pipeline.synthetic not importable: {err})")
        return
    for scene in ("sun", "sunset", "indoor", "street"):
        seq = render_scene(scene, width=192, height=128, fps=8, seconds=3.0, seed=0)
        for label, p in (("dilate=0", params.model_copy(update={"temporal": params.temporal.model_copy(update={"dilate": 0})})),
                         ("default", params)):
            backend = BACKENDS[p.backend].from_params(p)
            t0 = time.perf_counter()
            if isinstance(backend, TemporalBackend):
                li, lc = backend.log_channels(seq.srgb)
                sky = np.broadcast_to(backend.sky_mask(li, lc), seq.sky.shape)
                dyn = backend.dynamic_mask(backend.dynamic_scores(li, lc, sky[0]))
            else:
                res, err = backend(seq.srgb)
                if err:
                    print(f"synthetic {scene}: {err}")
                    return
                sky = dyn = res.invalid
            dt = time.perf_counter() - t0
            has_sky, has_dyn = seq.sky.any(), seq.dynamic.any()
            print(f"synthetic {scene:7s} {label:8s} T={len(seq.srgb)}: sky IoU "
                  f"{iou(sky, seq.sky) if has_sky else float('nan'):.3f} (true sky {seq.sky.mean():.1%}, predicted {sky.mean():.1%}), "
                  f"dynamic IoU outside sky {iou(dyn & ~seq.sky, seq.dynamic & ~seq.sky) if has_dyn else float('nan'):.3f} "
                  f"(true {seq.dynamic.mean():.2%}, predicted {(dyn & ~seq.sky).mean():.2%}), {dt:.2f} s")


def bench_shadows(params: MasksParams, n_frames: int = 16) -> None:
    from pipeline.mask_backends import dilate_mask
    from pipeline.synthetic_shadows import render_shadow_sweep

    seq = render_shadow_sweep(width=192, height=128, n_frames=n_frames, seed=0)
    moving = seq.moving_shadow
    away = moving & ~dilate_mask(seq.dynamic | seq.object_shadow, 3)
    ground = ~seq.sky & ~seq.dynamic & ~seq.object_shadow
    for label, p in (("dilate=0", params.model_copy(update={"temporal": params.temporal.model_copy(update={"dilate": 0})})),
                     ("default", params)):
        t0 = time.perf_counter()
        result, err = BACKENDS[p.backend].from_params(p)(seq.srgb)
        if err:
            print(f"shadows: {err}")
            return
        inv = result.invalid
        print(f"shadows {label:8s} T={n_frames}: moving-shadow pixels falsely masked {inv[moving].mean():.2%} "
              f"({moving.mean():.1%} of pixels; > 3 px from objects {inv[away].mean():.2%}), static ground masked "
              f"{inv[ground].mean():.2%}; moving objects recall {inv[seq.dynamic].mean():.3f}, "
              f"IoU outside sky {iou(inv & ~seq.sky, seq.dynamic):.3f}; {time.perf_counter() - t0:.2f} s")


def bench_vtest(params: MasksParams, n: int) -> None:
    if not VTEST.exists():
        print(f"vtest: skipped ({VTEST} not found)")
        return
    frames, background = vtest_frames(VTEST, n)
    ref = people_reference(frames, background)
    backend = BACKENDS[params.backend].from_params(params)
    t0 = time.perf_counter()
    result, err = backend(frames)
    if err:
        print(f"vtest: {err}")
        return
    inv = result.invalid
    per_frame = [inv[t][ref[t]].mean() for t in range(len(ref)) if ref[t].sum() >= 30]
    print(f"vtest {frames.shape}: reference people {ref.mean():.2%} of pixels; recall {inv[ref].mean():.3f}; "
          f"frames with >=50% of people masked {np.mean(np.array(per_frame) >= 0.5):.2f} ({len(per_frame)} frames); "
          f"masked outside people {inv[~ref].mean():.3f}; IoU {iou(inv, ref):.3f}; sky {result.info.get('sky_fraction', 0):.3f}; "
          f"{time.perf_counter() - t0:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="temporal", choices=sorted(BACKENDS))
    ap.add_argument("--threshold", type=float, default=None, help="temporal dynamic_threshold override")
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    temporal = TemporalBackendParams() if args.threshold is None else TemporalBackendParams(dynamic_threshold=args.threshold)
    params = MasksParams(backend=args.backend, temporal=temporal)
    bench_synthetic(params)
    bench_shadows(params)
    bench_vtest(params, args.frames)


if __name__ == "__main__":
    main()
