"""No params value reaches a shell: a source name full of shell syntax runs nothing, under real `dvc repro`.

On the old dvc.yaml (`${item}` / `${item.name}` in `cmd`) the name below ran `touch` before the schema could
reject it. Now every cmd is fixed text; the `sources` stage validates params.yaml first and stops with a message
naming the key.
"""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO
from tests.faults.repo import dvc, make_repo, ran, tiny_params

EVIL = ["x;touch {p}/semicolon;y", "x$(touch {p}/subst)y", "x`touch {p}/backtick`y", "x' ; touch {p}/quote ; '",
        "x && touch {p}/and"]


def test_no_params_interpolated_into_any_cmd():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = (stage.get("do") or stage)["cmd"]
        for line in cmd if isinstance(cmd, list) else [cmd]:
            assert "${" not in line, f"stage {name}: cmd interpolates a value: {line}"


@pytest.mark.slow
@pytest.mark.parametrize("template", EVIL)
def test_shell_syntax_in_a_source_name_runs_nothing(tmp_path, template):
    name = template.format(p=tmp_path)
    params = tiny_params()
    params["sources"] = [params["sources"][0], {**params["sources"][1], "name": name}]
    repo = make_repo(tmp_path / "repo", params)
    proc = dvc(repo, "repro", check=False)
    assert proc.returncode != 0
    assert not [p.name for p in tmp_path.iterdir() if p.name != "repo"], "the injected command ran"
    assert ran(proc.stdout) <= {"sources"}, proc.stdout
    assert "sources[1].name" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
