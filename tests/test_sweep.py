"""`ollabench sweep`: the chimera grid, the driver's checks, and a real two-job submitit_local
sweep that pushes to local git and DVC remotes, pulled and ranked from a fresh clone."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ollabench.cli import main
from ollabench.config import compose as compose_params
from ollabench.config import validate_config
from ollabench.sweep import bench_overrides
from tests.helpers.project import ROOT, cli, git_env, run_cmd, small_project


def _grid(sweeper_params: dict[str, str]) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands them (a cartesian product)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = []
    for override in OverridesParser.create().parse_overrides(
            [f"{key}={value}" for key, value in sweeper_params.items()]):
        key = override.get_key_element()
        values = (override.sweep_string_iterator() if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        axes.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*axes)]


def test_chimera_sweep_is_the_18_point_grid_and_every_point_is_valid() -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["+sweep=chimera_sweep"], return_hydra_config=True)
    jobs = _grid(dict(cfg.hydra.sweeper.params))
    assert len(jobs) == 18
    points = set()
    for job in jobs:
        config = validate_config(compose_params(job, conf_dir=ROOT / "conf"))
        assert config.profile.name == "chimera" and config.reference.name == "baseline"
        options = config.profile.options
        points.add((options["num_gpu"], options["num_ctx"], options["temperature"]))
    assert points == set(itertools.product((60, 80, 120), (256, 512, 1024), (0.6, 0.8)))


def test_sweep_group_stays_out_of_the_default_composition() -> None:
    assert "sweep" not in compose_params(conf_dir=ROOT / "conf")


def test_job_overrides_drop_the_sweep_selection() -> None:
    task = ["+sweep=chimera_sweep", "profile=chimera", "profile.options.num_ctx=256",
            "++profile.options.top_k=20"]
    assert bench_overrides(task) == task[1:]


# --------------------------------------------------------------------------- driver checks


@pytest.fixture
def local_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed git + DVC repository with no remote of either kind."""
    for key, value in {**git_env(), "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site")}.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    run_cmd(["git", "init", "-q", "-b", "main"], repo)
    run_cmd(["dvc", "init", "-q"], repo)
    run_cmd(["git", "commit", "-qm", "init"], repo)
    monkeypatch.chdir(repo)
    return repo


def _sweep_error(capsys: pytest.CaptureFixture) -> str:
    assert main(["sweep", "-m", "profile.options.num_ctx=256,512"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollabench: error: ")
    return err


def test_sweep_needs_a_git_remote_holding_the_commit_and_a_dvc_remote(
        local_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no git remote 'origin'" in _sweep_error(capsys)

    bare = tmp_path / "remote.git"
    run_cmd(["git", "init", "-q", "--bare", "-b", "main", str(bare)], tmp_path)
    run_cmd(["git", "remote", "add", "origin", str(bare)], local_repo)
    assert "is not on 'origin'" in _sweep_error(capsys)

    run_cmd(["git", "push", "-q", "origin", "main"], local_repo)
    assert "no default DVC remote" in _sweep_error(capsys)

    run_cmd(["dvc", "remote", "add", "--local", "-d", "mine", str(tmp_path / "store")], local_repo)
    assert "no default DVC remote" in _sweep_error(capsys)  # config.local: not in clones


# --------------------------------------------------------------------------- two-job sweep


@pytest.fixture
def shared_remotes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project pushed to a bare git remote, with a committed local-folder DVC remote."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = small_project(tmp_path / "repo")
    bare = tmp_path / "remote.git"
    run_cmd(["git", "init", "-q", "--bare", "-b", "main", str(bare)], tmp_path)
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "dvc-store")], repo)
    run_cmd(["git", "commit", "-qam", "shared DVC remote"], repo)
    run_cmd(["git", "remote", "add", "origin", str(bare)], repo)
    run_cmd(["git", "push", "-q", "origin", "main"], repo)
    return repo, bare


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
    with (fresh / "reports" / "leaderboard" / "report_eval_tok_s.csv").open() as fh:
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
