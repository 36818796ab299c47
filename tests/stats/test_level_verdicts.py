"""Verdicts per load level (run.concurrency): the unit is the block, paired within the run,
each level its own family; level 1 stays primary.csv's (docs/statistics.md, Under load)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ollabench.bench.run_control import StopRule
from ollabench.paths import ENV_FILE, PRIMARY_FILE, PRIMARY_LEVELS_FILE
from ollabench.stats import run_aggregate
from ollabench.stats.decisions import DECIDED, LEVEL_PRIMARY_COLUMNS, PRIMARY_COLUMNS
from ollabench.stats.sequential import UNDECIDED
from tests.helpers.levels import level_records
from tests.helpers.project import tiny_config
from tests.helpers.report_files import write_words
from tests.helpers.synthetic import Scenario, write_raw

EQUIVALENT_OR_OPEN = {"equivalent", UNDECIDED}


def _aggregate(tmp_path: Path, records: list, runs: int,
               slo: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any], Path]:
    raw = write_raw(tmp_path / "raw", records, Scenario(runs=runs))
    if slo is not None:
        env = json.loads((raw / ENV_FILE).read_text())
        env["config"]["run"]["slo"] = slo
        (raw / ENV_FILE).write_text(json.dumps(env))
    out, metrics = tmp_path / "processed", tmp_path / "metrics.json"
    run_aggregate(raw, out, metrics, 5.0)
    return pd.read_csv(out / PRIMARY_LEVELS_FILE), json.loads(metrics.read_text()), out


def _verdicts(table: pd.DataFrame, level: int) -> dict[str, str]:
    rows = table.loc[table["concurrency"] == level]
    return {f"{r.stage}/{r.metric}": r.verdict for r in rows.itertuples()}


def test_an_effect_planted_at_level_2_is_found_there_only(tmp_path) -> None:
    table, metrics, out = _aggregate(
        tmp_path, level_records(10, factor={2: 0.7}), 10, slo={"e2e_ms": 3000.0})
    assert list(table.columns) == list(LEVEL_PRIMARY_COLUMNS)
    at_1, at_2 = _verdicts(table, 1), _verdicts(table, 2)
    assert set(at_1.values()) <= EQUIVALENT_OR_OPEN, at_1
    assert at_2 == {"workflow/e2e_ms": "better", "analysis/ttft_ms": "better",
                    "report/ttft_ms": "better", "workflow/eval_tok_s": "better",
                    "system/output_tok_s": "better", "system/tasks_per_min": "better",
                    "system/slo_tasks_per_min": "better"}
    loaded = table.loc[table["concurrency"] == 2].set_index(["stage", "metric"])
    # 30% less time: block medians 0.7x, the block's rates 1/0.7x (the unit is the block)
    assert loaded.loc[("workflow", "e2e_ms"), "change_pct"] == pytest.approx(-30.0, abs=3.0)
    assert loaded.loc[("system", "tasks_per_min"), "change_pct"] == pytest.approx(42.9, abs=5)
    assert (loaded["runs"] == 10).all()
    # metrics.json: level 1 stays `primary`, the loaded level beside it
    assert metrics["primary_levels"]["2"]["system/slo_tasks_per_min"]["verdict"] == "better"
    assert set(metrics["primary_levels"]) == {"2"}
    # level 1's rows are primary.csv's, unchanged
    primary = pd.read_csv(out / PRIMARY_FILE)
    pd.testing.assert_frame_equal(
        table.loc[table["concurrency"] == 1, list(PRIMARY_COLUMNS)].reset_index(drop=True),
        primary)
    assert {f"{k}": v["verdict"] for k, v in metrics["primary"].items()} == at_1


def test_an_a_a_run_at_two_levels_finds_nothing(tmp_path) -> None:
    table, metrics, _ = _aggregate(tmp_path, level_records(12, levels=(1, 4), seed=3), 12)
    for level in (1, 4):
        verdicts = _verdicts(table, level)
        assert set(verdicts.values()) <= EQUIVALENT_OR_OPEN, (level, verdicts)
    # without an SLO bound, tasks within the SLO would repeat tasks_per_min: not compared
    assert "system/slo_tasks_per_min" not in _verdicts(table, 4)
    assert "system/tasks_per_min" in metrics["primary_levels"]["4"]


def test_a_run_without_levels_writes_level_1_only(tmp_path) -> None:
    table, metrics, _ = _aggregate(tmp_path, level_records(6, levels=(1,)), 6)
    assert set(table["concurrency"]) == {1}
    assert "primary_levels" not in metrics


def test_the_levels_are_not_combined(tmp_path) -> None:
    """An effect at level 4 does not move level 2's verdict, nor the other way round."""
    table, _, _ = _aggregate(
        tmp_path, level_records(10, levels=(1, 2, 4), factor={4: 1.5}, seed=5), 10)
    assert set(_verdicts(table, 2).values()) <= EQUIVALENT_OR_OPEN
    assert _verdicts(table, 4)["workflow/e2e_ms"] == "worse"


def _stop_rule(raw_config: dict[str, Any], records: list) -> StopRule:
    raw = copy.deepcopy(raw_config)
    raw["run"]["stopping"] = {"mode": "sequential", "min_runs": 8, "max_runs": 12,
                              "max_minutes": None, "look_every_blocks": 1}
    return StopRule(tiny_config(raw, warmup=0, concurrency=[1, 2]), records)


def test_the_run_stops_only_when_every_level_is_decided(raw_config) -> None:
    """Level 1 is settled at the first look either way; an undecided level 2 keeps the
    experiment going, a decided one lets it stop."""
    noisy_at_2 = level_records(8, factor={1: 0.6, 2: 1.0}, cv=0.01, seed=1,
                               block_cv={2: 0.4})
    rule = _stop_rule(raw_config, noisy_at_2)
    assert not rule(8)
    clear = _stop_rule(raw_config, level_records(8, factor={1: 0.6, 2: 0.6}, cv=0.01))
    assert clear(8) and clear.reason == DECIDED



def test_the_report_answers_at_each_loaded_level(tmp_path) -> None:
    _, _, out = _aggregate(tmp_path, level_records(10, factor={2: 0.7}), 10,
                           slo={"e2e_ms": 3000.0})
    report_path = tmp_path / "reports" / "report.md"
    write_words(tmp_path / "raw", out, report_path)
    report = report_path.read_text(encoding="utf-8")
    summary = report[report.index("## Executive summary"):report.index("## How the")]
    assert ("- At 2 agents `chimera` (treatment) serves 1.4" in summary
            and "x the tasks within the SLO per minute of `baseline` (control)" in summary)
    line = next(x for x in summary.splitlines() if x.startswith("- At 2 agents"))
    assert "): better; the other primaries: better on workflow end-to-end time, " in line
    assert "At 1 agents" not in report
    assert "- At 2 agents: 7 of 7 primary comparisons decided, the last at 10 runs." in report
    section = report[report.index("## Under load"):]
    level_2 = section[section.index("### 2 agent(s) at once"):]
    assert "Control (mean of blocks)" in level_2
    assert "|system|tasks within the SLO per minute|" in level_2
    assert "Descriptive: no test" not in section
