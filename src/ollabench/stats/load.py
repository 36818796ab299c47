"""load.csv: each arm at each load level (run.concurrency), one row per arm and level.

The unit is the agent task: one agent's whole workload in one block. A block is one run of
one arm at one level, its agents at once (bench/concurrent.py). Throughput is taken over each
block's steady-state window, when every agent had sent its first call and none had finished
its task (ramp-up and drain left out, as AIPerf and GuideLLM do); a block too short to have
one (an agent finished before the last started) counts whole. Open loop (run.arrivals) a block
is `tasks` tasks arriving at the offered rate, at most `level` in flight: its whole span is
its window, and every task latency counts from the task's arrival (its first call's due
time), the client-side lag included. docs/metrics.md, Under load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LOAD_COLUMNS = ("arm", "concurrency", "rate_per_min", "blocks", "tasks", "failed_tasks",
                "output_tok_s", "tasks_per_min", "e2e_ms_p50", "e2e_ms_p95", "ttft_ms_p95",
                "task_ttft_ms_p95", "queue_ms_p50", "queue_ms_p95", "lag_ms_p50", "lag_ms_p95",
                "goodput_pct", "efficiency", "effective_concurrency", "generating_max",
                "server_parallel")
MS_PER_MINUTE = 60_000.0


def load_table(calls: pd.DataFrame, slo: dict[str, Any] | None = None,
               server_parallel: int | None = None,
               arrivals: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per arm and level from every level's calls (the frame of frames.py); with
    run.arrivals' rate set (env.json's config), the rows are open loop at that offered rate."""
    slo = slo or {}
    rate_per_min = (arrivals or {}).get("rate_per_min")
    calls = _timed(calls)
    rows = []
    for (arm, level), at in calls.groupby(["arm", "concurrency"], observed=True, sort=True):
        rows.append({"arm": str(arm), "concurrency": int(level), "rate_per_min": rate_per_min,
                     **_level_row(at, slo, rate_per_min is not None),
                     "server_parallel": server_parallel})
    table = pd.DataFrame(rows, columns=list(LOAD_COLUMNS))
    single = table.loc[table["concurrency"] == 1].set_index("arm")["output_tok_s"]
    table["efficiency"] = [
        row.output_tok_s / (row.concurrency * single[row.arm])
        if row.arm in single.index and single[row.arm] > 0 else np.nan
        for row in table.itertuples()]
    return table


def _timed(calls: pd.DataFrame) -> pd.DataFrame:
    """The measured-phase calls (failed attempts too) with agent, due, send and end times."""
    calls = calls.loc[calls["phase"] == "measured"].copy()
    calls["agent"] = calls["agent"].fillna(1.0)
    # Records from before levels have no send times: one agent's calls, back to back.
    back_to_back = calls.sort_values("seq").groupby(["arm", "run"], observed=True)["e2e_ms"] \
        .transform(lambda e2e: e2e.fillna(0.0).cumsum().shift(fill_value=0.0))
    calls["sent_ms"] = calls["sent_ms"].fillna(back_to_back)
    calls["due_ms"] = calls["due_ms"].fillna(calls["sent_ms"])
    calls["ended_ms"] = calls["sent_ms"] + calls["e2e_ms"]
    return calls


def block_rates(calls: pd.DataFrame, slo: dict[str, Any] | None = None,
                open_loop: bool = False) -> pd.DataFrame:
    """One row per block (arm, run) of one level's calls: the block's output_tok_s (steady
    state), tasks_per_min and slo_tasks_per_min, the unit of a verdict under load
    (docs/statistics.md, Under load). Same definitions as load.csv's, block by block."""
    slo = slo or {}
    rows = []
    for (arm, run), block in _timed(calls).groupby(["arm", "run"], observed=True, sort=True):
        tokens, window_ms = _steady_state(block, open_loop)
        tasks = _tasks(block, slo)
        span_ms = float(block["ended_ms"].max() - block["sent_ms"].min())
        per_min = MS_PER_MINUTE / span_ms if span_ms > 0 else np.nan
        rows.append({"arm": str(arm), "run": int(run),
                     "output_tok_s": tokens / window_ms * 1000.0 if window_ms > 0 else np.nan,
                     "tasks_per_min": float((~tasks["failed"]).sum()) * per_min,
                     "slo_tasks_per_min": float(tasks["met_slo"].sum()) * per_min})
    return pd.DataFrame(rows, columns=["arm", "run", "output_tok_s", "tasks_per_min",
                                       "slo_tasks_per_min"])


def _level_row(at: pd.DataFrame, slo: dict[str, Any], open_loop: bool) -> dict[str, Any]:
    tasks = _tasks(at, slo)
    tokens = window_ms = span_ms = busy_ms = 0.0
    generating_max = 0
    for _, block in at.groupby(["run"], sort=True):
        block_tokens, block_window = _steady_state(block, open_loop)
        tokens += block_tokens
        window_ms += block_window
        span_ms += float(block["ended_ms"].max() - block["sent_ms"].min())
        busy_ms += float(block["e2e_ms"].sum())
        generating_max = max(generating_max, _most_generating(block))
    ok = tasks.loc[~tasks["failed"]]
    return {
        "blocks": int(at["run"].nunique()),
        "tasks": len(tasks),
        "failed_tasks": int(tasks["failed"].sum()),
        "output_tok_s": tokens / window_ms * 1000.0 if window_ms > 0 else np.nan,
        "tasks_per_min": len(ok) / span_ms * MS_PER_MINUTE if span_ms > 0 else np.nan,
        "e2e_ms_p50": _quantile(ok["e2e_ms"], 0.5),
        "e2e_ms_p95": _quantile(ok["e2e_ms"], 0.95),
        "ttft_ms_p95": _quantile(at["ttft_ms"], 0.95),
        "task_ttft_ms_p95": _quantile(tasks["task_ttft_ms"], 0.95),
        "queue_ms_p50": _quantile(at["queue_ms"], 0.5),
        "queue_ms_p95": _quantile(at["queue_ms"], 0.95),
        "lag_ms_p50": _quantile(tasks["lag_ms"], 0.5),
        "lag_ms_p95": _quantile(tasks["lag_ms"], 0.95),
        "goodput_pct": 100.0 * float(tasks["met_slo"].mean()) if len(tasks) else np.nan,
        "effective_concurrency": busy_ms / span_ms if span_ms > 0 else np.nan,
        "generating_max": generating_max,
    }


def _tasks(at: pd.DataFrame, slo: dict[str, Any]) -> pd.DataFrame:
    """One row per agent task: its end-to-end time (first call due to last answer, retries
    included), its client-side lag (first send after its due time) and first token after
    its due time, whether a call never succeeded (a failed task counts against goodput),
    whether it met every SLO."""
    never_ok = ~at["error"].isna().groupby(at["seq"]).transform("any")
    first_token = (at["sent_ms"] + at["ttft_ms"]).where(at["error"].isna())
    grouped = at.assign(failed=never_ok, first_token_ms=first_token).groupby(["run", "agent"],
                                                                            sort=True)
    due = grouped["due_ms"].min()
    tasks = pd.DataFrame({"e2e_ms": grouped["ended_ms"].max() - due,
                          "lag_ms": grouped["sent_ms"].min() - due,
                          "task_ttft_ms": grouped["first_token_ms"].min() - due,
                          "ttft_ms_max": grouped["ttft_ms"].max(),
                          "failed": grouped["failed"].any()})
    met = ~tasks["failed"]
    if slo.get("e2e_ms") is not None:
        met &= tasks["e2e_ms"] <= slo["e2e_ms"]
    if slo.get("ttft_ms") is not None:
        met &= tasks["ttft_ms_max"] <= slo["ttft_ms"]
    return tasks.assign(met_slo=met)


def _steady_state(block: pd.DataFrame, open_loop: bool) -> tuple[float, float]:
    """Output tokens and ms of a block's steady-state window, each call's tokens counted
    in proportion to its decoding time (first token to end) inside the window. Open loop
    the window is the whole block: its tasks are never all in flight by design."""
    by_agent = block.groupby("agent")
    start = float(by_agent["sent_ms"].min().max())
    end = float(by_agent["ended_ms"].max().min())
    if end <= start or open_loop:  # no moment with every agent busy: the whole block
        start, end = float(block["sent_ms"].min()), float(block["ended_ms"].max())
    # tokens leave between the first token and the end (a queued call's wait holds none)
    first = (block["sent_ms"] + block["ttft_ms"].fillna(0.0)).to_numpy(float)
    ended = block["ended_ms"].to_numpy(float)
    inside = np.clip(np.minimum(ended, end) - np.maximum(first, start), 0.0, None)
    at_once = ((first >= start) & (first <= end)).astype(float)  # one token: in or out
    share = np.divide(inside, ended - first, out=at_once, where=ended > first)
    tokens = float(np.nansum(block["output_tokens"].to_numpy(float) * share))
    return tokens, end - start


def _most_generating(block: pd.DataFrame) -> int:
    """The most calls decoding at once, first token to last, as the client saw them: the
    overlap a server's slots allowed (checked against model.server_parallel)."""
    first = (block["sent_ms"] + block["ttft_ms"]).dropna().to_numpy(float)
    last = block["ended_ms"].dropna().to_numpy(float)
    events = sorted([(t, 1) for t in first] + [(t, -1) for t in last],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same moment
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _quantile(values: pd.Series, q: float) -> float:
    known = values.dropna().astype(float)
    return float(np.quantile(known, q)) if len(known) else np.nan


def parallel_mismatch(table: pd.DataFrame) -> str | None:
    """A note when the stated server_parallel disagrees with the overlap the records show:
    at a level above it, more calls generating at once than it allows, or fewer at every
    level that could have reached it."""
    stated = table["server_parallel"].dropna()
    if stated.empty or table.empty:
        return None
    slots = int(stated.iloc[0])
    observed = int(table["generating_max"].max())
    reachable = table.loc[table["concurrency"] >= slots]
    if observed > slots or (not reachable.empty and int(reachable["generating_max"].max())
                            < slots):
        return (f"model.server_parallel says {slots} slot(s), but the records show at most "
                f"{observed} call(s) generating at once")
    return None
