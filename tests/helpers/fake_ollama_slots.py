"""The fake Ollama server's two waits under load, as Ollama v0.33.0-rc2 has them.

1. The load queue (server/sched.go, Scheduler.GetRunner): a request whose model is loaded and
   needs no reload goes straight to its runner (`useLoadedRunner`); any other is put on
   `pendingReqCh`, a channel of OLLAMA_MAX_QUEUE (512) entries, with a non-blocking send: a
   full channel answers ErrMaxQueue, which server/routes.go handleScheduleError turns into
   HTTP 503. A request stays pending until the scheduler has loaded its runner.
2. The slot wait (llm/llama_server.go, llamaServerRunner.Completion): `s.sem.Acquire(ctx, 1)`
   on a semaphore.Weighted of OLLAMA_NUM_PARALLEL (default 1 since v0.9.7), acquired after
   scheduling and held for the whole generation. golang.org/x/sync/semaphore serves waiters
   in FIFO order, and there is no bound on how many wait.

server/routes.go ChatHandler clocks total_duration from checkpointStart (the handler's start)
and load_duration up to checkpointLoaded (the runner scheduled): the slot wait falls in
total_duration only, never in load, prompt_eval or eval durations.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers.fake_ollama_model import Refusal

DEFAULT_NUM_PARALLEL = 1  # envconfig.NumParallel's default since v0.9.7
DEFAULT_MAX_QUEUE = 512  # envconfig.MaxQueue
# server/sched.go ErrMaxQueue (two spaces after the full stop, as upstream writes it)
MAX_QUEUE_ERROR = "server busy, please try again.  maximum pending requests exceeded"


class Slots:
    """NUM_PARALLEL generation slots, waited for first come, first served."""

    def __init__(self, parallel: int = DEFAULT_NUM_PARALLEL) -> None:
        self.parallel = parallel
        self.busy = 0
        self.most_busy = 0  # the largest number of generations at once
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @contextmanager
    def held(self) -> Iterator[int]:
        """Hold a slot for one generation; yields how long the request waited for it (ns)."""
        asked_ns = time.perf_counter_ns()
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            while self.busy >= self.parallel or self._waiting[0] is not ticket:
                self._changed.wait()
            self._waiting.popleft()
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
            self._changed.notify_all()
        try:
            yield time.perf_counter_ns() - asked_ns
        finally:
            with self._changed:
                self.busy -= 1
                self._changed.notify_all()


class LoadQueue:
    """The scheduler's pending requests: those waiting for a (re)load of their runner."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_queue = max_queue
        self.pending = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        """Put a request that needs a load on the queue, or refuse it as Ollama does."""
        with self._lock:
            if self.pending >= self.max_queue:
                raise Refusal(503, MAX_QUEUE_ERROR)
            self.pending += 1

    def leave(self) -> None:
        with self._lock:
            self.pending -= 1
