"""What ollabench knows of an Ollama server outside a chat call: where it listens (model.host
or OLLAMA_HOST, read as Ollama reads it), how it names models, and what its /api/ps rows say
of a loaded model."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ollabench.redaction import remember_url

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
# /api/ps fields that change only when the server (re)loads the model.
LOAD_IDENTITY_FIELDS = ("digest", "size", "size_vram", "context_length")


def resolve_host(configured: str | None) -> str:
    """The server URL: model.host, else OLLAMA_HOST, else Ollama's default; with scheme and port.

    Follows Ollama's reading of OLLAMA_HOST: a bare host means http on port 11434.
    """
    raw = (configured or os.environ.get("OLLAMA_HOST") or "").strip().rstrip("/")
    remember_url(raw)  # a proxy's password in OLLAMA_HOST: scrubbed from every error text
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


def ps_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A loaded model as the provenance records it: sizes in bytes, the share in VRAM."""
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


def load_identity(entry: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What tells one load of the model from the next (None: not loaded)."""
    return None if entry is None else tuple(entry.get(f) for f in LOAD_IDENTITY_FIELDS)
