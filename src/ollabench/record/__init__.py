"""`ollabench record`: a proxy between an agent and its server that writes what the agent
sends as a trace the trace workload replays (docs/workloads.md, Recording a trace).

proxy.py tunnels the bytes and spots the chat requests; trace_file.py labels and writes
them. Only cli/ parses arguments: `run_record` takes them parsed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ollabench.record.proxy import Endpoint, serve
from ollabench.record.trace_file import RecordError, TraceFile, compile_patterns

__all__ = ["RecordError", "run_record"]

LOOPBACK = "127.0.0.1"


def run_record(upstream_url: str, port: int, out: Path, redact: list[str],
               bind_host: str = LOOPBACK, say: Callable[[str], None] = print) -> int:
    """Record until Ctrl-C or SIGTERM; the number of requests written."""
    upstream = parse_upstream(upstream_url)
    trace = TraceFile(out, compile_patterns(redact)).open()

    def listening(bound: int) -> None:
        say(f"ollabench record: listening on http://{bind_host}:{bound}, forwarding to "
            f"http://{upstream.host}:{upstream.port}, writing {out} (Ctrl-C stops)")

    try:
        asyncio.run(_until_stopped(upstream, Endpoint(bind_host, port), trace, listening))
    except KeyboardInterrupt:
        pass  # Ctrl-C before the loop took over the signal: every line is already flushed
    except RecordError:
        trace.close()
        out.unlink()  # nothing was recorded: the same command may be run again
        raise
    finally:
        trace.close()
    say(f"ollabench record: wrote {trace.lines} request(s) to {out}")
    return trace.lines


def parse_upstream(url: str) -> Endpoint:
    """The upstream server from --upstream: http, a host and a port, no path or password."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = -1
    if (parts.scheme != "http" or not parts.hostname or parts.username is not None
            or parts.path not in ("", "/") or parts.query or port < 1):
        raise RecordError("--upstream: give the server as http://HOST:PORT (e.g. "
                          "http://127.0.0.1:11434): no path, no https, no user or password "
                          "(the agent's own headers pass through)")
    return Endpoint(parts.hostname, port)


async def _until_stopped(upstream: Endpoint, bind: Endpoint, trace: TraceFile,
                         listening: Callable[[int], None]) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM, then close the open connections."""
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await serve(upstream, bind, trace.add, listening, stop)
    except OSError as exc:
        raise RecordError(f"--port {bind.port}: cannot listen on {bind.host}:{bind.port} "
                          f"({exc.strerror or exc})") from None
