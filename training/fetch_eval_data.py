"""Fetch the IIW / SAW benchmark data for the evaluate stage (DVC stages `fetch_iiw`, `fetch_saw`; frozen = off).

`python -m training.fetch_eval_data --dataset iiw|saw --url URL [--url URL ...] --out DIR [--ids FILE]
[--params FILE]` reads `evaluate.fetch_<dataset>` from params.yaml (validated; no params value is on the command
line) and downloads each zip archive (http(s):// or a local path / file://) and extracts it under
DIR/<archive stem>/, refusing members with absolute or '..' paths; `--ids` copies a list of image ids to DIR/test_ids.txt (evaluate keeps only those
ids when the file is there). DIR is built in a temp sibling and swapped in whole (pipeline.atomic.atomic_dir).
With `evaluate.fetch_<dataset>: false` (the default params: no internet here) DIR only holds DISABLED.txt saying
how to turn the stage on, so the DVC stage and the evaluate stage that depends on DIR always have their folder.

Published locations (the dvc.yaml stages use them):
- IIW (Bell et al. 2014): http://labelmaterial.s3.amazonaws.com/release/iiw-dataset-release-0.zip
  -> iiw-dataset/data/<id>.png + <id>.json; test ids: ../shared/data/bigtime-lists/iiw_test_ids.txt.
- SAW (Kovacs et al. 2017, kovibalu/saw_release download_saw.sh):
  https://s3.amazonaws.com/labelmaterial/release/cvpr2017_saw/{saw_images_512,saw_pixel_labels,saw_splits}.zip
  -> saw_images_512/<id>.png, saw_pixel_labels/<setting>/<id>.npy, saw_splits/test_ids.npy.
To use them set `evaluate.fetch_iiw: true` and `evaluate.iiw_dir: data/external/iiw` (likewise saw) in
params.yaml and run `dvc repro`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from pipeline.atomic import atomic_dir


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def fetch_archive(url: str, dest: Path, timeout_s: float = 600.0) -> Path:
    """Download (or copy) one zip archive into dest and extract it into dest/<stem>/; return that folder."""
    name = PurePosixPath(url.split("?")[0]).name
    target = dest / PurePosixPath(name).stem
    with tempfile.TemporaryDirectory(prefix="fetch-eval-") as tmp:
        archive = Path(tmp) / name
        if url.startswith(("http://", "https://", "file://")):
            with urllib.request.urlopen(url, timeout=timeout_s) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        else:
            shutil.copyfile(url, archive)
        with zipfile.ZipFile(archive) as handle:
            bad = [m for m in handle.namelist() if _unsafe(m)]
            if bad:
                raise ValueError(f"{name}: members with absolute or '..' paths: {', '.join(bad[:3])}")
            handle.extractall(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("iiw", "saw"), required=True, help="on when evaluate.fetch_<dataset>")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ids", type=Path, default=None)
    args = parser.parse_args(argv)
    from pipeline.params import ParamsError, load_params

    try:
        enabled = getattr(load_params(args.params).evaluate, f"fetch_{args.dataset}")
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")
    with atomic_dir(args.out) as out:
        if not enabled:
            (out / "DISABLED.txt").write_text(
                f"Not fetched ({', '.join(args.url)}): set evaluate.fetch_{args.dataset}: true in params.yaml.\n")
            print(f"fetch: disabled, wrote {args.out / 'DISABLED.txt'}", file=sys.stderr)
            return 0
        for url in args.url:
            print(f"fetch: {url} -> {fetch_archive(url, out)}", file=sys.stderr)
        if args.ids is not None:
            shutil.copyfile(args.ids, out / "test_ids.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
