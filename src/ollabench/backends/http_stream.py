"""What every streamed HTTP chat call shares, whatever the server's wire format: the clocks,
the timeouts, the typed endings, the credentials and their redaction.

The wait for the response headers gets `first_token_timeout_s` (a server may send nothing
before its first token, as Ollama does, and that wait may include a model load and the whole
prompt). Once the headers are in, the gap between lines gets `read_timeout_s`: httpcore reads
the request's "timeout" extension when it starts on the body, so it is lowered in between.
A format (ollama_stream, openai_stream) parses lines into a `StreamState`; every ending is
classified in `outcome`, never raised. A busy answer (429, 503) with `Retry-After` (seconds
or an HTTP date, RFC 9110 section 10.2.3) records the wait the server asked for, bounded by
`run.retry_after_max_s`, as `retry_after_s`: the bench's next try waits that long instead of
its backoff.
"""

from __future__ import annotations

import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ollabench.backends.base import record_token_gaps
from ollabench.config.schema import RunConfig
from ollabench.errors import ConfigError
from ollabench.records.schema import (
    DISCONNECTED,
    FIRST_TOKEN_TIMEOUT,
    HTTP_ERROR,
    MALFORMED,
    OK,
    STALLED,
    UNREACHABLE,
    CallMeasurement,
)
from ollabench.redaction import redact_url, remember, scrub

NS_PER_MS = 1_000_000
BUSY_STATUSES = (429, 503)  # the statuses whose Retry-After asks for a later try


@dataclass(frozen=True)
class Timeouts:
    """A call's waits (seconds), and the longest wait a server's Retry-After may ask."""

    connect_s: float
    first_token_s: float
    between_chunks_s: float
    retry_after_max_s: float = math.inf

    @classmethod
    def of(cls, run: RunConfig) -> Timeouts:
        return cls(run.connect_timeout_s, run.first_token_timeout_s, run.read_timeout_s,
                   run.retry_after_max_s)


class Failure(Exception):
    """Ends a stream with an outcome and one line of error text."""

    def __init__(self, outcome: str, text: str, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(text)
        self.outcome, self.text, self.status = outcome, text, status
        self.retry_after_s = retry_after_s


class StreamState(ABC):
    """Client timestamps of one stream: its first chunk whatever it carried (a keep-alive
    comment is not a chunk), each chunk that carried output, and the end."""

    def __init__(self) -> None:
        self.started_ns = time.perf_counter_ns()
        self.first_chunk_ns: int | None = None
        self.chunks = 0
        self.token_ns: list[int] = []  # arrival of each chunk that carried output
        self.end_ns: int | None = None

    def line(self, line: str, now_ns: int) -> None:
        """One line of the body."""
        if line.strip() and self.add(line, now_ns) and self.first_chunk_ns is None:
            self.first_chunk_ns = now_ns

    @abstractmethod
    def add(self, line: str, now_ns: int) -> bool:
        """Parse one non-blank line: whether it was a chunk of the reply (not a comment);
        raise Failure for a line that ends the call."""

    @abstractmethod
    def finish(self) -> None:
        """The body ended cleanly: raise Failure when the call did not end as it should."""

    @abstractmethod
    def output(self) -> str:
        """The reply's text (or its tool calls as canonical JSON)."""

    def since_start_ms(self, at_ns: int | None) -> float | None:
        return None if at_ns is None else (at_ns - self.started_ns) / NS_PER_MS

    def measurement(self, failure: Failure | None) -> CallMeasurement:
        measurement = CallMeasurement(
            ttft_ms=self.since_start_ms(self.token_ns[0] if self.token_ns else None),
            ttfb_ms=self.since_start_ms(self.first_chunk_ns),
            e2e_ms=self.since_start_ms(self.end_ns) if failure is None else None,
            output=self.output(),
            outcome=OK if failure is None else failure.outcome,
            http_status=None if failure is None else failure.status,
            error=None if failure is None else failure.text,
            retry_after_s=None if failure is None else failure.retry_after_s,
        )
        record_token_gaps(measurement, self.token_ns)
        return measurement


def json_object(text: str, chunks: int, what: str) -> dict[str, Any]:
    """One line (or event) of a stream as a JSON object; a MALFORMED ending otherwise."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Failure(MALFORMED, f"malformed {what} after {chunks} chunks: "
                                 f"{one_line(exc)}") from None
    if not isinstance(data, dict):
        raise Failure(MALFORMED, f"malformed {what} after {chunks} chunks: not a JSON object")
    return data


def run_stream(client: httpx.Client, path: str, body: dict[str, Any], timeouts: Timeouts,
               state: StreamState, server: str,
               error_text: Callable[[httpx.Response], str]) -> CallMeasurement:
    """POST one streamed request and feed its lines to `state`: the measurement, with the
    call's ending in `outcome` (never raises for a failed call). `server` names the server
    in an error ("the Ollama server"); `error_text` reads an error status's body."""
    first_wait = httpx.Timeout(timeouts.first_token_s, connect=timeouts.connect_s)
    headers_in = False
    try:
        with client.stream("POST", path, json=body, timeout=first_wait) as response:
            headers_in = True
            if response.is_error:
                response.read()
                raise status_failure(response, error_text(response), timeouts)
            response.request.extensions["timeout"] = httpx.Timeout(
                timeouts.between_chunks_s, connect=timeouts.connect_s).as_dict()
            for line in response.iter_lines():
                state.line(line, time.perf_counter_ns())
        state.finish()
    except Failure as failure:
        return state.measurement(failure)
    except httpx.HTTPError as exc:
        return state.measurement(transport_failure(exc, state.chunks, headers_in, timeouts,
                                                   f"{server} at {shown_url(client)}"))
    return state.measurement(None)


def status_failure(response: httpx.Response, text: str, timeouts: Timeouts) -> Failure:
    """An error status as an HTTP_ERROR ending; a busy one's Retry-After, bounded, says how
    long the next try waits (and the text says so)."""
    status = response.status_code
    asked_s = retry_after_s(response.headers.get("retry-after")) \
        if status in BUSY_STATUSES else None
    if asked_s is None:
        return Failure(HTTP_ERROR, f"HTTP {status}: {text}", status)
    wait_s = min(asked_s, timeouts.retry_after_max_s)
    bound = (f", bounded by run.retry_after_max_s ({timeouts.retry_after_max_s:g} s)"
             if wait_s < asked_s else "")
    return Failure(HTTP_ERROR, f"HTTP {status}: {text}; Retry-After {asked_s:g} s: a retry "
                               f"waits {wait_s:g} s{bound}", status, wait_s)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds from now: delay-seconds or an HTTP date (a past date:
    0); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def transport_failure(exc: httpx.HTTPError, chunks: int, headers_in: bool,
                      timeouts: Timeouts, where: str) -> Failure:
    """A transport error as a typed ending: unreachable, first-token timeout, stall, drop."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Failure(UNREACHABLE, f"cannot reach {where}: {one_line(exc)}")
    if isinstance(exc, httpx.ReadTimeout) and not headers_in:
        return Failure(FIRST_TOKEN_TIMEOUT, f"no first token within "
                                            f"{timeouts.first_token_s:g} s")
    if isinstance(exc, httpx.ReadTimeout):
        return Failure(STALLED, f"stream stalled: no data for {timeouts.between_chunks_s:g} s "
                                f"after {chunks} chunks")
    if isinstance(exc, httpx.RemoteProtocolError):
        return Failure(DISCONNECTED, f"connection dropped mid-stream after {chunks} chunks")
    return Failure(DISCONNECTED, f"{type(exc).__name__} after {chunks} chunks: "
                                 f"{one_line(exc)}")


def shown_url(client: httpx.Client) -> str:
    """The client's server as it may be printed: without credentials."""
    return redact_url(str(client.base_url).rstrip("/"))


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>` from the environment variable named by the model config
    (the key itself is never a setting: settings reach params.yaml and git); none without
    one. The key is remembered as a secret, so no error text can carry it."""
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        return {}
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(f"model.api_key_env: ${api_key_env} holds a value that is not a "
                          "single token (whitespace or control characters)")
    remember(key)
    return {"Authorization": f"Bearer {key}"}


def one_line(value: object, limit: int = 300) -> str:
    """An error text fit for one JSONL field: first line, trimmed, credentials scrubbed."""
    lines = scrub(str(value)).strip().splitlines()
    text = lines[0] if lines else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
