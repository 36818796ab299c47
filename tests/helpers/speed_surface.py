"""A fake Ollama server whose speed depends on the options of each request: a known speed
surface for `ollabench tune` (the best setting is known in advance).

`SurfaceOllama(surface)` answers every chat request with `surface(options)`, a Script, so a
test can make one num_batch/num_thread pair the fastest and another setting faster still
but truncating (a num_ctx below the prompt, on a server that cuts prompts silently)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tests.helpers.fake_ollama import Exchange, FakeOllama, Script

# 0.12.5 cuts an oversize prompt silently (no `truncate` field yet): a too-small num_ctx
# answers fast and only the records' truncation flag tells.
SILENT_CUT_VERSION = "0.12.5"
MODEL = "qwen2.5:7b"


class SurfaceOllama(FakeOllama):
    """FakeOllama with a Script per request from its options (the request is known to the
    handler thread from `record`, which runs before the script is chosen)."""

    def __init__(self, surface: Callable[[dict[str, Any]], Script],
                 version: str = SILENT_CUT_VERSION, jitter: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(version=version, models=(MODEL,))
        self.surface = surface
        self.jitter = jitter  # relative spread of token_ms, uniform, seeded
        self._rng = random.Random(seed)
        self._local = threading.local()

    def record(self, exchange: Exchange) -> None:
        self._local.options = (exchange.body or {}).get("options") or {} \
            if isinstance(exchange.body, dict) else {}
        super().record(exchange)

    def next_script(self) -> Script:
        script = self.surface(getattr(self._local, "options", {}))
        if not self.jitter:
            return script
        with self.lock:
            factor = 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return replace(script, token_ms=script.token_ms * factor)


def grid_surface(best: tuple[int, int], truncating_ctx: int, tokens: int = 12,
                 ttft_ms: float = 5.0) -> Callable[[dict[str, Any]], Script]:
    """token_ms falls with the distance to the best (num_batch, num_thread) pair: 1.0 there,
    +0.6 per step of num_batch (x2) or num_thread (+1) away; the baseline (nothing sent) is
    2.5; num_ctx <= truncating_ctx is fastest of all (0.4)."""
    import math

    def surface(options: dict[str, Any]) -> Script:
        if options.get("num_ctx", 4096) <= truncating_ctx:
            token_ms = 0.4
        elif "num_batch" not in options and "num_thread" not in options:
            token_ms = 2.5
        else:
            batch_steps = abs(math.log2(options.get("num_batch", 512) / best[0]))
            thread_steps = abs(options.get("num_thread", 1) - best[1])
            token_ms = 1.0 + 0.6 * (batch_steps + thread_steps)
        return Script(ttft_ms=ttft_ms, token_ms=token_ms, tokens=tokens)

    return surface
