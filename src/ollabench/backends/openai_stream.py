"""One streamed /v1/chat/completions request: server-sent events parsed and timed.

The stream (https://html.spec.whatwg.org/multipage/server-sent-events.html, as the servers
send it: one `data:` line per event): lines starting with `:` are comments (keep-alive
pings), other fields than `data` are ignored, `data: [DONE]` ends it, a chunk with empty
`choices` may carry only `usage`. The first chunk often carries only `delta.role`: it is not
a token. TTFT is the first chunk carrying content, reasoning (`reasoning_content`,
`reasoning`) or a tool call; the first chunk whatever it carried is timed apart (ttfb_ms).

A call ends well only with a `finish_reason`: llama-cpp-python's server answers an oversize
prompt with an empty HTTP 200 stream, and cuts a stream short without one when another
request interrupts it.
"""

from __future__ import annotations

import json
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

DONE = "[DONE]"
CHAT_PATH = "/chat/completions"


class SseStream(StreamState):
    """What the events of one chat-completions stream carried."""

    def __init__(self) -> None:
        super().__init__()
        self.first_token_thinking: bool | None = None
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}  # index -> name and argument text
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None  # llama-server's
        self.done = False
        self.last_ns: int | None = None

    def add(self, line: str, now_ns: int) -> bool:
        name, _, value = line.partition(":")
        if name != "data":  # a comment (":" first: a keep-alive ping) or another field
            return False
        value = value.removeprefix(" ")
        self.last_ns = now_ns
        if value.strip() == DONE:
            self.done, self.end_ns = True, now_ns
            return False
        chunk = json_object(value, self.chunks, "event")
        if "error" in chunk:
            raise Failure(STREAM_ERROR, f"server error mid-stream after {self.chunks} chunks: "
                                        f"{error_message(chunk)}")
        self.chunks += 1
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        for choice in chunk.get("choices") or []:
            self._choice(choice, now_ns)
        return True

    def _choice(self, choice: dict[str, Any], now_ns: int) -> None:
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        calls = delta.get("tool_calls") or []
        for call in calls:
            slot = self.calls.setdefault(int(call.get("index", len(self.calls))),
                                         {"name": "", "arguments": ""})
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
        if content or reasoning or calls:
            if not self.token_ns:
                self.first_token_thinking = bool(reasoning) and not content
            self.token_ns.append(now_ns)
            self.content.append(content)
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])

    def finish(self) -> None:
        if self.chunks == 0:
            raise Failure(NO_FINAL_CHUNK, "HTTP 200 with an empty stream: no chunk (a server "
                                          "may answer so to a prompt over its context)")
        if self.finish_reason is None:
            ending = "[DONE]" if self.done else "the end of the body"
            raise Failure(NO_FINAL_CHUNK, f"stream cut short: {ending} after {self.chunks} "
                                          "chunks without a finish_reason")
        if self.end_ns is None:  # no [DONE]: the call ended with its last event
            self.end_ns = self.last_ns

    def output(self) -> str:
        if not self.calls:
            return "".join(self.content)
        calls = []
        for _, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError:
                arguments = call["arguments"]  # kept as sent: the workload flags it invalid
            calls.append({"function": {"name": call["name"], "arguments": arguments}})
        return calls_from_ollama(calls)

    def measurement(self, failure: Failure | None) -> CallMeasurement:
        measurement = super().measurement(failure)
        measurement.first_token_thinking = self.first_token_thinking
        measurement.done_reason = self.finish_reason
        return measurement


def stream_completion(client: httpx.Client, body: dict[str, Any],
                      timeouts: Timeouts) -> tuple[CallMeasurement, SseStream]:
    """Stream one chat completion: the measurement (never raises for a failed call) and what
    the stream carried (usage, timings, chunks)."""
    stream = SseStream()
    measurement = run_stream(client, CHAT_PATH, body, timeouts, stream,
                             "the OpenAI-compatible server", error_text)
    return measurement, stream


def error_text(response: httpx.Response) -> str:
    """An error status as one line: authentication named as such; else the server's
    message (OpenAI's {"error": {"message"}}, FastAPI's {"detail"}), else the body's first
    line. Never the request's headers."""
    if response.status_code in (401, 403):
        return (f"authentication refused ({error_message(_json(response)) or 'no message'}): "
                "check the key in the variable named by model.api_key_env")
    return error_message(_json(response)) or one_line(response.text or response.reason_phrase)


def error_message(body: Any) -> str:
    """The message of an OpenAI-shaped, FastAPI or plain {"error": text} body ("" if none)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message") or error.get("type") or json.dumps(error)
    return one_line(error) if error else ""


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
