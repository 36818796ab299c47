"""What the leaderboard says an experiment changed (Hydra overrides against its baseline),
its terminal listing, with the load levels of an experiment that ran several, and its two
rankings (the median, or the capacity under load)."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from ollabench.compare import leaderboard_text, param_changes, write_leaderboard
from ollabench.compare.leaderboard import (
    LEVEL_COLUMNS,
    TERMINAL_COLUMNS,
    level_rows,
    rank_experiments,
)
from ollabench.errors import CompareError
from ollabench.report.load import capacity, capacity_rate
from ollabench.stats import records_frame
from ollabench.stats.load import load_table
from tests.helpers.synthetic import Scenario, make_records


def test_param_changes_are_hydra_overrides() -> None:
    base = {"profile": {"name": "baseline", "options": {}}, "run": {"runs": 10, "seed": 1}}
    new = copy.deepcopy(base)
    new["profile"] = {"name": "chimera", "options": {"num_ctx": 256}}
    del new["run"]["seed"]
    assert param_changes(base, new) == ("profile.name=chimera profile.options.num_ctx=256 "
                                        "~run.seed")
    assert param_changes(base, base) == "(none)"


def test_param_changes_write_values_as_hydra_reads_them() -> None:
    base = {"profile": {"options": {"temperature": 0.8, "top_k": None}}}
    new = {"profile": {"options": {"temperature": 0.123456, "top_k": 20, "stop": ["a"],
                                   "mmap": False}}}
    assert param_changes(base, new) == ("profile.options.temperature=0.123456 "
                                        "profile.options.top_k=20 profile.options.stop=[\"a\"] "
                                        "profile.options.mmap=false")


def test_the_terminal_listing_fits_120_columns_whatever_was_changed() -> None:
    """Figures on one line per experiment; verdict, quality and changes wrapped beneath, so a
    long list of overrides never widens the listing (every column stays in the .md file)."""
    changes = " ".join(f"profile.options.option_{i}={i * 1000}" for i in range(12))
    frame = pd.DataFrame([{
        "rank": 1, "experiment": "chimera-num-ctx-512", "rev": "8b3a72e", "baseline": "main",
        "changes": changes, "runs": 40, "treatment_median": 133.04838, "ci_low": 120.1,
        "ci_high": 140.2, "control_median": 119.4875, "median_diff_pct": 11.14,
        "p_holm": 0.0012, "verdict": "no significant difference",
        "quality": "no change detected", "note": ""}])

    lines = leaderboard_text(frame).splitlines()

    assert max(map(len, lines)) <= TERMINAL_COLUMNS
    assert lines[0].split()[:3] == ["#", "experiment", "runs"]
    assert lines[1].split()[:3] == ["1", "chimera-num-ctx-512", "40"]
    assert lines[2].startswith("   no significant difference; quality: no change detected; "
                               "rev 8b3a72e; changes: profile.options.option_0=0")
    assert " ".join(line.strip() for line in lines[2:]).endswith(changes)


def _loaded_board() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two experiments: one without levels (read as level 1), one that ran levels 1, 2, 4
    (load.csv of synthetic records, a 9 s task SLO) with per-level verdicts."""
    scenario = Scenario(levels=(1, 2, 4), slo_e2e_ms=9000.0)
    load = load_table(records_frame(make_records(scenario)), {"e2e_ms": 9000.0})
    verdicts = pd.DataFrame([
        {"concurrency": level, "stage": stage, "metric": metric, "verdict": verdict}
        for level, stage, metric, verdict in [
            (1, "workflow", "e2e_ms", "equivalent"),
            (2, "workflow", "e2e_ms", "equivalent"), (2, "system", "tasks_per_min", "worse"),
            (2, "system", "slo_tasks_per_min", "equivalent"),
            (4, "system", "slo_tasks_per_min", "inconclusive")]])
    rows = level_rows("chimera-loaded", load, verdicts, "e2e_ms", "workflow")
    base = {"rev": "8b3a72e", "baseline": "main", "changes": "run.concurrency=[1,2,4]",
            "runs": 10, "treatment_median": 6000.0, "ci_low": 5900.0, "ci_high": 6100.0,
            "control_median": 6010.0, "median_diff_pct": -0.2, "p_holm": 0.9,
            "verdict": "no significant difference", "quality": "no change detected",
            "note": ""}
    frame = pd.DataFrame([
        base | {"rank": 1, "experiment": "chimera-loaded", "levels": "1,2,4",
                "capacity": capacity(load, "treatment"),
                "control_capacity": capacity(load, "control")},
        base | {"rank": 2, "experiment": "plain", "levels": "1", "capacity": None,
                "control_capacity": None}])
    return frame, pd.DataFrame(rows, columns=list(LEVEL_COLUMNS))


def test_levels_get_one_row_each_with_their_own_verdicts() -> None:
    """Never averaged: one row per level, each with the verdict made at that level (the
    SLO's tasks per minute when the run set an SLO), none where the run made none."""
    _, load = _loaded_board()
    assert load["concurrency"].tolist() == [1, 2, 4]
    assert load["verdict"].fillna("-").tolist() == ["equivalent", "equivalent", "-"]
    assert load["tasks_verdict"].fillna("-").tolist() == ["-", "equivalent", "inconclusive"]
    assert (load["treatment_goodput_pct"] == [100.0, 100.0, 0.0]).all()
    assert level_rows("plain", None, None, "e2e_ms", "workflow") == []


def test_the_listing_shows_capacity_and_each_level_within_120_columns(
        tmp_path: Path) -> None:
    frame, load = _loaded_board()
    lines = leaderboard_text(frame, load).splitlines()
    assert max(map(len, lines)) <= TERMINAL_COLUMNS
    text = " ".join(line.strip() for line in lines)
    assert "under load, treatment vs control: capacity 2 agents vs 2 agents; 1 agent: 9.469 " \
           "vs 9.433 tasks/min; 2 agents: 18.78 vs 18.93 tasks/min (equivalent); 4 agents: " \
           "18.79 vs 18.73 tasks/min (inconclusive)" in text
    assert text.count("under load") == 1  # the experiment without levels has no such line
    markdown = write_leaderboard(frame, "e2e_ms", "workflow", tmp_path, load).read_text()
    assert "## Under load" in markdown and "|chimera-loaded|4|2 agents / 2 agents|" \
        in markdown
    assert (tmp_path / "workflow_e2e_ms_load.csv").is_file()


def _ranked_frame() -> pd.DataFrame:
    """Four experiments as the leaderboard reads them, unranked: e2e_ms medians (lower is
    better) that disagree with their capacities."""
    rows = [("plain-fast", 5000.0, None, None), ("two-agents", 7000.0, 2, 17.0),
            ("four-agents", 9000.0, 4, 30.0), ("four-agents-busier", 9500.0, 4, 31.5)]
    return pd.DataFrame([{"experiment": name, "treatment_median": median, "capacity": level,
                          "capacity_tasks_per_min": rate} for name, median, level, rate in rows])


def test_by_median_the_fastest_one_agent_run_leads() -> None:
    ranked = rank_experiments(_ranked_frame(), "e2e_ms", "median")
    assert ranked["experiment"].tolist() == ["plain-fast", "two-agents", "four-agents",
                                             "four-agents-busier"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4]


def test_by_capacity_more_agents_lead_ties_go_to_the_tasks_served_and_no_levels_last() -> None:
    ranked = rank_experiments(_ranked_frame(), "e2e_ms", "capacity")
    assert ranked["experiment"].tolist() == ["four-agents-busier", "four-agents", "two-agents",
                                             "plain-fast"]


def test_by_capacity_without_any_levels_says_what_to_run() -> None:
    frame = _ranked_frame().assign(capacity=None, capacity_tasks_per_min=None)
    with pytest.raises(CompareError, match=r"^--by capacity: no experiment ran several levels"):
        rank_experiments(frame, "e2e_ms", "capacity")


def test_the_capacity_ranking_is_written_under_its_own_name(tmp_path: Path) -> None:
    frame, load = _loaded_board()
    markdown = write_leaderboard(frame, "e2e_ms", "workflow", tmp_path, load, by="capacity")
    assert markdown.name == "workflow_e2e_ms_by_capacity.md"
    assert markdown.read_text().startswith("# Leaderboard: e2e_ms, workflow stage, by capacity")
    assert "ranked by its treatment arm's capacity" in markdown.read_text()
    assert {p.name for p in tmp_path.iterdir()} == {
        "workflow_e2e_ms_by_capacity.md", "workflow_e2e_ms_by_capacity.csv",
        "workflow_e2e_ms_by_capacity_load.csv"}


def test_capacity_rate_is_the_tasks_served_at_the_capacity_level() -> None:
    table = load_table(records_frame(make_records(Scenario(levels=(1, 2, 4),
                                                           slo_e2e_ms=9000.0))),
                       {"e2e_ms": 9000.0})
    level, rate = capacity_rate(table, "treatment")
    assert level == 2
    assert rate == float(table.loc[(table["arm"] == "treatment")
                                   & (table["concurrency"] == 2), "tasks_per_min"].iloc[0])
    assert capacity_rate(table.assign(goodput_pct=0.0), "treatment") == (None, None)
