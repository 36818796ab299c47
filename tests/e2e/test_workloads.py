"""Other workloads through the whole pipeline on the embedded default (slow: real model,
real `dvc exp run`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ollabench.records import read_records
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
