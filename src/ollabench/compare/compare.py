"""One arm of revision A (control) against the same arm of revision B (treatment), with the
statistics and verdicts of `aggregate`, provenance differences first."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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
from ollabench.paths import COMPARISON_MD, COMPARISONS_FILE
from ollabench.records.schema import ARMS
from ollabench.report.format import Table, fmt_p, fmt_pct, fmt_setting
from ollabench.stats import BOOTSTRAP_SEED, HEADLINE_METRICS, compare_arms, records_frame


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    differences: list[Difference]
    table: pd.DataFrame
    threshold_pct: float


def compare(root: Path, rev_a: str, rev_b: str, arm: str,
            threshold_pct: float | None = None) -> Comparison:
    """A's arm as control, B's arm as treatment, with aggregate's statistics and verdicts."""
    if arm not in ARMS:
        raise CompareError(f"--arm: must be one of {', '.join(ARMS)}, got {arm!r}")
    a, b = load_side(root, rev_a, arm), load_side(root, rev_b, arm)
    threshold = threshold_pct if threshold_pct is not None else _recorded_threshold(a, b)
    try:
        table = compare_arms(records_frame(a.records), records_frame(b.records), threshold,
                             seed=BOOTSTRAP_SEED)
    except AggregateError as exc:
        raise CompareError(f"{rev_a} vs {rev_b}: {exc}") from None
    # Run i of one experiment and run i of another are not a pair: no paired test.
    table["p_paired"] = math.nan
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    return Comparison(a, b, differences, table, threshold)


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
    write_all_atomic({out_dir / COMPARISONS_FILE: result.table.to_csv(index=False),
                      report: comparison_markdown(result)})
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
    verdicts = Table(
        ["stage", "metric", "better", "A median", "B median", "difference", "95% CI",
         "p (Holm)", "verdict"],
        [[r.stage, r.metric, r.better, r.control_median, r.treatment_median,
          fmt_pct(r.median_diff_pct), f"{fmt_pct(r.ci_low_pct)} to {fmt_pct(r.ci_high_pct)}",
          fmt_p(r.p_holm), r.verdict] for r in headline.itertuples(index=False)])
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
        f"two experiments are not pairs. Every stage and metric: {COMPARISONS_FILE}.",
        verdicts.markdown(),
    ]
    return "\n\n".join(block.strip("\n") for block in blocks) + "\n"


def _code_commit(side: Side) -> str:
    git = side.env.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:10]
    return f"{commit} with uncommitted changes" if git.get("dirty") else commit
