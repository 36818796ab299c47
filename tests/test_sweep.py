"""`ollabench sweep`: the chimera grid, the jobs' overrides, and the driver's checks of the
git and DVC remotes before any job starts (the real sweep is in tests/e2e)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from omegaconf import DictConfig

from ollabench.cli import main
from ollabench.config.schema import compose as compose_params
from ollabench.config.schema import validate_config
from ollabench.sweep import bench_overrides
from tests.helpers.project import ROOT, git_env, run_cmd


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


def test_chimera_sweep_is_the_18_point_grid_and_every_point_is_valid(
        chimera_sweep_config: DictConfig) -> None:
    jobs = _grid(dict(chimera_sweep_config.hydra.sweeper.params))
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
