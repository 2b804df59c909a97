"""Loader: round trip vs what was written, Parquet == tar, augmentation alignment of frames/masks/weights/ground
truth, exact weight flip (against weights recomputed on flipped frames), worker and node splitting, seeding,
and corrupt-shard errors naming the shard."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.params import ShardsParams
from pipeline.shard_format import encode_sample
from pipeline.shading_weights import NEIGHBOUR_OFFSETS, shading_smoothness_weights
from pipeline.shards import build_shards
from tests.shard_fixtures import random_sequence, write_source
from training.data import (
    LightContrast, LoaderConfig, ParquetSequences, ShardedSequences, ShardError, choose_bucket, flip_weights, make_item,
    make_loader,
)

NAMES = ["s0", "s1", "s2", "s3", "s4"]
PLAIN = LoaderConfig(frames=None, augment=False, size="native", shuffle=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 sequences (s2 synthetic with ground truth), 2 per shard -> 3 train shards, and a 1-shard copy."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate(NAMES):
        frames, masks = random_sequence(rng, 5, 32, 48)
        gt = None
        if name == "s2":
            gt = {"reflectance": rng.random((5, 32, 48, 3), dtype=np.float32),
                  "shading": rng.random((5, 32, 48), dtype=np.float32)}
        write_source(root, name, frames, masks, groundtruth=gt)
        written[name] = (frames, masks, gt)
    # one weight map per sequence (the paper's reduce "mean", the function's keyword defaults) so the references
    # below are shading_smoothness_weights(frames, scales=3); per-frame weights have their own tests
    params = ShardsParams(sequences_per_shard=2, val_fraction=0.0, shading_scales=3,
                          shading_weights={"edge_scale": 1.0, "edge_offset": 0.0, "reduce": "mean",
                                            "sigma_chroma": 0.025})
    manifest, _ = build_shards(NAMES, root / "frames", root / "masks", root / "shards", params)
    assert len(manifest["splits"]["train"]["shards"]) == 3
    build_shards(NAMES, root / "frames", root / "masks", root / "one", params.model_copy(update={"sequences_per_shard": 10}))
    return root, written, params


def test_round_trip_without_augmentation(dataset):
    root, written, params = dataset
    items = {it["key"]: it for it in ShardedSequences(root / "shards", "train", PLAIN)}
    assert sorted(items) == NAMES
    for name, (frames, masks, gt) in written.items():
        it = items[name]
        np.testing.assert_array_equal(it["srgb"].numpy(), frames.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        np.testing.assert_array_equal(it["mask"][:, 0].numpy(), masks.astype(np.float32))
        ref = shading_smoothness_weights(frames.astype(np.float32) / 255, scales=3)
        assert [tuple(w.shape) for w in it["shading_weights"]] == [(4, 32, 48), (4, 16, 24), (4, 8, 12)]
        for a, b in zip(it["shading_weights"], ref):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-7)
        if gt is None:
            assert "gt_reflectance" not in it
        else:
            np.testing.assert_array_equal(it["gt_reflectance"].numpy(), gt["reflectance"].transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(it["gt_shading"][:, 0].numpy(), gt["shading"])
        assert it["srgb"].dtype == it["mask"].dtype == torch.float32


def test_parquet_gives_the_same_items_as_the_tars(dataset):
    root, _, _ = dataset
    config = LoaderConfig(frames=3, shuffle=False)
    for epoch in (0, 1):
        tar = ShardedSequences(root / "shards", "train", config)
        tar.set_epoch(epoch)
        par = ParquetSequences(root / "shards", "train", config)
        par.set_epoch(epoch)
        tar_items = {it["key"]: it for it in tar}
        assert len(par) == 5 and par.keys == NAMES
        for i in range(len(par)):
            a, b = par[i], tar_items[par.keys[i]]
            assert a.keys() == b.keys()
            for k in a:
                if k == "shading_weights":
                    assert all(torch.equal(x, y) for x, y in zip(a[k], b[k]))
                elif k != "key":
                    assert torch.equal(a[k], b[k]), k


def test_bucket_choice():
    assert choose_bucket(256, 384) == (256, 384)
    assert choose_bucket(547, 704) == (256, 384)  # 1.29 is nearer 1.5 than 1 in log aspect
    assert choose_bucket(400, 410) == (256, 256)
    assert choose_bucket(640, 360) == (384, 256)


def test_flip_of_weights_is_exact():
    """Weights of the flipped frames == flip_weights(weights of the frames), at every scale (even widths)."""
    rng = np.random.default_rng(2)
    frames, _ = random_sequence(rng, 4, 16, 32)
    srgb = frames.astype(np.float64) / 255
    for reduce in ("mean", "none"):
        direct = shading_smoothness_weights(srgb[:, :, ::-1], scales=3, reduce=reduce)
        flipped = [flip_weights(w) for w in shading_smoothness_weights(srgb, scales=3, reduce=reduce)]
        for a, b in zip(direct, flipped):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _planted_sample(by: int, bx: int) -> dict:
    """A 48x72 grey sequence with a bright 2x2 block at rows by..by+1, cols bx..bx+1 (by, bx even), invalid in
    the masks, and weights that are 1 exactly on the pairs touching that block (scale 0) / touching its scale-1
    pixel (scale 1), 0 elsewhere. Every such set of pair midpoints is centred on the block's centre."""
    h, w = 48, 72
    frames = np.full((3, h, w, 3), 60, np.uint8)
    frames[:, by:by + 2, bx:bx + 2] = 255
    masks = np.ones((3, h, w), bool)
    masks[:, by:by + 2, bx:bx + 2] = False
    weights = []
    for level, block in ((0, [(by, bx), (by, bx + 1), (by + 1, bx), (by + 1, bx + 1)]), (1, [(by // 2, bx // 2)])):
        hl, wl = h >> level, w >> level
        wmap = np.zeros((4, hl, wl), np.float32)
        for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
            for y in range(hl):
                for x in range(wl):
                    q = (y + dy, x + dx)
                    if 0 <= q[0] < hl and 0 <= q[1] < wl and ((y, x) in block or q in block):
                        wmap[k, y, x] = 1
        weights.append(wmap)
    return encode_sample("planted", frames, masks, weights, {"scene": "outdoor"},
                         {"reflectance": frames.astype(np.float32) / 255, "shading": frames[..., 0].astype(np.float32) / 255})


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img)
    wts = img[ys, xs]
    return np.array([(ys * wts).sum(), (xs * wts).sum()]) / wts.sum()


@pytest.mark.parametrize("flip_prob,epoch", [(1.0, 0), (1.0, 1), (0.0, 2), (1.0, 3)])
def test_augmentation_keeps_frames_masks_weights_aligned(flip_prob, epoch):
    sample = _planted_sample(20, 46)  # off-centre so a wrong flip/shift shows
    config = LoaderConfig(frames=2, flip_prob=flip_prob, max_rotation_deg=8.0, min_crop=0.9)
    item = make_item(sample, config, epoch)
    assert item["srgb"].shape == (2, 3, 256, 384)
    bright = np.clip(item["srgb"][0, 0].numpy() - 60 / 255, 0, None)
    centre = _centroid(bright)
    # a flip moves the block to the other half (it sits right of the middle in the input)
    assert (centre[1] < 192) == (flip_prob == 1.0)
    np.testing.assert_allclose(_centroid(1 - item["mask"][0, 0].numpy()), centre, atol=1.0)
    np.testing.assert_allclose(_centroid(item["gt_reflectance"][1, 0].numpy() - 60 / 255), centre, atol=0.5)
    for k in range(4):
        np.testing.assert_allclose(_centroid(item["shading_weights"][0][k].numpy()), centre, atol=1.0,
                                   err_msg=f"scale 0 direction {NEIGHBOUR_OFFSETS[k]}")
        # scale 1: index coordinates (c + 0.5) / 2 - 0.5 of the same point
        np.testing.assert_allclose(_centroid(item["shading_weights"][1][k].numpy()), (centre + 0.5) / 2 - 0.5, atol=0.75,
                                   err_msg=f"scale 1 direction {NEIGHBOUR_OFFSETS[k]}")
    # neighbours outside the output are zero
    w0 = item["shading_weights"][0]
    assert w0[0, :, -1].abs().sum() == 0 and w0[1, -1].abs().sum() == 0 and w0[3, :, 0].abs().sum() == 0


def test_augmentation_is_seeded_by_epoch_and_key(dataset):
    root, _, _ = dataset
    ds = ShardedSequences(root / "shards", "train", LoaderConfig(frames=3))
    first = {it["key"]: it for it in ds}
    again = {it["key"]: it for it in ds}
    ds.set_epoch(1)
    other = {it["key"]: it for it in ds}
    assert all(torch.equal(first[k]["srgb"], again[k]["srgb"]) for k in NAMES)
    assert any(not torch.equal(first[k]["srgb"], other[k]["srgb"]) for k in NAMES)


def _keys(loader) -> list[str]:
    return [it["key"] for it in loader]


@pytest.mark.parametrize("shards,workers", [("one", 2), ("one", 3), ("shards", 2), ("shards", 4)])
def test_workers_see_each_sequence_once_per_epoch(dataset, shards, workers):
    root, _, _ = dataset
    loader = make_loader(root / shards, "train", PLAIN, num_workers=workers)
    for epoch in (0, 1):
        loader.dataset.set_epoch(epoch)
        keys = _keys(loader)
        assert sorted(keys) == NAMES, keys


@pytest.mark.parametrize("shards,workers", [("one", 0), ("one", 2), ("shards", 0), ("shards", 2)])
def test_node_splitting_partitions_the_sequences(dataset, shards, workers):
    root, _, _ = dataset
    per_rank = [_keys(make_loader(root / shards, "train", PLAIN, num_workers=workers, rank=r, world_size=2))
                for r in range(2)]
    assert sorted(per_rank[0] + per_rank[1]) == NAMES
    assert per_rank[0] and per_rank[1] and not set(per_rank[0]) & set(per_rank[1])


def test_repeat_runs_epoch_after_epoch(dataset):
    root, _, _ = dataset
    ds = ShardedSequences(root / "shards", "train", PLAIN, repeat=True)
    stream = iter(ds)
    keys = [next(stream)["key"] for _ in range(12)]
    assert sorted(keys[:5]) == NAMES and sorted(keys[5:10]) == NAMES


def _copy(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(root / "shards", out)
    return out


def test_truncated_tar_names_the_shard(dataset, tmp_path):
    root, _, _ = dataset
    shards = _copy(root, tmp_path)
    victim = shards / "train-000001.tar"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2 + 100])  # cut inside a member
    with pytest.raises(ShardError, match="train-000001.tar.*sha256"):
        list(ShardedSequences(shards, "train", PLAIN))
    with pytest.raises(ShardError, match="train-000001.tar.*(truncated|unreadable)"):
        list(ShardedSequences(shards, "train", LoaderConfig(frames=None, augment=False, size="native", shuffle=False,
                                                           verify_checksums=False)))
    victim.write_bytes(data[:1024 * (len(data) // 2048)])  # cut at a block boundary: a sequence goes missing
    with pytest.raises(ShardError, match="train-000001.tar"):
        list(ShardedSequences(shards, "train", LoaderConfig(frames=None, augment=False, size="native", shuffle=False,
                                                           verify_checksums=False)))


def test_wrong_checksum_names_the_shard(dataset, tmp_path):
    root, _, _ = dataset
    shards = _copy(root, tmp_path)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][2]["sha256"] = "0" * 64
    manifest["splits"]["train"]["parquet"]["sha256"] = "f" * 64
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="train-000002.tar.*does not match"):
        list(ShardedSequences(shards, "train", PLAIN))
    with pytest.raises(ShardError, match="train.parquet.*does not match"):
        ParquetSequences(shards, "train", PLAIN)
    (shards / "train-000000.tar").unlink()
    with pytest.raises(ShardError, match="train-000000.tar: missing"):
        list(ShardedSequences(shards, "train", PLAIN))


def test_items_feed_a_default_dataloader_over_parquet(dataset):
    root, _, _ = dataset
    loader = DataLoader(ParquetSequences(root / "shards", "train", LoaderConfig(frames=2)), batch_size=None,
                        num_workers=2, shuffle=True)
    items = list(loader)
    assert sorted(it["key"] for it in items) == NAMES
    assert all(it["srgb"].shape == (2, 3, 256, 384) and it["mask"].shape == (2, 1, 256, 384) for it in items)


def test_channel_permutation_is_one_draw_per_sequence_applied_to_frames_and_reflectance(dataset):
    """permute_channels: every frame and the ground-truth reflectance get the same RGB permutation, the rest of
    the item (geometry, frames drawn, masks, weights, shading) is the unpermuted item's; over the keys and
    epochs more than one permutation occurs."""
    root, _, _ = dataset
    base = LoaderConfig(frames=3, shuffle=False)
    permuted = dataclasses.replace(base, permute_channels=True)
    seen = set()
    for epoch in (0, 1, 2):
        plain_ds, perm_ds = (ShardedSequences(root / "shards", "train", c) for c in (base, permuted))
        plain_ds.set_epoch(epoch)
        perm_ds.set_epoch(epoch)
        plain = {it["key"]: it for it in plain_ds}
        for it in perm_ds:
            ref = plain[it["key"]]
            torch.testing.assert_close(it["indices"], ref["indices"])
            torch.testing.assert_close(it["mask"], ref["mask"])
            for a, b in zip(it["shading_weights"], ref["shading_weights"]):
                torch.testing.assert_close(a, b)
            # which permutation: the one that maps the reference's channels onto the item's, the same for all frames
            perm = [next(j for j in range(3) if torch.equal(it["srgb"][:, c], ref["srgb"][:, j])) for c in range(3)]
            assert sorted(perm) == [0, 1, 2]
            seen.add(tuple(perm))
            if "gt_reflectance" in it:
                torch.testing.assert_close(it["gt_reflectance"], ref["gt_reflectance"][:, perm])
                torch.testing.assert_close(it["gt_shading"], ref["gt_shading"])
    assert len(seen) > 1


def augmented_and_plain_items(root, reference=None, **change):
    """(item, reference item of the same key, both frames in linear light as float64) for each train sequence
    loaded with `change` to the reference config LoaderConfig(frames=3, **reference) (default: unaugmented);
    asserts the two drew the same frames."""
    from pipeline.color import srgb_to_linear

    base = LoaderConfig(frames=3, shuffle=False, **(reference or {}))
    plain = {it["key"]: it for it in ShardedSequences(root / "shards", "train", base)}
    for it in ShardedSequences(root / "shards", "train", dataclasses.replace(base, **change)):
        ref = plain[it["key"]]
        torch.testing.assert_close(it["indices"], ref["indices"])
        yield it, ref, srgb_to_linear(it["srgb"].double()), srgb_to_linear(ref["srgb"].double())


def best_partner(m, k, fit):
    """((error, j, parameter) of the frame j != k of m whose `fit(j)` -> (error, parameter) or None (can't tell)
    errs least, every fit as such a triple)."""
    fits = [(f[0], j, f[1]) for j in range(m) if j != k and (f := fit(j)) is not None]
    return min(fits), fits


def test_color_gain_is_one_linear_rgb_gain_per_sequence_on_frames_and_reflectance(dataset):
    """color_gain: every frame is the unaugmented item's frame times one per-sequence RGB gain in linear light
    (largest channel 1), the ground-truth reflectance is times the same gain, everything else is unchanged; the
    gains differ between sequences."""
    gains = []
    for it, ref, lin, ref_lin in augmented_and_plain_items(dataset[0], color_gain=0.5):
        torch.testing.assert_close(it["mask"], ref["mask"])
        bright = ref_lin > 0.05  # where the ratio is well defined (8-bit sRGB steps)
        gain = torch.stack([(lin[:, c][bright[:, c]] / ref_lin[:, c][bright[:, c]]).median() for c in range(3)])
        assert gain.max() == pytest.approx(1.0, abs=1e-4) and gain.min() < 0.999
        torch.testing.assert_close(lin, ref_lin * gain[None, :, None, None], atol=2e-4, rtol=0)
        if "gt_reflectance" in it:
            torch.testing.assert_close(it["gt_reflectance"].double(),
                                       ref["gt_reflectance"].double() * gain[None, :, None, None], atol=1e-5, rtol=1e-3)
            torch.testing.assert_close(it["gt_shading"], ref["gt_shading"])
        gains.append(gain)
    assert len(gains) > 1 and not torch.allclose(gains[0], gains[1], atol=1e-3)


def test_color_gain_must_not_be_negative():
    with pytest.raises(ValueError, match="color_gain"):
        LoaderConfig(color_gain=-0.1)


@pytest.mark.parametrize("reference", [{}, {"color_gain": 0.5}], ids=["plain", "with-color-gain"])
def test_mix_lights_makes_each_frame_a_linear_light_mix_of_two_frames_of_the_item(dataset, reference):
    """mix_lights 1: every frame, decoded to linear light, is a x the unmixed frame + (1 - a) x another of the
    item's unmixed frames (a in [0, 1], fitted here by least squares over each candidate partner), its mask is the
    AND of the two masks and the ground-truth shading is the same mix; geometry and frame choice are unchanged.
    With color_gain as well, the unmixed frames are the gained ones (the gain is drawn first, the mix after)."""
    weights_seen = []
    for it, ref, lin, ref_lin in augmented_and_plain_items(dataset[0], reference, mix_lights=1.0):
        for k in range(lin.shape[0]):
            def mix_fit(j):
                d = (ref_lin[k] - ref_lin[j]).flatten()
                a = float(((lin[k] - ref_lin[j]).flatten() @ d) / (d @ d))
                return float((lin[k] - (a * ref_lin[k] + (1 - a) * ref_lin[j])).abs().max()), a

            (err, j, a), fits = best_partner(lin.shape[0], k, mix_fit)
            assert err < 2e-3 and -1e-3 <= a <= 1 + 1e-3, (it["key"], k, fits)
            weights_seen.append(a)
            torch.testing.assert_close(it["mask"][k], ref["mask"][k] * ref["mask"][j])
            if "gt_shading" in it:
                torch.testing.assert_close(it["gt_shading"][k], a * ref["gt_shading"][k] + (1 - a) * ref["gt_shading"][j],
                                           atol=1e-3, rtol=0)
    assert len(set(round(a, 2) for a in weights_seen)) > 2  # the weights are drawn, not fixed


def test_mix_lights_must_be_a_probability():
    with pytest.raises(ValueError, match="mix_lights"):
        LoaderConfig(mix_lights=1.5)


def test_light_contrast_keeps_the_reflectance_and_raises_the_shading_to_a_power():
    """LightContrast on frames R * S_k (one light colour): frame 0 becomes R * S_0 ** (1 + g) / S_1 ** g, the
    reflectance untouched; a frame paired with itself (gamma 0) is unchanged. Reference written out by hand."""
    rng = np.random.default_rng(3)
    reflectance = rng.uniform(0.05, 0.9, (1, 4, 5, 3))
    shading = rng.uniform(0.05, 1.0, (3, 4, 5, 1))
    frames = reflectance * shading
    out = LightContrast(partner=np.array([1, 1, 0]), gamma=np.array([0.5, 0.0, 2.0], np.float32)).apply(frames)
    np.testing.assert_allclose(out[0], reflectance[0] * shading[0] ** 1.5 / shading[1] ** 0.5, rtol=1e-6)
    np.testing.assert_allclose(out[1], frames[1], rtol=0, atol=0)
    np.testing.assert_allclose(out[2], reflectance[0] * shading[2] ** 3.0 / shading[0] ** 2.0, rtol=1e-6)


def test_contrast_lights_exaggerates_each_frame_against_another_frame_of_the_item(dataset):
    """contrast_lights 1: every frame, in linear light, is the plain frame k times (frame k / frame j) ** g for
    another plain frame j of the item (g fitted here over each candidate j, in [0, contrast_gamma]); its mask is
    within the AND of the two and drops exactly the pixels the law pushes above 1 (up to the fit); the ground-truth
    shading follows the same law with the same g and the reflectance is unchanged."""
    gammas = []
    for it, ref, lin, ref_lin in augmented_and_plain_items(dataset[0], contrast_lights=1.0, contrast_gamma=0.3):
        for k in range(lin.shape[0]):
            def contrast_fit(j):
                ok = (ref_lin[k] > 0.05) & (ref_lin[j] > 0.05) & (lin[k] < 0.95)  # ratios well above 8-bit steps
                x, y = (ref_lin[k] / ref_lin[j]).log()[ok], (lin[k] / ref_lin[k]).log()[ok]
                if x.numel() < 50 or float(x @ x) < 1e-6:  # too few pixels to tell this partner
                    return None
                g = float((x @ y) / (x @ x))
                return float((y - g * x).abs().max()), g

            (err, j, g), fits = best_partner(lin.shape[0], k, contrast_fit)
            assert err < 5e-3 and -1e-3 <= g <= 0.3 + 1e-3, (it["key"], k, fits)
            gammas.append(g)
            both = ref["mask"][k] * ref["mask"][j]
            assert bool((it["mask"][k] <= both).all())
            law = ref_lin[k] * (ref_lin[k].clamp_min(1e-4) / ref_lin[j].clamp_min(1e-4)) ** g
            dropped = both.double() * (1 - it["mask"][k].double())
            assert bool((it["mask"][k].double() * (law > 1.01).any(dim=0, keepdim=True).double() == 0).all())
            assert bool((dropped * (law < 0.99).all(dim=0, keepdim=True).double() == 0).all())
            if "gt_shading" in it:
                s_k, s_j = ref["gt_shading"][k].double(), ref["gt_shading"][j].double()
                torch.testing.assert_close(it["gt_shading"][k].double(),
                                           s_k * (s_k.clamp_min(1e-4) / s_j.clamp_min(1e-4)) ** g, atol=2e-3, rtol=2e-2)
                torch.testing.assert_close(it["gt_reflectance"], ref["gt_reflectance"])
    assert len(set(round(g, 2) for g in gammas)) > 2  # the exponents are drawn, not fixed


@pytest.mark.parametrize("change, key", [({"contrast_lights": 1.5}, "contrast_lights"),
                                          ({"contrast_gamma": 0.0}, "contrast_gamma")])
def test_contrast_lights_settings_are_checked(change, key):
    with pytest.raises(ValueError, match=key):
        LoaderConfig(**change)
