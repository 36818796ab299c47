"""The data-quality facts of quality.json: what the numbers rest on and what was left out.

Counts per arm, every failed call, reloads, load spikes, truncations, length stops, unknown
values, the outliers with their likely causes, and checks that both arms did the same work.
The report words them; this module only finds them (docs/statistics.md, Data quality).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ollabench.bench.loads import LOAD_EXCESS_MS, LOAD_FACTOR, is_model_load
from ollabench.records.schema import ARMS, PRIME_PHASE, UNREACHED_PHASE
from ollabench.stats.conditions import (
    arm_conditions,
    call_list,
    context_shift_calls,
    reload_mismatches,
    unequal_conditions,
)
from ollabench.stats.core import quiet, relative_pct
from ollabench.stats.gate import output_similarity
from ollabench.stats.grouping import (
    StageFrames,
    is_flagged,
    profile_names,
    stage_order,
    stage_values,
    stages_of,
)
from ollabench.stats.metrics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HOST_BUSY_EXCESS_PCT,
    HOST_STEAL_PCT,
    METRICS,
    OUTLIER_MIN_VALUES,
    OUTLIER_Z,
    POWER,
    UNEQUAL_TOKENS_PCT,
    WORKFLOW_STAGE,
)

CAUSE_CODES = ("reloaded", "model_load", "truncated", "output_length", "host_busy")
CAUSE_FIGURES = ("load_ms", "warm_load_ms", "output_tokens", "median_output_tokens",
                 "host_other_cpu_pct", "typical_other_cpu_pct", "host_steal_pct",
                 "host_load_1m")


def data_quality(by_arm: dict[str, pd.DataFrame], measured: dict[str, pd.DataFrame],
                 runs: dict[str, StageFrames], threshold_pct: float) -> dict[str, Any]:
    """Facts the report needs to qualify the numbers, from every call of each arm, its
    measured calls and per-run values: counts, every failed call, reloads, load spikes,
    truncations, length stops, unknown values, and checks that both arms did the same work.
    (The outliers come with the comparisons: see tables.comparisons_with_outliers.)"""
    calls = pd.concat([by_arm[arm] for arm in ARMS])
    arms = {arm: _arm_counts(by_arm[arm], measured[arm], runs[arm]) for arm in ARMS}
    conditions = {arm: arm_conditions(by_arm[arm]) for arm in ARMS}
    return {
        "settings": {"threshold_pct": threshold_pct, "alpha": ALPHA, "power": POWER,
                     "outlier_z": OUTLIER_Z, "outlier_min_values": OUTLIER_MIN_VALUES,
                     "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
                     "seed": BOOTSTRAP_SEED, "unequal_tokens_pct": UNEQUAL_TOKENS_PCT,
                     "load_factor": LOAD_FACTOR, "load_excess_ms": LOAD_EXCESS_MS,
                     "host_busy_excess_pct": HOST_BUSY_EXCESS_PCT,
                     "host_steal_pct": HOST_STEAL_PCT},
        "arms": arms,
        "conditions": conditions,
        "errors": call_list(calls.loc[calls["error"].notna()],
                            ["outcome", "http_status", "error"]),
        "load_spikes": [s for arm in ARMS for s in _load_spikes(runs[arm], arm)],
        "reloaded_calls": call_list(calls.loc[is_flagged(calls, "reloaded")
                                               & (calls["phase"] == "measured")], ["load_ms"]),
        "reload_mismatches": reload_mismatches(calls),
        "truncated_calls": call_list(calls.loc[is_flagged(calls, "truncated")],
                                     ["prompt_tokens", "num_ctx", "http_status"]),
        "context_shift_calls": context_shift_calls(calls),
        "unknown_values": {arm: _unknown_counts(measured[arm]) for arm in ARMS},
        "duplicate_keys": int(calls.duplicated(["seq", "attempt"]).sum()),
        "unequal_work": _unequal_work(arms, runs) + unequal_conditions(conditions),
        "output_similarity": output_similarity(measured),
        "host": {arm: _host_noise(measured[arm]) for arm in ARMS},
    }


def _host_noise(measured: pd.DataFrame) -> dict[str, float | None]:
    """What the host did during an arm's measured calls (host.py): typical and worst."""
    def column(name: str) -> pd.Series:
        return measured.get(name, pd.Series(dtype=float)).astype(float)

    other, steal, load = (column(c) for c in
                          ("host_other_cpu_pct", "host_steal_pct", "host_load_1m"))
    return {"other_cpu_pct_median": _none_if_nan(other.median()),
            "other_cpu_pct_max": _none_if_nan(other.max()),
            "steal_pct_max": _none_if_nan(steal.max()),
            "load_1m_max": _none_if_nan(load.max())}


def _arm_counts(calls: pd.DataFrame, measured: pd.DataFrame,
                stages: StageFrames) -> dict[str, Any]:
    warmups = calls.loc[~calls["phase"].isin(["measured", PRIME_PHASE, UNREACHED_PHASE])]
    return {
        "profile": profile_names(calls),
        "calls": len(calls),
        "measured": len(measured),
        "warmups": len(warmups),
        "warmup_load_ms_median": _none_if_nan(warmups["load_ms"].median()),
        "warmup_load_ms_mean": _none_if_nan(warmups["load_ms"].mean()),
        "errors": int(calls["error"].notna().sum()),
        "reloaded": int((is_flagged(calls, "reloaded") & (calls["phase"] == "measured")).sum()),
        "truncated": int(is_flagged(calls, "truncated").sum()),
        "length_stops": _length_stops(measured),
        "retries": int((calls["attempt"] > 1).sum()),
        "runs": len(stages.get(WORKFLOW_STAGE, ())),  # a row for every run measured at all
    }


def _load_spikes(stages: StageFrames, arm: str) -> list[dict[str, Any]]:
    """Measured runs that paid a model load without the reload flag saying so."""
    spikes = []
    for stage in stages:
        if stage == WORKFLOW_STAGE:
            continue
        table = cause_table(stages[stage])
        spikes += [{"arm": arm, "run": int(r.Index), "stage": stage,
                    "load_ms": float(r.load_ms), "warm_load_ms": float(r.warm_load_ms)}
                   for r in table.loc[table["model_load"]].itertuples()]
    return spikes


def outlier_rows(arm: str, row: dict[str, Any], values: pd.Series, causes: pd.DataFrame,
              test: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The runs of one arm whose robust z exceeds OUTLIER_Z in the comparison `row`, whether
    the verdict test left them out, and what their records show (see cause_table)."""
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
    return found.to_dict("records")


def cause_table(stage_runs: pd.DataFrame) -> pd.DataFrame:
    """Per run of one arm and stage, what its record shows that could explain an outlier:
    a reload flag, a model load (a load time far above the stage's warm level, its median),
    a truncated prompt, an output length far from the stage's median, or a busy host (other
    processes far above the stage's typical CPU use, or steal). Codes only; the report words
    them."""
    unknown = pd.Series(np.nan, index=stage_runs.index)
    load_ms = stage_runs.get("load_ms", unknown)
    tokens = stage_runs.get("output_tokens", unknown)
    other_pct = stage_runs.get("host_other_cpu_pct", unknown)
    steal_pct = stage_runs.get("host_steal_pct", unknown)
    warm_ms, median_tokens, typical_pct = load_ms.median(), tokens.median(), other_pct.median()
    with quiet():
        off_length = (tokens - median_tokens).abs() / median_tokens * 100 > UNEQUAL_TOKENS_PCT
    return pd.DataFrame({
        "reloaded": stage_runs.get("reloaded", unknown) == 1,
        "model_load": is_model_load(load_ms, warm_ms),
        "truncated": stage_runs.get("truncated", unknown) == 1,
        "output_length": off_length & (median_tokens > 0),
        "host_busy": (other_pct - typical_pct > HOST_BUSY_EXCESS_PCT)
        | (steal_pct > HOST_STEAL_PCT),
        "load_ms": load_ms, "warm_load_ms": warm_ms,
        "output_tokens": tokens, "median_output_tokens": median_tokens,
        "host_other_cpu_pct": other_pct, "typical_other_cpu_pct": typical_pct,
        "host_steal_pct": steal_pct, "host_load_1m": stage_runs.get("host_load_1m", unknown),
    })


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _length_stops(measured: pd.DataFrame) -> dict[str, int]:
    """Measured calls per stage that stopped at the output cap (`done_reason: length`)."""
    if "done_reason" not in measured:
        return {}
    stages = measured.loc[measured["done_reason"] == "length", "stage"]
    return {stage: int((stages == stage).sum()) for stage in stage_order(measured)}


def _unknown_counts(measured: pd.DataFrame) -> dict[str, int]:
    """Per metric, measured calls whose value is unknown while others know it."""
    counts = {m.name: int(measured[m.name].isna().sum()) for m in METRICS if m.name in measured}
    return {name: n for name, n in counts.items() if 0 < n < len(measured)}


def _unequal_work(arms: dict[str, dict[str, Any]],
                  runs: dict[str, StageFrames]) -> list[dict[str, Any]]:
    """Signs that the arms did not do the same work, each with both arms' figures."""
    found = []
    for stage in stages_of(*runs.values()):
        if stage == WORKFLOW_STAGE:
            continue
        tokens = [stage_values(runs[arm], stage, "output_tokens").mean() for arm in ARMS]
        diff_pct = relative_pct(*tokens)
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
