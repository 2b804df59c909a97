"""Download stage against real components: yt-dlp over a local http.server, ffmpeg-made videos, real archives.

References are independent of the code under test: the served bytes, ffprobe-free facts about the files the
test itself made (frame count, size, fps), and the names the test wrote.
"""
from __future__ import annotations

import functools
import http.server
import json
import socket
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.atomic import FAILURE_CATEGORIES, read_status
from pipeline.cli import write_status
from pipeline.download import check_policy, download_all, download_source, main, natural_key, summary_line
from pipeline.frames import extract_frames
from pipeline.params import DownloadParams, ParamsError, validate_params
from pipeline.synthetic import render_scene
from tests.conftest import shared_path

W, H, FPS, N = 160, 120, 10, 20


def make_video(path: Path, *, frames: int = N) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder served by http.server on 127.0.0.1 (random port): clip.mp4, notes.txt, frames.zip, evil.zip."""
    root = tmp_path_factory.mktemp("www")
    make_video(root / "clip.mp4")
    (root / "notes.txt").write_text("this is not a video\n" * 50)
    with zipfile.ZipFile(root / "frames.zip", "w") as zf:
        for i in (10, 2, 1):
            buf = _png_bytes(i)
            zf.writestr(f"seq/img{i}.png", buf)
    with zipfile.ZipFile(root / "evil.zip", "w") as zf:
        zf.writestr("ok.png", _png_bytes(1))
        zf.writestr("../evil.png", _png_bytes(2))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _png_bytes(value: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((12, 16, 3), value * 10, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _params(url: str, **extra):
    download = extra.pop("download", {})
    return validate_params({"sources": [{"name": "s", "url": url, **extra}],
                            "download": {"allow_local": True, "timeout_s": 10, "retries": 0, **download}})


def _run(url: str, out: Path, **extra) -> dict:
    params = _params(url, **extra)
    record = download_source(params, params.sources[0], out)
    write_status(out, None, record)
    return record


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_video_is_fetched_and_probed(served, tmp_path):
    root, base = served
    record = _run(f"{base}/clip.mp4", tmp_path / "raw")
    assert record["status"] == "ok", record
    out = tmp_path / "raw"
    assert (out / "video.mp4").read_bytes() == (root / "clip.mp4").read_bytes()
    info = json.loads((out / "info.json").read_text())
    assert (info["n_frames"], info["width"], info["height"]) == (N, W, H)
    assert info["fps"] == pytest.approx(FPS)
    assert info["duration_s"] == pytest.approx(N / FPS, abs=0.15)
    assert not list(out.glob("video.info.json")), "yt-dlp's own info json is folded into info.json"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folders left behind"


def test_file_url_needs_opt_in(served, tmp_path):
    root, _ = served
    url = (root / "clip.mp4").as_uri()
    with pytest.raises(ParamsError, match=r"sources\[0\]\.url"):
        validate_params({"sources": [{"name": "s", "url": url}]})
    params = _params(url)
    from pipeline.download import FetchError

    with pytest.raises(FetchError) as err:  # the stage re-checks what the schema refuses
        check_policy(params.sources[0], DownloadParams(allow_local=False))
    assert err.value.category == "refused"
    record = _run(url, tmp_path / "raw")
    assert record["status"] == "ok", record
    assert (tmp_path / "raw" / "video.mp4").read_bytes() == (root / "clip.mp4").read_bytes()
    bare = _run(str(root / "clip.mp4"), tmp_path / "bare")  # bare path -> file:// through yt-dlp
    assert bare["status"] == "ok", bare


@pytest.mark.parametrize(
    "path, category, words",
    [("missing.mp4", "not_found", "404"), ("notes.txt", "not_media", "not a video")],
)
def test_http_failures_become_status_records(served, tmp_path, path, category, words):
    _, base = served
    out = tmp_path / "raw"
    record = _run(f"{base}/{path}", out)
    assert record["status"] == "failed"
    assert record["category"] == category and category in FAILURE_CATEGORIES
    assert words in record["reason"]
    assert read_status(out / "status.json") == record
    assert sorted(p.name for p in out.iterdir()) == ["status.json"], "a failed source leaves no partial files"


def test_refused_connection_and_size_limit(served, tmp_path):
    _, base = served
    record = _run(f"http://127.0.0.1:{_closed_port()}/clip.mp4", tmp_path / "a")
    assert (record["status"], record["category"]) == ("failed", "unreachable"), record
    record = _run(f"{base}/clip.mp4", tmp_path / "b", download={"max_filesize_mb": 0.001})
    assert (record["status"], record["category"]) == ("failed", "refused"), record


def test_corrupt_local_video(served, tmp_path):
    root, _ = served
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((root / "clip.mp4").read_bytes()[:2000])
    record = _run(str(broken), tmp_path / "raw")
    assert (record["status"], record["category"]) == ("failed", "corrupt"), record


def test_images_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):
        Image.fromarray(np.full((12, 16, 3), i * 10, np.uint8)).save(folder / f"img{i}.png")
    (folder / "readme.txt").write_text("ignored")
    record = _run(str(folder), tmp_path / "raw", type="images")
    assert record["status"] == "ok", record
    images = sorted((tmp_path / "raw" / "images").iterdir())
    assert [p.name for p in images] == ["000000.png", "000001.png", "000002.png"]
    assert [int(np.asarray(Image.open(p))[0, 0, 0]) for p in images] == [10, 20, 100]
    info = json.loads((tmp_path / "raw" / "info.json").read_text())
    assert info["files"] == ["img1.png", "img2.png", "img10.png"] and (info["width"], info["height"]) == (16, 12)
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]


def test_archives_over_http(served, tmp_path):
    _, base = served
    record = _run(f"{base}/frames.zip", tmp_path / "ok", type="images")
    assert record["status"] == "ok", record
    values = [int(np.asarray(Image.open(p))[0, 0, 0]) for p in sorted((tmp_path / "ok" / "images").iterdir())]
    assert values == [10, 20, 100]
    record = _run(f"{base}/evil.zip", tmp_path / "evil", type="images")
    assert (record["status"], record["category"]) == ("failed", "unsafe"), record
    assert "../evil.png" in record["reason"]
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "evil" / "images").exists()


def test_cli_single_and_all(served, tmp_path, capsys):
    _, base = served
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps({
        "sources": [{"name": "good", "url": f"{base}/clip.mp4"}, {"name": "gone", "url": f"{base}/gone.mp4"}],
        "download": {"timeout_s": 10, "retries": 0},
    }))
    status = tmp_path / "status" / "good.json"
    assert main(["--params", str(params_file), "--name", "good", "--out-root", str(tmp_path / "one"),
                 "--status-root", str(tmp_path / "status")]) == 0
    assert read_status(status)["status"] == "ok"
    assert read_status(tmp_path / "one" / "good" / "status.json")["status"] == "ok"
    assert main(["--all", "--params", str(params_file), "--out-root", str(tmp_path / "all")]) == 0
    assert "download: 1 ok, 1 failed" in capsys.readouterr().err
    params_file.write_text(json.dumps({"sources": [{"name": "gone", "url": f"{base}/gone.mp4"}],
                                       "download": {"timeout_s": 10, "retries": 0}}))
    assert main(["--all", "--params", str(params_file), "--out-root", str(tmp_path / "none")]) == 1
    records = download_all(_params(f"{base}/clip.mp4"), tmp_path / "fn", progress=False)
    assert summary_line("download", records) == "download: 1 ok, 0 failed"


def test_synthetic_source_fetched_through_file_url(tmp_path):
    params = validate_params({"sources": [{"name": "syn", "url": "synthetic://sunset"}],
                              "synthetic": {"width": 48, "height": 32, "fps": 4, "seconds": 2}})
    record = download_source(params, params.sources[0], tmp_path / "raw")
    assert record["status"] == "ok", record
    info = json.loads((tmp_path / "raw" / "info.json").read_text())
    assert (info["n_frames"], info["width"], info["height"]) == (8, 48, 32)
    assert info["extractor"] == "generic" and info["synthetic"]["scene"] == "sunset"
    with np.load(tmp_path / "raw" / "groundtruth.npz") as gt:
        assert gt["reflectance"].shape == (8, 32, 48, 3) and gt["shading"].shape == (8, 32, 48)


def test_synthetic_variant_source_renders_that_variant(tmp_path):
    params = validate_params({"sources": [{"name": "v", "url": "synthetic://objects?variant=3"}],
                              "synthetic": {"width": 48, "height": 32, "fps": 4, "seconds": 1}})
    assert download_source(params, params.sources[0], tmp_path / "raw")["status"] == "ok"
    info = json.loads((tmp_path / "raw" / "info.json").read_text())
    assert info["synthetic"]["scene"] == "objects" and info["synthetic"]["variant"] == 3
    reference = render_scene("objects", width=48, height=32, fps=4, seconds=1, variant=3)
    with np.load(tmp_path / "raw" / "groundtruth.npz") as gt:
        np.testing.assert_array_equal(gt["reflectance"], reference.reflectance)


# ------------------------------------------------------------------------------------------ real data
def _download_and_frames(url: str, tmp_path: Path, **extra) -> tuple[dict, dict]:
    params = validate_params({"sources": [{"name": "real", "url": url, **extra}], "download": {"allow_local": True},
                              "frames": {"long_side": 192, "per_sequence": 8, "max_candidates": 80}})
    raw, frames = tmp_path / "raw", tmp_path / "frames"
    record = download_source(params, params.sources[0], raw)
    write_status(raw, None, record)
    return record, extract_frames(params, params.sources[0], frames, raw)


def test_real_video_download_and_frames(tmp_path):
    video = shared_path("videos", "vtest.avi")
    got, framed = _download_and_frames(str(video), tmp_path)
    assert got["status"] == "ok", got
    info = json.loads((tmp_path / "raw" / "info.json").read_text())
    assert (info["n_frames"], info["width"], info["height"]) == (795, 480, 360) and info["fps"] == pytest.approx(10)
    assert framed["status"] == "ok", framed  # static camera with people walking: not camera motion
    assert framed["camera_shift"] < 0.02
    assert len(list((tmp_path / "frames").glob("*.png"))) == 8


@pytest.mark.parametrize("camera", ["chamonix", "courbevoie", "frankfurt"])
def test_real_webcams_download_and_frames(tmp_path, camera):
    folder = shared_path("webcams", camera)
    got, framed = _download_and_frames(str(folder), tmp_path, type="images")
    assert got["status"] == "ok", got
    names = sorted(p.name for p in folder.glob("*.jpg"))
    assert json.loads((tmp_path / "raw" / "info.json").read_text())["files"] == names  # timestamps sort naturally
    assert framed["status"] == "ok", framed  # fixed webcams pass the camera-motion check
    meta = json.loads((tmp_path / "frames" / "meta.json").read_text())
    assert meta["camera_shift"] < 0.02 and len(meta["frames"]) == 8
    assert max(f["mean_log_lum"] for f in meta["frames"]) - min(f["mean_log_lum"] for f in meta["frames"]) > 0.3
