"""Statistics over raw call records: summaries, arm comparisons, verdicts and data quality.

Only measured calls without an error that did not pay a model reload enter the statistics;
warm-ups, errors, reloads, outliers and unequal work are counted separately (quality.json)
so that the report can say what the numbers rest on. The unit of analysis is one value per
run, arm and stage: runs, not calls, are the repetitions of the schedule.
docs/statistics.md explains every rule; docs/architecture.md maps the modules.

This facade re-exports the public names. The definitions in `metrics` are imported at
once; everything else is imported on first use (PEP 562), so that a stage that needs only
`metrics` (the report) loads neither pandas nor scipy nor the rest of the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ollabench.stats.metrics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    COMPARISON_COLUMNS,
    HEADLINE_METRICS,
    LEVEL_METRIC_BY_NAME,
    LOAD_METRICS,
    METRIC_BY_NAME,
    METRICS,
    PER_RUN_COLUMNS,
    PLOTTED_METRICS,
    QUALITY_KEY,
    QUALITY_METRICS,
    SUMMARY_COLUMNS,
    SYSTEM_STAGE,
    WORKFLOW_STAGE,
    Metric,
)

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "run_aggregate": "ollabench.stats.aggregate",
    "read_calls": "ollabench.stats.frames",
    "records_frame": "ollabench.stats.frames",
    "compare_arms": "ollabench.stats.tables",
    "headline": "ollabench.stats.tables",
    "gate_words": "ollabench.stats.gate",
    "quality_verdict": "ollabench.stats.gate",
    "bootstrap_medians": "ollabench.stats.core",
    "holm": "ollabench.stats.core",
    "outlier_flags": "ollabench.stats.core",
    "verdict_test": "ollabench.stats.core",
    "verdicts": "ollabench.stats.core",
    # kept for callers that found them here before the split
    "AggregateError": "ollabench.errors",
    "COMPARISONS_FILE": "ollabench.paths",
    "PER_RUN_FILE": "ollabench.paths",
    "QUALITY_FILE": "ollabench.paths",
    "SUMMARY_FILE": "ollabench.paths",
}

__all__ = [
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "COMPARISON_COLUMNS",
    "HEADLINE_METRICS",
    "LEVEL_METRIC_BY_NAME",
    "LOAD_METRICS",
    "METRICS",
    "METRIC_BY_NAME",
    "PER_RUN_COLUMNS",
    "PLOTTED_METRICS",
    "QUALITY_KEY",
    "QUALITY_METRICS",
    "SUMMARY_COLUMNS",
    "SYSTEM_STAGE",
    "WORKFLOW_STAGE",
    "Metric",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
