"""`compare` across two git revisions of a real git + DVC repository holding synthetic raw
data (`dvc add`, no model): provenance first, verdicts, and one-line errors."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ollabench.cli import main
from tests.helpers.project import run_cmd
from tests.helpers.revisions import commit_raw, init_repo, repo_env
from tests.helpers.synthetic import Scenario, make_records

TASK_SLO_MS = 9000.0  # a task alone takes about 6.4 s; twice that waiting for a slot


@pytest.fixture(scope="module")
def tagged_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tags: `bare` (no raw data), `a`, `b` (+30% eval rate, on another host), `old` (an
    older record format), `l124` (levels 1, 2 and 4 on a server with 2 slots) and `l12`
    (levels 1 and 2 on a server with 1 slot), both with a 9 s task SLO. Git identity and a
    private DVC site cache stay set for the tests."""
    tmp = tmp_path_factory.mktemp("synthetic")
    with repo_env(tmp):
        repo = tmp / "repo"
        init_repo(repo)
        run_cmd(["git", "tag", "bare"], repo)
        same = Scenario(treatment_profile="chimera")
        commit_raw(repo, make_records(same), same, "a", tag="a")
        faster = Scenario(treatment_profile="chimera", eval_rate_gain=0.3, seed=1)
        commit_raw(repo, make_records(faster), faster, "b", tag="b",
                   env_changes={"host": {"hostname": "node7"}})
        old = [replace(r, schema_version=0) for r in make_records(same)]
        commit_raw(repo, old, same, "old", tag="old")
        for tag, levels, slots in (("l124", (1, 2, 4), 2), ("l12", (1, 2), 1)):
            loaded = Scenario(levels=levels, slots=slots, slo_e2e_ms=TASK_SLO_MS)
            commit_raw(repo, make_records(loaded), loaded, tag, tag=tag)
        yield repo


@pytest.fixture
def synthetic_repo(tagged_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tagged repository, as the working directory."""
    repo = shutil.copytree(tagged_repo, tmp_path / "repo", symlinks=True)
    monkeypatch.chdir(repo)
    return repo


def test_compare_commits_reports_setup_then_verdicts(synthetic_repo: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "a", "b", "--out", "cmp"]) == 0
    assert "Across different machines" in capsys.readouterr().out
    report = (synthetic_repo / "cmp" / "comparison.md").read_text()
    assert report.index("different machines") < report.index("## Provenance differences") \
        < report.index("node7") < report.index("## Verdicts")
    with (synthetic_repo / "cmp" / "comparisons.csv").open() as fh:
        rows = {(r["stage"], r["metric"]): r for r in csv.DictReader(fh)}
    eval_rate = rows[("report", "eval_tok_s")]
    assert eval_rate["verdict"] == "better"
    assert 20 < float(eval_rate["median_diff_pct"]) < 40
    assert eval_rate["p_paired"] == ""  # runs of two experiments are no pairs
    assert rows[("report", "output_tokens")]["verdict"] == "no significant difference"


def test_compare_control_arm_of_the_same_setup(synthetic_repo: Path) -> None:
    assert main(["compare", "a", "a", "--arm", "control", "--out", "aa"]) == 0
    report = (synthetic_repo / "aa" / "comparison.md").read_text()
    assert "Like for like" in report and "None: both sides" in report


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("a", "nosuch", "unknown revision 'nosuch'"),
        ("bare", "a", "revision 'bare' has no raw data (data/raw/calls.jsonl)"),
        ("a", "old", "revision 'old' was recorded in an older record format (version 0"),
    ],
)
def test_compare_errors_are_one_line(synthetic_repo: Path, capsys: pytest.CaptureFixture,
                                     a: str, b: str, message: str) -> None:
    assert main(["compare", a, b]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollabench: error: ") and message in err
    assert err.count("\n") == 1


def test_compare_names_an_unknown_arm(synthetic_repo: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "a", "b", "--arm", "both"]) == 2
    err = capsys.readouterr().err
    assert err == ("ollabench: error: --arm: must be one of control, treatment, got 'both'\n")


def test_compare_says_when_data_is_neither_cached_nor_pushed(synthetic_repo: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    shutil.rmtree(synthetic_repo / ".dvc" / "cache")
    assert main(["compare", "a", "b"]) == 2
    assert "neither in the local DVC cache nor on a DVC remote" in capsys.readouterr().err


def test_compare_levels_compares_only_the_shared_ones(synthetic_repo: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A ran levels 1, 2, 4 and B 1, 2: only 1 and 2 are compared, each on its own, and each
    side's capacity is taken among them (A's level 4 misses the SLO anyway; B's one slot
    makes its tasks at 2 agents twice as long, past the SLO)."""
    assert main(["compare", "l124", "l12", "--out", "lv"]) == 0
    out = capsys.readouterr().out
    assert "A ran 1, 2, 4; B ran 1, 2; compared: 1, 2 (the shared levels only)." in out
    assert "run.slo" not in out and "run.concurrency: [1, 2, 4] -> [1, 2]" in out
    report = (synthetic_repo / "lv" / "comparison.md").read_text()
    assert "Capacity, the largest shared level whose tasks meet the side's own SLO (A: task " \
           "<= 9000 ms; B: task <= 9000 ms): A 2 agent(s), B 1 agent(s)." in report
    with (synthetic_repo / "lv" / "load.csv").open() as fh:
        load = list(csv.DictReader(fh))
    assert sorted((int(r["concurrency"]), r["side"]) for r in load) == [
        (1, "A"), (1, "B"), (2, "A"), (2, "B")]
    goodput = {(int(r["concurrency"]), r["side"]): float(r["goodput_pct"]) for r in load}
    assert goodput == {(1, "A"): 100.0, (1, "B"): 100.0, (2, "A"): 100.0, (2, "B"): 0.0}
    with (synthetic_repo / "lv" / "comparisons.csv").open() as fh:
        verdicts = {(r["concurrency"], r["stage"], r["metric"]): r["verdict"]
                    for r in csv.DictReader(fh)}
    assert {level for level, _, _ in verdicts} == {"1", "2"}  # never level 4, never pooled
    # level 1: the same workload at the same speed; at 2 agents B's calls wait for its one
    # slot as long as they run (one value per block, the median over its agents' tasks)
    assert verdicts[("1", "workflow", "e2e_ms")] == "no significant difference"
    assert verdicts[("2", "workflow", "e2e_ms")] == "worse"
    assert verdicts[("2", "workflow", "eval_tok_s")] == "no significant difference"


def test_compare_reads_results_without_levels_as_level_1(synthetic_repo: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "a", "l124", "--out", "old_vs_levels"]) == 0
    assert "A ran 1; B ran 1, 2, 4; compared: 1 (the shared levels only)." \
        in capsys.readouterr().out
    report = (synthetic_repo / "old_vs_levels" / "comparison.md").read_text()
    assert "The sides share no loaded level: nothing to compare under load." in report
    assert not (synthetic_repo / "old_vs_levels" / "load.csv").exists()
