"""A real OpenAI-compatible inference server for the tests: llama-cpp-python's own
(`python -m llama_cpp.server`, its [server] extra's deps installed by `make setup`) on the
shipped SmolLM2 GGUF, on 127.0.0.1 behind an API key.

Started with `--interrupt_requests False` (by default a waiting request cuts the running
stream short) and without the environment variables that would override its flags (HOST,
PORT, API_KEY, N_CTX, SEED, MODEL: pydantic-settings reads them). It has no /health: it is
ready once /v1/models answers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ollabench.config.schema import bundled_gguf

ALIAS = "smollm2-served"
OVERRIDING_ENV = ("HOST", "PORT", "API_KEY", "N_CTX", "SEED", "MODEL")
START_TIMEOUT_S = 120.0  # about 1 s on an idle machine; the shared CI box can be slow


@dataclass(frozen=True)
class LlamaCppServer:
    url: str  # the API root, .../v1
    key: str
    alias: str
    gguf: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_cpp_server(log: Path, n_ctx: int = 2048) -> Iterator[LlamaCppServer]:
    """The server running until the block ends (then terminated, killed if it lingers),
    behind a key made fresh for it: a key written in this file would be found in every
    copy of the project by the tests that look for it."""
    port, gguf = _free_port(), bundled_gguf()
    key = f"sk-test-{secrets.token_hex(12)}"
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
           "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port),
           "--api_key", key, "--interrupt_requests", "False", "--n_ctx", str(n_ctx),
           "--verbose", "False"]
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, key, log)
        yield LlamaCppServer(url, key, ALIAS, gguf, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, key: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}):\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"},
                         timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"llama_cpp.server not ready within {START_TIMEOUT_S:g} s")
