"""Download stage: one params `sources[i]` entry -> `data/raw/<name>/`.

Consumes a `Source` (http(s)://, file://, bare local path, or synthetic://SCENE; type "video" or "images")
and the `download` / `synthetic` params sections. Produces, in a folder built atomically:

- type video: `video.<ext>` (the bytes as fetched, unchanged) and `info.json` = the stable fields of yt-dlp's
  info dict (INFO_KEYS: id, title, uploader, licence... never the download time or a temp path; upload dates only
  for remote sources), `checksums` {file: sha256} of the fetched media, plus an ffprobe probe: `duration_s`
  (float seconds), `fps` (float frames/s), `width`, `height` (int pixels), `n_frames` (int, counted packets of
  the first video stream). A file whose readable
  packets fall short of the frame count its header declares, or that ffprobe reports as partial, is "corrupt"
  (a truncated download); an empty file is "corrupt" too.
- type images: `images/NNNNNN.<ext>` (6-digit position in natural-sort order of the original names) and
  `info.json` {type, n_frames, width, height (of the first image), files: original names in order}. A symlink
  in a source folder is refused ("unsafe": it could point anywhere); an unreadable image is "corrupt", named by
  its original name.
- type bigtime: one sequence of the BigTime release (`pipeline/bigtime.py`): `images/` as above plus
  `release_masks/NNNNNN.png` (the release's masks) and `info.json` with a `bigtime` record.
- synthetic://SCENE: the scene rendered by `pipeline.synthetic` and encoded as mp4 into a temp folder, then
  fetched like any file:// video; its `groundtruth.npz` (full-length linear arrays) is copied beside.

Every video goes through yt-dlp's Python API (bare paths become file:// URLs, allowed only with
`download.allow_local`); a server redirecting to file:// is "unsafe" and never followed. Failures are returned
as status records (`pipeline.atomic.status_record`) with a category from FAILURE_CATEGORIES: not_found, unreachable, not_media, corrupt, unsafe, refused, error.

CLI (pipeline/cli.py): ``python -m pipeline.download --index I --out-root data/raw [--status-root DIR]`` (one
source, as dvc.yaml runs it; writes `data/raw/<name>/`) or ``--all`` (every source, tqdm bar, one summary line,
non-zero exit only when no source succeeded).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlparse

import ffmpeg

from pipeline.atomic import atomic_dir, atomic_write_json, status_record
from pipeline.cli import run_all_sources, stage_main, summary_line  # noqa: F401 (summary_line re-exported)
from pipeline.params import SYNTHETIC_SCHEME, DownloadParams, Params, Source
from pipeline.shard_format import sha256_file

STAGE = "download"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Container signatures (offset, bytes): a file that has one but does not probe is "corrupt", not "not_media".
# yt-dlp info fields kept in info.json (stable facts about the video, not about this download).
INFO_KEYS = ("id", "title", "description", "uploader", "uploader_id", "channel", "license", "webpage_url",
             "original_url", "extractor", "extractor_key", "format_id", "format", "ext", "vcodec", "acodec",
             "duration", "width", "height", "fps")
REMOTE_INFO_KEYS = ("upload_date", "timestamp")  # for local files and renders these are the file's mtime
_VIDEO_MAGIC = ((4, b"ftyp"), (0, b"RIFF"), (0, b"\x1a\x45\xdf\xa3"), (0, b"OggS"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"))


class FetchError(Exception):
    """A per-source failure: `category` is one of pipeline.atomic.FAILURE_CATEGORIES."""

    def __init__(self, category: str, reason: str):
        super().__init__(f"{category}: {reason}")
        self.category = category
        self.reason = reason


# ------------------------------------------------------------------------------------------ helpers
def natural_key(name: str) -> list:
    """Sort key that orders 'img2' before 'img10' (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def to_url(url_or_path: str) -> str:
    """http(s)/file/synthetic URLs unchanged; a bare local path -> absolute file:// URL."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url_or_path):
        return url_or_path
    return Path(url_or_path).expanduser().resolve().as_uri()


def local_path(url: str) -> Path | None:
    """The filesystem path of a file:// URL or bare path; None for anything remote."""
    url = to_url(url)
    if not url.startswith("file://"):
        return None
    return Path(unquote(urlparse(url).path))


def check_policy(source: Source, params: DownloadParams) -> None:
    """Re-check what the schema already refuses: local sources need `download.allow_local`."""
    if source.is_local and not params.allow_local:
        raise FetchError("refused", f"{source.url!r} is local; set download.allow_local: true to allow it")
    path = local_path(source.url) if source.is_local else None
    if path is not None and not path.exists():
        raise FetchError("not_found", f"{path} does not exist")


def classify_ytdlp_error(err: BaseException, url: str = "") -> FetchError:
    """Map a yt-dlp DownloadError (or its cause) to a failure category with a one-line reason.

    A file: URL in the error of a remote (`url` http(s)) fetch is a redirect to a local file: "unsafe"."""
    cause = getattr(err, "exc_info", None)
    cause = cause[1] if cause and len(cause) > 1 else err
    message = str(err).replace("ERROR: ", "").strip().splitlines()[0] if str(err) else type(err).__name__
    message = re.sub(r" \(caused by .*\)$", "", message)
    if re.match(r"^https?://", url) and "file:" in f"{cause} {message}".lower():
        return FetchError("unsafe", f"refused a redirect to a local file:// URL ({message})")
    if "did not get any data blocks" in message.lower():
        return FetchError("corrupt", f"empty file (0 bytes): {message}")
    status = getattr(cause, "status", None) or getattr(cause, "code", None)
    if isinstance(status, int):
        return FetchError("not_found" if status in (404, 410) else "unreachable", f"HTTP {status}: {message}")
    text = f"{type(cause).__name__} {cause} {message}".lower()
    if isinstance(cause, FileNotFoundError) or "no such file" in text:
        return FetchError("not_found", message)
    if any(k in text for k in ("transporterror", "connection", "timed out", "timeout", "name or service", "unreachable")):
        return FetchError("unreachable", message)
    if "unsupported url" in text or "no video formats" in text:
        return FetchError("not_media", message)
    if "larger than max-filesize" in text or "max_filesize" in text:
        return FetchError("refused", message)
    return FetchError("error", message)


def _has_video_magic(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _VIDEO_MAGIC)


def ffprobe(path: Path) -> tuple[dict, list[str]]:
    """ffprobe the first video stream with packet counting: (parsed JSON, error lines); ffprobe's own failure
    (exit status) raises ffmpeg.Error as ffmpeg.probe does."""
    import subprocess

    args = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_format", "-show_streams",
            "-of", "json", str(path)]
    proc = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ffmpeg.Error("ffprobe", proc.stdout, proc.stderr)
    errors = [line.strip() for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
    return json.loads(proc.stdout.decode() or "{}"), errors


def probe_video(path: Path) -> dict:
    """ffprobe the first video stream: {duration_s, fps, width, height, n_frames, codec}; FetchError if not a video.

    n_frames counts demuxed packets (exact for intra/inter codecs alike, no decoding); fewer packets than the
    header declares, or a demuxer error ("partial file"), means a truncated file. One frame is also decoded to
    catch files whose headers parse but whose data does not.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise FetchError("corrupt", f"{path.name}: empty file (0 bytes)")
    try:
        probe, errors = ffprobe(path)
    except ffmpeg.Error as err:
        detail = (err.stderr or b"").decode(errors="replace").replace(str(path), path.name).strip().splitlines()
        detail = detail[-1] if detail else "ffprobe failed"
        if _has_video_magic(path):
            raise FetchError("corrupt", f"{path.name}: {detail}") from None
        raise FetchError("not_media", f"{path.name} is not a video ({detail})") from None
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise FetchError("not_media", f"{path.name} has no video stream")
    stream = streams[0]
    num, _, den = (stream.get("avg_frame_rate") or "0/0").partition("/")
    fps = float(num) / float(den) if den and float(den) else 0.0
    if fps <= 0:
        num, _, den = (stream.get("r_frame_rate") or "0/1").partition("/")
        fps = float(num) / float(den) if den and float(den) else 0.0
    n_frames = int(stream.get("nb_read_packets") or 0)
    declared = int(stream.get("nb_frames") or 0)
    duration = float(stream.get("duration") or probe.get("format", {}).get("duration") or 0.0)
    if duration <= 0 and fps > 0:
        duration = n_frames / fps
    if n_frames <= 0 or fps <= 0:
        raise FetchError("corrupt", f"{path.name}: no decodable video frames (n_frames={n_frames}, fps={fps:g})")
    partial = [e for e in errors if "partial file" in e or "truncat" in e.lower()]
    if 0 < n_frames < declared or partial:
        raise FetchError("corrupt", f"{path.name}: truncated: {n_frames} of {declared or '?'} declared frames readable"
                         + (f" (ffprobe: {partial[0].split('] ', 1)[-1]})" if partial else ""))
    try:
        ffmpeg.input(str(path)).output("pipe:", format="null", vframes=1).global_args("-nostdin").run(
            capture_stdout=True, capture_stderr=True
        )
    except ffmpeg.Error as err:
        detail = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        raise FetchError("corrupt", f"{path.name}: first frame does not decode ({detail[-1] if detail else '?'})") from None
    return {
        "duration_s": duration,
        "fps": fps,
        "width": int(stream["width"]),
        "height": int(stream["height"]),
        "n_frames": n_frames,
        "codec": stream.get("codec_name"),
    }


# ------------------------------------------------------------------------------------------ videos
def ytdlp_fetch(url: str, dest: Path, params: DownloadParams, *, allow_file_urls: bool) -> tuple[Path, dict]:
    """Fetch one video URL with yt-dlp into `dest/video.<ext>`; return (path, yt-dlp info dict)."""
    import yt_dlp

    max_bytes = int(params.max_filesize_mb * 1024 * 1024)
    options = {
        "outtmpl": {"default": str(dest / "video.%(ext)s")},
        "format": params.format,
        "enable_file_urls": allow_file_urls,
        "writeinfojson": True,
        "socket_timeout": params.timeout_s,
        "max_filesize": max_bytes,
        "retries": params.retries,
        "extractor_retries": params.retries,
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _QuietLogger(),
        "cachedir": False,
        "overwrites": True,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
            info = ydl.sanitize_info(info) if info is not None else None
    except (yt_dlp.utils.DownloadError, yt_dlp.networking.exceptions.RequestError) as err:
        raise classify_ytdlp_error(err, url) from None
    except OSError as err:  # e.g. a file:// URL that vanished
        raise FetchError("not_found" if isinstance(err, FileNotFoundError) else "unreachable", str(err)) from None
    if info is None:
        raise FetchError("not_media", f"yt-dlp found no video at {url}")
    if info.get("_type") == "playlist":
        raise FetchError("not_media", f"{url} is a playlist; give one video URL per source")
    downloads = info.get("requested_downloads") or []
    filepath = next((d.get("filepath") for d in downloads if d.get("filepath")), None)
    if filepath is None or not Path(filepath).exists():
        size = info.get("filesize") or info.get("filesize_approx")
        if size and size > max_bytes:
            raise FetchError("refused", f"{url} is {size / 2**20:.1f} MB > download.max_filesize_mb={params.max_filesize_mb:g}")
        raise FetchError("refused", f"yt-dlp downloaded nothing from {url} (larger than download.max_filesize_mb?)")
    path = Path(filepath)
    if path.stat().st_size > max_bytes:  # file:// and servers without Content-Length
        raise FetchError("refused", f"{path.name} is {path.stat().st_size / 2**20:.1f} MB > download.max_filesize_mb={params.max_filesize_mb:g}")
    return path, info


class _QuietLogger:
    """yt-dlp logger: errors surface as exceptions, so nothing is printed here."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = debug

    def error(self, msg: str) -> None:
        pass


def stable_info(info: dict, url: str, *, remote: bool) -> dict:
    """The INFO_KEYS of a yt-dlp info dict (plus REMOTE_INFO_KEYS when `remote`), `url` as given in params."""
    keep = INFO_KEYS + (REMOTE_INFO_KEYS if remote else ())
    out = {k: info[k] for k in keep if info.get(k) is not None}
    if not remote:
        out.update(webpage_url=url, original_url=url)
    return {**out, "url": url}


def fetch_video(url: str, dest: Path, params: DownloadParams, *, allow_file_urls: bool,
                shown_url: str | None = None) -> dict:
    """Fetch + probe one video into `dest` (video.<ext>, info.json); return the probe dict.

    `shown_url` replaces `url` in info.json (a render's temp path must not reach an output)."""
    path, info = ytdlp_fetch(to_url(url), dest, params, allow_file_urls=allow_file_urls)
    probe = probe_video(path)
    for stale in dest.glob("*.info.json"):
        stale.unlink()
    info = stable_info(info, shown_url or url, remote=shown_url is None and local_path(url) is None)
    info.update(probe, type="video", file=path.name, duration=probe["duration_s"], fps=probe["fps"],
                width=probe["width"], height=probe["height"])
    atomic_write_json(dest / "info.json", info)
    return probe


def fetch_synthetic(scene: str, dest: Path, params: Params, variant: int = 0) -> dict:
    """Render synthetic://SCENE[?variant=N], encode it, fetch its mp4 through yt-dlp (file://), copy groundtruth.npz."""
    from pipeline import synthetic

    shown_url = f"{SYNTHETIC_SCHEME}{scene}" + (f"?variant={variant}" if variant else "")
    with tempfile.TemporaryDirectory(prefix=f"synthetic-{scene}-") as tmp:
        sequence = synthetic.render_scene_from_params(scene, params.synthetic, variant=variant)
        synthetic.write_scene(sequence, Path(tmp), fps=params.synthetic.fps, crf=params.synthetic.crf)
        probe = fetch_video((Path(tmp) / "video.mp4").as_uri(), dest, params.download, allow_file_urls=True,
                            shown_url=shown_url)
        shutil.copyfile(Path(tmp) / "groundtruth.npz", dest / "groundtruth.npz")
    info = json.loads((dest / "info.json").read_text())
    info.update(synthetic={"scene": scene, **({"variant": variant} if variant else {}), **params.synthetic.model_dump()})
    atomic_write_json(dest / "info.json", info)
    return probe


# ------------------------------------------------------------------------------------------ images
def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unsafe_member(name: str) -> bool:
    """True for absolute paths, drive letters, or any '..' component (POSIX or Windows separators)."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or ".." in posix.parts or ".." in windows.parts


def _download_file(url: str, dest: Path, params: DownloadParams) -> Path:
    """Plain HTTP(S) download of an archive with timeout and size limit (yt-dlp is for videos)."""
    max_bytes = int(params.max_filesize_mb * 1024 * 1024)
    target = dest / (Path(urlparse(url).path).name or "archive")
    try:
        with urllib.request.urlopen(url, timeout=params.timeout_s) as response, target.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length and int(length) > max_bytes:
                raise FetchError("refused", f"{url} is {int(length) / 2**20:.1f} MB > download.max_filesize_mb={params.max_filesize_mb:g}")
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError("refused", f"{url} exceeds download.max_filesize_mb={params.max_filesize_mb:g}")
                out.write(chunk)
    except urllib.error.HTTPError as err:
        if "redirection to url" in str(err.msg).lower():
            raise FetchError("unsafe", f"{url}: refused a redirect ({err.msg})") from None
        raise FetchError("not_found" if err.code in (404, 410) else "unreachable", f"HTTP {err.code}: {url}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise FetchError("unreachable", f"{url}: {getattr(err, 'reason', err)}") from None
    return target


def _archive_members(archive: Path) -> list[tuple[str, object]]:
    """(name, handle) of every regular image member; FetchError(unsafe) on any unsafe member, corrupt on bad archive."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
            bad = [i.filename for i in infos if unsafe_member(i.filename)]
            members = [(i.filename, i) for i in infos if not i.is_dir()]
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                infos = tf.getmembers()
            bad = [i.name for i in infos if unsafe_member(i.name) or ((i.issym() or i.islnk()) and unsafe_member(i.linkname))]
            bad += [i.name for i in infos if i.isdev() or i.isfifo()]
            members = [(i.name, i) for i in infos if i.isfile()]
        else:
            raise FetchError("corrupt", f"{archive.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise FetchError("corrupt", f"{archive.name}: {err}") from None
    if bad:
        raise FetchError("unsafe", f"{archive.name} has members with absolute or '..' paths: {', '.join(bad[:3])}")
    return [(name, handle) for name, handle in members if name.lower().endswith(IMAGE_EXTENSIONS)]


def _verify_image(path: Path, name: str) -> tuple[int, int]:
    """(width, height) of the copied image `path`; FetchError naming the source's file `name` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        detail = str(err).replace(str(path), name)
        raise FetchError("corrupt", f"{name}: not a readable image ({detail})") from None


def fetch_images(url: str, dest: Path, params: DownloadParams) -> dict:
    """Copy a folder or archive of frames into `dest/images/NNNNNN.<ext>` (natural name order); write info.json."""
    images = dest / "images"
    images.mkdir()
    path = local_path(url)
    copied: list[tuple[str, Path]] = []
    with tempfile.TemporaryDirectory(prefix="download-images-") as tmp:
        if path is not None and path.is_dir():
            links = sorted(p.name for p in path.iterdir() if p.is_symlink())
            if links:
                raise FetchError("unsafe", f"{path} holds symlinks, which could point anywhere: {', '.join(links[:3])}")
            names = sorted((p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
            for i, name in enumerate(names):
                target = images / f"{i:06d}{Path(name).suffix.lower()}"
                shutil.copyfile(path / name, target)
                copied.append((name, target))
        else:
            if path is None:
                archive = _download_file(to_url(url), Path(tmp), params)
            elif is_archive(path.name) or zipfile.is_zipfile(path) or tarfile.is_tarfile(path):
                archive = path
            else:
                raise FetchError("not_media", f"{path} is neither a folder of images nor a zip/tar archive")
            members = sorted(_archive_members(archive), key=lambda m: natural_key(m[0]))
            opener = zipfile.ZipFile(archive) if zipfile.is_zipfile(archive) else tarfile.open(archive)
            with opener as handle:
                for i, (name, member) in enumerate(members):
                    target = images / f"{i:06d}{PurePosixPath(name).suffix.lower()}"
                    source = handle.open(member) if isinstance(handle, zipfile.ZipFile) else handle.extractfile(member)
                    with source, target.open("wb") as out:  # flattened: member paths are never written
                        shutil.copyfileobj(source, out)
                    copied.append((name, target))
    if not copied:
        raise FetchError("not_media", f"{url} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    sizes = [_verify_image(target, name) for name, target in copied]
    info = {"type": "images", "n_frames": len(copied), "width": sizes[0][0], "height": sizes[0][1],
            "files": [name for name, _ in copied], "url": url}
    atomic_write_json(dest / "info.json", info)
    return info


# ------------------------------------------------------------------------------------------ stage
def record_checksums(folder: Path) -> None:
    """Add `checksums` {relative path: sha256} of the fetched media (video.*, images/*) to folder/info.json; the
    frames stage checks them, so a raw file damaged after download is named, not silently decoded."""
    media = sorted(p for p in [*folder.glob("video.*"), *folder.glob("images/*")] if p.is_file())
    info = json.loads((folder / "info.json").read_text())
    info["checksums"] = {p.relative_to(folder).as_posix(): sha256_file(p) for p in media}
    atomic_write_json(folder / "info.json", info)


def download_source(params: Params, source: Source, out_dir: Path) -> dict:
    """Fetch one source into `out_dir` (built atomically); return its status record (never raises FetchError)."""
    out_dir = Path(out_dir)
    try:
        check_policy(source, params.download)
        with atomic_dir(out_dir) as tmp:
            if source.type == "bigtime":
                from pipeline.bigtime import fetch_bigtime  # bigtime imports this module's helpers

                info = fetch_bigtime(source, tmp, params.download)
                bt = info["bigtime"]
                summary = (f"bigtime {bt['sequence']}: {info['n_frames']} frames {info['width']}x{info['height']}, "
                           f"{len(bt['missing_masks'])} without mask, {len(bt['skipped'])} unreadable skipped")
            elif source.type == "images":
                if source.is_synthetic:
                    raise FetchError("refused", "synthetic:// sources are videos; set type: video")
                info = fetch_images(source.url, tmp, params.download)
                summary = f"{info['n_frames']} images {info['width']}x{info['height']}"
            elif source.is_synthetic:
                scene, variant = source.synthetic_scene
                probe = fetch_synthetic(scene, tmp, params, variant=variant)
                summary = f"synthetic {probe['n_frames']} frames {probe['width']}x{probe['height']} @ {probe['fps']:g} fps"
            else:
                probe = fetch_video(source.url, tmp, params.download, allow_file_urls=params.download.allow_local)
                summary = f"{probe['n_frames']} frames {probe['width']}x{probe['height']} @ {probe['fps']:g} fps"
            record_checksums(tmp)
    except FetchError as err:
        with atomic_dir(out_dir):  # replace any earlier output by an empty folder: nothing half-written
            pass
        return status_record(source.name, STAGE, err.category, err.reason, url=source.url)
    except Exception as err:  # noqa: BLE001 - one bad source must not stop the others
        with atomic_dir(out_dir):
            pass
        return status_record(source.name, STAGE, "error", f"{type(err).__name__}: {err}", url=source.url)
    return status_record(source.name, STAGE, url=source.url, summary=summary)


def download_all(params: Params, out_root: Path, status_root: Path | None = None, *, progress: bool = True) -> list[dict]:
    """Run `download_source` for every source into `out_root/<name>` with a tqdm bar; return the records."""
    return run_all_sources(STAGE, download_source, params, out_root, status_root, progress=progress)


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, download_source, argv)


if __name__ == "__main__":
    sys.exit(main())
