"""Agents at once through the whole pipeline (slow: real `dvc exp run`): against the test
server with 2 slots, throughput doubles from 1 to 2 agents and stays flat at 4, the recorded
queue wait at 4 is the wait the server imposed, and the report shows the curve, each arm's
capacity and a verdict per level; on the embedded default, levels 1 and 2 run end to end."""

from __future__ import annotations

import csv
import json
import statistics
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ollabench.records.schema import read_records
from tests.helpers.fake_ollama_process import fake_ollama_process
from tests.helpers.project import make_project, run_cmd, small_project

# Each call: first token after 50 ms, then 7 gaps of 20 ms (the project's cap is 8 tokens).
SCRIPT = {"tokens": 40, "ttft_ms": 50, "token_ms": 20}


def two_slot_server() -> AbstractContextManager[str]:
    return fake_ollama_process(SCRIPT, "--model", "qwen2.5:7b", "--parallel", "2")


def _load_rows(repo: Path) -> dict[tuple[str, int], dict[str, str]]:
    with (repo / "data" / "processed" / "load.csv").open(encoding="utf-8") as fh:
        return {(row["arm"], int(row["concurrency"])): row for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_two_slots_double_the_throughput_then_queue(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")
    with two_slot_server() as url:
        run_cmd(["dvc", "exp", "run", "-q", "-S", "model=qwen2.5-7b", "-S",
                 "run.concurrency=[1,2,4]", "-S", "model.server_parallel=2",
                 "-S", f"model.host='{url}'", "-S", "run.slo.e2e_ms=1000"], repo)
        with urllib.request.urlopen(f"{url}/_fake/exchanges", timeout=10) as answer:
            exchanges = json.load(answer)["exchanges"]
    rows = _load_rows(repo)
    for arm in ("control", "treatment"):
        rate = {level: float(rows[(arm, level)]["output_tok_s"]) for level in (1, 2, 4)}
        assert 1.5 < rate[2] / rate[1] < 2.5, rate
        assert 0.75 < rate[4] / rate[2] < 1.33, rate
        assert rows[(arm, 4)]["generating_max"] == "2"
    waited_ms = {e["body"]["messages"][0]["content"][1:9]: e["slot_wait_ns"] / 1e6
                 for e in exchanges if e["path"] == "/api/chat" and e["body"].get("messages")}
    at_4 = [r for r in read_records(repo / "data" / "raw" / "calls.jsonl")
            if r.phase == "measured" and r.concurrency == 4]
    errors = [r.queue_ms - waited_ms[r.nonce] for r in at_4]
    assert statistics.median(waited_ms[r.nonce] for r in at_4) > 50
    assert abs(statistics.median(errors)) < 10, errors
    report = (repo / "reports" / "report.md").read_text(encoding="utf-8")
    assert "## Under load" in report and "figures/load_curve.png" in report
    for arm in ("control", "treatment"):  # queueing at 4 agents: tasks take longer
        assert float(rows[(arm, 4)]["e2e_ms_p50"]) > 1.3 * float(rows[(arm, 2)]["e2e_ms_p50"])
        met = [level for level in (1, 2, 4) if float(rows[(arm, level)]["goodput_pct"]) >= 95]
        assert (f"- Capacity of {arm} (`baseline`): {max(met)} agent(s) at once" if met
                else f"- Capacity of {arm} (`baseline`): no level met the SLO") in report
    metrics = json.loads((repo / "reports" / "metrics.json").read_text(encoding="utf-8"))
    assert "server_parallel_note" not in metrics
    # a verdict per loaded level, the block its unit; the summary answers at each level
    assert set(metrics["primary_levels"]) == {"2", "4"}
    assert all("system/slo_tasks_per_min" in metrics["primary_levels"][level]
               for level in ("2", "4"))
    with (repo / "data" / "processed" / "primary_levels.csv").open(encoding="utf-8") as fh:
        assert {row["concurrency"] for row in csv.DictReader(fh)} == {"1", "2", "4"}
    summary = report[:report.index("## How the experiment stopped")]
    for level in (2, 4):
        assert f"- At {level} agents `baseline` (treatment) serves " in summary


@pytest.mark.slow
def test_two_agents_on_the_embedded_default(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = small_project(tmp_path / "repo")
    run_cmd(["dvc", "exp", "run", "-q", "-S", "run.concurrency=[1,2]"], repo)
    records = read_records(repo / "data" / "raw" / "calls.jsonl")
    measured = [r for r in records if r.phase == "measured"]
    assert all(r.error is None for r in records)
    assert {(r.concurrency, r.agent) for r in measured} == {(1, 1), (2, 1), (2, 2)}
    assert all(r.queue_ms_source == "engine_wait" for r in measured)
    assert set(_load_rows(repo)) == {(arm, level) for arm in ("control", "treatment")
                                     for level in (1, 2)}
    env = json.loads((repo / "data" / "raw" / "env.json").read_text(encoding="utf-8"))
    assert env["backend"]["concurrent_agents"].startswith("one llama.cpp context per agent")
    assert "## Under load" in (repo / "reports" / "report.md").read_text(encoding="utf-8")
