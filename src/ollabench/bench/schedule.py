"""The schedule: which call runs when. Arms interleave (ABBA by default) so slow drift hits
both alike; warm-up calls follow every switch of arm, where a server reloads the model (at
least one when the arms' options make the engine reload, even with run.warmup 0). Under load
(run.concurrency) each run holds one block per level and arm, N agents' whole workloads;
the two arms' blocks never overlap. With run.arrivals a block holds run.arrivals.tasks
tasks, at most `level` of them in flight (bench/open_loop.py). With run.interleave call the
arms alternate call by call within each run (call_plan; bench/interleave.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ollabench.bench.interleave import CALL
from ollabench.config.schema import RunConfig
from ollabench.records.schema import PRIME_PHASE, UNREACHED_PHASE, WARMUP_STAGE
from ollabench.workloads import Step


@dataclass(frozen=True)
class Slot:
    """One call of the schedule; `seq` is its 1-based position."""

    seq: int
    run: int
    arm: str
    stage: str
    step: int = -1  # index into the workload's steps; -1 for a warm-up
    primer: bool = False
    unreached: bool = False  # not run: the run's task ended at an earlier step
    level: int = 1  # agents at once in its block (run.concurrency)
    agent: int = 1  # which of them, 1..level

    @property
    def block(self) -> tuple[int, str, int]:
        """The (run, arm, level) block it belongs to: its agents run at once."""
        return (self.run, self.arm, self.level)

    @property
    def phase(self) -> str:
        if self.primer:
            return PRIME_PHASE
        if self.unreached:
            return UNREACHED_PHASE
        return "warmup" if self.stage == WARMUP_STAGE else "measured"


def planned_runs(run: RunConfig) -> int:
    """Runs per arm the schedule holds: run.runs, or a sequential experiment's budget (it
    may stop earlier: run_control.StopRule)."""
    return run.stopping.max_runs if run.stopping.mode == "sequential" else run.runs


def arm_order(run: RunConfig) -> list[tuple[int, str]]:
    """(run, arm) pairs in the order they execute."""
    arms = ("control", "treatment")
    runs = planned_runs(run)
    if run.order == "sequential":
        return [(r, arm) for arm in arms for r in range(1, runs + 1)]
    rng = random.Random(run.order_seed)
    order: list[tuple[int, str]] = []
    for r in range(1, runs + 1):
        if run.order == "abba":
            pair = arms if r % 2 else arms[::-1]
        else:
            pair = tuple(rng.sample(arms, 2))
        order.extend((r, arm) for arm in pair)
    return order


def block_order(run: RunConfig) -> list[tuple[int, str, int]]:
    """(run, arm, level) blocks in the order they execute. Each run's pair of arms (ABBA or
    random) is played at every level, reversed from one level to the next, so a run switches
    arm once per level (no switch at a level boundary) and each level sees either arm first
    as often as ABBA gives; with one level this is arm_order."""
    pairs = arm_order(run)
    if run.order == "sequential":
        return [(r, arm, level) for r, arm in pairs for level in run.concurrency]
    blocks: list[tuple[int, str, int]] = []
    for (r, first), (_, second) in zip(pairs[::2], pairs[1::2], strict=True):
        for index, level in enumerate(run.concurrency):
            pair = (first, second) if index % 2 == 0 else (second, first)
            blocks.extend((r, arm, level) for arm in pair)
    return blocks


def warmups_per_switch(run: RunConfig, switch_reloads: bool) -> int:
    """run.warmup, but at least one where switching arms makes the engine reload."""
    return max(run.warmup, int(switch_reloads))


def tasks_per_block(run: RunConfig, level: int) -> int:
    """Agent tasks in a block: one per agent closed loop; run.arrivals.tasks open loop, where
    the level bounds how many are in flight (bench/open_loop.py)."""
    return run.arrivals.tasks if run.arrivals.enabled else level


def plan(run: RunConfig, steps: tuple[Step, ...], switch_reloads: bool = False) -> list[Slot]:
    """The full schedule: warm-ups after each arm switch, then each block's agents' steps
    (agent by agent: the executor runs a block's agents at once)."""
    if run.interleave == CALL:
        return call_plan(run, steps, switch_reloads)
    slots: list[Slot] = []
    previous_arm = None
    for r, arm, level in block_order(run):
        if arm != previous_arm:
            for _ in range(warmups_per_switch(run, switch_reloads)):
                slots.append(Slot(len(slots) + 1, r, arm, WARMUP_STAGE, level=level))
        previous_arm = arm
        for agent in range(1, tasks_per_block(run, level) + 1):
            for index, step in enumerate(steps):
                slots.append(Slot(len(slots) + 1, r, arm, step.stage, index, level=level,
                                  agent=agent))
    return slots


def call_plan(run: RunConfig, steps: tuple[Step, ...], switch_reloads: bool) -> list[Slot]:
    """run.interleave call: each arm's warm-ups once, up front (each engine pays its load
    once; both stay loaded), then every run's steps with the arms alternating call by call,
    ABBA within the run: step 1 in the run's arm order (arm_order), step 2 reversed, and so
    on. Each arm's later steps read its own earlier outputs, as under `run`."""
    slots: list[Slot] = []
    pairs = arm_order(run)
    for _, arm in pairs[:2]:
        for _ in range(warmups_per_switch(run, switch_reloads)):
            slots.append(Slot(len(slots) + 1, 1, arm, WARMUP_STAGE))
    for (r, first), (_, second) in zip(pairs[::2], pairs[1::2], strict=True):
        for index, step in enumerate(steps):
            for arm in (first, second) if index % 2 == 0 else (second, first):
                slots.append(Slot(len(slots) + 1, r, arm, step.stage, index))
    return slots
