"""The report's figures, drawn on matplotlib's Agg canvas (no display, no global pyplot state).

Each figure is written to a path the caller chose (a staging folder), so the figures and the
report that links them are replaced together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ollabench.files import Staging
from ollabench.records.schema import ARMS
from ollabench.report.words import metric_label
from ollabench.stats import METRIC_BY_NAME

FIGURE_METRICS = ("ttft_ms", "eval_tok_s")
ARM_COLORS = {"control": "#4C72B0", "treatment": "#DD8452"}


def draw_figures(per_run: pd.DataFrame, profiles: dict[str, str], staging: Staging,
                 figures_dir: Path) -> dict[str, str]:
    """Every figure, staged for figures_dir: {stage, or "per_run": file name}."""
    names: dict[str, str] = {}
    for stage in dict.fromkeys(per_run["stage"].astype(str)):
        name = f"{stage}_by_arm.png"
        if by_arm_figure(per_run, stage, profiles, staging.path(figures_dir / name)):
            names[stage] = name
    per_run_figure(per_run, staging.path(figures_dir / "per_run.png"))
    names["per_run"] = "per_run.png"
    return names


def by_arm_figure(per_run: pd.DataFrame, stage: str, profiles: dict[str, str],
                  path: Path) -> bool:
    """Box plus points per arm for TTFT and eval rate of one stage; False if no data."""
    data = per_run.loc[per_run["stage"] == stage]
    if data.empty:
        return False
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, len(FIGURE_METRICS))
    jitter = np.random.default_rng(0)
    for ax, metric in zip(axes, FIGURE_METRICS, strict=True):
        groups = [data.loc[data["arm"] == arm, metric].dropna().to_numpy() for arm in ARMS]
        ax.boxplot(groups, showfliers=False)
        ax.set_xticks(range(1, len(ARMS) + 1), [f"{arm}\n{profiles[arm]}" for arm in ARMS])
        for i, (arm, values) in enumerate(zip(ARMS, groups, strict=True), start=1):
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=14,
                       alpha=0.7, color=ARM_COLORS[arm], zorder=3)
        ax.set_title(f"{stage}: {metric_label(metric)}")
        ax.set_ylabel(METRIC_BY_NAME[metric].unit)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def per_run_figure(per_run: pd.DataFrame, path: Path) -> None:
    """Per-run series of both arms: drift and cold starts at a glance."""
    stages = list(dict.fromkeys(per_run["stage"].astype(str)))
    fig = Figure(figsize=(9, 2.6 * len(stages)))
    axes = fig.subplots(len(stages), len(FIGURE_METRICS), squeeze=False)
    for row, stage in enumerate(stages):
        for col, metric in enumerate(FIGURE_METRICS):
            ax = axes[row][col]
            for arm in ARMS:
                series = per_run.loc[(per_run["stage"] == stage) & (per_run["arm"] == arm)]
                ax.plot(series["run"], series[metric], marker="o", markersize=3,
                        color=ARM_COLORS[arm], label=arm)
            ax.set_title(f"{stage}: {metric_label(metric)}")
            ax.set_xlabel("run")
            ax.set_ylabel(METRIC_BY_NAME[metric].unit)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
