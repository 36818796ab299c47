"""Per-run values: how a run's stages combine into the workflow, and unknown values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ollabench.stats.metrics import PER_RUN_COLUMNS
from tests.helpers.aggregate import aggregate
from tests.helpers.synthetic import Scenario, make_records


def test_workflow_sums_stage_times_and_divides_tokens_by_eval_time(tmp_path: Path) -> None:
    scenario = Scenario(runs=4)
    records = make_records(scenario)
    out = aggregate(tmp_path, records, scenario)
    measured = [r for r in records if r.phase == "measured" and r.error is None]
    per_run = out["per_run"]
    for run in (1, 2):
        calls = [r for r in measured if r.run == run and r.arm == "control"]
        row = per_run.loc[(per_run["arm"] == "control") & (per_run["run"] == run)
                          & (per_run["stage"] == "workflow")].iloc[0]
        assert row["ttft_ms"] == pytest.approx(sum(r.ttft_ms for r in calls))
        assert row["e2e_ms"] == pytest.approx(sum(r.e2e_ms for r in calls))
        rate = sum(r.output_tokens for r in calls) / sum(r.eval_ms for r in calls) * 1000
        assert row["eval_tok_s"] == pytest.approx(rate)
    assert list(per_run.columns) == list(PER_RUN_COLUMNS)


def test_unknown_values_stay_unknown(tmp_path: Path) -> None:
    scenario = Scenario(runs=5)
    records = [replace(r, load_ms=None) if (r.arm, r.run) == ("treatment", 2) else r
               for r in make_records(scenario)]
    out = aggregate(tmp_path, records, scenario)
    summary = out["summary"]
    load = summary.loc[(summary["arm"] == "treatment") & (summary["metric"] == "load_ms")]
    assert set(load["n"]) == {4}  # run 2 is unknown, not 0 ms
    assert load["min"].min() > 1.0
    assert out["quality"]["unknown_values"]["treatment"] == {"load_ms": 2}
    # itl_* are unknown everywhere (llamacpp): no rows at all rather than zeros
    assert not summary["metric"].str.startswith("itl_").any()
