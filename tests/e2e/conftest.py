"""Fixtures of the end-to-end tests that need remotes, as a cluster's jobs do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.project import run_cmd, small_project


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
