"""Throughput of the frames stage (production code: pipeline.frames.extract_frames) against a bare ffmpeg decode.

Input: ../shared/data/videos/vtest.avi (795 frames, 480x360, 10 fps) when present, else a synthetic 480x360
static-camera video (a fixed texture brightening over 800 frames, with noise) made in a temp folder. The video is first put through the
download stage (file://, outside the timing). Then, interleaved `--repeats` times in the same run:

- stage: `extract_frames` with the frames params (default long_side 384, max_candidates 400, per_sequence 20):
  decode + resize of the candidates, camera-motion check, selection, PNG + meta.json writing.
- bare: `ffmpeg -i VIDEO -vf scale=W:H:flags=area -f rawvideo -pix_fmt rgb24 -` to /dev/null (every frame
  decoded and resized, nothing else).

Both are reported as source frames per second (all frames of the video / wall seconds, best of the repeats)
with the ratio stage/bare time (target <= 1.5).

Usage: python -m bench.frames [--repeats 5] [--long-side 384] [--max-candidates 400] [--video PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.cli import write_status
from pipeline.download import download_source
from pipeline.frames import extract_frames, output_size
from pipeline.params import validate_params

VTEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "vtest.avi"


def synthetic_video(folder: Path, frames: int = 800) -> Path:
    """A static-camera 480x360 10 fps video: a fixed random texture that brightens over time, with sensor noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (360, 480, 3)).astype(np.float32), (0, 0), 3.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    cv2.imwrite(str(folder / "texture.png"), texture)
    path = folder / "static.mp4"
    ramp = f"eq=brightness='-0.3+0.5*t/{frames / 10}':eval=frame,noise=alls=6:allf=t"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-loop", "1", "-framerate", "10", "-i", str(folder / "texture.png"),
                    "-vf", ramp, "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-side", type=int, default=384)
    parser.add_argument("--max-candidates", type=int, default=400)
    parser.add_argument("--per-sequence", type=int, default=20)
    parser.add_argument("--video", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        tmp = Path(tmp)
        video = args.video or (VTEST if VTEST.exists() else synthetic_video(tmp))
        params = validate_params({
            "sources": [{"name": "bench", "url": str(video)}], "download": {"allow_local": True},
            "frames": {"long_side": args.long_side, "max_candidates": args.max_candidates, "per_sequence": args.per_sequence},
        })
        source = params.sources[0]
        raw = tmp / "raw"
        record = download_source(params, source, raw)
        write_status(raw, None, record)
        if record["status"] != "ok":
            raise SystemExit(f"download failed: {record}")
        info = json.loads((raw / "info.json").read_text())
        n_frames = int(info["n_frames"])
        width, height = output_size(info["width"], info["height"], args.long_side)
        bare_cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(next(raw.glob("video.*"))),
                    "-vf", f"scale={width}:{height}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]

        stage_s, bare_s = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = extract_frames(params, source, tmp / "frames", raw)
            stage_s.append(time.perf_counter() - start)
            if result["status"] != "ok":
                raise SystemExit(f"frames stage failed: {result}")
            start = time.perf_counter()
            subprocess.run(bare_cmd, stdout=subprocess.DEVNULL, check=True)
            bare_s.append(time.perf_counter() - start)

    best_stage, best_bare = min(stage_s), min(bare_s)
    print(f"video: {video.name}, {n_frames} frames {info['width']}x{info['height']} -> {width}x{height}, "
          f"max_candidates {args.max_candidates}, per_sequence {args.per_sequence}, {args.repeats} repeats")
    print(f"frames stage : {n_frames / best_stage:7.1f} frames/s  (best {best_stage:.3f} s, median {statistics.median(stage_s):.3f} s)  [{result['summary']}]")
    print(f"bare ffmpeg  : {n_frames / best_bare:7.1f} frames/s  (best {best_bare:.3f} s, median {statistics.median(bare_s):.3f} s)")
    print(f"ratio stage/bare time: {best_stage / best_bare:.2f} (best), "
          f"{statistics.median(stage_s) / statistics.median(bare_s):.2f} (median); target <= 1.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
