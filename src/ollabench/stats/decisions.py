"""The primary comparisons' sequential decisions from the calls: what the bench loop asks
after every block and what the aggregate writes (primary.csv, looks.csv). A pure function
of the calls and the run settings, so a resumed run reaches the same decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ollabench.bench.stopping import BLOCK_RUNS, DEFAULT_PRIMARY, primary_comparisons
from ollabench.records.schema import ARMS, ENGINE_CLOCK
from ollabench.stats.core import quiet
from ollabench.stats.frames import at_level
from ollabench.stats.grouping import measured_calls, per_run_values, stage_order
from ollabench.stats.load import block_rates
from ollabench.stats.metrics import (
    CONTROL,
    LEVEL_METRIC_BY_NAME,
    LOAD_METRICS,
    SYSTEM_STAGE,
    TREATMENT,
)
from ollabench.stats.sequential import (
    UNDECIDED,
    UNTRUSTWORTHY,
    Design,
    Looks,
    block_autocorrelation,
    sequential_looks,
)
from ollabench.stats.trust import cause_note

# Why an experiment stopped (env.json `stopping.reason`, metrics.json `stop_reason`)
DECIDED, MAX_RUNS, MAX_MINUTES, FIXED = "decided", "max_runs", "max_minutes", "fixed_runs"
FINAL_REASONS = frozenset({MAX_RUNS, MAX_MINUTES, FIXED})
PRIMARY_COLUMNS = ("stage", "metric", "better", "runs", "control_mean", "treatment_mean",
                   "change_pct", "low_pct", "high_pct", "level", "paired", "verdict",
                   "untrusted_by", "untrusted_note", "lag1_autocorr")
# primary_levels.csv: PRIMARY_COLUMNS at every level (level 1's rows are primary.csv's)
LEVEL_PRIMARY_COLUMNS = ("concurrency", *PRIMARY_COLUMNS)
LOOK_COLUMNS = ("stage", "metric", "runs", "change_pct", "low_pct", "high_pct", "level",
                "outcome", "untrusted_by")


def run_settings(env: dict[str, Any], calls: pd.DataFrame,
                 threshold_pct: float) -> tuple[dict[str, Any], bool]:
    """The run settings the bench ran with (env.json config.run), with threshold_pct, and
    whether its last look was final (a budget ended it, or it was fixed). Records made
    before run.stopping existed were fixed experiments on the default primaries."""
    run = dict(env.get("config", {}).get("run", {}))
    run.setdefault("order", "abba")
    run.setdefault("runs", int(calls["run"].max()) if len(calls) else 0)
    run.setdefault("stopping", {"mode": "fixed"})
    run.setdefault("primary", list(DEFAULT_PRIMARY))
    run["practical_threshold_pct"] = threshold_pct
    reason = env.get("stopping", {}).get("reason", FIXED)
    return run, reason in FINAL_REASONS


def design_for(run: dict[str, Any], comparisons: int) -> Design:
    """The design of a run's settings (env.json config.run or params.yaml run): a fixed
    experiment is one look at run.runs that spends all of alpha."""
    stopping = run["stopping"]
    block = BLOCK_RUNS[run["order"]]
    if stopping["mode"] == "fixed":
        return Design(min_runs=run["runs"], max_runs=run["runs"], look_every_runs=run["runs"],
                      block_runs=block, threshold_pct=run["practical_threshold_pct"],
                      comparisons=comparisons)
    return Design(min_runs=stopping["min_runs"], max_runs=stopping["max_runs"],
                  look_every_runs=max(block, 1) * stopping["look_every_blocks"],
                  block_runs=block, threshold_pct=run["practical_threshold_pct"],
                  comparisons=comparisons)


@dataclass(frozen=True)
class PrimaryDecision:
    """One primary comparison's looks and the look that decided it (the last if none)."""

    stage: str
    metric: str
    looks: Looks
    control_mean: float
    treatment_mean: float
    lag1_autocorr: float  # of the per-block log ratios over every run used

    @property
    def at(self) -> int:
        decided = int(self.looks.decided_at())
        return decided if decided >= 0 else len(self.looks.runs) - 1

    @property
    def verdict(self) -> str:
        return str(self.looks.outcome[self.at]) if len(self.looks.runs) else UNDECIDED

    def row(self) -> dict[str, Any]:
        k = self.at
        looks = self.looks
        found = len(looks.runs) > 0
        return {"stage": self.stage, "metric": self.metric,
                "better": LEVEL_METRIC_BY_NAME[self.metric].direction,
                "runs": int(looks.runs[k]) if found else 0,
                "control_mean": self.control_mean, "treatment_mean": self.treatment_mean,
                **{key: float(getattr(looks, key)[k]) if found else np.nan
                   for key in ("change_pct", "low_pct", "high_pct", "level")},
                "paired": bool(looks.paired[k]) if found else False, "verdict": self.verdict,
                "untrusted_by": str(looks.cause[k]) if found else "",
                "untrusted_note": cause_note(str(looks.cause[k])) if found else "",
                "lag1_autocorr": self.lag1_autocorr}


def control_first(calls: pd.DataFrame, stage: str | None = None) -> np.ndarray | None:
    """Per run (index i = run i + 1), whether control's first measured call came before
    treatment's: the order the trust checks read (None without measured calls). For a
    stage's own comparison, its call's order: the run's order, except under
    run.interleave call, where a run's stages alternate which arm goes first."""
    measured = measured_calls(calls)
    if stage is not None and (measured["stage"] == stage).any():
        measured = measured[measured["stage"] == stage]
    if measured.empty:
        return None
    first = measured.groupby(["run", "arm"])["seq"].min().unstack("arm")
    first = first.reindex(index=range(1, int(measured["run"].max()) + 1),
                          columns=[CONTROL, TREATMENT])
    return (first[CONTROL] < first[TREATMENT]).to_numpy(dtype=bool, na_value=False)


Series = dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]


def primary_series(calls: pd.DataFrame, primary: list[str], level: int = 1,
                   slo: dict[str, Any] | None = None, open_loop: bool = False) -> Series:
    """Per-run values of each primary (stage, metric) for both arms, index i = run i + 1
    (NaN: no known value), from one level's calls. At level 1 a run's value; at a level
    above, its block's (block_values), and the block's own throughput under SYSTEM_STAGE."""
    measured = measured_calls(calls)
    if measured.empty:
        return {}
    pairs = primary_comparisons(primary, stage_order(measured))
    values: dict[str, pd.DataFrame] = {}
    for arm in ARMS:
        arm_calls = measured[measured["arm"] == arm]
        values[arm] = pd.DataFrame() if arm_calls.empty else \
            per_run_values(arm_calls) if level == 1 else block_values(arm_calls)
    last_run = int(measured["run"].max())
    if level > 1:
        rates = block_rates(calls, slo, open_loop)
        bounded = any(value is not None for value in (slo or {}).values())
        pairs += [(SYSTEM_STAGE, m.name) for m in LOAD_METRICS
                  if bounded or m.name != "slo_tasks_per_min"]
        for arm in ARMS:
            system = rates.loc[rates["arm"] == arm].drop(columns="arm")
            values[arm] = pd.concat([values[arm], system.assign(stage=SYSTEM_STAGE)],
                                    ignore_index=True)
        last_run = max(last_run, int(rates["run"].max()))
    series = {}
    for stage, metric in pairs:
        arrays = []
        for arm in ARMS:
            frame = values[arm]
            column = np.full(last_run, np.nan)
            if not frame.empty and metric in frame:
                rows = frame[frame["stage"].astype(str) == stage]
                known = rows[metric].notna()
                column[rows.loc[known, "run"].to_numpy(dtype=int) - 1] = \
                    rows.loc[known, metric].to_numpy(dtype=float)
            arrays.append(column)
        series[(stage, metric)] = (arrays[0], arrays[1])
    return series


def block_values(measured: pd.DataFrame) -> pd.DataFrame:
    """One arm's measured calls at one level as one row per block (run) and stage: the
    median over the block's agent tasks of each task's value, a task's value being what a
    run's value is at level 1 (per_run_values, each agent's task as its own run). Open loop
    (run.arrivals) a block holds more tasks than agents at once: `agent` numbers the task."""
    runs = measured["run"].astype("int64")
    task = measured.assign(agent=measured["agent"].fillna(1.0)) \
        .groupby(["run", "agent"], sort=True, observed=True).ngroup() + 1
    run_of_task = dict(zip(task, runs, strict=True))
    per_task = per_run_values(measured.assign(run=task))
    per_task["run"] = per_task["run"].map(run_of_task)
    per_task["stage"] = per_task["stage"].astype(str)
    return per_task.groupby(["run", "stage"], sort=True).median().reset_index()


# A time's engine-own part, as signed sums of per-run columns (trust's outside check: a
# change it does not show lies outside the engine). TTFT: the engine's load and prompt
# timings. End-to-end: less the time before the first token that the engine did not time
# (a stall on the connection); what follows the first token stays in, since decoding also
# spends time outside the engine's decode counter (sampling) that a profile can change.
INSIDE = {"ttft_ms": (("load_ms", 1.0), ("prompt_eval_ms", 1.0)),
          "e2e_ms": (("e2e_ms", 1.0), ("ttft_ms", -1.0), ("load_ms", 1.0),
                     ("prompt_eval_ms", 1.0))}


def inside_series(calls: pd.DataFrame, series: Series) -> Series:
    """The engine-own part (INSIDE) of each primary in series that is a time, per run and
    arm (unknown in a run when any of its parts is), for the outside check; none unless
    every measured call ran at level 1 and says the engine timed it (`timing_source:
    engine`, record format 5 on)."""
    measured = measured_calls(calls)
    if measured.empty or "timing_source" not in measured \
            or not (measured["timing_source"] == ENGINE_CLOCK).all() \
            or ("concurrency" in measured and (measured["concurrency"].fillna(1) > 1).any()):
        return {}
    times = [(stage, metric) for stage, metric in series if metric in INSIDE]
    if not times:
        return {}
    parts = primary_series(calls, [f"{stage}/{part}" for stage, metric in times
                                   for part, _ in INSIDE[metric]])
    found = {}
    for stage, metric in times:
        found[(stage, metric)] = tuple(
            np.sum([sign * parts[(stage, part)][k] for part, sign in INSIDE[metric]], axis=0)
            for k in (0, 1))
    return found


def primary_decisions(calls: pd.DataFrame, run: dict[str, Any], final: bool,
                      series: Series | None = None) -> list[PrimaryDecision]:
    """Each primary comparison's looks over the runs recorded so far (complete blocks);
    series: primary_series of the calls when the caller has it already."""
    if series is None:
        series = primary_series(calls, run["primary"])
    inside = inside_series(calls, series)
    design = design_for(run, max(len(series), 1))
    block = max(design.block_runs, 1)
    decisions = []
    for (stage, metric), (control, treatment) in series.items():
        order = control_first(calls, stage)
        runs = min(len(control), design.max_runs) // block * block
        engine = inside.get((stage, metric))
        looks = sequential_looks(control[:runs], treatment[:runs],
                                 LEVEL_METRIC_BY_NAME[metric].direction, design, final,
                                 None if order is None else order[:runs],
                                 None if engine is None else (engine[0][:runs], engine[1][:runs]))
        with quiet():  # an arm without values has no mean
            means = [float(np.nanmean(arm[:runs])) if runs else np.nan
                     for arm in (control, treatment)]
        decisions.append(PrimaryDecision(
            stage, metric, looks, *means,
            block_autocorrelation(control[:runs], treatment[:runs], design.block_runs)))
    return decisions


def level_decisions(calls: pd.DataFrame, run: dict[str, Any], final: bool,
                    ) -> dict[int, list[PrimaryDecision]]:
    """Each loaded level's (above 1) primary decisions from every level's calls: its own
    family, its own design, one value per block (docs/statistics.md, Under load)."""
    levels = sorted(int(level) for level in calls["concurrency"].unique() if level > 1)
    open_loop = (run.get("arrivals") or {}).get("rate_per_min") is not None
    decided = {}
    for level in levels:
        at = at_level(calls, level)
        decided[level] = primary_decisions(
            at, run, final, primary_series(at, run["primary"], level, run.get("slo"), open_loop))
    return decided


def all_decided(decisions: list[PrimaryDecision]) -> bool:
    """Every primary comparison has a decision (better, worse or equivalent) that its trust
    checks allow: a held-back look is undecided."""
    return bool(decisions) and all(d.verdict != UNDECIDED for d in decisions)


def primary_table(decisions: list[PrimaryDecision]) -> pd.DataFrame:
    """primary.csv: one row per primary comparison, at the look that decided it."""
    return pd.DataFrame([d.row() for d in decisions], columns=list(PRIMARY_COLUMNS))


def levels_table(by_level: dict[int, list[PrimaryDecision]]) -> pd.DataFrame:
    """primary_levels.csv: primary_table's rows of every level, the level first."""
    rows = [{"concurrency": level, **d.row()} for level, decisions in sorted(by_level.items())
            for d in decisions]
    return pd.DataFrame(rows, columns=list(LEVEL_PRIMARY_COLUMNS))


def looks_table(decisions: list[PrimaryDecision]) -> pd.DataFrame:
    """looks.csv: every look of every primary comparison up to its decision (the figure of
    the interval narrowing)."""
    rows = []
    for d in decisions:
        for k in range(d.at + 1 if len(d.looks.runs) else 0):
            rows.append({"stage": d.stage, "metric": d.metric, "runs": int(d.looks.runs[k]),
                         **{key: float(getattr(d.looks, key)[k])
                            for key in ("change_pct", "low_pct", "high_pct", "level")},
                         "outcome": str(d.looks.outcome[k]),
                         "untrusted_by": str(d.looks.cause[k])})
    return pd.DataFrame(rows, columns=list(LOOK_COLUMNS))


def overrule(comparisons: pd.DataFrame, primary: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """comparisons.csv with the verdict `untrustworthy` on the rows of the primary
    comparisons (metrics.json `primary`, keyed stage/metric) that the trust checks
    overruled: the same runs cannot be trusted in one table and not in the other."""
    if comparisons.empty:
        return comparisons
    keys = comparisons["stage"].astype(str) + "/" + comparisons["metric"].astype(str)
    untrusted = [key for key, entry in primary.items() if entry["verdict"] == UNTRUSTWORTHY]
    return comparisons.assign(verdict=comparisons["verdict"].where(~keys.isin(untrusted),
                                                                   UNTRUSTWORTHY))
