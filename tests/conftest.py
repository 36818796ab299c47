"""Shared fixtures: the composed project config and small, fast variants of it."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ollabench.config import BenchConfig, compose, validate_config
from ollabench.records import CallRecord, read_records

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def composed() -> dict[str, Any]:
    """conf/ composed with no overrides: what params.yaml must hold."""
    return compose(conf_dir=ROOT / "conf")


@pytest.fixture(scope="session")
def tiny_workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-file workload whose prompt is a fifth of the real one: fast engine tests."""
    folder = tmp_path_factory.mktemp("workload")
    (folder / "runs.csv").write_text("gpu,ttft_ms,eval_tok_s\nA,180,128\nB,402,51\nA,190,126\n")
    (folder / "check.json").write_text('{"runs": 5, "ttft_ms": {"old": 188, "new": 279}}')
    (folder / "notes.md").write_text("# Notes\n- The first request took 9.8 s.\n")
    return folder


@pytest.fixture
def raw_config(composed: dict[str, Any], tiny_workload: Path) -> dict[str, Any]:
    """A mutable copy of the composed config, on the tiny workload."""
    raw = copy.deepcopy(composed)
    raw["workload_dir"] = str(tiny_workload)
    return raw


def tiny_config(raw: dict[str, Any], runs: int = 1, analysis: int = 6,
                report: int = 6, **run: Any) -> BenchConfig:
    """A config that runs in seconds on the real model."""
    raw = copy.deepcopy(raw)
    raw["run"].update(runs=runs, num_predict={"analysis": analysis, "report": report}, **run)
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
