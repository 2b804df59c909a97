"""Shards stage: every accepted sequence -> WebDataset tar shards + Parquet + manifest (`data/shards/`).

Consumes, for each source in params.yaml's `sources` (in name order): `data/frames/<name>/` (`NNNN.png` 8-bit
sRGB, `meta.json`, optional `groundtruth.npz`, `status.json`) and `data/masks/<name>/` (`NNNN.png` mode "1",
`meta.json`, `status.json`), and the `shards` params section. A sequence is used when both statuses are "ok"
and its files read back; every other source gets a status row with a category and reason.

Produces, in a folder built whole in a temp sibling and swapped in (`pipeline.atomic.atomic_dir`), so a
killed run leaves the previous output or nothing and a rerun writes the same bytes:
- `train-%06d.tar`, `val-%06d.tar`: WebDataset shards, `shards.sequences_per_shard` sequences each, one sample
  per sequence in the layout of `pipeline/shard_format.py` (frame/mask PNG bytes copied verbatim, the
  multiscale shading-smoothness weights precomputed over all frames with
  `pipeline.shading_weights.weights_from_params`, meta JSON, synthetic ground truth). Tar members have
  mtime 0, uid/gid 0, fixed names, sorted order.
- `parquet/train.parquet`, `parquet/val.parquet`: the same samples, one row (and one row group) per sequence
  (`shard_format.row_from_sample`: key, frames list<binary>, masks list<binary>, weights, meta, groundtruth);
  `parquet/sequences.parquet`: one metadata row per sequence (key, split, shard, source, scene, licence, size,
  n_frames, per-frame time_s / frame_index / mean_log_lum / valid_fraction).
- `manifest.json`: per split the shards (file, sha256, bytes, keys), the Parquet files with sha256, the split
  rule, the params, dataset statistics (frame sizes, mean log-luminance, valid fraction, mean weight per
  scale) and the skipped sources. No timestamps or absolute paths: equal inputs give an equal manifest.
The stats JSON (`--stats`, a DVC metric) lists every source's status row and the counts.

Split: a sequence is "val" iff it is listed in `shards.val_sequences` (when that is non-empty: a cross-object
fold), else iff sha256(f"{seed}:{name}")[:8] / 2**64 < val_fraction (stable when sources are added; not a
shuffle). Exit status 1 (with the reasons on stderr) when no sequence succeeded, or when a name in
`shards.val_sequences` has no sample (`MissingValSequences`; the old shards are kept).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, read_status, status_record
from pipeline.code_closure import imported_modules, source_digest
from pipeline.color import luminance, srgb_to_linear
from pipeline.params import ShardsParams
from pipeline.shard_format import (
    FORMAT_VERSION, META_EXT, SampleFormatError, decode_png_mask, decode_png_rgb, encode_sample, load_npz,
    row_from_sample, sha256_file,
)
from pipeline.shading_weights import weights_from_params

STAGE = "shards"
SPLITS = ("train", "val")
SHARD_PATTERN = "{split}-{index:06d}.tar"
LOG_LUM_EPS = 1e-3  # same as the frames stage's mean_log_lum


class ShardsError(RuntimeError):
    """A source cannot be used: `category` (pipeline.atomic.FAILURE_CATEGORIES) and a reason."""

    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category, self.reason = category, reason


class MissingValSequences(RuntimeError):
    """Sequences named in `shards.val_sequences` produced no sample: the split they define would silently change
    (a cross-object fold scored on nothing), so no shards are written. `reasons`: {name: why}."""

    def __init__(self, reasons: dict[str, str]):
        super().__init__("shards.val_sequences: " + "; ".join(f"{n}: {r}" for n, r in reasons.items()))
        self.reasons = reasons


# --------------------------------------------------------------------------------------------- pure parts
def split_of(name: str, seed: int, val_fraction: float, val_sequences=()) -> str:
    """"val" iff the name is in val_sequences (when that is non-empty) or else iff the seeded hash of the name
    falls below val_fraction (independent of the other names)."""
    if val_sequences:
        return "val" if name in val_sequences else "train"
    u = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


@dataclass
class SequenceInput:
    """One source's files, read and checked. frames (n,H,W,3) uint8 sRGB; masks (n,H,W) bool (True = valid)."""

    name: str
    frame_png: list[bytes]
    mask_png: list[bytes]
    frames: np.ndarray
    masks: np.ndarray
    frames_meta: dict
    groundtruth: dict | None


def _upstream(folder: Path, stage: str) -> None:
    status = read_status(folder / "status.json")
    if status is None:
        raise ShardsError("upstream_failed", f"{stage}: no status.json (stage not run for {folder.name}?)")
    if status.get("status") != "ok":
        raise ShardsError("upstream_failed", f"{stage} failed ({status.get('category')}): {status.get('reason', '')}")


def _decode(decoder, data: bytes, path: Path) -> np.ndarray:
    """decoder(data), or ShardsError("corrupt") naming `path` as <stage>/<source>/<file>."""
    try:
        return decoder(data)
    except (SampleFormatError, ValueError, OSError) as err:
        raise ShardsError("corrupt", f"{path.parent.parent.name}/{path.parent.name}/{path.name}: {err}") from None


@dataclass
class RawSequence:
    """One source's files as bytes (statuses checked, nothing decoded yet)."""

    name: str
    files: list[str]  # frame (and mask) file names, in time order
    frame_png: list[bytes]
    mask_png: list[bytes]
    frames_meta: dict
    groundtruth_npz: bytes | None


def read_raw(name: str, frames_dir: Path, masks_dir: Path) -> RawSequence:
    """Read one source's frame/mask PNG bytes, frames meta and ground truth (statuses must be ok); raises
    ShardsError with a category."""
    _upstream(frames_dir, "frames")
    _upstream(masks_dir, "masks")
    try:
        frames_meta = json.loads((frames_dir / "meta.json").read_text()) if (frames_dir / "meta.json").exists() else {}
        names = [f["file"] for f in frames_meta.get("frames", [])] or sorted(
            p.name for p in frames_dir.glob("[0-9][0-9][0-9][0-9].png"))
        if not names:
            raise ShardsError("too_few_frames", f"no frames in frames/{name}")
        frame_png = [(frames_dir / n).read_bytes() for n in names]
        mask_png = [(masks_dir / n).read_bytes() for n in names]
        gt_path = frames_dir / "groundtruth.npz"
        groundtruth = gt_path.read_bytes() if gt_path.exists() else None
    except FileNotFoundError as err:
        where = Path(err.filename or "?")
        raise ShardsError("corrupt", f"missing file {where.parent.parent.name}/{where.parent.name}/{where.name}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ShardsError("corrupt", f"{type(err).__name__}: {err}") from None
    return RawSequence(name, names, frame_png, mask_png, frames_meta, groundtruth)


def decode_sequence(raw: RawSequence, frames_dir: Path, masks_dir: Path) -> SequenceInput:
    """Decode and check a RawSequence (PNG files named in errors as <stage>/<source>/<file>)."""
    frames = np.stack([_decode(decode_png_rgb, b, frames_dir / n) for b, n in zip(raw.frame_png, raw.files)])
    masks = np.stack([_decode(decode_png_mask, b, masks_dir / n) for b, n in zip(raw.mask_png, raw.files)])
    if masks.shape != frames.shape[:3]:
        raise ShardsError("corrupt", f"masks {masks.shape[1:]} and frames {frames.shape[1:3]} differ in size")
    groundtruth = None
    if raw.groundtruth_npz is not None:
        try:
            groundtruth = load_npz(raw.groundtruth_npz)
        except (SampleFormatError, ValueError, OSError) as err:
            raise ShardsError("corrupt", f"frames/{raw.name}/groundtruth.npz: {err}") from None
        bad = [k for k, a in groundtruth.items() if k in ("reflectance", "shading") and a.shape[:3] != frames.shape[:3]]
        if bad:
            raise ShardsError("corrupt", f"groundtruth.npz {bad} not aligned with the {frames.shape[:3]} frames")
    return SequenceInput(raw.name, raw.frame_png, raw.mask_png, frames, masks, raw.frames_meta, groundtruth)


def read_sequence(name: str, frames_dir: Path, masks_dir: Path) -> SequenceInput:
    """Read and decode one source's frames and masks (statuses must be ok); raises ShardsError with a category."""
    return decode_sequence(read_raw(name, frames_dir, masks_dir), frames_dir, masks_dir)


def log_luminance(frames: np.ndarray) -> np.ndarray:
    """(n,H,W,3) uint8 sRGB -> (n,H,W) natural log of linear Rec.709 luminance, clamped at LOG_LUM_EPS."""
    return np.log(np.maximum(luminance(srgb_to_linear(frames.astype(np.float64) / 255.0)), LOG_LUM_EPS))


def build_sample(seq: SequenceInput, params: ShardsParams) -> tuple[dict, dict]:
    """SequenceInput -> (sample dict in the shard_format layout, metadata row for sequences.parquet/stats)."""
    srgb = seq.frames.astype(np.float32) / 255.0
    weights = weights_from_params(srgb, params)
    n, h, w = seq.frames.shape[:3]
    log_lum = log_luminance(seq.frames).reshape(n, -1).mean(axis=1)
    valid = seq.masks.reshape(n, -1).mean(axis=1)
    rows = seq.frames_meta.get("frames") or [{"file": f"{i:04d}.png", "index": i, "time_s": float(i)} for i in range(n)]
    frames_rows = [{"file": r.get("file", f"{i:04d}.png"), "index": int(r.get("index", i)),
                    "time_s": float(r.get("time_s", i)), "mean_log_lum": round(float(log_lum[i]), 6),
                    "valid_fraction": round(float(valid[i]), 6)} for i, r in enumerate(rows)]
    meta = {
        "source": seq.name, "scene": seq.frames_meta.get("scene", ""), "licence": seq.frames_meta.get("licence", ""),
        "attribution": seq.frames_meta.get("attribution", ""), "url": seq.frames_meta.get("url", ""),
        "width": int(w), "height": int(h), "frames": frames_rows,
        "weights": {"scales": params.shading_scales, "reduce": params.shading_weights.reduce,
                    "params": params.shading_weights.model_dump()},
    }
    sample = encode_sample(seq.name, seq.frame_png, seq.mask_png, weights, meta, seq.groundtruth)
    info = {
        "key": seq.name, "source": seq.name, "scene": meta["scene"], "licence": meta["licence"], "width": int(w),
        "height": int(h), "n_frames": int(n), "synthetic": seq.groundtruth is not None,
        "time_s": [r["time_s"] for r in frames_rows], "frame_index": [r["index"] for r in frames_rows],
        "mean_log_lum": [float(x) for x in log_lum], "valid_fraction": [float(x) for x in valid],
        "weight_mean": [float(np.mean(x)) for x in weights],
    }
    return sample, info


# --------------------------------------------------------------------------------------------- sample cache
# Encoded samples keyed by everything that makes them, so adding one source to a large dataset encodes that
# source only. A cache entry is `<key>.tar` (uncompressed: the sample's members plus INFO_MEMBER). The cache
# is a build cache beside the DVC outputs, never an output: deleting it only costs time.
INFO_MEMBER = "__info__.json"
SPLIT_PARAMS = {"sequences_per_shard", "val_fraction", "val_sequences", "seed"}  # how samples are packed, not made


@lru_cache(maxsize=None)
def _cache_code_digest() -> bytes:
    """sha256 of the code that makes a sample: this module's import closure (pipeline/code_closure.py) less
    pipeline.params, whose values are hashed instead."""
    modules = imported_modules("pipeline.shards", packages=("pipeline",)) - {"pipeline.params"}
    return bytes.fromhex(source_digest(modules))


def sample_cache_key(raw: RawSequence, params: ShardsParams) -> str:
    """sha256 hex over the code (`_cache_code_digest`), the sample-making shards params, the name and every input
    byte."""
    digest = hashlib.sha256(_cache_code_digest())
    digest.update(json.dumps(params.model_dump(mode="json", exclude=SPLIT_PARAMS), sort_keys=True).encode() + b"\0")
    digest.update(raw.name.encode() + b"\0" + json.dumps(raw.frames_meta, sort_keys=True).encode() + b"\0")
    for chunk in [*raw.frame_png, *raw.mask_png, raw.groundtruth_npz or b"-"]:
        digest.update(len(chunk).to_bytes(8, "big") + chunk)
    return digest.hexdigest()


def load_cached(cache_dir: Path, key: str) -> tuple[dict, dict] | None:
    """(sample, info) from `<cache_dir>/<key>.tar`, or None when absent or unreadable (then rebuilt)."""
    import tarfile

    path = Path(cache_dir) / f"{key}.tar"
    try:
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        info = json.loads(members.pop(INFO_MEMBER))
    except (OSError, tarfile.TarError, KeyError, ValueError, AttributeError):
        return None
    return {"__key__": info["key"], **members}, info


def store_cached(cache_dir: Path, key: str, sample: dict, info: dict) -> None:
    """Write `<cache_dir>/<key>.tar` atomically."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = {**{k: v for k, v in sample.items() if k != "__key__"}, INFO_MEMBER: json.dumps(info).encode()}
        for name, data in sorted(entries.items()):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    atomic_write_bytes(Path(cache_dir) / f"{key}.tar", buffer.getvalue())


def prune_cache(cache_dir: Path, keep: set[str]) -> None:
    """Delete cache entries not in `keep` (the keys of the last build) and leftovers of killed writes."""
    for entry in Path(cache_dir).iterdir() if Path(cache_dir).is_dir() else []:
        if entry.is_file() and (entry.name.startswith(".") or entry.name.removesuffix(".tar") not in keep):
            entry.unlink(missing_ok=True)


def make_sample(name: str, frames_dir: Path, masks_dir: Path, params: ShardsParams,
                cache_dir: Path | None = None) -> tuple[dict, dict, str | None]:
    """(sample, info, cache key) of one source, from the cache when its key is there."""
    raw = read_raw(name, frames_dir, masks_dir)
    key = sample_cache_key(raw, params) if cache_dir is not None else None
    cached = load_cached(cache_dir, key) if key is not None else None
    if cached is not None:
        return cached[0], cached[1], key
    sample, info = build_sample(decode_sequence(raw, frames_dir, masks_dir), params)
    if key is not None:
        store_cached(cache_dir, key, sample, info)
    return sample, info, key


def _file_entry(path: Path, root: Path) -> dict:
    return {"file": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def statistics(infos: list[dict]) -> dict:
    """Dataset statistics over the written sequences (for the manifest; rounded for stable JSON)."""
    if not infos:
        return {"n_sequences": 0, "n_frames": 0}
    lum = np.concatenate([i["mean_log_lum"] for i in infos])
    valid = np.concatenate([i["valid_fraction"] for i in infos])
    sizes: dict[str, int] = {}
    for i in infos:
        sizes[f"{i['width']}x{i['height']}"] = sizes.get(f"{i['width']}x{i['height']}", 0) + 1
    r = lambda x: round(float(x), 6)  # noqa: E731
    return {
        "n_sequences": len(infos), "n_frames": int(lum.size), "n_synthetic": sum(i["synthetic"] for i in infos),
        "frame_sizes": dict(sorted(sizes.items())),
        "scenes": {s: sum(i["scene"] == s for i in infos) for s in sorted({i["scene"] for i in infos})},
        "mean_log_lum": r(lum.mean()), "std_log_lum": r(lum.std()),
        "mean_log_lum_span": r(np.mean([max(i["mean_log_lum"]) - min(i["mean_log_lum"]) for i in infos])),
        "mean_valid_fraction": r(valid.mean()), "min_valid_fraction": r(valid.min()),
        "mean_weight_per_scale": [r(np.mean([i["weight_mean"][l] for i in infos])) for l in range(len(infos[0]["weight_mean"]))],
    }


# --------------------------------------------------------------------------------------------- writing
def _metadata_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("split", pa.string()), ("shard", pa.string()), ("source", pa.string()),
        ("scene", pa.string()), ("licence", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("n_frames", pa.int32()), ("synthetic", pa.bool_()), ("time_s", pa.list_(pa.float64())),
        ("frame_index", pa.list_(pa.int64())), ("mean_log_lum", pa.list_(pa.float64())),
        ("valid_fraction", pa.list_(pa.float64())),
    ])


def _sample_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("frames", pa.list_(pa.binary())), ("masks", pa.list_(pa.binary())),
        ("weights", pa.binary()), ("meta", pa.string()), ("groundtruth", pa.binary()),
    ])


class _SplitWriter:
    """Streams one split's samples into tar shards (`sequences_per_shard` each) and one Parquet file."""

    def __init__(self, root: Path, split: str, per_shard: int):
        import pyarrow.parquet as pq
        import webdataset as wds

        self._wds, self.root, self.split, self.per_shard = wds, root, split, per_shard
        self.shards: list[dict] = []
        self._tar = self._file = None
        self._parquet = pq.ParquetWriter(root / "parquet" / f"{split}.parquet", _sample_schema(), compression="none")

    def write(self, sample: dict) -> str:
        import pyarrow as pa

        if self._tar is None or len(self.shards[-1]["keys"]) >= self.per_shard:
            self._close_tar()
            name = SHARD_PATTERN.format(split=self.split, index=len(self.shards))
            self._file = open(self.root / name, "wb")
            self._tar = self._wds.TarWriter(self._file, encoder=False, mtime=0, user="bigtime", group="bigtime")
            self.shards.append({"file": name, "keys": []})
        self._tar.write(sample)
        self.shards[-1]["keys"].append(sample["__key__"])
        self._parquet.write_table(pa.Table.from_pylist([row_from_sample(sample)], schema=_sample_schema()))
        return self.shards[-1]["file"]

    def _close_tar(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            self._tar = self._file = None

    def close(self) -> dict:
        self._close_tar()
        self._parquet.close()
        shards = [{**_file_entry(self.root / s["file"], self.root), "n_sequences": len(s["keys"]), "keys": s["keys"]}
                  for s in self.shards]
        return {"shards": shards, "n_sequences": sum(s["n_sequences"] for s in shards),
                "parquet": _file_entry(self.root / "parquet" / f"{self.split}.parquet", self.root)}


def build_shards(names: list[str], frames_root: Path, masks_root: Path, out_dir: Path, params: ShardsParams,
                 *, progress: bool = False, cache_dir: Path | None = None) -> tuple[dict | None, list[dict]]:
    """Write the whole shards folder atomically; return (manifest or None when nothing succeeded, status rows).
    With `cache_dir`, encoded samples are reused from / stored in that sample cache (pruned to this build).
    Raises MissingValSequences (the output folder left as it was) when a `params.val_sequences` name has no sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    names = sorted(set(names))
    split = {name: split_of(name, params.seed, params.val_fraction, params.val_sequences) for name in names}
    records: dict[str, dict] = {}
    infos: list[dict] = []
    used_keys: set[str] = set()
    out_dir = Path(out_dir)
    try:
        with atomic_dir(out_dir) as tmp:
            (tmp / "parquet").mkdir()
            writers = {s: _SplitWriter(tmp, s, params.sequences_per_shard) for s in SPLITS}
            for name in tqdm(names, desc=STAGE, unit="seq", disable=not progress):
                try:
                    sample, info, key = make_sample(name, Path(frames_root) / name, Path(masks_root) / name, params,
                                                    cache_dir)
                    used_keys.add(key)
                except ShardsError as err:
                    records[name] = status_record(name, STAGE, err.category, err.reason)
                    continue
                except Exception as err:  # noqa: BLE001 - one bad source must not stop the others
                    records[name] = status_record(name, STAGE, "error", f"{type(err).__name__}: {err}")
                    continue
                info.update(split=split[name], shard=writers[split[name]].write(sample))
                infos.append(info)
                records[name] = status_record(name, STAGE, split=split[name], shard=info["shard"], n_frames=info["n_frames"])
            splits = {s: w.close() for s, w in writers.items()}
            missing = {n: (f"no sequence ({records[n]['category']}: {records[n]['reason']})" if n in records
                           else "not a source in params.yaml") for n in params.val_sequences
                       if records.get(n, {}).get("status") != "ok"}
            if missing:
                raise MissingValSequences(missing)
            if not infos:
                raise _NothingWritten()
            meta_rows = [{k: i[k] for k in _metadata_schema().names} for i in infos]
            pq.write_table(pa.Table.from_pylist(meta_rows, schema=_metadata_schema()), tmp / "parquet" / "sequences.parquet",
                           compression="zstd")
            manifest = {
                "format": FORMAT_VERSION,
                "layout": "pipeline/shard_format.py: one sample per sequence; entries frameNNNN.png, maskNNNN.png, "
                          f"weights.npz, {META_EXT}, groundtruth.npz (synthetic)",
                "split_rule": ("val iff name in val_sequences" if params.val_sequences else
                               "val iff int(sha256(f'{seed}:{name}')[:8 bytes]) / 2**64 < val_fraction"),
                "params": params.model_dump(),
                "splits": {s: {**splits[s], "n_frames": sum(i["n_frames"] for i in infos if i["split"] == s),
                               "statistics": statistics([i for i in infos if i["split"] == s])} for s in SPLITS},
                "metadata": _file_entry(tmp / "parquet" / "sequences.parquet", tmp),
                "statistics": statistics(infos),
                "sequences": {i["key"]: {"split": i["split"], "shard": i["shard"], "n_frames": i["n_frames"],
                                         "width": i["width"], "height": i["height"], "synthetic": i["synthetic"]}
                              for i in infos},
                "skipped": [{"source": r["source"], "category": r["category"], "reason": r["reason"]}
                            for r in records.values() if r["status"] != "ok"],
            }
            atomic_write_json(tmp / "manifest.json", manifest)
    except _NothingWritten:
        return None, [records[n] for n in names]
    if cache_dir is not None:
        prune_cache(cache_dir, used_keys)
    return manifest, [records[n] for n in names]


class _NothingWritten(Exception):
    """No sequence succeeded: the output folder is left as it was."""


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import parse_with_params

    parser = argparse.ArgumentParser(description="BigTime shards stage: frames + masks -> WebDataset/Parquet shards")
    parser.add_argument("--frames", required=True, type=Path, help="frames root (one folder per source)")
    parser.add_argument("--masks", required=True, type=Path, help="masks root (one folder per source)")
    parser.add_argument("--out", required=True, type=Path, help="shards output folder")
    parser.add_argument("--stats", type=Path, default=None, help="stats JSON (a DVC metric)")
    parser.add_argument("--cache", type=Path, default=None, help="sample cache folder (a build cache, not an output)")
    parser.add_argument("--progress", action="store_true")
    args, params = parse_with_params(parser, argv)
    names = [s.name for s in params.sources]
    try:
        manifest, records = build_shards(names, args.frames, args.masks, args.out, params.shards,
                                         progress=args.progress, cache_dir=args.cache)
    except MissingValSequences as err:
        print(f"{STAGE}: {err}; nothing written to {args.out} (it is left as it was)", file=sys.stderr)
        return 1
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    stats = {"stage": STAGE, "status": "ok" if manifest else "failed", "n_sources": len(records), "n_ok": len(ok),
             "n_skipped": len(failed), "n_train": sum(r.get("split") == "train" for r in ok),
             "n_val": sum(r.get("split") == "val" for r in ok), "sources": records}
    if args.stats is not None:
        atomic_write_json(args.stats, stats)
    for r in failed:
        print(f"{STAGE}[{r['source']}]: skipped ({r['category']}) {r['reason']}", file=sys.stderr)
    if manifest is None:
        print(f"{STAGE}: no sequence succeeded ({len(records)} sources); nothing written to {args.out}", file=sys.stderr)
        return 1
    print(f"{STAGE}: {len(ok)} sequences ({stats['n_train']} train, {stats['n_val']} val), {len(failed)} skipped -> {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
