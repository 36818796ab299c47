"""What each OpenAI-compatible server makes of a request: the options it takes (under which
name), the ones it would ignore without a word (refused before the first call), the output
cap's field, and how its prompt cache is kept out of a cold call.

Profiles use Ollama's option names (config/options.py). Every sampling option is sent
explicitly, with Ollama's default where the profile sets none (llamacpp_options.ollama_defaults),
because the servers' own defaults differ (Ollama's /v1 forces temperature and top_p to 1.0
when they are omitted; llama-server and vLLM have theirs). Checked in each server's source:
llama.cpp tools/server/server.cpp and utils.hpp (params_from_json_cmpl), vLLM
entrypoints/openai/protocol.py (ChatCompletionRequest), Ollama openai/openai.go
(fromChatRequest), llama-cpp-python llama_cpp/server/types.py
(CreateChatCompletionRequest) and llama_chat_format.py (chat_completion_handler); see
../shared/notes/openai-compatible-facts.md.

Tools and output formats: the OpenAI fields (`tools`, `response_format` json_object or
json_schema) on every server that reads them (llama.cpp utils.hpp oaicompat_chat_params_parse;
vLLM protocol.py; Ollama openai.go fromChatRequest). llama-cpp-python's server hands `tools`
to the chat template only and returns calls only for a forced `tool_choice` (its default
handler; the tool-calling formats must be chosen when it starts): tools are refused there.
Its `response_format` reads only `json_object`, with the schema in its own `schema` key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ollabench.errors import ConfigError

# The OpenAI API's own sampling fields, taken by every server.
STANDARD = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
            "stop": "stop"}
# Settings of the loaded model: no chat request can change them on any of these servers.
LOAD_TIME = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep",
                       "low_vram", "use_mmap", "use_mlock", "numa", "flash_attention",
                       "kv_cache_type"})
# Sampling options this backend sends with Ollama's default when the profile sets none.
FILLED = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")

# How a cold call is kept from the server's prefix cache: a request field or the nonce alone.
CACHE_PROMPT_FALSE = "cache_prompt: false"
CACHE_SALT = "cache_salt"
NONCE_ONLY = "nonce"


@dataclass(frozen=True)
class Dialect:
    """One server's reading of a chat-completions request."""

    server: str
    names: dict[str, str]  # Ollama option -> request field
    max_tokens_field: str = "max_tokens"
    cold_cache: str = NONCE_ONLY
    cache_note: str = ""  # what the report says of the cache where it cannot be controlled
    extra: dict[str, Any] = field(default_factory=dict)  # sent with every request
    tools: str = ""  # why the server cannot honour `tools` ("": it can)
    schema_in_json_object: bool = False  # a schema goes in json_object's `schema` key

    def response_format(self, output_format: str | dict[str, Any]) -> dict[str, Any]:
        """The `response_format` field for Ollama's `format` ("json" or a JSON schema)."""
        if output_format == "json":
            return {"type": "json_object"}
        if self.schema_in_json_object:
            return {"type": "json_object", "schema": output_format}
        return {"type": "json_schema", "json_schema": {"name": "output",
                                                       "schema": output_format}}

    def filled(self, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        """The (checked) options over Ollama's defaults of the sampling options this server
        takes: what a call runs with, in Ollama's names."""
        return {**{k: defaults[k] for k in FILLED if k in defaults and k in self.names},
                **options}

    def request_fields(self, options: dict[str, Any], num_predict: int,
                       defaults: dict[str, Any], nonce: str | None) -> dict[str, Any]:
        """The request's sampling, cap and cache fields for these (checked) options."""
        sent = {self.names[k]: v for k, v in self.filled(options, defaults).items()
                if k in self.names}
        sent[self.max_tokens_field] = num_predict
        if nonce is not None and self.cold_cache == CACHE_PROMPT_FALSE:
            sent["cache_prompt"] = False
        elif nonce is not None and self.cold_cache == CACHE_SALT:
            sent["cache_salt"] = nonce
        return {**self.extra, **sent}

    def check(self, options: dict[str, Any], where: str) -> None:
        """Refuse, before the first call, an option this server would not apply."""
        for name in options:
            if name in LOAD_TIME:
                raise ConfigError(f"{where}.{name}: a setting of the loaded model, which a "
                                  f"{self.server} server takes only when it starts; set it "
                                  "there and remove it from the profile")
            if name not in self.names:
                allowed = ", ".join(sorted(self.names))
                raise ConfigError(f"{where}.{name}: a {self.server} server ignores it in a "
                                  f"chat-completions request; allowed: {allowed}")


_LLAMA_SAMPLING = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty",
                   "typical_p": "typical_p", "mirostat": "mirostat_mode",
                   "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta"}

DIALECTS = {
    # tools/server: n_predict/max_tokens; cache_prompt defaults to true; timings on the
    # last chunk.
    "llama-server": Dialect(
        "llama-server", {**STANDARD, **_LLAMA_SAMPLING, "repeat_last_n": "repeat_last_n",
                         "mirostat": "mirostat"},
        cold_cache=CACHE_PROMPT_FALSE),
    # max_tokens deprecated for max_completion_tokens; repetition_penalty; prefix caching
    # on by default, kept apart per request by cache_salt.
    "vllm": Dialect(
        "vLLM", {**STANDARD, "top_k": "top_k", "min_p": "min_p",
                 "repeat_penalty": "repetition_penalty"},
        max_tokens_field="max_completion_tokens", cold_cache=CACHE_SALT),
    # openai/openai.go maps only the OpenAI fields; num_ctx, top_k, min_p, repeat_penalty
    # cannot be set through /v1. Its runner reuses the longest cached prefix: the nonce
    # defeats it.
    "ollama": Dialect("Ollama /v1", dict(STANDARD)),
    # llama_cpp/server/types.py: max_completion_tokens is not read (no cap at all then);
    # the one model always reuses its KV prefix: the nonce defeats it.
    "llama-cpp-python": Dialect(
        "llama-cpp-python", {**STANDARD, "top_k": "top_k", "min_p": "min_p",
                             "repeat_penalty": "repeat_penalty", "typical_p": "typical_p",
                             "mirostat": "mirostat_mode", "mirostat_tau": "mirostat_tau",
                             "mirostat_eta": "mirostat_eta"},
        tools="llama-cpp-python's server passes tools to the chat template only and "
              "returns no tool calls unless one is forced (llama_chat_format.py "
              "chat_completion_handler); start it with a tool-calling chat_format",
        schema_in_json_object=True),
    # LM Studio, SGLang and any other: the OpenAI fields only; no cache control known.
    "openai-compatible": Dialect(
        "OpenAI-compatible", dict(STANDARD),
        cache_note="the server's prompt cache is not known; a per-call nonce opens each "
                   "cold prompt"),
}
GENERIC = DIALECTS["openai-compatible"]


def identify(models: dict[str, Any], probes: dict[str, Any]) -> Dialect:
    """The server's dialect from /v1/models (owned_by) and the endpoints only one kind of
    server answers (/props: llama-server; /version: vLLM; /api/version: Ollama)."""
    owners = {str(m.get("owned_by", "")) for m in models.get("data") or []
              if isinstance(m, dict)}
    if "default_generation_settings" in (probes.get("/props") or {}):
        return DIALECTS["llama-server"]
    if "vllm" in owners or "version" in (probes.get("/version") or {}):
        return DIALECTS["vllm"]
    if "version" in (probes.get("/api/version") or {}):
        return DIALECTS["ollama"]
    if owners == {"me"}:  # llama_cpp/server/app.py get_models: owned_by "me"
        return DIALECTS["llama-cpp-python"]
    return GENERIC
