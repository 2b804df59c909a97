"""training/rescore.py: a finished run's held-out MIT objects scored again with other test-time options.

References: the evaluate stage's own per-object scores (training/evaluate.py main, end to end) for the run's options,
and `decompose` + `metrics.mit_scores` by hand for a variant; the DVC path reads a checkpoint committed to a real
git + DVC repository."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from tests.faults.repo import DVC, env_for, run
from tests.training.test_evaluate import E_model, checkpoint, make_fixtures  # noqa: F401 (fixture)
from training import decompose as D
from training import evaluate as E
from training import rescore as R


def _two_objects(tmp_path):
    root = make_fixtures(tmp_path)
    shutil.copytree(root / "mit" / "blocks", root / "mit" / "bricks")  # a second object, trained on
    return root


def _params(root, **evaluate):
    return {"sources": [{"name": "mit_blocks", "url": str(root / "mit" / "blocks"), "type": "images"},
                        {"name": "mit_bricks", "url": str(root / "mit" / "bricks"), "type": "images"}],
            "download": {"allow_local": True}, "shards": {"val_sequences": ["mit_blocks"]},
            "evaluate": {"mit_dir": str(root / "mit"), "flatten_reflectance": None, **evaluate}}


def test_rescore_scores_the_held_out_objects_as_the_evaluate_stage_does_and_each_variant(tmp_path, checkpoint):
    root = _two_objects(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(root, residual_split=0.5)))
    csv = tmp_path / "rows.csv"
    assert R.main(["--checkpoint", str(checkpoint), "--params", str(tmp_path / "params.yaml"), "--csv", str(csv),
                   "--variant", "colour", "residual_chroma_to_reflectance=true", "flatten_reflectance=0.5",
                   "--variant", "small", "mit_long_side=128", "--markdown", str(tmp_path / "report.md")]) == 0
    rows = pd.read_csv(csv)
    report = (tmp_path / "report.md").read_text()
    assert "| colour | residual_chroma_to_reflectance=true flatten_reflectance=0.5 |" in report
    assert sorted(rows["object"].unique()) == ["blocks"]  # bricks was trained on: not scored
    assert list(rows["variant"]) == [R.AS_RUN, "colour", "small"]
    assert set(rows["fold"]) == {"blocks"}

    # "as run" = the evaluate stage's per-object model scores with the same params
    assert E.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"), "--metrics",
                   str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")]) == 0
    staged = {r["image"]: r["model"] for r in json.loads((tmp_path / "eval" / "per_image.json").read_text())["mit"]}
    as_run = rows[rows["variant"] == R.AS_RUN].iloc[0]
    for key in R.METRICS:
        assert as_run[key] == pytest.approx(staged["blocks"][key], rel=1e-9)

    # each variant = decompose by hand with the run's options (residual_split 0.5, flatten_reflectance None, the
    # rest the params defaults) overridden
    data = E.load_mit_object(root / "mit" / "blocks")

    def by_hand_scores(long_side, **overrides):
        options = dict(flip_average=False, residual_split=0.5, residual_chroma_to_reflectance=False, chroma_edges=None,
                       chroma_edge_min_pixels=100, flatten_reflectance=None, flatten_threshold=0.03,
                       flatten_chroma_bandwidth=0.1, norm_statistics="image")
        layers = D.decompose(E_model(checkpoint), E.mit_srgb(data["diffuse"]), long_side, **{**options, **overrides})
        return E.M.mit_scores(data["reflectance"], data["shading"], layers.reflectance, layers.shading, data["mask"])

    for variant, expect in [("colour", by_hand_scores(None, residual_chroma_to_reflectance=True, flatten_reflectance=0.5)),
                            ("small", by_hand_scores(128))]:  # mit_long_side: the network runs at that long side
        scored = rows[rows["variant"] == variant].iloc[0]
        for key in R.METRICS:
            assert scored[key] == pytest.approx(expect[key], rel=1e-9)
        assert scored["mse_avg"] != as_run["mse_avg"]


def test_summarise_averages_objects_then_runs_then_folds():
    rows = pd.DataFrame([
        {"run": "a", "fold": "x", "seed": 0, "variant": "v", "object": "o1", "mse_avg": 1.0, "lmse_avg": 2.0, "dssim_avg": 3.0},
        {"run": "a", "fold": "x", "seed": 0, "variant": "v", "object": "o2", "mse_avg": 3.0, "lmse_avg": 2.0, "dssim_avg": 3.0},
        {"run": "b", "fold": "x", "seed": 1, "variant": "v", "object": "o1", "mse_avg": 6.0, "lmse_avg": 2.0, "dssim_avg": 3.0},
        {"run": "c", "fold": "y", "seed": 0, "variant": "v", "object": "o3", "mse_avg": 10.0, "lmse_avg": 4.0, "dssim_avg": 3.0},
    ])
    tables = R.summarise(rows)
    assert tables["runs"].loc[("v", "x", "a"), "mse_avg"] == 2.0
    assert tables["folds"].loc[("v", "x"), "mse_avg"] == 4.0  # (2 + 6) / 2: each run counts once
    assert tables["mean"].loc["v", "mse_avg"] == 7.0  # (4 + 10) / 2: each fold counts once
    assert tables["mean"].loc["v", "lmse_avg"] == 3.0
    report = R.report_markdown(tables, {"v": "flip_average=true"}, "python -m training.rescore --rev a")
    assert "`python -m training.rescore --rev a`" in report
    assert "| v | flip_average=true | 7.00000 | 3.00000 | 3.00000 |" in report
    assert "| v | x | a, b | 4.00000 | 2.00000 | 3.00000 |" in report
    assert "| v | y | c | 10.00000 | 4.00000 | 3.00000 |" in report


def test_rescore_names_bad_variants_and_runs(tmp_path, checkpoint, capsys):
    root = _two_objects(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(root)))
    base = ["--checkpoint", str(checkpoint), "--params", str(tmp_path / "params.yaml")]
    assert R.main([*base, "--variant", "wide", "residual_split=2"]) == 1
    assert "variant wide" in capsys.readouterr().err
    assert R.main([*base, "--variant", "odd", "max_images=3"]) == 1  # an evaluate key, not a test-time option
    assert "max_images" in capsys.readouterr().err
    assert R.main([*base, "--variant", "odd", "residual_split"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        R.main(["--checkpoint", str(checkpoint)])  # no params


def test_rescore_reads_a_run_committed_to_a_dvc_repository(tmp_path, checkpoint):
    """A git + DVC repository whose commit tracks data/models (DVC) and params.yaml (git): --rev HEAD scores it;
    an unknown name is an error naming it."""
    root = _two_objects(tmp_path / "fixtures")
    repo = tmp_path / "repo"
    (repo / "data" / "models").mkdir(parents=True)
    shutil.copy(checkpoint, repo / "data" / "models" / "checkpoint.pt")
    (repo / "params.yaml").write_text(yaml.safe_dump(_params(root)))
    env = env_for(repo)
    run(["git", "init", "-q"], repo, env=env)
    run([DVC, "init", "-q"], repo, env=env)
    run([DVC, "add", "-q", "data/models"], repo, env=env)
    run(["git", "add", "-A"], repo, env=env)
    run(["git", "commit", "-qm", "a run"], repo, env=env)
    shutil.rmtree(repo / "data" / "models")  # only the DVC cache has it now
    csv = tmp_path / "rows.csv"
    assert R.main(["--repo", str(repo), "--rev", "HEAD", "--csv", str(csv)]) == 0
    rows = pd.read_csv(csv)
    assert list(rows["object"]) == ["blocks"] and list(rows["run"]) == ["HEAD"]
    direct = tmp_path / "direct.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(root)))
    assert R.main(["--checkpoint", str(checkpoint), "--params", str(tmp_path / "params.yaml"), "--csv", str(direct)]) == 0
    assert rows["lmse_avg"].iloc[0] == pytest.approx(pd.read_csv(direct)["lmse_avg"].iloc[0], rel=1e-12)
    with pytest.raises(ValueError, match="nosuch"):
        R.resolve_rev(repo, "nosuch")
