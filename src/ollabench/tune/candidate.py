"""Measure one candidate: the baseline (reference arm) against the baseline plus the
candidate's options (treatment arm), through the ordinary bench and aggregate, with the
sequential stopping rule on the objective alone so that a clear loser stops early. What the
search needs comes back as a CandidateResult: the objective's ratio and interval, and
whether the candidate kept every constraint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.bench.loop import run_bench
from ollabench.bench.stopping import parse_primary
from ollabench.config.schema import BenchConfig, validate_config
from ollabench.errors import BenchIncomplete, OllabenchError
from ollabench.paths import CALLS_FILE, COMPARISONS_FILE, PRIMARY_FILE
from ollabench.records.schema import read_records
from ollabench.stats.aggregate import run_aggregate
from ollabench.stats.gate import LOWER, quality_verdict, workflow_rows
from ollabench.stats.metrics import METRIC_BY_NAME, QUALITY_METRICS
from ollabench.tune.settings import Constraints, Stopping

RAW, PROCESSED, METRICS = "raw", "processed", "metrics.json"
NAN_FIELDS = ("ratio", "low_pct", "high_pct", "quality_pct")  # null in the Optuna storage


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

    @property
    def feasible(self) -> bool:
        return not self.violations and math.isfinite(self.ratio)

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
    result.minutes = sum(r.e2e_ms or 0.0 for r in records) / 60_000.0
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
