"""Settings of the stopping rule (run.stopping) and of the primary comparisons (run.primary).

A fixed experiment runs run.runs; a sequential one keeps adding ABBA blocks until every
primary comparison is decided or its budget ends (docs/statistics.md, Sequential verdicts).
Plain Python and pydantic only: config.py validates these with the rest of run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ollabench.errors import ConfigError
from ollabench.stats.metrics import METRIC_BY_NAME

# run.primary's default, also for records made before it existed
DEFAULT_PRIMARY = ("workflow/e2e_ms", "each/ttft_ms", "workflow/eval_tok_s")
EACH_STAGE = "each"  # a primary comparison's stage that stands for every measured stage
# runs of one block of each schedule order: the unit the sequential rule adds and pairs
BLOCK_RUNS = {"abba": 2, "random": 1, "sequential": 0}


class StoppingConfig(BaseModel):
    """fixed: run.runs per arm. sequential: look at min_runs per arm, then after every
    look_every_blocks blocks; stop when every primary comparison is decided, at max_runs,
    or once the calls recorded add up to max_minutes (null: no time limit)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mode: Literal["fixed", "sequential"]
    min_runs: int = Field(ge=2)
    max_runs: int = Field(ge=2)
    max_minutes: float | None = Field(gt=0)
    look_every_blocks: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _int_is_a_number(cls, raw: object) -> object:
        if isinstance(raw, dict) and isinstance(raw.get("max_minutes"), int) \
                and not isinstance(raw["max_minutes"], bool):
            return {**raw, "max_minutes": float(raw["max_minutes"])}
        return raw

    @model_validator(mode="after")
    def _runs_in_order(self) -> StoppingConfig:
        if self.min_runs > self.max_runs:
            raise ConfigError(f"run.stopping.min_runs: must be at most run.stopping.max_runs "
                              f"({self.max_runs}), got {self.min_runs}")
        return self


def check_block_fit(stopping: StoppingConfig, order: str) -> None:
    """A sequential experiment grows by whole blocks of the schedule, so it needs an order
    made of blocks, and run counts that end on a block."""
    if stopping.mode != "sequential":
        return
    block = BLOCK_RUNS[order]
    if block == 0:
        raise ConfigError("run.stopping.mode: sequential needs run.order abba or random (the "
                          "sequential order runs all of one arm first), got order sequential")
    for key in ("min_runs", "max_runs"):
        value = getattr(stopping, key)
        if value % block:
            raise ConfigError(f"run.stopping.{key}: must be a multiple of {block} (one "
                              f"{order} block), got {value}")


def parse_primary(entries: list[str]) -> list[tuple[str, str]]:
    """run.primary entries 'stage/metric' as (stage, metric); the stage may be `each`."""
    pairs = []
    for entry in entries:
        stage, _, metric = entry.partition("/")
        if not stage or metric not in METRIC_BY_NAME:
            allowed = ", ".join(METRIC_BY_NAME)
            raise ConfigError(f"run.primary: {entry!r} must be 'stage/metric' (stage: a "
                              f"workload stage, workflow or {EACH_STAGE}; metric one of "
                              f"{allowed})")
        pairs.append((stage, metric))
    if not pairs:
        raise ConfigError("run.primary: list at least one comparison, e.g. workflow/e2e_ms")
    return pairs


def primary_comparisons(entries: list[str], stages: list[str]) -> list[tuple[str, str]]:
    """The primary (stage, metric) pairs for a workload's measured stages, `each` expanded,
    in order and each once; pairs naming a stage the records lack are left out."""
    found: list[tuple[str, str]] = []
    for stage, metric in parse_primary(entries):
        for name in (stages if stage == EACH_STAGE else [stage]):
            if name in stages or name == "workflow":
                found.append((name, metric))
    return list(dict.fromkeys(found))
