"""Sources stage: params.yaml -> `data/sources/<name>.json`, one validated entry per source.

The first stage of the pipeline (dvc.yaml `sources`). It validates the whole params.yaml through the one schema
(`pipeline.params.load_params`; an error names the key, e.g. ``sources[1].name: String should match pattern``)
before any per-source stage runs, then writes each source's entry, defaults filled in, as
`<out>/<name>.json` (`Source.model_dump(mode="json")`, sorted keys), in a folder built atomically.

Each per-source stage (download, frames, masks) depends on its own `data/sources/<name>.json`: editing or adding
one entry reruns only that source's stages, and no params value ever has to appear in a dvc.yaml command line.
The download stages also depend on `data/sources/_download.json` (`download_settings`: the download section
less allow_local, and the synthetic section), so params.yaml need not spell out every download key (DVC fails
on a tracked params key that the file lacks) and allowing local sources reruns no download.
The per-source stages find their source through DVC's `DVC_STAGE` variable (`download@3` -> `sources[3]`,
see pipeline/cli.py).

CLI: ``python -m pipeline.sources --out data/sources [--params params.yaml]`` (exit 2 on invalid params).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.atomic import atomic_dir, atomic_write_json
from pipeline.cli import parse_with_params
from pipeline.params import Params


DOWNLOAD_SETTINGS = "_download.json"  # not a source name: names start with a letter or digit


def download_settings(params: Params) -> dict:
    """What a download's result depends on besides its own entry: the `download` section less `allow_local`
    (which only admits local sources and changes no built output) and the `synthetic` renderer settings."""
    return {"download": params.download.model_dump(mode="json", exclude={"allow_local"}),
            "synthetic": params.synthetic.model_dump(mode="json")}


def write_sources(params: Params, out_dir: Path) -> list[Path]:
    """Write one `<name>.json` per source and DOWNLOAD_SETTINGS into `out_dir` (replaced whole); return the
    sources' paths in params order."""
    with atomic_dir(out_dir) as tmp:
        for source in params.sources:
            atomic_write_json(tmp / f"{source.name}.json", source.model_dump(mode="json"))
        atomic_write_json(tmp / DOWNLOAD_SETTINGS, download_settings(params))
    return [Path(out_dir) / f"{source.name}.json" for source in params.sources]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BigTime sources stage: validate params.yaml, one JSON per source")
    parser.add_argument("--out", required=True, type=Path, help="folder for <name>.json")
    args, params = parse_with_params(parser, argv)
    paths = write_sources(params, args.out)
    print(f"sources: {len(paths)} valid sources -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
