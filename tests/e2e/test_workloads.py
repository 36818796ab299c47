"""Other workloads through the whole pipeline on the embedded default (slow: real model,
real `dvc exp run`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ollabench.records.schema import read_records
from tests.helpers.project import make_project, run_cmd


@pytest.mark.slow
def test_a_trace_replayed_with_the_models_own_replies(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")

    run_cmd(["dvc", "exp", "run", "-q", "-S", "workload=trace", "-S",
             "workload.path=data/traces/example.jsonl", "-S", "workload.replay=model",
             "-S", "run=quick"], repo)

    records = read_records(repo / "data" / "raw" / "calls.jsonl")
    measured = Counter(r.stage for r in records if r.phase == "measured" and r.error is None)
    assert measured == {"triage": 4, "summarise": 4, "plan": 4, "follow_up": 8}
    report = (repo / "reports" / "report.md").read_text()
    for stage in ("triage", "summarise", "plan", "follow_up", "workflow"):
        assert f"|{stage}|" in report
    assert report.index("|triage|") < report.index("|follow_up|")


@pytest.mark.slow
def test_the_tool_agent_runs_turn_by_turn_on_the_embedded_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")

    # Two turns: the second sees the first's tool results (as a fourth sees the third's).
    run_cmd(["dvc", "exp", "run", "-q", "-S", "workload=tool_agent", "-S", "workload.max_turns=2",
             "-S", "run=quick"], repo)

    records = read_records(repo / "data" / "raw" / "calls.jsonl")
    turns = [r for r in records if r.phase == "measured"]
    assert turns and all(r.error is None and r.stage == f"turn{r.task_turn}" for r in turns)
    assert all(r.tool_calls is not None and r.invalid_tool_calls is not None for r in turns)
    tasks = Counter((r.run, r.arm) for r in records if r.task_ended_by is not None)
    assert tasks == {(run, arm): 1 for run in (1, 2) for arm in ("control", "treatment")}
    for record in (r for r in records if r.phase == "unreached"):
        assert any(r.task_ended_by == "final_answer" and r.task_turn < int(record.stage[4:])
                   for r in turns if (r.run, r.arm) == (record.run, record.arm))
    report = (repo / "reports" / "report.md").read_text()
    assert "|turn1|" in report and "|workflow|" in report
    assert "### Tool agent tasks" in report
