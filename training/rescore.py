"""Score finished MIT-recipe runs again with other test-time options, without retraining.

    python -m training.rescore --repo EXP_REPO --rev sc05-f0-s0 --rev sc05-f1-s0 ... \
        --variant chroma residual_chroma_to_reflectance=true --variant split35 residual_split=0.35 [--csv rows.csv]

Each `--rev` is a DVC experiment (its name or a git revision of `--repo`) whose `data/models/checkpoint.pt` and
`params.yaml` are read through `dvc.api` (the DVC cache of `--repo`): the run's held-out MIT objects (its
`shards.val_sequences` named `mit_<object>`; every object when there are none, a train-set score) are decomposed
with the run's own `evaluate` options ("as run") and with each `--variant NAME KEY=VALUE ...`, whose keys are
`evaluate` keys that `training.decompose.decompose` takes, or `mit_long_side` (values parsed as YAML: true, 0.35,
null), validated by the params schema. `--checkpoint CKPT --params PARAMS` scores one local run instead (no DVC).

Prints si-MSE / LMSE / DSSIM avg (training/metrics.py, reflectance per channel) per run and variant, the mean
over each fold's runs, and the mean over folds (the results table's convention: a fold is its held-out set);
`--csv` writes one row per (run, object, variant). Evaluation only: what `dvc exp run -S evaluate.KEY=VALUE` would
score, minus the retraining that a changed code hash forces (pipeline/params.py cites rows measured this way).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pandas as pd
import yaml

from pipeline.atomic import atomic_write_text
from pipeline.params import EvaluateParams, Params, ParamsError, load_params, validate_params
from training.decompose import DECOMPOSE_OPTIONS, decompose_options
from training.evaluate import MIT_SOURCE_PREFIX, evaluate_mit, model_predictor
from training.results_table import METRICS, markdown_table

AS_RUN = "as run"
CHECKPOINT = "data/models/checkpoint.pt"


@dataclass(frozen=True)
class Run:
    """One finished run: its label, checkpoint file and validated params."""
    label: str
    checkpoint: Path
    params: Params

    @property
    def held_out(self) -> Optional[list[str]]:
        """MIT objects this run never trained on; None (score all) when it holds none out."""
        names = [s.removeprefix(MIT_SOURCE_PREFIX) for s in self.params.shards.val_sequences
                 if s.startswith(MIT_SOURCE_PREFIX)]
        return names or None

    @property
    def fold(self) -> str:
        return "+".join(self.held_out) if self.held_out else "all"


TEST_TIME_OPTIONS = ("mit_long_side", *DECOMPOSE_OPTIONS)  # the evaluate keys a variant may set


def variant_options(base: EvaluateParams, overrides: dict) -> tuple[Optional[int], dict]:
    """(the network input's long side for MIT objects, `decompose` keywords): `base`'s, with `overrides` (evaluate
    keys) applied and validated by the schema."""
    unknown = sorted(set(overrides) - set(TEST_TIME_OPTIONS))
    if unknown:
        raise ValueError(f"not a test-time option: {', '.join(unknown)} (choose from {', '.join(TEST_TIME_OPTIONS)})")
    settings = EvaluateParams.model_validate({**base.model_dump(), **overrides})
    return settings.mit_long_side, decompose_options(settings)


def parse_variant(tokens: list[str]) -> tuple[str, dict]:
    """["NAME", "KEY=VALUE", ...] -> (NAME, {KEY: YAML value})."""
    name, *pairs = tokens
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"variant {name}: expected KEY=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def score_run(run: Run, variants: dict[str, dict], mit_dir: Path) -> pd.DataFrame:
    """One row per (held-out object, variant) of `run`: the MIT scores of its checkpoint decomposed with the run's
    evaluate options (AS_RUN) and with each variant's overrides of them. Every variant is validated (ValueError
    naming it) before anything is loaded or scored."""
    from training.model import load_checkpoint

    base = run.params.evaluate
    options = {}
    for name, overrides in {AS_RUN: {}, **variants}.items():
        try:
            options[name] = variant_options(base, overrides)
        except ValueError as err:
            raise ValueError(f"variant {name}: {err}") from None
    model, _ = load_checkpoint(run.checkpoint)
    rows = []
    for name, (long_side, keywords) in options.items():
        predict = model_predictor(model, long_side, **keywords)
        _, per_object = evaluate_mit(predict, mit_dir, max_images=None, objects=run.held_out, baselines=False)
        rows += [{"run": run.label, "fold": run.fold, "seed": run.params.train.seed, "variant": name,
                  "object": r["image"], **{k: r["model"][k] for k in METRICS}} for r in per_object]
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"runs": mean over each run's objects, "folds": mean over each fold's runs, "mean": mean over folds},
    each indexed by variant (AS_RUN first)."""
    per_run = rows.groupby(["variant", "fold", "run"], sort=False)[list(METRICS)].mean()
    per_fold = per_run.groupby(level=["variant", "fold"], sort=False).mean()
    return {"runs": per_run, "folds": per_fold, "mean": per_fold.groupby(level="variant", sort=False).mean()}


def report_markdown(summary: dict[str, pd.DataFrame], options: dict[str, str], command: str) -> str:
    """Markdown: per variant its `options` as given (AS_RUN: each run's own evaluate section), the runs, the mean
    over each fold's runs and the mean over folds (`summarise`), 5 decimals; `command` says how to regenerate it."""
    runs = summary["runs"].reset_index().groupby(["variant", "fold"], sort=False)["run"].agg(", ".join)
    folds = summary["folds"].join(runs.rename("runs")).reset_index()
    mean = summary["mean"].reset_index()
    mean.insert(1, "options", mean["variant"].map({AS_RUN: "each run's own `evaluate`", **options}))
    return "\n".join([
        "# Test-time options rescored", "",
        f"Generated by `{command}` (training/rescore.py); do not edit by hand. si-MSE / LMSE / DSSIM avg of "
        "the held-out MIT objects (training/metrics.py, reflectance per channel); lower is better.", "",
        "Mean over folds (each fold: the mean over its runs):", "", markdown_table(mean, 5), "",
        "Per fold:", "", markdown_table(folds[["variant", "fold", "runs", *METRICS]], 5), ""])


# ------------------------------------------------------------------------------------------ DVC experiments


def resolve_rev(repo: Path, rev: str) -> str:
    """A DVC experiment name (refs/exps/.../NAME) or any git revision of `repo` -> commit sha."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    named = [sha for ref, _, sha in (line.partition(" ") for line in refs if line) if ref.rsplit("/", 1)[-1] == rev]
    if len(named) > 1:
        raise ValueError(f"{rev}: {len(named)} experiments have that name in {repo}; give a commit")
    if named:
        return named[0]
    done = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=repo, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise ValueError(f"{rev}: neither a DVC experiment name nor a git revision of {repo}")
    return done.stdout.strip()


def dvc_run(repo: Path, rev: str, workdir: Path) -> Run:
    """The run at experiment/revision `rev` of `repo`: params.yaml and the checkpoint via dvc.api."""
    import dvc.api

    sha = resolve_rev(repo, rev)
    with dvc.api.open("params.yaml", repo=str(repo), rev=sha) as f:
        raw = yaml.safe_load(f)
    try:
        params = validate_params(raw if raw is not None else {})
    except ParamsError as err:
        raise ParamsError(f"{rev}: params.yaml: {err}") from None
    target = workdir / f"{sha}.pt"
    with dvc.api.open(CHECKPOINT, repo=str(repo), rev=sha, mode="rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return Run(rev, target, params)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name finished runs: --repo/--rev (DVC experiments) or --checkpoint/--params, --mit-dir."""
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository holding the experiments")
    parser.add_argument("--rev", action="append", default=[], help="an experiment name or git revision (repeat)")
    parser.add_argument("--checkpoint", type=Path, help="score this local checkpoint instead (with --params)")
    parser.add_argument("--params", type=Path, help="the params.yaml of --checkpoint's run")
    parser.add_argument("--mit-dir", type=Path, help="MIT objects (default: each run's evaluate.mit_dir)")


def parse_run_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if bool(args.checkpoint) != bool(args.params) or bool(args.checkpoint) == bool(args.rev):
        parser.error("give --rev (one or more), or --checkpoint with --params")
    return args


def named_runs(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[Run, Path]]:
    """(run, its MIT folder) for each run `add_run_arguments`' options name; checkpoints read from DVC land in
    `workdir`. ValueError when a run's MIT folder is missing."""
    if args.checkpoint:
        runs = [Run(str(args.checkpoint), args.checkpoint, load_params(args.params))]
    else:
        runs = [dvc_run(args.repo, rev, workdir) for rev in args.rev]
    for run in runs:
        mit_dir = args.mit_dir or Path(run.params.evaluate.mit_dir)
        if not mit_dir.is_dir():
            raise ValueError(f"{run.label}: MIT objects not found at {mit_dir} (give --mit-dir)")
        yield run, mit_dir


RUN_ERRORS = (ValueError, ParamsError, OSError, subprocess.CalledProcessError)  # what stops a CLI with a message


def score_named_runs(args: argparse.Namespace, score: Callable[[Run, Path], pd.DataFrame],
                     tool: str) -> Optional[pd.DataFrame]:
    """`score(run, its MIT folder)` for each run the options name, concatenated (and written to `args.csv` when
    given); None, with the error printed after `tool`, when a run cannot be read or scored."""
    try:
        with tempfile.TemporaryDirectory(prefix=f"{tool}-") as tmp:
            frames = []
            for run, mit_dir in named_runs(args, Path(tmp)):
                frames.append(score(run, mit_dir))
                print(f"{tool}: {run.label} scored", file=sys.stderr)
    except RUN_ERRORS as err:
        print(f"{tool}: stopped: {err}", file=sys.stderr)
        return None
    rows = pd.concat(frames, ignore_index=True)
    if args.csv:
        rows.to_csv(args.csv, index=False)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="test-time options to score besides the run's own (repeat)")
    parser.add_argument("--csv", type=Path, help="write one row per (run, object, variant)")
    parser.add_argument("--markdown", type=Path, help="write the fold means per variant as a Markdown report")
    args = parse_run_arguments(parser, argv)
    try:
        variants = dict(parse_variant(tokens) for tokens in args.variant)
    except ValueError as err:
        print(f"rescore: stopped: {err}", file=sys.stderr)
        return 1
    rows = score_named_runs(args, lambda run, mit_dir: score_run(run, variants, mit_dir), "rescore")
    if rows is None:
        return 1
    summary = summarise(rows)
    if args.markdown:
        given = argv if argv is not None else sys.argv[1:]
        command = " ".join(["python -m training.rescore", *map(shlex.quote, given)])
        options = {name: " ".join(pairs) for name, *pairs in args.variant}
        atomic_write_text(args.markdown, report_markdown(summary, options, command))
    with pd.option_context("display.float_format", "{:.5f}".format, "display.width", 200):
        for title, table in summary.items():
            print(f"\n{title}:\n{table.to_string()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
