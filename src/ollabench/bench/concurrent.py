"""Runs one block of the schedule: its agents at once, closed loop (run.concurrency).

An agent sends its next call when its previous answer is in, as agents work; N agents run on
N threads. Threads, not asyncio: the backends' calls are blocking (httpx's sync client is
thread-safe, llama.cpp's ctypes calls release the GIL), and each backend clocks its own call
on the monotonic clock inside the thread that makes it, so the executor's cost shows only
between a call being due and being sent (`due_ms`, `sent_ms`), which the records keep.

Ctrl-C (or any failure of one agent) stops every agent after its current call: the calls
already journaled stay, and a rerun resumes the block's remaining calls at the same level.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby

from ollabench.bench.schedule import Slot
from ollabench.records.schema import (
    OK,
    QUEUE_SERVER_RESIDUAL,
    QUEUE_SERVER_RESIDUAL_RAW,
    CallMeasurement,
    CallRecord,
)

JOIN_POLL_S = 0.2  # the main thread wakes this often, so Ctrl-C reaches it while agents run


@dataclass
class Pace:
    """One agent's clock in its block: when its next call is due (ns, monotonic)."""

    origin_ns: int
    due_ns: int

    def ms(self, at_ns: int) -> float:
        """ms after the block started."""
        return (at_ns - self.origin_ns) / 1e6


@dataclass
class InFlight:
    """This arm's calls in flight (only one arm's block runs at a time)."""

    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> int:
        """Count a call being sent; the count with it."""
        with self._lock:
            self.count += 1
            return self.count

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def groups(slots: list[Slot]) -> Iterator[list[Slot]]:
    """Consecutive slots of one block and kind: a switch's warm-ups, then the block's
    measured calls (all its agents')."""
    for _, group in groupby(slots, key=lambda s: (s.block, s.phase == "measured")):
        yield list(group)


def run_block(slots: list[Slot], call: Callable[[Slot, Pace], object]) -> None:
    """Run a block's slots: each agent's in schedule order, the agents at once (one thread
    each; a lone agent runs on the calling thread, as the sequential bench always has)."""
    origin_ns = time.perf_counter_ns()
    agents = [list(group) for _, group in groupby(sorted(slots, key=lambda s: (s.agent, s.seq)),
                                                  key=lambda s: s.agent)]
    if len(agents) == 1:
        pace = Pace(origin_ns, origin_ns)
        for slot in agents[0]:
            call(slot, pace)
        return

    def agent_loop(own: list[Slot], stop: threading.Event) -> None:
        pace = Pace(origin_ns, origin_ns)
        for slot in own:
            if stop.is_set():
                return
            call(slot, pace)

    at_once({f"agent-{own[0].agent}": partial(agent_loop, own) for own in agents})


def at_once(loops: dict[str, Callable[[threading.Event], None]]) -> None:
    """Run each loop on a thread of its name, handing it the block's stop event: the first
    failure (or Ctrl-C in the main thread) sets it, and every loop ends after its current
    call (journaled); the failure is raised here."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def guarded(loop: Callable[[threading.Event], None]) -> None:
        try:
            loop(stop)
        except BaseException as exc:  # handed to the main thread below
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(loop,), daemon=True, name=name)
               for name, loop in loops.items()]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(JOIN_POLL_S)
    except BaseException:
        stop.set()  # Ctrl-C: every loop ends after its current call (journaled)
        for thread in threads:
            thread.join()
        raise
    if failures:
        raise failures[0]


def server_residual_ms(m: CallMeasurement) -> float | None:
    """An Ollama call's time the server's durations leave unexplained: total - load -
    prompt_eval - eval. load_duration covers the scheduler's wait and any load; the runner's
    prompt and eval timings exclude the slot wait (concurrency-facts.md), so this holds the
    slot wait plus template and HTTP overhead."""
    parts = (m.total_ms, m.load_ms, m.prompt_eval_ms, m.eval_ms)
    if any(p is None for p in parts):
        return None
    total, load, prompt_eval, evaluation = parts
    return total - load - prompt_eval - evaluation  # type: ignore[operator]


class SequentialOverhead:
    """Each arm's level-1 residuals, gathered as calls are journaled: what a call's residual
    holds besides a slot wait (one agent never waits for a slot)."""

    def __init__(self) -> None:
        self._residuals_ms: dict[str, list[float]] = {}
        self._lock = threading.Lock()  # agents journal and derive from their threads

    def add(self, record: CallRecord) -> None:
        if record.concurrency == 1 and record.phase == "measured" and record.outcome == OK:
            residual = server_residual_ms(record)
            if residual is not None:
                with self._lock:
                    self._residuals_ms.setdefault(record.arm, []).append(residual)

    def derive_queue_ms(self, m: CallMeasurement, arm: str) -> None:
        """Fill queue_ms of a server call from its residual, less the median residual of the
        same arm's level-1 calls. A call before any level-1 call of its arm keeps the whole
        residual, and says so."""
        if m.queue_ms is not None or m.outcome != OK:
            return
        residual = server_residual_ms(m)
        if residual is None:
            return
        with self._lock:
            alone = list(self._residuals_ms.get(arm, ()))
        if alone:
            m.queue_ms = residual - statistics.median(alone)
            m.queue_ms_source = QUEUE_SERVER_RESIDUAL
        else:
            m.queue_ms, m.queue_ms_source = residual, QUEUE_SERVER_RESIDUAL_RAW
