"""Plain helpers the tests import by name: the project copy, its config, subprocess runs.

Fixtures live in conftest.py; these are functions, so any test module (and the e2e tests'
temporary projects) can call them with their own arguments.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ollabench.backends.ollama import OllamaBackend
from ollabench.cli import main
from ollabench.config.schema import BenchConfig, RunConfig, validate_config
from ollabench.records.schema import CallRecord, read_records
from ollabench.workloads.base import Step

ROOT = Path(__file__).resolve().parents[2]
OLLAMA_MODEL = "qwen2.5:7b"

BackendFactory = Callable[..., OllamaBackend]


# The default agent workload's steps (analysis, then report): what plan() schedules per run.
AGENT_STEPS = (Step("analysis"), Step("report", needs=(0,)))

def default_run_config(**overrides: float) -> RunConfig:
    """The committed run defaults (conf/run/default.yaml) with a fixed number of runs and
    some values replaced."""
    raw = yaml.safe_load((ROOT / "conf" / "run" / "default.yaml").read_text(encoding="utf-8"))
    raw["stopping"]["mode"] = "fixed"
    return RunConfig.model_validate({**raw, **overrides})


def tiny_config(raw: dict[str, Any], runs: int = 1, analysis: int = 6,
                report: int = 6, **run: Any) -> BenchConfig:
    """A config that runs in seconds on the real model."""
    raw = copy.deepcopy(raw)
    raw["run"].update(runs=runs, **run)
    raw["workload"] = {**raw["workload"], "num_predict": {"analysis": analysis, "report": report}}
    return validate_config(raw)


def bench_command(raw: dict[str, Any], folder: Path) -> tuple[list[str], Path]:
    """Write raw as folder/params.yaml; return the `ollabench bench` command line for it and
    its journal folder (output in folder/raw)."""
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    journal = folder / "journal"
    return [sys.executable, "-m", "ollabench.cli", "bench", "--params", str(params),
            "--out", str(folder / "raw"), "--journal-dir", str(journal), "--no-progress"], journal


@dataclass
class Interrupted:
    """What an interrupted bench process left: the journal's calls, its exit status, stderr."""

    kept: list[CallRecord]
    returncode: int
    stderr: str


def interrupt_bench(cmd: list[str], cwd: Path, journal: Path, lines: int,
                    env: dict[str, str] | None = None, timeout_s: float = 120,
                    sig: signal.Signals = signal.SIGKILL) -> Interrupted:
    """Start a real `ollabench bench` and send it `sig` once its journal holds `lines` calls."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(journal.rglob("calls.jsonl"))
        if files and files[0].read_text().count("\n") >= lines:
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate()
    return Interrupted(read_records(next(journal.rglob("calls.jsonl"))), proc.returncode, stderr)


def git_env() -> dict[str, str]:
    return {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run_cmd(cmd: list[str], cwd: Path) -> str:
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_project(dest: Path, runs: int = 2, caps: int = 8) -> Path:
    """A copy of the tracked project, with a small fixed run as the committed default: a git
    repository of its own at dest, its DVC site cache beside it (dest.parent / "dvc-site")."""
    return _copy_of(("project", runs, caps), lambda repo: _build_project(repo, runs, caps), dest)


def small_project(dest: Path) -> Path:
    """make_project with a one-file workload: on an idle machine a call then takes a fraction
    of a second, so an experiment is mostly DVC's own time."""
    return _copy_of(("small",), _build_small_project, dest)


# Built projects, per process (one xdist worker): a template is built once (a copy of the
# tracked files, `ollabench params`, git init and commit: seconds of subprocesses) and every
# later call copies it, history included, so each test still owns its repository.
_TEMPLATES: dict[tuple[object, ...], Path] = {}


def _copy_of(key: tuple[object, ...], build: Callable[[Path], Path], dest: Path) -> Path:
    if key not in _TEMPLATES:
        folder = Path(tempfile.mkdtemp(prefix="ollabench-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _TEMPLATES[key] = build(folder / "repo")
    shutil.copytree(_TEMPLATES[key], dest, symlinks=True)
    # what `dvc config --local core.site_cache_dir` writes (.dvc/config.local, git-ignored)
    (dest / ".dvc" / "config.local").write_text(
        f"[core]\n    site_cache_dir = {dest.parent / 'dvc-site'}\n", encoding="utf-8")
    return dest


def _build_project(dest: Path, runs: int, caps: int) -> Path:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in tracked:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for group, values in (("run/default", {"runs": runs}),
                          ("workload/agent", {"num_predict": {"analysis": caps, "report": caps}})):
        path = dest / "conf" / f"{group}.yaml"
        changed = yaml.safe_load(path.read_text()) | values
        if "stopping" in changed:
            changed["stopping"]["mode"] = "fixed"
        path.write_text(yaml.safe_dump(changed, sort_keys=False))
    run_cmd([sys.executable, "-m", "ollabench.cli", "params"], dest)
    run_cmd(["git", "init", "-q", "-b", "main"], dest)
    run_cmd(["git", "add", "-A"], dest)
    run_cmd(["git", "commit", "-qm", "project"], dest)
    return dest


def _build_small_project(dest: Path) -> Path:
    repo = _build_project(dest, runs=2, caps=4)
    workload = repo / "data" / "workload"
    for path in workload.iterdir():
        path.unlink()
    (workload / "runs.csv").write_text("setup,eval_tok_s\nA,120\nB,95\n")
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-qm", "small workload"], repo)
    return repo


def cli(repo: Path, capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """`ollabench ARGS` run in repo, in this process (DVC and pandas are imported once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)
