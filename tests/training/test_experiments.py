"""The MIT fold recipe and the results table built from DVC experiment rows (hand-computed means)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.params import validate_params
from training import results_table as T
from training.mit_recipe import FOLDS, MIT_OBJECTS, held_out, recipe_params

ROOT = Path(__file__).resolve().parents[2]


def test_folds_partition_the_ten_objects():
    assert sorted(FOLDS[0] + FOLDS[1]) == sorted(MIT_OBJECTS) and not set(FOLDS[0]) & set(FOLDS[1])
    assert held_out("all") == ()
    assert held_out("0") == held_out("0/2") == ("apple", "cup1", "frog1", "paper1", "squirrel")
    for bad in ("2", "5/5", "-1/5", "0/1", "0/11", "a/5", "1/", "x"):
        with pytest.raises(ValueError, match="fold must be"):
            held_out(bad)


@pytest.mark.parametrize("count", [2, 3, 5, 10])
def test_k_of_n_folds_partition_the_ten_objects(count):
    folds = [held_out(f"{k}/{count}") for k in range(count)]
    assert sorted(o for fold in folds for o in fold) == sorted(MIT_OBJECTS)  # every object held out exactly once
    assert held_out(f"1/{count}")[0] == "box" and len(folds[0]) == -(-len(MIT_OBJECTS) // count)
    assert held_out("3/5") == ("dinosaur", "squirrel")  # objects 3 and 8 in sorted order


def test_recipe_params_hold_out_the_fold_and_validate(tmp_path):
    base = yaml.safe_load((ROOT / "params-mit.yaml").read_text())
    params = recipe_params(base, fold="1", mit_dir=tmp_path, lights=Path("data/mit-lights"), synthetic_objects=0)
    parsed = validate_params(params)
    assert [s.name for s in parsed.sources] == [f"mit_{o}" for o in MIT_OBJECTS]
    assert parsed.shards.val_sequences == [f"mit_{o}" for o in FOLDS[1]]
    assert Path(parsed.evaluate.mit_dir).is_absolute()  # queued experiments run in a temporary copy of the repo
    assert [s.url for s in parsed.sources] == [str(Path.cwd() / "data/mit-lights" / o) for o in MIT_OBJECTS]
    # every section is written with its defaults filled in, so `dvc exp run -S loss.reconstruct_pairs=...` finds the
    # key (params-mit.yaml does not set it); the recipe's own settings are kept (rsmooth_kind local)
    assert params["loss"]["reconstruct_pairs"] == "same_frame" and "edge_term" in params["shards"]["shading_weights"]
    assert params["loss"]["rsmooth_kind"] == "local"


def test_recipe_synthetic_objects_only_ever_train(tmp_path):
    base = yaml.safe_load((ROOT / "params-mit.yaml").read_text())
    parsed = validate_params(recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"),
                                           synthetic_objects=3))
    synthetic = [s for s in parsed.sources if s.is_synthetic]
    assert [s.synthetic_scene for s in synthetic] == [("objects", 0), ("objects", 1), ("objects", 2)]
    assert not {s.name for s in synthetic} & set(parsed.shards.val_sequences)
    assert parsed.shards.val_fraction == 0.0  # so no rendered sequence is drawn into val
    assert (parsed.synthetic.width, parsed.synthetic.height) == (parsed.frames.long_side, parsed.frames.long_side * 2 // 3)
    with pytest.raises(ValueError, match="synthetic_objects"):
        recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"), synthetic_objects=-1)
    carved = validate_params(recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"),
                                           synthetic_objects=2, synthetic_scene="carved")).sources
    assert [(s.name, s.synthetic_scene) for s in carved if s.is_synthetic] == [
        ("synth_carved_0", ("carved", 0)), ("synth_carved_1", ("carved", 1))]
    with pytest.raises(ValueError, match="synthetic scene must be one of objects, carved; got 'sun'"):
        recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"), synthetic_objects=2,
                      synthetic_scene="sun")
    mixed = validate_params(recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"),
                                          synthetic_objects=5, synthetic_scene=("objects", "carved"))).sources
    assert [s.synthetic_scene for s in mixed if s.is_synthetic] == [
        ("objects", 0), ("carved", 0), ("objects", 1), ("carved", 1), ("objects", 2)]
    assert len({s.name for s in mixed}) == len(mixed)
    with pytest.raises(ValueError, match="got 'sun'"):
        recipe_params(base, fold="0", mit_dir=tmp_path, lights=Path("data/mit-lights"), synthetic_objects=2,
                      synthetic_scene=("objects", "sun"))


def _exp(name, fold, variant, mse, lmse, dssim, weiss):
    """One experiment entry of `dvc exp show --json`."""
    metrics = {("mit_heldout" if fold else "mit"): {
        "model": {"mse_avg": mse, "lmse_avg": lmse, "dssim_avg": dssim},
        "weiss": {"mse_avg": weiss, "lmse_avg": weiss, "dssim_avg": weiss}}}
    params = {"shards": {"val_sequences": [f"mit_{o}" for o in fold]}, "loss": {"rsmooth_kind": variant},
              "train": {"steps": 400}, "evaluate": {"mit_dir": f"/somewhere/{name}"}}
    data = {"params": {"params.yaml": {"data": params}}, "metrics": {"data/eval_metrics.json": {"data": metrics}}}
    return {"name": name, "executor": {"state": "success"}, "revs": [{"rev": name, "name": name, "data": data}]}


def _exp_show(*experiments):
    base = {"params": {"params.yaml": {"data": {"shards": {"val_sequences": list(FOLDS[0])},
                                                "loss": {"rsmooth_kind": "dense"}, "train": {"steps": 400},
                                                "evaluate": {"mit_dir": "x"}}}}}
    failed = {"name": "broken", "executor": {"state": "failed"}, "revs": [{"rev": "b", "name": "broken", "data": {}}]}
    return [{"rev": "workspace", "data": base}, {"rev": "c0ffee", "name": "main", "data": base,
                                                   "experiments": [*experiments, failed]}]


EXPERIMENTS = _exp_show(
    _exp("a-f0", FOLDS[0], "dense", 0.02, 0.04, 0.20, 0.03),
    _exp("a-f1", FOLDS[1], "dense", 0.04, 0.06, 0.10, 0.05),
    _exp("b-f0", FOLDS[0], "local", 0.05, 0.05, 0.30, 0.03),
    _exp("b-f1", FOLDS[1], "local", 0.07, 0.09, 0.20, 0.05),
    _exp("all", (), "dense", 0.01, 0.01, 0.01, 0.02),
)


def test_table_averages_the_folds_per_variant():
    frame = T.experiments_frame(EXPERIMENTS)
    assert "broken" not in set(frame["Experiment"])  # failed runs are left out
    long = T.tidy(frame)
    model = long[(long["method"] == "model") & (long["fold"] != "all")]
    means = model.groupby("variant")[list(T.METRICS)].mean()
    assert means.loc["baseline params", "mse_avg"] == pytest.approx(0.03)
    assert means.loc["loss.rsmooth_kind=local", "lmse_avg"] == pytest.approx(0.07)
    text = T.results_markdown(long)
    assert "| baseline params | 400 | 2 | 1 | 0.0300 | 0.0500 | 0.1500 |" in text
    assert "| loss.rsmooth_kind=local | 400 | 2 | 1 | 0.0600 | 0.0700 | 0.2500 |" in text
    assert "| weiss | 0.0400 | 0.0400 | 0.0400 |" in text  # baselines on the same held-out objects, fold mean
    assert "| baseline params | 400 | yes/no/no |" in text  # 0.03 < 0.04, 0.05 > 0.04, 0.15 > 0.04
    assert "Ten on ten" in text and "apple+cup1+frog1+paper1+squirrel" in text


def test_k_of_n_folds_get_their_own_section_apart_from_the_cross_object_protocol():
    five_folds = [_exp(f"k{k}", held_out(f"{k}/5"), "dense", 0.01 * (k + 1), 0.02, 0.1, 0.03) for k in range(5)]
    long = T.tidy(T.experiments_frame(_exp_show(*EXPERIMENTS[1]["experiments"][:4], *five_folds)))
    text = T.results_markdown(long)
    cross, _, eight = text.partition("## Train on 8 objects, score 2")
    assert "| baseline params | 400 | 2 | 1 | 0.0300 | 0.0500 | 0.1500 |" in cross  # the 5-fold runs stay out of it
    assert "apple+panther" not in cross and "held out apple+panther; held out box+paper1" in eight
    # mean over the five folds: (0.01 + 0.02 + 0.03 + 0.04 + 0.05) / 5 = 0.03, each fold one seed
    assert "| baseline params | 400 | 5 | 1 | 0.0300 | 0.0200 | 0.1000 |" in eight
    assert "| weiss | 0.0300 | 0.0300 | 0.0300 |" in eight


def test_table_round_trips_through_the_csv(tmp_path):
    csv = tmp_path / "experiments.csv"
    T.experiments_frame(EXPERIMENTS).to_csv(csv, index=False)
    out = tmp_path / "results.md"
    assert T.main(["--from-csv", str(csv), "--out", str(out)]) == 0
    assert "| baseline params | 400 | 2 | 1 | 0.0300 | 0.0500 | 0.1500 |" in out.read_text()


def test_a_param_added_after_the_baseline_commit_is_a_variant_only_when_it_changes_the_old_code():
    frame = pd.DataFrame([
        {"Experiment": "<baseline>", "rev": "c0", "baseline": "c0", "param:loss.w_rsmooth": 4.0},
        {"Experiment": "old-behaviour", "rev": "e1", "baseline": "c0", "param:loss.w_rsmooth": 4.0,
         "param:model.reflectance": "decoder"},
        {"Experiment": "new-option", "rev": "e2", "baseline": "c0", "param:loss.w_rsmooth": 4.0,
         "param:model.reflectance": "image_ratio"},
        {"Experiment": "older-run", "rev": "e3", "baseline": "c0", "param:loss.w_rsmooth": 12.0},  # lacks the key
    ])
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame)))
    assert labels["old-behaviour"] == "baseline params"
    assert labels["new-option"] == "model.reflectance=image_ratio"
    assert labels["older-run"] == "loss.w_rsmooth=12"  # numbers as numbers: 12.0 (CSV) and 12 (JSON) are one value


def test_training_sources_beside_the_mit_objects_make_a_variant():
    mit = [{"name": "mit_apple", "url": "/a/apple"}, {"name": "mit_box", "url": "/a/box"}]
    objects = [{"name": f"synth_objects_{k}", "url": f"synthetic://objects?variant={k}"} for k in range(3)]
    frame = pd.DataFrame([
        {"Experiment": "<baseline>", "rev": "c0", "baseline": "c0", "param:sources": repr(mit)},
        {"Experiment": "other-paths", "rev": "e1", "baseline": "c0", "param:sources": repr(mit[::-1])},
        {"Experiment": "with-objects", "rev": "e2", "baseline": "c1", "param:sources": mit + objects + [
            {"name": "synth_sun", "url": "synthetic://sun"}]},
    ])
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame)))
    assert labels["other-paths"] == "baseline params"  # the MIT objects' paths and order are not a variant
    assert labels["with-objects"] == "sources+=synthetic://objects x3, synthetic://sun x1"
    assert T.extra_sources(None) == T.extra_sources(repr(mit)) == ""


def test_a_key_the_reference_lacks_compares_with_the_commit_the_row_ran_on():
    frame = pd.DataFrame([
        {"Experiment": "<baseline>", "rev": "c0", "baseline": "c0", "param:loss.w_rsmooth": 4.0},
        {"Experiment": "<baseline>", "rev": "c1", "baseline": "c1", "param:loss.w_rsmooth": 4,
         "param:frames.usable_low": 0.02, "param:evaluate.iiw_dir": ""},
        {"Experiment": "new-key-at-default", "rev": "e1", "baseline": "c1", "param:loss.w_rsmooth": 4,
         "param:frames.usable_low": 0.02, "param:evaluate.iiw_dir": None},
        {"Experiment": "new-key-set", "rev": "e2", "baseline": "c1", "param:loss.w_rsmooth": 4,
         "param:frames.usable_low": 0.05, "param:evaluate.iiw_dir": ""},
    ])
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame)))
    assert labels["new-key-at-default"] == "baseline params"  # "" (JSON) and None / NaN (CSV) are one value
    assert labels["new-key-set"] == "frames.usable_low=0.05"


def test_merge_keeps_saved_rows_of_commits_the_repository_lacks_and_labels_against_the_newest_commit(tmp_path):
    saved = T.experiments_frame(EXPERIMENTS)  # baseline commit c0ffee: rsmooth_kind dense
    newer = {"params": {"params.yaml": {"data": {"shards": {"val_sequences": list(FOLDS[0])},
                                                 "loss": {"rsmooth_kind": "local"}, "train": {"steps": 400},
                                                 "evaluate": {"mit_dir": "y"}}}}}
    fresh = T.experiments_frame([{"rev": "beef", "name": "main", "data": newer,
                                  "experiments": [_exp("c-f0", FOLDS[0], "local", 0.01, 0.02, 0.03, 0.03)]}])
    merged = T.merge_frames(saved, fresh)
    assert set(merged["Experiment"]) == {"<baseline>", "a-f0", "a-f1", "b-f0", "b-f1", "all", "c-f0"}
    labels = dict(zip(merged["Experiment"], T.variant_labels(merged)))
    # the one reference is the newest commit (beef, "local"): its own run and b-f0 (local on c0ffee) are its params
    assert labels["c-f0"] == labels["b-f0"] == "baseline params" and labels["a-f0"] == "loss.rsmooth_kind=dense"
    # a commit present in both: the repository's experiments replace the saved ones
    again = T.merge_frames(merged, T.experiments_frame(_exp_show(_exp("a-f0", FOLDS[0], "dense", 0.5, 0.5, 0.5, 0.5))))
    assert list(again[again["Experiment"] == "a-f0"]["metric:mit_heldout.model.mse_avg"]) == [0.5]
    assert "b-f0" not in set(again["Experiment"]) and "c-f0" in set(again["Experiment"])
    assert dict(zip(again["Experiment"], T.variant_labels(again)))["c-f0"] == "baseline params"  # same reference


def _seeded(name, fold, seed, mse, variant="dense"):
    """An experiment at `train.seed` = seed scoring `mse` on all three metrics (Weiss 0.5)."""
    exp = _exp(name, fold, variant, mse, mse, mse, 0.5)
    exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["seed"] = seed
    return exp


def test_seeds_are_averaged_within_each_fold_before_the_folds():
    # fold 0 at seeds 0 and 1 (0.01, 0.03: mean 0.02), fold 1 at seed 0 only (0.06): fold mean 0.04, not the
    # run mean (0.01 + 0.03 + 0.06) / 3 = 0.0333
    long = T.tidy(T.experiments_frame(_exp_show(
        _seeded("s0-f0", FOLDS[0], 0, 0.01), _seeded("s1-f0", FOLDS[0], 1, 0.03), _seeded("s0-f1", FOLDS[1], 0, 0.06))))
    assert set(long["variant"]) == {"baseline params"}  # the seed is not a variant
    text = T.results_markdown(long)
    assert "| baseline params | 400 | 2 | 1 | 0.0400 | 0.0400 | 0.0400 |" in text  # folds 2, seeds 1 (fold 1's)


def test_train_keys_that_do_not_change_a_run_are_not_a_variant():
    # checkpoint_every / log_every / num_workers change no number a run computes (train.py lets a resume differ in
    # them), so those runs average with the baseline; min_crop changes the training crops, so it is a variant
    neutral, other = _seeded("ck-f0", FOLDS[0], 1, 0.03), _seeded("mc-f0", FOLDS[0], 0, 0.05)
    neutral["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"].update(
        checkpoint_every=50, log_every=5, num_workers=2)
    other["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["min_crop"] = 0.5
    frame = T.experiments_frame(_exp_show(_seeded("s0-f0", FOLDS[0], 0, 0.01), neutral, other))
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame)))
    assert labels["ck-f0"] == labels["s0-f0"] == "baseline params"
    assert labels["mc-f0"] == "train.min_crop=0.5"


def test_a_baseline_commits_own_run_counts_once_beside_its_queued_twin():
    shown = _exp_show(_exp("f1", FOLDS[1], "dense", 0.06, 0.06, 0.06, 0.5),
                      _exp("twin-f0", FOLDS[0], "dense", 0.03, 0.03, 0.03, 0.5))
    own = _exp("own", FOLDS[0], "dense", 0.01, 0.01, 0.01, 0.5)["revs"][0]["data"]  # the commit's `dvc repro`
    shown[1]["data"] = own
    long = T.tidy(T.experiments_frame(shown))
    # fold 0: the commit's run (0.01) and its twin at the same seed (0.03) average to 0.02 and count as one seed;
    # fold mean (0.02 + 0.06) / 2 = 0.04 (the run mean (0.01 + 0.03 + 0.06) / 3 would be 0.0333)
    assert "| baseline params | 400 | 2 | 1 | 0.0400 | 0.0400 | 0.0400 |" in T.results_markdown(long)


def _commit(rev, variant, stamp, name):
    """A baseline commit of `dvc exp show --json` made at `stamp` (rsmooth_kind `variant`) with one experiment."""
    data = {"timestamp": stamp, "params": {"params.yaml": {"data": {
        "shards": {"val_sequences": list(FOLDS[0])}, "loss": {"rsmooth_kind": variant}, "train": {"steps": 400},
        "evaluate": {"mit_dir": "x"}}}}}
    return {"rev": rev, "name": "main", "data": data,
            "experiments": [_exp(name, FOLDS[0], variant, 0.01, 0.02, 0.03, 0.03)]}


def test_the_reference_is_the_newest_commit_whatever_order_exp_show_lists_them_in():
    """`dvc exp show --all-commits` lists commits newest first; two commits with experiments, the newer ("local")
    listed first: it is the reference, so its own params are "baseline params" and the older commit's differ."""
    shown = [_commit("new", "local", "2026-12-05T13:39:37", "on-new"), _commit("old", "dense", "2026-12-05T12:36:35", "on-old")]
    frame = T.experiments_frame(shown)
    assert list(dict.fromkeys(frame["baseline"])) == ["old", "new"]
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame)))
    assert labels["on-new"] == "baseline params" and labels["on-old"] == "loss.rsmooth_kind=dense"
    merged = T.merge_frames(T.experiments_frame(EXPERIMENTS), frame)  # after a saved table: still the newest
    assert dict(zip(merged["Experiment"], T.variant_labels(merged)))["on-new"] == "baseline params"


def test_a_commit_whose_lock_predates_its_params_has_no_run_of_its_own(tmp_path):
    """A real git repository: commit 1 locks evaluate with flip_average false; commit 2 edits params.yaml (true)
    without reproducing, so its lock's metrics are not a run of its params; commit 3 reproduces (lock updated)."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def commit(flip, locked_flip, message):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"flip_average": flip, "mit_dir": "x"}}))
        (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {
            "cmd": "python -m training.evaluate", "params": {"params.yaml": {
                "evaluate": {"flip_average": locked_flip, "mit_dir": "x"}}}}}}))
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    locked = commit(False, False, "locked")
    edited = commit(True, False, "params edited, not reproduced")
    reproduced = commit(True, True, "reproduced")
    assert T.stale_commits(str(tmp_path), [locked, edited, reproduced, "0" * 40]) == {edited}
    frame = T.experiments_frame(EXPERIMENTS)
    frame.loc[frame["Experiment"] == "<baseline>", "metric:mit_heldout.model.mse_avg"] = 0.5
    frame["metric:mit_heldout.model_beats.mse_avg.weiss"] = True  # a bool column (the metrics' verdicts)
    dropped = T.drop_stale_runs(frame, {"c0ffee"})
    assert dropped.loc[dropped["Experiment"] == "<baseline>", "metric:mit_heldout.model.mse_avg"].isna().all()
    assert dropped.loc[dropped["Experiment"] == "a-f0", "metric:mit_heldout.model.mse_avg"].item() == 0.02


def test_the_seed_spread_is_the_standard_error_of_the_fold_mean():
    # fold 0 seeds 0.01, 0.03: sd 0.01414, se 0.01; fold 1 seeds 0.06, 0.10: sd 0.02828, se 0.02;
    # mean over folds (0.02 + 0.08) / 2 = 0.05, its se sqrt(0.01^2 + 0.02^2) / 2 = 0.01118. The one-seed variant
    # ("local") has no spread and no row.
    long = T.tidy(T.experiments_frame(_exp_show(
        _seeded("s0-f0", FOLDS[0], 0, 0.01), _seeded("s1-f0", FOLDS[0], 1, 0.03),
        _seeded("s0-f1", FOLDS[1], 0, 0.06), _seeded("s1-f1", FOLDS[1], 1, 0.10),
        _seeded("l-f0", FOLDS[0], 0, 0.2, "local"), _seeded("l-f1", FOLDS[1], 0, 0.2, "local"))))
    text = T.results_markdown(long)
    assert "| baseline params | 400 | 2 | 2 | 0.0500 | 0.0500 | 0.0500 |" in text
    assert "| baseline params | 400 | 2 | 0.01118 | 0.01118 | 0.01118 |" in text
    spread = text.split("Seed spread")[1].split("Does the variant")[0]
    assert "local" not in spread


def test_paired_differences_subtract_the_reference_at_the_same_fold_and_seed():
    # reference fold 0: 0.01, 0.03; fold 1: 0.06, 0.10. "local" fold 0: 0.012, 0.026 (d +0.002, -0.004: mean -0.001,
    # sd 0.0042426, se 0.003); fold 1: 0.05, 0.098 (d -0.01, -0.002: mean -0.006, sd 0.0056569, se 0.004). Mean over
    # folds -0.0035, se sqrt(0.003^2 + 0.004^2) / 2 = 0.0025; lower si-MSE in 3 of 4 pairs. "tiny" shares one
    # seed per fold with the reference: no row. A reference run at fold 0, seed 0 from another baseline commit
    # (another clone, machine) pairs with nothing of this commit's.
    shown = _exp_show(
        _seeded("s0-f0", FOLDS[0], 0, 0.01), _seeded("s1-f0", FOLDS[0], 1, 0.03),
        _seeded("s0-f1", FOLDS[1], 0, 0.06), _seeded("s1-f1", FOLDS[1], 1, 0.10),
        _seeded("l0-f0", FOLDS[0], 0, 0.012, "local"), _seeded("l1-f0", FOLDS[0], 1, 0.026, "local"),
        _seeded("l0-f1", FOLDS[1], 0, 0.05, "local"), _seeded("l1-f1", FOLDS[1], 1, 0.098, "local"),
        _seeded("t-f0", FOLDS[0], 0, 0.2, "tiny"), _seeded("t-f1", FOLDS[1], 0, 0.2, "tiny"))
    other_commit = {**shown[1], "rev": "beef", "experiments": [_seeded("o-f0", FOLDS[0], 0, 0.9)]}
    long = T.tidy(T.experiments_frame([shown[0], other_commit, shown[1]]))
    text = T.results_markdown(long)
    paired = text.split("Paired against")[1].split("Does the variant")[0]
    assert ("| loss.rsmooth_kind=local | 400 | 2 | 3/4 | -0.00350 | 0.00250 | -0.00350 | 0.00250 | -0.00350 | "
            "0.00250 |") in paired
    assert "tiny" not in paired and "| baseline params |" not in paired


def test_a_named_reference_commit_replaces_the_newest_and_an_unknown_one_is_refused(tmp_path):
    """--reference picks the commit the variants are described against: the older commit ("dense") named, its own
    experiment is "baseline params" and the newer commit's is the variant; a prefix matching no commit is an error
    naming it and the commits there are."""
    frame = T.experiments_frame([_commit("beef01", "local", "2026-12-05T13:39:37", "on-new"),
                                 _commit("c0ffee", "dense", "2026-12-05T12:36:35", "on-old")])
    labels = dict(zip(frame["Experiment"], T.variant_labels(frame, "c0f")))
    assert labels["on-old"] == "baseline params" and labels["on-new"] == "loss.rsmooth_kind=local"
    assert dict(zip(frame["Experiment"], T.variant_labels(frame)))["on-new"] == "baseline params"  # default: newest
    with pytest.raises(ValueError, match=r"--reference 'abc' matches 0 baseline commits .*have: c0ffee, beef01"):
        T.variant_labels(frame, "abc")
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "results.md"
    assert T.main(["--from-csv", str(csv), "--out", str(out), "--reference", "c0ffee"]) == 0
    assert "against the params of baseline commit c0ffee" in out.read_text()
    assert T.main(["--from-csv", str(csv), "--out", str(tmp_path / "no.md"), "--reference", "abc"]) == 2
    assert not (tmp_path / "no.md").exists()


def test_a_bad_reference_is_refused_before_the_experiments_are_read(tmp_path, capsys):
    """In --repo mode --reference is checked first: not a hash prefix, or a prefix of no commit of the repository
    (nor, with --merge, of a saved baseline), returns 2 without running `dvc exp show` (this git repository has no
    DVC: reaching it would raise) and leaves the --csv as it was."""
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "c"],
                   cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True, capture_output=True,
                          text=True).stdout.strip()
    unknown = "0000" if not head.startswith("0000") else "ffff"
    csv = tmp_path / "rows.csv"
    csv.write_text("Experiment,rev,baseline\n<baseline>,c0ffee1,c0ffee1\n")
    for reference in ("HEAD", unknown, "c0ffee"):  # c0ffee: only in the saved rows, and no --merge
        argv = ["--repo", str(tmp_path), "--csv", str(csv), "--out", str(tmp_path / "r.md"), "--reference", reference]
        assert T.main(argv) == 2
        assert reference in capsys.readouterr().err
    assert csv.read_text() == "Experiment,rev,baseline\n<baseline>,c0ffee1,c0ffee1\n" and not (tmp_path / "r.md").exists()
    assert T.unknown_reference(str(tmp_path), head[:7]) is None
    assert T.unknown_reference(str(tmp_path), "c0ffee", csv) is None  # a saved baseline: --merge keeps it
    assert "nor a baseline of" in T.unknown_reference(str(tmp_path), unknown, csv)
