"""What the scripted test servers share: the scripts they follow, one per chat request."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

S = TypeVar("S")


class ScriptQueue(Generic[S]):
    """Queued scripts for the next chat requests, one each; then `script` again. The server
    sets `script`, `lock` and `_queue`."""

    script: S
    lock: threading.Lock | threading.RLock
    _queue: deque[S]

    def queue(self, *scripts: S) -> None:
        """Scripts for the next chat requests, one each; then `script` again."""
        with self.lock:
            self._queue.extend(scripts)

    def next_script(self) -> S:
        with self.lock:
            return self._queue.popleft() if self._queue else self.script
