"""quality.json: what was counted but not measured, outlier causes, unequal work."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers.aggregate import aggregate
from tests.helpers.synthetic import Scenario, make_records


def test_warmups_errors_and_reloads_are_counted_not_measured(tmp_path: Path) -> None:
    scenario = Scenario(runs=6, failures=[("control", 2, "analysis")],
                        loads=[("treatment", 3, "report")])
    out = aggregate(tmp_path, make_records(scenario), scenario)
    quality = out["quality"]
    arms = quality["arms"]
    assert arms["control"]["warmups"] == 6 and arms["treatment"]["warmups"] == 6
    assert arms["control"]["errors"] == 1 and arms["control"]["retries"] == 1
    assert arms["treatment"]["reloaded"] == 1
    assert arms["control"]["length_stops"] == {"analysis": 6, "report": 6}
    assert arms["control"]["runs"] == 6 and arms["treatment"]["runs"] == 6
    assert [(e["arm"], e["run"], e["stage"], e["attempt"]) for e in quality["errors"]] == [
        ("control", 2, "analysis", 1)]
    assert quality["errors"][0]["error"].startswith("ReadTimeout")
    assert [(c["arm"], c["run"], c["stage"]) for c in quality["reloaded_calls"]] == [
        ("treatment", 3, "report")]
    summary = out["summary"]
    n = summary.set_index(["arm", "stage", "metric"])["n"]
    assert n[("control", "analysis", "ttft_ms")] == 6  # the retry counts, the failure not
    assert n[("treatment", "report", "ttft_ms")] == 5  # the reloaded call is left out
    assert n[("treatment", "workflow", "ttft_ms")] == 5  # and so is its run's workflow
    table = out["comparisons"]
    assert math.isnan(table.loc[(table["stage"] == "report")
                                & (table["metric"] == "ttft_ms"), "p_paired"].iloc[0])
    assert {"check": "errors", "stage": None, "control": 1, "treatment": 0} in (
        quality["unequal_work"])


def test_an_unflagged_model_load_is_named_as_the_outlier_cause(tmp_path: Path) -> None:
    scenario = Scenario(runs=8, loads=[("control", 5, "analysis")])
    records = [replace(r, reloaded=False) for r in make_records(scenario)]
    quality = aggregate(tmp_path, records, scenario)["quality"]
    spikes = [(s["arm"], s["run"], s["stage"]) for s in quality["load_spikes"]]
    assert spikes == [("control", 5, "analysis")]
    ttft = [o for o in quality["outliers"] if o["metric"] == "load_ms"
            and o["stage"] == "analysis" and o["arm"] == "control"]
    assert [o["run"] for o in ttft] == [5] and "model_load" in ttft[0]["causes"]
    assert ttft[0]["load_ms"] > 10 * ttft[0]["warm_load_ms"]


def test_unequal_work_is_reported(tmp_path: Path) -> None:
    scenario = Scenario(runs=5, treatment_tokens_factor=0.7,
                        truncated=[("treatment", 1, "report")])
    records = [replace(r, done_reason="stop") if r.arm == "treatment" else r
               for r in make_records(scenario)]
    quality = aggregate(tmp_path, records, scenario)["quality"]
    checks = {(u["check"], u["stage"]) for u in quality["unequal_work"]}
    assert {("output_tokens", "analysis"), ("output_tokens", "report"),
            ("length_stops", "analysis"), ("length_stops", "report"),
            ("truncated", None)} <= checks
    tokens = next(u for u in quality["unequal_work"] if u["check"] == "output_tokens")
    assert tokens["diff_pct"] == pytest.approx(-30.0, abs=1.0)
    assert [(c["arm"], c["run"]) for c in quality["truncated_calls"]] == [("treatment", 1)]
