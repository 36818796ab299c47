"""The quality gate in the executive summary: speed and output quality in one phrase, so a
faster treatment whose output got worse never reads as better (docs/statistics.md)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mdutils.mdutils import MdUtils

from ollabench.report.format import fmt_num, fmt_p_clause, fmt_pct
from ollabench.report.inputs import Inputs
from ollabench.report.words import metric_label
from ollabench.stats import (
    METRIC_BY_NAME,
    QUALITY_METRICS,
    WORKFLOW_STAGE,
    gate_words,
    quality_verdict,
)


def quality_lower(inputs: Inputs) -> bool:
    return quality_verdict(inputs.comparisons) == "lower"


def quality_gate(md: MdUtils, inputs: Inputs) -> None:
    """One paragraph: the gate's phrase, each whole-run quality comparison, and how alike
    the two arms' outputs were."""
    if quality_verdict(inputs.comparisons) == "not measured":
        md.new_paragraph("Quality gate: not applied; these records hold no output-quality "
                         "figures (recorded from record format 2 on).")
        return
    measured = [m for m in QUALITY_METRICS if m not in inputs.not_applicable]
    if not any(inputs.comparison(WORKFLOW_STAGE, m) is not None for m in measured):
        text = ("Quality gate: not applied; no quality metric applied to these outputs "
                "(see below).")
    elif inputs.noise_floor:
        text = "Quality (A/A): " + gate_words(inputs.comparisons).split(", ", 1)[1] + "."
    else:
        text = f"Quality gate: {gate_words(inputs.comparisons, inputs.primary)}."
    rows = [row for metric in measured
            if (row := inputs.comparison(WORKFLOW_STAGE, metric)) is not None
            and pd.notna(row["control_median"]) and pd.notna(row["treatment_median"])]
    if rows:
        text += " Whole run: " + "; ".join(
            f"{metric_label(row['metric'])} {fmt_num(row['control_median'])} -> "
            f"{fmt_num(row['treatment_median'])} {METRIC_BY_NAME[row['metric']].unit} "
            f"({fmt_pct(row['median_diff_pct'])}, "
            f"{row['verdict']}, {fmt_p_clause(row['p_holm'])})" for row in rows) + "."
    similarity: dict[str, Any] = inputs.quality.get("output_similarity") or {}
    if similarity:
        text += " The arms' outputs for the same run and step were " + "; ".join(
            f"{fmt_num(s['median'])}% alike in the {stage} stage (median of {s['pairs']}, "
            f"lowest {fmt_num(s['min'])}%)" for stage, s in similarity.items()) + "."
    judge: dict[str, Any] = inputs.quality.get("judge") or {}
    if judge:
        identity = str(judge.get("model_id") or "identity unknown")[:12]
        text += (f" Judge: `{judge['model']}` ({judge['backend']}, {identity}) scored "
                 f"{judge['scored']} output(s) from 1 to {judge['scale_max']}; "
                 f"{judge['no_score']} answer(s) held no score and {judge['failed']} judge "
                 "call(s) failed (docs/metrics.md, Judge scores).")
    md.new_paragraph(text)
