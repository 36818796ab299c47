"""The `tune` config group (conf/tune/*.yaml): search space, objective, constraints, budget,
race and confirmation settings, validated before the first call so that a typo stops the
search with one line naming the key (docs/experiments.md, "Tuning")."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ollabench.bench.stopping import BLOCK_RUNS, EACH_STAGE, parse_primary
from ollabench.config.options import validate_options
from ollabench.config.schema import BenchConfig
from ollabench.errors import ConfigError
from ollabench.stats.metrics import METRIC_BY_NAME

TUNE_ROOT = Path(".ollabench/tune")  # <study>.db (the Optuna study) and the bench journals
TUNE_DATA = Path("data/tune")  # <study>/<trial>/: each candidate's raw records and metrics
TUNE_REPORTS = Path("reports/tune")  # <study>/tune.md and its figures
PROFILE_DIR = Path("conf/profile")  # tuned_<model>.yaml, written for a confirmed winner
# tune.objective: the treatment's capacity at run.slo (the largest level of run.concurrency
# whose tasks meet it; ties broken by tasks/min at that level), instead of a primary ratio
CAPACITY = "capacity"
Value = int | float | bool | str


def journal_dir(root: Path, study: str) -> Path:
    """The bench journals of a study's candidates, keyed by their configs."""
    return root / TUNE_ROOT / study / "journal"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Range(_Strict):
    """Values from low to high in steps of `step` (null: any float in between)."""

    low: int | float
    high: int | float
    step: int | float | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and any(isinstance(v, bool) for v in raw.values()):
            raise ConfigError("must be numbers (low, high, step)")
        return raw

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def size(self) -> float:
        """How many values the range holds (inf without a step)."""
        if self.step is None:
            return math.inf
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1


class Constraints(_Strict):
    quality: bool
    truncation: bool
    failed_calls: bool


def _minutes(value: Any) -> Any:
    """A whole number of minutes (an override such as max_minutes=30) is a number too."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Budget(_Strict):
    max_candidates: int
    max_minutes: float = Field(gt=0)

    _whole_minutes = field_validator("max_minutes", mode="before")(_minutes)


class Stopping(_Strict):
    """One bench's sequential stopping rule (run.stopping with mode sequential)."""

    min_runs: int = Field(ge=2)
    max_runs: int = Field(ge=2)
    max_minutes: float = Field(gt=0)
    look_every_blocks: int = Field(ge=1)

    _whole_minutes = field_validator("max_minutes", mode="before")(_minutes)

    def run_stopping(self, max_minutes: float | None = None) -> dict[str, Any]:
        """run.stopping for a bench with this rule; max_minutes lowers the time cap."""
        minutes = self.max_minutes if max_minutes is None else min(max_minutes,
                                                                   self.max_minutes)
        return {"mode": "sequential", "min_runs": self.min_runs, "max_runs": self.max_runs,
                "max_minutes": float(minutes), "look_every_blocks": self.look_every_blocks}


class TuneConfig(_Strict):
    study: str | None = None
    # Where the Optuna study lives: null (the SQLite file .ollabench/tune/<study>.db), an
    # RDB URL (postgresql://..., mysql://..., sqlite:///...), or the path of an Optuna journal
    # file (relative to the project), which several machines can share on one file system.
    storage: str | None = Field(default=None, min_length=1)
    space: dict[str, list[Value] | Range]
    objective: str
    constraints: Constraints
    budget: Budget
    race: Stopping
    confirm: Stopping
    sampler: Literal["auto", "grid", "tpe", "random"]
    seed: int

    @field_validator("space", mode="before")
    @classmethod
    def _lists_or_ranges(cls, space: Any) -> Any:
        for name, values in (space or {}).items() if isinstance(space, dict) else ():
            if not isinstance(values, (list, dict)):
                raise ConfigError(f"tune.space.{name}: must be a list of values or a range "
                                  f"{{low, high, step}}, got {values!r}")
        return space

    def study_name(self, config: BenchConfig) -> str:
        return self.study or f"tune-{slug(config.model.name)}"

    def storage_spec(self, root: Path, study: str) -> str:
        """An RDB URL (with '://') or the absolute path of a journal file."""
        if self.storage is None:
            return f"sqlite:///{(root / TUNE_ROOT / f'{study}.db').resolve()}"
        if "://" in self.storage:
            return self.storage
        return str((root / self.storage).resolve())

    def space_size(self) -> float:
        return math.prod(len(v) if isinstance(v, list) else v.size()
                         for v in self.space.values())

    def grid(self) -> dict[str, list[Value]]:
        """Every value of each option (a finite space only)."""
        return {name: values if isinstance(values, list) else
                [_round(values.low + i * (values.step or 1), values.integer)
                 for i in range(int(values.size()))]
                for name, values in self.space.items()}

    def sampler_kind(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "grid" if self.space_size() <= self.budget.max_candidates else "tpe"


def _round(value: float, integer: bool) -> Value:
    return round(value) if integer else round(value, 12)


def slug(name: str) -> str:
    """A model name as a file name: qwen2.5:7b -> qwen2.5-7b."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def validate_tune(raw: Any, config: BenchConfig) -> TuneConfig:
    """Validate `tune` against the benchmark config it will run; raise ConfigError with one
    line naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError("tune: missing; choose a search with +tune=NAME (conf/tune/NAME.yaml)")
    try:
        tune = TuneConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        ranged = [e for e in errors if "Range" in e["loc"]]
        first = ranged[0] if ranged and isinstance(errors[0]["input"], dict) else errors[0]
        raise ConfigError(_describe(first)) from None
    _check_space(tune)
    _check_objective(tune, config)
    _check_budget(tune, config)
    return tune


def _describe(error: dict[str, Any]) -> str:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and str(cause).startswith("tune."):
        return str(cause)
    # pydantic names the union member tried (list[...], Range) in the location: not a key
    parts = [str(p) for p in error["loc"] if "[" not in str(p) and p != "Range"]
    key = ".".join(["tune", *parts])
    if isinstance(cause, ConfigError):
        return f"{key}: {cause}"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {error['msg'].lower()}, got {error.get('input')!r}"


def _check_space(tune: TuneConfig) -> None:
    if not tune.space:
        raise ConfigError("tune.space: empty; list at least one option with its values, "
                          "e.g. num_batch: [128, 256, 512]")
    for name, values in tune.space.items():
        key = f"tune.space.{name}"
        if isinstance(values, Range):
            if values.low > values.high:
                raise ConfigError(f"{key}: low ({values.low}) is greater than high "
                                  f"({values.high})")
            if values.step is not None and values.step <= 0:
                raise ConfigError(f"{key}.step: must be positive, got {values.step}")
            points = [values.low, values.high]
        elif not values:
            raise ConfigError(f"{key}: empty list of values")
        else:
            points = values
        for value in points:
            validate_options({name: value}, "tune.space")


def _check_objective(tune: TuneConfig, config: BenchConfig) -> None:
    primaries = config.run.primary
    if tune.objective == CAPACITY:
        _check_capacity(config)
        return
    if tune.objective not in primaries:
        raise ConfigError(f"tune.objective: {tune.objective!r} is not a primary comparison "
                          f"(run.primary: {', '.join(primaries)}) nor {CAPACITY}")
    stage, metric = parse_primary([tune.objective])[0]
    if METRIC_BY_NAME[metric].direction == "neither":
        raise ConfigError(f"tune.objective: {metric} has no better direction; choose a "
                          "time or a rate, e.g. workflow/e2e_ms")
    if stage == EACH_STAGE:
        raise ConfigError(f"tune.objective: {tune.objective!r} stands for several "
                          "comparisons; name one stage, e.g. workflow/e2e_ms")


def _check_capacity(config: BenchConfig) -> None:
    """Capacity is a level of run.concurrency meeting run.slo: it needs levels to choose
    from and an SLO to meet (without one every level without failures would pass)."""
    levels = config.run.concurrency
    if len(levels) < 2:
        raise ConfigError(f"tune.objective: {CAPACITY} needs run.concurrency with more than one "
                          f"level, e.g. [1, 2, 4]; got {levels}")
    slo = config.run.slo
    if slo.ttft_ms is None and slo.e2e_ms is None:
        raise ConfigError(f"tune.objective: {CAPACITY} needs a bound in run.slo (run.slo.ttft_ms "
                          "or run.slo.e2e_ms, in ms); both are null")


def _check_budget(tune: TuneConfig, config: BenchConfig) -> None:
    for key in ("race", "confirm"):
        stopping: Stopping = getattr(tune, key)
        if stopping.min_runs > stopping.max_runs:
            raise ConfigError(f"tune.{key}.min_runs: must be at most tune.{key}.max_runs "
                              f"({stopping.max_runs}), got {stopping.min_runs}")
        block = BLOCK_RUNS[config.run.order]
        if block == 0:
            raise ConfigError(f"tune.{key}: racing needs run.order abba or random, got "
                              "sequential")
        for name in ("min_runs", "max_runs"):
            if getattr(stopping, name) % block:
                raise ConfigError(f"tune.{key}.{name}: must be a multiple of {block} (one "
                                  f"{config.run.order} block), got {getattr(stopping, name)}")
    if tune.budget.max_candidates < 1:
        raise ConfigError(f"tune.budget.max_candidates: too small for one candidate, got "
                          f"{tune.budget.max_candidates}")
    if tune.budget.max_minutes < tune.race.max_minutes:
        raise ConfigError(f"tune.budget.max_minutes: {tune.budget.max_minutes:g} is too small "
                          f"for one candidate (tune.race.max_minutes: "
                          f"{tune.race.max_minutes:g})")
