"""The test Ollama server in a process of its own, as a real server runs beside the client
(its own interpreter, so the client's threads never wait on its GIL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers.fake_ollama import URL_PREFIX
from tests.helpers.project import ROOT


@contextmanager
def fake_ollama_process(script: dict[str, Any], *args: str) -> Iterator[str]:
    """Start `python -m tests.helpers.fake_ollama --script SCRIPT ARGS...`; yield its URL."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_ollama", *args,
         "--script", json.dumps(script)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(URL_PREFIX), line
        yield line.removeprefix(URL_PREFIX).strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
