"""bench/gpu_check.py's plumbing on the CPU: the one JSON it rewrites after every part, part timeouts, the
budget that skips parts, argument checks and the shell wrapper's syntax (the GPU parts run only on a lent GPU)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import gpu_check as G


def test_parts_are_recorded_in_one_json_after_each(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "MIN_START", 1)
    check = G.Check(tmp_path / "out", budget=60.0)
    ok = check.run("hello", [sys.executable, "-c", "print('line 1'); print('figure 42')"], limit=30)
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert ok["status"] == "ok" and ok["returncode"] == 0 and saved["parts"]["hello"]["tail"] == ["line 1", "figure 42"]
    failed = check.run("broken", [sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"], limit=30)
    assert failed["status"] == "failed" and failed["returncode"] == 3
    slow = check.run("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"], limit=3)
    assert slow["status"] == "timeout" and slow["seconds"] < 10
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert list(saved["parts"]) == ["hello", "broken", "slow"] and saved["parts"]["broken"]["tail"] == ["oops"]
    assert "===== broken" in (tmp_path / "out" / "gpu_check.log").read_text()


def test_a_part_is_skipped_when_the_budget_is_spent(tmp_path):
    check = G.Check(tmp_path, budget=G.MIN_START - 1)
    part = check.run("late", [sys.executable, "-c", "print(1)"], limit=100)
    assert part["status"] == "skipped" and "budget" in part["reason"]


def test_arguments_and_the_shell_wrappers(tmp_path):
    with pytest.raises(SystemExit):
        G.main(["--steps", "0"])
    with pytest.raises(SystemExit):
        G.main(["--prepare", "--mit-dir", str(tmp_path)])  # no MIT images there
    for script in ("bench/gpu_check.sh", "bench/gpu_wheels.sh"):
        assert subprocess.run(["bash", "-n", script], cwd=G.REPO).returncode == 0, script


def test_run_params_sets_the_schedule_and_the_evaluation_folder(tmp_path):
    import yaml

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "params.yaml").write_text(yaml.safe_dump({"train": {"steps": 400, "lr": 0.001}, "evaluate": {"mit_dir": "x"}}))
    path = G.run_params(tmp_path / "data", tmp_path, steps=300, preset="paper", workers=8, max_images=10)
    raw = yaml.safe_load(path.read_text())
    assert raw["train"] == {"steps": 300, "lr": 0.001, "checkpoint_every": 300, "log_every": 30, "num_workers": 8}
    assert raw["model"]["preset"] == "paper" and raw["evaluate"]["mit_dir"] == str((tmp_path / "data" / "mit-eval").resolve())
