"""Open-loop arrivals through the whole pipeline (slow: real `dvc exp run -S
run.arrivals...`): against the test server with one slot, tasks arriving faster than it
serves them are recorded at their arrival times, load.csv has the offered rate beside the
achieved one, and the report says the tasks arrived open loop."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ollabench.records.schema import read_records
from tests.helpers.fake_ollama_process import fake_ollama_process
from tests.helpers.project import make_project, run_cmd

# Each call: first token after 30 ms, then 7 gaps of 10 ms (the project's cap is 8 tokens):
# about 200 ms a two-call task; a task arrives every 100 ms.
SCRIPT = {"tokens": 40, "ttft_ms": 30, "token_ms": 10}


@pytest.mark.slow
def test_dvc_exp_run_with_arrivals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")
    with fake_ollama_process(SCRIPT, "--model", "qwen2.5:7b", "--parallel", "1") as url:
        run_cmd(["dvc", "exp", "run", "-q", "-S", "model=qwen2.5-7b",
                 "-S", f"model.host='{url}'", "-S", "run.arrivals.rate_per_min=600",
                 "-S", "run.arrivals.pattern=constant", "-S", "run.arrivals.tasks=3"], repo)
    measured = [r for r in read_records(repo / "data" / "raw" / "calls.jsonl")
                if r.phase == "measured"]
    assert all(r.error is None for r in measured)
    firsts = {(r.run, r.arm, r.agent): r for r in sorted(measured, key=lambda r: -r.seq)}
    assert {key[2] for key in firsts} == {1, 2, 3}
    for (_, _, task), first in firsts.items():
        assert first.due_ms == pytest.approx((task - 1) * 100.0, abs=0.01)
        assert first.sent_ms >= first.due_ms
    with (repo / "data" / "processed" / "load.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["arm"], row["concurrency"], float(row["rate_per_min"])) for row in rows] == [
        ("control", "1", 600.0), ("treatment", "1", 600.0)]
    assert all(float(row["tasks_per_min"]) < 600.0 and float(row["lag_ms_p95"]) > 50.0
               for row in rows)
    report = (repo / "reports" / "report.md").read_text(encoding="utf-8")
    assert "Agent tasks arrived open loop, constant at 600 per minute, 3 per block" in report
