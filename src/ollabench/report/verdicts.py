"""The primary comparisons in the report: the executive summary's table and its one-sentence
answer, the section "How the experiment stopped", and the figure of each primary ratio's
interval narrowing over the looks (primary.csv and looks.csv of the aggregate)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mdutils.mdutils import MdUtils

from ollabench.bench.stopping import BLOCK_RUNS
from ollabench.report.format import fmt_int, fmt_num, fmt_pct, fmt_plain_pct, fmt_value
from ollabench.report.markdown import table
from ollabench.report.words import metric_label

LOOKS_FIGURE = "primary_looks.png"
UNTRUSTWORTHY = "untrustworthy"  # stats.sequential's outcome when the trust checks overrule
REASON_WORDS = {
    "decided": "every primary comparison was decided",
    "max_runs": "the run budget (run.stopping.max_runs) was spent",
    "max_minutes": "the time budget (run.stopping.max_minutes) was spent",
    "fixed_runs": "the fixed number of runs was done (run.stopping.mode fixed, run.runs)",
}


# Past this, an open interval bounds no speed change worth naming (_precision).
USEFUL_EDGE_PCT = 100


def verdict_text(row: dict[str, Any], threshold_pct: float) -> str:
    """A primary comparison's verdict in words, with the precision an open one reached."""
    verdict = row["verdict"]
    if verdict == "equivalent":
        words = f"equivalent (within +-{fmt_plain_pct(threshold_pct)})"
        if row["low_pct"] > 0 or row["high_pct"] < 0:
            words += ", significant but smaller than the threshold"
        return words
    if verdict in ("inconclusive", "undecided"):
        return f"{verdict}: {_precision(row)} (95%)"
    if verdict == UNTRUSTWORTHY:
        return f"not trusted: {untrusted_text(row)}"
    return str(verdict)


def untrusted_text(row: dict[str, Any]) -> str:
    """Why the run's own checks overruled a primary comparison's interval, and the remedy
    (primary.csv `untrusted_note`)."""
    return str(row.get("untrusted_note") or "the run's checks failed")


def _precision(row: dict[str, Any]) -> str:
    """The largest change the interval still allows, either way, rounded up to the digit
    shown: an edge of 5.04% reads +-5.1%, not +-5.0% beside a 5% threshold it exceeds. With
    too few runs for an interval (one per arm) there is no such bound, and an interval past
    +-100% (two runs per arm can give +-1e12%) bounds nothing a speed change could be: both
    say so instead of a number."""
    edge = max(abs(row["low_pct"]), abs(row["high_pct"]))
    if not math.isfinite(edge):
        return "too few runs for an interval"
    if edge > USEFUL_EDGE_PCT:
        return f"too few runs to bound the change (interval wider than +-{USEFUL_EDGE_PCT}%)"
    return f"no change larger than +-{fmt_plain_pct(math.ceil(round(edge * 10, 9)) / 10)}"


def change_text(row: dict[str, Any]) -> str:
    """The change with the interval the verdict used."""
    return f"{fmt_pct(row['change_pct'])} ({fmt_pct(row['low_pct'])} to {fmt_pct(row['high_pct'])})"


def primary_table(md: MdUtils, primary: pd.DataFrame, threshold_pct: float,
                  unit: str = "runs", explained: bool = True) -> None:
    """One row per primary comparison: means of both arms, change, 95% interval, verdict.
    The change column's header names its estimator: it is not the ratio of the means.
    unit: what the means are over (a loaded level's are blocks); explained: with the
    paragraph on what the change and the intervals are."""
    rows = [[r["stage"], metric_label(r["metric"]), fmt_value(r["control_mean"], r["metric"]),
             fmt_value(r["treatment_mean"], r["metric"]), change_text(r),
             verdict_text(r, threshold_pct)]
            for r in primary.to_dict("records")]
    table(md, ["Stage", "Metric", f"Control (mean of {unit})", f"Treatment (mean of {unit})",
               f"{change_estimator(primary)} (95% interval)", "Verdict"], rows)
    if explained:
        md.new_paragraph(
            "The change is the estimate the verdict used, on the log scale with outliers left "
            "out, so it can differ from the ratio of the two means beside it. The intervals "
            "hold together at 95% over these primary comparisons (run.primary) and every look "
            f"at the runs (alpha spending); equivalent means the whole interval lies within "
            f"+-{fmt_plain_pct(threshold_pct)}, the practical threshold (docs/statistics.md).")


def change_estimator(primary: pd.DataFrame) -> str:
    """The primary change's estimator, from primary.csv's `paired` column: the geometric
    mean of the per-block ratios once the schedule has enough blocks, else the ratio of the
    geometric means (stats/sequential.py `estimate`)."""
    kinds = {bool(v) for v in primary["paired"]} if "paired" in primary else set()
    if kinds == {True}:
        return "Paired change: geometric mean of per-block ratios"
    if kinds == {False}:
        return "Change: ratio of geometric means"
    return "Change: per-block or geometric-mean ratio (primary.csv `paired`)"


def answer_sentence(primary: pd.DataFrame, quality_lower: bool) -> str:
    """One sentence: is the treatment better, and by how much."""
    rows = primary.to_dict("records")
    better = [r for r in rows if r["verdict"] == "better"]
    worse = [r for r in rows if r["verdict"] == "worse"]
    same = [r for r in rows if r["verdict"] == "equivalent"]
    untrusted = [r for r in rows if r["verdict"] == UNTRUSTWORTHY]
    lead = _lead(rows)
    how_much = (f"; {lead['stage']} {metric_label(lead['metric'])} changed by "
                f"{fmt_pct(lead['change_pct'])} (95% interval {fmt_pct(lead['low_pct'])} to "
                f"{fmt_pct(lead['high_pct'])})" if lead is not None else "")
    if untrusted:
        return (f"Not trusted: the run's own checks overrule {_names(untrusted)} ("
                + "; ".join(untrusted_text(r) for r in untrusted) + ")"
                + (f"; the others read: {_names(better)} better" if better else "")
                + (f"; {_names(worse)} worse" if worse else "") + ".")
    if better and worse:
        return (f"Mixed: the treatment is better on {_names(better)} but worse on "
                f"{_names(worse)}{how_much}.")
    if better:
        head = ("Faster, but lower quality: the treatment is better on "
                if quality_lower else "Yes: the treatment is better on ")
        return head + f"{_names(better)}{how_much}."
    if worse:
        return f"No: the treatment is worse on {_names(worse)}{how_much}."
    if rows and len(same) == len(rows):
        return ("No change that matters: every primary comparison is equivalent within the "
                f"practical threshold{how_much}.")
    settled = (f"equivalent within the practical threshold on {_names(same)}; "
               if same else "")
    open_rows = [r for r in rows if r not in same]
    return (f"Not decided: {settled}the runs could not tell the arms apart on "
            + ", ".join(f"{r['stage']} {metric_label(r['metric'])} ({_precision(r)})"
                        for r in open_rows)
            + f"{how_much}.")


def _lead(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The whole run's end-to-end time when it is a primary comparison, else the first."""
    for row in rows:
        if (row["stage"], row["metric"]) == ("workflow", "e2e_ms"):
            return row
    return rows[0] if rows else None


def _names(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['stage']} {metric_label(r['metric'])}" for r in rows)


def how_it_stopped(md: MdUtils, env: dict[str, Any], primary: pd.DataFrame,
                   figure: str | None, levels: dict[int, pd.DataFrame] | None = None) -> None:
    """Runs used, why the experiment stopped, how far each loaded level's primaries (levels)
    got, and the intervals narrowing to the decision."""
    md.new_header(2, "How the experiment stopped", add_table_of_contents="n")
    stopping = env.get("stopping") or {}
    run = (env.get("config") or {}).get("run") or {}
    settings = run.get("stopping") or {}
    reason = stopping.get("reason", "fixed_runs")
    runs = stopping.get("runs", run.get("runs"))
    items = [f"Mode: {settings.get('mode', 'fixed')}; runs per arm used: {fmt_int(runs)}"
             + (f" (budget {fmt_int(settings.get('max_runs'))} runs, "
                f"{fmt_num(settings.get('max_minutes'))} minutes of calls)"
                if settings.get("mode") == "sequential" else ""),
             f"Stopped because {REASON_WORDS.get(reason, reason)}."]
    if stopping.get("minutes_of_calls") is not None:
        items.append(f"Calls took {fmt_num(stopping['minutes_of_calls'])} minutes in all.")
    decided = [f"{r['stage']} {metric_label(r['metric'])} at {fmt_int(r['runs'])} runs"
               for r in primary.to_dict("records") if r["verdict"] not in
               ("inconclusive", "undecided", UNTRUSTWORTHY)]
    if decided:
        items.append("Decided: " + "; ".join(decided) + ".")
    for level, rows in sorted((levels or {}).items()):
        done = rows.loc[~rows["verdict"].isin(("inconclusive", "undecided", UNTRUSTWORTHY))]
        items.append(f"At {level} agents: {len(done)} of {len(rows)} primary comparisons "
                     "decided" + (f", the last at {fmt_int(done['runs'].max())} runs"
                                  if len(done) else "") + ".")
    md.new_list(items)
    block = BLOCK_RUNS.get(run.get("order", "abba"), 2)
    drifting = [r for r in primary.to_dict("records") if _autocorrelated(r, block)]
    if drifting:
        md.new_paragraph(
            "Warning: the per-block ratios of " + "; ".join(
                f"{r['stage']} {metric_label(r['metric'])} (lag-1 autocorrelation "
                f"{r['lag1_autocorr']:.2f})" for r in drifting)
            + " follow each other more than chance allows: the machine drifted or wandered "
            "faster than a block, and these intervals are too narrow.")
    if figure:
        md.new_paragraph(md.new_inline_image("Each primary ratio's interval against runs",
                                             figure))


def _autocorrelated(row: dict[str, Any], block_runs: int) -> bool:
    """Lag-1 autocorrelation above 2 / sqrt(units): beyond what independent units show. The
    units are the schedule's blocks (ABBA: 2 runs), single runs where it has none."""
    value = row.get("lag1_autocorr")
    if value is None or not math.isfinite(value):
        return False
    units = max(int(row["runs"]) // max(block_runs, 1), 1)
    return bool(value > 2.0 / math.sqrt(units))


def looks_figure(looks: pd.DataFrame, threshold_pct: float, path: Path) -> bool:
    """Each primary comparison's change and interval at every look, with the practical
    threshold: the interval narrowing to the decision. False if there are no looks."""
    if looks.empty:
        return False
    keys = list(dict.fromkeys(zip(looks["stage"], looks["metric"], strict=True)))
    columns = min(len(keys), 2)
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.5 * columns, 2.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (stage, metric) in zip(axes.flat, keys, strict=False):
        mine = looks.loc[(looks["stage"] == stage) & (looks["metric"] == metric)]
        ax.fill_between(mine["runs"], mine["low_pct"], mine["high_pct"], alpha=0.3,
                        color="#4C72B0", step="mid")
        ax.plot(mine["runs"], mine["change_pct"], marker="o", markersize=3, color="#4C72B0")
        for level in (-threshold_pct, threshold_pct):
            ax.axhline(level, color="#888888", linestyle="--", linewidth=0.8)
        ax.axhline(0.0, color="#000000", linewidth=0.6)
        ax.set_title(f"{stage}: {metric_label(metric)} ({mine['outcome'].iloc[-1]})")
        ax.set_xlabel("runs per arm")
        ax.set_ylabel("change (%)")
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
