"""`ollabench tune` in a real git + DVC project: each measured candidate and the confirmatory
run is a DVC experiment, with the params, raw records and metrics the search saw, that
`dvc exp show`, `compare`, `leaderboard` and `history` read like any other (slow: real
`dvc exp run`)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ollabench.compare.revisions import Revision
from ollabench.paths import CALLS_FILE, RAW_DIR
from ollabench.records.schema import read_records
from ollabench.sweep import tool_env
from ollabench.tune.settings import TUNE_DATA
from tests.helpers.project import cli, make_project, run_cmd
from tests.helpers.speed_surface import SurfaceOllama, grid_surface

STUDY = "tune-qwen2.5-7b"


def _args(url: str, *extra: str) -> list[str]:
    return ["tune", "--no-progress",
            "model=qwen2.5-7b", f"model.host='{url}'", "workload.num_predict.analysis=12",
            "workload.num_predict.report=12", "run.read_timeout_s=5",
            "~tune.space.num_thread", "tune.space.num_batch=[256,512]",
            "tune.race.max_runs=8", "tune.confirm.max_runs=12", *extra]


def _tune(repo: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    """`ollabench tune` as a user runs it in the project: a process of its own."""
    return subprocess.run([sys.executable, "-m", "ollabench.cli", *_args(url, *extra)],
                          cwd=repo, env=tool_env(), capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_every_candidate_and_the_confirmation_is_a_dvc_experiment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo = make_project(tmp_path / "repo")
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        done = _tune(repo, server.url)
        assert done.returncode == 0, done.stdout + done.stderr
        chats = len(server.chats())

    names = {f"{STUDY}-trial-0", f"{STUDY}-trial-1", f"{STUDY}-confirm"}
    shown = list(csv.DictReader(io.StringIO(run_cmd(["dvc", "exp", "show", "--csv"], repo))))
    experiments = {row["Experiment"]: row for row in shown if row["Experiment"]}
    assert set(experiments) == names
    winner = experiments[f"{STUDY}-confirm"]
    assert winner["profile.options.num_batch"] == "256"
    assert winner["reference.name"] == "baseline"
    assert "is confirmed: workflow/e2e_ms" in done.stdout
    assert f"experiment {STUDY}-confirm" in (repo / "conf" / "profile" /
                                            "tuned_qwen2.5-7b.yaml").read_text()

    # The experiments hold the calls the search measured (replayed from its journal: the
    # server saw no more calls than the search recorded).
    measured = {label: read_records(repo / TUNE_DATA / STUDY / label / "raw" / CALLS_FILE)
                for label in ("trial-0", "trial-1", "confirm")}
    assert chats == sum(len(records) for records in measured.values())
    for label, records in measured.items():
        copy = Revision(repo, f"{STUDY}-{label}").download(
            f"{RAW_DIR.as_posix()}/{CALLS_FILE}", tmp_path / f"{label}.jsonl")
        kept = read_records(copy)
        assert [(r.key, r.started_at) for r in kept] == [(r.key, r.started_at) for r in records]
        metrics = json.loads((repo / TUNE_DATA / STUDY / label / "metrics.json").read_text())
        assert experiments[f"{STUDY}-{label}"]["runs"] == str(metrics["runs"])

    compared = cli(repo, capsys, "compare", f"{STUDY}-trial-0", f"{STUDY}-trial-1")
    assert compared.returncode == 0, compared.stderr
    assert "num_batch: 256 -> 512" in compared.stdout
    board = cli(repo, capsys, "leaderboard", "--metric", "e2e_ms")
    assert board.returncode == 0, board.stderr
    assert all(name in board.stdout for name in names)
    assert cli(repo, capsys, "history", "--no-progress", "--all-experiments", "--out",
               str(tmp_path / "history")).returncode == 0
    with (tmp_path / "history" / "history.csv").open() as fh:
        assert names <= {row["rev"] for row in csv.DictReader(fh)}

    # Rerun: the study is done; nothing is measured or recorded again.
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        again = _tune(repo, server.url)
        assert again.returncode == 0, again.stdout + again.stderr
        assert server.chats() == []


def test_outside_a_dvc_repository_tune_says_so_before_the_first_call(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """In this process (the refusal comes before any call)."""
    with SurfaceOllama(grid_surface((256, 2), 16)) as server:
        done = cli(tmp_path, capsys, *_args(server.url, "--conf",
                                           str(Path(__file__).parents[2] / "conf")))
        assert server.chats() == []
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"ollabench: error: {tmp_path}: not a DVC repository with a commit; tune records each "
        "candidate as a DVC experiment (run it in the project folder, or pass "
        "--no-experiments to keep the candidates out of DVC)"]
