"""DVC experiments -> the committed results table (docs/results.md), never typed by hand.

    python -m training.results_table --repo . --csv docs/experiments.csv --out docs/results.md
    python -m training.results_table --from-csv docs/experiments.csv --out docs/results.md   (rebuild only)

Consumes the experiments of a DVC repository (`dvc.api.exp_show`: one row per experiment with its params and
the metrics of `data/eval_metrics.json`, training/evaluate.py) or a CSV saved by an earlier call. Produces
- `--csv`: the experiments as one flat table (params + metrics; the raw data of the table below).
- `--out`: Markdown. A *variant* is every param that differs between experiments, except the fold
  (`shards.val_sequences`, which names the held-out MIT objects; empty = the ten-on-ten run). Per variant and
  fold the scores on the held-out objects ("mit_heldout", objects never trained on), then the mean over folds
  (the cross-object protocol), with the baselines scored on the same objects, and the ten-on-ten rows
  ("mit", a train-set score). Metrics: scale-invariant MSE, LMSE, DSSIM averaged over reflectance and
  shading (training/metrics.py); lower is better.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_write_text

METRICS = ("mse_avg", "lmse_avg", "dssim_avg")
BASELINES = ("chromaticity", "constant_shading", "retinex", "weiss")
FOLD_KEY = "shards.val_sequences"
IGNORED_PARAMS = {FOLD_KEY, "evaluate.mit_dir", "sources"}  # machine paths and the fold are not a variant
PAPER_TABLE3 = {"mse_avg": 0.0141, "lmse_avg": 0.0297, "dssim_avg": 0.1332}  # Li & Snavely 2018, Table 3


def experiments_frame(repo: str) -> pd.DataFrame:
    """One row per experiment (baseline commits included) with params and metrics, via dvc.api.exp_show."""
    import dvc.api

    frame = pd.DataFrame(dvc.api.exp_show(repo=repo))
    return frame[frame["State"].isna() | (frame["State"] == "Success")].reset_index(drop=True)


def _metric_columns(frame: pd.DataFrame, dataset: str, method: str) -> dict[str, str]:
    """{metric: column} for `dataset.method.metric` columns (dvc prefixes them with the file name or not)."""
    out = {}
    for metric in METRICS:
        suffix = f"{dataset}.{method}.{metric}"
        for column in frame.columns:
            if column == suffix or column.endswith(":" + suffix) or column.endswith("/" + suffix):
                out[metric] = column
    return out


def _fold_name(value) -> str:
    """'all' (nothing held out) or the held-out objects, 'apple+cup1+...'."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "all"
    items = ast.literal_eval(value) if isinstance(value, str) else list(value)
    return "+".join(str(i).removeprefix("mit_") for i in items) or "all"


def variant_labels(frame: pd.DataFrame) -> pd.Series:
    """'k=v, ...' of the params that vary across experiments (fold and paths excluded); 'defaults' if none."""
    params = [c for c in frame.columns if "." in c and not c.startswith(("data/", "mit", "synthetic_val", "iiw",
                                                                       "saw", "train.steps"))
              and not c.endswith((".py", ".dir")) and c not in IGNORED_PARAMS]
    params = [c for c in params if c.split(".")[0] in {"synthetic", "download", "frames", "masks", "shards",
                                                       "model", "loss", "train", "evaluate"}]
    varying = [c for c in params if frame[c].astype(str).nunique() > 1]
    reference = frame.iloc[0]

    def label(row) -> str:
        diffs = [f"{c}={row[c]}" for c in varying if str(row[c]) != str(reference[c])]
        return ", ".join(diffs) or "reference"

    return frame.apply(label, axis=1)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table: variant, steps, fold, dataset ("mit_heldout" / "mit"), method, metric columns."""
    frame = frame.copy()
    frame["variant"] = variant_labels(frame)
    frame["fold"] = frame[FOLD_KEY].map(_fold_name) if FOLD_KEY in frame else "all"
    frame["steps"] = frame.get("train.steps", pd.Series([None] * len(frame))).map(
        lambda s: None if pd.isna(s) else int(float(s)))
    rows = []
    for dataset in ("mit_heldout", "mit"):
        for method in ("model", *BASELINES):
            columns = _metric_columns(frame, dataset, method)
            if not columns:
                continue
            part = frame[["variant", "steps", "fold", "Experiment", "rev"]].copy()
            part["dataset"], part["method"] = dataset, method
            for metric, column in columns.items():
                part[metric] = pd.to_numeric(frame[column], errors="coerce")
            rows.append(part)
    if not rows:
        return pd.DataFrame(columns=["variant", "steps", "fold", "dataset", "method", *METRICS])
    long = pd.concat(rows, ignore_index=True).dropna(subset=list(METRICS), how="all")
    # the ten-on-ten run scores "mit" (train objects); a fold run scores "mit_heldout" (its "mit" mixes both)
    keep = ((long["fold"] == "all") & (long["dataset"] == "mit")) | ((long["fold"] != "all") & (long["dataset"] == "mit_heldout"))
    return long[keep].reset_index(drop=True)


def _fmt(frame: pd.DataFrame) -> str:
    """DataFrame -> Markdown table (4 decimals)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def results_markdown(long: pd.DataFrame) -> str:
    out = ["# Results", "",
           "Generated by `python -m training.results_table` from the DVC experiments (raw rows in",
           "`docs/experiments.csv`); do not edit by hand. Lower is better. `si-MSE`, `LMSE`, `DSSIM` are the",
           "averages over reflectance and shading of training/metrics.py (reflectance scored per channel).", ""]
    folds = long[long["fold"] != "all"]
    if not folds.empty:
        model = folds[folds["method"] == "model"]
        n_folds = folds["fold"].nunique()
        mean = (model.groupby(["variant", "steps"], dropna=False)
                .agg(folds=("fold", "nunique"), **{m: (m, "mean") for m in METRICS}).reset_index()
                .sort_values("mse_avg"))
        out += ["## Cross-object MIT protocol (mean over folds; held-out objects only)", "",
                f"Each fold trains on five objects' light sequences (no ground truth) and scores the other five "
                f"({n_folds} folds: " + "; ".join(f"held out {f}" for f in sorted(folds["fold"].unique())) + ").",
                "A variant lists the params it changes against the first experiment's.", ""]
        out += [_fmt(mean), ""]
        base = (folds[folds["method"] != "model"].groupby("method")[list(METRICS)].mean().reset_index())
        base = base.rename(columns={"method": "baseline (same held-out objects)"})
        out += ["Baselines on the same objects (mean over folds; Weiss uses each object's ten lights):", "",
                _fmt(base), "",
                "Paper, Table 3 (Barron's 10 test objects, which are not available here): "
                + ", ".join(f"{k} {v}" for k, v in PAPER_TABLE3.items()), ""]
        per_fold = model.pivot_table(index=["variant", "steps"], columns="fold", values="mse_avg").reset_index()
        per_fold.columns = [str(c) if c in ("variant", "steps") else f"si-MSE avg, held out {c}" for c in per_fold.columns]
        out += ["Per fold (si-MSE avg):", "", _fmt(per_fold), ""]
    ten = long[long["fold"] == "all"]
    if not ten.empty:
        out += ["## Ten on ten (train and score the same ten objects: a train-set score)", "",
                _fmt(ten.groupby(["method", "variant", "steps"], dropna=False)[list(METRICS)].mean().reset_index()), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".", help="DVC repository whose experiments are read")
    parser.add_argument("--from-csv", type=Path, default=None, help="rebuild from a saved --csv instead")
    parser.add_argument("--csv", type=Path, default=Path("docs/experiments.csv"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        frame = pd.read_csv(args.from_csv)
    else:
        frame = experiments_frame(args.repo)
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.csv, frame.to_csv(index=False))
    long = tidy(frame)
    if long.empty:
        print("results_table: no experiment has MIT metrics (data/eval_metrics.json mit / mit_heldout)", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, results_markdown(long))
    print(f"results_table: {len(frame)} experiments -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
