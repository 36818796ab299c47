"""One streamed /api/chat request over httpx, timed on the client's monotonic clock.

Ollama sends nothing, headers included, until its first chunk, and never an empty opening
chunk (server/routes.go:streamResponse, llm/server.go:llmServer.Completion). So the wait for
the response headers is the wait for the first token, which may include a model load and the
whole prompt: it gets `first_token_timeout_s`. Once the headers are in, the gap between
chunks gets `read_timeout_s`: httpcore reads the request's "timeout" extension when it
starts on the body, so it is lowered in between. Every ending is classified in `outcome`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ollabench.backends.base import record_token_gaps
from ollabench.backends.tool_wire import calls_from_ollama
from ollabench.records.schema import (
    DISCONNECTED,
    FIRST_TOKEN_TIMEOUT,
    HTTP_ERROR,
    MALFORMED,
    NO_FINAL_CHUNK,
    OK,
    STALLED,
    STREAM_ERROR,
    UNREACHABLE,
    CallMeasurement,
)

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    first_token_s: float
    between_chunks_s: float


class _Failure(Exception):
    """Ends a stream with an outcome and one line of error text."""

    def __init__(self, outcome: str, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.outcome, self.text, self.status = outcome, text, status


class _Stream:
    """Client timestamps of one stream and what its chunks carried."""

    def __init__(self) -> None:
        self.started_ns = time.perf_counter_ns()
        self.chunks = 0
        self.token_ns: list[int] = []  # arrival of each chunk with non-empty text
        self.first_token_thinking: bool | None = None
        self.content: list[str] = []
        self.tool_calls: list[Any] = []  # message.tool_calls of every chunk, in order
        self.final: dict[str, Any] | None = None
        self.final_ns: int | None = None

    def add(self, line: str, now_ns: int) -> None:
        try:
            chunk = json.loads(line)
        except ValueError as exc:
            raise _Failure(MALFORMED, f"malformed stream line after {self.chunks} chunks: "
                                      f"{one_line(exc)}") from None
        if not isinstance(chunk, dict):
            raise _Failure(MALFORMED, f"malformed stream line after {self.chunks} chunks: "
                                      f"not a JSON object")
        if "error" in chunk:
            raise _Failure(STREAM_ERROR, f"server error mid-stream after {self.chunks} "
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
            self.final, self.final_ns = chunk, now_ns

    def measurement(self, failure: _Failure | None) -> CallMeasurement:
        measurement = CallMeasurement(
            ttft_ms=self._since_start_ms(self.token_ns[0] if self.token_ns else None),
            e2e_ms=self._since_start_ms(self.final_ns) if failure is None else None,
            first_token_thinking=self.first_token_thinking,
            output=calls_from_ollama(self.tool_calls) if self.tool_calls
            else "".join(self.content),
            outcome=OK if failure is None else failure.outcome,
            http_status=None if failure is None else failure.status,
            error=None if failure is None else failure.text,
        )
        record_token_gaps(measurement, self.token_ns)
        return measurement

    def _since_start_ms(self, at_ns: int | None) -> float | None:
        return None if at_ns is None else (at_ns - self.started_ns) / NS_PER_MS


def stream_chat(client: httpx.Client, body: dict[str, Any],
                timeouts: Timeouts) -> tuple[CallMeasurement, dict[str, Any] | None]:
    """Stream one chat request: the measurement (never raises for a failed call) and the
    final chunk as sent, or None when the call did not end with one."""
    first_wait = httpx.Timeout(timeouts.first_token_s, connect=timeouts.connect_s)
    stream = _Stream()
    headers_in = False
    try:
        with client.stream("POST", "/api/chat", json=body, timeout=first_wait) as response:
            headers_in = True
            if response.is_error:
                raise _Failure(HTTP_ERROR, f"HTTP {response.status_code}: "
                                           f"{server_message(response)}", response.status_code)
            response.request.extensions["timeout"] = httpx.Timeout(
                timeouts.between_chunks_s, connect=timeouts.connect_s).as_dict()
            for line in response.iter_lines():
                if line.strip():
                    stream.add(line, time.perf_counter_ns())
        if stream.final is None:
            raise _Failure(NO_FINAL_CHUNK, f"stream ended without a final chunk after "
                                           f"{stream.chunks} chunks")
    except _Failure as failure:
        return stream.measurement(failure), None
    except httpx.HTTPError as exc:
        failure = _transport_failure(exc, stream, headers_in, timeouts,
                                     str(client.base_url).rstrip("/"))
        return stream.measurement(failure), None
    return stream.measurement(None), stream.final


def _transport_failure(exc: httpx.HTTPError, stream: _Stream, headers_in: bool,
                       timeouts: Timeouts, url: str) -> _Failure:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return _Failure(UNREACHABLE, f"cannot reach the Ollama server at {url}: {one_line(exc)}")
    if isinstance(exc, httpx.ReadTimeout) and not headers_in:
        return _Failure(FIRST_TOKEN_TIMEOUT, f"no first token within "
                                             f"{timeouts.first_token_s:g} s")
    if isinstance(exc, httpx.ReadTimeout):
        return _Failure(STALLED, f"stream stalled: no data for {timeouts.between_chunks_s:g} s "
                                 f"after {stream.chunks} chunks")
    if isinstance(exc, httpx.RemoteProtocolError):
        return _Failure(DISCONNECTED, f"connection dropped mid-stream after {stream.chunks} "
                                      "chunks")
    return _Failure(DISCONNECTED, f"{type(exc).__name__} after {stream.chunks} chunks: "
                                  f"{one_line(exc)}")


def server_message(response: httpx.Response) -> str:
    """The server's {"error": ...} text, else the body's first line."""
    response.read()
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return one_line(error if isinstance(error, str) else response.text)


def one_line(value: object, limit: int = 300) -> str:
    """An error text fit for one JSONL field: first line, trimmed."""
    lines = str(value).strip().splitlines()
    text = lines[0] if lines else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
