"""The judge stage in the real pipeline (slow: real model, real `dvc exp run`): the embedded
model judges its own answers and the scores reach the comparisons and the report.

A module of its own, apart from the quality gate's runs, so that a test worker can run it
beside them; on the one-file workload of `small_project`, with 24-token answers (at its
4-token caps the judge wrote no score): the scores' path through the pipeline, not their
values, is what is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.project import run_cmd, small_project


@pytest.mark.slow
def test_the_judge_stage_scores_into_the_report(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = small_project(tmp_path / "repo")
    run_cmd(["dvc", "exp", "run", "-q", "-S", "run=quick", "-S", "workload.num_predict.analysis=24",
             "-S", "workload.num_predict.report=24", "-S", "judge=embedded",
             "-S", "judge.allow_model_under_test=true"], repo)
    scores = (repo / "data" / "judge" / "scores.jsonl").read_text().splitlines()
    assert len(scores) == 8  # 2 runs x 2 arms x 2 stages
    comparisons = (repo / "data" / "processed" / "comparisons.csv").read_text()
    assert "workflow,judge_score," in comparisons
    report = (repo / "reports" / "report.md").read_text()
    assert "Judge: `smollm2-135m` (llamacpp," in report
