"""A real HTTP server that speaks Ollama's wire format, with scripted timing and faults.

Tests and benchmarks of the Ollama backend need a server whose behaviour is known exactly:
when the first token leaves, how far apart tokens are, what the final chunk reports, and how
the stream breaks. This server goes through real sockets and HTTP/1.1 chunked NDJSON (as
`ollama serve` does), so the official client, httpx and the backend run unmodified.

Use it in-process (`with FakeOllama() as server: ...`, or the `fake_ollama` pytest fixture:
registered in tests/conftest.py), or from another process:

    python -m tests.helpers.fake_ollama --port 0 \
        --script '{"ttft_ms": 50, "tokens": 500, "token_ms": 1}'

which prints `FAKE_OLLAMA_URL=http://127.0.0.1:PORT` once it listens and serves until killed.
`GET /_fake/exchanges` returns what it received and when it sent each token, so a test in
another process can check what was sent and compare client timestamps with the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SERVER_VERSION = "0.12.6"
DEFAULT_MODELS = ("qwen2.5:7b", "llama3.1:8b", "gemma3:4b", "smollm2:135m")
DEFAULT_CONTEXT = 4096  # what Ollama picks below 24 GiB of VRAM when num_ctx is not sent
MODEL_SIZE_BYTES = 4_683_087_332
STALL_LIMIT_S = 60.0  # a stalled stream is released after this even if the client never gives up
URL_PREFIX = "FAKE_OLLAMA_URL="
SHUTDOWN_POLL_S = 0.02  # how often the serving loop checks for stop(): fast test teardown


@dataclass
class Script:
    """How the server answers one /api/chat or /api/generate request.

    Times are in ms after the request line arrived and are kept to absolute deadlines, so
    sleep overshoot does not accumulate. The `*_after` faults count chunks already sent,
    the empty first chunk included (0 = before any chunk).
    """

    ttft_ms: float = 0.0  # until the first non-empty (thinking or content) chunk
    token_ms: float = 0.0  # between successive non-empty chunks
    tokens: int = 3  # content chunks, one token each
    thinking_tokens: int = 0  # thinking chunks sent before the content
    load_ms: float = 1.0  # reported as load_duration (not slept: add it to ttft_ms for that)
    prompt_tokens: int = 12  # reported as prompt_eval_count
    cached_tokens: int | None = None  # prompt_eval_cached_count; None leaves the field out
    done_reason: str = "stop"
    status: int | None = None  # answer with this HTTP status and {"error": error}
    error: str = "scripted failure"
    disconnect_after: int | None = None  # close the socket without ending the chunked body
    stall_after: int | None = None  # stop sending but keep the connection open
    garbage_after: int | None = None  # send garbage_line, then end the body
    garbage_line: str = '{"model": "broken", "do'  # not JSON; '[1, 2]' is JSON but no object
    error_line_after: int | None = None  # send {"error": error} as Ollama does mid-stream


@dataclass
class Exchange:
    """One request as the server saw it, with the monotonic times (perf_counter_ns) it used."""

    method: str
    path: str
    body: Any
    arrived_ns: int  # when the request line was read
    token_ns: list[int] = field(default_factory=list)  # when each non-empty chunk was written
    final: dict[str, Any] | None = None  # the done chunk (or whole response) as sent


class FakeOllama:
    """The server: models it holds, the scripts it follows, what it received and loaded."""

    def __init__(self, port: int = 0, models: tuple[str, ...] = DEFAULT_MODELS,
                 script: Script | None = None) -> None:
        self.models = tuple(_tagged(name) for name in models)
        self.script = script or Script()
        self.exchanges: list[Exchange] = []
        self.loaded: dict[str, int] = {}  # model -> context length, as /api/ps reports it
        self._queue: deque[Script] = deque()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def queue(self, *scripts: Script) -> None:
        """Scripts for the next chat/generate requests, one each; then `script` again."""
        with self.lock:
            self._queue.extend(scripts)

    def next_script(self) -> Script:
        with self.lock:
            return self._queue.popleft() if self._queue else self.script

    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def requests_to(self, path: str) -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.path == path]

    def start(self) -> FakeOllama:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fake-ollama", args=(SHUTDOWN_POLL_S,))
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases stalled streams
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(name="fake_ollama")
def fake_ollama_fixture() -> Iterator[FakeOllama]:
    """A fresh fake server per test (import this name into a test module to use it)."""
    with FakeOllama() as server:
        yield server


class _Server(ThreadingHTTPServer):
    """Handler threads are daemons (ThreadingHTTPServer's default) and reach the fake here."""

    fake: FakeOllama


class _Disconnect(Exception):
    """Raised inside a handler to drop the connection without finishing the response."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, like Ollama
    disable_nagle_algorithm = True  # every chunk leaves when written, not when a buffer fills
    timeout = 30  # an idle keep-alive connection is closed after this
    arrived_ns: int

    server: _Server

    @property
    def fake(self) -> FakeOllama:
        return self.server.fake

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read exchanges, not logs."""

    def parse_request(self) -> bool:
        """Note when the request line arrived: scripted times count from there, so the
        server's own header and body parsing happens inside them, not on top."""
        self.arrived_ns = time.perf_counter_ns()
        return super().parse_request()

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            self._send_json(400, {"error": "invalid JSON in request body"})
            return
        self._serve(body)

    def _serve(self, body: Any) -> None:
        exchange = Exchange(self.command, self.path, body, self.arrived_ns)
        self.fake.record(exchange)
        routes = {
            ("GET", "/api/version"): lambda: self._send_json(200, {"version": SERVER_VERSION}),
            ("GET", "/api/tags"): lambda: self._send_json(200, {"models": self._tags()}),
            ("GET", "/api/ps"): lambda: self._send_json(200, {"models": self._ps()}),
            ("POST", "/api/show"): lambda: self._show(body),
            ("POST", "/api/chat"): lambda: self._generate(exchange, chat=True),
            ("POST", "/api/generate"): lambda: self._generate(exchange, chat=False),
            ("GET", "/_fake/exchanges"): self._dump_exchanges,
        }
        route = routes.get((self.command, self.path))
        if route is None:
            self._send_json(404, {"error": f"{self.command} {self.path} not found"})
            return
        try:
            route()
        except _Disconnect:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have closed it already
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (read timeout): nothing to do

    # --- model metadata -----------------------------------------------------------------

    def _tags(self) -> list[dict[str, Any]]:
        return [{"name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z",
                 "size": MODEL_SIZE_BYTES, "digest": _digest(name), "details": _details(name)}
                for name in self.fake.models]

    def _ps(self) -> list[dict[str, Any]]:
        expires = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
        with self.fake.lock:
            loaded = dict(self.fake.loaded)
        return [{"name": name, "model": name, "size": MODEL_SIZE_BYTES, "digest": _digest(name),
                 "details": _details(name), "expires_at": expires,
                 "size_vram": MODEL_SIZE_BYTES, "context_length": context}
                for name, context in loaded.items()]

    def _show(self, body: dict[str, Any]) -> None:
        name = self._known_model(body)
        if name is None:
            return
        self._send_json(200, {
            "modelfile": f"FROM {name}\n",
            "parameters": 'num_ctx                        4096\n'
                          'stop                           "<|im_start|>"\n'
                          'stop                           "<|im_end|>"\n'
                          'temperature                    0.7',
            "template": "{{ .Prompt }}",
            "details": _details(name),
            "model_info": {"general.architecture": _details(name)["family"],
                           "general.parameter_count": 7_615_616_512},
            "capabilities": ["completion"],
        })

    def _known_model(self, body: dict[str, Any]) -> str | None:
        """The requested model, or None after answering 404 as Ollama does."""
        name = _tagged(str(body.get("model", "")))
        if name not in self.fake.models:
            self._send_json(404, {"error": f"model '{body.get('model')}' not found"})
            return None
        return name

    def _dump_exchanges(self) -> None:
        with self.fake.lock:
            dumped = [asdict(e) for e in self.fake.exchanges]
        self._send_json(200, {"exchanges": dumped})

    # --- chat and generate --------------------------------------------------------------

    def _generate(self, exchange: Exchange, chat: bool) -> None:
        body = exchange.body
        name = self._known_model(body)
        if name is None:
            return
        if body.get("keep_alive") == 0 and not body.get("messages" if chat else "prompt"):
            self._unload(exchange, name, chat)
            return
        script = self.fake.next_script()
        if script.status is not None:
            self._send_json(script.status, {"error": script.error})
            return
        with self.fake.lock:
            self.fake.loaded[name] = (body.get("options") or {}).get("num_ctx", DEFAULT_CONTEXT)
        try:
            if body.get("stream", True):
                self._stream(exchange, script, chat, name)
            else:
                self._respond_once(exchange, script, chat, name)
        finally:
            if body.get("keep_alive") == 0:
                with self.fake.lock:
                    self.fake.loaded.pop(name, None)

    def _unload(self, exchange: Exchange, name: str, chat: bool) -> None:
        with self.fake.lock:
            self.fake.loaded.pop(name, None)
        final = {**_text_chunk(name, chat, "", None), "done": True, "done_reason": "unload"}
        exchange.final = final
        if exchange.body.get("stream", True):
            self._start_stream()
            self._write_chunk(json.dumps(final).encode() + b"\n")
            self._end_stream()
        else:
            self._send_json(200, final)

    def _stream(self, exchange: Exchange, script: Script, chat: bool, name: str) -> None:
        self._start_stream()
        faults = {script.disconnect_after: self._disconnect, script.stall_after: self._stall,
                  script.garbage_after: lambda: self._end_with(
                      script.garbage_line.encode() + b"\n"),
                  script.error_line_after: lambda: self._end_with(
                      json.dumps({"error": script.error}).encode() + b"\n")}
        faults.pop(None, None)
        for sent, (deadline_ns, chunk) in enumerate(_plan(exchange, script, chat, name)):
            if sent in faults:
                faults[sent]()
                return
            _sleep_until(deadline_ns)
            if chunk.get("done"):
                chunk.update(_final_fields(exchange, script))
                exchange.final = chunk
            written_ns = self._write_chunk(json.dumps(chunk).encode() + b"\n")
            if _has_text(chunk):
                exchange.token_ns.append(written_ns)
        self._end_stream()

    def _respond_once(self, exchange: Exchange, script: Script, chat: bool, name: str) -> None:
        """stream: false: the same timeline, sent as one object when the last token is due."""
        content, thinking = [], []
        for deadline_ns, chunk in _plan(exchange, script, chat, name):
            _sleep_until(deadline_ns)
            if _has_text(chunk):
                exchange.token_ns.append(time.perf_counter_ns())
            text_field = chunk["message"] if chat else chunk
            content.append(text_field.get("content" if chat else "response", ""))
            thinking.append(text_field.get("thinking", ""))
        final = {**_text_chunk(name, chat, "".join(content), "".join(thinking) or None),
                 "done": True, "done_reason": script.done_reason,
                 **_final_fields(exchange, script)}
        exchange.final = final
        self._send_json(200, final)

    def _disconnect(self) -> None:
        raise _Disconnect

    def _stall(self) -> None:
        self.fake.stopping.wait(STALL_LIMIT_S)
        raise _Disconnect

    def _end_with(self, line: bytes) -> None:
        self._write_chunk(line)
        self._end_stream()

    # --- HTTP plumbing ------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> int:
        """Write one HTTP chunk in a single send; return when it was handed to the socket."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        return time.perf_counter_ns()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _plan(exchange: Exchange, script: Script,
          chat: bool, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(deadline, chunk) pairs: an empty chunk now, thinking and content tokens, the done chunk."""
    start = exchange.arrived_ns
    yield start, _text_chunk(name, chat, "", None)
    texts = [(None, f"t{i} ") for i in range(script.thinking_tokens)]
    texts += [(f"w{i} ", None) for i in range(script.tokens)]
    deadline = start
    for index, (content, thinking) in enumerate(texts):
        deadline = start + round((script.ttft_ms + index * script.token_ms) * 1e6)
        yield deadline, _text_chunk(name, chat, content or "", thinking)
    done = {**_text_chunk(name, chat, "", None), "done": True, "done_reason": script.done_reason}
    yield deadline, done


def _text_chunk(name: str, chat: bool, content: str, thinking: str | None) -> dict[str, Any]:
    created = datetime.now(timezone.utc).isoformat()
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking is not None:
            message["thinking"] = thinking
        return {"model": name, "created_at": created, "message": message, "done": False}
    chunk: dict[str, Any] = {"model": name, "created_at": created, "response": content,
                             "done": False}
    if thinking is not None:
        chunk["thinking"] = thinking
    return chunk


def _final_fields(exchange: Exchange, script: Script) -> dict[str, Any]:
    """Timing fields in integer ns, from the times this server really used.

    prompt_eval_duration runs from arrival to the first token, eval_duration from the first
    token to the last; load_duration is the scripted figure and is added to total_duration.
    """
    now = time.perf_counter_ns()
    first = exchange.token_ns[0] if exchange.token_ns else now
    last = exchange.token_ns[-1] if exchange.token_ns else now
    load_ns = round(script.load_ms * 1e6)
    fields = {
        "total_duration": load_ns + now - exchange.arrived_ns,
        "load_duration": load_ns,
        "prompt_eval_count": script.prompt_tokens,
        "prompt_eval_duration": first - exchange.arrived_ns,
        "eval_count": script.thinking_tokens + script.tokens,
        "eval_duration": last - first,
    }
    if script.cached_tokens is not None:
        fields["prompt_eval_cached_count"] = script.cached_tokens
    return fields


def _has_text(chunk: dict[str, Any]) -> bool:
    source = chunk.get("message", chunk)
    return bool(source.get("content") or source.get("response") or source.get("thinking"))


def _sleep_until(deadline_ns: int) -> None:
    remaining_ns = deadline_ns - time.perf_counter_ns()
    if remaining_ns > 0:
        time.sleep(remaining_ns / 1e9)


def _tagged(name: str) -> str:
    """Ollama's name for a model: a bare name means the `latest` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(name: str) -> dict[str, Any]:
    family = name.split(":")[0].rstrip("0123456789.")
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", default="{}",
                        help="a Script as JSON (used for every request), or a list of them "
                             "(one per chat/generate request, then the defaults)")
    parser.add_argument("--model", action="append", dest="models",
                        help="a model the server holds (repeatable)")
    args = parser.parse_args(argv)
    scripted = json.loads(args.script)
    server = FakeOllama(args.port, tuple(args.models or DEFAULT_MODELS))
    if isinstance(scripted, list):
        server.queue(*(Script(**s) for s in scripted))
    else:
        server.script = Script(**scripted)
    print(f"{URL_PREFIX}{server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
