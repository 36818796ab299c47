"""`ollabench history` over a real git + DVC repository of 24 benchmark commits (synthetic raw
data, no model): a 10% slowdown at one commit (every time 10% longer, the eval rate 1/1.1),
a move to a faster host at another, A/A noise everywhere else. The slowdown must be found at
its commit with its size, the host change must stay out of every series (or, hosts merged,
be named as the cause), and nothing else may be reported."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ollabench.cli import main
from tests.helpers.revisions import Step, commit_steps, init_repo, repo_env, save_experiment
from tests.helpers.synthetic import Scenario

RUNS = 10
SLOW_AT = 8  # the first commit measured with the slow code
HOST_AT = 16  # the first commit measured on the other host
COMMITS = 24
SLOWDOWN = 1.10  # time per call of the treatment arm, relative
HOST_B_RATE = 1.25  # the other host's eval rate, relative
HOST_B_TTFT = 0.80
METRICS = ("ttft_ms", "eval_tok_s", "e2e_ms")
STEP_PCT = {"ttft_ms": 10.0, "e2e_ms": 10.0, "eval_tok_s": (1 / SLOWDOWN - 1) * 100}
NOTES_AFTER = 5  # a commit that changes a file in git only follows this one
HOST_B = {"hostname": "node7", "cpu_model": "Other CPU", "memory_gib": 16.0}


EXPERIMENTS = ("exp-aa", "exp-faster")


@dataclass(frozen=True)
class Repo:
    path: Path
    init: str
    bench: list[str]  # the 24 commits with raw data, in order
    notes: str  # the commit without new raw data


def _steps() -> list[Step]:
    jitter = np.random.default_rng(7).normal(0.0, 0.01, COMMITS)  # revision-to-revision noise
    steps = []
    for i in range(COMMITS):
        slow, moved = i >= SLOW_AT, i >= HOST_AT
        rate = (1 / SLOWDOWN if slow else 1.0) * (HOST_B_RATE if moved else 1.0)
        ttft = (SLOWDOWN if slow else 1.0) * (HOST_B_TTFT if moved else 1.0)
        scenario = Scenario(runs=RUNS, seed=100 + i, eval_rate_gain=rate * (1 + jitter[i]) - 1,
                            ttft_factor=ttft * (1 + jitter[i]))
        env = {"git": {"commit": "c0de" * 10 if i < SLOW_AT else "5109" * 10, "dirty": False}}
        if i >= HOST_AT:
            env["host"] = HOST_B
        steps.append(Step(scenario, env))
        if i == NOTES_AFTER:
            steps.append(Step(None))
    return steps


@pytest.fixture(scope="module")
def history_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    tmp = tmp_path_factory.mktemp("history")
    with repo_env(tmp):
        path = tmp / "repo"
        init = init_repo(path)
        shas = commit_steps(path, _steps())
        notes = shas.pop(NOTES_AFTER + 1)
        for seed, name in enumerate(EXPERIMENTS):
            save_experiment(path, name, Scenario(runs=RUNS, seed=900 + seed,
                                                 eval_rate_gain=0.3 * seed), {"host": HOST_B})
        yield Repo(path, init, shas, notes)


@pytest.fixture
def repo(history_repo: Repo, monkeypatch: pytest.MonkeyPatch) -> Repo:
    monkeypatch.chdir(history_repo.path)
    return history_repo


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _history(out: Path, *args: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    assert main(["history", "--no-progress", "--out", str(out), *args]) == 0
    return _rows(out / "history.csv"), _rows(out / "changes.csv")


def test_history_finds_the_slowdown_and_keeps_hosts_apart(repo: Repo, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    points, changes = _history(tmp_path / "h")
    out = capsys.readouterr().out
    assert f"24 revisions read, 2 skipped: {repo.init[:10]} (no raw data" in out
    assert f"{repo.notes[:10]} (the same raw data as {repo.bench[NOTES_AFTER][:10]})" in out
    slow = repo.bench[SLOW_AT][:10]
    # every metric of every stage moves, on the first host only, at that commit
    assert sorted((c["stage"], c["metric"]) for c in changes) == sorted(
        (stage, metric) for stage in ("analysis", "report", "workflow") for metric in METRICS)
    for change in changes:
        assert (change["rev"], change["setup"], change["host"]) == (slow, "1", _host_a(points))
        assert change["rev_before"] == repo.bench[SLOW_AT - 1][:10]
        assert change["differences"] == f"software.ollabench_commit: {'c0de' * 10} -> " \
                                        f"{'5109' * 10}"
        assert change["cause"] == "different software versions"
        assert change["verdict"] == "worse" and float(change["p_value"]) < 1e-6
        assert (change["points_before"], change["points_after"]) == (str(SLOW_AT),
                                                                     str(HOST_AT - SLOW_AT))
        step, low, high = (float(change[k]) for k in ("step_pct", "ci_low_pct", "ci_high_pct"))
        truth = STEP_PCT[change["metric"]]
        assert abs(step - truth) < 2.0 and low < step < high and high - low < 4.0
    # the other host is a series of its own, 8 points long, flat
    setups = {(r["setup"], r["host"]) for r in points}
    assert len(setups) == 2 and any("Other CPU" in host for _, host in setups)
    second = [r for r in points if r["setup"] == "2" and r["series"].endswith("eval_tok_s_setup2")
              and r["stage"] == "report"]
    assert [r["rev"] for r in second] == [s[:10] for s in repo.bench[HOST_AT:]]
    # every point: per-run median inside its CI, the runs it rests on, a date
    for row in points:
        assert float(row["ci_low"]) <= float(row["median"]) <= float(row["ci_high"])
        assert row["runs"] == str(RUNS) and row["date"]
    folder = tmp_path / "h"
    assert len(list((folder / "figures").glob("*.png"))) == 18  # 3 stages x 3 metrics x 2 hosts
    plot = _rows(folder / "history_plot.csv")
    assert len(plot) == COMMITS and "treatment_report_eval_tok_s_setup1" in plot[0]
    summary = (folder / "history.md").read_text()
    assert "## Change points" in summary and slow in summary and "## Revisions skipped" in summary


def _host_a(points: list[dict[str, str]]) -> str:
    return next(r["host"] for r in points if r["setup"] == "1")


def test_merged_hosts_name_the_host_change_as_the_cause(repo: Repo, tmp_path: Path) -> None:
    _, changes = _history(tmp_path / "m", "--merge-hosts", "--stage", "report")
    found = {(c["metric"], c["rev"]): c for c in changes}
    slow, moved = repo.bench[SLOW_AT][:10], repo.bench[HOST_AT][:10]
    assert set(found) == {(metric, rev) for metric in METRICS for rev in (slow, moved)}
    for metric in METRICS:
        host = found[(metric, moved)]
        assert host["cause"] == "different machines, different hardware"
        assert "hardware.cpu_model: Test CPU -> Other CPU" in host["differences"]
        assert host["verdict"] == "better"
        assert found[(metric, slow)]["cause"] == "different software versions"
    assert 20 < float(found[("eval_tok_s", moved)]["step_pct"]) < 30
    assert -25 < float(found[("ttft_ms", moved)]["step_pct"]) < -15


def test_history_of_a_range_reads_only_that_range(repo: Repo, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo.path / "data")  # run from a folder inside the repository
    points, changes = _history(tmp_path / "r", "--revs", f"{repo.bench[1]}..{repo.bench[6]}",
                               "--metric", "eval_tok_s", "--stage", "report")
    assert [r["rev"] for r in points] == [s[:10] for s in repo.bench[2:7]]
    assert changes == []


def test_history_of_experiments_places_them_after_their_commits(repo: Repo,
                                                                 tmp_path: Path) -> None:
    points, _ = _history(tmp_path / "e", "--all-experiments", "--metric", "eval_tok_s",
                         "--stage", "report")
    assert [(r["rev"], r["kind"]) for r in points] == [(n, "experiment") for n in EXPERIMENTS]
    points, _ = _history(tmp_path / "b", "--all-experiments", "--revs",
                         f"{repo.bench[-3]}..HEAD", "--metric", "eval_tok_s", "--stage", "report")
    assert [r["rev"] for r in points] == [s[:10] for s in repo.bench[-2:]] + list(EXPERIMENTS)
    assert float(points[-1]["median"]) > 1.2 * float(points[-2]["median"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--revs", "nosuch..HEAD"], "unknown revision 'nosuch'"),
        (["--revs", "init_only"], "no revision of --revs init_only has raw data"),
        (["--metric", "tok_s"], "--metric: must be one of"),
        (["--revs", "HEAD...HEAD~1"], "give A..B"),
    ],
)
def test_history_errors_are_one_line(repo: Repo, capsys: pytest.CaptureFixture,
                                     args: list[str], message: str) -> None:
    args = [repo.init if a == "init_only" else a for a in args]
    message = message.replace("init_only", repo.init)
    assert main(["history", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollabench: error: ") and message in err
    assert err.count("\n") == 1


def test_history_says_when_data_is_neither_cached_nor_pushed(history_repo: Repo,
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    copy = shutil.copytree(history_repo.path, tmp_path / "repo", symlinks=True)
    shutil.rmtree(copy / ".dvc" / "cache")
    monkeypatch.chdir(copy)
    assert main(["history", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "neither in the local DVC cache nor on a DVC remote" in err
    assert err.count("\n") == 1
