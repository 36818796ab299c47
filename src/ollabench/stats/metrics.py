"""What the statistics measure and the files they write: shared by the aggregate and report
stages. Plain Python only (no pandas, numpy or scipy), so that the report stage can depend
on this module alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ollabench.records.schema import ARMS

Direction = Literal["higher", "lower", "neither"]
WorkflowRule = Literal["sum", "max", "mean", "rate", "share"]


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
    share_of: tuple[str, str] | None = None  # (part column, whole column): 100 * part / whole


METRICS: tuple[Metric, ...] = (
    Metric("ttft_ms", "ms", "lower", "TTFT", "sum"),
    Metric("e2e_ms", "ms", "lower", "end-to-end time", "sum"),
    Metric("eval_tok_s", "tok/s", "higher", "eval rate", "rate", ("output_tokens", "eval_ms")),
    Metric("prompt_tok_s", "tok/s", "higher", "prompt rate", "rate",
           ("prompt_eval_tokens", "prompt_eval_ms")),
    Metric("load_ms", "ms", "lower", "load time", "sum"),
    Metric("prompt_eval_ms", "ms", "lower", "prompt eval time", "sum"),
    Metric("eval_ms", "ms", "lower", "eval time", "sum"),
    Metric("output_tokens", "tokens", "neither", "output tokens", "sum"),
    Metric("itl_p50_ms", "ms", "lower", "inter-token latency p50", None),
    Metric("itl_p95_ms", "ms", "lower", "inter-token latency p95", None),
    Metric("itl_max_ms", "ms", "lower", "inter-token latency max", "max"),
    Metric("faithful_pct", "%", "higher", "figures found in the input", "share",
           share_of=("numbers_supported", "numbers_in_output")),
    Metric("numbers_supported", "figures", "higher", "figures quoted from the input", "sum"),
    Metric("parts_pct", "%", "higher", "required parts present", "share",
           share_of=("parts_found", "parts_expected")),
    Metric("judge_score", "points", "higher", "judge score", "mean"),  # from data/judge
)
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
# A block's own figures under load (run.concurrency > 1; stats/load.py, block_rates): the
# primary comparisons at every loaded level add them, under the stage SYSTEM_STAGE.
SYSTEM_STAGE = "system"
LOAD_METRICS: tuple[Metric, ...] = (
    Metric("output_tok_s", "tok/s", "higher", "output rate of all agents", None),
    Metric("tasks_per_min", "tasks/min", "higher", "tasks per minute", None),
    Metric("slo_tasks_per_min", "tasks/min", "higher", "tasks within the SLO per minute", None),
)
LEVEL_METRIC_BY_NAME: dict[str, Metric] = METRIC_BY_NAME | {m.name: m for m in LOAD_METRICS}
HEADLINE_METRICS = ("ttft_ms", "eval_tok_s", "e2e_ms")
# The quality gate's metrics (docs/statistics.md): a treatment worse on any of them, on the
# whole run, is never summarised as better, however much faster it is.
QUALITY_METRICS = ("faithful_pct", "numbers_supported", "parts_pct", "judge_score")
QUALITY_KEY = "quality"  # metrics.json's entry for the gate, beside the stages
# Counts that make up a share metric: summed over a run's stages for its workflow value.
SHARE_COUNTS = tuple(dict.fromkeys(c for m in METRICS if m.share_of for c in m.share_of))

WORKFLOW_STAGE = "workflow"
CONTROL, TREATMENT = ARMS

# The verdict test's settings (docs/statistics.md); quality.json records them.
ALPHA = 0.05
POWER = 0.80
OUTLIER_Z = 3.5
OUTLIER_MIN_VALUES = 5  # fewer values per arm: no median and MAD to judge a value against
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
UNEQUAL_TOKENS_PCT = 20.0  # output lengths further apart: the arms did different work
# A run's host was busy (an outlier's likely cause) when other processes used this many
# percentage points of the CPU more than in the stage's typical run, or the hypervisor stole
# this share of it.
HOST_BUSY_EXCESS_PCT = 20.0
HOST_STEAL_PCT = 10.0

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
