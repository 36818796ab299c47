"""The schedule: which call runs when. Arms interleave (ABBA by default) so slow drift hits
both alike; warm-up calls follow every switch of arm, where a server reloads the model (at
least one when the arms' options make the engine reload, even with run.warmup 0)."""

from __future__ import annotations

import random
from dataclasses import dataclass

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


def warmups_per_switch(run: RunConfig, switch_reloads: bool) -> int:
    """run.warmup, but at least one where switching arms makes the engine reload."""
    return max(run.warmup, int(switch_reloads))


def plan(run: RunConfig, steps: tuple[Step, ...], switch_reloads: bool = False) -> list[Slot]:
    """The full schedule: warm-ups after each arm switch, then the workload's steps."""
    slots: list[Slot] = []
    previous_arm = None
    for r, arm in arm_order(run):
        if arm != previous_arm:
            for _ in range(warmups_per_switch(run, switch_reloads)):
                slots.append(Slot(len(slots) + 1, r, arm, WARMUP_STAGE))
        previous_arm = arm
        for index, step in enumerate(steps):
            slots.append(Slot(len(slots) + 1, r, arm, step.stage, index))
    return slots
