"""The quality gate: quality metrics through the verdict test, and a faster treatment whose
output got worse never summarised as better."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ollabench.stats.frames import records_frame
from ollabench.stats.gate import gate_words, quality_verdict
from ollabench.stats.grouping import measured_calls, per_run_values
from tests.helpers.aggregate import aggregate, verdict
from tests.helpers.synthetic import REPORT_PARTS, Scenario, make_records


def test_lower_quality_is_found_and_named_beside_the_speed_up(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, eval_rate_gain=0.3, quality_loss=0.5)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    assert verdict(table, "workflow", "e2e_ms") == "better"
    assert verdict(table, "workflow", "parts_pct") == "worse"
    assert verdict(table, "workflow", "faithful_pct") == "worse"
    assert quality_verdict(table) == "lower"
    assert gate_words(table) == "faster, but lower quality"
    assert out["metrics"]["quality"] == {"verdict": "lower"}


def test_no_quality_change_in_an_a_a_run(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, treatment_profile="baseline")
    table = aggregate(tmp_path, make_records(scenario), scenario)["comparisons"]
    assert quality_verdict(table) == "no change detected"
    assert gate_words(table).endswith("no quality change detected")


def test_faster_with_the_same_quality_is_worded_so(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, eval_rate_gain=0.3)
    table = aggregate(tmp_path, make_records(scenario), scenario)["comparisons"]
    assert gate_words(table) == "faster, no quality change detected"


def test_workflow_shares_pool_the_stages_counts() -> None:
    """A run's share is its figures found over its figures quoted, over every stage; the
    required parts exist only in the report stage, so the run's share is the report's."""
    scenario = Scenario(runs=4)
    records = make_records(scenario)
    calls = measured_calls(records_frame([r for r in records if r.arm == "control"]))
    values = per_run_values(calls).set_index(["run", "stage"])
    run1 = [r for r in records if r.arm == "control" and r.run == 1 and r.phase == "measured"]
    supported = sum(r.numbers_supported for r in run1)
    quoted = sum(r.numbers_in_output for r in run1)
    assert values.loc[(1, "workflow"), "faithful_pct"] == pytest.approx(100 * supported / quoted)
    report = next(r for r in run1 if r.stage == "report")
    assert values.loc[(1, "workflow"), "parts_pct"] == pytest.approx(
        100 * report.parts_found / REPORT_PARTS)
    assert pd.isna(values.loc[(1, "analysis"), "parts_pct"])


def test_an_output_without_figures_is_not_scored_as_unfaithful() -> None:
    scenario = Scenario(runs=4)
    records = [replace(r, numbers_in_output=0, numbers_supported=0)
               if r.stage == "analysis" else r for r in make_records(scenario)]
    values = per_run_values(measured_calls(records_frame(records))).set_index("stage")
    assert values.loc["analysis", "faithful_pct"].isna().all()
    assert values.loc["report", "faithful_pct"].notna().all()


def test_the_gate_reads_speed_from_the_primary_comparisons(tmp_path: Path) -> None:
    """One source of truth: when the whole run's end-to-end time is open in the descriptive
    table but a primary comparison decided, the gate's speed half follows the primary
    verdicts, as the report's one-sentence answer does (the chimera report once said "better
    on workflow eval rate" above "no speed change detected")."""
    scenario = Scenario(runs=10, treatment_profile="baseline")
    table = aggregate(tmp_path, make_records(scenario), scenario)["comparisons"]
    assert verdict(table, "workflow", "e2e_ms") != "better"
    primary = pd.DataFrame([
        {"stage": "workflow", "metric": "e2e_ms", "verdict": "inconclusive"},
        {"stage": "workflow", "metric": "eval_tok_s", "verdict": "better"}])
    assert gate_words(table) == "no speed change detected, no quality change detected"
    assert gate_words(table, primary) == "faster, no quality change detected"
    mixed = primary.assign(verdict=["worse", "better"])
    assert gate_words(table, mixed).startswith("faster on some primary metrics and slower")
