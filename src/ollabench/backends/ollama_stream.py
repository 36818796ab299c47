"""One streamed /api/chat request over httpx, timed on the client's monotonic clock.

Ollama sends nothing, headers included, until its first chunk, and never an empty opening
chunk (server/routes.go:streamResponse, llm/server.go:llmServer.Completion). So the wait for
the response headers is the wait for the first token, which may include a model load and the
whole prompt: it gets `first_token_timeout_s` (http_stream.run_stream). Its NDJSON lines are
parsed here; every ending is classified in `outcome`.
"""

from __future__ import annotations

from typing import Any

import httpx

from ollabench.backends.http_stream import (
    Failure,
    StreamState,
    Timeouts,
    json_object,
    one_line,
    run_stream,
)
from ollabench.backends.tool_wire import calls_from_ollama
from ollabench.records.schema import NO_FINAL_CHUNK, STREAM_ERROR, CallMeasurement


class _Stream(StreamState):
    """What the NDJSON chunks of one /api/chat stream carried."""

    def __init__(self) -> None:
        super().__init__()
        self.first_token_thinking: bool | None = None
        self.content: list[str] = []
        self.tool_calls: list[Any] = []  # message.tool_calls of every chunk, in order
        self.final: dict[str, Any] | None = None

    def add(self, line: str, now_ns: int) -> bool:
        chunk = json_object(line, self.chunks, "stream line")
        if "error" in chunk:
            raise Failure(STREAM_ERROR, f"server error mid-stream after {self.chunks} "
                                        f"chunks: {one_line(chunk['error'])}")
        self.chunks += 1
        message = chunk.get("message") or {}
        thinking, content = message.get("thinking") or "", message.get("content") or ""
        calls = message.get("tool_calls") or []
        self.tool_calls += calls if isinstance(calls, list) else [calls]
        if thinking or content or calls:  # a tool call is the reply's first output too
            if not self.token_ns:
                self.first_token_thinking = bool(thinking)
            self.token_ns.append(now_ns)
            self.content.append(content)
        if chunk.get("done"):
            self.final, self.end_ns = chunk, now_ns
        return True

    def finish(self) -> None:
        if self.final is None:
            raise Failure(NO_FINAL_CHUNK, f"stream ended without a final chunk after "
                                          f"{self.chunks} chunks")

    def output(self) -> str:
        return calls_from_ollama(self.tool_calls) if self.tool_calls else "".join(self.content)

    def measurement(self, failure: Failure | None) -> CallMeasurement:
        measurement = super().measurement(failure)
        measurement.first_token_thinking = self.first_token_thinking
        return measurement


def stream_chat(client: httpx.Client, body: dict[str, Any],
                timeouts: Timeouts) -> tuple[CallMeasurement, dict[str, Any] | None]:
    """Stream one chat request: the measurement (never raises for a failed call) and the
    final chunk as sent, or None when the call did not end with one."""
    stream = _Stream()
    measurement = run_stream(client, "/api/chat", body, timeouts, stream, "the Ollama server",
                             server_message)
    return measurement, stream.final if measurement.error is None else None


def server_message(response: httpx.Response) -> str:
    """The server's {"error": ...} text, else the body's first line."""
    response.read()
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return one_line(error if isinstance(error, str) else response.text)
