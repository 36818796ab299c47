"""The tool agent: its tools, how a turn's output is read, the conversation it rebuilds,
its config checks, and whole benches against the fake Ollama server (tools on the wire,
tool_calls streamed back) with the task fields, unreached turns and task summary."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ollabench.backends.llamacpp import LlamaCppBackend
from ollabench.backends.tool_wire import ToolCall, calls_from_ollama, ollama_messages, read_turn
from ollabench.bench.loop import run_bench
from ollabench.config.schema import BenchConfig, compose, validate_config
from ollabench.errors import ConfigError
from ollabench.records.schema import NOT_REACHED, UNREACHED_PHASE
from ollabench.stats.aggregate import run_aggregate
from ollabench.workloads import load_workload
from ollabench.workloads.base import TaskEnded
from ollabench.workloads.tool_agent import ToolAgentWorkload
from ollabench.workloads.tools import (
    READ_LIMIT_CHARS,
    TOOL_NAMES,
    ToolError,
    run_tool,
    tool_definitions,
)
from tests.helpers.fake_ollama import FakeOllama, Script
from tests.helpers.project import ROOT

LIST = {"function": {"name": "list_files", "arguments": {}}}
READ_MISSING = {"function": {"name": "read_file", "arguments": {"file": "nope.csv"}}}


@pytest.fixture(scope="module")
def tool_raw() -> dict[str, Any]:
    return compose(["workload=tool_agent", "run.stopping.mode=fixed"], conf_dir=ROOT / "conf")


def agent(folder: Path, max_turns: int = 4) -> ToolAgentWorkload:
    return ToolAgentWorkload(folder, "Which GPU is fastest?", max_turns, TOOL_NAMES)


# --------------------------------------------------------------------------- tools


def test_the_tools_read_the_folder(tiny_workload: Path) -> None:
    assert run_tool(tiny_workload, ToolCall("list_files", {}), TOOL_NAMES) == \
        "check.json\nnotes.md\nruns.csv"
    assert run_tool(tiny_workload, ToolCall("read_file", {"file": "notes.md"}),
                    TOOL_NAMES).startswith("# Notes")
    assert run_tool(tiny_workload, ToolCall("csv_column_summary",
                                            {"file": "runs.csv", "column": "ttft_ms"}),
                    TOOL_NAMES) == "ttft_ms: count 3, min 180, median 190, max 402"


def test_read_file_is_capped(tmp_path: Path) -> None:
    (tmp_path / "big.md").write_text("x" * (READ_LIMIT_CHARS * 2))
    reply = run_tool(tmp_path, ToolCall("read_file", {"file": "big.md"}), TOOL_NAMES)
    assert len(reply) == READ_LIMIT_CHARS


@pytest.mark.parametrize(("call", "allowed", "message"), [
    (ToolCall("rm", {}), TOOL_NAMES, "unknown tool 'rm'"),
    (ToolCall("read_file", {}), TOOL_NAMES, "read_file takes file"),
    (ToolCall("read_file", {"file": 3}), TOOL_NAMES, "read_file takes file"),
    (ToolCall("list_files", {"dir": "/"}), TOOL_NAMES, "list_files takes no arguments"),
    (ToolCall("read_file", {"file": "../runs.csv"}), TOOL_NAMES, "no file '../runs.csv'"),
    (ToolCall("csv_column_summary", {"file": "runs.csv", "column": "vram"}), TOOL_NAMES,
     "runs.csv has no column 'vram'; columns: gpu, ttft_ms, eval_tok_s"),
    (ToolCall("csv_column_summary", {"file": "runs.csv", "column": "gpu"}), TOOL_NAMES,
     "holds no numbers"),
    (ToolCall("csv_column_summary", {"file": "notes.md", "column": "x"}), TOOL_NAMES,
     "not a CSV file"),
    (ToolCall("read_file", {"file": "notes.md"}), ("list_files",), "unknown tool"),
])
def test_a_call_the_tools_cannot_run_says_why(tiny_workload: Path, call: ToolCall,
                                              allowed: tuple[str, ...], message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(")):
        run_tool(tiny_workload, call, allowed)


# --------------------------------------------------------------------------- reading a turn


@pytest.mark.parametrize(("output", "answer", "calls", "problem"), [
    ('{"final_answer": "GPU A"}', "GPU A", (), None),
    ("GPU A is fastest.", "GPU A is fastest.", (), None),
    ('{"tool": "list_files", "arguments": {}}', None, (ToolCall("list_files", {}),), None),
    ('[{"tool": "list_files"}, {"tool": "read_file", "arguments": {"file": "a"}}]', None,
     (ToolCall("list_files", {}), ToolCall("read_file", {"file": "a"})), None),
    ('{"tool": "read_file", "arguments": {"file": "a', None, (), "not valid JSON"),
    ('{"tool": "read_file", "arguments": "a.csv"}', None, (), "arguments must be"),
    ('{"name": "read_file"}', None, (), "a tool call needs"),
    ('{"final_answer": 3}', None, (), "must be a string"),
    ("[]", None, (), "empty list"),
])
def test_a_turn_is_an_answer_calls_or_a_problem(output: str, answer: str | None,
                                               calls: tuple[ToolCall, ...],
                                               problem: str | None) -> None:
    turn = read_turn(output)
    assert (turn.answer, turn.calls) == (answer, calls)
    assert (turn.problem is None) == (problem is None)
    if problem is not None:
        assert problem in turn.problem


def test_ollamas_tool_calls_become_the_canonical_output_and_go_back_as_tool_calls() -> None:
    one, both = calls_from_ollama([LIST]), calls_from_ollama([LIST, READ_MISSING])
    assert read_turn(one).calls == (ToolCall("list_files", {}),)
    assert read_turn(both).calls == (ToolCall("list_files", {}),
                                     ToolCall("read_file", {"file": "nope.csv"}))
    sent = ollama_messages([{"role": "user", "content": "{not a call"},
                            {"role": "assistant", "content": both},
                            {"role": "assistant", "content": "GPU A."}])
    assert sent == [{"role": "user", "content": "{not a call"},
                    {"role": "assistant", "content": "", "tool_calls": [LIST, READ_MISSING]},
                    {"role": "assistant", "content": "GPU A."}]


# --------------------------------------------------------------------------- the conversation


def test_each_turn_carries_the_earlier_calls_and_the_tools_replies(tiny_workload: Path) -> None:
    outputs = ['{"tool": "list_files", "arguments": {}}', '{"tool": "read_file", "argu',
               '{"tool": "csv_column_summary", "arguments": {"file": "runs.csv"}}']
    workload = agent(tiny_workload)

    messages = workload.messages(3, outputs.__getitem__)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool",
                                             "assistant", "tool", "assistant", "tool"]
    assert messages[3]["content"] == "check.json\nnotes.md\nruns.csv"
    assert messages[5]["content"].startswith("error: the tool call is not valid JSON")
    assert messages[7]["content"].startswith("error: csv_column_summary takes file, column")
    assert [s.stage for s in workload.steps] == ["turn1", "turn2", "turn3", "turn4"]
    assert workload.steps[3].needs == (0, 1, 2)


def test_no_turn_follows_a_final_answer(tiny_workload: Path) -> None:
    outputs = ['{"tool": "list_files", "arguments": {}}', '{"final_answer": "A"}']
    with pytest.raises(TaskEnded, match="turn 2"):
        agent(tiny_workload).messages(2, outputs.__getitem__)


def test_the_task_fields_count_calls_and_say_how_the_task_ended(tiny_workload: Path) -> None:
    workload = agent(tiny_workload, max_turns=2)
    listed = workload.call_fields(0, '{"tool": "list_files", "arguments": {}}')
    assert {k: v for k, v in listed.items() if k != "tool_ms"} == {
        "task_turn": 1, "tool_calls": 1, "invalid_tool_calls": 0, "task_ended_by": None}
    assert listed["tool_ms"] >= 0
    wrong = workload.call_fields(1, '[{"tool": "list_files"}, {"tool": "rm"}]')
    assert (wrong["tool_calls"], wrong["invalid_tool_calls"], wrong["task_ended_by"]) == \
        (2, 1, "turn_limit")
    unreadable = workload.call_fields(0, '{"tool": ')
    assert (unreadable["tool_calls"], unreadable["invalid_tool_calls"],
            unreadable["tool_ms"]) == (1, 1, None)
    answered = workload.call_fields(0, "GPU A.")
    assert (answered["tool_calls"], answered["task_ended_by"]) == (0, "final_answer")


# --------------------------------------------------------------------------- config


def test_the_composed_tool_agent_config_loads(tool_raw: dict[str, Any]) -> None:
    workload = load_workload(validate_config(copy.deepcopy(tool_raw)))
    assert workload.name == "tool_agent"
    assert [t["function"]["name"] for t in workload.tools] == list(TOOL_NAMES)
    assert workload.describe()["stages"] == ["turn1", "turn2", "turn3", "turn4"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("tools", ["list_files", "grep"], "workload.tools.1: must be one of 'list_files', "
                                      "'read_file' or 'csv_column_summary', got 'grep'"),
    ("tools", ["list_files", "list_files"], "workload.tools: each tool once"),
    ("tools", [], "workload.tools"),
    ("max_turns", 0, "workload.max_turns"),
    ("max_turns", 17, "workload.max_turns"),
    ("task", "", "workload.task"),
    ("turns", 3, "workload.turns: unknown key; allowed keys: name, dir, task, max_turns, "
                 "tools, num_predict"),
])
def test_a_bad_tool_agent_setting_names_the_key(tool_raw: dict[str, Any], key: str,
                                                value: Any, message: str) -> None:
    raw = copy.deepcopy(tool_raw)
    raw["workload"][key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(raw)


# --------------------------------------------------------------------------- on Ollama


def ollama_tool_config(tool_raw: dict[str, Any], url: str, folder: Path, max_turns: int = 4,
                       warmup: int = 0) -> BenchConfig:
    raw = copy.deepcopy(tool_raw)
    raw["model"] = {"name": "qwen2.5:7b", "backend": "ollama", "gguf": None, "host": url,
                    "think": None, "keep_alive": None}
    raw["run"].update(runs=1, warmup=warmup, retry_backoff_s=0.01, read_timeout_s=2.0,
                      max_retries=0)
    raw["workload"].update(dir=str(folder), num_predict=8, max_turns=max_turns)
    return validate_config(raw)


def test_ollama_gets_the_tools_and_its_tool_calls_drive_the_turns(
        fake_ollama: FakeOllama, tool_raw: dict[str, Any], tiny_workload: Path,
        tmp_path: Path) -> None:
    per_arm = (Script(tool_calls=[LIST], ttft_ms=20), Script(tool_calls=[READ_MISSING]),
               Script(text="GPU A is fastest."))
    fake_ollama.queue(*per_arm, *per_arm)
    config = ollama_tool_config(tool_raw, fake_ollama.url, tiny_workload)

    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)

    control = [r for r in records if r.arm == "control"]
    assert [(r.stage, r.phase) for r in control] == [
        ("turn1", "measured"), ("turn2", "measured"), ("turn3", "measured"),
        ("turn4", UNREACHED_PHASE)]
    first, second, third, fourth = control
    assert json.loads(first.output) == {"tool": "list_files", "arguments": {}}
    assert first.ttft_ms >= 20  # the tool call is the reply's first output
    assert [(r.task_turn, r.tool_calls, r.invalid_tool_calls, r.task_ended_by)
            for r in (first, second, third)] == [(1, 1, 0, None), (2, 1, 1, None),
                                                 (3, 0, 0, "final_answer")]
    assert (fourth.outcome, fourth.error, fourth.task_turn) == (NOT_REACHED, None, None)
    chats = fake_ollama.chats()
    assert len(chats) == 6
    assert all(c.body["tools"] == tool_definitions(TOOL_NAMES) for c in chats)
    history = chats[2].body["messages"]
    assert history[2] == {"role": "assistant", "content": "", "tool_calls": [LIST]}
    assert history[3] == {"role": "tool", "content": "check.json\nnotes.md\nruns.csv"}
    assert history[5]["content"].startswith("error: no file 'nope.csv'")


def test_a_task_ended_early_adds_only_its_turns_to_the_workflow(
        fake_ollama: FakeOllama, tool_raw: dict[str, Any], tiny_workload: Path,
        tmp_path: Path) -> None:
    """Control answers at turn 2, treatment never does (turn limit 3): both tasks are whole,
    and aggregate, quality.json and the report take the unreached turn in their stride."""
    fake_ollama.queue(Script(), Script(tool_calls=[LIST]), Script(text="A."),  # warm-up first
                      Script(), *[Script(tool_calls=[READ_MISSING])] * 3)
    config = ollama_tool_config(tool_raw, fake_ollama.url, tiny_workload, max_turns=3,
                                warmup=1)
    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    processed = tmp_path / "processed"

    run_aggregate(tmp_path / "raw", processed, tmp_path / "metrics.json", 5.0)

    per_run = pd.read_csv(processed / "per_run.csv").set_index(["arm", "stage"])
    e2e = {(r.arm, r.stage): r.e2e_ms for r in records if r.phase == "measured"}
    assert per_run.loc[("control", "workflow"), "e2e_ms"] == pytest.approx(
        e2e[("control", "turn1")] + e2e[("control", "turn2")])
    assert ("control", "turn3") not in per_run.index  # unreached: no value, not 0
    assert per_run.loc[("treatment", "workflow"), "e2e_ms"] == pytest.approx(
        sum(e2e[("treatment", f"turn{k}")] for k in (1, 2, 3)))
    tasks = json.loads((processed / "quality.json").read_text())["tasks"]
    assert (tasks["control"]["ended_by"], tasks["treatment"]["ended_by"]) == (
        {"final_answer": 1}, {"turn_limit": 1})
    assert (tasks["treatment"]["tool_calls"], tasks["treatment"]["invalid_tool_calls"],
            tasks["treatment"]["invalid_pct"]) == (3, 3, 100.0)
    assert tasks["control"]["runs"][0]["turns"] == 2
    assert tasks["control"]["task_s_median"] >= sum(
        e2e[("control", s)] for s in ("turn1", "turn2")) / 1e3


# --------------------------------------------------------------------------- embedded


def test_the_embedded_grammar_makes_the_small_model_write_a_readable_turn(
        tool_raw: dict[str, Any], tiny_workload: Path) -> None:
    config = validate_config(copy.deepcopy(tool_raw))
    engine = LlamaCppBackend(config.model, config.run)
    workload = agent(tiny_workload)
    options = {"num_predict": 64, "num_ctx": 1024, "temperature": 0.0, "seed": 1}
    try:
        free = engine.chat(workload.messages(0, str), options)
        constrained = engine.chat(workload.messages(0, str), options, tools=workload.tools)
    finally:
        engine.close()

    assert not free.output.lstrip().startswith("{")  # unconstrained, it writes prose
    assert constrained.outcome == "ok" and constrained.done_reason == "stop"
    turn = read_turn(constrained.output)
    assert turn.problem is None and (turn.answer is not None or turn.calls)
    assert all(call.name in TOOL_NAMES for call in turn.calls)
    assert constrained.ttft_ms > 0 and constrained.output_tokens > 0
