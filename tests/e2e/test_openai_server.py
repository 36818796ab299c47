"""`dvc exp run` against a real OpenAI-compatible server: llama-cpp-python's, on the shipped
GGUF, behind a key (slow: real server, real model, real DVC). The key appears in no file of
the repository (work tree, git objects uncompressed, DVC cache) nor in the output; a wrong
key ends the run in one line naming authentication; and one experiment puts the control arm
on the embedded engine against the treatment on the server, the same GGUF on both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollabench.records.schema import read_records
from tests.helpers.llama_cpp_server import LlamaCppServer
from tests.helpers.project import git_env, small_project


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("openai-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_SITE_CACHE_DIR", str(tmp / "dvc-site"))
        yield small_project(tmp / "repo")


def exp_run(repo: Path, key: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`dvc exp run` with the key in OPENAI_API_KEY, its output captured."""
    env = os.environ | git_env() | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OPENAI_API_KEY": key}
    args = [a for o in overrides for a in ("-S", o)]
    return subprocess.run(["dvc", "exp", "run", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)


def served(server: LlamaCppServer) -> list[str]:
    return ["model=openai", f"model.base_url={server.url}", f"model.name={server.alias}",
            "run=quick"]


def every_byte(repo: Path) -> bytes:
    """Every file under the repository's folder (work tree, .dvc/cache, the DVC site cache
    beside it) and every git object uncompressed (loose and packed)."""
    files = b"".join(p.read_bytes() for p in repo.parent.rglob("*")
                     if p.is_file() and not p.is_symlink())
    objects = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo,
                             capture_output=True, check=True).stdout
    return files + objects


@pytest.mark.slow
def test_an_experiment_on_the_server_keeps_the_key_secret(
        repo: Path, llama_cpp_server: LlamaCppServer) -> None:
    done = exp_run(repo, llama_cpp_server.key, *served(llama_cpp_server))
    assert done.returncode == 0, done.stderr

    records = read_records(repo / "data" / "raw" / "calls.jsonl")
    measured = [r for r in records if r.phase == "measured"]
    assert measured and all(r.backend == "openai" and r.error is None for r in measured)
    assert all(r.ttft_ms and r.e2e_ms and r.ttft_ms < r.e2e_ms for r in measured)
    assert {r.token_count_source for r in measured} == {"tokenizer"}
    assert all(r.output_tokens for r in measured)
    env = json.loads((repo / "data" / "raw" / "env.json").read_text())
    assert env["backend"]["server"] == "llama-cpp-python"
    assert env["backend"]["host"] == llama_cpp_server.url
    assert "token counts from|tokenizer" in (repo / "reports" / "report.md").read_text()

    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "openai run"], cwd=repo, check=True, env=os.environ
                   | git_env())
    key = llama_cpp_server.key.encode()
    assert key not in every_byte(repo)
    assert llama_cpp_server.key not in done.stdout + done.stderr


@pytest.mark.slow
def test_a_wrong_key_ends_the_run_in_one_line_naming_authentication(
        repo: Path, llama_cpp_server: LlamaCppServer) -> None:
    wrong = "sk-wrong-key-000000000"
    # another seed: the same params as an earlier experiment would skip the bench stage
    done = exp_run(repo, wrong, *served(llama_cpp_server), "run.seed=7")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "ollabench: error:" in line]
    assert lines == [f"ollabench: error: authentication failed at {llama_cpp_server.url} "
                     "(HTTP 401) with the key in $OPENAI_API_KEY: set the right key in that "
                     "variable"], done.stderr
    assert "Traceback" not in done.stderr and wrong not in done.stdout + done.stderr


@pytest.mark.slow
def test_the_control_arm_on_the_embedded_engine_against_the_server(
        repo: Path, llama_cpp_server: LlamaCppServer) -> None:
    done = exp_run(repo, llama_cpp_server.key, *served(llama_cpp_server),
                   "reference_model=smollm2-135m")
    assert done.returncode == 0, done.stderr

    measured = [r for r in read_records(repo / "data" / "raw" / "calls.jsonl")
                if r.phase == "measured"]
    by_arm = {arm: {(r.backend, r.model, r.token_count_source) for r in measured
                    if r.arm == arm} for arm in ("control", "treatment")}
    assert by_arm == {"control": {("llamacpp", "smollm2-135m", "engine")},
                      "treatment": {("openai", llama_cpp_server.alias, "tokenizer")}}
    env = json.loads((repo / "data" / "raw" / "env.json").read_text())
    assert Path(env["reference_backend"]["model_file"]) == llama_cpp_server.gguf
    report = (repo / "reports" / "report.md").read_text()
    assert "|backend|llamacpp (llama.cpp (llama-cpp-python)) 0.3.36|openai " \
           "(llama-cpp-python)" in report
    assert "token counts come from different sources" in report
    assert "A/A run" not in report
