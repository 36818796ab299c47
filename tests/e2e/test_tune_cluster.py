"""`ollabench tune --workers` for real: submitit_local jobs clone the project from a bare git
remote, share one Optuna journal file, push each candidate as a DVC experiment, and a last
job confirms the winner; a fresh clone pulls and ranks them (slow: real `dvc exp run`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ollabench.paths import CALLS_FILE
from ollabench.records.schema import read_records
from ollabench.sweep import tool_env
from tests.helpers.project import cli, run_cmd
from tests.helpers.speed_surface import SurfaceOllama, grid_surface

STUDY = "tune-qwen2.5-7b"
NAMES = [f"{STUDY}-confirm", f"{STUDY}-trial-0", f"{STUDY}-trial-1"]


def _args(url: str, *extra: str) -> list[str]:
    return ["tune", *extra,
            "model=qwen2.5-7b", f"model.host='{url}'", "workload.num_predict.analysis=12",
            "workload.num_predict.report=12", "run.read_timeout_s=5",
            "~tune.space.num_thread", "tune.space.num_batch=[256,512]",
            "tune.race.max_runs=8", "tune.confirm.max_runs=12",
            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]


def _tune(repo: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    """The real command, in a process of its own: its jobs are processes too."""
    return subprocess.run([sys.executable, "-m", "ollabench.cli", *_args(url, *extra)],
                          cwd=repo, env=tool_env(), capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_two_jobs_share_the_study_and_a_third_confirms_the_winner(
        shared_remotes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo, bare = shared_remotes
    jobs = tmp_path / "jobs"
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        done = _tune(repo, server.url, "--workers", "2", "--workdir", str(jobs))
        assert done.returncode == 0, done.stdout + done.stderr
        chats = len(server.chats())
    lines = done.stdout.splitlines()
    assert sorted(line.split(" on ")[0] for line in lines if " job #" in line) == [
        "confirm job #0", "search job #0", "search job #1"]
    assert all(line.endswith(": done") for line in lines if " job #" in line)
    assert "is confirmed: workflow/e2e_ms" in done.stdout
    profile = (repo / "conf" / "profile" / "tuned_qwen2.5-7b.yaml").read_text()
    assert f"DVC experiment {STUDY}-confirm" in profile and "num_batch: 256" in profile
    assert (repo / "reports" / "tune" / STUDY / "tune.md").exists()
    assert (jobs / STUDY / "study.journal").exists()

    refs = run_cmd(["git", "ls-remote", str(bare), "refs/exps/*"], repo)
    assert sorted(line.rsplit("/", 1)[1] for line in refs.splitlines()) == NAMES
    # Each candidate was measured once, by one job: the server saw exactly the calls the
    # jobs' clones recorded.
    measured = [read_records(p) for p in jobs.glob(f"{STUDY}/*/*/*/repo/data/tune/{STUDY}/"
                                                   f"*/raw/{CALLS_FILE}")]
    assert len(measured) == 3
    assert chats == sum(len(records) for records in measured)

    fresh = tmp_path / "fresh"
    run_cmd(["git", "clone", "-q", str(bare), str(fresh)], tmp_path)
    run_cmd(["dvc", "exp", "pull", "origin"], fresh)
    board = cli(fresh, capsys, "leaderboard", "--metric", "e2e_ms")
    assert board.returncode == 0, board.stderr
    assert all(name in board.stdout for name in NAMES)

    # Rerun: the shared study is done, its confirmation stored; no job measures anything.
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        again = _tune(repo, server.url, "--workers", "2", "--workdir", str(jobs))
        assert again.returncode == 0, again.stdout + again.stderr
        assert server.chats() == []
    assert "confirm job" not in again.stdout


@pytest.mark.parametrize(("extra", "message"), [
    (["--workers", "0"], "--workers: must be at least 1, got 0"),
    (["--workers", "2", "--no-experiments"], "--no-experiments: a cluster search brings"),
    (["--workers", "2", "tune.storage=sqlite:///study.db"],
     "tune.storage: a SQLite file cannot be shared by jobs on several machines"),
])
def test_bad_cluster_settings_stop_with_one_line(
        shared_remotes: tuple[Path, Path], capsys: pytest.CaptureFixture, extra: list[str],
        message: str) -> None:
    """In this process (the refusal comes before any job or call)."""
    repo, _ = shared_remotes
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        done = cli(repo, capsys, *_args(server.url, *extra))
        assert server.chats() == []
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ollabench: error: {message}"), err


def test_launcher_settings_need_workers(shared_remotes: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture) -> None:
    repo, _ = shared_remotes
    done = cli(repo, capsys, *_args("http://127.0.0.1:9"))
    assert done.returncode == 2
    assert done.stderr.strip() == ("ollabench: error: hydra/launcher=submitit_local: launcher "
                                   "settings need --workers N")
