"""`ollabench sweep` for real: jobs clone a project from a bare git remote, run and push their
experiments with their data to a local DVC remote; a fresh clone pulls, compares and ranks
them. The two-job submitit_local sweep is slow (real model, real `dvc exp run`)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.project import cli, run_cmd


@pytest.mark.slow
def test_submitit_local_sweep_is_pulled_and_ranked_from_a_fresh_clone(
        shared_remotes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, bare = shared_remotes
    jobs = tmp_path / "jobs"
    # A process of its own, as a user runs it (Hydra keeps global state once it has run).
    out = run_cmd([sys.executable, "-m", "ollabench.cli", "sweep", "-m", "--name", "grid",
                "--workdir", str(jobs), "profile=chimera", "profile.options.num_ctx=256,512",
                # two jobs share this machine: one thread each (and `++` adds a key)
                "++profile.options.num_thread=1", "++reference.options.num_thread=1",
                "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"], repo)
    assert "2 of 2 experiments pushed to 'origin'" in out
    assert sorted(p.parent.parent.name for p in jobs.glob("grid/*/repo/dvc.yaml")) == ["0", "1"]
    refs = run_cmd(["git", "ls-remote", str(bare), "refs/exps/*"], repo)
    assert sorted(line.rsplit("/", 1)[1] for line in refs.splitlines()) == ["grid-0", "grid-1"]

    fresh = tmp_path / "fresh"
    run_cmd(["git", "clone", "-q", str(bare), str(fresh)], tmp_path)
    run_cmd(["dvc", "exp", "pull", "--no-cache", "origin"], fresh)  # the refs, not the data
    compared = cli(fresh, capsys, "compare", "grid-0", "grid-1")
    assert compared.returncode == 0, compared.stderr
    assert "num_ctx: 256 -> 512" in compared.stdout
    assert not (fresh / ".dvc" / "cache").exists()  # the raw records came from the DVC remote

    run_cmd(["dvc", "exp", "pull", "origin"], fresh)
    board = cli(fresh, capsys, "leaderboard", "--metric", "eval_tok_s")
    assert board.returncode == 0, board.stderr
    with (fresh / "reports" / "leaderboard" / "workflow_eval_tok_s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["experiment"] for r in rows) == ["grid-0", "grid-1"]
    assert all(r["ci_low"] and not r["note"] for r in rows)



def test_a_bad_option_fails_its_job_before_any_clone(shared_remotes: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    """Without -m one job runs here; it validates its composed config first."""
    repo, _ = shared_remotes
    command = [sys.executable, "-m", "ollabench.cli", "sweep", "--name", "bad", "--workdir",
               str(tmp_path / "jobs"), "profile=chimera", "profile.options.num_ctx=0"]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "#0 bad-0 on" in done.stdout
    assert "FAILED: profile.options.num_ctx: must be at least 1" in done.stdout
    assert not (tmp_path / "jobs" / "bad" / "0" / "repo").exists()

    again = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "a sweep named 'bad' ran before" in again.stderr
