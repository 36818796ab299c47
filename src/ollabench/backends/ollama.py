"""The Ollama backend: one streamed /api/chat request per call, timed on both sides.

Ollama has no server-side time to first token, so TTFT and the gaps between tokens are taken
on the client's monotonic clock (ollama_stream); load, prompt and decode times come from the
server's final chunk. Each record also says what ran: the effective context and batch, the
cache state, truncation and context shift, and whether a reload was expected from the
options sent (ollama_options) and observed. A failed call is returned, never raised.

`think` and `keep_alive` are always sent, so a server-side default (a thinking model that
thinks unless told otherwise, OLLAMA_KEEP_ALIVE) cannot change what is measured. When the
model config leaves them null the backend sends think=false and keep_alive="5m" (Ollama's
default, sent explicitly). docs/metrics.md defines every recorded field.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
from collections import deque
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import httpx

import ollabench.backends.ollama_options as rules
from ollabench.backends.base import (
    COLD,
    UNARRANGED,
    Backend,
    CachePlan,
    Message,
    OutputFormat,
    Tools,
    with_nonce,
)
from ollabench.backends.http_stream import Timeouts, auth_headers, one_line
from ollabench.backends.ollama_server import load_identity, ps_row, resolve_host, tagged
from ollabench.backends.ollama_stream import server_message, stream_chat
from ollabench.backends.tool_wire import ollama_messages
from ollabench.bench.loads import is_model_load
from ollabench.config.schema import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable
from ollabench.records.schema import (
    ENGINE_CLOCK,
    ENGINE_COUNT,
    HTTP_ERROR,
    UNREACHABLE,
    CallMeasurement,
)
from ollabench.redaction import redact_url

DEFAULT_THINK = False
DEFAULT_KEEP_ALIVE = "5m"
NS_PER_MS = 1_000_000

# The warm level of load_ms (see ollabench.bench.loads) is the median of the last WARM_WINDOW calls
# that paid no load.
WARM_WINDOW = 50
# The 400 texts of a prompt longer than the context with truncate:false: the runner's
# errorInputTooLong (0.12-0.29), llm/llama_server.go:completionPromptForRequest (0.30.9+),
# and llama-server's own refusal, passed on as it is (0.30+).
OVERSIZE_MARKERS = ("input length exceeds the context length",
                    "prompt is longer than the context length",
                    "exceeds the available context size")
# The few tokens a nonce of fixed width may differ by between calls (tokenizers that merge
# digits): below the longest count of a prompt by more than this, messages were dropped.
NONCE_SLACK_TOKENS = 4


class OllamaBackend(Backend):
    """Streams chat calls to an Ollama server with httpx (its public HTTP API only)."""

    name = "ollama"

    def __init__(self, model: ModelConfig, run: RunConfig) -> None:
        self.model = model
        self.model_name = tagged(model.name)
        self.url = resolve_host(model.host)  # with any credentials: for requests only
        self.shown_url = redact_url(self.url)  # for env.json, reports and error messages
        self.think = DEFAULT_THINK if model.think is None else model.think
        self.keep_alive = DEFAULT_KEEP_ALIVE if model.keep_alive is None else model.keep_alive
        self.timeouts = Timeouts.of(run)
        self._http = httpx.Client(base_url=self.url, headers=auth_headers(model.api_key_env),
                                  timeout=httpx.Timeout(run.read_timeout_s,
                                                        connect=run.connect_timeout_s))
        self.server: rules.ServerModel | None = None  # known after preflight()
        self.option_notes: dict[str, str] = {}
        self._gpu_asked = False  # a profile sets GPU layers (num_gpu other than 0)
        self._warm_loads_ms: deque[float] = deque(maxlen=WARM_WINDOW)
        self._last_ps_entry: dict[str, Any] | None = None  # the model's /api/ps entry ...
        self._last_ps_known = False  # ... and whether it reflects the server (after a call)
        self._runner_options: dict[str, Any] | None = None  # the last call's that loaded
        self._prompt_lengths: dict[str, int] = {}  # nonce-free prompt -> longest count seen
        self._state = threading.Lock()  # the above, shared by concurrent agents' calls

    # --- checks and metadata ---------------------------------------------------------------

    def preflight(self) -> None:
        """Server, model, version and the model's facts (/api/show), then the think value."""
        try:
            tags = self._get_json("GET", "/api/tags")
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise BackendUnavailable(
                f"cannot reach the Ollama server at {self.shown_url}: start it with `ollama serve` "
                "(or set OLLAMA_HOST / model.host)") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendUnavailable(
                f"the Ollama server at {self.shown_url} failed to list models: {one_line(exc)}"
            ) from None
        if self._entry_for_model(tags) is None:
            raise BackendUnavailable(
                f"model '{self.model.name}' is not on the server at {self.shown_url}: "
                f"run `ollama pull {self.model.name}`")
        version_text = self._json_or_error("GET", "/api/version").get("version")
        version = rules.parse_version(version_text)
        show = self._json_or_error("POST", "/api/show", {"model": self.model_name})
        if version is None or "error" in show:
            raise BackendUnavailable(
                f"the Ollama server at {self.shown_url} did not describe itself "
                f"(/api/version: {version_text!r}; {show.get('error', '/api/show: ok')})")
        self.server = rules.ServerModel.from_show(str(version_text), version, show)
        rules.check_think(self.think, self.server, self.model_name)
        self._last_ps_known, self._last_ps_entry = self._ps_entry()

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as sent. What the server made of them (context, batch) is recorded
        per call; the Modelfile's are in provenance()["server_parameters"]."""
        return dict(options)

    def validate_options(self, options: dict[str, Any], where: str) -> None:
        self.option_notes.update(rules.check_options(options, self._server(), where))
        self._gpu_asked = self._gpu_asked or options.get("num_gpu") not in (None, 0)

    def context_length(self, options: dict[str, Any]) -> int | None:
        """The scheduler's num_ctx for these options (sent, Modelfile, default; the vision
        minimum), capped at the training context as the runner caps it."""
        server = self._server()
        num_ctx = rules.runner_values(server, options)["num_ctx"]
        if num_ctx is None or not server.train_ctx:
            return num_ctx
        return min(num_ctx, server.train_ctx)

    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return rules.needs_reload(self._server(), old, new)

    def provenance(self) -> dict[str, Any]:
        """The server, the model and what the calls found, with the options that could not
        act: GPU layers on a server that held the model without VRAM (/api/ps size_vram 0
        after the last call)."""
        if self._gpu_asked and (self._last_ps_entry or {}).get("size_vram") == 0:
            self.option_notes["num_gpu"] = (
                "cannot act here: the server ran the model without a GPU (/api/ps size_vram 0)")
        version = self._json_or_error("GET", "/api/version")
        tags = self._json_or_error("GET", "/api/tags")
        show = self._json_or_error("POST", "/api/show", {"model": self.model_name})
        listed = self._entry_for_model(tags) or {}
        details = show.get("details") or listed.get("details") or {}
        server = self._server()
        engine, engine_why = rules.go_engine(server)
        return {
            "backend": self.name,
            "host": self.shown_url,
            "server_version": version.get("version"),
            "client_versions": {"httpx": _package_version("httpx")},
            "model": {
                "name": self.model_name,
                "digest": listed.get("digest"),
                "size_bytes": listed.get("size"),
                "format": details.get("format"),
                "family": details.get("family"),
                "parameter_size": details.get("parameter_size"),
                "quantization_level": details.get("quantization_level"),
                "architecture": server.architecture,
                "training_context": server.train_ctx,
                "capabilities": sorted(server.capabilities or ()),
                "projector": server.has_projector,
            },
            "go_engine": engine,
            "go_engine_reason": engine_why,
            "server_parameters": server.parameters,
            "request_fields": {"think": self.think, "keep_alive": self.keep_alive,
                               "truncate": False if self._sends_truncate() else None},
            "option_notes": dict(self.option_notes),
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
        return {"taken_at": taken_at, "models": [ps_row(m) for m in data.get("models") or []]}

    def snapshot(self) -> dict[str, Any]:
        return self.ps_snapshot()

    # --- calls -----------------------------------------------------------------------------

    def refusal(self, tools: Tools | None,
                output_format: OutputFormat | None) -> tuple[str, str] | None:
        """Tools on a model whose template has none: the server answers 400 (ollama
        server/routes.go `ChatHandler`, "does not support tools")."""
        capabilities = self._server().capabilities
        if tools and capabilities is not None and "tools" not in capabilities:
            return "tools", (f"model '{self.model_name}' does not support tools "
                             f"(capabilities: {', '.join(sorted(capabilities))})")
        return None

    def chat(self, messages: list[Message], options: dict[str, Any],
             cache: CachePlan = UNARRANGED, tools: Tools | None = None,
             output_format: OutputFormat | None = None) -> CallMeasurement:
        server = self._server()
        sent = with_nonce(messages, cache.nonce)
        body: dict[str, Any] = {
            "model": self.model_name, "messages": ollama_messages(sent) if tools else sent,
            "stream": True, "think": self.think, "keep_alive": self.keep_alive,
            "options": options}
        if tools:
            body["tools"] = tools
        if output_format is not None:
            body["format"] = output_format
        if self._sends_truncate():
            body["truncate"] = False  # an oversize prompt is refused (400), never cut
        with self._state:
            reload_expected = self._reload_expected(options)
        measurement, final = stream_chat(self._http, body, self.timeouts)
        measurement.nonce = cache.nonce
        measurement.engine_version = server.version_text
        measurement.reload_expected = reload_expected
        measurement.cache_state = cache.state
        measurement.cache_controlled = cache.state is not None
        if measurement.outcome == HTTP_ERROR and measurement.http_status == 400:
            oversize = any(m in (measurement.error or "") for m in OVERSIZE_MARKERS)
            measurement.truncated = True if oversize else None
        with self._state:  # concurrent agents' calls update what the server has loaded
            if measurement.outcome != UNREACHABLE:  # the scheduler saw these options
                self._runner_options = options
            if final is not None:
                self._complete(measurement, final, options, _prompt_key(messages))
        return measurement

    def unload(self) -> None:
        """Unload the model (an empty chat with keep_alive 0) so the next call loads it cold."""
        body = {"model": self.model_name, "messages": [], "keep_alive": 0, "stream": False}
        try:
            response = self._http.post("/api/chat", json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"could not unload '{self.model_name}' from {self.shown_url}: {one_line(exc)}"
            ) from None
        if response.is_error:
            raise BackendUnavailable(f"could not unload '{self.model_name}' from {self.shown_url}: "
                                     f"HTTP {response.status_code}: {server_message(response)}")
        self._last_ps_entry, self._last_ps_known = None, True
        self._runner_options = None

    def close(self) -> None:
        self._http.close()

    # --- internals -------------------------------------------------------------------------

    def _server(self) -> rules.ServerModel:
        if self.server is None:
            raise RuntimeError("OllamaBackend.preflight() must run first")
        return self.server

    def _sends_truncate(self) -> bool:
        return self._server().version >= rules.TRUNCATE_FIELD

    def _reload_expected(self, options: dict[str, Any]) -> bool | None:
        """True when the server must load the model for this call: it is not loaded, or a
        runner option changed (needsReload); None before the first call on a loaded model."""
        if self._last_ps_known and self._last_ps_entry is None:
            return True
        if self._runner_options is None:
            return None
        return rules.needs_reload(self._server(), self._runner_options, options)

    def _complete(self, measurement: CallMeasurement, final: dict[str, Any],
                  options: dict[str, Any], prompt_key: str) -> None:
        """Server figures of a finished call, what ran, truncation, shift and reload flags."""
        server = self._server()
        measurement.load_ms = ns_to_ms(final.get("load_duration"))
        measurement.prompt_eval_ms = ns_to_ms(final.get("prompt_eval_duration"))
        measurement.eval_ms = ns_to_ms(final.get("eval_duration"))
        measurement.total_ms = ns_to_ms(final.get("total_duration"))
        measurement.prompt_tokens = final.get("prompt_eval_count")
        measurement.output_tokens = final.get("eval_count")
        measurement.token_count_source, measurement.timing_source = ENGINE_COUNT, ENGINE_CLOCK
        measurement.done_reason = final.get("done_reason")
        if measurement.cache_state == COLD:
            # The nonce leaves only the template's first tokens to the cache: all but those
            # few are evaluated (0.12-0.29: the count is the whole prompt; 0.30.1+: cached +
            # evaluated).
            measurement.prompt_eval_tokens = measurement.prompt_tokens

        ps_known, ps_entry = self._ps_entry()
        measurement.num_ctx = rules.effective_num_ctx(
            server, (ps_entry or {}).get("context_length"))
        measurement.num_batch, measurement.num_batch_basis = rules.effective_num_batch(
            server, options, measurement.num_ctx)
        measurement.truncated = self._judge_truncation(measurement, prompt_key)
        if None not in (measurement.num_ctx, measurement.prompt_tokens,
                        measurement.output_tokens):
            measurement.context_shift = (measurement.prompt_tokens + measurement.output_tokens
                                         > measurement.num_ctx)
        measurement.reloaded = self._judge_reload(measurement.load_ms, ps_known, ps_entry)
        self._last_ps_known, self._last_ps_entry = ps_known, ps_entry

    def _judge_truncation(self, measurement: CallMeasurement, prompt_key: str) -> bool | None:
        """Whether the server cut the prompt of a call that succeeded.

        With truncate:false (0.12.6+) it would have refused an oversize prompt: False.
        Older servers (0.12.0-0.12.5) cut silently, to exactly num_ctx tokens, after dropping
        whole old messages (server/prompt.go:chatPrompt): a count of num_ctx, or one below the
        longest count seen for the same prompt (nonce aside), is a cut.
        """
        if self._sends_truncate():
            return False
        count, ctx = measurement.prompt_tokens, measurement.num_ctx
        if count is None or ctx is None:
            return None
        longest = self._prompt_lengths.get(prompt_key, 0)
        self._prompt_lengths[prompt_key] = max(longest, count)
        if count >= ctx or count < longest - NONCE_SLACK_TOKENS:
            return True
        # Below num_ctx, only dropped messages can have shortened it, and a prompt whose
        # earlier messages are all system messages has none to drop.
        return False if prompt_key.startswith("1:") else None

    def _judge_reload(self, load_ms: float | None, ps_known: bool,
                      ps_entry: dict[str, Any] | None) -> bool | None:
        """True when this call paid a model load: its load_ms is far above the warm level, or
        /api/ps shows the model was not loaded before it or is loaded differently after it."""
        by_ps = None
        if ps_known and self._last_ps_known:
            by_ps = load_identity(ps_entry) != load_identity(self._last_ps_entry)
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


def _prompt_key(messages: list[Message]) -> str:
    """Identifies a prompt without its nonce. It starts with "1:" when the server's message
    dropping cannot apply (only system messages before the last one are kept anyway)."""
    droppable = any(m.get("role") != "system" for m in messages[:-1])
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    return f"{'n' if droppable else '1'}:{digest}"


def ns_to_ms(value_ns: int | None) -> float | None:
    return None if value_ns is None else value_ns / NS_PER_MS


def _package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
