"""The embedded engine's contexts: one per concurrent agent.

One llama.cpp context serves one completion at a time. With N agents at once the engine
keeps N contexts, each a `Llama` over the same GGUF: the file is mmapped, so the OS page cache
holds its weights once and each context adds only its KV cache and compute buffers. Chosen
over one context with a FIFO queue because it is what a server with N slots does (N sequences
decoding at once), and by measurement: 2 agents on SmolLM2-135M gave 1.7-2.2x the queue's
total output rate (docs/metrics.md, Under load; taken on a shared 2-core VM at load average
~10, where more threads also win CPU time from other processes: not a clean figure).

A call takes the most recently freed context (its prompt cache is the agent's own when agents
do not interleave) and waits, in FIFO order, only when every context is busy: that wait is
the call's queue_ms.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Context:
    """One Llama instance and the load-time options it was created with."""

    llm: Any = None
    load_key: tuple[Any, ...] | None = None
    chat_format: Any = None

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm, self.load_key, self.chat_format = None, None, None


class ContextPool:
    """Contexts shared by the calls of concurrent agents (thread-safe)."""

    def __init__(self) -> None:
        self.contexts = [Context()]
        self._free = [self.contexts[0]]  # a stack: the most recently freed on top
        self._waiting: deque[object] = deque()  # tickets of calls waiting, oldest first
        self._changed = threading.Condition()

    def grow(self, count: int) -> list[Context]:
        """At least `count` contexts; the ones added (unloaded)."""
        with self._changed:
            added = [Context() for _ in range(count - len(self.contexts))]
            self.contexts.extend(added)
            self._free.extend(added)
            self._changed.notify_all()
        return added

    def acquire(self) -> Context:
        """A free context, waiting first come, first served while all are busy."""
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            while not self._free or self._waiting[0] is not ticket:
                self._changed.wait()
            self._waiting.popleft()
            context = self._free.pop()
            self._changed.notify_all()  # the next in line may find another free context
            return context

    def release(self, context: Context) -> None:
        with self._changed:
            self._free.append(context)
            self._changed.notify_all()

    def close(self) -> None:
        """Free every context's model (the pool keeps its size; a call reloads)."""
        with self._changed:
            for context in self.contexts:
                context.close()
