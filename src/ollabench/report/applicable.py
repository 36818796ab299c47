"""Metrics that did not apply to a run, said once instead of in a row per stage and arm.

A quality metric that is 0 in every run of both arms (the outputs held nothing it counts)
can only come out "inconclusive"; the embedded engine's load time, when no measured call
loaded a model, times nothing but its check for a reload (a fraction of a millisecond) and
its "outliers" are noise of that check. The report leaves such metrics out of its tables and
names them once, with the reason; the CSVs keep every row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ollabench.report.words import metric_label
from ollabench.stats import QUALITY_METRICS

EMBEDDED_BACKEND = "llamacpp"
ALL_ZERO = "0 in every run of both arms (the outputs held nothing it counts)"
NO_LOAD = ("no measured call loaded a model (warm-ups took every load), so the embedded "
           "engine's figure times only its check for a reload")


def not_applicable(summary: pd.DataFrame, quality: dict[str, Any],
                   config: dict[str, Any]) -> dict[str, str]:
    """{metric: why it did not apply} for this run's summary, quality.json and config."""
    found: dict[str, str] = {}
    for metric in QUALITY_METRICS:
        rows = summary.loc[summary["metric"] == metric]
        if not rows.empty and (rows["min"] == 0).all() and (rows["max"] == 0).all():
            found[metric] = ALL_ZERO
    backend = (config.get("model") or {}).get("backend")
    if backend == EMBEDDED_BACKEND and not quality["load_spikes"] \
            and (summary["metric"] == "load_ms").any():
        found["load_ms"] = NO_LOAD
    return found


def applicable(frame: pd.DataFrame, skipped: dict[str, str]) -> pd.DataFrame:
    """The rows of a table with a `metric` column whose metric applied."""
    return frame.loc[~frame["metric"].isin(list(skipped))] if skipped else frame


def not_applicable_line(skipped: dict[str, str]) -> str:
    """One line: every metric that did not apply, grouped by the reason."""
    by_reason: dict[str, list[str]] = {}
    for metric, why in skipped.items():
        by_reason.setdefault(why, []).append(metric_label(metric))
    return ("Not applicable here, left out of the tables (the CSVs keep them): "
            + "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())
            + ".")
