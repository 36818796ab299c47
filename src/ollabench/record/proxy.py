"""The recording proxy: a byte tunnel between an agent and its server that reads the
requests going by.

Each client connection gets its own upstream connection, and bytes are copied both ways as
they arrive, unchanged and unbuffered (no HTTP is re-encoded, so streamed answers, keep-alive
and any header or status pass as the server sent them). A copy of the client's bytes feeds an
HTTP/1.1 request parser (RequestReader); each complete POST to Ollama's `/api/chat` or an
OpenAI-compatible `.../chat/completions` with a JSON body is handed to `on_chat` after its
bytes have gone upstream, so recording never delays a request. A client that goes away
closes its upstream connection (the server stops generating, as it would without the
proxy); an upstream that cannot be reached gets the client a 502 with an `{"error"}` body,
the shape of Ollama's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 65536
CHAT_PATHS = ("/api/chat", "/chat/completions")  # Ollama's; OpenAI's under any prefix
MAX_HEAD_BYTES = 65536


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


class RequestReader:
    """Incremental HTTP/1.1 request parser over a copy of the client's bytes: hands each
    chat request's JSON body to `on_chat`. Bytes it cannot parse stop the reading (the
    tunnel goes on), never the connection."""

    def __init__(self, on_chat: Callable[[dict[str, Any]], None]) -> None:
        self.on_chat = on_chat
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._body = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        self._buffer += data
        try:
            while self._step():
                pass
        except ValueError:
            self._broken = True

    def _step(self) -> bool:
        """Parse what the buffer holds; True while progress is made."""
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ValueError("request head too long")
                return False
            self._head = _head(bytes(self._buffer[:end]))
            del self._buffer[:end + 4]
        method, target, headers = self._head
        if "chunked" in headers.get("transfer-encoding", "").lower():
            done = self._chunked()
        else:
            length = int(headers.get("content-length", "0"))
            take = min(length - len(self._body), len(self._buffer))
            self._body += self._buffer[:take]
            del self._buffer[:take]
            done = len(self._body) == length
        if not done:
            return False
        self._finish(method, target, bytes(self._body))
        self._head, self._body = None, bytearray()
        return True

    def _chunked(self) -> bool:
        """Move whole chunks into the body; True at the last chunk and its trailers."""
        while True:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(self._buffer[:end]).split(b";")[0].strip(), 16)
            if size == 0:  # the last chunk: done after its trailers and the blank line
                stop = self._buffer.find(b"\r\n\r\n", end)
                if stop < 0:
                    return False
                del self._buffer[:stop + 4]
                return True
            if len(self._buffer) < end + 2 + size + 2:
                return False
            self._body += self._buffer[end + 2:end + 2 + size]
            del self._buffer[:end + 2 + size + 2]

    def _finish(self, method: str, target: str, body: bytes) -> None:
        path = target.split("?", 1)[0]
        if method != "POST" or not path.endswith(CHAT_PATHS):
            return
        try:
            data = json.loads(body)
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("messages"), list) and data["messages"]:
            self.on_chat(data)


def _head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def serve(upstream: Endpoint, bind: Endpoint, on_chat: Callable[[dict[str, Any]], None],
                on_listening: Callable[[int], None], stop: asyncio.Event) -> None:
    """Accept connections on `bind` until `stop` is set, then close every open one;
    on_listening gets the bound port."""
    tunnels: set[asyncio.Task[None]] = set()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tunnels.add(task)
        try:
            await _tunnel(upstream, reader, writer, RequestReader(on_chat))
        except asyncio.CancelledError:
            pass  # stopping: _tunnel closed both sides
        finally:
            tunnels.discard(task)

    server = await asyncio.start_server(tunnel, bind.host, bind.port)
    on_listening(server.sockets[0].getsockname()[1])
    await stop.wait()
    server.close()
    for task in list(tunnels):
        task.cancel()
    await asyncio.gather(*tunnels, return_exceptions=True)


async def _tunnel(upstream: Endpoint, client_reader: asyncio.StreamReader,
                  client_writer: asyncio.StreamWriter, requests: RequestReader) -> None:
    _no_delay(client_writer)
    try:
        up_reader, up_writer = await asyncio.open_connection(upstream.host, upstream.port)
    except OSError as exc:
        await _bad_gateway(client_writer, upstream, exc)
        return
    _no_delay(up_writer)
    pumps = [asyncio.create_task(_pump(client_reader, up_writer, requests.feed)),
             asyncio.create_task(_pump(up_reader, client_writer, None))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in pumps:  # one side failed (a client gone), or stopping: end the other
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in (up_writer, client_writer):
            writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                sniff: Callable[[bytes], None] | None) -> None:
    """Copy bytes as they arrive; at the source's end, half-close the sink."""
    while data := await source.read(CHUNK_BYTES):
        sink.write(data)
        if sniff is not None:
            sniff(data)  # after the bytes went on: reading never delays the request
        await sink.drain()
    if sink.can_write_eof() and not sink.is_closing():
        sink.write_eof()


async def _bad_gateway(writer: asyncio.StreamWriter, upstream: Endpoint, exc: OSError) -> None:
    body = json.dumps({"error": f"ollabench record: cannot reach the upstream server "
                                f"{upstream.host}:{upstream.port} ({exc.strerror or exc})"})
    writer.write(f"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Small writes (one streamed token) go out at once, not after Nagle's wait."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
