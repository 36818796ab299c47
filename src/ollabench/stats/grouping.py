"""Calls grouped into the unit of analysis: one value per run, arm and stage.

Only measured calls without an error that did not pay a model reload enter the statistics;
a run's stages combine into its `workflow` value by each metric's rule (docs/statistics.md).
A stage after the one where a run's task ended (the tool agent's final answer: its record's
`task_ended_by`) was never reached: it has no value of its own and adds nothing to the
run's workflow, which is the whole task. Any other missing stage leaves the workflow unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ollabench.stats.core import quiet
from ollabench.stats.frames import FLAG_COLUMNS, HOST_COLUMNS
from ollabench.stats.metrics import METRIC_BY_NAME, METRICS, SHARE_COUNTS, WORKFLOW_STAGE

StageFrames = dict[str, pd.DataFrame]  # stage -> per-run values indexed by run
# Token counts that are not metrics but make up one (a rate's numerator): summed per run.
COUNT_COLUMNS = ("prompt_tokens", "prompt_eval_tokens")


def measured_calls(calls: pd.DataFrame) -> pd.DataFrame:
    """Calls that enter the statistics: phase `measured` (when known), no error, and not
    flagged as having paid a model reload."""
    keep = pd.Series(True, index=calls.index)
    if "phase" in calls:
        keep &= calls["phase"] == "measured"
    if "error" in calls:
        keep &= calls["error"].isna()
    if "reloaded" in calls:
        keep &= ~is_flagged(calls, "reloaded")
    return calls.loc[keep]


def is_flagged(calls: pd.DataFrame, flag: str) -> pd.Series:
    """A flag column as plain booleans: unknown is not flagged."""
    if flag not in calls:
        return pd.Series(False, index=calls.index)
    return calls[flag].astype("boolean").fillna(False).astype(bool)


def stage_order(calls: pd.DataFrame) -> list[str]:
    """The stages of measured calls in the order a run first reaches them (the workload's
    order), not alphabetical: the order of every table and figure."""
    first_seq = calls.groupby("stage", observed=True)["seq"].min().sort_values(kind="stable")
    return [str(stage) for stage in first_seq.index]


def per_run_values(calls: pd.DataFrame) -> pd.DataFrame:
    """One row per run and stage (the mean of its calls, normally exactly one), plus the
    `workflow` stage: the run's stages combined by each metric's rule, unknown when a stage
    is missing or unknown. Columns: run, stage, the metrics present, COUNT_COLUMNS, the
    flags as 1.0 / 0.0 / NaN (unknown), and HOST_COLUMNS (the worst of the run's calls)."""
    value_cols = [c for c in dict.fromkeys((*METRIC_BY_NAME, *COUNT_COLUMNS, *SHARE_COUNTS))
                  if c in calls or _share_columns(c, calls)]
    flags = [c for c in (*FLAG_COLUMNS, *HOST_COLUMNS) if c in calls]
    stages = stage_order(calls)
    stage = pd.Categorical(calls["stage"].astype(str), categories=stages)
    numeric = pd.DataFrame({"run": calls["run"].astype("int64"), "stage": stage})
    for col in value_cols:
        numeric[col] = _call_values(calls, col)
    for flag in flags:
        numeric[flag] = calls[flag].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    keys = ["run", "stage"]
    if numeric.duplicated(keys).any():
        grouped = numeric.groupby(keys, sort=True, observed=True)
        per_stage = grouped[value_cols].mean()
        if flags:  # a run counts as flagged if any of its calls is; host noise: the worst
            per_stage[flags] = grouped[flags].max()
    else:  # the normal case, one call per run and stage: nothing to combine
        per_stage = numeric.set_index(keys).sort_index()
    wide = per_stage.unstack("stage")
    unreached = _unreached(calls, wide.index, stages)

    def by_stage(col: str, reached_only: bool = True) -> np.ndarray:
        """A run's values of one column, one column per measured stage (NaN if missing;
        0 if not reached, unless reached_only is False: then NaN too)."""
        values = wide[col].reindex(columns=stages).to_numpy(dtype=float)
        return np.where(unreached, 0.0, values) if reached_only else values

    workflow = pd.DataFrame(index=wide.index)
    with quiet():  # numpy's row sums and maxima propagate NaN: a missing stage is unknown
        for metric in METRICS:
            if metric.name not in per_stage or metric.workflow is None:
                continue
            if metric.workflow == "sum":
                workflow[metric.name] = by_stage(metric.name).sum(axis=1)
            elif metric.workflow == "max":
                workflow[metric.name] = by_stage(metric.name).max(axis=1)
            elif metric.workflow == "mean":  # over the stages that have a value
                workflow[metric.name] = np.nanmean(by_stage(metric.name, False), axis=1)
            elif metric.share_of and all(c in per_stage for c in metric.share_of):
                part, whole = (_known_sum(by_stage(c)) for c in metric.share_of)
                workflow[metric.name] = 100.0 * part / np.where(whole > 0, whole, np.nan)
            elif metric.rate_of and all(c in per_stage for c in metric.rate_of):
                count, duration_ms = (by_stage(c).sum(axis=1) for c in metric.rate_of)
                workflow[metric.name] = count / np.where(duration_ms > 0, duration_ms,
                                                         np.nan) * 1000.0
        for count in COUNT_COLUMNS:
            if count in per_stage:
                workflow[count] = by_stage(count).sum(axis=1)
        for flag in flags:  # flagged (or worst) over the stages; unknown if every stage is
            workflow[flag] = np.fmax.reduce(by_stage(flag, False), axis=1)
    workflow["stage"] = WORKFLOW_STAGE
    return pd.concat([per_stage.reset_index(), workflow.reset_index()], ignore_index=True)


def _unreached(calls: pd.DataFrame, runs: pd.Index, stages: list[str]) -> np.ndarray:
    """Runs x stages: True where the run's task had ended at an earlier stage."""
    mask = np.zeros((len(runs), len(stages)), dtype=bool)
    if "task_ended_by" not in calls:
        return mask
    ends = calls.loc[calls["task_ended_by"].notna()]
    row = {int(run): i for i, run in enumerate(runs)}
    for run, stage in zip(ends["run"], ends["stage"].astype(str), strict=True):
        mask[row[int(run)], stages.index(stage) + 1:] = True
    return mask


def _share_columns(name: str, calls: pd.DataFrame) -> tuple[str, str] | None:
    """The (part, whole) columns of a share metric, when calls hold both."""
    metric = METRIC_BY_NAME.get(name)
    if metric is None or metric.share_of is None:
        return None
    return metric.share_of if all(c in calls for c in metric.share_of) else None


def _call_values(calls: pd.DataFrame, name: str) -> pd.Series:
    """A column per call as float64; a share metric is 100 * part / whole, unknown where
    the whole is 0 (nothing to judge: an output without figures is not unfaithful)."""
    share = _share_columns(name, calls) if name not in calls else None
    if share is None:
        return calls[name].astype("float64")
    part, whole = (calls[c].astype("float64") for c in share)
    return 100.0 * part / whole.where(whole > 0)


def _known_sum(values: np.ndarray) -> np.ndarray:
    """Row sums over the known values; unknown only where a row has none (a stage that
    quotes no figures or has no required parts does not make the run's share unknown)."""
    known = ~np.isnan(values)
    return np.where(known.any(axis=1), np.where(known, values, 0.0).sum(axis=1), np.nan)


def split_stages(runs: pd.DataFrame) -> StageFrames:
    """Per-run values by stage, each indexed by run (sorted), in the stages' order (see
    stage_order; `workflow` last): split once, looked up often."""
    return {str(stage): group.drop(columns="stage").set_index("run").sort_index()
            for stage, group in runs.groupby("stage", sort=False)}


def stages_of(*arms: StageFrames) -> list[str]:
    """The stages of one or more arms, in order, each once."""
    return list(dict.fromkeys(stage for stages in arms for stage in stages))


def stage_values(stages: StageFrames, stage: str, metric: str) -> pd.Series:
    """Known per-run values of one stage and metric, indexed by run."""
    frame = stages.get(stage)
    if frame is None or metric not in frame:
        return pd.Series(dtype=float)
    return frame[metric].dropna()


def profile_names(calls: pd.DataFrame) -> str:
    """The arm's profile name(s), as recorded."""
    names = calls["profile"].dropna().unique().tolist()
    return ", ".join(sorted(str(n) for n in names))
