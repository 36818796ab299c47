"""The tool agent's tasks: one per run and arm, summarised from its measured turns.

A task's turns, tool calls and invalid tool calls are counted over its turns' records;
`task_s` is its whole time, the turns' end-to-end times plus the time its tools ran; it
ended by a final answer, by the turn limit, or is `incomplete` (a turn failed, so the task
has no end on record). Only workloads whose records carry `task_turn` have tasks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

INCOMPLETE = "incomplete"
TASK_COLUMNS = ("run", "turns", "tool_calls", "invalid_tool_calls", "task_s", "ended_by")


def task_table(measured: pd.DataFrame) -> pd.DataFrame | None:
    """One row per run (TASK_COLUMNS) from an arm's measured calls; None without tasks."""
    if "task_turn" not in measured or measured["task_turn"].isna().all():
        return None
    turns = measured.loc[measured["task_turn"].notna()]
    seconds = (turns["e2e_ms"].astype(float) + turns["tool_ms"].astype(float).fillna(0.0)) / 1e3
    grouped = turns.assign(task_s=seconds).groupby("run", sort=True)
    ended = turns.loc[turns["task_ended_by"].notna()].set_index("run")["task_ended_by"]
    table = pd.DataFrame({
        "turns": grouped["task_turn"].count(),
        "tool_calls": grouped["tool_calls"].sum(),
        "invalid_tool_calls": grouped["invalid_tool_calls"].sum(),
        "task_s": grouped["task_s"].sum(min_count=1),
    })
    table["ended_by"] = ended.astype(str).reindex(table.index).fillna(INCOMPLETE)
    return table.reset_index()[list(TASK_COLUMNS)]


def task_summary(table: pd.DataFrame) -> dict[str, Any]:
    """An arm's tasks in a few numbers, for quality.json and the report."""
    calls = float(table["tool_calls"].sum())
    return {
        "tasks": len(table),
        "turns_mean": float(table["turns"].mean()),
        "tool_calls": int(calls),
        "invalid_tool_calls": int(table["invalid_tool_calls"].sum()),
        "invalid_pct": 100.0 * float(table["invalid_tool_calls"].sum()) / calls if calls
        else None,
        "ended_by": {str(k): int(v) for k, v in table["ended_by"].value_counts().items()},
        "task_s_median": float(table["task_s"].median()),
        "runs": table.to_dict(orient="records"),
    }
