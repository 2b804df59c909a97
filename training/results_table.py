"""DVC experiments -> the committed results table (docs/results.md), never typed by hand.

    python -m training.results_table --repo . --csv docs/experiments.csv --out docs/results.md
    python -m training.results_table --from-csv docs/experiments.csv --out docs/results.md   (rebuild only)
    python -m training.results_table --repo . --merge --csv docs/experiments.csv --out docs/results.md
        (--merge: keep the rows of the existing --csv whose commits this repository no longer has, e.g. the
        experiments of another clone or machine, and add this repository's experiments)
    ... --reference COMMIT   (describe the variants against that baseline commit's params instead of the newest's,
        e.g. when the newest commit with experiments is a side branch and not the recipe as committed)

Consumes the experiments of a DVC repository (`dvc exp show --json --all-commits`: per baseline commit its experiments with
their params and the metrics of `data/eval_metrics.json`, training/evaluate.py) or a CSV saved by an earlier
call. Produces
- `--csv`: the experiments as one flat table (params + metrics; the raw data of the table below).
- `--out`: Markdown. A *variant* is every param that differs between experiments, except the fold
  (`shards.val_sequences`, which names the held-out MIT objects; empty = the ten-on-ten run), the seed
  (`train.seed`: a variant's runs at several seeds are averaged, `seeds` column) and the schedule
  (`train.steps`, its own column), and the train keys that change nothing a run computes (`checkpoint_every`,
  `log_every`, `num_workers`); every row is described against ONE reference, the params of the newest
  baseline commit in the table (the last, with --merge: the recipe as committed, "baseline params"; or the commit
  `--reference` names), so rows
  run on different commits compare. Per variant and fold the scores on the held-out objects ("mit_heldout",
  objects never trained on) averaged over the seeds, then the mean over folds (the cross-object protocol),
  with the baselines scored on the same objects, and the ten-on-ten rows ("mit", a train-set score).
  Metrics: scale-invariant MSE, LMSE, DSSIM averaged over reflectance and shading (training/metrics.py); lower
  is better.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_write_text
from training.evaluate import MIT_SOURCE_PREFIX
from training.mit_recipe import MIT_OBJECTS
from training.train import RESUME_NEUTRAL_TRAIN_KEYS

METRICS = ("mse_avg", "lmse_avg", "dssim_avg")
BASELINES = ("chromaticity", "constant_shading", "retinex", "weiss")
FOLD_KEY = "shards.val_sequences"
SEED_KEY = "train.seed"
# Paths, fold and seed are not a variant, nor are the train keys that do not change what a run computes (the ones
# training/train.py also lets a resume differ in: checkpoint_every, log_every, num_workers).
IGNORED_PARAMS = {FOLD_KEY, SEED_KEY, "evaluate.mit_dir", "sources"} | {f"train.{key}" for key in RESUME_NEUTRAL_TRAIN_KEYS}
# Params added after a baseline commit, with the value that reproduces that commit's code: a row stating it is
# not a variant of a baseline that lacks the key.
ADDED_PARAMS = {"model.reflectance": "decoder", "model.input_skip": False, "model.input_skip_shading": True,
                "train.permute_channels": False, "train.color_gain": 0.0,
                "evaluate.mit_long_side": None, "evaluate.flip_average": False, "evaluate.residual_split": None,
                "shards.shading_weights.edge_source": "affinity", "shards.shading_weights.sigma_log_derivative": 0.25,
                "loss.ssmooth_robust_scale": None, "loss.ssmooth_robust_by_weight": False, "train.ema_decay": None,
                "evaluate.chroma_edges": None, "evaluate.chroma_edge_min_pixels": 0,
                "evaluate.flatten_reflectance": None, "evaluate.flatten_threshold": 0.03,
                "evaluate.flatten_chroma_bandwidth": None, "synthetic.tonal_paint": 0.0,
                "evaluate.residual_chroma_to_reflectance": False, "evaluate.scale_average": [],
                "loss.rsmooth_guide": "frame", "evaluate.norm_statistics": "running",
                "model.norm": "batch", "train.min_crop": 0.8, "train.max_rotation_deg": 5.0,
                "train.mix_lights": 0.0, "shards.shading_weights.edge_persistence": None,
                "train.contrast_lights": 0.0, "train.contrast_gamma": 1.0, "train.lr_schedule": "step",
                "train.weight_decay": 0.0, "evaluate.soften_light": None}
BASELINE_ROW = "<baseline>"  # Experiment of the row with a baseline commit's own params (and its lock's metrics)
REFERENCE_LABEL = "baseline params"  # the variant of a row whose params are the reference's
PAPER_TABLE3 = {"mse_avg": 0.0141, "lmse_avg": 0.0297, "dssim_avg": 0.1332}  # Li & Snavely 2018, Table 3


PARAM, METRIC = "param:", "metric:"  # column prefixes: params.yaml keys, data/eval_metrics.json keys
METRICS_FILE = "data/eval_metrics.json"


def _flat(tree: dict, prefix: str) -> dict:
    """Nested dict -> {prefix + dotted key: value}; lists are kept as their repr (e.g. the fold's objects)."""
    frame = pd.json_normalize(tree, sep=".") if tree else pd.DataFrame([{}])
    return {prefix + k: (repr(v) if isinstance(v, list) else v) for k, v in frame.iloc[0].to_dict().items()}


def _data_row(data: dict) -> dict:
    params = ((data or {}).get("params") or {}).get("params.yaml", {}).get("data", {})
    metrics = ((data or {}).get("metrics") or {}).get(METRICS_FILE, {}).get("data", {})
    return {**_flat(params, PARAM), **_flat(metrics, METRIC)}


def experiments_frame(exp_show: list) -> pd.DataFrame:
    """`dvc exp show --json` (parsed) -> one row per finished experiment: Experiment, rev, baseline (the
    commit it ran on), param:* and metric:* columns, commits in the order of their timestamps (oldest first).
    Each baseline commit's own params are kept in a row with Experiment BASELINE_ROW (no metrics needed): the
    reference that variants are described against, and a run of its own when its lock holds metrics."""
    rows = []
    # commits oldest first, whatever order exp show lists them in (newest first): the last is the reference
    by_time = sorted(exp_show, key=lambda entry: str((entry.get("data") or {}).get("timestamp") or ""))
    for baseline in by_time:
        if baseline.get("rev") == "workspace" or not baseline.get("experiments"):
            continue  # commits without experiments add nothing
        rows.append({"Experiment": BASELINE_ROW, "rev": baseline["rev"], "baseline": baseline["rev"],
                     **_data_row(baseline.get("data"))})
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state") if isinstance(exp.get("executor"), dict) else exp.get("executor")
            for rev in exp.get("revs") or []:
                if state not in (None, "success") or rev.get("error"):
                    continue
                rows.append({"Experiment": rev.get("name") or exp.get("name"), "rev": rev["rev"],
                             "baseline": baseline["rev"], **_data_row(rev.get("data"))})
    return pd.DataFrame(rows)


def merge_frames(saved: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """The saved rows (an earlier --csv) whose baseline commit `fresh` lacks, then `fresh`: experiments that live
    in another clone, or were removed, stay in the table; a commit present in both is taken from `fresh`."""
    kept = saved[~saved["baseline"].isin(set(fresh.get("baseline", pd.Series(dtype=str))))]
    merged = pd.concat([kept, fresh], ignore_index=True)
    # commits in the order the saved table first had them (new ones last): the reference commit stays the same
    order = {rev: i for i, rev in enumerate(dict.fromkeys([*saved["baseline"], *fresh.get("baseline", [])]))}
    return merged.sort_values("baseline", key=lambda b: b.map(order), kind="stable", ignore_index=True)


def dvc_exp_show(repo: str) -> list:
    """Run `dvc exp show --json --all-commits` in repo (the experiments of every commit) and parse it."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--all-commits"], cwd=repo, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


LOCKED_STAGES = ("shards", "train", "evaluate")  # the stages whose params decide a commit's metrics


def stale_commits(repo: str, revs) -> set[str]:
    """The commits among `revs` whose dvc.lock records, for the shards, train or evaluate stage, params.yaml values
    other than the commit's params.yaml (params edited and committed without `dvc repro`): the metrics in such a lock
    were made with other settings, so they are no run of the commit's params. Values compare as in the table (a key
    one side lacks is ADDED_PARAMS's value). A commit whose files cannot be read is not judged."""
    import subprocess

    import yaml

    stale = set()
    for rev in revs:
        try:
            lock, params = (yaml.safe_load(subprocess.run(["git", "show", f"{rev}:{name}"], cwd=repo, check=True,
                                                          capture_output=True, text=True).stdout)
                            for name in ("dvc.lock", "params.yaml"))
        except (subprocess.CalledProcessError, yaml.YAMLError, OSError):
            continue
        stages = (lock or {}).get("stages") or {}
        for name in LOCKED_STAGES:
            recorded = (((stages.get(name) or {}).get("params") or {}).get("params.yaml")) or {}
            locked = _flat(recorded, PARAM)
            current = _flat({k: (params or {}).get(k) for k in recorded}, PARAM)
            if any(_param_value(c, locked.get(c)) != _param_value(c, current.get(c)) for c in {*locked, *current}):
                stale.add(rev)
                break
    return stale


def drop_stale_runs(frame: pd.DataFrame, stale: set[str]) -> pd.DataFrame:
    """`frame` with the metrics of the BASELINE_ROW rows of `stale` commits removed (their params stay: a variant is
    still described against them)."""
    metrics = [c for c in frame.columns if c.startswith(METRIC)]
    frame = frame.copy()
    rows = (frame["Experiment"] == BASELINE_ROW) & frame["rev"].isin(stale)
    if rows.any():
        flags = [c for c in metrics if frame[c].dtype == bool]  # model_beats verdicts: no NaN in a bool column
        frame[flags] = frame[flags].astype(object)
        frame.loc[rows, metrics] = np.nan
    return frame


def _metric_columns(frame: pd.DataFrame, dataset: str, method: str) -> dict[str, str]:
    """{metric: column} of the metric:dataset.method.metric columns present."""
    return {m: f"{METRIC}{dataset}.{method}.{m}" for m in METRICS if f"{METRIC}{dataset}.{method}.{m}" in frame}


def _fold_name(value) -> str:
    """'all' (nothing held out) or the held-out objects, 'apple+cup1+...'."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "all"
    items = ast.literal_eval(value) if isinstance(value, str) else list(value)
    return "+".join(str(i).removeprefix("mit_") for i in items) or "all"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or (isinstance(value, str) and value == "")


def _param_value(column: str, value) -> str:
    """One param value as text, the same whether it came from `dvc exp show --json` or a saved CSV: a missing value
    (None, NaN, "": a key the commit lacks or an empty string read back from the CSV) is the value that
    reproduces the older code (ADDED_PARAMS, else None); numbers compare as numbers (CSV reads 384 as 384.0)."""
    if _missing(value):
        value = ADDED_PARAMS.get(column.removeprefix(PARAM))
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(bool(value) if value is not None else None)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def extra_sources(value) -> str:
    """The sources beside the MIT objects ("mit_*": the folds' objects, compared by the fold instead) as text,
    one "url xN" per URL with its `?variant=` dropped: e.g. "synthetic://objects x5"; "" when none."""
    if _missing(value):
        return ""
    sources = ast.literal_eval(value) if isinstance(value, str) else list(value)
    urls = [str(s.get("url", "")).split("?variant=")[0] for s in sources
            if not str(s.get("name", "")).startswith(MIT_SOURCE_PREFIX)]
    return ", ".join(f"{url} x{n}" for url, n in pd.Series(urls, dtype=object).value_counts(sort=False).items())


def _names(baselines: pd.Series, reference: str) -> pd.Series:
    """Which baseline commit hashes `reference` names: the hash or a prefix of it (the one rule of --reference)."""
    return baselines.astype(str).str.startswith(reference)


def reference_commit(frame: pd.DataFrame, reference: str | None = None) -> pd.Series | None:
    """The baseline row whose params every variant is described against: the newest baseline commit's (frames list
    commits oldest first), or with `reference` the one baseline commit whose hash starts with it (ValueError naming
    it and the commits there are when none or several do). None when the frame has no baseline row."""
    baselines = frame[frame["Experiment"] == BASELINE_ROW].drop_duplicates("baseline")
    if reference is None:
        return baselines.iloc[-1] if len(baselines) else None
    match = baselines[_names(baselines["baseline"], reference)]
    if len(match) != 1:
        have = ", ".join(str(b)[:7] for b in baselines["baseline"]) or "none"
        raise ValueError(f"--reference {reference!r} matches {len(match)} baseline commits with experiments "
                         f"(need exactly one; have: {have})")
    return match.iloc[0]


def unknown_reference(repo: str, reference: str, saved_csv: Path | None = None) -> str | None:
    """Why `reference` cannot name a baseline commit, checked before the experiments are read: it must be a hash
    prefix (4-40 hex digits) of a commit of `repo`, or of a baseline in `saved_csv` (--merge keeps those). None
    when it may; `reference_commit` still checks that the commit has experiments."""
    import re
    import subprocess

    if not re.fullmatch(r"[0-9a-f]{4,40}", reference):
        return f"--reference {reference!r} is not a commit hash or its prefix (4-40 hex digits)"
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{reference}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True).returncode == 0
    if not found and saved_csv is not None and saved_csv.exists():
        found = _names(pd.read_csv(saved_csv, usecols=["baseline"])["baseline"], reference).any()
    return None if found else f"--reference {reference!r} names no commit of {repo}" + (
        f" nor a baseline of {saved_csv}" if saved_csv is not None else "")


def variant_labels(frame: pd.DataFrame, reference: str | None = None) -> pd.Series:
    """'k=v, ...' of the params in which each row differs from the reference, the newest baseline commit's params
    (or those of the commit `reference` names, `reference_commit`)
    (fold and paths excluded; of the source list only the sources beside the MIT objects, `extra_sources`, as
    "sources+=..."); "baseline params" if none. A key added after the reference commit
    compares with ADDED_PARAMS (the value that reproduces the older code) or else with the value of the commit the
    row ran on, so only an explicit `-S` of a new key makes a variant."""
    params = [c for c in frame.columns if c.startswith(PARAM) and c.removeprefix(PARAM) not in IGNORED_PARAMS
              and not c.removeprefix(PARAM).startswith("sources") and c != PARAM + "train.steps"]  # steps: own column
    baselines = frame[frame["Experiment"] == BASELINE_ROW]
    own_commit = baselines.drop_duplicates("baseline").set_index("baseline")
    reference_row = reference_commit(frame, reference)

    def reference_value(c, row):  # the reference's value; a key it lacks: ADDED_PARAMS, else the row's own commit's
        base = row if reference_row is None else reference_row
        if _missing(base[c]) and c.removeprefix(PARAM) not in ADDED_PARAMS and row["baseline"] in own_commit.index:
            return _param_value(c, own_commit.loc[row["baseline"], c])
        return _param_value(c, base[c])

    sources = PARAM + "sources"

    def label(row) -> str:
        values = {c: _param_value(c, row[c]) for c in params}
        diffs = [f"{c.removeprefix(PARAM)}={v}" for c, v in values.items() if v != reference_value(c, row)]
        extra = extra_sources(row.get(sources))
        if extra != extra_sources(None if reference_row is None else reference_row.get(sources)):
            diffs.append(f"sources+={extra or 'none'}")  # training sequences beside the MIT objects
        return ", ".join(diffs) or REFERENCE_LABEL

    return frame.apply(label, axis=1)


def tidy(frame: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Long table: variant, steps, seed, fold, Experiment, rev, baseline (the commit a run was queued from), dataset
    ("mit_heldout" / "mit"), method, metric columns."""
    frame = frame.copy()
    frame["variant"] = variant_labels(frame, reference)
    # a baseline commit's own run (its `dvc repro`, metrics in its dvc.lock) is a run of its params like any
    # experiment: kept when it has metrics (dropped below otherwise); a queued twin at the same seed is averaged
    # with it per (fold, seed) in results_markdown, never counted twice
    fold = PARAM + FOLD_KEY
    frame["fold"] = frame[fold].map(_fold_name) if fold in frame else "all"
    frame["steps"] = frame[PARAM + "train.steps"].map(lambda s: None if pd.isna(s) else int(float(s))) \
        if PARAM + "train.steps" in frame else None
    seed = frame[PARAM + SEED_KEY] if PARAM + SEED_KEY in frame else pd.Series(0, index=frame.index)
    frame["seed"] = seed.map(lambda s: 0 if _missing(s) else int(float(s)))  # params' default seed is 0
    rows = []
    for dataset in ("mit_heldout", "mit"):
        for method in ("model", *BASELINES):
            columns = _metric_columns(frame, dataset, method)
            if not columns:
                continue
            part = frame[["variant", "steps", "seed", "fold", "Experiment", "rev", "baseline"]].copy()
            part["dataset"], part["method"] = dataset, method
            for metric, column in columns.items():
                part[metric] = pd.to_numeric(frame[column], errors="coerce")
            rows.append(part)
    if not rows:
        return pd.DataFrame(columns=["variant", "steps", "seed", "fold", "Experiment", "rev", "baseline", "dataset",
                                     "method", *METRICS])
    long = pd.concat(rows, ignore_index=True).dropna(subset=list(METRICS), how="all")
    # the ten-on-ten run scores "mit" (train objects); a fold run scores "mit_heldout" (its "mit" mixes both)
    keep = ((long["fold"] == "all") & (long["dataset"] == "mit")) | ((long["fold"] != "all") & (long["dataset"] == "mit_heldout"))
    return long[keep].reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, decimals: int = 4) -> str:
    """DataFrame -> Markdown table (floats to `decimals` places)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(f"{v:.{decimals}f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _combined_se(per_fold_se: pd.Series) -> float:
    """Standard error of a mean over folds from each fold's standard error: sqrt(sum of se^2) / number of folds."""
    return float(np.sqrt((per_fold_se ** 2).sum())) / len(per_fold_se)


def seed_spread(per_fold_seed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Standard error over seeds of the mean over folds, per variant: per (variant, fold) sd (ddof 1) / sqrt(n)
    of its seeds' scores, then sqrt(sum over folds of se^2) / number of folds. `per_fold_seed`: one row per
    (*keys, fold, seed) with METRICS. Only variants with >= 2 seeds on every fold (else no spread to measure);
    columns *keys, seeds (the fewest over the folds) and `se <metric>` per metric."""
    grouped = per_fold_seed.groupby([*keys, "fold"], dropna=False)
    n = grouped["seed"].nunique()
    se_fold = grouped[list(METRICS)].std(ddof=1).div(np.sqrt(n), axis=0)
    se_fold["seeds"] = n
    per_variant = se_fold.reset_index().groupby(keys, dropna=False)
    spread = per_variant.agg(seeds=("seeds", "min"),
                             **{f"se {m}": (m, _combined_se) for m in METRICS})
    return spread[spread["seeds"] >= 2].reset_index()


def paired_differences(per_run: pd.DataFrame) -> pd.DataFrame:
    """Each variant minus the reference (`REFERENCE_LABEL`) at the same steps, fold and seed, run from the same
    baseline commit (one clone: one machine and one version of the code): the seed and the machine move both runs
    of a pair alike, so the paired difference is less noisy than the gap between two means. `per_run`: one row per
    (variant, steps, fold, seed, baseline) with METRICS. Per fold the mean of its pairs' differences and its
    standard error (sd ddof 1 / sqrt(pairs)), then the mean over folds and sqrt(sum of se^2) / number of folds, as
    `seed_spread`. Only variants with >= 2 pairs on every one of the reference's folds at their steps. Columns:
    variant, steps, pairs (the fewest over the folds), `better` ("k/n": pairs whose si-MSE avg is lower than the
    reference's) and per metric `d <metric>` and `se d <metric>` (negative d: the variant is better)."""
    keys = ["steps", "fold", "seed", "baseline"]
    reference = per_run[per_run["variant"] == REFERENCE_LABEL]
    pairs = per_run[per_run["variant"] != REFERENCE_LABEL].merge(
        reference.drop(columns="variant"), on=keys, suffixes=("", " ref"))
    if pairs.empty:
        return pd.DataFrame()
    diffs = [f"d {m}" for m in METRICS]
    for m, d in zip(METRICS, diffs):
        pairs[d] = pairs[m] - pairs[f"{m} ref"]
    folds_of_reference = reference.groupby("steps", dropna=False)["fold"].nunique()
    rows = []
    for (variant, steps), part in pairs.groupby(["variant", "steps"], dropna=False):
        per_fold = part.groupby("fold")[diffs]
        n = per_fold.size()
        if n.min() < 2 or len(n) < folds_of_reference.get(steps, 0):
            continue
        mean, se = per_fold.mean(), per_fold.std(ddof=1).div(np.sqrt(n), axis=0)
        row = {"variant": variant, "steps": steps, "pairs": int(n.min()),
               "better": f"{int((part['d mse_avg'] < 0).sum())}/{len(part)}"}
        for d in diffs:
            row[d] = float(mean[d].mean())
            row[f"se {d}"] = _combined_se(se[d])
        rows.append(row)
    return pd.DataFrame(rows)


def protocol_section(folds: pd.DataFrame, heading: str, intro: str, reference: str | None = None) -> list[str]:
    """Markdown lines of one fold protocol: `folds` holds the tidy rows of its folds (every fold holding out the same
    number of objects). Per variant the mean over folds (each fold's seeds averaged first), the seed spread, which
    baselines it beats, the baselines on the same objects and the per-fold si-MSE."""
    model = folds[folds["method"] == "model"]
    keys = ["variant", "steps"]
    # each fold's seeds first (a fold run twice at one seed counts once), then the mean over folds
    per_fold_seed = model.groupby([*keys, "fold", "seed"], dropna=False)[list(METRICS)].mean().reset_index()
    by_fold = (per_fold_seed.groupby([*keys, "fold"], dropna=False)
               .agg(seeds=("seed", "nunique"), **{m: (m, "mean") for m in METRICS}).reset_index())
    mean = (by_fold.groupby(keys, dropna=False)
            .agg(folds=("fold", "nunique"), seeds=("seeds", "min"), **{m: (m, "mean") for m in METRICS})
            .reset_index())
    # the recipe as committed first, then the variants by si-MSE
    mean = mean.assign(_ref=mean["variant"] != REFERENCE_LABEL).sort_values(["_ref", "mse_avg"]).drop(columns="_ref")
    out = [heading, "", intro + f" ({folds['fold'].nunique()} folds: "
           + "; ".join(f"held out {f}" for f in sorted(folds["fold"].unique())) + ").",
           f"A variant lists the params it changes against "
           + (f"the params of baseline commit {reference} (`{REFERENCE_LABEL}`, first; `--reference`)" if reference
              else f"the newest baseline commit's params (the recipe as committed: `{REFERENCE_LABEL}`, first)")
           + f". `seeds`: how many training seeds (`train.seed`) each "
           f"fold ran at (the fewest over the folds); a fold's seeds are averaged, then the folds.", ""]
    out += [markdown_table(mean), ""]
    spread = mean[keys].merge(seed_spread(per_fold_seed, keys), on=keys)  # in the mean table's order
    if not spread.empty:
        out += ["Seed spread: the standard error of each mean above, from its seeds (variants run at two or more "
                "seeds on every fold; per fold the seeds' sample standard deviation over the square root of their "
                "number, then sqrt of the folds' summed squares over the number of folds). A difference smaller "
                "than about twice this is within what another seed could move.", "",
                markdown_table(spread, 5), ""]
    paired = paired_differences(model.groupby([*keys, "fold", "seed", "baseline"], dropna=False)[list(METRICS)]
                                .mean().reset_index())
    if not paired.empty:
        paired = mean[keys].merge(paired, on=keys)  # in the mean table's order
        out += [f"Paired against `{REFERENCE_LABEL}` (variants with two or more pairs on every fold; a pair: the "
                "same steps, fold and seed, run from the same baseline commit, so on one machine): per pair the "
                "variant's score minus the reference's, averaged over each fold's pairs, then the folds; `se d`: "
                "its standard error (as the seed spread, from the pairs' differences). Negative d: the variant is "
                "better. `better`: pairs whose si-MSE avg is lower than the reference's. The seed and the machine "
                "move both runs of a pair alike, so these differences are less noisy than the means' gap.", "",
                markdown_table(paired, 5), ""]
    # per fold first (every run of a fold scores the same objects), then the mean over folds
    base = folds[folds["method"] != "model"].groupby(["method", "fold"])[list(METRICS)].mean().groupby("method").mean()
    beats = mean[["variant", "steps"]].copy()
    for method in base.index:
        beats[f"beats {method}"] = ["/".join("yes" if row[m] < base.loc[method, m] else "no" for m in METRICS)
                                    for _, row in mean.iterrows()]
    out += ["Does the variant beat each baseline (si-MSE / LMSE / DSSIM)?", "", markdown_table(beats), ""]
    base = base.reset_index().rename(columns={"method": "baseline (same held-out objects)"})
    out += ["Baselines on the same objects (mean over folds; Weiss uses each object's ten lights):", "",
            markdown_table(base), "",
            "Paper, Table 3 (trained on Barron's 10 training objects, the ten here; scored on his 10 test objects, "
            "which are not available here): " + ", ".join(f"{k} {v}" for k, v in PAPER_TABLE3.items()), ""]
    per_fold = by_fold.pivot_table(index=keys, columns="fold", values="mse_avg").reset_index()
    per_fold.columns = [str(c) if c in ("variant", "steps") else f"si-MSE avg, held out {c}" for c in per_fold.columns]
    return out + ["Per fold (si-MSE avg):", "", markdown_table(per_fold), ""]


def results_markdown(long: pd.DataFrame, reference: str | None = None) -> str:
    """The tidy rows -> docs/results.md; `reference`: the commit the rows were labelled against (`tidy`), named
    in the text (None: the newest baseline commit)."""
    out = ["# Results", "",
           "Generated by `python -m training.results_table` from the DVC experiments (raw rows in",
           "`docs/experiments.csv`); do not edit by hand. Lower is better. `si-MSE`, `LMSE`, `DSSIM` are the",
           "averages over reflectance and shading of training/metrics.py (reflectance scored per channel).", ""]
    folds = long[long["fold"] != "all"]
    held = folds["fold"].str.count(r"\+") + 1  # objects a fold holds out: "apple+cup1+..." -> 5
    cross_object = len(MIT_OBJECTS) // 2
    if (held == cross_object).any():
        out += protocol_section(folds[held == cross_object],
                                "## Cross-object MIT protocol (mean over folds; held-out objects only)",
                                "Each fold trains on five objects' light sequences (no ground truth) and scores the "
                                "other five", reference)
    for count in sorted(set(held[held != cross_object])):
        train = len(MIT_OBJECTS) - count
        out += protocol_section(folds[held == count],
                                f"## Train on {train} objects, score {count} (`mit_recipe --fold k/N`; mean over folds)",
                                f"Each fold trains on {train} objects' light sequences (no ground truth) and scores the "
                                f"other {count}: nearer the paper's ten training objects than the cross-object "
                                f"protocol's five, a measure of what more training objects give", reference)
    ten = long[long["fold"] == "all"]
    if not ten.empty:
        out += ["## Ten on ten (train and score the same ten objects: a train-set score)", "",
                markdown_table(ten.groupby(["method", "variant", "steps"], dropna=False)[list(METRICS)].mean().reset_index()), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=".", help="DVC repository whose experiments are read")
    parser.add_argument("--from-csv", type=Path, default=None, help="rebuild from a saved --csv instead")
    parser.add_argument("--csv", type=Path, default=Path("docs/experiments.csv"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the --csv rows of commits the repository's experiments do not include")
    parser.add_argument("--reference", default=None, metavar="COMMIT",
                        help="describe the variants against this baseline commit's params (a hash or its prefix; "
                             "default: the newest baseline commit with experiments)")
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        frame = pd.read_csv(args.from_csv)
    else:
        problem = args.reference and unknown_reference(args.repo, args.reference, args.csv if args.merge else None)
        if problem:  # before `dvc exp show` (minutes) and before the --csv is rewritten
            print(f"results_table: {problem}", file=sys.stderr)
            return 2
        frame = experiments_frame(dvc_exp_show(args.repo))
        frame = drop_stale_runs(frame, stale_commits(args.repo, frame["rev"][frame["Experiment"] == BASELINE_ROW]))
        if args.merge and args.csv.exists():
            frame = merge_frames(pd.read_csv(args.csv), frame)
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.csv, frame.to_csv(index=False))
    try:
        long = tidy(frame, args.reference)
    except ValueError as error:
        print(f"results_table: {error}", file=sys.stderr)
        return 2
    if long.empty:
        print("results_table: no experiment has MIT metrics (data/eval_metrics.json mit / mit_heldout)", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, results_markdown(long, args.reference))
    print(f"results_table: {len(frame)} experiments -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
