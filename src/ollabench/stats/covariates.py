"""Per-call covariates as control variates: how much of each primary comparison's noise the
host's readings explain (the CPU probe before each call, other processes' CPU, steal, load).

Analysis only: no verdict reads it; noise.csv carries the probe's figures (with_probe).
docs/statistics.md ("Per-call covariates") gives the figures measured on this project's
machines and why no estimator adjusts for them.
Everything is on the log scale of the verdict test; a run's covariate for a stage is its
call's reading (the log of the probe), for `workflow` the mean over the run's stages.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from ollabench.records.schema import ARMS
from ollabench.stats.core import on_test_scale, quiet
from ollabench.stats.grouping import measured_calls, stage_order
from ollabench.stats.metrics import WORKFLOW_STAGE

PROBE = "cpu_probe_ms"
COVARIATES = (PROBE, "host_other_cpu_pct", "host_steal_pct", "host_load_1m")
SHARE_COLUMNS = ("stage", "metric", "runs", "paired_sd_pct", "probe_mean_diff_pct", "probe_p_arm",
                 "other_cpu_mean_diff_pts", "other_cpu_p_arm", "probe_r_calls",
                 "probe_explains_calls_pct", "all_explain_calls_pct", "probe_r_paired",
                 "probe_explains_paired_pct", "all_explain_paired_pct", "probe_loo_paired_pct",
                 "other_cpu_loo_paired_pct", "all_loo_paired_pct")


def run_covariates(calls: pd.DataFrame, last_run: int) -> dict[str, dict[str, np.ndarray]]:
    """Per arm, per stage (and `workflow`), a (runs x COVARIATES) array, row i = run i + 1:
    each measured call's readings, the probe as its log; NaN where unknown."""
    measured = measured_calls(calls)
    stages = stage_order(measured)
    found: dict[str, dict[str, np.ndarray]] = {}
    for arm in ARMS:
        rows = measured[measured["arm"] == arm]
        values = pd.DataFrame({c: pd.to_numeric(rows[c], errors="coerce") if c in rows
                               else np.nan for c in COVARIATES}, index=rows.index)
        with quiet():
            values[PROBE] = np.log(values[PROBE].where(values[PROBE] > 0))
        values["run"], values["stage"] = rows["run"].astype(int), rows["stage"].astype(str)
        per_stage = values.groupby(["stage", "run"])[list(COVARIATES)].mean()
        arrays = {}
        for stage in stages:
            table = per_stage.loc[stage] if stage in per_stage.index.get_level_values(0) \
                else pd.DataFrame(columns=list(COVARIATES))
            arrays[stage] = table.reindex(range(1, last_run + 1)).to_numpy(dtype=float)
        if stages:
            with quiet():
                arrays[WORKFLOW_STAGE] = np.nanmean(np.stack([arrays[s] for s in stages]),
                                                    axis=0)
        found[arm] = arrays
    return found


def explained_pct(y: np.ndarray, x: np.ndarray, base: np.ndarray | None = None) -> float:
    """The share (%) of y's variance left after `base` (columns, an intercept always) that
    the columns of x explain, adjusted for the columns fitted (adjusted R-squared of the
    increment, so noise covariates read near 0, not above it): the variance a CUPED-style
    adjustment by x would remove, estimated without the in-sample optimism."""
    n = len(y)
    base = np.ones((n, 1)) if base is None else np.column_stack([np.ones(n), base])
    full = np.column_stack([base, x])
    if n <= full.shape[1] + 1:
        return math.nan
    sse_base = _sse(y, base)
    if sse_base <= 0:
        return math.nan
    ratio = (_sse(y, full) / (n - full.shape[1])) / (sse_base / (n - base.shape[1]))
    return float((1.0 - ratio) * 100.0)


def left_out_reduction_pct(y: np.ndarray, x: np.ndarray) -> float:
    """The share (%) of y's squared error around its mean that the adjustment by x removes
    when each value is predicted from a fit without it (leave-one-out): what the adjustment
    would do to a run it was not fitted on. Negative: it adds noise. Closed form: a left-out
    residual is the fitted residual / (1 - its leverage)."""
    n = len(y)
    if n < x.shape[1] + 3 or not np.isfinite(x).all():
        return math.nan
    design = np.column_stack([np.ones(n), x])
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    if rank < design.shape[1]:
        return math.nan
    leverage = np.sum(np.linalg.qr(design)[0] ** 2, axis=1)
    adjusted = (y - design @ coef) / (1.0 - leverage)
    plain_sse = float(np.sum(((y - y.mean()) * n / (n - 1)) ** 2))
    return float((1.0 - np.sum(adjusted ** 2) / plain_sse) * 100.0) if plain_sse > 0 else math.nan


def _sse(y: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sum((y - design @ coef) ** 2))


def _usable(x: np.ndarray) -> np.ndarray:
    """The covariate columns known throughout that vary (an unrecorded one, or a constant
    one such as steal 0 throughout, has nothing to explain with)."""
    return np.array([bool(np.isfinite(col).all() and np.std(col) > 0) for col in x.T],
                    dtype=bool)


def share_row(control: np.ndarray, treatment: np.ndarray, x_control: np.ndarray,
              x_treatment: np.ndarray) -> dict[str, float]:
    """For one primary's per-run values: the probe's and other processes' CPU's mean paired
    differences between the arms and their paired t-tests (a control variate must not
    depend on the arm; other processes' CPU, read during the call, can), and what the probe
    alone and all covariates together explain of the per-run values (arm as a factor) and of
    the paired differences."""
    c, t, on_log = on_test_scale(control, treatment)
    if not bool(on_log):
        return {}
    probe, other = 0, 1  # COVARIATES[0], COVARIATES[1]
    known = np.isfinite(c) & np.isfinite(t) & np.isfinite(x_control[:, probe]) \
        & np.isfinite(x_treatment[:, probe])
    if known.sum() < 3:  # no spread, no correlation: the figures are unknown
        return {"runs": int(known.sum())}
    c, t, xc, xt = c[known], t[known], x_control[known], x_treatment[known]
    values, arm = np.concatenate([c, t]), np.repeat([0.0, 1.0], len(c))
    stacked, diffs = np.vstack([xc, xt]), xt - xc
    calls_cols, paired_cols = _usable(stacked), _usable(diffs)
    with quiet():
        return {
            "runs": int(known.sum()),
            "paired_sd_pct": float(np.std(t - c, ddof=1) * 100),  # of the log difference
            "probe_mean_diff_pct": float(np.expm1(np.mean(diffs[:, probe])) * 100),
            "probe_p_arm": float(sps.ttest_1samp(diffs[:, probe], 0.0).pvalue),
            "other_cpu_mean_diff_pts": float(np.mean(diffs[:, other])),
            "other_cpu_p_arm": float(sps.ttest_1samp(diffs[:, other], 0.0).pvalue),
            "probe_r_calls": _r(_resid(values, arm), _resid(stacked[:, probe], arm)),
            "probe_explains_calls_pct": explained_pct(values, stacked[:, [probe]], arm),
            "all_explain_calls_pct": explained_pct(values, stacked[:, calls_cols], arm),
            "probe_r_paired": _r(t - c, diffs[:, probe]),
            "probe_explains_paired_pct": explained_pct(t - c, diffs[:, [probe]]),
            "all_explain_paired_pct": explained_pct(t - c, diffs[:, paired_cols]),
            "probe_loo_paired_pct": left_out_reduction_pct(t - c, diffs[:, [probe]]),
            "other_cpu_loo_paired_pct": left_out_reduction_pct(t - c, diffs[:, [other]]),
            "all_loo_paired_pct": left_out_reduction_pct(t - c, diffs[:, paired_cols]),
        }


def _resid(y: np.ndarray, arm: np.ndarray) -> np.ndarray:
    """y less its arm's mean."""
    return y - np.where(arm == 1, y[arm == 1].mean(), y[arm == 0].mean())


def _r(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def share_table(series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                calls: pd.DataFrame) -> pd.DataFrame:
    """One row per primary comparison (decisions.primary_series) of a level-1 run."""
    last_run = max((len(c) for c, _ in series.values()), default=0)
    covariates = run_covariates(calls, last_run)
    rows = []
    for (stage, metric), (control, treatment) in series.items():
        if stage not in covariates[ARMS[0]]:
            continue
        found = share_row(control, treatment, covariates[ARMS[0]][stage],
                          covariates[ARMS[1]][stage])
        if found:
            rows.append({"stage": stage, "metric": metric, **found})
    return pd.DataFrame(rows, columns=list(SHARE_COLUMNS))


NOISE_PROBE_COLUMNS = ("probe_r_paired", "probe_loo_paired_pct")


def with_probe(noise: pd.DataFrame, series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
               calls: pd.DataFrame) -> pd.DataFrame:
    """noise.csv with the probe's correlation with each primary's paired differences and the
    share of their variance it removes out of sample (unknown without probe readings)."""
    shares = share_table(series, calls)[["stage", "metric", *NOISE_PROBE_COLUMNS]]
    return noise.merge(shares, on=["stage", "metric"], how="left")
