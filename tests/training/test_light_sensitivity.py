"""training/light_sensitivity.py: a run's reflectance scored from the diffuse image, each light and their mix.

References: the mix weights against lights combined with known weights; the CLI's rows against `decompose` +
`metrics.mit_scores` by hand (the fixture's diffuse image is its first light, so the two score alike and the mix
is that light)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.params import load_params
from tests.training.test_evaluate import E_model, checkpoint  # noqa: F401 (fixture)
from tests.training.test_rescore import _params, _two_objects
from training import decompose as D
from training import evaluate as E
from training import light_sensitivity as L


def test_light_mix_weights_recover_a_known_non_negative_mix_inside_the_mask():
    rng = np.random.default_rng(0)
    lights = rng.uniform(0.0, 1.0, (4, 6, 7, 3))
    image = 0.7 * lights[0] + 0.2 * lights[2]
    mask = np.ones((6, 7), bool)
    mask[0] = False
    image[0] = 5.0  # outside the mask: must not pull the fit
    np.testing.assert_allclose(L.light_mix_weights(lights, image, mask), [0.7, 0.0, 0.2, 0.0], atol=1e-9)
    # a negative part is clipped to 0 (non-negative least squares), not followed
    assert L.light_mix_weights(lights, lights[1] - 0.5 * lights[3], mask)[3] == 0.0


def test_light_sensitivity_scores_each_input_as_decompose_and_mit_scores_do_by_hand(tmp_path, checkpoint):
    root = _two_objects(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(root, residual_split=0.5)))
    csv = tmp_path / "rows.csv"
    assert L.main(["--checkpoint", str(checkpoint), "--params", str(tmp_path / "params.yaml"), "--csv", str(csv)]) == 0
    rows = pd.read_csv(csv).set_index("input")
    data = E.load_mit_object(root / "mit" / "blocks")
    n = len(data["lights"])
    assert list(rows.index) == ["diffuse", *[f"light{k:02d}" for k in range(1, n + 1)], "light mix", "lights log-mean"]
    assert set(rows["object"]) == {"blocks"}  # bricks was trained on: not scored

    options = D.decompose_options(load_params(tmp_path / "params.yaml").evaluate)
    model = E_model(checkpoint)

    def reflectance(linear):
        return D.decompose(model, E.mit_srgb(linear), None, **options).reflectance

    def scores(r):
        return E.M.mit_scores(data["reflectance"], data["shading"], r, data["shading"], data["mask"])

    logs = []
    for k, light in enumerate(data["lights"]):
        r = reflectance(light)
        logs.append(np.log(np.maximum(r, 1e-4)))
        assert rows.loc[f"light{k + 1:02d}", "mse_r"] == pytest.approx(scores(r)["mse_r"], rel=1e-9)
    expect = scores(np.exp(sum(logs) / n))
    for key in ("mse_r", "lmse_r", "dssim_r"):
        assert rows.loc["lights log-mean", key] == pytest.approx(expect[key], rel=1e-6)
    # the diffuse image is light01 here: same scores, and the mix fitted to it is light01 alone
    assert rows.loc["diffuse", "mse_r"] == pytest.approx(rows.loc["light01", "mse_r"], rel=1e-9)
    assert rows.loc["light mix", "mse_r"] == pytest.approx(rows.loc["diffuse", "mse_r"], rel=1e-4)
    assert rows.loc["diffuse", "mse_r"] != rows.loc["light02", "mse_r"]


def test_light_sensitivity_needs_runs(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit):
        L.main(["--checkpoint", str(checkpoint)])  # no params
    capsys.readouterr()
    params = _params(_two_objects(tmp_path))
    params["evaluate"]["mit_dir"] = str(tmp_path / "nowhere")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert L.main(["--checkpoint", str(checkpoint), "--params", str(tmp_path / "params.yaml")]) == 1
    assert "nowhere" in capsys.readouterr().err
