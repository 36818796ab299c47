"""`ollabench doctor` on the real embedded engine with tiny settings: every open choice is
measured in a temporary folder, the advice names the runs and minutes, and nothing of an
experiment is touched."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from ollabench.cli import main
from ollabench.doctor import advice, choices, run_doctor, variant
from tests.helpers.project import tiny_config


def test_a_variant_is_an_aa_of_the_choice(raw_config: dict[str, Any]) -> None:
    config = tiny_config(raw_config, analysis=8, report=6)
    thread = next(c for c in choices(config) if c.options)  # pinned where 2+ CPUs
    half = next(c for c in choices(config) if c.name == "half the output per call")
    aa = variant(config, thread, runs=4)
    assert aa.reference == aa.profile and aa.profile.options["num_thread"] == 1
    assert aa.run.runs == 4 and aa.run.stopping.mode == "fixed"
    assert variant(config, half, runs=4).workload.num_predict.model_dump() == {
        "analysis": 4, "report": 3}


@pytest.mark.slow
def test_doctor_measures_every_choice_and_touches_nothing(
        raw_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an experiment's data/ would be here
    config = tiny_config(raw_config, analysis=4, report=4, warmup=0)
    affinity = os.sched_getaffinity(0)
    findings, seconds = run_doctor(config, runs=2)
    assert [f.choice.name for f in findings] == [c.name for c in choices(config)]
    assert len(findings) == 3  # current, one thread (pinned with 2+ CPUs), shorter output
    for finding in findings:
        assert finding.minutes_per_run > 0 and math.isfinite(finding.run_noise_pct)
    assert os.sched_getaffinity(0) == affinity and seconds > 0
    assert list(tmp_path.iterdir()) == []
    lines = advice(findings, config)
    assert lines[0].startswith("| setting | run noise | after pairing | runs per arm for +-5%")
    assert any(line.startswith("At the current settings a decision needs about")
               for line in lines)


def test_too_few_runs_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--runs", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == "ollabench: error: --runs: must be at least 2 (a spread needs two runs), got 1"
