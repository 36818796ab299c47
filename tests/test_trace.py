"""The trace workload: a user's own requests replayed, every line checked before the first
call, and a session's turns fed the model's own replies when asked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ollabench.cli import main
from ollabench.errors import WorkloadError
from ollabench.workloads.trace import TraceWorkload
from tests.helpers.project import ROOT, bench_command, tiny_config

EXAMPLE = ROOT / "data" / "traces" / "example.jsonl"
USER = {"role": "user", "content": "How fast is it?"}


def _trace(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


def test_the_shipped_example_is_a_valid_trace() -> None:
    trace = TraceWorkload(EXAMPLE, "model")

    assert trace.stages == ("triage", "summarise", "plan", "follow_up")
    assert [s.needs for s in trace.steps] == [(), (), (), (2,), (2, 3)]
    assert trace.steps[1].num_predict == 64
    assert trace.describe()["requests"] == 5


def test_replay_model_sends_the_models_own_replies() -> None:
    trace = TraceWorkload(EXAMPLE, "model")
    replies = {2: "REPLY TO TURN 1", 3: "REPLY TO TURN 2"}

    sent = trace.messages(4, replies.__getitem__)

    assert [m["content"] for m in sent if m["role"] == "assistant"] == [
        "REPLY TO TURN 1", "REPLY TO TURN 2"]
    assert sent[-1] == trace.requests[4].messages[-1]  # the new user message as recorded


def test_replay_recorded_sends_the_trace_as_it_is() -> None:
    trace = TraceWorkload(EXAMPLE, "recorded")

    assert all(not s.needs for s in trace.steps)
    assert trace.messages(4, lambda index: "unused") == list(trace.requests[4].messages)


def test_unlabelled_requests_get_a_stage_each() -> None:
    steps = TraceWorkload(_trace(Path(pytest.importorskip("tempfile").mkdtemp()),
                                 {"messages": [USER]},
                                 {"messages": [USER], "session": "s", "turn": 1}),
                          "recorded").steps
    assert [s.stage for s in steps] == ["request1", "turn1"]


BAD_TRACES = [
    ("{not json", r":1: not valid JSON"),
    ("[1, 2]", r":1: a request must be a JSON object, got list"),
    ({"messages": [USER], "tool": []}, r":1: unknown key 'tool'; a line is a compact line "
     r"\(messages, num_predict, tools, format, stage, session, turn\), an OpenAI"),
    ({"messages": []}, r":1: messages must be a non-empty list"),
    ({"messages": [{"role": "robot", "content": "hi"}]},
     r":1: messages\[0\]: unknown role 'robot'; allowed: system, user, assistant, tool, developer"),
    ({"messages": [{"role": "user", "content": 5}]}, r":1: messages\[0\]: content must be a str"),
    ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
     r":1: messages\[0\]: unknown key 'images'"),
    ({"messages": [USER], "num_predict": 0}, r":1: num_predict must be a positive integer"),
    ({"messages": [USER], "session": "s"}, r":1: session and turn go together"),
    ({"messages": [USER], "session": "s", "turn": 2},
     r":1: session 's' turn 2 comes after 0 turn\(s\)"),
    ({"messages": [USER], "stage": ""}, r":1: stage must be a non-empty string"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_TRACES,
                         ids=["not-json", "not-object", "unknown-key", "empty-messages",
                              "unknown-role", "content-type", "message-key", "bad-cap",
                              "session-without-turn", "turn-order", "empty-stage"])
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: Any, problem: str) -> None:
    path = _trace(tmp_path, line)
    with pytest.raises(WorkloadError, match=re.escape(str(path)) + problem):
        TraceWorkload(path, "recorded")


def test_replay_model_needs_one_assistant_message_per_earlier_turn(tmp_path: Path) -> None:
    path = _trace(tmp_path, {"messages": [USER], "session": 1, "turn": 1},
                  {"messages": [USER, USER], "session": 1, "turn": 2})
    TraceWorkload(path, "recorded")  # as recorded, nothing is replaced
    with pytest.raises(WorkloadError, match=r"trace\.jsonl:2: turn 2 has 0 assistant message"):
        TraceWorkload(path, "model")


@pytest.mark.parametrize(("content", "problem"), [
    (b"", r"holds no request"),
    (b"\xff\n", r"is not UTF-8 text \(byte 0xff at offset 0\)"),
], ids=["empty", "not-utf8"])
def test_an_unreadable_trace_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_bytes(content)
    with pytest.raises(WorkloadError, match=problem):
        TraceWorkload(path, "recorded")


def _bench_exit(tmp_path: Path, raw: dict[str, Any], capsys: pytest.CaptureFixture
                ) -> tuple[int, str]:
    cmd, _ = bench_command(raw, tmp_path)
    code = main(cmd[3:])
    return code, capsys.readouterr().err


def _trace_config(raw_config: dict[str, Any], path: Path) -> dict[str, Any]:
    raw = tiny_config(raw_config).model_dump(mode="json")
    raw["workload"] = {"name": "trace", "path": str(path), "replay": "recorded",
                       "num_predict": 4}
    return raw


def test_a_request_longer_than_the_context_is_refused_before_the_first_call(
        tmp_path: Path, raw_config: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    long_text = "The decode rate fell from 61 to 44 tokens per second. " * 40
    path = _trace(tmp_path, {"messages": [USER]},
                  {"messages": [{"role": "user", "content": long_text}]})
    raw = _trace_config(raw_config, path)
    raw["profile"]["options"]["num_ctx"] = 256

    code, err = _bench_exit(tmp_path, raw, capsys)

    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(rf"{re.escape(str(path))}:2: the request is longer than the context: "
                     r"\d+ prompt tokens \+ 4 output tokens > num_ctx 256 \(treatment arm\)", err)
    assert not (tmp_path / "raw").exists()


def test_a_bad_trace_stops_the_bench_in_one_line(tmp_path: Path, raw_config: dict[str, Any],
                                                 capsys: pytest.CaptureFixture) -> None:
    path = _trace(tmp_path, {"messages": [USER]}, {"messages": [{"role": "bot", "content": ""}]})

    code, err = _bench_exit(tmp_path, _trace_config(raw_config, path), capsys)

    assert code == 2
    assert err.strip() == (f"ollabench: error: {path}:2: messages[0]: unknown role 'bot'; "
                           "allowed: system, user, assistant, tool, developer")
