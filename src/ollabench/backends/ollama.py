"""The Ollama backend: one streamed /api/chat request per call, timed on both sides.

Ollama has no server-side time to first token, so TTFT and the gaps between tokens are taken
here on the client's monotonic clock (`time.perf_counter_ns`); load, prompt and decode times
come from the server's final chunk (integer nanoseconds). A failed call is returned as a
measurement with `error` set, never raised, so the runner records it and retries.

`think` and `keep_alive` are always sent, so a server-side default (a thinking model that
thinks unless told otherwise, OLLAMA_KEEP_ALIVE) cannot change what is measured. When the
model config leaves them null the backend sends think=false and keep_alive="5m" (Ollama's
documented default, sent explicitly). docs/metrics.md defines every recorded field.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from datetime import datetime, timezone
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
from pydantic import ConfigDict

from ollabench.backends.base import Backend, Message, record_token_gaps
from ollabench.config import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable
from ollabench.loads import is_model_load
from ollabench.records import CallMeasurement

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
DEFAULT_THINK = False
DEFAULT_KEEP_ALIVE = "5m"
NS_PER_MS = 1_000_000

# The warm level of load_ms (see ollabench.loads) is the median of the last WARM_WINDOW calls
# that paid no load.
WARM_WINDOW = 50
# /api/ps fields that change only when the server (re)loads the model.
LOAD_IDENTITY_FIELDS = ("digest", "size", "size_vram", "context_length")
# What a failed call can raise through the client: HTTP errors and error lines (ResponseError),
# transport failures (httpx), a refused connection (ConnectionError), a malformed line (not
# JSON: json.JSONDecodeError, a ValueError; JSON but not an object: AttributeError or
# TypeError inside the client; an object of the wrong shape: pydantic's ValidationError, a
# ValueError).
CALL_FAILURES = (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError,
                 AttributeError, TypeError)
MALFORMED_LINE = (ValueError, AttributeError, TypeError)


class _ChatChunk(ollama.ChatResponse):
    """A streamed chat chunk that keeps fields the installed client does not declare.

    The client's response models drop unknown keys, and prompt_eval_cached_count (sent by
    newer servers) is one of them: losing it would turn "cached" into "unknown".
    """

    model_config = ConfigDict(extra="allow")


class OllamaBackend(Backend):
    """Streams chat calls to an Ollama server through the official `ollama` client."""

    name = "ollama"

    def __init__(self, model: ModelConfig, run: RunConfig) -> None:
        self.model = model
        self.model_name = tagged(model.name)
        self.url = resolve_host(model.host)
        self.think = DEFAULT_THINK if model.think is None else model.think
        self.keep_alive = DEFAULT_KEEP_ALIVE if model.keep_alive is None else model.keep_alive
        self.read_timeout_s = run.read_timeout_s
        timeout = httpx.Timeout(run.read_timeout_s, connect=run.connect_timeout_s)
        self._client = ollama.Client(host=self.url, timeout=timeout)
        # Metadata endpoints are read as raw JSON so no field is dropped by a client model.
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._warm_loads_ms: deque[float] = deque(maxlen=WARM_WINDOW)
        self._last_ps_entry: dict[str, Any] | None = None  # the model's /api/ps entry ...
        self._last_ps_known = False  # ... and whether it reflects the server (after a call)

    # --- checks and metadata ---------------------------------------------------------------

    def preflight(self) -> None:
        try:
            tags = self._get_json("GET", "/api/tags")
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise BackendUnavailable(
                f"cannot reach the Ollama server at {self.url}: start it with `ollama serve` "
                "(or set OLLAMA_HOST / model.host)") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendUnavailable(
                f"the Ollama server at {self.url} failed to list models: {one_line(exc)}"
            ) from None
        if self._entry_for_model(tags) is None:
            raise BackendUnavailable(
                f"model '{self.model.name}' is not on the server at {self.url}: "
                f"run `ollama pull {self.model.name}`")

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as sent. The server fills the rest from the model's Modelfile
        (provenance()["server_parameters"]) and its built-in defaults, which it does not
        report per call; the context it chose is recorded per call as num_ctx."""
        return dict(options)

    def provenance(self) -> dict[str, Any]:
        version = self._json_or_error("GET", "/api/version")
        tags = self._json_or_error("GET", "/api/tags")
        show = self._json_or_error("POST", "/api/show", {"model": self.model_name})
        listed = self._entry_for_model(tags) or {}
        details = show.get("details") or listed.get("details") or {}
        return {
            "backend": self.name,
            "host": self.url,
            "server_version": version.get("version"),
            "client_versions": {pkg: _package_version(pkg) for pkg in ("ollama", "httpx")},
            "model": {
                "name": self.model_name,
                "digest": listed.get("digest"),
                "size_bytes": listed.get("size"),
                "format": details.get("format"),
                "family": details.get("family"),
                "parameter_size": details.get("parameter_size"),
                "quantization_level": details.get("quantization_level"),
            },
            "server_parameters": parse_parameters(show.get("parameters") or ""),
            "request_fields": {"think": self.think, "keep_alive": self.keep_alive},
            "ps": self.ps_snapshot(),
            "errors": [e["error"] for e in (version, tags, show) if "error" in e],
        }

    def ps_snapshot(self) -> dict[str, Any]:
        """The server's /api/ps now: which models are loaded, how much of each sits in VRAM,
        the context each runs with and when it expires. Never raises: a failure is recorded."""
        taken_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        data = self._json_or_error("GET", "/api/ps")
        if "error" in data:
            return {"taken_at": taken_at, "models": [], "error": data["error"]}
        return {"taken_at": taken_at, "models": [_ps_row(m) for m in data.get("models") or []]}

    def snapshot(self) -> dict[str, Any]:
        return self.ps_snapshot()

    # --- calls -----------------------------------------------------------------------------

    def chat(self, messages: list[Message], options: dict[str, Any]) -> CallMeasurement:
        stream = _StreamTimes()
        body = {"model": self.model_name, "messages": messages, "stream": True,
                "think": self.think, "keep_alive": self.keep_alive, "options": options}
        # The client's public chat() parses chunks into a model that drops
        # prompt_eval_cached_count, so its request helper is given _ChatChunk instead.
        chunks = self._client._request(_ChatChunk, "POST", "/api/chat", json=body, stream=True)
        stream.started_ns = time.perf_counter_ns()  # the request goes out on the first next()
        error = None
        while True:
            try:  # only the client's work is guarded: a bug in this module still raises
                chunk = next(chunks)
            except StopIteration:
                break
            except CALL_FAILURES as exc:
                error = self._describe_failure(exc, stream.chunks)
                break
            stream.add(chunk, time.perf_counter_ns())
        if error is None and stream.final is None:
            error = f"stream ended without a final chunk after {stream.chunks} chunks"
        measurement = stream.measurement(error)
        if stream.final is not None and error is None:
            self._complete(measurement, stream.final, options)
        return measurement

    def unload(self) -> None:
        """Unload the model (an empty chat with keep_alive 0) so the next call loads it cold."""
        try:
            self._client.chat(model=self.model_name, messages=[], keep_alive=0)
        except CALL_FAILURES as exc:
            raise BackendUnavailable(
                f"could not unload '{self.model_name}' from {self.url}: {one_line(exc)}"
            ) from None
        self._last_ps_entry, self._last_ps_known = None, True

    def close(self) -> None:
        self._client.close()
        self._http.close()

    # --- internals -------------------------------------------------------------------------

    def _complete(self, measurement: CallMeasurement, final: _ChatChunk,
                  options: dict[str, Any]) -> None:
        """Server figures of a finished call, its context, truncation and reload flags."""
        measurement.load_ms = ns_to_ms(final.load_duration)
        measurement.prompt_eval_ms = ns_to_ms(final.prompt_eval_duration)
        measurement.eval_ms = ns_to_ms(final.eval_duration)
        measurement.total_ms = ns_to_ms(final.total_duration)
        measurement.prompt_tokens = final.prompt_eval_count
        measurement.prompt_cached_tokens = getattr(final, "prompt_eval_cached_count", None)
        measurement.output_tokens = final.eval_count
        measurement.done_reason = final.done_reason

        ps_known, ps_entry = self._ps_entry()
        measurement.num_ctx = options.get("num_ctx") or (ps_entry or {}).get("context_length")
        if measurement.num_ctx is not None and measurement.prompt_tokens is not None:
            measurement.truncated = measurement.prompt_tokens >= measurement.num_ctx
        measurement.reloaded = self._judge_reload(measurement.load_ms, ps_known, ps_entry)
        self._last_ps_known, self._last_ps_entry = ps_known, ps_entry

    def _judge_reload(self, load_ms: float | None, ps_known: bool,
                      ps_entry: dict[str, Any] | None) -> bool | None:
        """True when this call paid a model load: its load_ms is far above the warm level, or
        /api/ps shows the model was not loaded before it or is loaded differently after it."""
        by_ps = None
        if ps_known and self._last_ps_known:
            by_ps = _load_identity(ps_entry) != _load_identity(self._last_ps_entry)
        by_load = None
        if load_ms is not None:
            warm_ms = statistics.median(self._warm_loads_ms) if self._warm_loads_ms else 0.0
            by_load = bool(is_model_load(load_ms, warm_ms))
        if by_ps is None and by_load is None:
            return None
        reloaded = bool(by_ps or by_load)
        if not reloaded and load_ms is not None:
            self._warm_loads_ms.append(load_ms)
        return reloaded

    def _ps_entry(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether /api/ps answered, this model's entry or None when it is not loaded)."""
        data = self._json_or_error("GET", "/api/ps")
        return "error" not in data, self._entry_for_model(data)

    def _entry_for_model(self, listing: dict[str, Any]) -> dict[str, Any] | None:
        """This model's entry in an /api/tags or /api/ps listing (names compared with tags)."""
        for entry in listing.get("models") or []:
            if self.model_name in (tagged(entry.get("model", "")), tagged(entry.get("name", ""))):
                return entry
        return None

    def _describe_failure(self, exc: Exception, chunks: int) -> str:
        """One line for calls.jsonl saying what broke and how far the stream got."""
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == -1:
                return f"server error mid-stream after {chunks} chunks: {one_line(exc.error)}"
            return f"HTTP {exc.status_code}: {one_line(exc.error)}"
        if isinstance(exc, httpx.ReadTimeout):
            return (f"stream stalled: no data for {self.read_timeout_s:.1f} s "
                    f"after {chunks} chunks")
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"connection dropped mid-stream after {chunks} chunks"
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)):
            return f"cannot reach the Ollama server at {self.url}: {one_line(exc)}"
        if isinstance(exc, MALFORMED_LINE):
            return f"malformed stream line after {chunks} chunks: {one_line(exc)}"
        return f"{type(exc).__name__} after {chunks} chunks: {one_line(exc)}"

    def _get_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def _json_or_error(self, method: str, path: str,
                       body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A metadata endpoint's JSON object, or {"error": ...} (recorded, never raised)."""
        try:
            data = self._get_json(method, path, body)
        except httpx.HTTPStatusError as exc:
            return {"error": f"{path}: HTTP {exc.response.status_code}: "
                             f"{one_line(exc.response.text)}"}
        except (httpx.HTTPError, ValueError) as exc:
            return {"error": f"{path}: {one_line(exc)}"}
        return data if isinstance(data, dict) else {"error": f"{path}: not a JSON object"}


class _StreamTimes:
    """Client timestamps of one stream and what its chunks carried."""

    def __init__(self) -> None:
        self.started_ns = 0
        self.chunks = 0
        self.token_ns: list[int] = []  # arrival of each chunk with non-empty text
        self.first_token_thinking: bool | None = None
        self.content: list[str] = []
        self.final: _ChatChunk | None = None
        self.final_ns: int | None = None

    def add(self, chunk: _ChatChunk, now_ns: int) -> None:
        self.chunks += 1
        thinking = chunk.message.thinking or ""
        content = chunk.message.content or ""
        if thinking or content:
            if not self.token_ns:
                self.first_token_thinking = bool(thinking)
            self.token_ns.append(now_ns)
            self.content.append(content)
        if chunk.done:
            self.final, self.final_ns = chunk, now_ns

    def measurement(self, error: str | None) -> CallMeasurement:
        measurement = CallMeasurement(
            ttft_ms=self._since_start_ms(self.token_ns[0] if self.token_ns else None),
            e2e_ms=self._since_start_ms(self.final_ns) if error is None else None,
            first_token_thinking=self.first_token_thinking,
            output="".join(self.content),
            error=error,
        )
        record_token_gaps(measurement, self.token_ns)
        return measurement

    def _since_start_ms(self, at_ns: int | None) -> float | None:
        return None if at_ns is None else (at_ns - self.started_ns) / NS_PER_MS


def resolve_host(configured: str | None) -> str:
    """The server URL: model.host, else OLLAMA_HOST, else Ollama's default; with scheme and port.

    Follows the client's reading of OLLAMA_HOST: a bare host means http on port 11434.
    """
    raw = (configured or os.environ.get("OLLAMA_HOST") or "").strip().rstrip("/")
    if not raw:
        return DEFAULT_HOST
    scheme, has_scheme, rest = raw.rpartition("://")
    parts = urlsplit(f"{scheme if has_scheme else 'http'}://{rest}")
    netloc = parts.netloc if not parts.netloc.startswith(":") else f"127.0.0.1{parts.netloc}"
    if parts.port is None:
        port = DEFAULT_PORT if not has_scheme else (443 if parts.scheme == "https" else 80)
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def tagged(name: str) -> str:
    """Ollama's full model name: a name without a tag means `:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def ns_to_ms(value_ns: int | None) -> float | None:
    return None if value_ns is None else value_ns / NS_PER_MS


def one_line(value: object, limit: int = 200) -> str:
    """An error text fit for one JSONL field: first line, trimmed."""
    lines = str(value).strip().splitlines()
    text = lines[0] if lines else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_parameters(text: str) -> dict[str, Any]:
    """/api/show `parameters` ("name value" lines; `stop` repeats) as a dict."""
    parsed: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        value = value.strip().strip('"')
        if key in parsed:
            previous = parsed[key]
            parsed[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            parsed[key] = value
    return parsed


def _ps_row(entry: dict[str, Any]) -> dict[str, Any]:
    size, size_vram = entry.get("size"), entry.get("size_vram")
    return {
        "name": entry.get("name") or entry.get("model"),
        "digest": entry.get("digest"),
        "size_bytes": size,
        "size_vram_bytes": size_vram,
        "vram_share": size_vram / size if size and size_vram is not None else None,
        "context_length": entry.get("context_length"),
        "expires_at": entry.get("expires_at"),
    }


def _load_identity(entry: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return None if entry is None else tuple(entry.get(f) for f in LOAD_IDENTITY_FIELDS)


def _package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
