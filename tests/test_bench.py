"""The bench stage on the real embedded engine: records, provenance, resume after SIGKILL."""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pyarrow import parquet as pq

from ollabench.bench.journal import Journal
from ollabench.bench.loop import config_key
from ollabench.bench.schedule import plan
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE
from ollabench.records.schema import CallRecord, read_records
from ollabench.workloads.agent import AgentWorkload
from tests.helpers.project import (
    AGENT_STEPS,
    ROOT,
    bench_command,
    interrupt_bench,
    tiny_config,
)


@pytest.fixture(scope="module")
def quick_run(embedded_run: tuple[Path, Any]) -> tuple[Path, Any]:
    """The session's real-model bench (conftest.py), read only."""
    return embedded_run


def test_every_planned_call_is_recorded_once(quick_run) -> None:
    tmp, config = quick_run
    records = read_records(tmp / "raw" / "calls.jsonl")
    assert [r.seq for r in records] == [s.seq for s in plan(config.run, AGENT_STEPS)]
    assert all(r.error is None and r.attempt == 1 for r in records)
    measured = [r for r in records if r.phase == "measured"]
    assert Counter((r.arm, r.stage) for r in measured) == {
        ("control", "analysis"): 2, ("control", "report"): 2,
        ("treatment", "analysis"): 2, ("treatment", "report"): 2}
    for r in measured:
        assert r.output_tokens == config.workload.num_predict.model_dump()[r.stage] or \
            r.done_reason == "stop"
        assert r.eval_tok_s == pytest.approx(r.output_tokens / r.eval_ms * 1000)
        assert r.options["num_predict"] == config.workload.num_predict.model_dump()[r.stage]
        assert r.options["seed"] == config.run.seed
        assert r.profile == "baseline" and r.backend == "llamacpp"


def test_both_arms_get_identical_analysis_prompts(quick_run) -> None:
    tmp, _ = quick_run
    analysis = [r for r in read_records(tmp / "raw" / "calls.jsonl") if r.stage == "analysis"]
    assert len({r.prompt_tokens for r in analysis}) == 1


def test_the_columnar_copy_holds_every_record_but_the_text(quick_run) -> None:
    tmp, _ = quick_run
    records = read_records(tmp / "raw" / CALLS_FILE)
    copy = pq.read_table(tmp / "raw" / CALLS_TABLE_FILE)
    assert copy.num_rows == len(records)
    assert set(copy.column_names) == {f.name for f in fields(CallRecord)} - {"output", "options"}
    assert copy.column("ttft_ms").to_pylist() == [r.ttft_ms for r in records]
    assert copy.column("first_token_thinking").null_count == len(records)  # null stays null


def test_raw_lines_are_json_with_schema_version(quick_run) -> None:
    tmp, _ = quick_run
    line = json.loads((tmp / "raw" / "calls.jsonl").read_text().splitlines()[0])
    assert line["prompt_cached_tokens"] == 0 and line["itl_p50_ms"] > 0
    assert line["first_token_thinking"] is None  # unknown stays null, never 0 or false
    assert line["schema_version"] == 8 and line["started_at"].endswith("+00:00")
    assert (line["token_count_source"], line["timing_source"]) == ("engine", "engine")
    assert line["ttfb_ms"] is None  # in process: no bytes on a wire
    # llama.cpp: the cache is cleared before each call, and the counts are exact
    assert (line["cache_state"], line["cache_controlled"], line["nonce"]) == ("cold", True, None)
    assert line["prompt_eval_tokens"] == line["prompt_tokens"] and line["outcome"] == "ok"
    assert line["num_batch_basis"] == "engine" and line["context_shift"] is False


def test_env_json_records_provenance(quick_run, tiny_workload) -> None:
    tmp, config = quick_run
    env = json.loads((tmp / "raw" / "env.json").read_text())
    assert env["backend"]["model_sha256"] and env["backend"]["engine_version"]
    assert env["host"]["cpu_cores_logical"] >= 1 and env["host"]["cpu_model"]
    assert env["packages"]["llama-cpp-python"]
    assert env["config"] == config.model_dump(mode="json")
    assert env["workload"]["sha256"] == AgentWorkload(tiny_workload).source.sha256
    assert env["workload"]["stages"] == ["analysis", "report"]
    assert {s["when"] for s in env["engine_states"]} == {"before", "after"}
    assert "commit" in env["git"]


def test_journal_is_removed_after_a_complete_run(quick_run) -> None:
    tmp, _ = quick_run
    assert not any((tmp / "journal").rglob("calls.jsonl"))


def test_the_journal_keeps_each_call_s_attempts_and_last_success_indexed(tmp_path) -> None:
    """What a call asks the journal (earlier outputs, its attempt count) is kept as records
    are appended, and equals a pass over every record, after a resume too."""
    journal = Journal(tmp_path, "key")
    succeeded = journal.succeeded()
    records = [CallRecord(seq=1, attempt=1, error="timeout"),
               CallRecord(seq=1, attempt=2, output="second"),
               CallRecord(seq=2, attempt=1, output="two"),
               CallRecord(seq=2, attempt=2, error="dropped")]
    for record in records:
        journal.append(record)
    for each in (journal, Journal(tmp_path, "key")):  # the one appended to, and a resume
        assert dict(each.succeeded()) == {r.seq: r for r in each.records if r.error is None}
        assert each.succeeded()[1].output == "second" and each.succeeded()[2].output == "two"
        assert [each.attempts(seq) for seq in (1, 2, 3)] == [2, 2, 0]
    assert succeeded[1].output == "second"  # a live view: it shows later appends
    with pytest.raises(TypeError):
        succeeded[3] = records[0]  # type: ignore[index]


def test_config_key_changes_with_config(raw_config) -> None:
    workload = AgentWorkload(ROOT / "data" / "workload")
    one = tiny_config(raw_config, runs=2)
    two = tiny_config(raw_config, runs=3)
    assert config_key(one, workload) == config_key(tiny_config(raw_config, runs=2), workload)
    assert config_key(one, workload) != config_key(two, workload)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_keeps_every_call_once(tmp_path, raw_config) -> None:
    """The one resume check on the real engine (the fast set checks resume against the test
    Ollama server): a real model's process killed mid-write keeps every finished call."""
    raw_config["run"]["runs"] = 2
    raw_config["workload"]["num_predict"] = {"analysis": 8, "report": 8}
    cmd, journal = bench_command(raw_config, tmp_path)
    kept = interrupt_bench(cmd, tmp_path, journal, lines=4).kept
    assert 4 <= len(kept) < len(plan(tiny_config(raw_config, runs=2).run, AGENT_STEPS))
    assert not (tmp_path / "raw").exists()

    subprocess.run(cmd, cwd=tmp_path, check=True)
    records = read_records(tmp_path / "raw" / "calls.jsonl")
    planned = plan(tiny_config(raw_config, runs=2).run, AGENT_STEPS)
    measured = [r for r in records if r.phase == "measured"]
    assert len(measured) == len({(r.run, r.arm, r.stage) for r in measured}) == 8
    for before in kept:  # completed calls were kept, not repeated
        assert before in records
    assert {s.seq for s in planned} <= {r.seq for r in records}


def test_the_bench_records_quality_on_measured_calls(quick_run) -> None:
    tmp, _ = quick_run
    records = read_records(tmp / "raw" / "calls.jsonl")
    measured = [r for r in records if r.phase == "measured"]
    assert all(r.numbers_in_output is not None and r.output_chars == len(r.output)
               for r in measured)
    assert all((r.parts_expected == 3) == (r.stage == "report") for r in measured)
    warmups = [r for r in records if r.phase != "measured"]
    assert all(r.numbers_in_output is None for r in warmups)
    pairs: dict[tuple[int, str], list[float | None]] = defaultdict(list)
    for r in measured:  # the arm that answers second holds the similarity of the pair
        pairs[(r.run, r.stage)].append(r.output_similarity_pct)
    assert all(sorted(v, key=lambda x: x is None)[1] is None and v.count(None) == 1
               for v in pairs.values())


def test_every_call_records_what_the_host_was_doing(quick_run) -> None:
    tmp, _ = quick_run
    records = read_records(tmp / "raw" / CALLS_FILE)
    for r in records:
        assert 0 <= r.host_other_cpu_pct <= 100 and 0 <= r.host_steal_pct <= 100
        assert r.host_load_1m >= 0
        assert r.cpu_probe_ms > 0  # the probe ran before every call, warm-ups included
    start = json.loads((tmp / "raw" / "env.json").read_text())["host_at_start"]
    assert start["cpu_count"] >= 1 and 0 <= start["host_other_cpu_pct"] <= 100
