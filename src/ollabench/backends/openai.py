"""Any OpenAI-compatible server (llama-server, vLLM, SGLang, LM Studio, Ollama's /v1,
llama-cpp-python's server): one streamed /v1/chat/completions request per call.

Measured like every backend on the client's monotonic clock (TTFT, time to first byte,
end-to-end, gaps between tokens; openai_stream). What the server counts and times is taken
where it sends it, and each record says where its figures came from:
- output tokens: the server's `usage` (asked for with `stream_options.include_usage`), else
  the server's tokenizer run on the output after the call (llama-cpp-python's
  /extras/tokenize/count), else the chunks that carried output (`token_count_source`);
- prompt and decode times: llama-server's `timings`, else the decode time derived from the
  chunks' arrival (`timing_source` "client"; no prompt time then).
Which server it is (openai_dialects.identify) decides the option names sent, the options
refused, the `response_format` shape, whether tools are sent, and how a cold call avoids the
prefix cache. Tool calls stream as index-keyed fragments (openai_stream) and are recorded as
the canonical text every backend writes (tool_wire). The key is read from the environment
(model.api_key_env) and never recorded; the server URL is recorded without credentials.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from ollabench.backends.base import (
    UNARRANGED,
    Backend,
    CachePlan,
    Message,
    OutputFormat,
    Tools,
    with_nonce,
)
from ollabench.backends.http_stream import NS_PER_MS, Timeouts, auth_headers, one_line
from ollabench.backends.llamacpp_options import ollama_defaults
from ollabench.backends.openai_dialects import GENERIC, Dialect, identify
from ollabench.backends.openai_stream import SseStream, error_text, stream_completion
from ollabench.backends.tool_wire import openai_messages
from ollabench.config.schema import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable
from ollabench.records.schema import (
    CHUNKS,
    CLIENT_CLOCK,
    ENGINE_CLOCK,
    HTTP_ERROR,
    TOKENIZER,
    USAGE,
    CallMeasurement,
)
from ollabench.redaction import redact_headers, redact_url, remember_url

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
PROBE_TIMEOUT_S = 5.0
# Endpoints outside /v1 that tell servers apart and describe them (llama-server /props,
# vLLM /version, Ollama /api/version).
PROBES = ("/props", "/version", "/api/version")
# A 400 that says the prompt did not fit (OpenAI's code, llama-server's and vLLM's texts).
OVERSIZE_MARKERS = ("context_length_exceeded", "exceeds the available context size",
                    "maximum context length", "exceed_context_size_error")
COUNT_PATH = "/extras/tokenize/count"  # llama-cpp-python's server, outside /v1
RECORDED_HEADERS = ("server", "x-powered-by", "openai-version")


class OpenAIBackend(Backend):
    """Streams chat calls to an OpenAI-compatible server with httpx."""

    name = "openai"

    def __init__(self, model: ModelConfig, run: RunConfig) -> None:
        self.model = model
        self.url = (model.base_url or os.environ.get("OPENAI_BASE_URL")
                    or DEFAULT_BASE_URL).strip().rstrip("/")
        remember_url(self.url)  # credentials in OPENAI_BASE_URL: scrubbed from every text
        self.shown_url = redact_url(self.url)
        self.root = self.url.removesuffix("/v1")
        self.timeouts = Timeouts.of(run)
        headers = auth_headers(model.api_key_env)
        self.key_sent = bool(headers)
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(run.read_timeout_s,
                                                        connect=run.connect_timeout_s))
        self.dialect: Dialect = GENERIC
        self.identity: dict[str, Any] = {}
        self.counts_with_tokenizer = False
        self.defaults = ollama_defaults()

    # --- checks and metadata ---------------------------------------------------------------

    def preflight(self) -> None:
        """The server answers /v1/models with this key and serves the model; which server
        it is (its dialect) and how it describes itself."""
        try:
            response = self._http.get("/models")
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"cannot reach the OpenAI-compatible server at {self.shown_url}: "
                f"{one_line(exc)} (start it, or set model.base_url / OPENAI_BASE_URL)") from None
        if response.status_code in (401, 403):
            sent = (f"the key in ${self.model.api_key_env}" if self.key_sent
                    else f"no key (${self.model.api_key_env or 'model.api_key_env'} is unset)")
            raise BackendUnavailable(
                f"authentication failed at {self.shown_url} (HTTP {response.status_code}) "
                f"with {sent}: set the right key in that variable")
        if response.is_error:
            raise BackendUnavailable(f"the server at {self.shown_url} failed to list models: "
                                     f"HTTP {response.status_code}: {error_text(response)}")
        models = _json_object(response)
        served = [str(m.get("id")) for m in models.get("data") or [] if isinstance(m, dict)]
        if self.model.name not in served:
            raise BackendUnavailable(
                f"model '{self.model.name}' is not served at {self.shown_url}; it serves: "
                f"{', '.join(served) or 'nothing'} (set model.name)")
        probes = {path: self._probe(path) for path in PROBES}
        self.dialect = identify(models, probes)
        self.counts_with_tokenizer = self.dialect.server == "llama-cpp-python"
        self.identity = _identity(models, probes, self.model.name, response.headers)

    def validate_options(self, options: dict[str, Any], where: str) -> None:
        self.dialect.check(options, where)

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as sent: the profile's over Ollama's defaults of the sampling options
        this server takes (openai_dialects.FILLED)."""
        return self.dialect.filled(options, self.defaults)

    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return False  # no chat request changes what these servers have loaded

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "host": self.shown_url,
            "server": self.dialect.server,
            "server_version": self.identity.get("version"),
            "model": {"name": self.model.name, **self.identity.get("model", {})},
            "identity": self.identity,
            "key_sent": self.key_sent,
            "cache_control": self.dialect.cold_cache,
            "cache_note": self.dialect.cache_note or None,
            "token_counting": "usage, else " + (TOKENIZER if self.counts_with_tokenizer
                                                else CHUNKS),
            "client_versions": {"httpx": httpx.__version__},
        }

    # --- calls -----------------------------------------------------------------------------

    def refusal(self, tools: Tools | None,
                output_format: OutputFormat | None) -> tuple[str, str] | None:
        """Tools on a server that would not return calls (openai_dialects): refused, not
        dropped. Output formats map to `response_format` on every known server."""
        if tools and self.dialect.tools:
            return "tools", f"a {self.dialect.server} server cannot: {self.dialect.tools}"
        return None

    def chat(self, messages: list[Message], options: dict[str, Any],
             cache: CachePlan = UNARRANGED, tools: Tools | None = None,
             output_format: OutputFormat | None = None) -> CallMeasurement:
        sampling = {k: v for k, v in options.items() if k != "num_predict"}
        body: dict[str, Any] = {
            "model": self.model.name,
            "messages": openai_messages(with_nonce(messages, cache.nonce), bool(tools)),
            "stream": True, "stream_options": {"include_usage": True},
            **self.dialect.request_fields(sampling, options["num_predict"], self.defaults,
                                          cache.nonce)}
        if tools:
            body["tools"] = tools
        if output_format is not None:
            body["response_format"] = self.dialect.response_format(output_format)
        measurement, stream = stream_completion(self._http, body, self.timeouts)
        measurement.nonce = cache.nonce
        measurement.engine_version = self.identity.get("version")
        measurement.cache_state = cache.state
        measurement.cache_controlled = cache.state is not None
        measurement.reload_expected = False
        if measurement.outcome == HTTP_ERROR and measurement.http_status == 400:
            oversize = any(m in (measurement.error or "") for m in OVERSIZE_MARKERS)
            measurement.truncated = True if oversize else None
        if measurement.error is None:
            self._counts(measurement, stream)
        return measurement

    def close(self) -> None:
        self._http.close()

    # --- internals -------------------------------------------------------------------------

    def _counts(self, measurement: CallMeasurement, stream: SseStream) -> None:
        """Token counts and server timings of a finished call, each labelled by source."""
        usage, timings = stream.usage or {}, stream.timings or {}
        if usage.get("completion_tokens") is not None:
            measurement.output_tokens = int(usage["completion_tokens"])
            measurement.prompt_tokens = usage.get("prompt_tokens")
            details = usage.get("prompt_tokens_details") or {}
            measurement.prompt_cached_tokens = details.get("cached_tokens")
            measurement.token_count_source = USAGE
        else:
            counted = self._tokenizer_count(measurement.output)
            measurement.output_tokens = len(stream.token_ns) if counted is None else counted
            measurement.token_count_source = CHUNKS if counted is None else TOKENIZER
        if timings.get("predicted_ms") is not None:  # llama-server, on the last chunk
            measurement.eval_ms = float(timings["predicted_ms"])
            prompt_ms = timings.get("prompt_ms")
            measurement.prompt_eval_ms = None if prompt_ms is None else float(prompt_ms)
            measurement.prompt_eval_tokens = timings.get("prompt_n")
            measurement.prompt_cached_tokens = timings.get("cache_n")
            measurement.timing_source = ENGINE_CLOCK
        elif len(stream.token_ns) >= 2:
            # All output chunks at their mean gap: first to last, plus one gap.
            n = len(stream.token_ns)
            span_ms = (stream.token_ns[-1] - stream.token_ns[0]) / NS_PER_MS
            measurement.eval_ms = span_ms * n / (n - 1)
            measurement.timing_source = CLIENT_CLOCK

    def _tokenizer_count(self, text: str) -> int | None:
        """The output's tokens by the served model's own tokenizer, outside the call's
        clocks (None where the server has no such endpoint or it fails)."""
        if not self.counts_with_tokenizer or not text:
            return None
        try:
            response = self._http.post(f"{self.root}{COUNT_PATH}",
                                       json={"input": text, "model": self.model.name})
            count = response.json().get("count") if response.is_success else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return count if isinstance(count, int) else None

    def _probe(self, path: str) -> dict[str, Any]:
        """A describing endpoint's JSON object, {} where the server has none."""
        try:
            response = self._http.get(f"{self.root}{path}", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return {}
        return _json_object(response) if response.is_success else {}


def _identity(models: dict[str, Any], probes: dict[str, Any], name: str,
              headers: httpx.Headers) -> dict[str, Any]:
    """What the server says of itself and of the model, for env.json (no credentials)."""
    entry = next((m for m in models.get("data") or []
                  if isinstance(m, dict) and m.get("id") == name), {})
    props = probes.get("/props") or {}
    settings = props.get("default_generation_settings") or {}
    version = ((probes.get("/version") or {}).get("version")
               or (probes.get("/api/version") or {}).get("version") or props.get("build_info"))
    shown = {k: v for k, v in headers.items() if k.lower() in RECORDED_HEADERS}
    return {
        "version": version,
        "model": {"id": entry.get("id"), "owned_by": entry.get("owned_by"),
                  "root": entry.get("root"), "max_model_len": entry.get("max_model_len"),
                  "model_path": props.get("model_path"), "n_ctx": settings.get("n_ctx"),
                  "digest": None},
        "total_slots": props.get("total_slots"),
        "headers": redact_headers(shown),
        "endpoints": sorted(path for path, data in probes.items() if data),
    }


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
