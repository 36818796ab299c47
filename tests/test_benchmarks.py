"""Every script in benchmarks/ runs in its smoke mode (tiny sizes, no timing targets), so
that a change to the code a benchmark calls fails CI instead of leaving the benchmark to rot
(two did: a RunConfig field renamed, a statistic that did not scale)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.project import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "run_all.py")


def test_run_all_smoke_runs_every_script() -> None:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec and spec.loader
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    assert [p.name for p in run_all.scripts(smoke=True)] == SCRIPTS
    assert [p.name for p in run_all.scripts(smoke=False)] == [
        name for name in SCRIPTS if name.startswith("bench_")]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_in_smoke_mode(script: str, tmp_path: Path) -> None:
    """The script as a user runs it (repository root, a fresh interpreter), temporary files
    under this test's folder."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=ROOT,
                          env=os.environ | {"TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{script} --smoke:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
