"""`ollabench history` over revisions that ran load levels (run.concurrency): each level is a
series of its own, level 1 as before levels existed (a result without levels is level 1), so
a slowdown that only shows with two agents at once (the server lost a slot) is found in the
level-2 series at its commit and nowhere else."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ollabench.cli import main
from tests.helpers.revisions import Step, commit_steps, init_repo, repo_env
from tests.helpers.synthetic import Scenario

BEFORE_LEVELS = 1  # commits measured one agent at a time, without levels
TWO_SLOTS = 4  # then commits with levels 1 and 2 on a server with two slots
ONE_SLOT = 4  # then with one slot: at 2 agents every call waits as long as it runs


def test_each_level_is_a_series_and_a_slot_lost_shows_at_2_agents_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    steps = [Step(Scenario(runs=6, seed=100 + i, **loaded))
             for i, loaded in enumerate([{}] * BEFORE_LEVELS
                                        + [{"levels": (1, 2), "slots": 2}] * TWO_SLOTS
                                        + [{"levels": (1, 2), "slots": 1}] * ONE_SLOT)]
    with repo_env(tmp_path):
        repo = tmp_path / "repo"
        init_repo(repo)
        shas = commit_steps(repo, steps)
        monkeypatch.chdir(repo)
        assert main(["history", "--no-progress", "--out", "h", "--metric", "e2e_ms",
                     "--metric", "eval_tok_s"]) == 0
    out = capsys.readouterr().out
    with (repo / "h" / "history.csv").open() as fh:
        points = list(csv.DictReader(fh))
    with (repo / "h" / "changes.csv").open() as fh:
        changes = list(csv.DictReader(fh))
    by_series: dict[str, list[dict[str, str]]] = {}
    for row in points:
        by_series.setdefault(row["series"], []).append(row)
    # level 1 keeps its name and every revision, the one without levels included
    assert len(by_series["treatment_workflow_e2e_ms_setup1"]) == len(shas)
    assert {r["concurrency"] for r in by_series["treatment_workflow_e2e_ms_setup1"]} == {"1"}
    loaded = by_series["treatment_workflow_e2e_ms_c2_setup1"]
    assert [r["rev"] for r in loaded] == [s[:10] for s in shas[BEFORE_LEVELS:]]
    assert {r["concurrency"] for r in loaded} == {"2"}
    # the lost slot: time doubles at 2 agents, from its commit; the eval rate does not move
    lost = shas[BEFORE_LEVELS + TWO_SLOTS][:10]
    assert {(c["series"], c["rev"], c["verdict"]) for c in changes} == {
        (f"treatment_{stage}_e2e_ms_c2_setup1", lost, "worse")
        for stage in ("analysis", "report", "workflow")}
    assert all(abs(float(c["step_pct"]) - 100.0) < 10.0 for c in changes)
    assert "treatment workflow e2e_ms at 2 agents (setup 1): +" in out
    assert (repo / "h" / "figures" / "treatment_workflow_e2e_ms_c2_setup1.png").is_file()
