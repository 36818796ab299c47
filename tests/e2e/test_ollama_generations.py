"""The whole pipeline against each generation of the test server: `dvc exp run -S
model=qwen2.5-7b -S profile=chimera -S run=quick`, pointed at it with `model.host`, writes
records whose cache state, effective context, truncation and reload flags are what the
server did (its own log, /_fake/exchanges), and a report that says so (slow: real DVC)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ollabench.records.schema import CallRecord, read_records
from tests.helpers.fake_ollama_process import fake_ollama_process
from tests.helpers.project import make_project, run_cmd

# 0.12.5: no `truncate` field (silent cut); 0.24.0: Go runners; 0.33.0: llama-server.
GENERATIONS = ("0.12.5", "0.24.0", "0.33.0")
SCRIPT = {"tokens": 40, "token_ms": 0.2}  # more than run=quick's output cap of 24
TEMPLATE_PREFIX_TOKENS = 5  # e.g. "<|im_start|>system\n" before the nonce
EXPERIMENT = ("-S", "model=qwen2.5-7b", "-S", "profile=chimera", "-S", "run=quick")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("generations")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_SITE_CACHE_DIR", str(tmp / "dvc-site"))
        yield make_project(tmp / "repo")


def served(version: str) -> AbstractContextManager[str]:
    """The test server of one Ollama version in its own process; yields its URL."""
    return fake_ollama_process(SCRIPT, "--version", version, "--model", "qwen2.5:7b")


def run_experiment(repo: Path, version: str, *overrides: str
                   ) -> tuple[list[CallRecord], list[dict[str, Any]], str]:
    """The records, the server's log of its chat exchanges, and the report."""
    with served(version) as url:
        run_cmd(["dvc", "exp", "run", "-q", *EXPERIMENT, "-S", f"model.host='{url}'",
                 *overrides], repo)
        with urllib.request.urlopen(f"{url}/_fake/exchanges", timeout=10) as answer:
            exchanges = json.load(answer)["exchanges"]
    chats = [e for e in exchanges if e["path"] == "/api/chat" and e["body"].get("messages")]
    records = sorted(read_records(repo / "data" / "raw" / "calls.jsonl"), key=lambda r: r.key)
    return records, chats, (repo / "reports" / "report.md").read_text()


def assert_records_match_the_server(records: list[CallRecord],
                                    chats: list[dict[str, Any]]) -> None:
    assert len(records) == len(chats)
    for record, chat in zip(records, chats, strict=True):
        did, where = chat["did"], f"seq {record.seq} ({record.phase} {record.stage})"
        assert record.error is None, where
        assert record.options.get("num_ctx") == chat["body"]["options"].get("num_ctx"), where
        assert record.num_ctx == did["effective_ctx"], where
        assert record.truncated in (did["truncated"], None), where
        assert record.context_shift == did["context_shift"], where
        assert record.reloaded == did["reloaded"], where
        assert record.reload_expected in (did["reloaded"], None), where
        assert record.prompt_tokens == did["prompt_eval_count"], where
        if record.num_batch_basis in ("sent", "derived", "assumed"):
            assert record.num_batch == did["num_batch"], where
        if record.phase == "measured":  # run.prompt_cache false: each behind its own nonce
            assert (record.cache_state, record.cache_controlled) == ("cold", True), where
            # the chat template's tokens before the nonce may be reused (docs/metrics.md)
            reused = record.prompt_eval_tokens - did["evaluated_tokens"]
            assert 0 <= reused <= TEMPLATE_PREFIX_TOKENS, where
            assert record.engine_version is not None, where


@pytest.mark.slow
@pytest.mark.parametrize("version", GENERATIONS)
def test_records_and_report_say_what_each_generation_did(repo: Path, version: str) -> None:
    records, chats, report = run_experiment(repo, version)

    assert_records_match_the_server(records, chats)
    assert any(c["did"]["reloaded"] for c in chats)  # the first call loads the model
    assert not any(c["did"]["truncated"] for c in chats)
    ran = {c["did"]["effective_ctx"] for c in chats if c["body"]["options"].get("num_ctx")}
    assert ran == {512}
    assert "No prompt was truncated." in report
    assert "|`num_ctx` that ran|4096|512|" in report
    assert f"ollama {version}" in report.lower()


@pytest.mark.slow
def test_a_silent_cut_on_an_old_server_is_on_the_record_and_in_the_report(repo: Path) -> None:
    records, chats, report = run_experiment(repo, "0.12.5", "-S", "profile.options.num_ctx=64")

    assert_records_match_the_server(records, chats)
    cut = [r for r, c in zip(records, chats, strict=True) if c["did"]["truncated"]]
    assert cut and all(r.truncated for r in cut)
    assert "No prompt was truncated" not in report
    assert "prompt truncated to 64 tokens (num_ctx 64)" in report
