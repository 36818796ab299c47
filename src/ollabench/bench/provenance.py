"""Where and with what a result was measured: written to env.json beside the raw calls."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ollabench.redaction import REDACTED, redact_url

PACKAGES = ("ollabench", "llama-cpp-python", "httpx", "dvc", "hydra-core",
            "omegaconf", "numpy", "pandas", "scipy", "mdutils", "matplotlib")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_cores_physical": physical_cores(),
        "cpu_cores_logical": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }


def physical_cores() -> int:
    """Ollama's default thread count: physical cores, not hyper-threads."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores = {
        (block.get("physical id"), block.get("core id"))
        for block in (dict(line.split(":", 1) for line in chunk.splitlines() if ":" in line)
                      for chunk in text.split("\n\n"))
        if block.get("core id") is not None
    }
    return len(cores) or os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """The commit the code and params came from, and whether the tree had local changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None}


SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")


def ollama_environment() -> dict[str, str]:
    """The client's OLLAMA_* variables (they change server behaviour), credentials redacted:
    credential-like names whole, and a URL's user info and secret query values (OLLAMA_HOST
    of a server behind an authenticating proxy)."""
    return {key: REDACTED if any(m in key for m in SECRET_MARKERS) else redact_url(value)
            for key, value in sorted(os.environ.items()) if key.startswith("OLLAMA_")}


def collect(backend_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": host_info(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": git_state(),
        "ollama_env": ollama_environment(),
        "backend": backend_info,
    }
