"""Statistics over raw call records: summaries, arm comparisons, verdicts and data quality.

Only measured calls without an error that did not pay a model reload enter the statistics;
warm-ups, errors, reloads, outliers and unequal work are counted separately (quality.json)
so that the report can say what the numbers rest on. The unit of analysis is one value per
run, arm and stage: runs, not calls, are the repetitions of the schedule.
docs/statistics.md explains every rule here.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv
from scipy import stats as sps

from ollabench.errors import AggregateError, RecordError
from ollabench.files import Staging
from ollabench.loads import LOAD_EXCESS_MS, LOAD_FACTOR, is_model_load
from ollabench.paths import (
    CALLS_FILE,
    COMPARISONS_FILE,
    PER_RUN_FILE,
    PER_RUN_WIDE_FILE,
    QUALITY_FILE,
    SUMMARY_FILE,
)
from ollabench.records import (
    ARMS,
    MEASURED_STAGES,
    SCHEMA_VERSION,
    CallRecord,
    parse_calls,
    read_calls_table,
)

Direction = Literal["higher", "lower", "neither"]
WorkflowRule = Literal["sum", "max", "rate"]


@dataclass(frozen=True)
class Metric:
    """A column of the statistics: its unit, which direction is good, and how a run's stages
    combine into the `workflow` value (None: no meaningful whole-run value)."""

    name: str
    unit: str
    direction: Direction
    label: str
    workflow: WorkflowRule | None
    rate_of: tuple[str, str] | None = None  # (count column, duration column in ms)


METRICS: tuple[Metric, ...] = (
    Metric("ttft_ms", "ms", "lower", "TTFT", "sum"),
    Metric("e2e_ms", "ms", "lower", "end-to-end time", "sum"),
    Metric("eval_tok_s", "tok/s", "higher", "eval rate", "rate", ("output_tokens", "eval_ms")),
    Metric("prompt_tok_s", "tok/s", "higher", "prompt rate", "rate",
           ("prompt_tokens", "prompt_eval_ms")),
    Metric("load_ms", "ms", "lower", "load time", "sum"),
    Metric("prompt_eval_ms", "ms", "lower", "prompt eval time", "sum"),
    Metric("eval_ms", "ms", "lower", "eval time", "sum"),
    Metric("output_tokens", "tokens", "neither", "output tokens", "sum"),
    Metric("itl_p50_ms", "ms", "lower", "inter-token latency p50", None),
    Metric("itl_p95_ms", "ms", "lower", "inter-token latency p95", None),
    Metric("itl_max_ms", "ms", "lower", "inter-token latency max", "max"),
)
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
HEADLINE_METRICS = ("ttft_ms", "eval_tok_s", "e2e_ms")

WORKFLOW_STAGE = "workflow"
STAGES = (*MEASURED_STAGES, WORKFLOW_STAGE)
CONTROL, TREATMENT = ARMS

ALPHA = 0.05
POWER = 0.80
OUTLIER_Z = 3.5
OUTLIER_MIN_VALUES = 5  # fewer values per arm: no median and MAD to judge a value against
MAD_TO_SD = 0.6745  # robust z = 0.6745 (x - median) / MAD (Iglewicz and Hoaglin)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# Above this many values per arm the rank tests use scipy's normal approximations computed
# from sorted arrays: the same p-values, without scipy's stable argsort (10x slower).
SCIPY_RANK_TEST_MAX = 5_000
UNEQUAL_TOKENS_PCT = 20.0
CAUSE_CODES = ("reloaded", "model_load", "truncated", "output_length")
CAUSE_FIGURES = ("load_ms", "warm_load_ms", "output_tokens", "median_output_tokens")

# PER_RUN_WIDE_FILE holds the per-run values one row per run, a column per stage x arm x
# metric: the shape DVC plots draw as one series per column (`dvc plots show`/`plots diff`).
PLOTTED_METRICS = ("ttft_ms", "eval_tok_s", "e2e_ms")
PER_RUN_COLUMNS = ("run", "arm", "stage", "ttft_ms", "eval_tok_s", "e2e_ms", "output_tokens")
SUMMARY_COLUMNS = ("arm", "profile", "stage", "metric", "n", "mean", "sd", "cv_pct", "median",
                   "p5", "p95", "min", "max", "ci_low", "ci_high")
COMPARISON_COLUMNS = (
    "stage", "metric", "better", "n_control", "n_treatment", "control_mean", "treatment_mean",
    "control_median", "treatment_median", "mean_diff_pct", "median_diff_pct", "ci_low_pct",
    "ci_high_pct", "p_welch", "p_mannwhitney", "p_paired", "p_holm", "hedges_g",
    "cliffs_delta", "mde_pct", "verdict",
)

# The typed columns of a calls frame; the rest of a record (output text, options, times of
# day) stays on disk.
INT_COLUMNS = ("seq", "run", "attempt", "schema_version")
LABEL_COLUMNS = ("arm", "profile", "stage", "phase", "done_reason")
FLAG_COLUMNS = ("reloaded", "truncated")
EXTRA_NUMERIC = ("prompt_tokens", "prompt_cached_tokens", "total_ms", "num_ctx")
FLOAT_COLUMNS = (*METRIC_BY_NAME, *EXTRA_NUMERIC)
FRAME_COLUMNS = (*INT_COLUMNS, *LABEL_COLUMNS, "error", *FLOAT_COLUMNS, *FLAG_COLUMNS)
IDENTITY_COLUMNS = ("seq", "run", "arm", "stage", "phase", "schema_version")
# Numbers as float64 whatever the record's type (a count may be unknown: NaN, never 0).
CALLS_SCHEMA = pa.schema(
    [(c, pa.int64()) for c in INT_COLUMNS]
    + [(c, pa.string()) for c in (*LABEL_COLUMNS, "error")]
    + [(c, pa.float64()) for c in FLOAT_COLUMNS]
    + [(c, pa.bool_()) for c in FLAG_COLUMNS])

StageFrames = dict[str, pd.DataFrame]  # stage -> per-run values indexed by run
T = TypeVar("T")



# --------------------------------------------------------------------------- frames


def records_frame(records: list[CallRecord]) -> pd.DataFrame:
    """One row per call with typed columns (unknown values as NaN / <NA>, never 0)."""
    data = {col: [getattr(r, col) for r in records] for col in FRAME_COLUMNS}
    return _typed(pd.DataFrame(data, columns=list(FRAME_COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 (None -> NaN), flags as nullable booleans, labels as categories."""
    types: dict[str, Any] = {}
    for col in frame.columns:
        if col in INT_COLUMNS:
            types[col] = "Int64"
        elif col in FLAG_COLUMNS:
            types[col] = "boolean"
        elif col in FLOAT_COLUMNS:
            types[col] = "float64"
        elif col in LABEL_COLUMNS:
            types[col] = "category"
    return frame.astype(types)


def read_calls(raw_dir: Path) -> pd.DataFrame:
    """The calls of raw_dir as a typed frame of the columns the statistics use: from the
    columnar copy when it matches calls.jsonl, else parsed from calls.jsonl."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return _from_calls(raw_dir, pool, lambda calls: calls)[0]


def _from_calls(raw_dir: Path, pool: Executor,
                compute: Callable[[pd.DataFrame], T]) -> tuple[T, Path]:
    """compute(calls) on the columnar copy of the calls while the copy is checked against
    calls.jsonl in `pool` (see records.read_calls_table); computed again from calls.jsonl
    if the check fails, so that a stale copy never decides a result or an error. Returns
    the result and the file it was computed from."""
    path = raw_dir / CALLS_FILE
    with _as_aggregate_error():
        table, source, matches = read_calls_table(raw_dir, CALLS_SCHEMA, pool)
    try:
        result = compute(_calls_frame(table, path))
    except AggregateError:
        if matches.result():
            raise
    else:
        if matches.result():
            return result, source
    with _as_aggregate_error():
        table = parse_calls(path, CALLS_SCHEMA)
    return compute(_calls_frame(table, path)), path


@contextmanager
def _as_aggregate_error() -> Iterator[None]:
    try:
        yield
    except RecordError as exc:
        raise AggregateError(str(exc)) from exc


def _calls_frame(table: pa.Table, path: Path) -> pd.DataFrame:
    """Labels as categories (dictionary-encoded by records), flags as nullable booleans,
    integers as nullable Int64. The table's memory is released as it is converted: do not
    use it afterwards."""
    frame = table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype(),
                                          pa.int64(): pd.Int64Dtype()}.get,
                            self_destruct=True, split_blocks=True)
    pa.default_memory_pool().release_unused()  # the read's buffers, kept by the allocator
    for col in IDENTITY_COLUMNS:
        if (lacking := int(frame[col].isna().sum())):
            raise AggregateError(f"{path}: {lacking} record(s) lack {col}")
    if (frame["schema_version"] != SCHEMA_VERSION).any():
        found = sorted(frame["schema_version"].unique().tolist())
        raise AggregateError(f"{path}: record format version(s) {found} found; this "
                             f"ollabench reads version {SCHEMA_VERSION}; re-run the bench stage")
    return frame


def measured_calls(calls: pd.DataFrame) -> pd.DataFrame:
    """Calls that enter the statistics: phase `measured` (when known), no error, and not
    flagged as having paid a model reload."""
    keep = pd.Series(True, index=calls.index)
    if "phase" in calls:
        keep &= calls["phase"] == "measured"
    if "error" in calls:
        keep &= calls["error"].isna()
    if "reloaded" in calls:
        keep &= ~_flag(calls, "reloaded")
    return calls.loc[keep]


def _flag(calls: pd.DataFrame, flag: str) -> pd.Series:
    """A flag column as plain booleans: unknown is not flagged."""
    if flag not in calls:
        return pd.Series(False, index=calls.index)
    return calls[flag].astype("boolean").fillna(False).astype(bool)


def per_run_values(calls: pd.DataFrame) -> pd.DataFrame:
    """One row per run and stage (the mean of its calls, normally exactly one), plus the
    `workflow` stage: the run's stages combined by each metric's rule, unknown when a stage
    is missing or unknown. Columns: run, stage, the metrics present, prompt_tokens, and the
    flags as 1.0 / 0.0 / NaN (unknown)."""
    value_cols = [c for c in (*METRIC_BY_NAME, "prompt_tokens") if c in calls]
    flags = [c for c in FLAG_COLUMNS if c in calls]
    stage = calls["stage"].astype("category").cat.remove_unused_categories()
    numeric = pd.DataFrame({"run": calls["run"].astype("int64"), "stage": stage})
    for col in value_cols:
        numeric[col] = calls[col].astype("float64")
    for flag in flags:
        numeric[flag] = calls[flag].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    keys = ["run", "stage"]
    if numeric.duplicated(keys).any():
        grouped = numeric.groupby(keys, sort=True, observed=True)
        per_stage = grouped[value_cols].mean()
        if flags:  # a run counts as flagged if any of its calls is
            per_stage[flags] = grouped[flags].max()
    else:  # the normal case, one call per run and stage: nothing to combine
        per_stage = numeric.set_index(keys).sort_index()
    wide = per_stage.unstack("stage")

    def by_stage(col: str) -> np.ndarray:
        """A run's values of one column, one column per measured stage (NaN if missing)."""
        return wide[col].reindex(columns=list(MEASURED_STAGES)).to_numpy(dtype=float)

    workflow = pd.DataFrame(index=wide.index)
    with _quiet():  # numpy's row sums and maxima propagate NaN: a missing stage is unknown
        for metric in METRICS:
            if metric.name not in per_stage or metric.workflow is None:
                continue
            if metric.workflow == "sum":
                workflow[metric.name] = by_stage(metric.name).sum(axis=1)
            elif metric.workflow == "max":
                workflow[metric.name] = by_stage(metric.name).max(axis=1)
            elif metric.rate_of and all(c in per_stage for c in metric.rate_of):
                count, duration_ms = (by_stage(c).sum(axis=1) for c in metric.rate_of)
                workflow[metric.name] = count / np.where(duration_ms > 0, duration_ms,
                                                         np.nan) * 1000.0
        if "prompt_tokens" in per_stage:
            workflow["prompt_tokens"] = by_stage("prompt_tokens").sum(axis=1)
        for flag in flags:  # flagged if any stage is; unknown only if every stage is
            workflow[flag] = np.fmax.reduce(by_stage(flag), axis=1)
    workflow["stage"] = WORKFLOW_STAGE
    return pd.concat([per_stage.reset_index(), workflow.reset_index()], ignore_index=True)


def split_stages(runs: pd.DataFrame) -> StageFrames:
    """Per-run values by stage, each indexed by run (sorted): split once, looked up often."""
    return {str(stage): group.drop(columns="stage").set_index("run").sort_index()
            for stage, group in runs.groupby("stage", sort=False)}


def _values(stages: StageFrames, stage: str, metric: str) -> pd.Series:
    """Known per-run values of one stage and metric, indexed by run."""
    frame = stages.get(stage)
    if frame is None or metric not in frame:
        return pd.Series(dtype=float)
    return frame[metric].dropna()


# --------------------------------------------------------------------------- vectorized core


@contextmanager
def _quiet() -> Iterator[None]:
    """Empty or constant groups are expected; their NaN results carry the meaning."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def on_test_scale(control: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Both arms on the scale of the verdict test, along the last axis: log values (the
    metrics are ratio-scaled and right-skewed), or raw values for a row that holds zero or
    negative numbers. Returns (control, treatment, on_log) with on_log per row."""
    with _quiet():
        on_log = np.all(~(control <= 0), axis=-1) & np.all(~(treatment <= 0), axis=-1)
        log_row = np.expand_dims(on_log, -1)
        c = np.where(log_row, np.log(np.where(control > 0, control, np.nan)), control)
        t = np.where(log_row, np.log(np.where(treatment > 0, treatment, np.nan)), treatment)
    return c, t, on_log


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """0.6745 (x - median) / MAD of `reference`, along the last axis: +-inf where the MAD is
    0 and x differs from the median, NaN where x equals it or is missing."""
    return _z(values, *_centre_and_mad(reference))


def _centre_and_mad(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with _quiet():
        median = nanmedian(values)
        return median, nanmedian(np.abs(values - median))


def nanmedian(values: np.ndarray) -> np.ndarray:
    """np.nanmedian(values, axis=-1, keepdims=True) through a full sort, which numpy
    vectorizes and runs several times faster than the partition np.nanmedian uses."""
    values = np.asarray(values, dtype=float)
    if values.shape[-1] == 0:
        return np.full((*values.shape[:-1], 1), np.nan)
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    known = np.sum(~np.isnan(values), axis=-1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum(known - 1, 0) // 2, axis=-1)
    high = np.take_along_axis(ordered, known // 2 - (known == 0), axis=-1)
    return np.where(known > 0, (low + high) / 2.0, np.nan)


def _z(values: np.ndarray, median: np.ndarray, mad: np.ndarray) -> np.ndarray:
    with _quiet():
        return MAD_TO_SD * (values - median) / mad


def outlier_flags(control: np.ndarray, treatment: np.ndarray) -> dict[str, np.ndarray]:
    """Outliers of both arms, on the test scale (see on_test_scale).

    `z_<arm>` is each value's robust z within its own arm (NaN where the arm's MAD is 0:
    no spread to measure against, so nothing is flagged); `flagged_<arm>` marks |z| above
    OUTLIER_Z in arms of at least OUTLIER_MIN_VALUES values. `left_out_<arm>` marks the
    flagged values that are also that far from the other arm: far from every level the
    data shows, so no profile explains them (a model load, a stall). Only those leave the
    verdict test; trimming values that are merely in the tail of a small sample would make
    the test find differences that are not there."""
    c, t, _ = on_test_scale(control, treatment)
    return _flags_on_test_scale(c, t)


def _flags_on_test_scale(c: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    levels = {CONTROL: _centre_and_mad(c), TREATMENT: _centre_and_mad(t)}
    out: dict[str, np.ndarray] = {}
    with _quiet():
        for arm, other, own in ((CONTROL, TREATMENT, c), (TREATMENT, CONTROL, t)):
            z_own = _z(own, *levels[arm])
            z_own = np.where(np.isfinite(z_own), z_own, np.nan)
            enough = np.sum(~np.isnan(own), axis=-1, keepdims=True) >= OUTLIER_MIN_VALUES
            flagged = (np.abs(z_own) > OUTLIER_Z) & enough
            out[f"z_{arm}"] = z_own
            out[f"flagged_{arm}"] = flagged
            out[f"left_out_{arm}"] = flagged & (np.abs(_z(own, *levels[other])) > OUTLIER_Z)
    return out


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample variance along the last axis, ignoring NaN."""
    with _quiet():
        n = np.sum(~np.isnan(values), axis=-1)
        mean = np.nansum(values, axis=-1) / n
        sq = np.nansum((values - np.expand_dims(mean, -1)) ** 2, axis=-1)
        var = np.where(n > 1, sq / (n - 1), np.nan)
    return n, mean, var


def verdict_test(control: np.ndarray, treatment: np.ndarray) -> dict[str, np.ndarray]:
    """The verdict test of treatment against control, along the last axis (NaN = missing):
    Welch's t-test on the test scale with the left-out outliers removed.

    Returns p_welch, effect (treatment - control on the test scale), mde_pct (the relative
    change this design detects with POWER at ALPHA, from the observed spread), hedges_g,
    n_left_out and the outlier flags (see outlier_flags). Works on one comparison (1-D) or
    many at once (2-D)."""
    scaled_c, scaled_t, on_log = on_test_scale(control, treatment)
    flags = _flags_on_test_scale(scaled_c, scaled_t)
    with _quiet():
        # Centred on the pooled median, so that equal values are exactly 0 and rounding
        # cannot fake a spread (a constant token count would otherwise "differ").
        centre = nanmedian(np.concatenate([scaled_c, scaled_t], axis=-1))
        c = np.where(flags[f"left_out_{CONTROL}"], np.nan, scaled_c - centre)
        t = np.where(flags[f"left_out_{TREATMENT}"], np.nan, scaled_t - centre)
        n_c, mean_c, var_c = _moments(c)
        n_t, mean_t, var_t = _moments(t)
        se2 = var_c / n_c + var_t / n_t
        effect = mean_t - mean_c
        df = se2**2 / ((var_c / n_c) ** 2 / (n_c - 1) + (var_t / n_t) ** 2 / (n_t - 1))
        p = 2.0 * sps.t.sf(np.abs(effect) / np.sqrt(se2), df)
        # No spread in either arm: the difference is exact, and so is the test.
        p = np.where(se2 == 0, np.where(effect == 0, 1.0, 0.0), p)
        delta = (sps.t.ppf(1 - ALPHA / 2, df) + sps.t.ppf(POWER, df)) * np.sqrt(se2)
        delta = np.where(se2 == 0, 0.0, delta)
        mde_pct = np.where(on_log, np.expm1(delta),
                           delta / np.abs(mean_c + np.squeeze(centre, -1))) * 100.0
        pooled = ((n_c - 1) * var_c + (n_t - 1) * var_t) / (n_c + n_t - 2)
        correction = 1.0 - 3.0 / (4.0 * (n_c + n_t) - 9.0)
        hedges_g = np.where(pooled > 0, effect / np.sqrt(pooled) * correction, np.nan)
    n_left_out = (np.sum(flags[f"left_out_{CONTROL}"], axis=-1)
                  + np.sum(flags[f"left_out_{TREATMENT}"], axis=-1))
    return {"p_welch": p, "effect": effect, "mde_pct": mde_pct, "hedges_g": hedges_g,
            "n_left_out": n_left_out, **flags}


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjustment of a 1-D array of p-values; NaN entries are not tests."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def verdicts(p_holm: np.ndarray, effect: np.ndarray, mde_pct: np.ndarray,
             direction: np.ndarray | str, threshold_pct: float) -> np.ndarray:
    """better / worse (different for undirected metrics) when the adjusted test is
    significant; else `no significant difference` if the design could have seen a change
    of threshold_pct, else `inconclusive`."""
    with _quiet():
        significant = np.asarray(p_holm) < ALPHA
        up = np.asarray(effect) > 0
        good = np.where(np.asarray(direction) == "higher", up, ~up)
        label = np.where(np.asarray(direction) == "neither", "different",
                         np.where(good, "better", "worse"))
        calm = np.where(np.asarray(mde_pct) <= threshold_pct, "no significant difference",
                        "inconclusive")
    return np.where(significant, label, calm)


def bootstrap_medians(values: np.ndarray, resamples: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` bootstrap resamples of `values`, drawn exactly and without
    materializing a single resample: the k-th smallest of n draws from the sorted sample is
    sorted[floor(n U_(k))], and the uniform order statistic U_(k) ~ Beta(k, n - k + 1).
    Cost O(n log n + resamples) instead of O(n * resamples)."""
    ordered = np.sort(values)
    n = len(ordered)
    half = n // 2
    if n % 2:
        return ordered[_order_index(rng.beta(half + 1, half + 1, resamples), n)]
    low = rng.beta(half, half + 1, resamples)
    high = low + (1.0 - low) * rng.beta(1, n - half, resamples)  # next of the n uniforms
    return (ordered[_order_index(low, n)] + ordered[_order_index(high, n)]) / 2.0


def _order_index(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


def median_diff_ci(control: np.ndarray, treatment: np.ndarray,
                   rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile-bootstrap CI of (median_t - median_c) / median_c in percent."""
    if len(control) == 0 or len(treatment) == 0:
        return math.nan, math.nan
    with _quiet():
        med_c = bootstrap_medians(control, BOOTSTRAP_RESAMPLES, rng)
        med_t = bootstrap_medians(treatment, BOOTSTRAP_RESAMPLES, rng)
        rel = (med_t - med_c) / np.abs(med_c) * 100.0
        low, high = np.nanpercentile(rel, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def _mann_whitney(control: np.ndarray, treatment: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U p-value and Cliff's delta (P(t > c) - P(t < c))."""
    n_c, n_t = len(control), len(treatment)
    if not n_c or not n_t:
        return math.nan, math.nan
    if max(n_c, n_t) <= SCIPY_RANK_TEST_MAX:
        with _quiet():
            result = sps.mannwhitneyu(treatment, control, alternative="two-sided")
        u_t, p = float(result.statistic), float(result.pvalue)
    else:  # scipy's normal approximation, with tie and continuity corrections
        both = np.sort(np.concatenate([control, treatment]))
        n = n_c + n_t
        u_t = _rank_sum(both, treatment) - n_t * (n_t + 1) / 2
        spread = np.sqrt(n_c * n_t / 12 * ((n + 1) - _tie_term(both) / (n * (n - 1))))
        with _quiet():  # all values tied: no spread, z = -inf and p = 1, as in scipy
            z = (max(u_t, n_c * n_t - u_t) - n_c * n_t / 2 - 0.5) / spread
        p = min(1.0, 2.0 * float(sps.norm.sf(z)))
    return p, 2.0 * u_t / (n_c * n_t) - 1.0


def _paired_wilcoxon(control: pd.Series, treatment: pd.Series) -> float:
    """Wilcoxon signed-rank p on per-run pairs; NaN unless every run has both arms."""
    if len(control) < 2 or not control.index.equals(treatment.index):
        return math.nan
    diffs = treatment.to_numpy() - control.to_numpy()
    if not np.any(diffs):
        return 1.0
    if len(diffs) <= SCIPY_RANK_TEST_MAX:
        with _quiet():
            return float(sps.wilcoxon(diffs).pvalue)
    # scipy's normal approximation: zero differences dropped, tie-corrected, no continuity
    diffs = diffs[diffs != 0]
    n = len(diffs)
    sizes = np.sort(np.abs(diffs))
    plus = _rank_sum(sizes, np.abs(diffs[diffs > 0]))
    spread = math.sqrt((n * (n + 1) * (2 * n + 1) - _tie_term(sizes) / 2) / 24)
    return float(2.0 * sps.norm.sf(abs(plus - n * (n + 1) / 4) / spread))


def _rank_sum(ordered: np.ndarray, values: np.ndarray) -> float:
    """Sum of the average ranks (1-based, ties averaged) of `values` within `ordered`."""
    keys = np.sort(values)  # sorted keys make each binary search start where the last ended
    first = np.searchsorted(ordered, keys, "left")
    if not _has_ties(ordered):  # every value is alone: its rank is its position + 1
        return float(first.sum() + len(values))
    last = np.searchsorted(ordered, keys, "right")
    return float((first.sum() + last.sum() + len(values)) / 2)


def _tie_term(ordered: np.ndarray) -> float:
    """Sum of t^3 - t over the groups of equal values of a sorted array."""
    if not _has_ties(ordered):
        return 0.0
    sizes = np.diff(np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True]))
    return float(np.sum(sizes.astype(float) ** 3 - sizes))


def _has_ties(ordered: np.ndarray) -> bool:
    return bool(np.any(ordered[1:] == ordered[:-1]))


# --------------------------------------------------------------------------- tables


def _describe(values: np.ndarray) -> dict[str, float]:
    """n, mean, sample sd, CV, median, p5, p95, min, max and the t-based 95% CI of the mean."""
    n = len(values)
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    half_width = sps.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {"n": n, "mean": mean, "sd": sd,
            "cv_pct": sd / abs(mean) * 100.0 if mean else math.nan,
            "median": float(median), "p5": float(p5), "p95": float(p95),
            "min": float(values.min()), "max": float(values.max()),
            "ci_low": mean - half_width, "ci_high": mean + half_width}


def summarize(stages: StageFrames, arm: str, profile: str) -> list[dict[str, Any]]:
    """summary.csv rows of one arm: every stage x metric with at least one known value."""
    rows = []
    for stage in STAGES:
        for metric in METRICS:
            values = _values(stages, stage, metric.name).to_numpy(dtype=float)
            if len(values):
                rows.append({"arm": arm, "profile": profile, "stage": stage,
                             "metric": metric.name, **_describe(values)})
    return rows


def summary_table(runs: dict[str, StageFrames],
                  by_arm: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """summary.csv: both arms' rows (see summarize)."""
    return pd.DataFrame(
        [row for arm in ARMS for row in summarize(runs[arm], arm, _profile(by_arm[arm]))],
        columns=list(SUMMARY_COLUMNS))


def analyse(control: StageFrames, treatment: StageFrames, threshold_pct: float,
            seed: int = BOOTSTRAP_SEED) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The comparisons table from both arms' per-run values (see split_stages), and the
    outliers the verdict test found on the way, with what their records show."""
    arms = {CONTROL: control, TREATMENT: treatment}
    causes = {arm: {stage: _cause_table(frame) for stage, frame in stages.items()}
              for arm, stages in arms.items()}
    rows, outliers = [], []
    for stage_index, stage in enumerate(STAGES):
        for metric_index, metric in enumerate(METRICS):
            values = {CONTROL: _values(control, stage, metric.name),
                      TREATMENT: _values(treatment, stage, metric.name)}
            if all(v.empty for v in values.values()):
                continue
            rng = np.random.default_rng([seed, stage_index, metric_index])
            row, test = _compare_one(stage, metric, values, rng)
            rows.append(row)
            for arm in arms:
                if stage in causes[arm]:
                    outliers += _outliers(arm, row, values[arm], causes[arm][stage], test)
    table = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "effect"])
    if not table.empty:
        table["p_holm"] = holm(table["p_welch"].to_numpy(dtype=float))
        table["verdict"] = verdicts(table["p_holm"].to_numpy(), table["effect"].to_numpy(),
                                    table["mde_pct"].to_numpy(dtype=float),
                                    table["better"].to_numpy(), threshold_pct)
    return table.drop(columns="effect"), outliers


def _compare_one(stage: str, metric: Metric, values: dict[str, pd.Series],
                 rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    c_runs, t_runs = values[CONTROL], values[TREATMENT]
    c = c_runs.to_numpy(dtype=float)
    t = t_runs.to_numpy(dtype=float)
    test = verdict_test(c, t)
    p_mw, cliffs = _mann_whitney(c, t)
    ci_low, ci_high = median_diff_ci(c, t, rng)
    with _quiet():
        c_mean, t_mean = np.mean(c), np.mean(t)
        c_median, t_median = (float(nanmedian(values)[0]) for values in (c, t))
    row = {
        "stage": stage, "metric": metric.name, "better": metric.direction,
        "n_control": len(c), "n_treatment": len(t),
        "control_mean": c_mean, "treatment_mean": t_mean,
        "control_median": c_median, "treatment_median": t_median,
        "mean_diff_pct": _relative_pct(c_mean, t_mean),
        "median_diff_pct": _relative_pct(c_median, t_median),
        "ci_low_pct": ci_low, "ci_high_pct": ci_high,
        "p_welch": float(test["p_welch"]), "p_mannwhitney": p_mw,
        "p_paired": _paired_wilcoxon(c_runs, t_runs), "p_holm": math.nan,
        "hedges_g": float(test["hedges_g"]), "cliffs_delta": cliffs,
        "mde_pct": float(test["mde_pct"]), "verdict": "", "effect": float(test["effect"]),
    }
    return row, test


def _relative_pct(control: float, treatment: float) -> float:
    """(treatment - control) / control x 100, signed as arithmetic; NaN if undefined."""
    if not (math.isfinite(control) and math.isfinite(treatment)) or control == 0:
        return math.nan
    return (treatment - control) / abs(control) * 100.0


def compare_arms(control: pd.DataFrame, treatment: pd.DataFrame, threshold_pct: float,
                 seed: int = 0) -> pd.DataFrame:
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
    return analyse(per_arm[0], per_arm[1], threshold_pct, seed)[0]


def headline(comparisons: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """metrics.json for `dvc exp show`: per stage, the headline metrics' medians and verdict."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in comparisons.itertuples(index=False):
        if row.metric in HEADLINE_METRICS:
            out.setdefault(row.stage, {})[row.metric] = {
                "control_median": _rounded(row.control_median),
                "treatment_median": _rounded(row.treatment_median),
                "median_diff_pct": _rounded(row.median_diff_pct),
                "p_holm": _rounded(row.p_holm),
                "verdict": row.verdict,
            }
    return out


def _rounded(value: float) -> float | None:
    """Four significant digits keep `dvc exp show` narrow; NaN becomes null."""
    return None if not math.isfinite(value) else float(f"{value:.4g}")


# --------------------------------------------------------------------------- data quality


def data_quality(by_arm: dict[str, pd.DataFrame], measured: dict[str, pd.DataFrame],
                 runs: dict[str, StageFrames], threshold_pct: float) -> dict[str, Any]:
    """Facts the report needs to qualify the numbers, from every call of each arm, its
    measured calls and per-run values: counts, every failed call, reloads, load spikes,
    truncations, length stops, unknown values, and checks that both arms did the same work.
    (The outliers come from the comparisons: see analyse.)"""
    calls = pd.concat([by_arm[arm] for arm in ARMS])
    arms = {arm: _arm_counts(by_arm[arm], measured[arm], runs[arm]) for arm in ARMS}
    return {
        "settings": {"threshold_pct": threshold_pct, "alpha": ALPHA, "power": POWER,
                     "outlier_z": OUTLIER_Z, "outlier_min_values": OUTLIER_MIN_VALUES,
                     "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
                     "seed": BOOTSTRAP_SEED, "unequal_tokens_pct": UNEQUAL_TOKENS_PCT,
                     "load_factor": LOAD_FACTOR, "load_excess_ms": LOAD_EXCESS_MS},
        "arms": arms,
        "errors": _call_list(calls.loc[calls["error"].notna()], ["error"]),
        "load_spikes": [s for arm in ARMS for s in _load_spikes(runs[arm], arm)],
        "reloaded_calls": _call_list(calls.loc[_flag(calls, "reloaded")
                                               & (calls["phase"] == "measured")], ["load_ms"]),
        "truncated_calls": _call_list(calls.loc[_flag(calls, "truncated")], ["num_ctx"]),
        "unknown_values": {arm: _unknown_counts(measured[arm]) for arm in ARMS},
        "duplicate_keys": int(calls.duplicated(["seq", "attempt"]).sum()),
        "unequal_work": _unequal_work(arms, runs),
    }


def _by_arm(calls: pd.DataFrame) -> dict[str, pd.DataFrame]:
    arms = calls["arm"]
    return {str(arm): calls.loc[arms == arm] for arm in arms.unique() if not pd.isna(arm)}


def _arm_counts(calls: pd.DataFrame, measured: pd.DataFrame,
                stages: StageFrames) -> dict[str, Any]:
    warmups = calls.loc[calls["phase"] != "measured"]
    return {
        "profile": _profile(calls),
        "calls": len(calls),
        "measured": len(measured),
        "warmups": len(warmups),
        "warmup_load_ms_median": _none_if_nan(warmups["load_ms"].median()),
        "warmup_load_ms_mean": _none_if_nan(warmups["load_ms"].mean()),
        "errors": int(calls["error"].notna().sum()),
        "reloaded": int((_flag(calls, "reloaded") & (calls["phase"] == "measured")).sum()),
        "truncated": int(_flag(calls, "truncated").sum()),
        "length_stops": _length_stops(measured),
        "retries": int((calls["attempt"] > 1).sum()),
        "runs": len(stages.get(WORKFLOW_STAGE, ())),  # a row for every run measured at all
    }


def _profile(calls: pd.DataFrame) -> str:
    """The arm's profile name(s), as recorded."""
    names = calls["profile"].dropna().unique().tolist()
    return ", ".join(sorted(str(n) for n in names))


def _call_list(calls: pd.DataFrame, extra: list[str]) -> list[dict[str, Any]]:
    """Calls as plain records in schedule order."""
    columns = ["seq", "run", "arm", "stage", "phase", "attempt",
               *(c for c in extra if c in calls)]
    ordered = calls[columns].sort_values(["seq", "attempt"], kind="stable")
    return ordered.astype("object").to_dict("records")


def _load_spikes(stages: StageFrames, arm: str) -> list[dict[str, Any]]:
    """Measured runs that paid a model load without the reload flag saying so."""
    spikes = []
    for stage in MEASURED_STAGES:
        if stage not in stages:
            continue
        table = _cause_table(stages[stage])
        spikes += [{"arm": arm, "run": int(r.Index), "stage": stage,
                    "load_ms": float(r.load_ms), "warm_load_ms": float(r.warm_load_ms)}
                   for r in table.loc[table["model_load"]].itertuples()]
    return spikes


def _outliers(arm: str, row: dict[str, Any], values: pd.Series, causes: pd.DataFrame,
              test: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The runs of one arm whose robust z exceeds OUTLIER_Z in the comparison `row`, whether
    the verdict test left them out, and what their records show (see _cause_table)."""
    flagged = np.flatnonzero(test[f"flagged_{arm}"])
    if not len(flagged):
        return []
    shown = causes.loc[values.index[flagged]]
    found = pd.DataFrame({
        "arm": arm, "stage": row["stage"], "metric": row["metric"],
        "run": values.index[flagged].astype("int64"), "value": values.to_numpy()[flagged],
        "median": float(row[f"{arm}_median"]), "robust_z": test[f"z_{arm}"][flagged],
        "left_out": test[f"left_out_{arm}"][flagged],
    })
    codes = shown[list(CAUSE_CODES)].to_numpy(dtype=bool)
    found["causes"] = [[c for c, on in zip(CAUSE_CODES, flags, strict=True) if on]
                       for flags in codes]
    figures = shown[list(CAUSE_FIGURES)].astype(float)
    for key in CAUSE_FIGURES:
        found[key] = figures[key].to_numpy()
    return [_jsonable(o) for o in found.to_dict("records")]


def _cause_table(stage_runs: pd.DataFrame) -> pd.DataFrame:
    """Per run of one arm and stage, what its record shows that could explain an outlier:
    a reload flag, a model load (a load time far above the stage's warm level, its median),
    a truncated prompt, or an output length far from the stage's median. Codes only; the
    report words them."""
    unknown = pd.Series(np.nan, index=stage_runs.index)
    load_ms = stage_runs.get("load_ms", unknown)
    tokens = stage_runs.get("output_tokens", unknown)
    warm_ms, median_tokens = load_ms.median(), tokens.median()
    with _quiet():
        off_length = (tokens - median_tokens).abs() / median_tokens * 100 > UNEQUAL_TOKENS_PCT
    return pd.DataFrame({
        "reloaded": stage_runs.get("reloaded", unknown) == 1,
        "model_load": is_model_load(load_ms, warm_ms),
        "truncated": stage_runs.get("truncated", unknown) == 1,
        "output_length": off_length & (median_tokens > 0),
        "load_ms": load_ms, "warm_load_ms": warm_ms,
        "output_tokens": tokens, "median_output_tokens": median_tokens,
    })


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _length_stops(measured: pd.DataFrame) -> dict[str, int]:
    """Measured calls per stage that stopped at the output cap (`done_reason: length`)."""
    if "done_reason" not in measured:
        return {}
    stages = measured.loc[measured["done_reason"] == "length", "stage"]
    return {stage: int((stages == stage).sum()) for stage in MEASURED_STAGES}


def _unknown_counts(measured: pd.DataFrame) -> dict[str, int]:
    """Per metric, measured calls whose value is unknown while others know it."""
    counts = {m.name: int(measured[m.name].isna().sum()) for m in METRICS if m.name in measured}
    return {name: n for name, n in counts.items() if 0 < n < len(measured)}


def _unequal_work(arms: dict[str, dict[str, Any]],
                  runs: dict[str, StageFrames]) -> list[dict[str, Any]]:
    """Signs that the arms did not do the same work, each with both arms' figures."""
    found = []
    for stage in MEASURED_STAGES:
        tokens = [_values(runs[arm], stage, "output_tokens").mean() for arm in ARMS]
        diff_pct = _relative_pct(*tokens)
        if abs(diff_pct) > UNEQUAL_TOKENS_PCT:
            found.append({"check": "output_tokens", "stage": stage, "control": tokens[0],
                          "treatment": tokens[1], "diff_pct": diff_pct})
        stops = [arms[arm]["length_stops"].get(stage, 0) for arm in ARMS]
        if stops[0] != stops[1]:
            found.append({"check": "length_stops", "stage": stage, "control": stops[0],
                          "treatment": stops[1]})
    for check, key in (("truncated", "truncated"), ("errors", "errors"),
                       ("measured_calls", "measured")):
        control, treatment = (arms[arm][key] for arm in ARMS)
        if control != treatment or (check == "truncated" and control):
            found.append({"check": check, "stage": None, "control": control,
                          "treatment": treatment})
    return found


# --------------------------------------------------------------------------- the stage


def run_aggregate(raw_dir: Path, out_dir: Path, metrics_path: Path,
                  threshold_pct: float) -> Path:
    """Aggregate raw_dir's calls into summary.csv, comparisons.csv, per_run.csv,
    per_run_wide.csv and quality.json in out_dir, and the headline in metrics_path.
    Everything is checked, computed and staged before the first output is moved into place.
    Checking the columnar copy, the long CSVs, the summary and the data-quality facts run on
    worker threads beside the comparisons (numpy and Arrow release the GIL). Returns the file
    the numbers were read from: calls.parquet, or calls.jsonl when no copy matched it."""
    with ThreadPoolExecutor(max_workers=2) as pool, Staging() as staging:
        _, source = _from_calls(raw_dir, pool, lambda calls: _aggregate(
            calls, raw_dir / CALLS_FILE, out_dir, metrics_path, threshold_pct, pool, staging))
        staging.commit()
    return source


def _aggregate(calls: pd.DataFrame, calls_path: Path, out_dir: Path, metrics_path: Path,
               threshold_pct: float, pool: Executor, staging: Staging) -> None:
    """Stage every output file; returns once all of them are written."""
    by_arm = _by_arm(calls)
    if unknown := sorted(set(by_arm) - set(ARMS)):
        raise AggregateError(f"{calls_path}: unknown arm(s) {unknown}; expected {list(ARMS)}")
    if len(by_arm) < len(ARMS):
        raise AggregateError(f"{calls_path}: only one arm ({', '.join(by_arm)}); "
                             "a comparison needs both control and treatment")
    runs: dict[str, StageFrames] = {}
    measured: dict[str, pd.DataFrame] = {}
    per_run_parts = []
    for arm in ARMS:
        measured[arm] = measured_calls(by_arm[arm])
        if measured[arm].empty:
            mine = by_arm[arm]
            raise AggregateError(
                f"{calls_path}: no measured calls in arm {arm} ({len(mine)} calls: "
                f"{int((mine['phase'] != 'measured').sum())} warm-ups, "
                f"{int(mine['error'].notna().sum())} failed, "
                f"{int(_flag(mine, 'reloaded').sum())} reloaded)")
        values = per_run_values(measured[arm])
        runs[arm] = split_stages(values)
        per_run_parts.append(values.assign(arm=arm))
    per_run = pd.concat(per_run_parts, ignore_index=True).reindex(columns=list(PER_RUN_COLUMNS))
    background = [
        pool.submit(_write_csv, per_run, staging.path(out_dir / PER_RUN_FILE)),
        pool.submit(lambda path: _write_csv(per_run_wide(per_run), path),
                    staging.path(out_dir / PER_RUN_WIDE_FILE)),
        pool.submit(lambda path: path.write_text(summary_table(runs, by_arm).to_csv(index=False),
                                                 encoding="utf-8"),
                    staging.path(out_dir / SUMMARY_FILE)),
    ]
    quality = pool.submit(data_quality, by_arm, measured, runs, threshold_pct)
    try:
        comparisons, outliers = analyse(runs[CONTROL], runs[TREATMENT], threshold_pct)
        staging.write(out_dir / COMPARISONS_FILE, comparisons.to_csv(index=False))
        staging.write(out_dir / QUALITY_FILE,
                      _json_text(quality.result() | {"outliers": outliers}, indent=None))
        staging.write(metrics_path, _json_text(headline(comparisons)))
    finally:  # never leave a worker writing into the staging area
        for done in (*background, quality):
            done.result()


def per_run_wide(per_run: pd.DataFrame) -> pd.DataFrame:
    """Columns named `<stage>_<arm>_<metric>`, e.g. report_treatment_ttft_ms."""
    wide = (per_run.set_index(["run", "stage", "arm"])[list(PLOTTED_METRICS)]
            .unstack(["stage", "arm"]).sort_index(axis=1))
    wide.columns = [f"{stage}_{arm}_{metric}" for metric, stage, arm in wide.columns]
    return wide.reset_index()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer, streamed to the file: it formats floats in C++ without
    the GIL (pandas formats each float in Python). Floats keep their shortest exact form."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write((",".join(frame.columns) + "\n").encode())
        pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), sink, options)


def _json_text(data: Any, indent: int | None = 2) -> str:
    """JSON with NaN as null. indent=None keeps Python's fast C encoder for long lists."""
    return json.dumps(_jsonable(data), indent=indent, sort_keys=True, allow_nan=False) + "\n"


def _jsonable(data: Any) -> Any:
    """Plain JSON types: NaN and pandas' missing values become null, numpy scalars Python."""
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_jsonable(v) for v in data]
    if isinstance(data, np.generic):
        data = data.item()
    if data is pd.NA or (isinstance(data, float) and not math.isfinite(data)):
        return None
    return data
