"""The run group's settings for agents at once (docs/metrics.md, Under load): the levels of
run.concurrency and the SLO a task must meet to count in goodput. Open-loop arrivals have
their own module beside the code that paces them (bench/arrivals.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ollabench.errors import ConfigError

MAX_CONCURRENCY = 64  # agents at once: more threads than any local server has slots


class SloConfig(BaseModel):
    """What an agent task must meet to count in goodput (null: no bound on that figure)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ttft_ms: float | None = Field(default=None, gt=0)  # every call's time to first token
    e2e_ms: float | None = Field(default=None, gt=0)  # the whole task, first call due to end

    @field_validator("ttft_ms", "e2e_ms", mode="before")
    @classmethod
    def _int_is_a_number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def check_levels(levels: list[int]) -> list[int]:
    """Levels as agents at once: 1 is the sequential baseline every scaling figure is
    relative to, so it must be there; each level once, in rising order."""
    if not levels or any(level < 1 or level > MAX_CONCURRENCY for level in levels) \
            or 1 not in levels or sorted(set(levels)) != levels:
        raise ConfigError(f"run.concurrency: a rising list of distinct levels from 1 to "
                          f"{MAX_CONCURRENCY} that includes 1 (the sequential baseline), "
                          f"e.g. [1, 2, 4]; got {levels}")
    return levels


def check_prompt_cache(prompt_cache: bool, levels: list[int]) -> None:
    """A warm prompt cache cannot be arranged for agents at once."""
    if prompt_cache and max(levels) > 1:
        raise ConfigError("run.prompt_cache: true needs run.concurrency [1]: with agents at "
                          "once a server slot (or context) may hand the measured call "
                          "another agent's cache, so the warm state cannot be arranged")
