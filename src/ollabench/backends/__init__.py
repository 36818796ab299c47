"""Inference backends: a small interface (base.Backend) with three implementations:
embedded llama.cpp, Ollama's API, the OpenAI chat-completions API."""

from __future__ import annotations

from ollabench.backends.base import Backend
from ollabench.config.schema import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "make_backend"]


def make_backend(model: ModelConfig, run: RunConfig) -> Backend:
    """Import only the engine the config asks for (llama.cpp is heavy to load)."""
    if model.backend == "ollama":
        from ollabench.backends.ollama import OllamaBackend

        return OllamaBackend(model, run)
    if model.backend == "openai":
        from ollabench.backends.openai import OpenAIBackend

        return OpenAIBackend(model, run)
    from ollabench.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(model, run)
