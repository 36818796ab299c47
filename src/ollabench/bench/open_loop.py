"""Runs one block open loop (run.arrivals): its tasks are due at their arrival times, and at
most `level` of them are in flight at once.

A task is one agent's whole workload (its slots share the `agent` number, the task's place in
arrival order). `level` workers take the tasks in arrival order: a free worker waits until
its next task is due, and a task due while every worker is busy starts late. Either way its
first call keeps the arrival time as `due_ms`, and `sent_ms` says when it went out, so the
client-side lag (sent - due) and every latency from due time show what a closed-loop client
would hide (coordinated omission). Within a task each call is due when the previous answer is
in, as an agent works (the backend's `_chat` moves the pace).

A resumed block (Ctrl-C, then a rerun) runs its remaining tasks on a new origin, the first of
them due at once and the rest at their scheduled gaps after it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby

from ollabench.bench.arrivals import arrival_offsets_ms
from ollabench.bench.concurrent import Pace, at_once, run_block
from ollabench.bench.schedule import Slot
from ollabench.config.schema import RunConfig

NS_PER_MS = 1_000_000


def run_group(group: list[Slot], call: Callable[[Slot, Pace], object], run: RunConfig) -> None:
    """A group of the schedule (concurrent.groups): a block's measured calls open loop when
    run.arrivals is set, anything else as concurrent.run_block runs it."""
    first = group[0]
    if not run.arrivals.enabled or first.phase != "measured":
        run_block(group, call)
        return
    offsets = arrival_offsets_ms(run.arrivals, run.seed, first.run, first.level)
    run_open_block(group, call, offsets, workers=first.level)


def run_open_block(slots: list[Slot], call: Callable[[Slot, Pace], object],
                   offsets_ms: list[float], workers: int) -> None:
    """Run the block's tasks (slots grouped by `agent`), task k due offsets_ms[k - 1] after
    the block starts (less the first remaining task's offset, on resume), on `workers`
    threads that take the tasks in arrival order."""
    tasks = [list(own) for _, own in groupby(sorted(slots, key=lambda s: (s.agent, s.seq)),
                                             key=lambda s: s.agent)]
    base_ms = min(offsets_ms[own[0].agent - 1] for own in tasks)
    origin_ns = time.perf_counter_ns()
    due = deque((own, origin_ns + round((offsets_ms[own[0].agent - 1] - base_ms) * NS_PER_MS))
                for own in tasks)
    lock = threading.Lock()

    def worker(stop: threading.Event) -> None:
        while not stop.is_set():
            with lock:
                if not due:
                    return
                own, due_ns = due.popleft()
            wait_ns = due_ns - time.perf_counter_ns()
            if wait_ns > 0 and stop.wait(wait_ns / 1e9):
                return
            pace = Pace(origin_ns, due_ns)
            for slot in own:
                if stop.is_set():
                    return
                call(slot, pace)

    at_once({f"worker-{n}": worker for n in range(1, min(workers, len(tasks)) + 1)})
