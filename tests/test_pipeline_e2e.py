"""End to end in a temporary git + DVC repo: `dvc repro`, then `dvc exp run -S ...`.

Slow (real model, real DVC); run with `pytest -m slow`, and always in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path) -> str:
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_project(dest: Path, runs: int = 2, caps: int = 8) -> Path:
    """A copy of the tracked project, with a small run as the committed default."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in tracked:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    run_yaml = dest / "conf" / "run" / "default.yaml"
    run = yaml.safe_load(run_yaml.read_text())
    run.update(runs=runs, num_predict={"analysis": caps, "report": caps})
    run_yaml.write_text(yaml.safe_dump(run, sort_keys=False))
    _run([sys.executable, "-m", "ollabench.cli", "params"], dest)
    _run(["git", "init", "-q", "-b", "main"], dest)
    _run(["dvc", "config", "--local", "core.site_cache_dir", str(dest.parent / "dvc-site")], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "project"], dest)
    return dest


def test_dvc_repro_then_exp_run_chimera(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "repo")
    _run(["dvc", "repro"], repo)
    report = (repo / "reports" / "report.md").read_text()
    assert "noise" in report.lower()  # the committed default is an A/A calibration
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics) >= {"analysis", "report", "workflow"}
    assert (repo / "data" / "raw" / "calls.jsonl").is_file()
    _run(["dvc", "status"], repo)

    _run(["dvc", "exp", "run", "-S", "profile=chimera", "-S", "run=quick"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"]["name"] == "chimera" and params["reference"]["name"] == "baseline"
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert "chimera" in text and "median_diff_pct" in text
