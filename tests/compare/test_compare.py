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


@pytest.fixture(scope="module")
def tagged_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tags: `bare` (no raw data), `a`, `b` (+30% eval rate, on another host), `old` (an
    older record format). Git identity and a private DVC site cache stay set for the tests."""
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
