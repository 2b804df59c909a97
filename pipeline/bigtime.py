"""The published BigTime release as a source: read it, import one sequence, write `sources` entries for it.

The authors' release (`BigTime_v1`) is one folder per sequence, `<sequence>/data/<frame>.png` (some releases
`.jpg`), each frame with a grey mask beside it, `<frame>_mask.png` (8-bit, 255 = valid: the authors' manual and
semantic masks), possibly under one top folder, as a folder or a tar/zip archive. The official training list
(`bigtime_train_frames.csv`, columns `sequence,frame`, frame = file name in `data/`) says which frames were used.

Consumes a `Source` with `type: bigtime` (`url`: release folder or archive; `release_sequence`; optional
`frame_list`) and the `download` params. Produces, in the download folder (the layout of `type: images`, so the
frames stage reads it unchanged): `images/NNNNNN.<ext>` (the frame bytes as released, natural name order),
`release_masks/NNNNNN.png` (the mask bytes as released, only for frames that have one) and `info.json` {type:
"images", n_frames, width, height, files, url, bigtime: {sequence, frame_list, listed, masks [bool per image],
missing_masks [names], skipped [{file, reason}], missing_listed [names]}}.

Per frame: an unreadable frame is skipped (recorded in `skipped`); a frame without a mask keeps every pixel
(recorded in `missing_masks`; saturation and our own masks still apply downstream); a mask whose size differs
from its frame's, or that cannot be read, fails the source ("corrupt") with a reason naming both files.

CLI (writes the `sources` entries, one per sequence, so nobody types 212 of them):
``python -m pipeline.bigtime --release PATH [--list CSV] [--sequences S ...] [--prefix bigtime_]
[--out FILE | --params params.yaml]``: with `--list`, the sequences of the list (each entry gets
`frame_list`); otherwise every sequence found in the release. `--out` writes a YAML file holding `sources:`;
`--params` inserts the entries at the end of that file's `sources` list (comments kept), after validating
the result with the params schema. Neither touches an existing file unless the result is valid.
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.download import FetchError, _archive_members, _download_file, is_archive, local_path, to_url
from pipeline.params import SOURCE_NAME, DownloadParams, ParamsError, Source, validate_params

MASK_SUFFIX = "_mask.png"
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


# --------------------------------------------------------------------------------------------- frame list
def read_frame_list(path: str | Path) -> dict[str, list[str]]:
    """A `sequence,frame` CSV (header required) -> {sequence: [frame file names in file order]}.

    Raises ValueError naming the file and line for a missing header or an empty field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"frame list {path}: {err.strerror or err}") from None
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["sequence", "frame"]:
        raise ValueError(f"frame list {path}: first line must be the header 'sequence,frame', got {header!r}")
    out: dict[str, list[str]] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"frame list {path}, line {line}: expected 'sequence,frame', got {','.join(row)!r}")
        out.setdefault(row[0].strip(), []).append(row[1].strip())
    return out


# --------------------------------------------------------------------------------------------- the release
def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _split_member(relpath: str) -> tuple[str, str] | None:
    """'[top/]<sequence>/data/<file>' -> (sequence, file); None for anything else."""
    parts = PurePosixPath(relpath).parts
    if len(parts) >= 3 and parts[-2] == "data":
        return parts[-3], parts[-1]
    return None


@dataclass
class Release:
    """A release opened as {sequence: {file name in data/: reader}}; `read(sequence, name) -> bytes`.

    `where(sequence, name)` is the file as a user would find it (for messages): `<sequence>/data/<name>`.
    """

    label: str
    files: dict[str, dict[str, object]] = field(default_factory=dict)
    _archive: object = None

    def sequences(self) -> list[str]:
        return sorted(self.files, key=_natural_key)

    def where(self, sequence: str, name: str) -> str:
        return f"{sequence}/data/{name}"

    def read(self, sequence: str, name: str) -> bytes:
        handle = self.files[sequence][name]
        if isinstance(handle, Path):
            return handle.read_bytes()
        if isinstance(self._archive, zipfile.ZipFile):
            return self._archive.read(handle)
        member = self._archive.extractfile(handle)
        return member.read() if member is not None else b""

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

    def __enter__(self) -> "Release":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_release(path: Path) -> Release:
    """Index a release folder or tar/zip archive (raises pipeline.download.FetchError with a category)."""
    path = Path(path)
    if not path.exists():
        raise FetchError("not_found", f"{path} does not exist")
    release = Release(label=str(path))
    if path.is_dir():
        for data in path.glob("**/data"):
            if data.is_dir():
                for file in data.iterdir():
                    if file.is_file() and (hit := _split_member(file.relative_to(path).as_posix())):
                        release.files.setdefault(hit[0], {})[hit[1]] = file
        return release
    members = _archive_members(path)  # refuses unsafe member paths; keeps image members
    release._archive = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else tarfile.open(path)
    for name, handle in members:
        if hit := _split_member(name):
            release.files.setdefault(hit[0], {})[hit[1]] = handle
    return release


def sequence_frames(names: list[str]) -> list[str]:
    """The frame files among a `data/` folder's names (masks excluded), in natural order."""
    return sorted((n for n in names if n.lower().endswith(FRAME_EXTENSIONS) and not n.endswith(MASK_SUFFIX)),
                  key=_natural_key)


def mask_name(frame: str) -> str:
    """'0001.png' -> '0001_mask.png' (the release's mask beside its frame)."""
    return f"{PurePosixPath(frame).stem}{MASK_SUFFIX}"


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of fully decodable image bytes; raises OSError / ValueError otherwise."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


# --------------------------------------------------------------------------------------------- import
def fetch_bigtime(source: Source, dest: Path, params: DownloadParams) -> dict:
    """Import one release sequence into `dest` (images/, release_masks/, info.json); return the info dict.

    Raises pipeline.download.FetchError: not_found (no such sequence, no listed frame found, frame list
    unreadable), corrupt (a mask that is unreadable or whose size differs from its frame: both files named),
    not_media (no readable frame).
    """
    sequence = source.release_sequence
    listed = None
    if source.frame_list is not None:
        try:
            listed = read_frame_list(source.frame_list).get(sequence)
        except ValueError as err:
            raise FetchError("not_found", str(err)) from None
        if not listed:
            raise FetchError("not_found", f"sequence {sequence!r} is not in the frame list {source.frame_list}")
    with tempfile.TemporaryDirectory(prefix="bigtime-release-") as tmp:
        path = local_path(source.url)
        if path is None:
            path = _download_file(to_url(source.url), Path(tmp), params)
        elif path.is_file() and not (is_archive(path.name) or zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
            raise FetchError("not_media", f"{path} is neither a release folder nor a zip/tar archive")
        with open_release(path) as release:
            if sequence not in release.files:
                have = release.sequences()
                raise FetchError("not_found", f"no sequence {sequence!r} (<sequence>/data/) in {source.url} "
                                              f"({len(have)} sequences: {', '.join(have[:5])}{'...' if len(have) > 5 else ''})")
            available = release.files[sequence]
            frames = sequence_frames(list(available))
            missing_listed: list[str] = []
            if listed is not None:
                missing_listed = [f for f in listed if f not in available]
                frames = [f for f in listed if f in available]
                if not frames:
                    raise FetchError("not_found", f"none of the {len(listed)} listed frames of {sequence!r} is in "
                                                  f"{release.where(sequence, '')} ({', '.join(listed[:3])}...)")
            return _copy_sequence(release, sequence, frames, dest, source, listed, missing_listed)


def _copy_sequence(release: Release, sequence: str, frames: list[str], dest: Path, source: Source,
                   listed: list[str] | None, missing_listed: list[str]) -> dict:
    (dest / "images").mkdir()
    (dest / "release_masks").mkdir()
    kept: list[str] = []
    has_mask: list[bool] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[dict] = []
    for frame in frames:
        data = release.read(sequence, frame)
        try:
            size = _image_size(data)
        except (OSError, ValueError, SyntaxError) as err:
            skipped.append({"file": release.where(sequence, frame), "reason": f"not a readable image ({err})"})
            continue
        mask = mask_name(frame)
        mask_data = release.read(sequence, mask) if mask in release.files[sequence] else None
        if mask_data is not None:
            try:
                mask_size = _image_size(mask_data)
            except (OSError, ValueError, SyntaxError) as err:
                raise FetchError("corrupt", f"mask {release.where(sequence, mask)} of frame "
                                            f"{release.where(sequence, frame)} is not a readable image ({err})") from None
            if mask_size != size:
                raise FetchError("corrupt", f"mask {release.where(sequence, mask)} is {mask_size[0]}x{mask_size[1]} but its "
                                            f"frame {release.where(sequence, frame)} is {size[0]}x{size[1]}")
        position = len(kept)
        (dest / "images" / f"{position:06d}{PurePosixPath(frame).suffix.lower()}").write_bytes(data)
        if mask_data is not None:
            (dest / "release_masks" / f"{position:06d}.png").write_bytes(mask_data)
        kept.append(frame)
        has_mask.append(mask_data is not None)
        sizes.append(size)
    if not kept:
        raise FetchError("not_media", f"no readable frame in {release.where(sequence, '')} "
                                      f"({len(skipped)} unreadable)")
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        raise FetchError("corrupt", f"frames of one sequence differ in size: {release.where(sequence, kept[0])} is "
                                    f"{sizes[0][0]}x{sizes[0][1]}, {release.where(sequence, kept[odd])} is "
                                    f"{sizes[odd][0]}x{sizes[odd][1]}")
    info = {
        "type": "images", "n_frames": len(kept), "width": sizes[0][0], "height": sizes[0][1], "files": kept,
        "url": source.url,
        "bigtime": {"sequence": sequence, "frame_list": source.frame_list, "listed": listed is not None,
                    "masks": has_mask, "missing_masks": [f for f, m in zip(kept, has_mask) if not m],
                    "skipped": skipped, "missing_listed": missing_listed},
    }
    atomic_write_json(dest / "info.json", info)
    return info


# --------------------------------------------------------------------------------------------- sources
def source_name(sequence: str, prefix: str = "bigtime_") -> str:
    """A params source name for a release sequence: prefix + the name with other characters replaced by '_'."""
    name = prefix + re.sub(r"[^A-Za-z0-9_-]", "_", sequence)
    if not re.match(SOURCE_NAME, name):
        raise ValueError(f"cannot make a source name from prefix {prefix!r} and sequence {sequence!r}")
    return name


def source_entries(release_url: str, sequences: list[str], *, frame_list: str | None = None,
                   prefix: str = "bigtime_", scene: str = "outdoor") -> list[dict]:
    """One `sources` entry per sequence (type bigtime), validated by the Source schema; names unique."""
    entries, seen = [], set()
    for sequence in sequences:
        name = source_name(sequence, prefix)
        if name in seen:
            raise ValueError(f"sequences map to the same source name {name!r}; use distinct sequence names")
        seen.add(name)
        entry = {"name": name, "url": release_url, "type": "bigtime", "sequence": sequence, "scene": scene,
                 "licence": "BigTime release (Li & Snavely, CVPR 2018): see the release's terms",
                 "attribution": "Li & Snavely, BigTime"}
        if frame_list is not None:
            entry["frame_list"] = frame_list
        Source.model_validate(entry)
        entries.append(entry)
    return entries


def insert_sources(params_text: str, entries: list[dict]) -> str:
    """params.yaml text with `entries` appended to its top-level `sources:` list (other lines unchanged).

    Raises ParamsError when the file has no top-level `sources:` or the result does not validate (e.g. a name
    that is already there).
    """
    lines = params_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^sources:\s*(#.*)?$", line)), None)
    if start is None:
        raise ParamsError("params file has no top-level 'sources:' list")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^[A-Za-z_]", lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():  # keep the blank line(s) before the next section
        end -= 1
    item = next((re.match(r"^( *)- ", line) for line in lines[start + 1:end] if re.match(r"^ *- ", line)), None)
    indent = item.group(1) if item else "  "  # the existing entries' indentation (yaml.safe_dump uses none)
    block = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=1000)
    block = "".join(f"{indent}{line}" if line.strip() else line for line in block.splitlines(keepends=True))
    if lines and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    text = "".join(lines[:end]) + block + "".join(lines[end:])
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"the sources list could not be extended: {err}") from None
    validate_params(raw)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write params `sources` entries for a BigTime release")
    parser.add_argument("--release", required=True, help="the release folder or its tar/zip (becomes each entry's url)")
    parser.add_argument("--list", dest="frame_list", default=None, help="`sequence,frame` CSV: its sequences, its frames")
    parser.add_argument("--sequences", nargs="*", default=None, help="only these sequences")
    parser.add_argument("--prefix", default="bigtime_", help="source name prefix (default bigtime_)")
    parser.add_argument("--scene", default="outdoor", choices=("outdoor", "indoor"))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write a YAML file holding `sources:`")
    target.add_argument("--params", type=Path, help="append the entries to this params.yaml's sources")
    args = parser.parse_args(argv)
    try:
        if args.frame_list is not None:
            sequences = list(read_frame_list(args.frame_list))
        else:
            with open_release(Path(args.release)) as release:
                sequences = release.sequences()
        if args.sequences:
            unknown = [s for s in args.sequences if s not in sequences]
            if unknown:
                raise ValueError(f"--sequences {', '.join(unknown)} not in {args.frame_list or args.release}")
            sequences = [s for s in sequences if s in set(args.sequences)]
        if not sequences:
            raise ValueError(f"no sequences found in {args.frame_list or args.release}")
        entries = source_entries(args.release, sequences, frame_list=args.frame_list, prefix=args.prefix,
                                 scene=args.scene)
        if args.out is not None:
            atomic_write_text(args.out, yaml.safe_dump({"sources": entries}, sort_keys=False, width=1000))
        else:
            atomic_write_text(args.params, insert_sources(args.params.read_text(), entries))
    except (ValueError, OSError) as err:  # ParamsError is a ValueError
        parser.exit(2, f"error: {err}\n")
    except FetchError as err:  # from open_release: the release is missing, unsafe or not an archive
        parser.exit(2, f"error: {args.release}: {err.reason}\n")
    print(f"bigtime: {len(entries)} sources written to {args.out or args.params}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
