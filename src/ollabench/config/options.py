"""Model options: the names, types and ranges a profile may set, checked before the first
call. Ollama's request options, plus the engine settings that only the embedded backend takes
as options (an Ollama server reads them from its environment)."""

from __future__ import annotations

from typing import Any

from ollabench.errors import ConfigError

# Ollama's documented model options (docs/modelfile.md, api.md; the `ollama` client's Options),
# with the type and the smallest value each accepts. num_predict is not here on purpose: the
# output cap of each stage is a workload setting (workload.num_predict, run.max_output_tokens
# on top) so that both arms always get the same cap.
OLLAMA_OPTIONS: dict[str, tuple[type, float | None]] = {
    "num_ctx": (int, 1),
    "num_batch": (int, 1),
    "num_gpu": (int, -1),
    "main_gpu": (int, 0),
    "num_thread": (int, 1),
    "num_keep": (int, -1),
    "low_vram": (bool, None),
    "use_mmap": (bool, None),
    "use_mlock": (bool, None),
    "numa": (bool, None),
    "seed": (int, None),
    "temperature": (float, 0),
    "top_k": (int, 0),
    "top_p": (float, 0),
    "min_p": (float, 0),
    "typical_p": (float, 0),
    "repeat_last_n": (int, -1),
    "repeat_penalty": (float, 0),
    "presence_penalty": (float, None),
    "frequency_penalty": (float, None),
    "mirostat": (int, 0),
    "mirostat_tau": (float, 0),
    "mirostat_eta": (float, 0),
    "tfs_z": (float, 0),
    "penalize_newline": (bool, None),
    "stop": (list, None),
}
UNIT_INTERVAL_OPTIONS = frozenset({"top_p", "min_p", "typical_p"})
# Load-time engine settings that an Ollama server takes only from its own environment, never
# from a request (the variable named here): the embedded llama.cpp backend takes them as
# options, the Ollama backend refuses them. KV cache types are llama.cpp's (GGML) names.
ENGINE_OPTIONS = {"flash_attention": "OLLAMA_FLASH_ATTENTION",
                  "kv_cache_type": "OLLAMA_KV_CACHE_TYPE"}
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def validate_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Check option names, types and ranges; return them with ints widened to floats where due."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        key = f"{where}.{name}"
        if name == "num_predict":
            raise ConfigError(f"{key}: the output cap is the same for both arms; set "
                              "workload.num_predict or run.max_output_tokens")
        if name == "kv_cache_type":
            if value not in KV_CACHE_TYPES:
                raise ConfigError(f"{key}: must be one of {', '.join(KV_CACHE_TYPES)}, "
                                  f"got {value!r}")
            checked[name] = value
            continue
        if name not in OLLAMA_OPTIONS and name not in ENGINE_OPTIONS:
            allowed = ", ".join(sorted([*OLLAMA_OPTIONS, *ENGINE_OPTIONS]))
            raise ConfigError(f"{key}: unknown option; allowed options: {allowed}")
        kind, minimum = OLLAMA_OPTIONS.get(name, (bool, None))  # flash_attention: a bool
        checked[name] = _coerce(key, value, kind, minimum)
        if name in UNIT_INTERVAL_OPTIONS and checked[name] > 1:
            raise ConfigError(f"{key}: must be between 0 and 1, got {value!r}")
    return checked


def _coerce(key: str, value: Any, kind: type, minimum: float | None) -> Any:
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: must be a list of strings, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    numeric_ok = isinstance(value, int) or (kind is float and isinstance(value, float))
    if isinstance(value, bool) or not numeric_ok:
        raise ConfigError(f"{key}: must be {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}, got {value!r}")
    return kind(value)
