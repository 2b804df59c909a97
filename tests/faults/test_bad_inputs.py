"""The bad-input table: every bad source kind beside good ones, through the real download and frames stages.

Sources are served by http.server on 127.0.0.1 (yt-dlp and urllib fetch them for real) or are local folders
(`download.allow_local: true`). Each bad source must get its own status category and a reason naming what is
wrong, while the good sources (an http video, a synthetic scene, an image folder, a 16-bit greyscale image
folder) build through the frames stage. CASES is the table; `test_bad_input_table` prints it.
"""
from __future__ import annotations

import functools
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.download import download_all
from pipeline.frames import frames_all
from pipeline.params import validate_params
from pipeline.synthetic import render_scene, write_scene

# (source name, how the url is made, type, expected download category (None = ok), words the reason must hold)
CASES = [
    ("good_http_video", "{base}/good.mp4", "video", None, ""),
    ("good_synthetic", "synthetic://sun", "video", None, ""),
    ("good_image_folder", "{local}/frames8", "images", None, ""),
    ("good_16bit_grey_folder", "{local}/grey16", "images", None, ""),
    ("http_404", "{base}/gone.mp4", "video", "not_found", "404"),
    ("refused_connection", "http://127.0.0.1:{closed}/x.mp4", "video", "unreachable", ""),
    ("not_a_video", "{base}/notes.txt", "video", "not_media", ""),
    ("truncated_video", "{base}/truncated.mp4", "video", "corrupt", "truncated"),
    ("zero_byte_file", "{base}/empty.mp4", "video", "corrupt", "empty"),
    ("redirect_to_file_url", "{base}/redirect.mp4", "video", "unsafe", "file:"),
    ("redirect_archive_to_file_url", "{base}/redirect.zip", "images", "unsafe", "redirect"),
    ("archive_with_dotdot", "{base}/dotdot.zip", "images", "unsafe", "../escape.png"),
    ("archive_with_absolute_path", "{base}/absolute.tar", "images", "unsafe", "/tmp/escape.png"),
    ("symlink_in_image_folder", "{local}/linked", "images", "unsafe", "outside.png"),
    ("unreadable_image", "{local}/badimage", "images", "corrupt", "0003.png"),
    ("local_missing_path", "{local}/nowhere", "images", "not_found", "nowhere"),
]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "file:///etc/hostname")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    www, local = root / "www", root / "local"
    www.mkdir()
    local.mkdir()
    seq = render_scene("sunset", width=96, height=64, fps=4, seconds=2.0)
    write_scene(seq, root / "scene", crf=12)
    video = (root / "scene" / "video.mp4").read_bytes()
    (www / "good.mp4").write_bytes(video)
    (www / "truncated.mp4").write_bytes(video[: len(video) // 2])
    (www / "empty.mp4").write_bytes(b"")
    (www / "notes.txt").write_text("this is not a video\n" * 50)
    with zipfile.ZipFile(www / "dotdot.zip", "w") as zf:
        zf.writestr("ok.png", _png(seq.srgb[0]))
        zf.writestr("../escape.png", _png(seq.srgb[1]))
    with tarfile.open(www / "absolute.tar", "w") as tf:
        data = _png(seq.srgb[0])
        info = tarfile.TarInfo("/tmp/escape.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    for folder in ("frames8", "linked", "badimage"):
        (local / folder).mkdir()
        for i, frame in enumerate(seq.srgb):
            (local / folder / f"{i:04d}.png").write_bytes(_png(frame))
    (local / "grey16").mkdir()
    for i, frame in enumerate(seq.srgb):  # 16-bit greyscale: values far above 255
        grey = np.round(frame.mean(axis=2) * 257).astype(np.uint16)
        assert cv2.imwrite(str(local / "grey16" / f"{i:04d}.png"), grey)  # OpenCV writes uint16 as 16-bit PNG
    (root / "outside.png").write_bytes(_png(seq.srgb[0]))
    (local / "linked" / "outside.png").symlink_to(root / "outside.png")
    (local / "badimage" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"base": f"http://127.0.0.1:{server.server_address[1]}", "local": str(local), "closed": closed,
           "root": root}
    server.shutdown()
    server.server_close()


def test_bad_input_table(world, capsys):
    sources = [{"name": name, "url": url.format(**world), "type": kind} for name, url, kind, _, _ in CASES]
    params = validate_params({
        "sources": sources, "synthetic": {"width": 96, "height": 64, "fps": 4, "seconds": 2.0},
        "download": {"allow_local": True, "timeout_s": 10, "retries": 0},
        "frames": {"long_side": 96, "per_sequence": 4}})
    root = world["root"] / "out"
    downloads = {r["source"]: r for r in download_all(params, root / "raw", progress=False)}
    frames = {r["source"]: r for r in frames_all(params, root / "raw", root / "frames", progress=False)}
    with capsys.disabled():
        print("\nbad-input table (source: download category / frames status — reason)")
        for name, *_ in CASES:
            row = downloads[name]
            detail = row.get("reason", row.get("summary"))
            print(f"  {name}: {row.get('category', 'ok')} / {frames[name]['status']} — {detail}")
    for name, _, _, category, words in CASES:
        row = downloads[name]
        if category is None:
            assert row["status"] == "ok", row
            assert frames[name]["status"] == "ok", frames[name]
        else:
            assert (row["status"], row["category"]) == ("failed", category), row
            assert words in row["reason"], row
            assert frames[name]["category"] == "upstream_failed"
            assert not any((root / "raw" / name).iterdir()) or (root / "raw" / name / "status.json").exists()
    grey = np.asarray(Image.open(root / "frames" / "good_16bit_grey_folder" / "0000.png").convert("L"), float)
    colour = np.asarray(Image.open(root / "frames" / "good_image_folder" / "0000.png").convert("L"), float)
    assert grey.mean() < 250 and abs(grey.mean() - colour.mean()) < 10, "16-bit grey frames read as white"
