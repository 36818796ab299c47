"""The bench stage against a real HTTP server speaking Ollama's wire format: cache control
(nonce, primer), warm-ups for reloads, faults and retries, pre-flight messages and resume
after a real SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from ollabench.bench.loop import NONCE_DIGITS, run_bench
from ollabench.bench.schedule import plan
from ollabench.cli import main
from ollabench.errors import BenchIncomplete, ConfigError
from ollabench.records.schema import HTTP_ERROR, NO_FINAL_CHUNK, PRIME_PHASE, read_records
from tests.helpers.fake_ollama import URL_PREFIX, FakeOllama, Script
from tests.helpers.project import (
    AGENT_STEPS,
    ROOT,
    bench_command,
    interrupt_bench,
    tiny_config,
)


def ollama_raw(raw_config: dict[str, Any], url: str) -> dict[str, Any]:
    raw_config["model"] = {"name": "qwen2.5:7b", "backend": "ollama", "gguf": None,
                           "host": url, "think": None, "keep_alive": None}
    raw_config["run"].update(retry_backoff_s=0.01, read_timeout_s=2.0, max_retries=1)
    return raw_config


def _bench(fake: FakeOllama, raw_config, tmp_path, runs: int = 1, **run: Any):
    config = tiny_config(ollama_raw(raw_config, fake.url), runs=runs, **run)
    return run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)


def test_every_call_is_cold_behind_its_own_nonce(fake_ollama: FakeOllama, raw_config,
                                                 tmp_path) -> None:
    records = _bench(fake_ollama, raw_config, tmp_path, runs=2)

    nonces = [r.nonce for r in records]
    assert all(re.fullmatch(rf"\d{{{NONCE_DIGITS}}}", n) for n in nonces)
    assert len(set(nonces)) == len(records)  # different per call, the same width per arm
    for record, chat in zip(records, fake_ollama.chats(), strict=True):
        assert chat.body["messages"][0]["content"].startswith(f"[{record.nonce}]\n")
        assert (record.cache_state, record.cache_controlled) == ("cold", True)
        assert chat.did["reused_tokens"] <= 1  # at most the template's first token
    measured = [r for r in records if r.phase == "measured" and r.stage == "analysis"]
    assert len({r.prompt_tokens for r in measured}) == 1  # same prompt length in both arms
    assert all(r.prompt_eval_tokens == r.prompt_tokens for r in measured)


def test_with_the_prompt_cache_a_primer_warms_each_measured_call(fake_ollama: FakeOllama,
                                                                 raw_config, tmp_path) -> None:
    records = _bench(fake_ollama, raw_config, tmp_path, prompt_cache=True)

    by_time = sorted(records, key=lambda r: r.started_at)
    for before, measured in itertools.pairwise(by_time):
        if measured.phase != "measured":
            continue
        assert before.phase == PRIME_PHASE and before.options["num_predict"] == 1
        assert (before.run, before.arm, before.stage) == (measured.run, measured.arm,
                                                          measured.stage)
        assert (measured.cache_state, measured.cache_controlled, measured.nonce) == (
            "warm", True, None)
        assert measured.prompt_eval_tokens is None and measured.prompt_tok_s is None
    dids = [c.did for c in fake_ollama.chats() if c.body["options"]["num_predict"] > 1
            and c.body["options"]["num_predict"] != 8]  # measured calls, not warm-ups
    assert dids and all(d["evaluated_tokens"] == 1 for d in dids)
    assert sum(r.phase == PRIME_PHASE for r in records) == 4


def test_a_profile_that_reloads_gets_a_warm_up_even_with_warmup_zero(
        fake_ollama: FakeOllama, raw_config, tmp_path) -> None:
    raw_config["profile"]["options"]["num_ctx"] = 2048
    records = _bench(fake_ollama, raw_config, tmp_path, runs=2, warmup=0)

    warmups = [r for r in records if r.phase == "warmup"]
    assert len(warmups) == 3  # C | T T | C: one per switch
    assert all(w.reload_expected and w.reloaded for w in warmups[1:])
    measured = [r for r in records if r.phase == "measured"]
    assert not any(r.reload_expected or r.reloaded for r in measured)


def test_an_option_the_server_drops_is_refused_before_the_first_call(
        fake_ollama: FakeOllama, raw_config, tmp_path) -> None:
    raw_config["profile"]["options"]["tfs_z"] = 0.9
    with pytest.raises(ConfigError, match=r"^profile.options.tfs_z: Ollama 0.12.6 ignores"):
        _bench(fake_ollama, raw_config, tmp_path)
    assert fake_ollama.chats() == []


def test_no_final_chunk_is_retried_with_another_recorded_seed(
        fake_ollama: FakeOllama, raw_config, tmp_path) -> None:
    fake_ollama.queue(Script(), Script(tokens=200, repeat_abort=True))
    records = _bench(fake_ollama, raw_config, tmp_path, analysis=40)

    [aborted] = [r for r in records if r.outcome == NO_FINAL_CHUNK]
    retry = next(r for r in records if r.seq == aborted.seq and r.attempt == 2)
    assert retry.error is None
    assert retry.options["seed"] == aborted.options["seed"] + 1


def test_a_prompt_over_the_context_is_not_retried(fake_ollama: FakeOllama, raw_config,
                                                  tmp_path) -> None:
    raw_config["profile"]["options"]["num_ctx"] = 16
    with pytest.raises(BenchIncomplete) as raised:
        _bench(fake_ollama, raw_config, tmp_path)
    records = read_records(tmp_path / "raw" / "calls.jsonl")
    refused = [r for r in records if r.outcome == HTTP_ERROR]
    assert refused and all(r.http_status == 400 and r.truncated for r in refused)
    assert all(r.attempt == 1 for r in refused)
    # The closing line names the cause, the arm and the option, and no rerun: the control
    # arm counted the same prompts, so their size is known.
    counted = max(r.prompt_tokens for r in records
                  if r.arm == "control" and r.stage in ("warmup", "analysis") and not r.error)
    message = str(raised.value)
    assert (f"treatment arm: the warmup and analysis prompts of up to {counted} tokens do not "
            "fit num_ctx 16") in message
    assert "set profile.options.num_ctx to at least" in message
    assert "a rerun would fail the same way" in message and "run again" not in message
    assert "report call(s) skipped because the call whose output they need failed" in message
    assert len(message.splitlines()) == 1


def test_a_server_error_that_never_passes_asks_for_a_rerun(fake_ollama: FakeOllama,
                                                            raw_config, tmp_path) -> None:
    fake_ollama.queue(Script(), *[Script(status=503, error="server busy")] * 2)
    with pytest.raises(BenchIncomplete) as raised:
        _bench(fake_ollama, raw_config, tmp_path)
    message = str(raised.value)
    assert "control arm: HTTP 503: server busy" in message
    assert "run again to retry" in message and "a rerun would fail" not in message


def _measured(records) -> Counter:
    return Counter((r.run, r.arm, r.stage) for r in records
                   if r.phase == "measured" and r.error is None)


def test_faults_are_recorded_and_retried(fake_ollama: FakeOllama, raw_config, tmp_path) -> None:
    fake_ollama.queue(Script(), Script(status=500, error="CUDA error: out of memory"),
                      Script(), Script(disconnect_after=2))
    records = _bench(fake_ollama, raw_config, tmp_path)
    failed = [r for r in records if r.error]
    assert [r.error.startswith("HTTP 500") for r in failed] == [True, False]
    assert "CUDA error: out of memory" in failed[0].error
    for bad in failed:  # each failure is followed by a successful retry of the same slot
        retry = next(r for r in records if r.seq == bad.seq and r.attempt == bad.attempt + 1)
        assert retry.error is None
    assert set(_measured(records).values()) == {1} and len(_measured(records)) == 4


def test_a_call_that_never_succeeds_keeps_data_and_resumes(fake_ollama: FakeOllama, raw_config,
                                                           tmp_path) -> None:
    config = tiny_config(ollama_raw(raw_config, fake_ollama.url), runs=1)
    fake_ollama.queue(Script(), Script(status=503), Script(status=503))  # analysis of control
    with pytest.raises(BenchIncomplete, match=r"2 call\(s\) never succeeded \(seq 2, 3\)"):
        run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    written = read_records(tmp_path / "raw" / "calls.jsonl")
    assert sum(1 for r in written if r.error) == 3  # analysis twice, then its report skipped
    assert any(r.error.startswith("skipped:") for r in written if r.error)

    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    assert set(_measured(records).values()) == {1} and len(_measured(records)) == 4
    assert all(w in records for w in written)
    resumed_warmups = [r for r in records if r.seq > len(plan(config.run, AGENT_STEPS))]
    assert resumed_warmups and all(r.phase == "warmup" for r in resumed_warmups)


def test_preflight_server_down(raw_config, tmp_path, capsys) -> None:
    with socket_port() as port:
        url = f"http://127.0.0.1:{port}"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(ollama_raw(raw_config, url)))
    assert main(["bench", "--params", str(params), "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err.strip()
    assert url in err and "ollama serve" in err and len(err.splitlines()) == 1


def test_preflight_model_missing(fake_ollama: FakeOllama, raw_config, tmp_path, capsys) -> None:
    raw = ollama_raw(raw_config, fake_ollama.url)
    raw["model"]["name"] = "mistral:7b"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    assert main(["bench", "--params", str(params), "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ollama pull mistral:7b" in err and len(err.splitlines()) == 1
    assert not fake_ollama.chats()


def _checkout_env() -> dict[str, str]:
    """This checkout's ollabench (src/) and tests, whatever copy is installed."""
    return os.environ | {"PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    """A port that nothing listens on once the context exits."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_sigkill_then_resume_against_a_server(raw_config, tmp_path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_ollama", "--port", "0", "--script",
         '{"ttft_ms": 20, "token_ms": 5, "tokens": 10}'],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().removeprefix(URL_PREFIX)
        raw = ollama_raw(raw_config, url)
        raw["run"]["runs"] = 4
        cmd, journal = bench_command(raw, tmp_path)
        env = _checkout_env()
        kept = interrupt_bench(cmd, tmp_path, journal, lines=7, env=env).kept
        assert 7 <= len(kept) < len(plan(tiny_config(raw, runs=4).run, AGENT_STEPS))

        subprocess.run(cmd, cwd=tmp_path, check=True, env=env)
        records = read_records(tmp_path / "raw" / "calls.jsonl")
        assert all(k in records for k in kept)
        assert len({r.key for r in records}) == len(records)
        assert set(_measured(records).values()) == {1} and len(_measured(records)) == 16
    finally:
        server.kill()
        server.wait()


def test_ctrl_c_keeps_completed_calls_and_says_how_to_resume(fake_ollama: FakeOllama,
                                                            raw_config, tmp_path) -> None:
    """Four chats are answered (the warm-up and at least three measured calls), then every
    chat stalls until its client leaves: the run cannot end before the interrupt however
    late this process polls the journal, so the test holds on a loaded machine."""
    fake_ollama.queue(*[Script(ttft_ms=20, token_ms=10, tokens=10)] * 4)
    fake_ollama.script = Script(stall_after=0)
    raw = ollama_raw(raw_config, fake_ollama.url)
    raw["run"].update(runs=4, read_timeout_s=60.0, first_token_timeout_s=60.0)
    cmd, journal = bench_command(raw, tmp_path)
    stopped = interrupt_bench(cmd, tmp_path, journal, lines=3, sig=signal.SIGINT,
                              env=_checkout_env())
    assert stopped.returncode == 130
    assert "run the same command again to resume" in stopped.stderr
    assert len(stopped.kept) >= 3 and not (tmp_path / "raw").exists()
