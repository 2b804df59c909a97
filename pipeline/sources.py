"""Sources stage: the per-source work (download -> frames -> masks) of every source as Ray tasks, by content.

dvc.yaml runs this as ONE stage, whatever the number of sources (fixed text, no params value on the line):
``python -m pipeline.sources --raw data/raw --frames data/frames --masks data/masks --status data/status``.
It validates params.yaml through the one schema first (exit 2 naming the key, before anything is written), then:

1. **Fingerprints** (`fingerprint`): each (source, stage) has a sha256 of what makes its output: the source's
   params entry, the stage's params section (`stage_settings`), the code of the stage (`stage_code`: the stage
   module and every `pipeline` module it imports, less `params`/`cli`/`atomic`/`sources` whose effect is the
   values already hashed or the writing mechanics) and the upstream stage's fingerprint. The renderer
   (`pipeline.synthetic`, the `synthetic` section) counts for synthetic:// sources only. It is stored in the
   source's status record, written last (`write_status`): `<out>/<name>/status.json` and
   `<status>/<stage>/<name>.json` (the per-source status records, one per source per stage, as before).
2. **Plan** (`plan`): a (source, stage) whose two records both carry the expected fingerprint is up to date and
   skipped, failures included (a failure is a result; change the entry or the params to retry). Everything
   downstream of a stale stage is stale. Outputs of sources no longer in params.yaml are deleted
   (`remove_stale`), with the leftovers of killed runs.
3. **Ray** (`run_sources`): each stale (source, stage) is one Ray task running `process_source_stage` (the same
   pure function the tests call), declaring its resources (`ray.cpus_per_task` CPUs; one GPU for the detectron2
   mask backend on a CUDA device). A source's tasks are chained through their ObjectRefs, so sources move through
   the three stages independently and all at once. A worker killed mid-task (or a node lost) is retried by Ray
   (`ray.max_retries`); outputs are atomic, so a retry starts clean. A task that still fails is recorded as a
   failed status ("error", no fingerprint: the next run retries it) and never stops the other sources.
   `ray.init` happens only when something is stale: a no-op run starts no cluster.

Where Ray runs: `ray.address` in params.yaml, else RAY_ADDRESS, else a local cluster sized to this machine
(`ray.num_cpus`). On a cluster the outputs must be on a filesystem every node mounts at the same path (README).

Outputs (DVC `persist: true`, so DVC leaves them in place for this stage to update): `<raw>/<name>/`,
`<frames>/<name>/`, `<masks>/<name>/`, `<status>/<stage>/<name>.json`; `<status>/sources.json` (the DVC
metric: ok / failed counts and failure categories per stage) and `<status>/sources_digest.json` ({name: sha256
of its records}, `digests`: what the later stages depend on in dvc.yaml instead of the folders).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.atomic import atomic_dir, atomic_write_json, fault_point, in_stage, status_record
from pipeline.code_closure import PLUMBING, imported_modules, source_digest
from pipeline.cli import limit_threads, parse_with_params, run_and_record, summary_line, write_status
from pipeline.params import SOURCE_NAME, Params, Source

STAGES = ("download", "frames", "masks")
STAGE_FUNCTIONS = {  # stage -> (module, the pure per-source function: (params, source, out_dir, **inputs) -> record)
    "download": ("pipeline.download", "download_source"),
    "frames": ("pipeline.frames", "extract_frames"),
    "masks": ("pipeline.masks", "make_masks"),
}
# pipeline modules whose change does not change what a stage writes: params (its values are hashed instead) and
# the plumbing (pipeline/code_closure.py PLUMBING: the CLI, atomic writes, fingerprints, this driver)
NOT_FINGERPRINTED = PLUMBING | {"pipeline.params"}
SUMMARY = "sources.json"
DIGESTS = "sources_digest.json"
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Roots:
    """Where the per-source stages read and write: one folder per source under raw/frames/masks, status records
    under `status/<stage>/<name>.json`."""

    raw: Path
    frames: Path
    masks: Path
    status: Path

    def absolute(self) -> "Roots":
        return Roots(*(Path(p).resolve() for p in (self.raw, self.frames, self.masks, self.status)))

    def out(self, stage: str, name: str) -> Path:
        return Path({"download": self.raw, "frames": self.frames, "masks": self.masks}[stage]) / name

    def inputs(self, stage: str, name: str) -> dict[str, Path]:
        """The keyword inputs of the stage function: frames reads raw=, masks reads frames=."""
        return {"download": {}, "frames": {"raw": Path(self.raw) / name}, "masks": {"frames": Path(self.frames) / name}}[stage]

    def status_file(self, stage: str, name: str) -> Path:
        return Path(self.status) / stage / f"{name}.json"


# ------------------------------------------------------------------------------------------------ fingerprints
RENDERER = "pipeline.synthetic"  # download's renderer: its code and the `synthetic` section make synthetic:// only


def stage_settings(params: Params, stage: str, rendered: bool = True) -> dict:
    """The params a stage's output depends on besides the source entry. download: the `download` section less
    `allow_local` (it admits local sources and changes no output), and for `rendered` sources the `synthetic`
    renderer settings (a renderer setting re-renders the synthetic sources, never re-fetches a video)."""
    if stage == "download":
        settings = {"download": params.download.model_dump(mode="json", exclude={"allow_local"})}
        return {**settings, "synthetic": params.synthetic.model_dump(mode="json")} if rendered else settings
    return {stage: getattr(params, stage).model_dump(mode="json")}


def stage_modules(stage: str, rendered: bool = True) -> list[str]:
    """The pipeline modules whose source text is part of `stage`'s fingerprint (sorted); the renderer's only
    for `rendered` sources' download."""
    modules = imported_modules(STAGE_FUNCTIONS[stage][0], packages=("pipeline",)) - NOT_FINGERPRINTED
    return sorted(modules if rendered or stage != "download" else modules - {RENDERER})


@lru_cache(maxsize=None)
def stage_code(stage: str, rendered: bool = True) -> str:
    """sha256 over the source text of `stage_modules(stage, rendered)`."""
    return source_digest(stage_modules(stage, rendered))


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def fingerprint(params: Params, source: Source, stage: str, upstream: str | None) -> str:
    """sha256 hex of what makes (source, stage): entry, stage params, stage code, upstream fingerprint (and the
    manual mask's bytes for masks)."""
    payload = {"stage": stage, "source": source.model_dump(mode="json"),
               "settings": stage_settings(params, stage, source.is_synthetic),
               "code": stage_code(stage, source.is_synthetic), "upstream": upstream}
    if stage == "masks" and source.manual_mask:
        payload["manual_mask_sha256"] = _file_digest(source.manual_mask)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def fingerprints(params: Params, source: Source) -> dict[str, str]:
    """{stage: fingerprint} along download -> frames -> masks."""
    out, upstream = {}, None
    for stage in STAGES:
        upstream = out[stage] = fingerprint(params, source, stage, upstream)
    return out


# ------------------------------------------------------------------------------------------------ one task
def process_source_stage(stage: str, params: Params, source: Source, roots: Roots, fingerprint: str | None = None) -> dict:
    """Run one stage for one source (what each Ray task runs): the stage's pure function writes
    `roots.out(stage, name)` atomically, then its status record, stamped with `fingerprint`, is written last into
    that folder and to `roots.status_file(stage, name)`. Returns the record."""
    module, function = STAGE_FUNCTIONS[stage]
    run = getattr(importlib.import_module(module), function)
    out = roots.out(stage, source.name)
    limit_threads()
    with in_stage(stage):
        return run_and_record(run, params, source, out, roots.inputs(stage, source.name),
                              roots.status_file(stage, source.name), fingerprint)


def record_failure(stage: str, source: Source, roots: Roots, category: str, reason: str) -> dict:
    """What the driver writes when a task could not run to its end (its worker or node kept dying): an empty
    output folder and a failed record without fingerprint, so the next run retries it."""
    out = roots.out(stage, source.name)
    with atomic_dir(out):
        pass
    record = status_record(source.name, stage, category, reason)
    write_status(out, roots.status_file(stage, source.name), record)
    return record


def read_record(path: Path) -> dict | None:
    """A status record, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def current_record(roots: Roots, stage: str, name: str, expected: str) -> dict | None:
    """The stored record of (name, stage) if both copies carry fingerprint `expected`, else None (stale)."""
    record = read_record(roots.out(stage, name) / "status.json")
    if record is None or record.get("fingerprint") != expected:
        return None
    return record if read_record(roots.status_file(stage, name)) == record else None


# ------------------------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    """`done[stage][name]`: records of up-to-date (source, stage); `todo[name]`: the stale stages of a source in
    order, with their fingerprints."""

    done: dict[str, dict[str, dict]]
    todo: dict[str, list[tuple[str, str]]]

    @property
    def n_tasks(self) -> int:
        return sum(len(stages) for stages in self.todo.values())


def plan(params: Params, roots: Roots, stages: tuple[str, ...] = STAGES) -> Plan:
    """Which (source, stage) of `stages` are up to date and which must run (module docstring, 2.)."""
    done: dict[str, dict[str, dict]] = {stage: {} for stage in stages}
    todo: dict[str, list[tuple[str, str]]] = {}
    for source in params.sources:
        stale = False
        for stage, expected in fingerprints(params, source).items():
            if stage not in stages:
                continue
            record = None if stale else current_record(roots, stage, source.name, expected)
            if record is None:
                stale = True
                todo.setdefault(source.name, []).append((stage, expected))
            else:
                done[stage][source.name] = record
    return Plan(done, todo)


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old"))


def remove_stale(params: Params, roots: Roots) -> list[str]:
    """Delete the outputs and status records of sources no longer in params, and every temporary a killed run
    left at the roots; returns the removed source names. Only entries named like a source are touched."""
    keep = {source.name for source in params.sources}
    removed: set[str] = set()
    folders = [(Path(root), "") for root in (roots.raw, roots.frames, roots.masks)]  # <name>/
    folders += [(Path(roots.status) / stage, ".json") for stage in STAGES]  # <name>.json
    for folder, suffix in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name.removesuffix(suffix)
            if _is_temporary(entry.name):
                pass
            elif re.fullmatch(SOURCE_NAME, name) and name not in keep:
                removed.add(name)
            else:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return sorted(removed)


# ------------------------------------------------------------------------------------------------ Ray
def _after(upstream, stage: str, params: Params, source: Source, roots: Roots, fingerprint: str) -> dict:
    """Ray task body: `upstream` (the previous stage's record, resolved by Ray) only orders the chain."""
    return process_source_stage(stage, params, source, roots, fingerprint)


def task_resources(params: Params, stage: str) -> dict:
    """What a task of `stage` declares to Ray: CPUs, and a GPU for detectron2 masks on a CUDA device."""
    resources = {"num_cpus": params.ray.cpus_per_task}
    if stage == "masks" and params.masks.backend == "detectron2" and params.masks.detectron2.device.startswith("cuda"):
        resources["num_gpus"] = 1
    return resources


def start_ray(params: Params, address: str | None = None):
    """`ray.init` on `address`, else params' ray.address, else RAY_ADDRESS, else a new local cluster. When joining
    an existing cluster the `pipeline` package travels with the job (runtime_env py_modules), so the workers run
    the code the fingerprints name."""
    import ray

    address = address or params.ray.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    if address is None:
        kwargs["num_cpus"] = params.ray.num_cpus
    else:
        kwargs["runtime_env"] = {"py_modules": [str(PACKAGE_DIR)]}
    ray.init(address=address, **kwargs)
    return ray


class Progress:
    """One tqdm bar per stage over sources: done / failed / running (running: started or waiting for a CPU)."""

    def __init__(self, stages: tuple[str, ...], total: int, done: dict[str, dict[str, dict]], enabled: bool):
        from tqdm import tqdm

        self.counts = {stage: Counter(r["status"] for r in done[stage].values()) for stage in stages}
        self.bars = {stage: tqdm(total=total, desc=f"{stage:>8}", unit="source", position=k, disable=not enabled,
                                 initial=len(done[stage]), file=sys.stderr, dynamic_ncols=True)
                     for k, stage in enumerate(stages)}
        self.running = Counter()
        for stage in stages:
            self._show(stage)

    def _show(self, stage: str) -> None:
        c = self.counts[stage]
        self.bars[stage].set_postfix_str(f"ok {c['ok']}, failed {c['failed']}, running {self.running[stage]}", refresh=False)

    def start(self, stage: str) -> None:
        self.running[stage] += 1
        self._show(stage)

    def finish(self, stage: str, record: dict) -> None:
        self.running[stage] -= 1
        self.counts[stage][record["status"]] += 1
        self.bars[stage].update(1)
        self._show(stage)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run_sources(params: Params, roots: Roots, *, stages: tuple[str, ...] = STAGES, address: str | None = None,
                progress: bool = True, keep_ray: bool = False) -> dict[str, list[dict]]:
    """Bring every source's `stages` up to date (module docstring); return {stage: records in params order}.

    With `keep_ray` an already connected Ray (a test's cluster) is used and left running; otherwise Ray is
    started here when there is work and shut down at the end.
    """
    roots = roots.absolute()
    removed = remove_stale(params, roots)
    work = plan(params, roots, stages)
    if progress:
        print(f"sources: {len(params.sources)} sources, {len(work.todo)} to process ({work.n_tasks} tasks)"
              + (f", removed {len(removed)} no longer in params" if removed else ""), file=sys.stderr)
    records = {stage: dict(done) for stage, done in work.done.items()}
    fault_point("planned")  # stale outputs removed, nothing started
    bars = Progress(stages, len(params.sources), work.done, progress)
    try:
        if work.n_tasks:
            records = _run_on_ray(params, roots, work, records, bars, address=address, keep_ray=keep_ray)
    finally:
        bars.close()
    return {stage: [records[stage][s.name] for s in params.sources if s.name in records[stage]] for stage in stages}


def _run_on_ray(params, roots, work: Plan, records, bars: Progress, *, address, keep_ray) -> dict:
    import ray
    from ray.exceptions import RayError

    started = False
    if not (keep_ray and ray.is_initialized()):
        start_ray(params, address)
        started = True
    try:
        task = ray.remote(_after)
        params_ref = ray.put(params)
        sources = {s.name: s for s in params.sources}
        pending: dict = {}  # ObjectRef -> (name, position in its chain)
        chains: dict[str, list] = {}
        for name, stages in work.todo.items():
            upstream = None
            chain = []
            for stage, expected in stages:
                options = {**task_resources(params, stage), "max_retries": params.ray.max_retries,
                           "retry_exceptions": False, "name": f"{stage}:{name}"}
                upstream = task.options(**options).remote(upstream, stage, params_ref, sources[name], roots, expected)
                chain.append(upstream)
            chains[name] = chain
            pending[chain[0]] = (name, 0)
            bars.start(stages[0][0])
        while pending:
            refs = list(pending)
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            if ready:  # and every other result already there, so a loop pass is not one result per 1000 refs
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                name, k = pending.pop(ref)
                stage = work.todo[name][k][0]
                try:
                    record = ray.get(ref)
                except RayError as err:  # the task's worker/node died more than max_retries times, or it raised
                    reason = f"Ray task {stage}:{name} failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                    record = record_failure(stage, sources[name], roots, "error", reason)
                    for later, _ in work.todo[name][k + 1:]:  # its downstream tasks fail with it: say why
                        records[later][name] = record_failure(later, sources[name], roots, "upstream_failed",
                                                              f"{stage} did not run to its end")
                        bars.start(later)
                        bars.finish(later, records[later][name])
                    records[stage][name] = record
                    bars.finish(stage, record)
                    continue
                records[stage][name] = record
                bars.finish(stage, record)
                fault_point("task.done")  # a task's outputs are written, others are in flight
                if k + 1 < len(chains[name]):
                    pending[chains[name][k + 1]] = (name, k + 1)
                    bars.start(work.todo[name][k + 1][0])
    finally:
        if started:
            ray.shutdown()
    return records


# ------------------------------------------------------------------------------------------------ summary + CLI
def summary(results: dict[str, list[dict]]) -> dict:
    """The DVC metric: per stage, ok / failed counts and failures by category (no times: reruns are identical)."""
    out = {}
    for stage, records in results.items():
        failed = Counter(r.get("category", "error") for r in records if r["status"] != "ok")
        out[stage] = {"sources": len(records), "ok": sum(r["status"] == "ok" for r in records),
                      "failed": sum(failed.values()), "categories": dict(sorted(failed.items()))}
    return out


def digests(results: dict[str, list[dict]]) -> dict[str, str]:
    """{source name: sha256 of its status records}: the stand-in for data/raw, frames and masks as the later
    stages' DVC dependency. A record carries its stage's fingerprint and outputs are a function of it, so the
    digest changes exactly when a source's outputs do, and DVC compares one small file instead of hashing
    thousands of files for each stage that reads them."""
    by_source: dict[str, list[dict]] = {}
    for stage in STAGES:
        for record in results.get(stage, []):
            by_source.setdefault(record["source"], []).append(record)
    return {name: hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
            for name, records in sorted(by_source.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BigTime per-source work (download, frames, masks) on Ray")
    parser.add_argument("--raw", required=True, type=Path, help="download outputs, one folder per source")
    parser.add_argument("--frames", required=True, type=Path, help="frames outputs, one folder per source")
    parser.add_argument("--masks", required=True, type=Path, help="masks outputs, one folder per source")
    parser.add_argument("--status", required=True, type=Path, help="status records <stage>/<name>.json and sources.json")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: params ray.address, "
                                                       "RAY_ADDRESS, else a local cluster)")
    parser.add_argument("--no-progress", action="store_true")
    args, params = parse_with_params(parser, argv)
    roots = Roots(args.raw, args.frames, args.masks, args.status)
    started = time.monotonic()
    results = run_sources(params, roots, address=args.address, progress=not args.no_progress)
    atomic_write_json(Path(args.status) / DIGESTS, digests(results))
    atomic_write_json(Path(args.status) / SUMMARY, summary(results))
    for stage, records in results.items():
        print(summary_line(stage, records), file=sys.stderr)
    print(f"sources: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
