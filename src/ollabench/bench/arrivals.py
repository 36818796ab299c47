"""Open-loop arrivals (run.arrivals): agent tasks that arrive on their own, at a rate.

Closed loop (run.concurrency alone), a level-N block starts N agent tasks at once and each
agent's next call waits for its previous answer. Open loop, each block's `tasks` agent tasks
(one whole workload each) are due at scheduled arrival times, Poisson or evenly spaced at
`rate_per_min`, and the block's level bounds how many are in flight at once (the client's
workers): a task due while every worker is busy waits on the client, and that wait counts,
since every latency is clocked from when the task was due (no coordinated omission; vLLM and
AIPerf measure the same way). The arrival times of a (run, level) are drawn from run.seed, so
a rerun replays them and both arms of a run meet the same arrivals.

Plain Python and pydantic only: config/schema.py validates these with the rest of run.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ollabench.errors import ConfigError

MS_PER_MINUTE = 60_000.0
MAX_TASKS = 1000  # tasks per block: a block is one unit of the schedule, not a soak test


class ArrivalsConfig(BaseModel):
    """rate_per_min null: closed loop, today's behaviour. Otherwise each block's `tasks` agent
    tasks arrive at rate_per_min, `pattern` poisson (exponential gaps) or constant (even
    gaps), and the block's level of run.concurrency bounds the tasks in flight."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    rate_per_min: float | None = None
    pattern: Literal["poisson", "constant"] = "poisson"
    tasks: int = Field(default=8, ge=1, le=MAX_TASKS)

    @field_validator("rate_per_min", mode="before")
    @classmethod
    def _a_rate(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"run.arrivals.rate_per_min: agent tasks per minute, a number "
                              f"above 0 (null: closed loop, no arrivals), got {value!r}")
        return float(value)

    @property
    def enabled(self) -> bool:
        return self.rate_per_min is not None


def check_arrivals(arrivals: ArrivalsConfig, levels: list[int], prompt_cache: bool) -> None:
    """Refuse what open loop cannot honour: a primer call would move each task's due time,
    and a level above the tasks of a block could never be reached."""
    if not arrivals.enabled:
        return
    if prompt_cache:
        raise ConfigError("run.arrivals: needs run.prompt_cache false: a primer call before "
                          "each measured call would delay the task after it was due")
    if arrivals.tasks < max(levels):
        raise ConfigError(f"run.arrivals.tasks: at least the largest level of "
                          f"run.concurrency ({max(levels)}), the most tasks in flight at "
                          f"once; got {arrivals.tasks}")


def arrival_offsets_ms(arrivals: ArrivalsConfig, seed: int, run: int, level: int) -> list[float]:
    """When each task of the (run, level) blocks is due, ms after its block starts: the first
    at 0, then gaps of mean 60000 / rate_per_min, exponential (poisson) or exact (constant).
    Drawn from run.seed, the run and the level, never the arm: both arms get the same."""
    if arrivals.rate_per_min is None:
        raise ValueError("arrival_offsets_ms needs run.arrivals.rate_per_min")
    mean_gap_ms = MS_PER_MINUTE / arrivals.rate_per_min
    if arrivals.pattern == "constant":
        return [index * mean_gap_ms for index in range(arrivals.tasks)]
    rng = random.Random(f"arrivals:{seed}:{run}:{level}")
    offsets, at_ms = [], 0.0
    for _ in range(arrivals.tasks):
        offsets.append(at_ms)
        at_ms += rng.expovariate(1.0 / mean_gap_ms)
    return offsets
