"""Tools and output formats on the OpenAI-compatible backend, against the scripted server
(tests/helpers/fake_openai.py): what each server is sent, how streamed tool-call fragments
become the canonical output every backend records, and what a server cannot honour is
refused before the first call."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollabench.backends.openai import OpenAIBackend
from ollabench.backends.tool_wire import ToolCall, read_turn
from ollabench.bench.loop import run_bench
from ollabench.config.schema import BenchConfig, ModelConfig, compose, validate_config
from ollabench.errors import WorkloadError
from ollabench.records.schema import OK, USAGE
from ollabench.workloads.tools import TOOL_NAMES, tool_definitions
from tests.helpers.fake_openai import FakeOpenAI, Script
from tests.helpers.project import ROOT, default_run_config

OPTIONS = {"seed": 42, "num_predict": 64}
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]
TASK = [{"role": "system", "content": "You have tools."},
        {"role": "user", "content": "Which run was fastest?"}]
SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}},
          "required": ["verdict"]}

Factory = Callable[..., OpenAIBackend]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(kind="vllm") as fake:
        yield fake


@pytest.fixture
def make(server: FakeOpenAI) -> Iterator[Factory]:
    made: list[OpenAIBackend] = []

    def build() -> OpenAIBackend:
        backend = OpenAIBackend(
            ModelConfig(name=server.model, backend="openai", base_url=server.url),
            default_run_config(read_timeout_s=5.0, first_token_timeout_s=5.0,
                               connect_timeout_s=1.0))
        made.append(backend)
        backend.preflight()
        return backend

    yield build
    for backend in made:
        backend.close()


def test_streamed_call_fragments_join_into_the_canonical_output(server: FakeOpenAI,
                                                                make: Factory) -> None:
    server.script = Script(tool_calls=(("read_file", '{"path": "runs/a.csv"}'),
                                       ("read_file", '{"path": "runs/b.csv"}')), token_ms=5)
    m = make().chat(TASK, OPTIONS, tools=TOOLS)

    assert m.outcome == OK, m.error
    assert read_turn(m.output).calls == (ToolCall("read_file", {"path": "runs/a.csv"}),
                                         ToolCall("read_file", {"path": "runs/b.csv"}))
    assert m.done_reason == "tool_calls" and m.token_count_source == USAGE
    assert m.ttft_ms is not None and m.ttft_ms >= 4  # the first fragment is the first token
    body = server.chats()[0].body
    assert body["tools"] == TOOLS and "response_format" not in body


def test_arguments_that_are_not_json_are_kept_for_the_workload_to_flag(
        server: FakeOpenAI, make: Factory) -> None:
    server.script = Script(tool_calls=(("read_file", '{"path": "runs/a'),))
    m = make().chat(TASK, OPTIONS, tools=TOOLS)
    assert m.outcome == OK
    assert read_turn(m.output).problem == "arguments must be a JSON object"


def test_earlier_calls_and_replies_go_back_in_the_openai_shape(server: FakeOpenAI,
                                                              make: Factory) -> None:
    canonical = json.dumps([{"tool": "read_file", "arguments": {"path": "a.csv"}},
                            {"tool": "list_files", "arguments": {}}])
    replayed = {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "read_file", "arguments": {"path": "c.csv"}}}]}
    history = [*TASK, {"role": "assistant", "content": canonical},
               {"role": "tool", "content": "files: a.csv", "tool_name": "list_files"},
               {"role": "tool", "content": "run,ms"},
               replayed, {"role": "tool", "content": "c"},
               {"role": "assistant", "content": "{not json"},
               {"role": "tool", "content": "error: the tool call is not valid JSON"}]
    make().chat(history, OPTIONS, tools=TOOLS)

    sent = server.chats()[0].body["messages"]
    assert sent[:2] == TASK
    assert sent[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_2_0", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path": "a.csv"}'}},
        {"id": "call_2_1", "type": "function",
         "function": {"name": "list_files", "arguments": "{}"}}]}
    # each reply answers its own tool's call, else the first unanswered one
    assert sent[3] == {"role": "tool", "content": "files: a.csv", "tool_call_id": "call_2_1"}
    assert sent[4] == {"role": "tool", "content": "run,ms", "tool_call_id": "call_2_0"}
    assert sent[5]["tool_calls"][0]["function"] == {"name": "read_file",
                                                    "arguments": '{"path": "c.csv"}'}
    assert sent[6] == {"role": "tool", "content": "c", "tool_call_id": "call_5_0"}
    # an unreadable call is plain text, and its error reply answers no call
    assert sent[7] == {"role": "assistant", "content": "{not json"}
    assert sent[8] == {"role": "tool", "content": "error: the tool call is not valid JSON"}


def test_without_tools_a_json_answer_is_plain_text(server: FakeOpenAI, make: Factory) -> None:
    answer = {"role": "assistant", "content": '{"tool": "x", "arguments": {}}'}
    make().chat([*TASK, answer], OPTIONS)
    body = server.chats()[0].body
    assert body["messages"][2] == answer and "tools" not in body


@pytest.mark.parametrize(("kind", "output_format", "expected"), [
    ("vllm", SCHEMA, {"type": "json_schema", "json_schema": {"name": "output",
                                                             "schema": SCHEMA}}),
    ("llama-server", SCHEMA, {"type": "json_schema", "json_schema": {"name": "output",
                                                                     "schema": SCHEMA}}),
    ("ollama", "json", {"type": "json_object"}),
    ("llama-cpp-python", "json", {"type": "json_object"}),
    # llama_chat_format.py _grammar_for_response_format: json_object's own `schema` key
    ("llama-cpp-python", SCHEMA, {"type": "json_object", "schema": SCHEMA}),
])
def test_each_server_gets_its_response_format(server: FakeOpenAI, make: Factory, kind: str,
                                              output_format: object,
                                              expected: dict[str, object]) -> None:
    server.kind = kind
    backend = make()
    assert backend.refusal(None, output_format) is None
    assert backend.chat(TASK, OPTIONS, output_format=output_format).outcome == OK
    assert server.chats()[0].body["response_format"] == expected


@pytest.mark.parametrize("kind", ["vllm", "llama-server", "ollama", "other"])
def test_servers_that_return_calls_take_tools(server: FakeOpenAI, make: Factory,
                                              kind: str) -> None:
    server.kind = kind
    assert make().refusal(TOOLS, None) is None


def test_llama_cpp_python_refuses_tools_before_the_first_call(server: FakeOpenAI,
                                                              make: Factory) -> None:
    server.kind = "llama-cpp-python"
    field_name, why = make().refusal(TOOLS, "json")
    assert field_name == "tools"
    assert why.startswith("a llama-cpp-python server cannot: llama-cpp-python's server "
                          "passes tools to the chat template only")
    assert server.chats() == []


# --------------------------------------------------------------------------- the tool agent


def tool_agent_config(url: str, folder: Path) -> BenchConfig:
    raw = copy.deepcopy(compose(["workload=tool_agent", "run.stopping.mode=fixed"],
                                conf_dir=ROOT / "conf"))
    raw["model"] = {"name": "smol", "backend": "openai", "base_url": url}
    raw["run"].update(runs=1, warmup=0, retry_backoff_s=0.01, read_timeout_s=2.0,
                      max_retries=0)
    raw["workload"].update(dir=str(folder), num_predict=8, max_turns=3)
    return validate_config(raw)


def test_the_tool_agent_runs_its_turns_on_an_openai_server(server: FakeOpenAI,
                                                           tiny_workload: Path,
                                                           tmp_path: Path) -> None:
    per_arm = (Script(tool_calls=(("list_files", "{}"),)), Script())  # a call, then text
    server.queue(*per_arm, *per_arm)
    records = run_bench(tool_agent_config(server.url, tiny_workload), tmp_path / "raw",
                        journal_root=tmp_path / "j", progress=False)

    control = [r for r in records if r.arm == "control" and r.phase == "measured"]
    assert [(r.task_turn, r.tool_calls, r.invalid_tool_calls, r.task_ended_by)
            for r in control] == [(1, 1, 0, None), (2, 0, 0, "final_answer")]
    chats = server.chats()
    assert all(c.body["tools"] == tool_definitions(TOOL_NAMES) for c in chats)
    history = chats[1].body["messages"]
    assert history[2]["tool_calls"][0]["function"] == {"name": "list_files",
                                                       "arguments": "{}"}
    assert history[3] == {"role": "tool", "content": "check.json\nnotes.md\nruns.csv",
                          "tool_call_id": history[2]["tool_calls"][0]["id"]}


def test_the_tool_agent_is_refused_on_llama_cpp_python_before_the_first_call(
        tiny_workload: Path, tmp_path: Path) -> None:
    with FakeOpenAI(kind="llama-cpp-python") as fake, pytest.raises(
            WorkloadError, match=r"tool_agent step 1 \(turn1\): field 'tools' cannot be "
                                 r"replayed on the openai backend: a llama-cpp-python server"):
        run_bench(tool_agent_config(fake.url, tiny_workload), tmp_path / "raw",
                  journal_root=tmp_path / "j", progress=False)
    assert fake.chats() == []
