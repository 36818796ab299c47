"""`ollabench record`: a proxy that passes an agent's requests and streamed answers through
unchanged and writes each chat request as a trace line the trace workload replays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ollabench.cli import main
from ollabench.record import parse_upstream
from ollabench.record.proxy import RequestReader
from ollabench.record.trace_file import MASK, RecordError, TraceFile, compile_patterns
from ollabench.workloads.trace import TraceWorkload
from tests.helpers.fake_ollama import FakeOllama, Script
from tests.helpers.project import ROOT, make_project, run_cmd

SECRET = "sk-test-0123456789abcdef"
SYSTEM = {"role": "system", "content": "You are the on-call assistant. Token: hunter2."}
TOOLS = [{"type": "function", "function": {"name": "read_log", "description": "Read a log.",
                                           "parameters": {"type": "object", "properties": {}}}}]


def _chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "qwen2.5:7b", "messages": [SYSTEM, *messages], "stream": True, **extra}


ASK = {"role": "user", "content": "Why did p95 latency double?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "read_log", "arguments": {}}}]}
LOG = {"role": "tool", "content": "GC pause 800 ms", "tool_name": "read_log"}


@contextmanager
def recording(upstream: str, out: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`ollabench record` in its own process on a free port; yields its URL."""
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ollabench.cli", "record", "--upstream", upstream, "--port", "0",
         "--out", str(out), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + process.stderr.read()
        yield line.split("listening on ")[1].split(",")[0], process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C, as a user stops it."""
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=10)
    return process.returncode, out


def test_requests_pass_through_unchanged_and_land_in_the_trace(
        tmp_path: Path, fake_ollama: FakeOllama) -> None:
    out = tmp_path / "recorded.jsonl"
    turn1 = _chat(ASK, tools=TOOLS, options={"num_predict": 5})
    turn2 = _chat(ASK, CALL, LOG, tools=TOOLS, options={"num_predict": 5})
    other = _chat({"role": "user", "content": "Summarise the incident."})
    openai = {"model": "qwen2.5:7b", "messages": [ASK], "max_tokens": 7, "stream": True}
    with recording(fake_ollama.url, out, "--redact", r"hunter\d") as (url, process):
        with httpx.Client(base_url=url) as client:
            for body in (turn1, turn2, other):
                with client.stream("POST", "/api/chat", json=body) as answer:
                    lines = [json.loads(line) for line in answer.iter_lines() if line]
                assert answer.status_code == 200 and lines[-1]["done"] is True
            missing = client.post("/v1/chat/completions", json=openai,
                                  headers={"Authorization": f"Bearer {SECRET}"})
            direct = httpx.post(f"{fake_ollama.url}/v1/chat/completions", json=openai)
        code, said = _stop(process)

    assert (missing.status_code, missing.content) == (direct.status_code, direct.content)
    assert [c.body for c in fake_ollama.chats()] == [turn1, turn2, other]  # as sent
    assert code == 0 and "wrote 4 request(s)" in said
    text = out.read_text(encoding="utf-8")
    assert SECRET not in text and "hunter2" not in text and f"Token: {MASK}." in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(r["stage"], r["session"], r["turn"]) for r in lines] == [
        ("kind1", "s1", 1), ("kind1", "s1", 2), ("kind2", "s2", 1), ("kind3", "s3", 1)]
    assert lines[3]["max_tokens"] == 7 and lines[1]["messages"][2] == CALL
    trace = TraceWorkload(out, "model")  # the recording replays as it is
    assert trace.steps[1].needs == (0,) and trace.tools_of(1) == TOOLS


def test_a_client_gone_mid_stream_and_an_unreachable_server_lose_no_line(
        tmp_path: Path, fake_ollama: FakeOllama) -> None:
    out = tmp_path / "recorded.jsonl"
    fake_ollama.queue(Script(tokens=200, token_ms=20))
    with recording(fake_ollama.url, out) as (url, process):
        with httpx.Client(base_url=url) as client, \
                client.stream("POST", "/api/chat", json=_chat(ASK)) as answer:
            next(answer.iter_lines())  # the first token, then the agent goes away
        with httpx.Client(base_url=url) as client:
            assert client.post("/api/chat", json=_chat(ASK, stream=False)).status_code == 200
        code, _ = _stop(process)
    assert code == 0 and len(out.read_text().splitlines()) == 2

    streaming = tmp_path / "streaming.jsonl"
    fake_ollama.queue(Script(tokens=200, token_ms=20))
    with recording(fake_ollama.url, streaming) as (url, process), httpx.Client(
            base_url=url) as client, client.stream("POST", "/api/chat", json=_chat(ASK)) as answer:
        next(answer.iter_lines())
        process.send_signal(signal.SIGINT)  # Ctrl-C while a reply is streaming
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    assert len(streaming.read_text().splitlines()) == 1

    closed = tmp_path / "closed.jsonl"
    with recording("http://127.0.0.1:9", closed) as (url, process):
        answer = httpx.post(f"{url}/api/chat", json=_chat(ASK))
        code, _ = _stop(process)
    assert answer.status_code == 502
    assert "cannot reach the upstream server 127.0.0.1:9" in answer.json()["error"]
    assert code == 0


def test_sessions_follow_the_conversation_prefix_and_kinds_the_system_prompt_and_tools(
        tmp_path: Path) -> None:
    trace = TraceFile(tmp_path / "t.jsonl").open()
    for body in (_chat(ASK), _chat(ASK), _chat(ASK, CALL, LOG), _chat(ASK, tools=TOOLS),
                 _chat(ASK, CALL, LOG, {"role": "user", "content": "and then?"})):
        trace.add(body)
    trace.close()

    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(r["session"], r["turn"], r["stage"]) for r in lines] == [
        ("s1", 1, "kind1"), ("s2", 1, "kind1"), ("s2", 2, "kind1"), ("s3", 1, "kind2"),
        ("s2", 3, "kind1")]
    assert list(lines[0])[:3] == ["stage", "session", "turn"]  # first: easy to rename


def test_the_request_reader_finds_chat_bodies_in_any_framing() -> None:
    found: list[dict[str, Any]] = []
    reader = RequestReader(found.append)
    body = json.dumps(_chat(ASK)).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    stream = (b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /api/chat HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
              + b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked + b"0\r\n\r\n"
              + b"POST /api/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    for start in range(0, len(stream), 7):  # bytes arrive in small pieces
        reader.feed(stream[start:start + 7])

    assert found == [_chat(ASK), _chat(ASK)]


@pytest.mark.parametrize(("args", "problem"), [
    (["--upstream", "https://127.0.0.1:11434"], "--upstream: give the server as http://HOST"),
    (["--upstream", "http://u:pw@127.0.0.1:1"], "--upstream: give the server as http://HOST"),
    (["--upstream", "http://127.0.0.1:1/v1"], "--upstream: give the server as http://HOST"),
    (["--upstream", "http://127.0.0.1:1", "--redact", "("], "--redact '(': not a regular"),
], ids=["https", "password", "path", "bad-pattern"])
def test_bad_options_stop_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      args: list[str], problem: str) -> None:
    code = main(["record", "--port", "0", "--out", str(tmp_path / "t.jsonl"), *args])

    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"ollabench: error: {problem}")
    assert "pw" not in err and len(err.strip().splitlines()) == 1


def test_a_port_in_use_stops_in_one_line(tmp_path: Path, fake_ollama: FakeOllama,
                                         capsys: pytest.CaptureFixture) -> None:
    port = fake_ollama.url.rsplit(":", 1)[1]
    code = main(["record", "--upstream", fake_ollama.url, "--port", port,
                 "--out", str(tmp_path / "t.jsonl")])

    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"ollabench: error: --port {port}: cannot listen on 127.0.0.1:{port} (")
    assert not (tmp_path / "t.jsonl").exists()  # the same command can run again


def test_an_existing_trace_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "t.jsonl"
    existing.write_text("{}\n")
    with pytest.raises(RecordError, match="exists; give a new file"):
        TraceFile(existing, compile_patterns([])).open()
    assert existing.read_text() == "{}\n"
    assert parse_upstream("127.0.0.1:11434").port == 11434


@pytest.mark.slow
def test_a_recording_replays_with_dvc_exp_run(tmp_path: Path, fake_ollama: FakeOllama,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Record through the proxy, then `dvc exp run -S workload=trace -S workload.path=...`."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")
    out = repo / "data" / "traces" / "recorded.jsonl"
    with recording(fake_ollama.url, out) as (url, process), httpx.Client(base_url=url) as c:
        for body in (_chat(ASK, tools=TOOLS), _chat(ASK, CALL, LOG, tools=TOOLS)):
            assert c.post("/api/chat", json=body | {"stream": False}).status_code == 200
        _stop(process)
    before = len(fake_ollama.chats())

    run_cmd(["dvc", "exp", "run", "-q", "-S", "workload=trace", "-S",
             "workload.path=data/traces/recorded.jsonl", "-S", "model=qwen2.5-7b", "-S",
             f"model.host='{fake_ollama.url}'", "-S", "run=quick"], repo)

    replayed = [c.body for c in fake_ollama.chats()[before:]]
    assert any(b["messages"][-1] == LOG and b["tools"] == TOOLS for b in replayed)
    report = (repo / "reports" / "report.md").read_text()
    assert "kind1" in report
    assert "The trace's own `model`, `stream` were not replayed" in report
