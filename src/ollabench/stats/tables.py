"""The tables of the aggregate: summary.csv (per arm), comparisons.csv (treatment against
control, with verdicts) and metrics.json (the headline), from per-run values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ollabench.errors import AggregateError
from ollabench.records.schema import ARMS
from ollabench.stats.core import (
    holm,
    mann_whitney,
    median_diff_ci,
    nanmedian,
    paired_wilcoxon,
    quiet,
    relative_pct,
    sample_summary,
    verdict_test,
    verdicts,
)
from ollabench.stats.gate import quality_verdict
from ollabench.stats.grouping import (
    StageFrames,
    measured_calls,
    per_run_values,
    profile_names,
    split_stages,
    stage_values,
    stages_of,
)
from ollabench.stats.metrics import (
    ALPHA,
    BOOTSTRAP_SEED,
    COMPARISON_COLUMNS,
    CONTROL,
    METRIC_BY_NAME,
    METRICS,
    QUALITY_KEY,
    SUMMARY_COLUMNS,
    TREATMENT,
    Metric,
)
from ollabench.stats.quality import cause_table, outlier_rows


def summary_rows(stages: StageFrames, arm: str, profile: str) -> list[dict[str, Any]]:
    """summary.csv rows of one arm: every stage x metric with at least one known value."""
    rows = []
    for stage in stages:
        for metric in METRICS:
            values = stage_values(stages, stage, metric.name).to_numpy(dtype=float)
            if len(values):
                rows.append({"arm": arm, "profile": profile, "stage": stage,
                             "metric": metric.name, **sample_summary(values)})
    return rows


def summary_table(runs: dict[str, StageFrames],
                  by_arm: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """summary.csv: both arms' rows (see summary_rows)."""
    return pd.DataFrame(
        [row for arm in ARMS
         for row in summary_rows(runs[arm], arm, profile_names(by_arm[arm]))],
        columns=list(SUMMARY_COLUMNS))


def comparisons_with_outliers(control: StageFrames, treatment: StageFrames,
                              threshold_pct: float, seed: int = BOOTSTRAP_SEED,
                              ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The comparisons table from both arms' per-run values (see split_stages), and the
    outliers the verdict test found on the way, with what their records show."""
    arms = {CONTROL: control, TREATMENT: treatment}
    causes = {arm: {stage: cause_table(frame) for stage, frame in stages.items()}
              for arm, stages in arms.items()}
    tested = []
    for stage_index, stage in enumerate(stages_of(control, treatment)):
        for metric_index, metric in enumerate(METRICS):
            values = {CONTROL: stage_values(control, stage, metric.name),
                      TREATMENT: stage_values(treatment, stage, metric.name)}
            if not all(v.empty for v in values.values()):
                tested.append((stage_index, stage, metric_index, metric, values))
    # Holm over every row tests the first row at ALPHA / rows: the detectable change is
    # given at that level, the one a row must reach for sure.
    row_alpha = ALPHA / max(len(tested), 1)
    rows, outliers = [], []
    for stage_index, stage, metric_index, metric, values in tested:
        rng = np.random.default_rng([seed, stage_index, metric_index])
        row, test = _compare_one(stage, metric, values, rng, row_alpha)
        rows.append(row)
        for arm in arms:
            if stage in causes[arm]:
                outliers += outlier_rows(arm, row, values[arm], causes[arm][stage], test)
    table = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "effect"])
    if not table.empty:
        table["p_holm"] = holm(table["p_welch"].to_numpy(dtype=float))
        table["verdict"] = verdicts(table["p_holm"].to_numpy(), table["effect"].to_numpy(),
                                    table["mde_pct"].to_numpy(dtype=float),
                                    table["better"].to_numpy(), threshold_pct)
    return table.drop(columns="effect"), outliers


def _compare_one(stage: str, metric: Metric, values: dict[str, pd.Series],
                 rng: np.random.Generator,
                 alpha: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c_runs, t_runs = values[CONTROL], values[TREATMENT]
    c = c_runs.to_numpy(dtype=float)
    t = t_runs.to_numpy(dtype=float)
    test = verdict_test(c, t, alpha)
    p_mw, cliffs = mann_whitney(c, t)
    ci_low, ci_high = median_diff_ci(c, t, rng)
    with quiet():
        c_mean, t_mean = np.mean(c), np.mean(t)
        c_median, t_median = (float(nanmedian(values)[0]) for values in (c, t))
    row = {
        "stage": stage, "metric": metric.name, "better": metric.direction,
        "n_control": len(c), "n_treatment": len(t),
        "control_mean": c_mean, "treatment_mean": t_mean,
        "control_median": c_median, "treatment_median": t_median,
        "mean_diff_pct": relative_pct(c_mean, t_mean),
        "median_diff_pct": relative_pct(c_median, t_median),
        "ci_low_pct": ci_low, "ci_high_pct": ci_high,
        "p_welch": float(test["p_welch"]), "p_mannwhitney": p_mw,
        "p_paired": (paired_wilcoxon(c, t) if c_runs.index.equals(t_runs.index)
                     else math.nan),  # a pair per run only when every run has both arms
        "p_holm": math.nan,
        "hedges_g": float(test["hedges_g"]), "cliffs_delta": cliffs,
        "mde_pct": float(test["mde_pct"]), "verdict": "", "effect": float(test["effect"]),
    }
    return row, test


def compare_arms(control: pd.DataFrame, treatment: pd.DataFrame, threshold_pct: float,
                 seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Comparisons table for two sets of per-call rows (one row per call, with run, stage and
    metric columns). The two sets may come from different experiments."""
    per_arm = []
    for name, calls in ((CONTROL, control), (TREATMENT, treatment)):
        if missing := [c for c in ("run", "stage") if c not in calls]:
            raise AggregateError(f"{name} calls: missing columns: {', '.join(missing)}")
        if not any(m.name in calls for m in METRICS):
            raise AggregateError(f"{name} calls: no metric columns "
                                 f"(expected some of {', '.join(METRIC_BY_NAME)})")
        measured = measured_calls(calls)
        if measured.empty:
            raise AggregateError(f"{name} calls: no measured calls without an error")
        per_arm.append(split_stages(per_run_values(measured)))
    return comparisons_with_outliers(per_arm[0], per_arm[1], threshold_pct, seed)[0]


def headline(comparisons: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """metrics.json's quality entry: the quality gate's verdict alone. The file stays a few
    leaves wide so `dvc exp show` fits a terminal; every median, difference and p-value is
    in comparisons.csv."""
    return {QUALITY_KEY: {"verdict": quality_verdict(comparisons)}}
