"""The report's "Under load" section: each arm at each level of run.concurrency, from
load.csv (stats/load.py), shown only when the experiment ran more than one agent at once.

Throughput against p95 task latency, one point per level and a line per arm (the knee is the
capacity); a table per level; each arm's capacity, the largest level whose tasks meet the
SLO; at each loaded level the primary comparisons' verdicts (primary_levels.csv: one value
per block, paired within the run) and one sentence saying what they decide. Figures and
verdicts of different levels are never averaged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mdutils.mdutils import MdUtils

from ollabench.paths import LOAD_FILE
from ollabench.records.schema import ARMS
from ollabench.report.figures import ARM_COLORS
from ollabench.report.format import Table, fmt_num
from ollabench.report.verdicts import primary_table, verdict_text
from ollabench.report.words import metric_label
from ollabench.stats import SYSTEM_STAGE

LOAD_FIGURE = "load_curve.png"
OFFERED_COLUMN = ("rate_per_min", "offered tasks/min")  # open loop, beside the achieved rate
# A level meets the SLO when at least this share of its tasks did (the p95 of the table).
CAPACITY_GOODPUT_PCT = 95.0
TABLE_COLUMNS = (("output_tok_s", "output tok/s"), ("tasks_per_min", "tasks/min"),
                 ("e2e_ms_p50", "task p50 ms"), ("e2e_ms_p95", "task p95 ms"),
                 ("ttft_ms_p95", "TTFT p95 ms"), ("task_ttft_ms_p95", "task TTFT p95 ms"),
                 ("queue_ms_p50", "queue p50 ms"), ("queue_ms_p95", "queue p95 ms"),
                 ("lag_ms_p95", "lag p95 ms"), ("goodput_pct", "goodput %"),
                 ("efficiency", "efficiency"), ("effective_concurrency", "reached"),
                 ("failed_tasks", "failed tasks"))


def read_load(processed_dir: Path) -> pd.DataFrame | None:
    """load.csv when the experiment ran agents at once or open loop; None otherwise (or
    before it existed)."""
    path = processed_dir / LOAD_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return table if (table["concurrency"] > 1).any() or open_loop(table) else None


def open_loop(table: pd.DataFrame) -> bool:
    """Tasks arrived on their own (run.arrivals): the levels bound the tasks in flight."""
    return "rate_per_min" in table and bool(table["rate_per_min"].notna().any())


def read_level_primary(path: Path) -> dict[int, pd.DataFrame]:
    """primary_levels.csv's rows of each level above 1 (level 1's are primary.csv's); empty
    when the experiment ran one agent at a time or the file predates levels."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return {int(level): rows.drop(columns="concurrency").reset_index(drop=True)
            for level, rows in table.groupby("concurrency", sort=True) if level > 1}


def where_at(table: pd.DataFrame, level: int) -> str:
    """How a sentence about one level opens: agents at once, or tasks in flight (open loop)."""
    return f"With {_level_name(table, level)}" if open_loop(table) else f"At {level} agents"


def level_answer(rows: pd.DataFrame, where: str, profiles: dict[str, str],
                 threshold_pct: float) -> str:
    """What one loaded level's verdicts decide, in a sentence: the tasks the treatment
    serves (within the SLO when one is set) as a ratio with its interval, then the other
    primary comparisons by verdict."""
    records = rows.to_dict("records")
    lead = next((r for metric in ("slo_tasks_per_min", "tasks_per_min") for r in records
                 if (r["stage"], r["metric"]) == (SYSTEM_STAGE, metric)), None)
    text = where
    if lead is not None:
        within = " within the SLO" if lead["metric"] == "slo_tasks_per_min" else ""
        text += (f" `{profiles['treatment']}` (treatment) serves {_ratio(lead['change_pct'])}x "
                 f"the tasks{within} per minute of `{profiles['control']}` (control) (95% "
                 f"interval {_ratio(lead['low_pct'])}x to {_ratio(lead['high_pct'])}x): "
                 f"{verdict_text(lead, threshold_pct)}")
    by_verdict: dict[str, list[str]] = {}
    for r in records:
        if r is not lead:
            by_verdict.setdefault(str(r["verdict"]), []).append(
                f"{r['stage']} {metric_label(r['metric'])}")
    others = "; ".join(f"{verdict} on {', '.join(names)}" for verdict, names in
                       by_verdict.items())
    if not others:
        return text + "."
    return text + ("; the other primaries: " if lead is not None else ": ") + others + "."


def _ratio(change_pct: float) -> str:
    """A relative change as a ratio, treatment / control: +30% reads 1.3."""
    ratio = 1.0 + change_pct / 100.0
    return fmt_num(ratio) if math.isfinite(ratio) else "unbounded"


def load_figure(table: pd.DataFrame, profiles: dict[str, str], path: Path) -> None:
    """Output tok/s against p95 task time, one point per level, per arm."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for arm in ARMS:
        rows = table.loc[table["arm"] == arm].sort_values("concurrency")
        ax.plot(rows["e2e_ms_p95"], rows["output_tok_s"], marker="o", color=ARM_COLORS[arm],
                label=f"{arm} ({profiles[arm]})")
        for row in rows.itertuples():
            ax.annotate(f"{row.concurrency}", (row.e2e_ms_p95, row.output_tok_s),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("task end-to-end time, p95 (ms)")
    ax.set_ylabel("output tokens/s, all agents")
    ax.set_title("Throughput against latency (labels: agents at once)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def capacity(table: pd.DataFrame, arm: str) -> int | None:
    """The largest level whose tasks met the SLO (goodput at least CAPACITY_GOODPUT_PCT)."""
    rows = table.loc[(table["arm"] == arm) & (table["goodput_pct"] >= CAPACITY_GOODPUT_PCT)]
    return int(rows["concurrency"].max()) if not rows.empty else None


def capacity_rate(table: pd.DataFrame, arm: str) -> tuple[int | None, float | None]:
    """The arm's capacity and its tasks/min at that level: what ranks two settings of the
    same capacity (tune's capacity objective, `leaderboard --by capacity`)."""
    level = capacity(table, arm)
    at = table.loc[(table["arm"] == arm) & (table["concurrency"] == level), "tasks_per_min"]
    return level, (float(at.iloc[0]) if level is not None and len(at) else None)


def under_load(md: MdUtils, table: pd.DataFrame | None, profiles: dict[str, str],
               config: dict[str, Any], figure: str | None,
               level_primary: dict[int, pd.DataFrame] | None = None,
               threshold_pct: float = 5.0) -> None:
    """The section; nothing when the experiment ran one agent at a time."""
    if table is None:
        return
    level_primary = level_primary or {}
    md.new_header(2, "Under load", add_table_of_contents="n")
    slo = (config.get("run") or {}).get("slo") or {}
    bounds = [f"{label} <= {fmt_num(float(slo[key]))} ms" for key, label in
              (("ttft_ms", "every call's TTFT"), ("e2e_ms", "the task's end-to-end time"))
              if slo.get(key) is not None]
    bound = ", ".join(bounds) if bounds else "none set (only failures count)"
    window = "whole block" if open_loop(table) else "block's steady state"
    columns = (OFFERED_COLUMN, *TABLE_COLUMNS) if open_loop(table) else TABLE_COLUMNS
    md.new_paragraph(
        _how(table, config) + ", in blocks interleaved with the other arm's; level 1 is the "
        f"sequential baseline. SLO: {bound}; "
        f"a level meets it when {fmt_num(CAPACITY_GOODPUT_PCT)}% of its tasks do. Throughput "
        f"is over each {window} (docs/metrics.md, load.csv).")
    if level_primary:
        md.new_paragraph(
            "Verdicts at a loaded level compare one value per block (a run of one arm at that "
            "level): the median over its agents' tasks, and the block's own output rate and "
            "tasks per minute (stage `system`), paired within the run. Each level is its own "
            "family of comparisons with its own sequential rule; no level's figures are "
            "averaged with another's (docs/statistics.md, Under load).")
    for arm in ARMS:
        level = capacity(table, arm)
        md.new_line(f"- Capacity of {arm} (`{profiles[arm]}`): "
                    + (_level_name(table, level) if level is not None
                       else "no level met the SLO"))
    if figure:
        md.new_paragraph(f"![Throughput against p95 latency per arm]({figure})")
    for level in sorted(int(c) for c in table["concurrency"].unique()):
        rows = table.loc[table["concurrency"] == level].set_index("arm")
        md.new_header(3, _level_name(table, level), add_table_of_contents="n")
        verdicts = level_primary.get(level)
        if verdicts is not None:
            md.new_paragraph(level_answer(verdicts, where_at(table, level), profiles,
                                          threshold_pct))
        elif level > 1:
            md.new_paragraph(_sentence(rows, where_at(table, level), profiles))
        md.new_paragraph(Table(["arm", *(label for _, label in columns)],
                               [[f"{arm} ({profiles[arm]})",
                                 *(rows.loc[arm, column] if arm in rows.index else None
                                   for column, _ in columns)]
                                for arm in ARMS]).markdown())
        if verdicts is not None:
            primary_table(md, verdicts, threshold_pct, unit="blocks", explained=False)


def _how(table: pd.DataFrame, config: dict[str, Any]) -> str:
    """How the blocks loaded the server: closed loop, or tasks arriving open loop."""
    if not open_loop(table):
        return ("Each level ran that many agents at once, each doing the whole workload "
                "(closed loop)")
    arrivals = (config.get("run") or {}).get("arrivals") or {}
    return (f"Agent tasks arrived open loop, {arrivals['pattern']} at "
            f"{fmt_num(float(table['rate_per_min'].dropna().iloc[0]))} per minute, "
            f"{arrivals['tasks']} per block; each level is the most tasks in flight at once, and "
            "every latency counts from when the task was due, the wait for a free client "
            "worker (lag) included")


def _level_name(table: pd.DataFrame, level: int) -> str:
    if open_loop(table):
        return f"at most {level} task(s) in flight"
    return f"{level} agent(s) at once"


def _sentence(rows: pd.DataFrame, where: str, profiles: dict[str, str]) -> str:
    """The treatment against the control at one level, from load.csv alone (an aggregate
    made before the verdicts per level): tasks within the SLO per minute."""
    if not {"control", "treatment"} <= set(rows.index):
        return "Only one arm has calls at this level."
    served = {arm: rows.loc[arm, "tasks_per_min"] * rows.loc[arm, "goodput_pct"] / 100.0
              for arm in ARMS}
    if not served["control"] > 0:
        return (f"{where} `{profiles['control']}` served no task within the SLO; "
                f"`{profiles['treatment']}` served {fmt_num(served['treatment'])} per minute.")
    ratio = served["treatment"] / served["control"]
    return (f"{where} `{profiles['treatment']}` (treatment) serves "
            f"{fmt_num(ratio)}x the tasks within the SLO per minute of "
            f"`{profiles['control']}` (control): {fmt_num(served['treatment'])} against "
            f"{fmt_num(served['control'])}. Descriptive: no test between the arms at this "
            "level (docs/statistics.md, Under load).")
