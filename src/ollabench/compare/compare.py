"""One arm of revision A (control) against the same arm of revision B (treatment), with the
statistics and verdicts of `aggregate`, provenance differences first.

Under load (run.concurrency) only the levels both sides ran are compared, level by level and
never averaged across levels: the verdicts at each shared level (level 1 one value per run,
as `aggregate` makes them; above it one value per block, stats/decisions.block_values), the
figures of load.csv (stats/load.py) and each side's capacity at its run.slo among the shared
levels. Records from before levels are level 1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.compare.provenance import (
    Difference,
    headline_label,
    provenance_differences,
    provenance_facts,
)
from ollabench.compare.revisions import Side, load_side
from ollabench.errors import AggregateError, CompareError
from ollabench.files import write_all_atomic
from ollabench.paths import COMPARISON_MD, COMPARISONS_FILE, LOAD_FILE
from ollabench.records.schema import ARMS
from ollabench.report.format import Table, fmt_num, fmt_p, fmt_pct, fmt_setting
from ollabench.report.load import TABLE_COLUMNS, capacity
from ollabench.stats import BOOTSTRAP_SEED, HEADLINE_METRICS, compare_arms, records_frame
from ollabench.stats.decisions import block_values
from ollabench.stats.frames import at_level
from ollabench.stats.grouping import measured_calls, split_stages
from ollabench.stats.load import load_table
from ollabench.stats.tables import comparisons_with_outliers


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    differences: list[Difference]
    table: pd.DataFrame  # the verdicts, every shared level x stage x metric
    threshold_pct: float
    levels: tuple[list[int], list[int]]  # the levels each side ran
    load: pd.DataFrame  # load.csv's rows of both sides at the shared levels, column `side`

    @property
    def shared(self) -> list[int]:
        """The levels both sides ran: the only ones compared."""
        return sorted(set(self.levels[0]) & set(self.levels[1]))

    def capacity(self, side: str) -> int | None:
        """A side's capacity at its own run.slo, among the shared levels only."""
        return capacity(self.load.loc[self.load["side"] == side], self.a.arm)


def compare(root: Path, rev_a: str, rev_b: str, arm: str,
            threshold_pct: float | None = None) -> Comparison:
    """A's arm as control, B's arm as treatment, with aggregate's statistics and verdicts."""
    if arm not in ARMS:
        raise CompareError(f"--arm: must be one of {', '.join(ARMS)}, got {arm!r}")
    a, b = load_side(root, rev_a, arm), load_side(root, rev_b, arm)
    threshold = threshold_pct if threshold_pct is not None else _recorded_threshold(a, b)
    frames = records_frame(a.records), records_frame(b.records)
    levels = ([int(c) for c in sorted(frames[0]["concurrency"].unique())],
              [int(c) for c in sorted(frames[1]["concurrency"].unique())])
    shared = sorted(set(levels[0]) & set(levels[1]))
    try:
        table = pd.concat([_level_verdicts(frames, level, threshold) for level in shared],
                          ignore_index=True)
    except AggregateError as exc:
        raise CompareError(f"{rev_a} vs {rev_b}: {exc}") from None
    # Run i of one experiment and run i of another are not a pair: no paired test.
    table["p_paired"] = math.nan
    load = pd.concat([load_table(frame.loc[frame["concurrency"].isin(shared)], _slo(side),
                                 arrivals=_run(side).get("arrivals")).assign(side=name)
                      for name, side, frame in (("A", a, frames[0]), ("B", b, frames[1]))],
                     ignore_index=True)
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    return Comparison(a, b, differences, table, threshold, levels, load)


def _level_verdicts(frames: tuple[pd.DataFrame, pd.DataFrame], level: int,
                    threshold: float) -> pd.DataFrame:
    """aggregate's comparisons of the two sides at one level, the level first: one value per
    run at level 1, per block above it (docs/statistics.md, Under load)."""
    mine = [at_level(frame, level) for frame in frames]
    if level == 1:
        table = compare_arms(*mine, threshold, seed=BOOTSTRAP_SEED)
    else:
        blocks = [split_stages(block_values(measured_calls(calls))) for calls in mine]
        table = comparisons_with_outliers(*blocks, threshold, BOOTSTRAP_SEED)[0]
    table.insert(0, "concurrency", level)
    return table


def _run(side: Side) -> dict[str, Any]:
    """The run group the side recorded (env.json's config)."""
    return (side.env.get("config") or {}).get("run") or {}


def _slo(side: Side) -> dict[str, Any]:
    """The SLO the side's own run set (none before levels existed)."""
    return _run(side).get("slo") or {}


def _recorded_threshold(a: Side, b: Side) -> float:
    """The stricter (larger) practical threshold of the two experiments."""
    recorded = [((side.env.get("config") or {}).get("run") or {}).get("practical_threshold_pct")
                for side in (a, b)]
    known = [value for value in recorded if value is not None]
    if not known:
        raise CompareError("neither side records run.practical_threshold_pct; "
                           "give --threshold-pct")
    return float(max(known))


def write_comparison(result: Comparison, out_dir: Path) -> Path:
    """comparisons.csv (every stage x metric) and comparison.md, together; returns the
    Markdown path."""
    report = out_dir / COMPARISON_MD
    files = {out_dir / COMPARISONS_FILE: result.table.to_csv(index=False),
             report: comparison_markdown(result)}
    if max(result.shared) > 1:
        files[out_dir / LOAD_FILE] = result.load.to_csv(index=False)
    write_all_atomic(files)
    return report


def comparison_markdown(result: Comparison) -> str:
    a, b = result.a, result.b
    differences = (Table(["category", "what", f"A: {a.rev}", f"B: {b.rev}"],
                         [[d.category, d.name, d.a, d.b] for d in result.differences]).markdown()
                   if result.differences else "None: both sides were measured the same way.")
    sides = Table(["", f"A: {a.rev}", f"B: {b.rev}"], [
        ["commit", a.sha[:10], b.sha[:10]],
        ["code ran from", *(_code_commit(s) for s in (a, b))],
        ["started", *(s.env.get("started_at") for s in (a, b))],
        ["profile", *(", ".join(sorted({r.profile for r in s.records})) for s in (a, b))],
        ["measured calls", *(len(s.measured()) for s in (a, b))]])
    headline = result.table[result.table["metric"].isin(HEADLINE_METRICS)]
    loaded = max(result.shared) > 1
    verdicts = Table(
        [*(["agents"] if loaded else []), "stage", "metric", "better", "A median", "B median",
         "difference", "95% CI", "p (Holm)", "verdict"],
        [[*([r.concurrency] if loaded else []), r.stage, r.metric, r.better, r.control_median,
          r.treatment_median, fmt_pct(r.median_diff_pct),
          f"{fmt_pct(r.ci_low_pct)} to {fmt_pct(r.ci_high_pct)}", fmt_p(r.p_holm), r.verdict]
         for r in headline.itertuples(index=False)])
    blocks = [
        f"# {a.rev} vs {b.rev}: {a.arm} arm", f"**{headline_label(result.differences)}**",
        "## Provenance differences", differences,
        "## Sides", sides.markdown(),
        "## Verdicts: B against A",
        f"Both sides are the {a.arm} arm of their revision. A is the reference (control), B "
        f"the one under test (treatment): a positive difference means B is higher. Same "
        f"statistics as `ollabench aggregate` (one value per run, Welch test on "
        f"logs with Holm adjustment, bootstrap CI of the median difference), practical "
        f"threshold {fmt_setting(result.threshold_pct)}%. The paired test is left out: runs of "
        f"two experiments are not pairs. Every stage and metric: {COMPARISONS_FILE}."
        + (" Each shared level (agents at once) is compared on its own: one value per run at "
           "level 1, one per block above it (the median over its agents' tasks; "
           "docs/statistics.md, Under load)." if loaded else ""),
        verdicts.markdown(),
        *_load_blocks(result),
    ]
    return "\n\n".join(block.strip("\n") for block in blocks) + "\n"


def levels_line(result: Comparison) -> str:
    """Which levels each side ran and which are compared (the shared ones)."""
    a, b = (", ".join(map(str, levels)) for levels in result.levels)
    line = f"Levels (agents at once): A ran {a}; B ran {b}; compared: " \
           f"{', '.join(map(str, result.shared))}"
    if result.levels[0] != result.levels[1]:
        line += " (the shared levels only)"
    return line + "."


def _load_blocks(result: Comparison) -> list[str]:
    """The section "Under load": both sides at every shared level, and their capacity."""
    if max(result.levels[0] + result.levels[1]) == 1:
        return []
    slos = [_slo_words(_slo(side)) for side in (result.a, result.b)]
    blocks = ["## Under load", levels_line(result) + " Each side's figures come from its "
              "own records, as its load.csv (docs/metrics.md, Under load): descriptive (the "
              "verdicts per level are above), never averaged across levels.",
              f"Capacity, the largest shared level whose tasks meet the side's own SLO (A: "
              f"{slos[0]}; B: {slos[1]}): A {_agents(result.capacity('A'))}, B "
              f"{_agents(result.capacity('B'))}."]
    if len(result.shared) == 1:
        return [*blocks, "The sides share no loaded level: nothing to compare under load."]
    rows = result.load.set_index(["concurrency", "side"])
    blocks.append(Table(
        ["agents", "side", *(label for _, label in TABLE_COLUMNS)],
        [[level, side, *(rows.loc[(level, side), column] for column, _ in TABLE_COLUMNS)]
         for level in result.shared for side in ("A", "B") if (level, side) in rows.index]
    ).markdown())
    return blocks


def _slo_words(slo: dict[str, Any]) -> str:
    bounds = [f"{name} <= {fmt_num(float(slo[key]))} ms"
              for key, name in (("ttft_ms", "TTFT"), ("e2e_ms", "task"))
              if slo.get(key) is not None]
    return ", ".join(bounds) or "none set, only failures count"


def _agents(level: int | None) -> str:
    return "no level met the SLO" if level is None else f"{level} agent(s)"


def _code_commit(side: Side) -> str:
    git = side.env.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:10]
    return f"{commit} with uncommitted changes" if git.get("dirty") else commit
