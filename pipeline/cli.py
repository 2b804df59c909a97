"""Shared command-line plumbing for the per-source stages (download, frames, masks).

Under `dvc repro` the per-source stages run as Ray tasks of the one `sources` stage (pipeline/sources.py), which
writes every status record through `write_status`. Each stage module keeps a CLI for running it by hand, e.g. to
debug one source: ``python -m pipeline.<stage> --name NAME | --index I | --all --out-root DIR
[--<input>-root DIR] [--status-root DIR]``, built by `stage_main`. It loads and validates params.yaml through
the one schema first (a bad name, URL or key stops it with a message naming the key, before anything is
written), then builds its paths from the validated source name: ``<out-root>/<name>``, ``<input-root>/<name>``
and ``<status-root>/<name>.json``. ``--all`` runs the sources one after another in this process with a tqdm bar
and prints one summary line (`summary_line`); for all sources at once use `python -m pipeline.sources`.
No params value ever reaches a shell command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from pipeline.atomic import atomic_write_json
from pipeline.params import Params, ParamsError, Source, load_params


def cpu_budget() -> int | None:
    """The CPUs this process may use: OMP_NUM_THREADS where set (Ray sets it to a task's `num_cpus`), else None."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return None


def limit_threads() -> None:
    """Keep OpenCV's thread pool within `cpu_budget()` (numpy's BLAS reads OMP_NUM_THREADS itself; ffmpeg gets
    `-threads` from pipeline/frames.py), so parallel Ray tasks do not oversubscribe the cores."""
    budget = cpu_budget()
    if budget is not None:
        import cv2

        cv2.setNumThreads(budget)


def write_status(out_dir: Path, status_path: Path | None, record: dict) -> None:
    """Write a status record into the output folder (read by later stages) and to the DVC metric file."""
    atomic_write_json(Path(out_dir) / "status.json", record)
    if status_path is not None:
        atomic_write_json(status_path, record)


def run_and_record(run: Callable[..., dict], params: Params, source: Source, out_dir: Path, inputs: dict[str, Path],
                   status_path: Path | None, fingerprint: str | None) -> dict:
    """`run(params, source, out_dir, **inputs)`, then its record, stamped with `fingerprint` when given, written
    last with `write_status` (the output folder is created even when the stage failed: DVC needs it)."""
    record = run(params, source, out_dir, **inputs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        record = {**record, "fingerprint": fingerprint}
    write_status(out_dir, status_path, record)
    return record


def run_all_sources(
    stage: str,
    run: Callable[..., dict],
    params: Params,
    out_root: Path,
    status_root: Path | None = None,
    *,
    input_roots: dict[str, Path] | None = None,
    sources: list[Source] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Call `run(params, source, out_root/<name>, **{flag: root/<name>})` for every source (default: all of
    params.sources) with a tqdm bar.

    Each record, stamped with the stage's fingerprint (pipeline/sources.py), is written with `write_status` (into
    the output folder and, with `status_root`, to `status_root/<name>.json`); returned in params order.
    """
    from tqdm import tqdm

    from pipeline.sources import fingerprints  # not at the top: pipeline.sources imports this module

    records = []
    for source in tqdm(params.sources if sources is None else sources, desc=stage, unit="source", disable=not progress):
        inputs = {flag: Path(root) / source.name for flag, root in (input_roots or {}).items()}
        status_path = Path(status_root) / f"{source.name}.json" if status_root else None
        # stamped like the `sources` stage's records, so a later `dvc repro` keeps what was built by hand
        records.append(run_and_record(run, params, source, Path(out_root) / source.name, inputs, status_path,
                                      fingerprints(params, source)[stage]))
    return records


def summary_line(stage: str, records: list[dict]) -> str:
    """One line: ``<stage>: N ok, K failed (name: category; ...)``."""
    ok = sum(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["status"] != "ok"]
    detail = "; ".join(f"{r['source']}: {r['category']}" for r in failed)
    return f"{stage}: {ok} ok, {len(failed)} failed" + (f" ({detail})" if detail else "")


def parse_with_params(parser, argv=None):
    """Add `--params` (default params.yaml) to an argparse parser, parse argv, load and validate the params:
    (args, Params). An invalid or unreadable params file exits with status 2 and the message naming the key."""
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        return args, load_params(args.params)
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")


def select_sources(params: Params, *, index: int | None, name: str | None) -> list[Source]:
    """The sources a stage run covers: every source, the `index`-th in params.yaml or the one named."""
    if index is not None:
        if not 0 <= index < len(params.sources):
            raise ParamsError(f"sources: no entry [{index}] (params.yaml lists {len(params.sources)} sources)")
        return [params.sources[index]]
    if name is not None:
        return [params.source(name)]
    return list(params.sources)


def stage_main(
    stage: str,
    run: Callable[..., dict],
    argv: list[str] | None = None,
    inputs: dict[str, str] | None = None,
) -> int:
    """CLI of a per-source stage: one source (``--index I`` or ``--name NAME``) or all (``--all``).

    `inputs` maps extra input roots to their help text, e.g. {"raw": "download output root"} adds a required
    ``--raw-root DIR`` whose `<name>` subfolder is passed to `run` as `raw=`. Per-source failures are data (a
    failed status, exit 0) so one bad source never stops `dvc repro`; ``--all`` exits non-zero only when no
    source succeeded. Invalid params exit 2 before anything is written.
    """
    parser = argparse.ArgumentParser(description=f"BigTime {stage} stage")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the source's position in params.yaml's sources")
    which.add_argument("--name", help="the source's name in params.yaml")
    which.add_argument("--all", action="store_true", help="every source")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for flag, help_text in (inputs or {}).items():
        parser.add_argument(f"--{flag}-root", required=True, type=Path, help=f"{help_text} (one folder per source)")
    parser.add_argument("--out-root", required=True, type=Path, help="output root (one folder per source)")
    parser.add_argument("--status-root", type=Path, default=None, help="status JSONs (DVC metrics), <name>.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        params = load_params(args.params)
        sources = select_sources(params, index=args.index, name=args.name)
    except ParamsError as err:
        parser.exit(2, f"error: {err}\n")
    input_roots = {flag: getattr(args, f"{flag}_root") for flag in inputs or {}}
    records = run_all_sources(stage, run, params, args.out_root, args.status_root, input_roots=input_roots,
                              sources=sources, progress=args.all)
    if not args.all:
        record = records[0]
        detail = record.get("reason", "") if record["status"] != "ok" else record.get("summary", "")
        failed = f" ({record['category']})" if record["status"] != "ok" else ""
        print(f"{stage}[{record['source']}]: {record['status']}{failed} {detail}".rstrip(), file=sys.stderr)
        return 0
    print(summary_line(stage, records), file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in records) else 1
