"""End to end in a temporary git + DVC repo: `dvc repro`, then `dvc exp run -S ...`.

Slow (real model, real DVC); run with `pytest -m slow`, and always in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.project import run_cmd, small_project

pytestmark = pytest.mark.slow


def test_dvc_repro_then_exp_run_chimera(tmp_path: Path) -> None:
    repo = small_project(tmp_path / "repo")
    run_cmd(["dvc", "repro"], repo)
    report = (repo / "reports" / "report.md").read_text()
    assert "noise" in report.lower()  # the committed default is an A/A calibration
    host = report.split("### The host", 1)[1].split("##", 1)[0]
    assert "|control|" in host and "Not recorded" not in host  # the host's load, per arm
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"primary", "quality", "runs", "stop_reason"}
    assert (repo / "data" / "raw" / "calls.jsonl").is_file()
    assert (repo / "data" / "judge" / "scores.jsonl").read_text() == ""  # the judge is off
    assert metrics["quality"]["verdict"] in ("no change detected", "lower", "higher")
    run_cmd(["dvc", "status", "-q"], repo)  # exit 0: every stage is up to date

    run_cmd(["dvc", "exp", "run", "-S", "profile=chimera", "-S", "run=quick"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"]["name"] == "chimera" and params["reference"]["name"] == "baseline"
    shown = json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert "chimera" in text and "workflow/e2e_ms" in text and "change_pct" in text
