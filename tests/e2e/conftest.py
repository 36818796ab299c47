"""Fixtures of the end-to-end tests that need remotes, as a cluster's jobs do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.project import run_cmd, small_project


@pytest.fixture(scope="session")
def remotes_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `shared_remotes` copies, built once per test process (git, DVC: seconds of
    subprocesses): repo/ pushed to the bare remote.git/, with a committed DVC remote
    dvc-store/ (absolute paths, which each copy points at its own folders)."""
    folder = tmp_path_factory.mktemp("remotes")
    repo = small_project(folder / "repo")
    bare = folder / "remote.git"
    run_cmd(["git", "init", "-q", "--bare", "-b", "main", str(bare)], folder)
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(folder / "dvc-store")], repo)
    run_cmd(["git", "commit", "-qam", "shared DVC remote"], repo)
    run_cmd(["git", "remote", "add", "origin", str(bare)], repo)
    run_cmd(["git", "push", "-q", "origin", "main"], repo)
    return folder


@pytest.fixture
def shared_remotes(remotes_template: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project pushed to a bare git remote, with a committed local-folder DVC remote: a copy
    of the template that is the test's own (a test may run experiments and push to both)."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    repo, bare = tmp_path / "repo", tmp_path / "remote.git"
    for name in ("repo", "remote.git"):
        shutil.copytree(remotes_template / name, tmp_path / name, symlinks=True)
    dvc_config = repo / ".dvc" / "config"
    dvc_config.write_text(dvc_config.read_text(encoding="utf-8").replace(
        str(remotes_template / "dvc-store"), str(tmp_path / "dvc-store")), encoding="utf-8")
    (repo / ".dvc" / "config.local").write_text(
        f"[core]\n    site_cache_dir = {tmp_path / 'dvc-site'}\n", encoding="utf-8")
    run_cmd(["git", "remote", "set-url", "origin", str(bare)], repo)
    run_cmd(["git", "commit", "-qa", "--amend", "--no-edit"], repo)
    run_cmd(["git", "push", "-qf", "origin", "main"], repo)
    return repo, bare
