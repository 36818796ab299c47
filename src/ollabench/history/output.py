"""The history's files, written together (files.Staging): history.csv, changes.csv, the
series as DVC plots read them, one figure per series and the Markdown summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ollabench.files import Staging
from ollabench.history.changepoints import MIN_SEGMENT_POINTS
from ollabench.history.series import Explained, Series
from ollabench.history.timeline import Entry
from ollabench.paths import (
    CHANGES_FILE,
    HISTORY_FIGURES,
    HISTORY_FILE,
    HISTORY_MD,
    HISTORY_PLOT_FILE,
)
from ollabench.report.format import Table, fmt_num, fmt_p, fmt_pct, fmt_setting
from ollabench.stats import ALPHA, METRIC_BY_NAME


@dataclass(frozen=True)
class History:
    """Everything `ollabench history` found, ready to be written."""

    read: list[Entry]  # revisions with data, in time order
    skipped: list[tuple[Entry, str]]
    series: list[Series]
    explained: list[Explained]
    points: pd.DataFrame  # history.csv
    changes: pd.DataFrame  # changes.csv
    threshold_pct: float
    merge_hosts: bool


def plot_frame(points: pd.DataFrame) -> pd.DataFrame:
    """One row per revision, one column of medians per series: the shape in which DVC plots
    draw one line per column (`dvc plots show history_plot.csv -x position`)."""
    if points.empty:
        return pd.DataFrame(columns=["position", "rev"])
    wide = points.pivot_table(index=["position", "rev"], columns="series", values="median",
                              sort=True)
    wide.columns.name = None
    return wide.reset_index()


def write_history(result: History, out_dir: Path) -> Path:
    """Every file of the history into out_dir, all or none; returns the Markdown path."""
    markdown = out_dir / HISTORY_MD
    with Staging() as staging:
        staging.write(out_dir / HISTORY_FILE, result.points.to_csv(index=False))
        staging.write(out_dir / CHANGES_FILE, result.changes.to_csv(index=False))
        staging.write(out_dir / HISTORY_PLOT_FILE, plot_frame(result.points).to_csv(index=False))
        for series in result.series:
            rows = result.points[result.points["series"] == series.slug]
            series_figure(series, rows, staging.path(out_dir / HISTORY_FIGURES
                                                     / f"{series.slug}.png"))
        staging.write(markdown, history_markdown(result))
        staging.commit()
    return markdown


def series_figure(series: Series, rows: pd.DataFrame, path: Path) -> None:
    """Medians with their 95% CI band, the level of each segment, and a line at each change
    point, against the position on the time line."""
    x = rows["position"].to_numpy()
    fig = Figure(figsize=(9, 3.4))
    ax = fig.subplots()
    ax.fill_between(x, rows["ci_low"], rows["ci_high"], color="#DD8452", alpha=0.25,
                    label="95% CI of the median", step="mid")
    ax.plot(x, rows["median"], marker="o", markersize=3, color="#DD8452", label="median")
    ax.plot(x, rows["level"], color="#333333", linewidth=1, drawstyle="steps-mid",
            label="segment level")
    for change in series.changes:
        at = (x[change.index - 1] + x[change.index]) / 2
        ax.axvline(at, color="#C44E52", linestyle="--", linewidth=1)
        ax.annotate(fmt_pct(change.step_pct), (at, float(np.nanmax(rows["ci_high"]))),
                    color="#C44E52", fontsize=8, ha="left", va="top")
    metric = METRIC_BY_NAME[series.metric]
    ax.set_title(f"{series.name}: {series.setup.label()}", fontsize=9)
    ax.set_xlabel("position on the time line (oldest first)")
    ax.set_ylabel(f"{series.metric} ({metric.unit})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def changes_table(result: History) -> Table:
    return Table(
        ["series", "at", "after", "date", "step", "95% CI", "p", "verdict", "cause"],
        [[e.series.name, e.after.entry.label, e.before.entry.label, e.after.entry.date,
          fmt_pct(e.change.step_pct),
          f"{fmt_pct(e.change.ci_low_pct)} to {fmt_pct(e.change.ci_high_pct)}",
          fmt_p(e.change.p_value), e.verdict, e.cause] for e in result.explained])


def history_markdown(result: History) -> str:
    setups = {s.number: s.setup for s in result.series}
    series_rows = [[s.name, s.setup.label(), len(s.snapshots),
                    fmt_num(float(np.median(np.concatenate(s.samples())))), len(s.changes),
                    f"[{s.slug}.png]({HISTORY_FIGURES}/{s.slug}.png)"] for s in result.series]
    differences = [f"### {e.series.name} at {e.after.entry.label}\n\n"
                   + (Table(["category", "what", f"before: {e.before.entry.label}",
                             f"after: {e.after.entry.label}"],
                            [[d.category, d.name, d.a, d.b] for d in e.differences]).markdown()
                      if e.differences else "Nothing recorded differs.")
                   for e in result.explained]
    skipped = "\n".join(f"- {entry.label} ({entry.kind}, {entry.date}): {why}"
                        for entry, why in result.skipped) or "None."
    hosts = ("merged into one series per metric (`--merge-hosts`): a change of host shows up "
             "as the cause of a change point" if result.merge_hosts else
             "one series per setup (host, backend, model weights): results of different "
             "setups are never compared")
    blocks = [
        "# History",
        f"{len(result.read)} revisions with data, oldest first, from {result.read[0].label} "
        f"({result.read[0].date}) to {result.read[-1].label} ({result.read[-1].date}); "
        f"{len(result.explained)} change points in {len(result.series)} series. Setups: "
        f"{hosts}.",
        "## Change points", changes_table(result).markdown() if result.explained else
        "None: no series moved by more than the practical threshold.",
        "Step: the median of the per-run values of the revisions after the change against "
        "those before it (each side up to the neighbouring change point), with its 95% "
        "bootstrap CI; p: the larger of Welch's tests on the log per-run values and on the "
        "revisions' medians of both sides, compared with "
        f"{fmt_setting(ALPHA)} / the number of proposals in the series. A change point is kept "
        f"only if it is significant and at least {fmt_setting(result.threshold_pct)}% "
        f"(the practical threshold), and each level lasts at least {MIN_SEGMENT_POINTS} "
        "revisions. Method: docs/statistics.md.",
        *(["## What changed at each change point", *differences] if differences else []),
        "## Series", Table(["series", "setup", "points", "median", "change points", "figure"],
                           series_rows).markdown(),
        "## Setups", Table(["setup", "host", "backend", "model"],
                           [[n, s.host, s.backend, s.model] for n, s in setups.items()]
                           ).markdown(),
        "## Revisions skipped", skipped,
        "## Files",
        f"{HISTORY_FILE}: one row per point (per-run median, its 95% CI, revision, date, "
        f"provenance); {CHANGES_FILE}: one row per change point; {HISTORY_PLOT_FILE}: one "
        f"column per series for `dvc plots`; {HISTORY_FIGURES}/: one figure per series.",
    ]
    return "\n\n".join(block.strip("\n") for block in blocks) + "\n"


def summary_lines(result: History, out_dir: Path) -> list[str]:
    """What the terminal shows: what was read and skipped, and each change point."""
    lines = [f"{len(result.read)} revisions read, {len(result.skipped)} skipped"
             + (": " + ", ".join(f"{e.label} ({why})" for e, why in result.skipped)
                if result.skipped else "")]
    lines += [f"{e.series.name}: {fmt_pct(e.change.step_pct)} at {e.after.entry.label} "
              f"({e.verdict}; {e.cause})" for e in result.explained]
    if not result.explained:
        lines.append("no change points")
    lines.append(f"wrote {out_dir / HISTORY_MD}, {HISTORY_FILE}, {CHANGES_FILE}, "
                 f"{HISTORY_PLOT_FILE} and {len(result.series)} "
                 f"figure{'' if len(result.series) == 1 else 's'}")
    return lines
