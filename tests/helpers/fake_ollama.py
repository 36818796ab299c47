"""A real HTTP server that speaks Ollama's wire format for one server version, with scripted
timing and faults.

Tests and benchmarks of the Ollama backend need a server whose behaviour is known exactly:
when the first token leaves, what the final chunk reports, what the server did with the
prompt and the options, and how the stream breaks. This server goes through real sockets and
HTTP/1.1 chunked NDJSON as `ollama serve` does; what it does with a request (cache reuse,
truncation, effective context and batch, reloads, refusals) follows the Ollama version it is
given (fake_ollama_model.py, which cites the upstream source of every rule).

Use it in-process (`with FakeOllama(version="0.24.0") as server: ...`, or the `fake_ollama`
pytest fixture, registered in tests/conftest.py), or from another process:

    python -m tests.helpers.fake_ollama --port 0 --version 0.24.0 \
        --script '{"ttft_ms": 50, "tokens": 500, "token_ms": 1}'

which prints `FAKE_OLLAMA_URL=http://127.0.0.1:PORT` once it listens and serves until killed.
`GET /_fake/exchanges` returns each request, when each token left, and what the server did
(`did`: reused and evaluated tokens, truncation, effective ctx/batch, reload, context shift),
so a test in another process can compare records with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers.fake_ollama_model import MODELS, Plan, Refusal, Server, ps, show, tags
from tests.helpers.fake_ollama_slots import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_NUM_PARALLEL,
    LoadQueue,
    Slots,
)
from tests.helpers.script_queue import ScriptQueue

DEFAULT_VERSION = "0.12.6"
STALL_LIMIT_S = 60.0  # a stalled stream is released after this even if the client never gives up
URL_PREFIX = "FAKE_OLLAMA_URL="
SHUTDOWN_POLL_S = 0.02  # how often the serving loop checks for stop(): fast test teardown
REPEAT_LIMIT = 30  # llm/server.go:Completion aborts when the repeat count goes above this


@dataclass
class Script:
    """Timing and faults of one /api/chat answer.

    Times are in ms after the request line arrived and are kept to absolute deadlines, so
    sleep overshoot does not accumulate. The `*_after` faults count chunks already sent.
    """

    ttft_ms: float = 0.0  # until the first (thinking or content) chunk
    token_ms: float = 0.0  # between successive chunks
    tokens: int = 3  # content tokens wanted (num_predict and the context may cut them)
    thinking_tokens: int = 0  # thinking chunks sent first when the request thinks
    load_ms: float = 1.0  # load_duration of a warm call (reported, not slept)
    reload_ms: float = 400.0  # load_duration of a call that (re)loads the model
    prompt_token_ms: float = 0.05  # prompt_eval_duration per evaluated token
    status: int | None = None  # answer with this HTTP status and {"error": error}
    error: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)  # sent with `status` (Retry-After)
    disconnect_after: int | None = None  # close the socket without ending the chunked body
    stall_after: int | None = None  # stop sending but keep the connection open
    garbage_after: int | None = None  # send garbage_line, then end the body
    garbage_line: str = '{"model": "broken", "do'  # not JSON; '[1, 2]' is JSON but no object
    error_line_after: int | None = None  # send {"error": error} as Ollama does mid-stream
    repeat_abort: bool = False  # identical tokens until the repeat limit ends the body
    text: str | None = None  # answer with these words (one chunk each) instead of w0 w1 ...
    # Answer with these calls ({"function": {"name", "arguments": {...}}}) in one chunk's
    # message.tool_calls, content empty: Ollama's tool parser holds back the call's tokens
    # and sends the call once complete (server/routes.go ChatHandler; api/types.go ToolCall).
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class Exchange:
    """One request as the server saw it, with the monotonic times (perf_counter_ns) it used."""

    method: str
    path: str
    body: Any
    arrived_ns: int  # when the request line was read
    token_ns: list[int] = field(default_factory=list)  # when each text chunk was written
    final: dict[str, Any] | None = None  # the done chunk as sent
    status: int = 200
    did: dict[str, Any] | None = None  # the Plan: what the server did with the request
    slot_wait_ns: int | None = None  # how long it waited for a generation slot
    generating_ns: int = 0  # when it got its slot: scripted times count from here
    authorization: str | None = None  # the request's Authorization header (a proxy's key)


class FakeOllama(ScriptQueue[Script]):
    """The server: its version, the models it holds, the scripts it follows, what it did."""

    def __init__(self, port: int = 0, version: str = DEFAULT_VERSION,
                 models: tuple[str, ...] = tuple(MODELS), script: Script | None = None,
                 default_ctx: int = 4096, parallel: int = DEFAULT_NUM_PARALLEL,
                 max_queue: int = DEFAULT_MAX_QUEUE, load_wait_ms: float = 0.0) -> None:
        self.models = tuple(_tagged(name) for name in models)
        # OLLAMA_NUM_PARALLEL slots and OLLAMA_MAX_QUEUE pending loads (fake_ollama_slots.py);
        # a load holds its request in the queue for load_wait_ms (slept)
        self.slots, self.load_queue = Slots(parallel), LoadQueue(max_queue)
        self.load_wait_ms = load_wait_ms
        self.state = Server(version, default_ctx)
        self.script = script or Script()
        self.exchanges: list[Exchange] = []
        self._queue: deque[Script] = deque()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()  # open ones, closed by stop()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def chats(self) -> list[Exchange]:
        """The /api/chat exchanges that ran a prompt (not unloads)."""
        with self.lock:
            return [e for e in self.exchanges if e.path == "/api/chat" and e.body.get("messages")]

    def start(self) -> FakeOllama:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fake-ollama", args=(SHUTDOWN_POLL_S,))
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases stalled streams
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.lock:  # a server that goes down drops its keep-alive connections too
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(name="fake_ollama")
def fake_ollama_fixture(request: pytest.FixtureRequest) -> Iterator[FakeOllama]:
    """A fresh fake server per test; its version is the test's `param` if parametrized
    indirectly, else DEFAULT_VERSION."""
    with FakeOllama(version=getattr(request, "param", DEFAULT_VERSION)) as server:
        yield server


class _Server(ThreadingHTTPServer):
    """Handler threads are daemons (ThreadingHTTPServer's default) and reach the fake here.

    Its listen backlog is the kernel's limit, as `ollama serve` has it: cmd/cmd.go RunServer
    listens with Go's net.Listen, whose backlog is /proc/sys/net/core/somaxconn
    (net/sock_linux.go maxListenerBacklog). socketserver's default of 5 dropped connections
    when 16 clients connected at once (a second's SYN retry, or a reset).
    """

    request_queue_size = socket.SOMAXCONN  # listen() caps it at somaxconn, as Go reads it
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

    def setup(self) -> None:
        super().setup()
        with self.fake.lock:
            self.fake.connections.add(self.connection)

    def finish(self) -> None:
        with self.fake.lock:
            self.fake.connections.discard(self.connection)
        super().finish()

    def parse_request(self) -> bool:
        """Scripted times count from the request line's arrival."""
        self.arrived_ns = time.perf_counter_ns()
        return super().parse_request()

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:  # routes.go: ShouldBindJSON -> 400
            self._send_json(400, {"error": str(exc)})
            return
        self._serve(body)

    def _serve(self, body: Any) -> None:
        exchange = Exchange(self.command, self.path, body, self.arrived_ns,
                            authorization=self.headers.get("Authorization"))
        self.fake.record(exchange)
        routes = {
            ("GET", "/api/version"): lambda: self._send_json(
                200, {"version": self.fake.state.version_text}),
            ("GET", "/api/tags"): lambda: self._send_json(
                200, {"models": tags(self.fake.models)}),
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): lambda: self._show(body),
            ("POST", "/api/chat"): lambda: self._chat(exchange),
            ("GET", "/_fake/exchanges"): self._dump_exchanges,
        }
        route = routes.get((self.command, self.path))
        try:
            if route is None:
                raise Refusal(404, "404 page not found")
            route()
        except Refusal as refusal:  # routes.go:streamResponse: nothing written yet
            exchange.status = refusal.status
            self._send_json(refusal.status, {"error": refusal.message}, refusal.headers)
        except _Disconnect:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have closed it already
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (read timeout): nothing to do

    # --- model metadata -----------------------------------------------------------------

    def _ps(self) -> None:
        with self.fake.lock:
            self._send_json(200, {"models": ps(self.fake.state)})

    def _show(self, body: dict[str, Any]) -> None:
        self._send_json(200, show(self._known_model(body)))

    def _known_model(self, body: dict[str, Any]) -> str:
        """The requested model; 404 as routes.go:ChatHandler answers otherwise."""
        if not body.get("model"):
            raise Refusal(400, "model is required")
        name = _tagged(str(body["model"]))
        if name not in self.fake.models:
            raise Refusal(404, f"model '{body['model']}' not found")
        return name

    def _dump_exchanges(self) -> None:
        with self.fake.lock:
            dumped = [asdict(e) for e in self.fake.exchanges]
        self._send_json(200, {"exchanges": dumped})

    # --- chat -----------------------------------------------------------------------------

    def _chat(self, exchange: Exchange) -> None:
        """server/routes.go:ChatHandler -> scheduleRunner -> Completion, per generation."""
        body = exchange.body
        name = self._known_model(body)
        spec, state, plan = MODELS[name], self.fake.state, Plan()
        with self.fake.lock:
            plan.thinking = state.check_fields(name, spec, body)
            if not body.get("messages") and body.get("keep_alive") == 0:
                state.runners.pop(name, None)  # ChatHandler: done_reason "unload"
                self._send_json(200, self._chunk(name, "", None, done_reason="unload"))
                return
            script = self.fake.next_script()
            if script.status is not None:
                raise Refusal(script.status, script.error, script.headers)
            previous = state.runners.get(name)
            runner = state.schedule(name, spec, body, plan)
            if plan.reloaded:  # sched.go GetRunner: only a load goes through pendingReqCh
                try:
                    self.fake.load_queue.enter()
                except Refusal:
                    state.runners.pop(name, None)
                    if previous is not None:
                        state.runners[name] = previous
                    raise
            exchange.did = asdict(plan)
            tokens = state.prompt(body, runner, plan)
            state.evaluate(runner, tokens, plan)
            state.generate(runner, plan, script.tokens,
                           (body.get("options") or {}).get("num_predict"))
            state.options_effect(spec, body.get("options") or {}, plan)
            runner.slot = [*tokens, *(f"w{i}" for i in range(plan.output_tokens))]
            exchange.did = {k: v for k, v in asdict(plan).items() if k != "prompt"}
            if body.get("keep_alive") == 0:
                state.runners.pop(name, None)
        if plan.reloaded:
            time.sleep(self.fake.load_wait_ms / 1e3)
            self.fake.load_queue.leave()
        with self.fake.slots.held() as waited_ns:  # llama_server.go Completion: s.sem
            exchange.slot_wait_ns, exchange.generating_ns = waited_ns, time.perf_counter_ns()
            self._stream(exchange, script, plan, name)

    def _stream(self, exchange: Exchange, script: Script, plan: Plan, name: str) -> None:
        """No bytes before the first chunk (routes.go:streamResponse), no empty opening chunk
        (llmServer.Completion forwards non-empty content only), then the done chunk."""
        faults = {script.disconnect_after: self._disconnect, script.stall_after: self._stall,
                  script.garbage_after: lambda: self._end_with(script.garbage_line),
                  script.error_line_after: lambda: self._end_with(
                      json.dumps({"error": script.error}))}
        faults.pop(None, None)
        texts = [(None, f"t{i} ") for i in range(script.thinking_tokens if plan.thinking else 0)]
        words = script.text.split() if script.text is not None else []
        word = ((lambda i: "again ") if script.repeat_abort
                else (lambda i: words[i % len(words)] + " ") if words
                else (lambda i: f"w{i} "))
        texts += [(word(i), None) for i in range(plan.output_tokens)]
        if script.tool_calls is not None:
            texts = [("", None)]  # the call's chunk: no content, the calls in the message
        # llm/server.go:Completion: the 32nd identical token in a row is not forwarded and
        # the body ends with no done chunk and no error (HTTP 200).
        aborted = script.repeat_abort and plan.output_tokens > REPEAT_LIMIT + 1
        if aborted:
            texts = texts[:REPEAT_LIMIT + 1]
        started = False
        for sent, (content, thinking) in enumerate(texts):
            if sent in faults:
                if not started:
                    self._start_stream()
                faults[sent]()
                return
            _sleep_until(exchange.generating_ns + round(
                (script.ttft_ms + sent * script.token_ms) * 1e6))
            if not started:
                self._start_stream()
                started = True
            chunk = self._chunk(name, content or "", thinking)
            if script.tool_calls is not None:
                chunk["message"]["tool_calls"] = script.tool_calls
            exchange.token_ns.append(self._write_line(chunk))
        if not started:
            self._start_stream()
        if not aborted:
            final = self._chunk(name, "", None, done_reason=plan.done_reason)
            final.update(self._metrics(exchange, script, plan))
            exchange.final = final
            self._write_line(final)
        self._end_stream()

    def _chunk(self, name: str, content: str, thinking: str | None,
               done_reason: str | None = None) -> dict[str, Any]:
        """api/types.go ChatResponse: created_at fresh per chunk; thinking omitted if empty."""
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        chunk = {"model": name, "created_at": datetime.now(timezone.utc).isoformat(),
                 "message": message, "done": done_reason is not None}
        if done_reason is not None:
            chunk["done_reason"] = done_reason
        return chunk

    @staticmethod
    def _metrics(exchange: Exchange, script: Script, plan: Plan) -> dict[str, Any]:
        """api/types.go:Metrics in integer ns, zero values omitted (omitempty)."""
        now = time.perf_counter_ns()
        first = exchange.token_ns[0] if exchange.token_ns else now
        last = exchange.token_ns[-1] if exchange.token_ns else now
        load_ns = round((script.reload_ms if plan.reloaded else script.load_ms) * 1e6)
        prompt_ns = round(plan.evaluated_tokens * script.prompt_token_ms * 1e6)
        metrics = {
            "total_duration": load_ns + prompt_ns + now - exchange.arrived_ns,
            "load_duration": load_ns,
            "prompt_eval_count": plan.prompt_eval_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": len(exchange.token_ns),
            "eval_duration": last - first,
        }
        return {k: v for k, v in metrics.items() if v}

    def _disconnect(self) -> None:
        raise _Disconnect

    def _stall(self) -> None:
        """Silent until the client gives up: its disconnect cancels the request's context,
        which frees the generation slot (llm/llama_server.go Completion)."""
        deadline = time.monotonic() + STALL_LIMIT_S
        while not self.fake.stopping.wait(SHUTDOWN_POLL_S) and time.monotonic() < deadline:
            if self._client_gone():
                break
        raise _Disconnect

    def _client_gone(self) -> bool:
        try:
            self.connection.setblocking(False)
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            finally:
                self.connection.setblocking(True)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _end_with(self, line: str) -> None:
        self.wfile.write(b"%X\r\n%s\n\r\n" % (len(line) + 1, line.encode()))
        self._end_stream()

    # --- HTTP plumbing ------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any,
                   headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_line(self, chunk: dict[str, Any]) -> int:
        """Write one NDJSON line as one HTTP chunk in a single send; return when it was
        handed to the socket."""
        data = json.dumps(chunk).encode() + b"\n"
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        return time.perf_counter_ns()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _sleep_until(deadline_ns: int) -> None:
    remaining_ns = deadline_ns - time.perf_counter_ns()
    if remaining_ns > 0:
        time.sleep(remaining_ns / 1e9)


def _tagged(name: str) -> str:
    """Ollama's name for a model: a bare name means the `latest` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--version", default=DEFAULT_VERSION,
                        help="the Ollama version whose behaviour to serve, e.g. 0.24.0")
    parser.add_argument("--script", default="{}",
                        help="a Script as JSON (used for every request), or a list of them "
                             "(one per chat request, then the defaults)")
    parser.add_argument("--parallel", type=int, default=DEFAULT_NUM_PARALLEL,
                        help="OLLAMA_NUM_PARALLEL: generation slots")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help="OLLAMA_MAX_QUEUE: requests waiting for a load")
    parser.add_argument("--model", action="append", dest="models", choices=sorted(MODELS),
                        help="a model the server holds (repeatable; default: all)")
    args = parser.parse_args(argv)
    scripted = json.loads(args.script)
    server = FakeOllama(args.port, args.version, tuple(args.models or MODELS),
                        parallel=args.parallel, max_queue=args.max_queue)
    if isinstance(scripted, list):
        server.queue(*(Script(**s) for s in scripted))
    else:
        server.script = Script(**scripted)
    print(f"{URL_PREFIX}{server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
