"""Shared fixtures: the composed project config and small, fast variants of it; each test
process's (xdist worker's) own DVC and git settings.

`make test` runs the tests on pytest-xdist workers, a whole module per worker (README, "Two
commands", says how a new test shares the expensive parts)."""

from __future__ import annotations

import copy
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from ollabench.backends.ollama import OllamaBackend
from ollabench.bench.loop import run_bench
from ollabench.config.schema import ModelConfig, compose
from ollabench.paths import JOURNAL_DIR_ENV
from tests.helpers import llama_cpp_server as real_server
from tests.helpers.fake_ollama import FakeOllama, fake_ollama_fixture
from tests.helpers.project import (
    OLLAMA_MODEL,
    ROOT,
    BackendFactory,
    default_run_config,
    tiny_config,
)

__all__ = ["fake_ollama_fixture"]  # registers the `fake_ollama` fixture

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# llama.cpp's OpenMP threads wait at every barrier of every token by spinning; when more
# threads than cores want to run (two test workers, other jobs on the machine) a spinning
# thread holds the core its partner needs, and a 24-token call took 5 to 6 times longer and
# 5 times the CPU (measured on a 2-core VM at load 10-15). Passive threads sleep instead.
# Set before llama_cpp loads libgomp (it reads this once); child processes inherit it. Tests
# assert no timings, so this changes no outcome; `ollabench` itself never sets it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One llama.cpp thread per test process: `make test` runs one worker per core, so a second
# thread per model only makes the workers' threads wait on each other at every barrier (a
# tiny bench took 15% more CPU with llama.cpp's default of a thread per physical core).
# OpenMP caps every `num_threads` request at this limit (ggml reads the count it got);
# child processes (`dvc exp run`, its stages, submitit jobs) inherit it. The configured
# num_thread, which the records and the tests check, is unchanged.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadscope with shared fixtures' modules on one worker and the longest modules
    first (tests/helpers/scheduling.py); other --dist modes as xdist has them."""
    if config.getvalue("dist") != "loadscope":
        return None
    from tests.helpers.scheduling import ModuleScheduling

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def worker_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """State that DVC and git keep outside a repository, private to this test process (an
    xdist worker has its own base temp folder): DVC's site cache (repository locks and
    indexes, else under /var/tmp/dvc for all), DVC's global config, git's global config (an
    identity for commits; the user's own settings, such as commit signing, kept out), and no
    resume journal folder chosen by the caller's environment. Child processes inherit it."""
    base = tmp_path_factory.getbasetemp()
    gitconfig = base / "gitconfig"
    gitconfig.write_text("[user]\n\tname = ollabench tests\n\temail = tests@ollabench.local\n",
                         encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_SITE_CACHE_DIR", str(base / "dvc-site"))
        mp.setenv("DVC_GLOBAL_CONFIG_DIR", str(base / "dvc-global"))
        mp.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        mp.delenv(JOURNAL_DIR_ENV, raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def interruptible_children() -> None:
    """Ctrl-C reaches the `ollabench` processes the tests interrupt. A shell without job
    control (`make test-fast &` in a script) starts its background commands with SIGINT
    ignored, every process below inherits that across exec, and Python then installs no
    KeyboardInterrupt handler: a child sent SIGINT kept running, and its test waited on
    it (12 minutes, read timeouts of a stalled server). A handled signal is reset to the
    default on exec, so the children start as they would from a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def committed_config() -> dict[str, Any]:
    """conf/ composed with no overrides: what params.yaml must hold."""
    return compose(conf_dir=ROOT / "conf")


@pytest.fixture(scope="session")
def composed(committed_config: dict[str, Any]) -> dict[str, Any]:
    """The committed config with a fixed number of runs (`run.runs`): the default stops
    sequentially, which the tests of the stopping rule ask for themselves."""
    raw = copy.deepcopy(committed_config)
    raw["run"]["stopping"]["mode"] = "fixed"
    return raw


@pytest.fixture(scope="session")
def tiny_workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-file workload whose prompt is a fifth of the real one: fast engine tests."""
    folder = tmp_path_factory.mktemp("workload")
    (folder / "runs.csv").write_text("gpu,ttft_ms,eval_tok_s\nA,180,128\nB,402,51\nA,190,126\n")
    (folder / "check.json").write_text('{"runs": 5, "ttft_ms": {"old": 188, "new": 279}}')
    (folder / "notes.md").write_text("# Notes\n- The first request took 9.8 s.\n")
    return folder


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory: pytest.TempPathFactory, composed: dict[str, Any],
                 tiny_workload: Path) -> tuple[Path, Any]:
    """A bench of the real embedded model on the tiny workload (2 runs; answers capped at 8
    and 7 tokens, so a stage given the other's cap shows), run once per test process and
    shared, read only, by the modules that check its records (test_bench) or judge them
    (test_judge): (the folder holding raw/ and journal/, the config)."""
    tmp = tmp_path_factory.mktemp("embedded-run")
    raw = copy.deepcopy(composed)
    raw["workload"]["dir"] = str(tiny_workload)
    config = tiny_config(raw, runs=2, analysis=8, report=7)
    run_bench(config, tmp / "raw", journal_root=tmp / "journal", progress=False)
    return tmp, config


@pytest.fixture
def raw_config(composed: dict[str, Any], tiny_workload: Path) -> dict[str, Any]:
    """A mutable copy of the composed config (fixed runs), on the tiny workload."""
    raw = copy.deepcopy(composed)
    raw["workload"]["dir"] = str(tiny_workload)
    return raw


@pytest.fixture
def chimera_sweep_config() -> DictConfig:
    """conf/ composed with +sweep=chimera_sweep and its Hydra section (the sweeper's grid);
    Hydra's global state is cleared before the test runs (it may compose again)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return hydra_compose("config", overrides=["+sweep=chimera_sweep"],
                            return_hydra_config=True)


@pytest.fixture
def make_backend(fake_ollama: FakeOllama) -> Iterator[BackendFactory]:
    """Ollama backends pointed at the fake server (model.host), pre-flighted unless told
    not to, closed after the test."""
    made: list[OllamaBackend] = []

    def make(name: str = OLLAMA_MODEL, read_timeout_s: float = 5.0,
             first_token_timeout_s: float = 5.0, host: str | None = None,
             preflight: bool = True, **model_fields: object) -> OllamaBackend:
        model = ModelConfig(name=name, backend="ollama", host=host or fake_ollama.url,
                            **model_fields)
        backend = OllamaBackend(model, default_run_config(
            read_timeout_s=read_timeout_s, first_token_timeout_s=first_token_timeout_s,
            connect_timeout_s=1.0))
        made.append(backend)
        if preflight:
            backend.preflight()
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture(scope="session")
def llama_cpp_server(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[real_server.LlamaCppServer]:
    """A real OpenAI-compatible server (llama-cpp-python's) on the shipped GGUF, behind a
    key, shared by the session's tests; stopped at the end."""
    log = tmp_path_factory.mktemp("llama-cpp-server") / "server.log"
    with real_server.llama_cpp_server(log) as server:
        yield server


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
