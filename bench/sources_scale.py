"""Sources at scale: DVC bookkeeping over N tiny sources, and the Ray speed-up on real videos.

Part 1, `--n 120 1000` (DVC, in a throwaway git + DVC repo holding a copy of the project, tests/faults/repo.py):
N tiny image-folder sources (4 PNG frames of 96x64 each, generated here; shards of 8 sequences), then
- build: `dvc repro shards` from nothing (download, frames and masks of every source on a local Ray cluster,
  then the shards);
- status: `dvc status` with nothing changed (median of 3);
- append: one more source in params.yaml, then `dvc repro shards`.
Targets (issue 11): N = 120 build <= 60 s; N = 1000 status <= 5 s and append <= 30 s.

Part 2, `--videos 8` (Ray, no DVC): 8 sources cut from ../shared/data/videos/vtest.avi (file://, 30 s windows at
different starts), run through download -> frames -> masks by `pipeline.sources.run_sources` with the default
frames/masks params, on a local Ray cluster of 1 CPU and of 2 CPUs, and on a simulated 2-node cluster
(`ray.cluster_utils.Cluster`: a head with no CPU, two nodes of 1 CPU). Timed: the task phase (Ray already up),
with Ray's start-up printed apart; settings interleaved, `--repeats` times (median); speed-up = 1-CPU time /
time. Each task keeps to its CPUs (OMP_NUM_THREADS, OpenCV threads, ffmpeg -threads: pipeline/cli.py
`limit_threads`), so 1 worker is 1 core. Target: >= 1.7x on 2 workers.
Skipped with a message when vtest.avi is absent.

Usage: python -m bench.sources_scale [--n 120 1000] [--videos 8] [--skip-dvc] [--skip-videos]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.faults.repo import dvc, make_repo, tiny_params, write_params

VTEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "vtest.avi"


def make_image_sources(folder: Path, n: int, start: int = 0) -> list[dict]:
    """n image-folder sources of 4 frames (96x64 PNG: a random texture under a brightening light)."""
    from PIL import Image

    entries = []
    for k in range(start, start + n):
        rng = np.random.default_rng(k)
        albedo = rng.uniform(0.3, 0.9, (64, 96, 3))
        src = folder / f"cam{k:05d}"
        src.mkdir(parents=True, exist_ok=True)
        for t, light in enumerate((0.45, 0.6, 0.75, 0.9)):
            Image.fromarray(np.clip(albedo * light * 255, 0, 255).astype(np.uint8)).save(src / f"{t:04d}.png")
        entries.append({"name": src.name, "url": str(src), "type": "images", "licence": "CC0", "attribution": "bench"})
    return entries


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dvc_scale(n: int, work: Path) -> dict:
    """Build / status / append timings of the DVC pipeline over n tiny sources (seconds)."""
    sources = make_image_sources(work / "images", n)
    params = tiny_params(sources=sources, download={"allow_local": True, "retries": 0},
                         frames={"long_side": 96, "per_sequence": 4},
                         shards={"sequences_per_shard": 8, "val_fraction": 0.0, "seed": 0})  # the schema's shard size
    repo = make_repo(work / "repo", params)
    build = _timed(lambda: dvc(repo, "repro", "shards"))
    status = statistics.median(_timed(lambda: dvc(repo, "status")) for _ in range(3))
    params["sources"] = sources + make_image_sources(work / "images", 1, start=n)
    write_params(repo, params)
    append = _timed(lambda: dvc(repo, "repro", "shards"))
    clean = dvc(repo, "status", "--json", "shards").stdout.strip() in ("{}", "")
    return {"n": n, "build_s": build, "status_s": status, "append_s": append, "clean_after": clean}


def video_params(folder: Path, n: int):
    from pipeline.params import validate_params

    starts = np.linspace(0, 45, n)
    sources = [{"name": f"vtest{k}", "url": VTEST.resolve().as_uri(), "start": float(s), "end": float(s) + 30.0}
               for k, s in enumerate(starts)]
    return validate_params({"sources": sources, "download": {"allow_local": True}})


SETTINGS = (("local, 1 worker", 1), ("local, 2 workers", 2), ("2 nodes x 1 CPU", None))


def _one_run(params, label: str, cpus: int | None, work: Path) -> tuple[float, float]:
    """(Ray start-up s, task phase s) of one fresh run of every source through download -> frames -> masks."""
    import shutil

    import ray
    from ray.cluster_utils import Cluster

    from pipeline.sources import Roots, run_sources

    folder = work / label.replace(" ", "_").replace(",", "")
    shutil.rmtree(folder, ignore_errors=True)
    roots = Roots(*(folder / p for p in ("raw", "frames", "masks", "status")))
    cluster = None
    t0 = time.perf_counter()
    if cpus is None:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
        cluster.wait_for_nodes()
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    startup = time.perf_counter() - t0
    try:
        results: dict = {}
        phase = _timed(lambda: results.update(run_sources(params, roots, progress=False, keep_ray=True)))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    failed = [r.get("reason") for r in results["masks"] if r["status"] != "ok"]
    if failed:
        print(f"  warning: {label}: {len(failed)} sources failed: {failed}")
    return startup, phase


def ray_speedup(n: int, work: Path, repeats: int) -> list[tuple[str, float, list[float]]]:
    """(setting, median Ray start-up s, task phase s of each repeat) for 1 CPU, 2 CPUs and a 2-node simulated
    cluster; the settings are interleaved within each repeat (this VM's speed drifts)."""
    params = video_params(work, n)
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in SETTINGS}
    for _ in range(repeats):
        for label, cpus in SETTINGS:
            runs[label].append(_one_run(params, label, cpus, work))
    return [(label, statistics.median(r[0] for r in rows), [r[1] for r in rows]) for label, rows in runs.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[120, 1000])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the Ray settings (median)")
    ap.add_argument("--skip-dvc", action="store_true")
    ap.add_argument("--skip-videos", action="store_true")
    args = ap.parse_args()
    if not args.skip_dvc:
        print("DVC over N tiny image sources (seconds)")
        print(f"{'N':>6} {'build':>8} {'per src':>8} {'status':>8} {'append':>8}  clean")
        for n in args.n:
            with tempfile.TemporaryDirectory(prefix=f"bigtime-scale-{n}-") as tmp:
                r = dvc_scale(n, Path(tmp))
            print(f"{r['n']:>6} {r['build_s']:>8.1f} {r['build_s'] / n:>8.2f} {r['status_s']:>8.2f} {r['append_s']:>8.1f}  "
                  f"{r['clean_after']}", flush=True)
    if not args.skip_videos:
        if not VTEST.exists():
            print(f"skipped the Ray speed-up: {VTEST} is absent (shared data not laid out beside the repo)")
            return 0
        print(f"\nRay: {args.videos} real video sources (vtest.avi windows), download -> frames -> masks")
        with tempfile.TemporaryDirectory(prefix="bigtime-ray-") as tmp:
            rows = ray_speedup(args.videos, Path(tmp), args.repeats)
        base = statistics.median(rows[0][2])
        print(f"{'setting':<18} {'ray start s':>11} {'tasks s (median)':>17} {'each':>16} {'speed-up':>9}")
        for label, startup, phases in rows:
            each = " ".join(f"{p:.1f}" for p in phases)
            print(f"{label:<18} {startup:>11.1f} {statistics.median(phases):>17.1f} {each:>16} "
                  f"{base / statistics.median(phases):>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
