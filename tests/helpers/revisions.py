"""Real git + DVC repositories holding synthetic raw data, commit by commit (no model): what
`compare` and `history` read. DVC runs in this process (its `add` is the same code as the
command line's, without a new interpreter per commit), git as a subprocess."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ollabench.records.schema import CallRecord
from tests.helpers.project import git_env, run_cmd
from tests.helpers.synthetic import Scenario, make_records, write_raw


@contextmanager
def repo_env(tmp: Path) -> Iterator[None]:
    """Git identity and a private DVC site cache for the duration (in this process)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**git_env(), "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site")}.items():
            mp.setenv(key, value)
        yield


def init_repo(repo: Path) -> str:
    """git init + dvc init, committed; returns the commit."""
    repo.mkdir(parents=True, exist_ok=True)
    run_cmd(["git", "init", "-q", "-b", "main"], repo)
    run_cmd(["dvc", "init", "-q"], repo)
    return commit(repo, "init")


def commit(repo: Path, message: str, tag: str | None = None) -> str:
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-qm", message], repo)
    if tag:
        run_cmd(["git", "tag", tag], repo)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()


def commit_raw(repo: Path, records: list[CallRecord], scenario: Scenario, message: str,
               tag: str | None = None, env_changes: dict[str, dict[str, Any]] | None = None
               ) -> str:
    """Raw data as a DVC-tracked folder in a commit, as `bench` leaves it; env.json's
    sections updated with env_changes (e.g. {"host": {"hostname": "node7"}})."""
    _write_and_add(repo, records, scenario, env_changes)
    return commit(repo, message, tag)


def _write_and_add(repo: Path, records: list[CallRecord], scenario: Scenario,
                   env_changes: dict[str, dict[str, Any]] | None) -> None:
    """data/raw written, env.json's sections updated, and the folder `dvc add`ed."""
    from dvc.repo import Repo

    raw = write_raw(repo / "data" / "raw", records, scenario)
    env = json.loads((raw / "env.json").read_text())
    for key, changes in (env_changes or {}).items():
        env[key] = {**env.get(key, {}), **changes}
    (raw / "env.json").write_text(json.dumps(env))
    logging.getLogger("dvc").setLevel(logging.WARNING)  # no "to track the changes" advice
    with Repo(str(repo)) as dvc:
        dvc.add(str(raw))


def save_experiment(repo: Path, name: str, scenario: Scenario,
                    env_changes: dict[str, dict[str, Any]] | None = None) -> None:
    """Raw data of `scenario` saved as a DVC experiment of HEAD (`dvc exp save`); the
    workspace's data/raw.dvc is then restored to HEAD's."""
    from dvc.repo import Repo

    _write_and_add(repo, make_records(scenario), scenario, env_changes)
    with Repo(str(repo)) as dvc:
        dvc.experiments.save(name=name)
    run_cmd(["git", "checkout", "--", "."], repo)


@dataclass(frozen=True)
class Step:
    """One commit of a synthetic history: raw data of `scenario` with env.json changes, or
    (scenario None) a commit that changes a file in git only."""

    scenario: Scenario | None
    env: dict[str, dict[str, Any]] = field(default_factory=dict)


def commit_steps(repo: Path, steps: Sequence[Step]) -> list[str]:
    """One commit per step, in order; returns their hashes."""
    shas = []
    for i, step in enumerate(steps):
        if step.scenario is None:
            (repo / "NOTES.md").write_text(f"note {i}\n")
            shas.append(commit(repo, f"notes {i}"))
        else:
            shas.append(commit_raw(repo, make_records(step.scenario), step.scenario,
                                   f"bench {i}", env_changes=step.env))
    return shas
