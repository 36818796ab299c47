"""Measure one candidate: the baseline (reference arm) against the baseline plus the
candidate's options (treatment arm), through the ordinary bench and aggregate, with the
sequential stopping rule on the objective alone so that a clear loser stops early. What the
search needs comes back as a CandidateResult: the objective's ratio and interval, and
whether the candidate kept every constraint.

With `tune.objective: capacity` the candidate runs every level of run.concurrency and what
counts is its capacity at run.slo (report/load.py), ties broken by tasks/min at that level,
against the baseline's own (load.csv): descriptive, so the race stops as any experiment
with levels does (run.primary decided at every level, max_runs or max_minutes)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.bench.loop import run_bench
from ollabench.bench.run_control import minutes_of_calls
from ollabench.bench.stopping import parse_primary
from ollabench.config.schema import BenchConfig, validate_config
from ollabench.errors import BenchIncomplete, OllabenchError
from ollabench.paths import CALLS_FILE, COMPARISONS_FILE, LOAD_FILE, PRIMARY_FILE
from ollabench.records.schema import read_records
from ollabench.report.load import capacity_rate
from ollabench.stats.aggregate import run_aggregate
from ollabench.stats.gate import LOWER, quality_verdict, workflow_rows
from ollabench.stats.metrics import METRIC_BY_NAME, QUALITY_METRICS
from ollabench.stats.sequential import BETTER, EQUIVALENT, WORSE
from ollabench.tune.settings import CAPACITY, Constraints, Stopping

RAW, PROCESSED, METRICS = "raw", "processed", "metrics.json"
CAPACITY_FIELDS = ("capacity", "tasks_per_min", "control_capacity", "control_tasks_per_min")
# null in the Optuna storage
NAN_FIELDS = ("ratio", "low_pct", "high_pct", "quality_pct", *CAPACITY_FIELDS)


@dataclass
class CandidateResult:
    """What one measured candidate showed (also stored as the Optuna trial's user attrs)."""

    options: dict[str, Any]
    ratio: float = math.nan  # treatment / control of the objective
    low_pct: float = math.nan  # the objective's interval at its deciding look, in %
    high_pct: float = math.nan
    verdict: str = "not measured"
    runs: int = 0
    minutes: float = 0.0  # the candidate's recorded calls
    # Its worst whole-run quality change against the baseline, in % of the control median,
    # negative when worse (NaN: no quality metric could be compared)
    quality_pct: float = math.nan
    violations: list[str] = field(default_factory=list)  # broken constraints, in words
    out_dir: str = ""
    complete: bool = False  # every call of its bench succeeded and the statistics exist
    experiment: str | None = None  # the DVC experiment that holds it (tune/experiments.py)
    # tune.objective capacity: each arm's capacity at run.slo (0: no level met it) and its
    # tasks/min at that level (0 at no level); NaN for any other objective
    capacity: float = math.nan
    tasks_per_min: float = math.nan
    control_capacity: float = math.nan
    control_tasks_per_min: float = math.nan

    @property
    def by_capacity(self) -> bool:
        """Measured for the capacity objective."""
        return math.isfinite(self.capacity)

    def objective_value(self) -> float:
        """What the study optimises: the capacity, or the objective's ratio."""
        return self.capacity if self.by_capacity else self.ratio

    @property
    def feasible(self) -> bool:
        return not self.violations and math.isfinite(self.objective_value())

    def attrs(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> CandidateResult:
        names = cls.__dataclass_fields__
        return cls(**{k: (math.nan if v is None and k in NAN_FIELDS else v)
                      for k, v in attrs.items() if k in names})


def candidate_config(config: BenchConfig, options: dict[str, Any], name: str,
                     objective: str, stopping: Stopping,
                     max_minutes: float | None = None) -> BenchConfig:
    """The bench config of one candidate: reference unchanged, treatment = reference
    options + the candidate's, the stopping rule on the objective alone."""
    raw = config.model_dump(mode="json")
    raw["profile"] = {"name": name, "options": {**raw["reference"]["options"], **options}}
    raw["run"]["stopping"] = stopping.run_stopping(max_minutes)
    if objective != CAPACITY:  # capacity has no interval to stop on: run.primary stays
        raw["run"]["primary"] = [objective]
    return validate_config(raw)


def measure(config: BenchConfig, options: dict[str, Any], out_dir: Path,
            journal_root: Path, objective: str, constraints: Constraints,
            progress: bool) -> CandidateResult:
    """Run (or resume) one candidate's bench (config: candidate_config) and aggregate into
    out_dir. A candidate the engine refuses or whose calls fail is infeasible, not raised."""
    result = CandidateResult(options=options, out_dir=str(out_dir))
    complete = True
    try:
        run_bench(config, out_dir / RAW, journal_root=journal_root, progress=progress)
    except BenchIncomplete as exc:
        result.violations.append(f"failed calls: {exc}")
        complete = False
    except OllabenchError as exc:
        result.violations.append(f"refused: {exc}")
        return result
    _read_records(result, out_dir / RAW / CALLS_FILE, constraints)
    try:
        run_aggregate(out_dir / RAW, out_dir / PROCESSED, out_dir / METRICS,
                      config.run.practical_threshold_pct)
    except OllabenchError as exc:
        result.violations.append(f"no statistics: {exc}")
        return result
    result.complete = complete
    if objective == CAPACITY:
        read_capacity(result, pd.read_csv(out_dir / PROCESSED / LOAD_FILE),
                      config.run.practical_threshold_pct)
    else:
        _read_objective(result, out_dir / PROCESSED / PRIMARY_FILE, objective)
    comparisons = pd.read_csv(out_dir / PROCESSED / COMPARISONS_FILE)
    result.quality_pct = worst_quality_change(comparisons)
    if constraints.quality and quality_verdict(comparisons) == LOWER:
        result.violations.append("lower quality (a quality metric is significantly worse)")
    return result


def worst_quality_change(comparisons: pd.DataFrame) -> float:
    """The quality axis of the speed-quality trade-off: over the whole-run quality metrics,
    the largest loss (median difference in %, signed so that worse is negative)."""
    changes = [value if METRIC_BY_NAME[row.metric].direction == "higher" else -value
               for row in workflow_rows(comparisons, QUALITY_METRICS).itertuples(index=False)
               if math.isfinite(value := float(row.median_diff_pct))]
    return min(changes, default=math.nan)


def _read_records(result: CandidateResult, calls: Path, constraints: Constraints) -> None:
    records = read_records(calls) if calls.is_file() else []
    result.minutes = minutes_of_calls(records)  # a block of agents: its span, once
    mine = [r for r in records if r.arm == "treatment"]
    truncated = sum(1 for r in mine if r.truncated)
    failed = sum(1 for r in mine if r.error is not None)
    if constraints.truncation and truncated:
        result.violations.append(f"truncation ({truncated} prompt(s) cut to fit the context)")
    if constraints.failed_calls and failed and not any(
            v.startswith("failed calls") for v in result.violations):
        result.violations.append(f"failed calls ({failed} of {len(mine)})")


def _read_objective(result: CandidateResult, primary_csv: Path, objective: str) -> None:
    stage, metric = parse_primary([objective])[0]
    table = pd.read_csv(primary_csv)
    rows = table[(table["stage"] == stage) & (table["metric"] == metric)]
    if rows.empty:
        result.violations.append(f"no {objective} comparison in the records")
        return
    row = rows.iloc[0]
    result.ratio = 1.0 + float(row["change_pct"]) / 100.0
    result.low_pct, result.high_pct = float(row["low_pct"]), float(row["high_pct"])
    result.verdict, result.runs = str(row["verdict"]), int(row["runs"])


def read_capacity(result: CandidateResult, load: pd.DataFrame, threshold_pct: float) -> None:
    """Both arms' capacity at run.slo and tasks/min at it (load.csv); the ratio is the
    treatment's tasks/min at its capacity over the baseline's at its own."""
    figures = {}
    for arm in ("treatment", "control"):
        level, tasks_per_min = capacity_rate(load, arm)
        figures[arm] = (float(level or 0), tasks_per_min or 0.0)
    (result.capacity, result.tasks_per_min), (result.control_capacity,
                                              result.control_tasks_per_min) = \
        figures["treatment"], figures["control"]
    control_rate = result.control_tasks_per_min
    result.ratio = result.tasks_per_min / control_rate if control_rate > 0 else math.nan
    result.verdict = capacity_verdict(result, threshold_pct)
    single = load.loc[(load["arm"] == "treatment") & (load["concurrency"] == 1), "blocks"]
    result.runs = int(single.iloc[0]) if len(single) else 0


def capacity_verdict(result: CandidateResult, threshold_pct: float) -> str:
    """better / worse: a larger / smaller capacity than the baseline, or the same one with
    tasks/min at it higher / lower by more than the practical threshold; else equivalent.
    Descriptive (docs/experiments.md, Tuning for capacity)."""
    if result.capacity != result.control_capacity:
        return BETTER if result.capacity > result.control_capacity else WORSE
    if result.capacity == 0 or not result.control_tasks_per_min > 0:
        return EQUIVALENT
    change_pct = (result.tasks_per_min / result.control_tasks_per_min - 1.0) * 100.0
    if abs(change_pct) <= threshold_pct:
        return EQUIVALENT
    return BETTER if change_pct > 0 else WORSE
