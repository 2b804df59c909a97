"""Shared command-line plumbing for the per-source stages (download, frames, masks).

dvc.yaml runs each per-source stage as ``python -m pipeline.<stage> ${item} --out DIR --status FILE``;
DVC unpacks the source's params entry (`${item}`) into ``--name ... --url ...`` flags, so a stage reruns
exactly when its own source entry changes. The flags are validated through the same `Source` schema and
must match the entry in params.yaml, which stays the single source of truth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from pipeline.atomic import atomic_write_json
from pipeline.params import Params, ParamsError, Source, load_params


def source_stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="this source's output folder")
    parser.add_argument("--status", type=Path, default=None, help="status JSON (a DVC metric) to write")
    # The Source fields, as DVC's ${item} unpacking writes them.
    for field in Source.model_fields:
        parser.add_argument(f"--{field}", default=None)
    return parser


def parse_source_stage(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[argparse.Namespace, Params, Source]:
    """Parse argv; return (args, params, source). Exits 2 with a message naming the key on bad input."""
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        if args.name is None:
            raise ParamsError("--name is required (the source's name in params.yaml)")
        source = params.source(args.name)
        given = {field: getattr(args, field) for field in Source.model_fields if getattr(args, field) is not None}
        from_flags = Source.model_validate({**source.model_dump(exclude_none=True), **given})
        if from_flags != source:
            raise ParamsError(
                f"sources[{args.name}]: command-line flags differ from params.yaml; rerun `dvc repro` "
                "so dvc.yaml and params.yaml agree"
            )
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")
    return args, params, source


def write_status(out_dir: Path, status_path: Path | None, record: dict) -> None:
    """Write a status record into the output folder (read by later stages) and to the DVC metric file."""
    atomic_write_json(Path(out_dir) / "status.json", record)
    if status_path is not None:
        atomic_write_json(status_path, record)


def run_source_stage(
    stage: str,
    run: Callable[..., dict],
    argv: list[str] | None = None,
    inputs: dict[str, str] | None = None,
) -> int:
    """Parse the CLI, call `run(params, source, out_dir, **inputs) -> status record`, write the status, print one line.

    `inputs` maps extra required folder flags to their help text, e.g. {"raw": "download output"} adds
    ``--raw DIR`` and passes ``raw=Path(DIR)`` to `run`. Per-source failures are data (exit 0 with a failed
    status) so one bad source never stops `dvc repro`.
    """
    parser = source_stage_parser(f"BigTime {stage} stage, one source")
    for flag, help_text in (inputs or {}).items():
        parser.add_argument(f"--{flag}", required=True, type=Path, help=help_text)
    args, params, source = parse_source_stage(parser, argv)
    record = run(params, source, args.out, **{flag: getattr(args, flag) for flag in (inputs or {})})
    Path(args.out).mkdir(parents=True, exist_ok=True)  # DVC needs the out even when the source failed
    write_status(args.out, args.status, record)
    detail = record.get("reason", "") if record["status"] != "ok" else record.get("summary", "")
    print(f"{stage}[{source.name}]: {record['status']}{' (' + record['category'] + ')' if record['status'] != 'ok' else ''} {detail}".rstrip(), file=sys.stderr)
    return 0
