"""DVC experiments of the real pipeline: a queued sweep, then `compare` and `leaderboard` on
them (slow: real model, real `dvc exp run`)."""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.project import ROOT, cli, run_cmd, small_project

QUEUE_TIMEOUT_S = 600


def wait_for_queue(repo: Path) -> None:
    """`dvc queue start` returns at once; wait until no experiment is queued or running.
    The queue is read in this process, as `dvc queue status` reads it: a `dvc` process per
    poll would take a core for a second each time from the experiments it waits for."""
    from dvc.repo import Repo

    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        with Repo(str(repo)) as dvc_repo:
            states = [task["status"] for task in dvc_repo.experiments.celery_queue.status()]
        if not any(state in ("Queued", "Running") for state in states):
            assert "Failed" not in states, states
            return
        time.sleep(1)
    raise AssertionError(f"queue still busy after {QUEUE_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three queued experiments: `aa` (baseline profile, the default A/A run) and a two-point
    sweep of the chimera profile over num_ctx, run one at a time as the docs say."""
    tmp = tmp_path_factory.mktemp("experiments")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_SITE_CACHE_DIR", str(tmp / "dvc-site"))
        repo = small_project(tmp / "repo")
        run_cmd(["dvc", "exp", "run", "--queue", "-q", "--name", "aa"], repo)
        run_cmd(["dvc", "exp", "run", "--queue", "-q", "-S", "profile=chimera",
              "-S", "profile.options.num_ctx=256,1024"], repo)
        run_cmd(["dvc", "queue", "start", "-j", "1"], repo)
        wait_for_queue(repo)
        yield repo


def _experiments(repo: Path, queued: bool = False) -> dict[str, dict]:
    """name -> params of every finished (or queued) experiment, from `dvc exp show`."""
    found = {}
    for baseline in json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo)):
        for exp in baseline.get("experiments") or []:
            if ((exp.get("executor") or {}).get("state") == "queued") == queued:
                found[exp["name"]] = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]
    return found


@pytest.mark.slow
def test_queued_sweep_runs_each_point_as_an_experiment(project: Path) -> None:
    params = _experiments(project)
    aa = params["aa"]["profile"]
    assert aa["name"] == "baseline" and set(aa["options"].values()) == {None}
    swept = [p["profile"] for name, p in params.items() if name != "aa"]
    assert sorted(p["options"]["num_ctx"] for p in swept) == [256, 1024]
    assert all(p["name"] == "chimera" for p in swept)


@pytest.mark.slow
def test_compare_experiments_by_name_and_by_commit(project: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    by_ctx = {p["profile"]["options"].get("num_ctx"): name
              for name, p in _experiments(project).items()}
    done = cli(project, capsys, "compare", "aa", by_ctx[1024], "--out", "by-name")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Like for like")
    report = (project / "by-name" / "comparison.md").read_text()
    assert "|options|profile|baseline|chimera|" in report
    assert "|report|eval_tok_s|" in report

    run_cmd(["dvc", "exp", "branch", by_ctx[256], "ctx256"], project)
    head = run_cmd(["git", "rev-parse", "HEAD"], project).strip()
    large = run_cmd(["git", "rev-parse", f"refs/exps/{head[:2]}/{head[2:]}/{by_ctx[1024]}"],
                 project).strip()
    done = cli(project, capsys, "compare", "ctx256", large, "--out", "by-commit")
    assert done.returncode == 0, done.stderr
    report = (project / "by-commit" / "comparison.md").read_text()
    assert "|options|num_ctx|256|1024|" in report
    assert (project / "by-commit" / "comparisons.csv").is_file()


@pytest.mark.slow
def test_leaderboard_ranks_the_three_experiments(project: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    done = cli(project, capsys, "leaderboard", "--metric", "eval_tok_s", "--stage", "report")
    assert done.returncode == 0, done.stderr
    with (project / "reports" / "leaderboard" / "report_eval_tok_s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["experiment"] for r in rows)[0] == "aa" and len(rows) == 3
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    medians = [float(r["treatment_median"]) for r in rows]
    assert medians == sorted(medians, reverse=True)  # higher is better for a rate
    for row in rows:
        assert float(row["ci_low"]) <= float(row["treatment_median"]) <= float(row["ci_high"])
        assert row["verdict"] and row["runs"] == "2" and not row["note"]
        assert row["quality"] in ("lower", "higher", "no change detected")
        assert row["changes"] == "(none)" if row["experiment"] == "aa" else (
            "profile.name=chimera" in row["changes"])
    terminal = done.stdout.splitlines()
    assert terminal[0].split()[:3] == ["#", "experiment", "runs"]
    assert rows[0]["experiment"] in terminal[1]
    markdown = (project / "reports" / "leaderboard" / "report_eval_tok_s.md").read_text()
    assert "higher is better" in markdown

    ttft = cli(project, capsys, "leaderboard", "--metric", "ttft_ms", "--stage", "workflow")
    assert ttft.returncode == 0, ttft.stderr
    bad = cli(project, capsys, "leaderboard", "--metric", "tokens")
    assert bad.returncode == 2 and "--metric: must be one of ttft_ms" in bad.stderr


@pytest.mark.slow
def test_documented_grid_queues_one_experiment_per_point(project: Path) -> None:
    """The sweep of docs/experiments.md: 3 x 2 points, each composed and validated when
    queued (removed again here, without running)."""
    run_cmd(["dvc", "exp", "run", "--queue", "-q",
          "-S", "profile.options.num_ctx=256,512,1024",
          "-S", "profile.options.temperature=0.6,0.8"], project)
    try:
        queued = _experiments(project, queued=True)
        assert sorted((p["profile"]["options"]["num_ctx"], p["profile"]["options"]["temperature"])
                      for p in queued.values()) == sorted(
            itertools.product((256, 512, 1024), (0.6, 0.8)))
    finally:
        run_cmd(["dvc", "queue", "remove", "--queued"], project)


def documented_listing() -> list[str]:
    """The README's experiment-listing command: the line of its experiments block commented
    "every experiment", as a user would copy it."""
    for line in (ROOT / "README.md").read_text().splitlines():
        command, _, comment = line.partition("#")
        if comment.strip().startswith("every experiment"):
            return shlex.split(command)
    raise AssertionError("README.md documents no experiment-listing command")


@pytest.mark.slow
def test_the_documented_listing_fits_a_120_column_terminal(project: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """The committed experiments, listed as the README says: readable in 120 columns, each
    experiment with its verdict and what it changed (`dvc exp show` squeezes over 60
    columns into that width)."""
    command = documented_listing()
    assert command[0] == "ollabench"
    done = cli(project, capsys, *command[1:])
    assert done.returncode == 0, done.stderr
    listing = done.stdout.splitlines()
    assert max(len(line) for line in listing) <= 120, done.stdout
    for name in _experiments(project):
        assert any(line.split()[1:2] == [name] for line in listing), (name, done.stdout)
    assert "profile.name=chimera" in done.stdout.replace("\n      ", " ")
    assert any("quality:" in line for line in listing)
