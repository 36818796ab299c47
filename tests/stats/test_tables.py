"""The tables: verdicts on synthetic data with a known truth, summary and comparison columns,
the headline, and comparisons across experiments."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats as sps

from ollabench.errors import AggregateError
from ollabench.stats.frames import records_frame
from ollabench.stats.metrics import (
    COMPARISON_COLUMNS,
    HEADLINE_METRICS,
    SUMMARY_COLUMNS,
)
from ollabench.stats.tables import compare_arms
from tests.helpers.aggregate import aggregate, verdict
from tests.helpers.synthetic import Scenario, make_records, swap_arms

STAGES = ("analysis", "report", "workflow")  # the agent workload's, and the whole run


def test_rate_gain_of_ten_percent_is_better(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in STAGES:
        assert verdict(table, stage, "eval_tok_s") == "better"
        assert verdict(table, stage, "eval_ms") == "better"  # same tokens in less time
    row = table.loc[(table["stage"] == "workflow") & (table["metric"] == "eval_tok_s")].iloc[0]
    assert 7.0 < row["median_diff_pct"] < 13.0
    assert row["ci_low_pct"] < row["median_diff_pct"] < row["ci_high_pct"]
    assert row["ci_low_pct"] > 0  # the bootstrap CI excludes "no change"
    assert row["mde_pct"] <= 5.0
    assert row["hedges_g"] > 0 and row["cliffs_delta"] > 0.5
    assert not math.isnan(row["p_paired"])  # every run has both arms


def test_the_same_data_with_arms_swapped_is_worse(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10)
    out = aggregate(tmp_path, swap_arms(make_records(scenario)), scenario)
    table = out["comparisons"]
    for stage in STAGES:
        assert verdict(table, stage, "eval_tok_s") == "worse"
    row = table.loc[(table["stage"] == "report") & (table["metric"] == "eval_tok_s")].iloc[0]
    assert row["median_diff_pct"] < 0 and row["better"] == "higher"


def test_aa_data_has_no_significant_difference(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, treatment_profile="baseline")
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in STAGES:
        for metric in HEADLINE_METRICS:
            assert verdict(table, stage, metric) == "no significant difference"


def test_three_runs_at_twenty_percent_cv_are_inconclusive(tmp_path: Path) -> None:
    scenario = Scenario(runs=3, cv_pct=20.0, eval_rate_gain=0.05)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in STAGES:
        for metric in HEADLINE_METRICS:
            assert verdict(table, stage, metric) == "inconclusive"
    assert (table.loc[table["verdict"] == "inconclusive", "mde_pct"] > 5.0).all()


@pytest.mark.parametrize("gain", [0.10, 0.0])
def test_one_eightfold_ttft_outlier_does_not_flip_a_verdict(tmp_path: Path,
                                                            gain: float) -> None:
    base = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=gain, ttft_factor=1 - gain)
    spiked = replace(base, spikes={("treatment", 4, "report", "ttft_ms"): 8.0})
    clean = aggregate(tmp_path / "clean", make_records(base), base)["comparisons"]
    out = aggregate(tmp_path / "spiked", make_records(spiked), spiked)
    for stage in STAGES:
        for metric in HEADLINE_METRICS:
            assert verdict(out["comparisons"], stage, metric) == verdict(clean, stage, metric)
    listed = [o for o in out["quality"]["outliers"]
              if (o["arm"], o["run"], o["stage"], o["metric"]) ==
              ("treatment", 4, "report", "ttft_ms")]
    assert len(listed) == 1 and listed[0]["left_out"] and listed[0]["robust_z"] > 3.5


def test_summary_has_the_issue_columns_and_a_t_interval(tmp_path: Path) -> None:
    scenario = Scenario(runs=6)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    summary = out["summary"]
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(out["comparisons"].columns) == list(COMPARISON_COLUMNS)
    row = summary.loc[(summary["arm"] == "control") & (summary["stage"] == "analysis")
                      & (summary["metric"] == "ttft_ms")].iloc[0]
    values = out["per_run"].loc[(out["per_run"]["arm"] == "control")
                                & (out["per_run"]["stage"] == "analysis"), "ttft_ms"]
    half = sps.t.ppf(0.975, 5) * values.std(ddof=1) / math.sqrt(6)
    assert row["n"] == 6 and row["profile"] == "baseline"
    assert row["mean"] == pytest.approx(values.mean())
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert row["cv_pct"] == pytest.approx(values.std(ddof=1) / values.mean() * 100)


def test_inter_token_figures_appear_when_present(tmp_path: Path) -> None:
    scenario = Scenario(runs=4, itl=True)
    table = aggregate(tmp_path, make_records(scenario), scenario)["comparisons"]
    assert {"itl_p50_ms", "itl_p95_ms", "itl_max_ms"} <= set(table["metric"])
    workflow = set(table.loc[table["stage"] == "workflow", "metric"])
    assert "itl_max_ms" in workflow and "itl_p50_ms" not in workflow


def test_metrics_json_is_compact_and_nan_free(tmp_path: Path) -> None:
    """A dozen leaves: `dvc exp show` stays readable in a terminal (issue 11 item 7)."""
    scenario = Scenario(runs=4, eval_rate_gain=0.1)
    metrics = aggregate(tmp_path, make_records(scenario), scenario)["metrics"]
    assert set(metrics) == {"quality", "runs", "stop_reason", "primary"}
    assert metrics["quality"] == {"verdict": "no change detected"}
    assert (metrics["runs"], metrics["stop_reason"]) == (4, "fixed_runs")
    primary = metrics["primary"]
    assert set(primary) == {"workflow/e2e_ms", "analysis/ttft_ms", "report/ttft_ms",
                            "workflow/eval_tok_s"}
    assert all(set(entry) == {"change_pct", "verdict"} for entry in primary.values())
    assert all(math.isfinite(entry["change_pct"]) for entry in primary.values())
    assert primary["workflow/eval_tok_s"]["change_pct"] > 0


def test_compare_arms_takes_rows_from_two_experiments() -> None:
    """`ollabench compare A B`: one arm of each experiment, both labelled treatment."""
    a = Scenario(runs=8, seed=1)
    b = Scenario(runs=8, seed=2, eval_rate_gain=0.10)
    side_a = [r for r in make_records(a) if r.arm == "treatment"]
    side_b = [r for r in make_records(b) if r.arm == "treatment"]
    table = compare_arms(records_frame(side_a), records_frame(side_b), 5.0)
    assert verdict(table, "workflow", "eval_tok_s") == "better"
    assert list(table.columns) == list(COMPARISON_COLUMNS)


def test_compare_arms_names_bad_input() -> None:
    frame = records_frame(make_records(Scenario(runs=2)))
    with pytest.raises(AggregateError, match="missing columns: run"):
        compare_arms(frame.drop(columns="run"), frame, 5.0)
    warmups = frame.loc[frame["phase"] == "warmup"]
    with pytest.raises(AggregateError, match="treatment calls: no measured calls"):
        compare_arms(frame, warmups, 5.0)
