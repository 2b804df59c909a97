"""The BigTime release as a source (pipeline/bigtime.py) against a fixture release in the authors' layout.

The fixture (tests/release_fixture.py) is rendered by pipeline.synthetic: masks from the renderer's ground truth,
one frame without a mask, one unreadable frame. Checked through the real download / frames / masks stage
functions: the listed frames are kept (the release's choice), the release masks are ANDed with ours, defects
are recorded, a mask whose size differs from its frame fails naming both files, archives work like folders, and
the `sources` writer produces entries the params schema accepts.
"""
from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import bigtime
from pipeline.download import download_source
from pipeline.frames import extract_frames
from pipeline.masks import make_masks
from pipeline.params import ParamsError, validate_params
from tests.conftest import REPO, shared_path
from tests.release_fixture import LISTED, MISSING_MASK, N_FRAMES, SIZE, UNREADABLE, build_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    return build_release(root)


def _params(sources: list[dict], **frames) -> object:
    return validate_params({
        "sources": sources, "download": {"allow_local": True},
        "frames": {"long_side": 96, "per_sequence": 4, **frames},
        "masks": {"min_valid_fraction": 0.1},
    })


def _entry(release_dir: Path, sequence: str, frame_list: Path | None = None) -> dict:
    entry = {"name": f"bt_{sequence}", "url": str(release_dir), "type": "bigtime", "sequence": sequence}
    return {**entry, "frame_list": str(frame_list)} if frame_list is not None else entry


def _run_stages(params, source, tmp: Path) -> tuple[dict, dict, dict]:
    raw, frames, masks = tmp / "raw" / source.name, tmp / "frames" / source.name, tmp / "masks" / source.name
    records = [download_source(params, source, raw)]
    from pipeline.cli import write_status

    write_status(raw, None, records[0])
    records.append(extract_frames(params, source, frames, raw=raw))
    write_status(frames, None, records[1])
    records.append(make_masks(params, source, masks, frames=frames))
    return tuple(records)


def test_listed_sequence_keeps_the_listed_frames_and_ands_the_release_masks(release, tmp_path):
    release_dir, frame_list, truth = release
    params = _params([_entry(release_dir, "0001", frame_list)])
    source = params.sources[0]
    down, frames, masks = _run_stages(params, source, tmp_path)
    assert down["status"] == frames["status"] == masks["status"] == "ok", (down, frames, masks)

    info = json.loads((tmp_path / "raw" / "bt_0001" / "info.json").read_text())
    assert info["files"] == LISTED["0001"]  # exactly the listed frames, in list order
    assert info["bigtime"]["missing_masks"] == [MISSING_MASK[1]]
    assert sorted(p.name for p in (tmp_path / "raw" / "bt_0001" / "release_masks").iterdir()) == \
        [f"{i:06d}.png" for i in range(6) if i != LISTED["0001"].index(MISSING_MASK[1])]

    meta = json.loads((tmp_path / "frames" / "bt_0001" / "meta.json").read_text())
    assert len(meta["frames"]) == 6  # the release's choice wins over frames.per_sequence=4
    assert [r["index"] for r in meta["frames"]] == list(range(6))
    missing_at = LISTED["0001"].index(MISSING_MASK[1])
    assert [r["release_mask"] is None for r in meta["frames"]] == [i == missing_at for i in range(6)]

    # The written masks: invalid wherever the release mask (the renderer's sky/dynamic) is invalid.
    m_meta = json.loads((tmp_path / "masks" / "bt_0001" / "meta.json").read_text())
    rel = m_meta["invalid_fraction"]["release"]
    frame_ids = [int(name[:4]) for name in LISTED["0001"]]
    for k, (row, t) in enumerate(zip(meta["frames"], frame_ids)):
        valid = np.asarray(Image.open(tmp_path / "masks" / "bt_0001" / row["file"]))
        if k == missing_at:
            assert rel[k] == 0.0
            continue
        release_invalid = ~truth["0001"][t]  # same size: long_side 96 = the release's width
        assert release_invalid.any()
        assert not valid[release_invalid].any(), f"frame {t}: release-invalid pixels kept"
        assert rel[k] == pytest.approx(release_invalid.mean(), abs=1e-4)


def test_unreadable_frame_is_skipped_and_recorded(release, tmp_path):
    release_dir, frame_list, _ = release
    params = _params([_entry(release_dir, "0002", frame_list)])
    record = download_source(params, params.sources[0], tmp_path / "raw")
    assert record["status"] == "ok", record
    info = json.loads((tmp_path / "raw" / "info.json").read_text())
    assert info["files"] == [f for f in LISTED["0002"] if f != UNREADABLE[1]]
    assert [s["file"] for s in info["bigtime"]["skipped"]] == [f"{UNREADABLE[0]}/data/{UNREADABLE[1]}"]
    assert "1 unreadable skipped" in record["summary"]


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_unlisted_sequence_from_an_archive_is_selected_like_any_image_folder(release, tmp_path, kind):
    release_dir, _, _ = release
    archive = tmp_path / f"BigTime_v1.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(release_dir.rglob("*")):
                zf.write(path, Path("BigTime_v1") / path.relative_to(release_dir))
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(release_dir, arcname="BigTime_v1")
    params = _params([{**_entry(archive, "0003"), "url": str(archive)}])
    down, frames, masks = _run_stages(params, params.sources[0], tmp_path)
    assert down["status"] == "ok" and frames["status"] == "ok", (down, frames)
    info = json.loads((tmp_path / "raw" / "bt_0003" / "info.json").read_text())
    assert info["files"] == [f"{t:04d}.jpg" for t in range(N_FRAMES)] and not info["bigtime"]["listed"]
    assert len(json.loads((tmp_path / "frames" / "bt_0003" / "meta.json").read_text())["frames"]) == 4


def test_mask_of_the_wrong_size_fails_naming_both_files_and_spares_other_sources(release, tmp_path):
    release_dir, frame_list, _ = release
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(release_dir, broken)
    bad = broken / "0001" / "data" / "0005_mask.png"
    Image.fromarray(np.full((SIZE[1] // 2, SIZE[0] // 2), 255, np.uint8)).save(bad)
    params = _params([_entry(broken, "0001", frame_list), {**_entry(broken, "0002", frame_list), "name": "other"}])
    other = tmp_path / "raw" / "other"
    assert download_source(params, params.sources[1], other)["status"] == "ok"
    before = sorted(p.name for p in (other / "images").iterdir())
    record = download_source(params, params.sources[0], tmp_path / "raw" / "bt_0001")
    assert record["status"] == "failed" and record["category"] == "corrupt"
    assert "0001/data/0005_mask.png" in record["reason"] and "0001/data/0005.png" in record["reason"]
    assert f"{SIZE[0] // 2}x{SIZE[1] // 2}" in record["reason"] and f"{SIZE[0]}x{SIZE[1]}" in record["reason"]
    assert not list((tmp_path / "raw" / "bt_0001").iterdir())  # nothing half-written
    assert sorted(p.name for p in (other / "images").iterdir()) == before


def test_unknown_sequence_and_unlisted_sequence_are_not_found(release, tmp_path):
    release_dir, frame_list, _ = release
    params = _params([_entry(release_dir, "9999"), _entry(release_dir, "0003", frame_list)])
    missing = download_source(params, params.sources[0], tmp_path / "a")
    unlisted = download_source(params, params.sources[1], tmp_path / "b")
    assert missing["category"] == "not_found" and "'9999'" in missing["reason"] and "3 sequences" in missing["reason"]
    assert unlisted["category"] == "not_found" and "not in the frame list" in unlisted["reason"]


def test_release_mask_of_another_size_in_the_frames_folder_names_both_files(release, tmp_path):
    release_dir, frame_list, _ = release
    params = _params([_entry(release_dir, "0001", frame_list)])
    source = params.sources[0]
    _run_stages(params, source, tmp_path)
    frames_dir = tmp_path / "frames" / source.name
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(frames_dir / "0000_mask.png")
    record = make_masks(params, source, tmp_path / "masks2", frames=frames_dir)
    assert record["category"] == "corrupt"
    assert "0000_mask.png" in record["reason"] and "0000.png" in record["reason"] and "10x10" in record["reason"]


def test_sources_command_writes_valid_entries_for_a_list_or_a_whole_release(release, tmp_path):
    release_dir, frame_list, _ = release
    out = tmp_path / "sources.yaml"
    assert bigtime.main(["--release", str(release_dir), "--list", str(frame_list), "--out", str(out)]) == 0
    entries = yaml.safe_load(out.read_text())["sources"]
    assert [e["name"] for e in entries] == ["bigtime_0001", "bigtime_0002"]
    assert all(e["type"] == "bigtime" and e["frame_list"] == str(frame_list) for e in entries)

    assert bigtime.main(["--release", str(release_dir), "--sequences", "0003", "0001", "--out", str(out)]) == 0
    entries = yaml.safe_load(out.read_text())["sources"]
    assert [(e["name"], e["sequence"]) for e in entries] == [("bigtime_0001", "0001"), ("bigtime_0003", "0003")]
    assert "frame_list" not in entries[0]

    # into a params file: appended to sources, comments and other sections kept, result valid
    params_file = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text().replace("allow_local: false", "allow_local: true")
    params_file.write_text(original)
    assert bigtime.main(["--release", str(release_dir), "--params", str(params_file)]) == 0
    text = params_file.read_text()
    assert text.startswith(original.split("  - name: synth_street")[0])  # everything before is unchanged
    assert "# The embedded default" in text and text.rstrip().endswith(original.rstrip().split("\n")[-1])
    names = [s.name for s in validate_params(yaml.safe_load(text)).sources]
    assert names[-3:] == ["bigtime_0001", "bigtime_0002", "bigtime_0003"] and names[0] == "synth_sun"
    # a second time: duplicate names are refused and the file is left as it was
    with pytest.raises(SystemExit) as exit_info:
        bigtime.main(["--release", str(release_dir), "--params", str(params_file)])
    assert exit_info.value.code == 2 and params_file.read_text() == text


def test_sources_command_refuses_unknown_sequences(release, tmp_path, capsys):
    release_dir, frame_list, _ = release
    with pytest.raises(SystemExit):
        bigtime.main(["--release", str(release_dir), "--list", str(frame_list), "--sequences", "0003",
                      "--out", str(tmp_path / "x.yaml")])
    assert "0003 not in" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
    with pytest.raises(SystemExit):
        bigtime.main(["--release", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.yaml")])
    assert "nowhere does not exist" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_params_schema_keeps_release_fields_for_bigtime_sources():
    with pytest.raises(ParamsError, match=r"sources\[0\]: .*type: bigtime only"):
        validate_params({"sources": [{"name": "a", "url": "https://x/v.mp4", "sequence": "0001"}]})
    with pytest.raises(ParamsError, match=r"sources\[0\]\.sequence"):
        validate_params({"sources": [{"name": "a", "url": "https://x/r.tar", "type": "bigtime", "sequence": "../x"}]})
    source = validate_params({"sources": [{"name": "bt_7", "url": "https://x/r.tar", "type": "bigtime"}]}).sources[0]
    assert source.release_sequence == "bt_7"


def test_official_training_list_reads_as_212_sequences_6583_frames():
    path = shared_path("bigtime-lists", "bigtime_train_frames.csv")
    listed = bigtime.read_frame_list(path)
    assert len(listed) == 212 and sum(map(len, listed.values())) == 6583
    entries = bigtime.source_entries("/data/BigTime_v1", list(listed), frame_list=str(path))
    assert len({e["name"] for e in entries}) == 212
    validate_params({"sources": entries, "download": {"allow_local": True}})
