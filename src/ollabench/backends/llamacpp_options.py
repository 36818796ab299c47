"""The embedded engine's options: Ollama's names mapped to llama.cpp's, and the defaults it
fills in so that a profile means on the embedded engine what it means on an Ollama server."""

from __future__ import annotations

from typing import Any

from ollabench.bench.provenance import physical_cores

# Options that need a new model instance, as in Ollama, with their llama.cpp names.
LOAD_OPTIONS = {
    "num_ctx": "n_ctx",
    "num_gpu": "n_gpu_layers",
    "num_thread": "n_threads",
    "num_batch": "n_batch",
    "use_mmap": "use_mmap",
    "use_mlock": "use_mlock",
    "repeat_last_n": "last_n_tokens_size",
    "flash_attention": "flash_attn",
    "kv_cache_type": "type_k",  # and type_v: both caches, as a GGML type (llama_params)
}
# llama-cpp-python's own defaults for the engine settings an Ollama server takes from its
# environment (options.ENGINE_OPTIONS); a quantized cache needs flash attention (llama.cpp
# refuses a quantized V cache without it, and Ollama applies OLLAMA_KV_CACHE_TYPE only then).
ENGINE_DEFAULTS = {"flash_attention": False, "kv_cache_type": "f16"}
GGML_CACHE_TYPES = {"f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0", "q4_0": "GGML_TYPE_Q4_0"}
# Per-call sampling options, with their llama.cpp names.
SAMPLING_OPTIONS = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat_mode",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "tfs_z": "tfs_z",
    "seed": "seed",
    "stop": "stop",
}
SUPPORTED_OPTIONS = frozenset(LOAD_OPTIONS) | frozenset(SAMPLING_OPTIONS) | {"num_keep"}


def ollama_defaults() -> dict[str, Any]:
    """The values this backend fills in for options a profile leaves out, so that `baseline`
    means what it means on Ollama. They are ollabench's assumption of an Ollama server's
    defaults (CPU or < 24 GiB of VRAM), not read from any server: env.json records them as
    `assumed_ollama_defaults`, and the Ollama backend records what its server reports."""
    return {
        "num_ctx": 4096, "num_batch": 512, "num_gpu": -1, "num_thread": physical_cores(),
        "num_keep": 4, "use_mmap": True, "use_mlock": False, "repeat_last_n": 64,
        "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
        "repeat_penalty": 1.1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "tfs_z": 1.0,
    }


def with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """The options a call runs with: Ollama's defaults, then the engine's, then the profile's."""
    return {**ollama_defaults(), **ENGINE_DEFAULTS, **options}


def llama_params(load: dict[str, Any]) -> dict[str, Any]:
    """Llama()'s keyword arguments for the load-time options (LOAD_OPTIONS)."""
    import llama_cpp

    params = {LOAD_OPTIONS[k]: value for k, value in load.items()}
    params["type_k"] = params["type_v"] = getattr(llama_cpp,
                                                  GGML_CACHE_TYPES[load["kv_cache_type"]])
    return params
