"""Trace lines as agents send them: OpenAI chat-completions and Ollama /api/chat bodies with
tools, tool calls, tool replies, formats and output caps under any name, replayed with what
the engine can honour and refused, naming the line and the field, where it cannot."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ollabench.cli import main
from ollabench.errors import WorkloadError
from ollabench.records.schema import read_records
from ollabench.workloads.trace import TraceWorkload
from tests.helpers.fake_ollama import FakeOllama
from tests.helpers.project import bench_command, tiny_config

READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a file of the results folder.",
    "parameters": {"type": "object", "properties": {"file": {"type": "string"}},
                   "required": ["file"]}}}
SYSTEM = {"role": "system", "content": "You answer questions about benchmark results.",
          "name": "ops"}
ASK = {"role": "user", "content": "What was the decode rate in runs.csv?"}
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "read_file", "arguments": "{\"file\": \"runs.csv\"}"}}]}
REPLY = {"role": "tool", "tool_call_id": "call_1", "content": "run,eval_tok_s\n1,61.2\n2,44.0"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}},
          "required": ["answer"]}
# What an agent logged: two OpenAI turns of one session (a tool call and its reply), then an
# Ollama request with a structured-output format.
RAW_TRACE = [
    {"model": "gpt-4o-mini", "messages": [SYSTEM, ASK], "tools": [READ_FILE],
     "tool_choice": "auto", "max_tokens": 16, "temperature": 0.2, "stream": True,
     "session": "a", "turn": 1, "stage": "plan"},
    {"model": "gpt-4o-mini", "messages": [SYSTEM, ASK, CALL, REPLY], "tools": [READ_FILE],
     "max_completion_tokens": 12, "stream": True, "stream_options": {"include_usage": True},
     "session": "a", "turn": 2, "stage": "answer"},
    {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "Summarise: 61 tok/s."}],
     "format": SCHEMA, "options": {"temperature": 0.1, "num_predict": 8, "num_ctx": 2048},
     "think": False, "keep_alive": "10m", "stream": True},
]


def _trace(tmp_path: Path, *lines: dict[str, Any]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_raw_bodies_are_read_with_their_tools_calls_replies_formats_and_caps(
        tmp_path: Path) -> None:
    trace = TraceWorkload(_trace(tmp_path, *RAW_TRACE), "recorded")

    assert [r.body.kind for r in trace.requests] == ["openai", "openai", "ollama"]
    assert [s.num_predict for s in trace.steps] == [16, 12, 8]
    assert trace.tools_of(0) == trace.tools_of(1) == [READ_FILE] and trace.tools_of(2) is None
    assert trace.format_of(2) == SCHEMA and trace.format_of(0) is None
    assert trace.messages(1, lambda i: "unused")[2:] == [
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "read_file", "arguments": {"file": "runs.csv"}}}]},
        {"role": "tool", "content": REPLY["content"], "tool_name": "read_file"}]
    assert trace.describe()["overridden_fields"] == [
        "keep_alive", "messages[].name", "model", "options.num_ctx", "options.temperature",
        "stream", "stream_options", "temperature", "think", "tool_choice"]


def test_a_json_object_format_and_text_parts_follow_ollamas_openai_layer(
        tmp_path: Path) -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "one"},
                                         {"type": "text", "text": "two"}]}
    trace = TraceWorkload(_trace(tmp_path, {"model": "m", "messages": [parts],
                                            "response_format": {"type": "json_object"}}),
                          "recorded")

    assert trace.format_of(0) == "json"
    assert [m["content"] for m in trace.messages(0, lambda i: "")] == ["one", "two"]


BAD_BODIES = [
    ({"messages": [ASK], "max_tokens": 5, "options": {}},
     r"mixes OpenAI key 'max_tokens' and Ollama key 'options'"),
    ({"model": "m", "messages": [ASK], "tool_choice": "required", "tools": [READ_FILE]},
     r"tool_choice 'required' cannot be replayed"),
    ({"model": "m", "messages": [ASK], "n": 2}, r"n must be 1"),
    ({"model": "m", "messages": [ASK], "max_tokens": 0},
     r"max_tokens must be a positive integer, got 0"),
    ({"model": "m", "messages": [ASK], "options": {"num_predict": -1}},
     r"options.num_predict must be a positive integer, got -1"),
    ({"model": "m", "messages": [ASK, {**CALL, "tool_calls": [
        {"function": {"name": "read_file", "arguments": "{not json"}}]}]},
     r"messages\[1\]: tool_calls\[0\]: arguments must be a JSON object"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:"}}]}]},
     r"messages\[0\]: content must be a string or a list of text parts"),
    ({"model": "m", "messages": [ASK], "response_format": {"type": "json_schema"}},
     r"response_format must be"),
    ({"model": "m", "messages": [ASK], "tools": [{"type": "function"}]},
     r"tools\[0\] must be"),
    ({"model": "m", "messages": [ASK], "prompt": "x"}, r"unknown key 'prompt'"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_BODIES,
                         ids=["mixed-apis", "tool-choice", "n", "cap", "ollama-cap",
                              "arguments", "image", "response-format", "tool", "unknown"])
def test_a_body_that_cannot_be_replayed_is_refused_by_line(tmp_path: Path, line: dict[str, Any],
                                                           problem: str) -> None:
    path = _trace(tmp_path, {"messages": [ASK]}, line)
    with pytest.raises(WorkloadError, match=re.escape(f"{path}:2: ") + problem):
        TraceWorkload(path, "recorded")


def test_replay_model_says_where_the_conversation_left_the_recording(tmp_path: Path) -> None:
    trace = TraceWorkload(_trace(tmp_path, *RAW_TRACE[:2]), "model")
    recorded_call = '{"tool": "read_file", "arguments": {"file": "runs.csv"}}'

    assert trace.steps[1].needs == (0,)
    sent = trace.messages(1, {0: "I will not call a tool."}.__getitem__)
    assert sent[2] == {"role": "assistant", "content": "I will not call a tool."}
    assert sent[3]["role"] == "tool"  # the tool reply as recorded
    assert trace.call_fields(0, recorded_call) == {"replay_diverged": False}
    assert trace.call_fields(0, '{"tool": "read_file", "arguments": {"file": "x.csv"}}') == {
        "replay_diverged": True}
    assert trace.call_fields(1, "anything") == {}  # no later turn recorded a reply to it
    assert TraceWorkload(trace.path, "recorded").call_fields(0, "other") == {}


def _ollama_trace_config(raw_config: dict[str, Any], path: Path, url: str,
                         model: str = "qwen2.5:7b") -> dict[str, Any]:
    raw = tiny_config(raw_config).model_dump(mode="json")
    raw["model"] = {**raw["model"], "name": model, "backend": "ollama", "gguf": None,
                    "host": url, "think": None, "keep_alive": None}
    raw["workload"] = {"name": "trace", "path": str(path), "replay": "recorded",
                       "num_predict": 4}
    return raw


def test_a_raw_trace_reaches_ollama_with_its_tools_tool_messages_and_format(
        tmp_path: Path, raw_config: dict[str, Any], fake_ollama: FakeOllama) -> None:
    path = _trace(tmp_path, *RAW_TRACE)
    cmd, _ = bench_command(_ollama_trace_config(raw_config, path, fake_ollama.url), tmp_path)

    assert main(cmd[3:]) == 0

    records = [r for r in read_records(tmp_path / "raw" / "calls.jsonl") if r.phase == "measured"]
    assert {r.stage for r in records} == {"plan", "answer", "request3"}
    assert all(r.error is None for r in records)
    bodies = [c.body for c in fake_ollama.chats()]
    plan = next(b for b in bodies if b["options"]["num_predict"] == 16)
    answer = next(b for b in bodies if b["options"]["num_predict"] == 12)
    summary = next(b for b in bodies if "format" in b)  # the warm-ups run line 1
    assert plan["tools"] == answer["tools"] == [READ_FILE] and "format" not in plan
    assert answer["messages"][2]["tool_calls"] == [
        {"function": {"name": "read_file", "arguments": {"file": "runs.csv"}}}]
    assert answer["messages"][3] == {"role": "tool", "content": REPLY["content"],
                                     "tool_name": "read_file"}
    assert summary["format"] == SCHEMA and "tools" not in summary
    arm_options = next(r.options for r in records if r.stage == "request3"
                       and r.arm == records[0].arm)
    assert summary["options"] == arm_options  # the arm's sampling and context, not the trace's
    assert summary["options"].get("temperature") != 0.1
    assert plan["think"] is False and summary["keep_alive"] == "5m"


def test_tools_on_a_model_without_them_are_refused_before_the_first_call(
        tmp_path: Path, raw_config: dict[str, Any], fake_ollama: FakeOllama,
        capsys: pytest.CaptureFixture) -> None:
    path = _trace(tmp_path, *RAW_TRACE)
    raw = _ollama_trace_config(raw_config, path, fake_ollama.url, model="gemma3:4b")
    cmd, _ = bench_command(raw, tmp_path)

    assert main(cmd[3:]) == 2

    assert capsys.readouterr().err.strip() == (
        f"ollabench: error: {path}:1: field 'tools' cannot be replayed on the ollama backend: "
        "model 'gemma3:4b' does not support tools (capabilities: completion, vision)")
    assert fake_ollama.chats() == []


def test_tools_and_a_format_together_are_refused_on_the_embedded_engine(
        tmp_path: Path, raw_config: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    both = copy.deepcopy(RAW_TRACE[2]) | {"tools": [READ_FILE]}
    path = _trace(tmp_path, RAW_TRACE[0], both)
    raw = tiny_config(raw_config).model_dump(mode="json")
    raw["workload"] = {"name": "trace", "path": str(path), "replay": "recorded",
                       "num_predict": 4}
    cmd, _ = bench_command(raw, tmp_path)

    assert main(cmd[3:]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ollabench: error: {path}:2: field 'format' cannot be replayed on "
                          "the llamacpp backend: the embedded engine holds the output")
    assert not (tmp_path / "raw").exists()


@pytest.mark.slow
def test_a_raw_trace_replays_on_the_embedded_default(tmp_path: Path,
                                                     raw_config: dict[str, Any]) -> None:
    path = _trace(tmp_path, *RAW_TRACE)
    raw = tiny_config(raw_config).model_dump(mode="json")
    raw["workload"] = {"name": "trace", "path": str(path), "replay": "model", "num_predict": 4}
    cmd, _ = bench_command(raw, tmp_path)

    assert main(cmd[3:]) == 0

    records = [r for r in read_records(tmp_path / "raw" / "calls.jsonl") if r.phase == "measured"]
    assert len(records) == 2 * 3 and all(r.error is None for r in records)
    assert [r.output_tokens for r in records if r.stage == "request3"] == [8, 8]
    plans = [r for r in records if r.stage == "plan"]
    assert all(r.replay_diverged is not None for r in plans)  # the model's call vs the recorded
    assert all(r.replay_diverged is None for r in records if r.stage != "plan")
    env = json.loads((tmp_path / "raw" / "env.json").read_text())
    assert env["workload"]["line_kinds"] == ["ollama", "openai"]
    assert "options.temperature" in env["workload"]["overridden_fields"]


def test_the_developer_role_is_replayed_as_system(tmp_path: Path) -> None:
    """OpenAI's newer name for the system message: every engine here renders it as system."""
    developer = {"role": "developer", "content": SYSTEM["content"]}
    trace = TraceWorkload(_trace(tmp_path, {"model": "m", "messages": [developer, ASK],
                                            "max_completion_tokens": 16}), "recorded")
    assert trace.messages(0, {}.__getitem__) == [
        {"role": "system", "content": SYSTEM["content"]}, ASK]


def test_an_unknown_role_names_the_allowed_ones(tmp_path: Path) -> None:
    path = _trace(tmp_path, {"model": "m", "messages": [{"role": "critic", "content": "x"}]})
    with pytest.raises(WorkloadError, match=re.escape(
            f"{path}:1: messages[0]: unknown role 'critic'; allowed: system, user, assistant, "
            "tool, developer")):
        TraceWorkload(path, "recorded")
