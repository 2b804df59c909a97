"""The params schema: the shipped params.yaml validates; bad keys and values fail naming the key."""
from __future__ import annotations

import re

import pytest
import yaml

from pipeline import code_closure
from pipeline.code_closure import REPO_ROOT, imported_modules, module_path
from pipeline.params import ParamsError, load_params, validate_params
from tests.conftest import REPO

MINIMAL = {"sources": [{"name": "cam1", "url": "https://example.org/v.mp4"}]}


def _error(raw) -> str:
    with pytest.raises(ParamsError) as info:
        validate_params(raw)
    return str(info.value)


def test_shipped_params_validate():
    params = load_params(REPO / "params.yaml")
    assert params.sources and all(s.is_synthetic for s in params.sources)


def test_defaults_fill_sections():
    params = validate_params(MINIMAL)
    assert params.frames.per_sequence == 20 and params.masks.backend == "temporal"
    assert params.loss.lum_exponent == pytest.approx(1 / 8)  # the paper's value, not the code's 1/4


@pytest.mark.parametrize(
    "raw, key",
    [
        ({**MINIMAL, "frames": {"per_sequense": 4}}, "frames.per_sequense"),
        ({**MINIMAL, "frames": {"per_sequence": 1}}, "frames.per_sequence"),
        ({**MINIMAL, "masks": {"backend": "sam"}}, "masks.backend"),
        ({**MINIMAL, "masks": {"saturation": {"high": 2}}}, "masks.saturation.high"),
        ({"sources": [{"name": "a", "url": "https://x/a", "type": "gif"}]}, "sources[0].type"),
        ({"sources": [{"name": "has.dot", "url": "https://x/a"}]}, "sources[0].name"),
        ({"sources": [{"name": "a", "url": "https://x/a", "colour": 1}]}, "sources[0].colour"),
        ({"sources": [{"name": "a", "url": "https://x/a", "start": 5, "end": 2}]}, "sources[0]"),
        ({"sources": []}, "sources"),
        ({**MINIMAL, "trian": {}}, "trian"),
        ({"sources": [{"name": "a", "url": "synthetic://objects?variant=x"}]}, "sources[0]"),
        ({"sources": [{"name": "a", "url": "synthetic://objects?seed=2"}]}, "sources[0]"),
        ({"sources": [{"name": "a", "url": "synthetic://objects\n"}]}, "sources[0]"),
    ],
)
def test_errors_name_the_key(raw, key):
    assert key in _error(raw)


def test_duplicate_names_refused():
    assert "duplicate source name 'a'" in _error({"sources": [{"name": "a", "url": "https://x/1"}, {"name": "a", "url": "https://x/2"}]})


@pytest.mark.parametrize("url", ["file:///tmp/v.mp4", "/tmp/v.mp4", "videos/v.mp4"])
def test_local_sources_need_opt_in(url):
    raw = {"sources": [{"name": "a", "url": url}]}
    message = _error(raw)
    assert "sources[0].url" in message and "download.allow_local" in message
    assert validate_params({**raw, "download": {"allow_local": True}}).sources[0].is_local


def test_params_are_frozen():
    params = validate_params(MINIMAL)
    with pytest.raises(Exception):
        params.frames.per_sequence = 3  # type: ignore[misc]


def test_load_params_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("sources: [unclosed")
    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text(yaml.safe_dump({"sources": [{"name": "a"}]}))
    with pytest.raises(ParamsError, match=r"sources\[0\]\.url"):
        load_params(bad)


def test_synthetic_urls_name_scene_and_variant():
    sources = validate_params({"sources": [{"name": "a", "url": "synthetic://objects"},
                                           {"name": "b", "url": "synthetic://objects?variant=12"}]}).sources
    assert [s.synthetic_scene for s in sources] == [("objects", 0), ("objects", 12)]
    assert "synthetic://SCENE?variant=N" in _error({"sources": [{"name": "a", "url": "synthetic://sun?variant=-1"}]})


def test_every_stage_depends_on_the_schema_that_holds_its_defaults():
    """A stage reads params.yaml through pipeline/params.py, and a key params.yaml leaves out takes the schema's
    default: DVC tracks only the values written in params.yaml, so without the schema file as a dependency a changed
    default (e.g. evaluate.flatten_reflectance) would leave `dvc repro` reporting stale metrics as up to date."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    lacking = [name for name, stage in stages.items() if "pipeline/params.py" not in stage.get("deps", [])]
    assert not lacking, f"dvc.yaml stages without pipeline/params.py among their deps: {lacking}"


def test_every_stage_depends_on_the_code_it_runs():
    """Each stage's deps list every project module its `python -m` module imports, transitively (plumbing aside,
    pipeline/code_closure.py PLUMBING): otherwise a change there leaves `dvc repro` reporting stale outputs as up to
    date, and a checkpoint that fingerprints its code (training/train.py `code_hash`) differs between a fresh clone
    and the lock."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    lacking = {}
    for name, stage in stages.items():
        module = re.match(r"python -m ([\w.]+)", stage["cmd"]).group(1)
        code = {module_path(m).relative_to(REPO_ROOT).as_posix() for m in imported_modules(module)}
        missing = code - set(stage.get("deps", []))
        if missing:
            lacking[name] = sorted(missing)
    assert not lacking, f"dvc.yaml stages lack the code they run among their deps: {lacking}"


def test_imported_modules_follows_every_import_form_and_skips_plumbing(tmp_path, monkeypatch):
    """Hand-built packages: `from pkg import x`, `from pkg.x import y`, `import pkg.x` and an import inside a
    function are followed; a skipped module is neither listed nor followed; other packages are ignored."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom pkg import b\nfrom pkg.c import thing\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.d\n")
    (pkg / "c.py").write_text("thing = 1\nimport numpy\n")
    (pkg / "d.py").write_text("from pkg import plumbing\n")
    (pkg / "plumbing.py").write_text("import pkg.hidden\n")
    (pkg / "hidden.py").write_text("")
    monkeypatch.setattr(code_closure, "REPO_ROOT", tmp_path)
    closure = code_closure.imported_modules
    assert closure("pkg.a", ("pkg",), frozenset()) == {"pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.plumbing", "pkg.hidden"}
    assert closure("pkg.a", ("pkg",), frozenset({"pkg.plumbing"})) == {"pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    assert closure("pkg.plumbing", ("pkg",), frozenset({"pkg.plumbing"})) == {"pkg.plumbing", "pkg.hidden"}
