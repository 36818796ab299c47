"""A real HTTP server that speaks the OpenAI chat-completions stream as the servers do, with
scripted failure shapes: the ones a real server shows only under load, on a bad prompt or
behind a broken proxy, which the real llama-cpp-python server of the tests cannot be made to
show on demand.

Server-sent events over HTTP/1.1 chunked transfer, one `data:` line per event and a blank
line after it, `: ping` comments, `data: [DONE]` (llama-cpp-python llama_cpp/server/app.py
via sse-starlette; llama.cpp tools/server/server.cpp `handle_completions_impl`). Which server
it pretends to be (`kind`) decides what /v1/models says (`owned_by`) and which describing
endpoint answers (/props, /version, /api/version), as openai_dialects.identify reads them.
Use it in-process: `with FakeOpenAI(key="k") as server: ...`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.script_queue import ScriptQueue

SHUTDOWN_POLL_S = 0.02
# What each kind answers outside /v1/chat/completions.
OWNERS = {"llama-cpp-python": "me", "llama-server": "llamacpp", "vllm": "vllm",
          "ollama": "library", "other": "organization-owner"}
PROBES = {"llama-server": {"/props": {"default_generation_settings": {"n_ctx": 4096},
                                      "total_slots": 4, "build_info": "b6000-fake",
                                      "model_path": "/models/smol.gguf"}},
          "vllm": {"/version": {"version": "0.11.0"}},
          "ollama": {"/api/version": {"version": "0.12.6"}}}


@dataclass
class Script:
    """One chat answer. Times in ms after the request arrived."""

    tokens: int = 3
    token_ms: float = 0.0
    role_first: bool = True  # a role-only chunk opens the stream, as every server sends
    ping_first: bool = False  # a `: ping` comment before anything else
    usage: bool = True  # the final usage chunk (asked with stream_options.include_usage)
    timings: bool = False  # llama-server's `timings` on the last chunk
    reasoning_tokens: int = 0  # `reasoning_content` chunks before the content
    status: int | None = None  # answer with this status and `body` instead
    body: str = '{"error": {"message": "scripted failure", "type": "server_error"}}'
    empty: bool = False  # HTTP 200, no event at all (llama-cpp-python on an oversize prompt)
    cut_after: int | None = None  # end the body cleanly after this many content chunks
    disconnect_after: int | None = None  # drop the connection mid-body
    no_done: bool = False  # a finish_reason, then the body ends without [DONE]
    # Tool calls instead of content: (name, arguments as JSON text), streamed as fragments.
    tool_calls: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # sent with a scripted `status`


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI(ScriptQueue[Script]):
    """The server: its kind, the model it serves, its key, its scripts, what it was asked."""

    key: str | None = None
    kind: str = "llama-cpp-python"
    model: str = "smol"
    script: Script = field(default_factory=Script)
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: deque[Script] = deque()
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def chats(self) -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    def __enter__(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fake-openai", args=(SHUTDOWN_POLL_S,))
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()


class _Server(ThreadingHTTPServer):
    fake: FakeOpenAI


class _Disconnect(Exception):
    """Drop the connection without finishing the chunked body."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # every event leaves when written
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read exchanges."""

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(json.loads(self.rfile.read(length)) if length else {})

    def _serve(self, body: Any) -> None:
        fake = self.server.fake
        arrived = time.perf_counter()
        with fake.lock:
            fake.exchanges.append(Exchange(self.command, self.path, dict(self.headers), body))
        if fake.key is not None and self.headers.get("Authorization") != f"Bearer {fake.key}":
            # llama_cpp/server/app.py authenticate: 401 {"detail": "Invalid API key"}
            self._send(401, json.dumps({"detail": "Invalid API key"}))
            return
        probe = PROBES.get(fake.kind, {}).get(self.path)
        if self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": fake.model, "object": "model", "owned_by": OWNERS[fake.kind]}]}))
        elif probe is not None:
            self._send(200, json.dumps(probe))
        elif self.path == "/v1/chat/completions" and self.command == "POST":
            try:
                self._chat(fake.next_script(), body, arrived)
            except _Disconnect:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
        else:
            self._send(404, json.dumps({"detail": "Not Found"}))

    def _chat(self, script: Script, body: dict[str, Any], arrived: float) -> None:
        if script.status is not None:
            self._send(script.status, script.body, script.headers)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if script.empty:
            self._write_raw(b"")
            return
        if script.ping_first:
            self._write_raw(b": ping - fake\r\n\r\n")
        if script.role_first:
            self._event({"delta": {"role": "assistant"}, "finish_reason": None})
        cap = int(body.get("max_tokens") or body.get("max_completion_tokens") or 10**6)
        words: list[tuple[str, Any]] = [("reasoning_content", f"r{i} ")
                                        for i in range(script.reasoning_tokens)]
        words += [("content", f"w{i} ") for i in range(min(script.tokens, cap))]
        if script.tool_calls:
            words = [("tool_calls", part) for part in _call_fragments(script.tool_calls)]
        for sent, (kind, text) in enumerate(words):
            if sent == script.disconnect_after:
                raise _Disconnect
            if sent == script.cut_after:
                self._write_raw(b"")
                return
            due = arrived + (sent + 1) * script.token_ms / 1000
            time.sleep(max(0.0, due - time.perf_counter()))
            self._event({"delta": {kind: text}, "finish_reason": None})
        last: dict[str, Any] = {}
        if script.timings:
            last["timings"] = {"cache_n": 0, "prompt_n": 12, "prompt_ms": 3.5,
                               "predicted_n": script.tokens, "predicted_ms": 20.0}
        finish = "tool_calls" if script.tool_calls else \
            "length" if script.tokens >= cap else "stop"
        self._event({"delta": {}, "finish_reason": finish}, **last)
        if script.usage and (body.get("stream_options") or {}).get("include_usage"):
            self._data({"object": "chat.completion.chunk", "choices": [], "usage": {
                "prompt_tokens": 12, "completion_tokens": min(script.tokens, cap),
                "total_tokens": 12 + min(script.tokens, cap)}})
        if not script.no_done:
            self._write_raw(b"data: [DONE]\r\n\r\n")
        self._write_raw(b"")

    def _event(self, choice: dict[str, Any], **extra: Any) -> None:
        self._data({"object": "chat.completion.chunk", "choices": [{"index": 0, **choice}],
                    **extra})

    def _data(self, payload: dict[str, Any]) -> None:
        self._write_raw(f"data: {json.dumps(payload)}\r\n\r\n".encode())

    def _write_raw(self, data: bytes) -> None:
        """One HTTP chunk (an empty one ends the body)."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        data = text.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


FRAGMENT_CHARS = 7  # argument text per chunk: a call spans several, as real parsers stream


def _call_fragments(calls: tuple[tuple[str, str], ...]) -> list[list[dict[str, Any]]]:
    """Each call's `delta.tool_calls` fragments, as vLLM's tool parsers stream them
    (vllm entrypoints/openai/tool_parsers, e.g. hermes_tool_parser.py
    extract_tool_calls_streaming): a first fragment with index, id, type and the name, then
    pieces of the arguments' JSON text keyed by the same index only."""
    fragments: list[list[dict[str, Any]]] = []
    for index, (name, arguments) in enumerate(calls):
        fragments.append([{"index": index, "id": f"chatcmpl-tool-{index}", "type": "function",
                           "function": {"name": name}}])
        fragments += [[{"index": index,
                        "function": {"arguments": arguments[at:at + FRAGMENT_CHARS]}}]
                      for at in range(0, len(arguments), FRAGMENT_CHARS)]
    return fragments
