"""Per-source status over all sources: one row per source, one column per per-source stage (pandas).

Reads the status records the `sources` stage writes, `<status>/<stage>/<name>.json` (pipeline/sources.py), for
the sources of params.yaml in their order. A cell is "ok", the failure category, or "-" when the stage has no
record (not run yet); `reason` is the first failure's reason. Prints the table and the counts per stage;
``--csv FILE`` also writes it.

CLI: ``python -m pipeline.status [--status data/status] [--params params.yaml] [--failed] [--csv FILE]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pipeline.cli import parse_with_params
from pipeline.params import Params
from pipeline.sources import STAGES, read_record  # imports no stage module (those load per task)


def status_table(params: Params, status_root: Path) -> pd.DataFrame:
    """DataFrame indexed by source name: `scene`, one column per stage (ok / category / -), `reason`."""
    frame = pd.DataFrame([
        {"status": "-", "category": None, "reason": None,
         **(read_record(Path(status_root) / stage / f"{source.name}.json") or {}), "source": source.name, "stage": stage}
        for source in params.sources for stage in STAGES])
    frame["cell"] = frame["category"].where(frame["status"] == "failed", frame["status"])
    table = frame.pivot(index="source", columns="stage", values="cell").reindex(
        index=[s.name for s in params.sources], columns=list(STAGES))
    table.columns.name = None
    table.insert(0, "scene", [s.scene for s in params.sources])
    first_failure = frame[frame["status"] == "failed"].groupby("source", sort=False)["reason"].first()
    table["reason"] = first_failure.reindex(table.index).fillna("")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="per-source status table")
    parser.add_argument("--status", type=Path, default=Path("data/status"))
    parser.add_argument("--failed", action="store_true", help="only the sources with a failed stage")
    parser.add_argument("--csv", type=Path, default=None)
    args, params = parse_with_params(parser, argv)
    table = status_table(params, args.status)
    if args.failed:
        table = table[(table[list(STAGES)] != "ok").any(axis=1)]
    if args.csv:
        table.to_csv(args.csv)
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 80, "display.width", 200):
        print(table.to_string() if len(table) else "(no sources)")
    counts = pd.DataFrame({stage: table[stage].value_counts() for stage in STAGES}).fillna(0).astype(int)
    print("\n" + counts.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
