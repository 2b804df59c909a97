"""Shared command-line plumbing for the per-source stages (download, frames, masks).

dvc.yaml runs each per-source stage as ``python -m pipeline.<stage> ${item} --out DIR --status FILE``;
DVC unpacks the source's params entry (`${item}`) into ``--name ... --url ...`` flags, so a stage reruns
exactly when its own source entry changes. The flags are validated through the same `Source` schema and
must match the entry in params.yaml, which stays the single source of truth.

The `--all` mode (``python -m pipeline.<stage> --all --out-root DIR [--<input>-root DIR] [--status-root DIR]``)
runs the same per-source function over every source with a tqdm bar (`run_all_sources`), writes each
status, and prints one summary line (`summary_line`); `stage_main` dispatches between the two modes.
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


def run_all_sources(
    stage: str,
    run: Callable[..., dict],
    params: Params,
    out_root: Path,
    status_root: Path | None = None,
    *,
    input_roots: dict[str, Path] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Call `run(params, source, out_root/<name>, **{flag: root/<name>})` for every source with a tqdm bar.

    Each record is written with `write_status` (into the output folder and, with `status_root`, to
    `status_root/<name>.json`); the records are returned in params order.
    """
    from tqdm import tqdm

    records = []
    for source in tqdm(params.sources, desc=stage, unit="source", disable=not progress):
        inputs = {flag: Path(root) / source.name for flag, root in (input_roots or {}).items()}
        record = run(params, source, Path(out_root) / source.name, **inputs)
        write_status(Path(out_root) / source.name, Path(status_root) / f"{source.name}.json" if status_root else None, record)
        records.append(record)
    return records


def summary_line(stage: str, records: list[dict]) -> str:
    """One line: ``<stage>: N ok, K failed (name: category; ...)``."""
    ok = sum(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["status"] != "ok"]
    detail = "; ".join(f"{r['source']}: {r['category']}" for r in failed)
    return f"{stage}: {ok} ok, {len(failed)} failed" + (f" ({detail})" if detail else "")


def stage_main(
    stage: str,
    run: Callable[..., dict],
    argv: list[str] | None = None,
    inputs: dict[str, str] | None = None,
) -> int:
    """CLI of a per-source stage: one source (`run_source_stage`), or every source when argv has ``--all``.

    `inputs` as in `run_source_stage`; in ``--all`` mode each becomes a required ``--<flag>-root DIR`` whose
    `<name>` subfolder is passed to `run`. Exit status of ``--all``: non-zero only when no source succeeded.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--all" not in argv:
        return run_source_stage(stage, run, argv, inputs=inputs)
    parser = argparse.ArgumentParser(description=f"BigTime {stage} stage, every source")
    parser.add_argument("--all", action="store_true", required=True)
    parser.add_argument("--params", default="params.yaml")
    for flag in inputs or {}:
        parser.add_argument(f"--{flag}-root", required=True, type=Path)
    parser.add_argument("--out-root", required=True, type=Path)
    parser.add_argument("--status-root", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")
    input_roots = {flag: getattr(args, f"{flag}_root") for flag in inputs or {}}
    records = run_all_sources(stage, run, params, args.out_root, args.status_root, input_roots=input_roots)
    print(summary_line(stage, records), file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in records) else 1
