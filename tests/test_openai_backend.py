"""The OpenAI-compatible backend against a scripted server on 127.0.0.1 (tests/helpers/
fake_openai.py): what is measured and how it is labelled, each server's dialect, and the
failure shapes of real servers, each recorded with its outcome and never raised."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ollabench.backends.base import COLD, CachePlan
from ollabench.backends.openai import OpenAIBackend
from ollabench.bench.loop import run_bench
from ollabench.config.schema import ModelConfig, validate_config
from ollabench.errors import BackendUnavailable, ConfigError
from ollabench.records.schema import (
    CHUNKS,
    CLIENT_CLOCK,
    DISCONNECTED,
    ENGINE_CLOCK,
    HTTP_ERROR,
    NO_FINAL_CHUNK,
    OK,
    USAGE,
    CallRecord,
)
from tests.helpers.fake_openai import FakeOpenAI, Script
from tests.helpers.project import default_run_config, tiny_config

KEY = "sk-test-4f1d2c9e8b7a"
MESSAGES = [{"role": "user", "content": "Say hello."}]
OPTIONS = {"seed": 42, "num_predict": 8}

Factory = Callable[..., OpenAIBackend]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(key=KEY) as fake:
        yield fake


@pytest.fixture
def make(server: FakeOpenAI) -> Iterator[Factory]:
    made: list[OpenAIBackend] = []

    def build(preflight: bool = True, **fields: object) -> OpenAIBackend:
        model = ModelConfig(**{"name": server.model, "backend": "openai",
                               "base_url": server.url, "api_key_env": "OPENAI_API_KEY",
                               **fields})
        backend = OpenAIBackend(model, default_run_config(
            read_timeout_s=5.0, first_token_timeout_s=5.0, connect_timeout_s=1.0))
        made.append(backend)
        if preflight:
            backend.preflight()
        return backend

    yield build
    for backend in made:
        backend.close()


def test_a_streamed_call_is_timed_and_labelled(server: FakeOpenAI, make: Factory) -> None:
    server.script = Script(tokens=5, token_ms=20, ping_first=True)
    m = make().chat(MESSAGES, OPTIONS)

    assert m.outcome == OK and m.output == "w0 w1 w2 w3 w4 "
    assert m.ttfb_ms is not None and m.ttft_ms is not None and m.e2e_ms is not None
    assert m.ttfb_ms <= m.ttft_ms <= m.e2e_ms  # the role-only chunk is no token
    assert m.ttft_ms >= 15  # the first content chunk left after 20 ms, not the role chunk
    assert (m.output_tokens, m.prompt_tokens, m.token_count_source) == (5, 12, USAGE)
    assert m.timing_source == CLIENT_CLOCK and m.prompt_eval_ms is None
    # five chunks 20 ms apart: four gaps, the decode time of five at that pace
    assert m.eval_ms == pytest.approx(100, rel=0.5)
    assert m.done_reason == "stop"
    sent = server.chats()[0]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.body["stream_options"] == {"include_usage": True}


def test_without_usage_the_chunks_are_counted_and_say_so(server: FakeOpenAI,
                                                         make: Factory) -> None:
    server.kind = "other"
    server.script = Script(tokens=4, usage=False)
    m = make().chat(MESSAGES, OPTIONS)
    assert (m.output_tokens, m.token_count_source, m.prompt_tokens) == (4, CHUNKS, None)


def test_llama_server_timings_are_the_engine_clock(server: FakeOpenAI, make: Factory) -> None:
    server.kind = "llama-server"
    server.script = Script(tokens=4, timings=True)
    backend = make()
    m = backend.chat(MESSAGES, OPTIONS, CachePlan(COLD, "12345678"))

    assert (m.eval_ms, m.prompt_eval_ms, m.prompt_eval_tokens, m.prompt_cached_tokens) == \
        (20.0, 3.5, 12, 0)
    assert m.timing_source == ENGINE_CLOCK
    record = CallRecord(**{**m.__dict__})
    assert record.eval_tok_s == pytest.approx(200.0)
    body = server.chats()[0].body
    assert body["cache_prompt"] is False  # a cold call keeps out of the slot's cache
    assert body["messages"][0]["content"].startswith("[12345678]")
    assert (body["top_k"], body["repeat_penalty"], body["max_tokens"]) == (40, 1.1, 8)
    assert backend.provenance()["server"] == "llama-server"


@pytest.mark.parametrize(("kind", "expected"), [
    ("vllm", {"repetition_penalty": 1.1, "max_completion_tokens": 8, "cache_salt": "00000001"}),
    ("ollama", {"temperature": 0.8, "top_p": 0.9, "max_tokens": 8}),
    ("llama-cpp-python", {"repeat_penalty": 1.1, "min_p": 0.0, "max_tokens": 8}),
])
def test_each_server_gets_its_own_field_names(server: FakeOpenAI, make: Factory, kind: str,
                                              expected: dict[str, object]) -> None:
    server.kind = kind
    make().chat(MESSAGES, OPTIONS, CachePlan(COLD, "00000001"))
    body = server.chats()[0].body
    assert expected.items() <= body.items()
    assert body["seed"] == 42


def test_options_a_server_would_ignore_are_refused(server: FakeOpenAI, make: Factory) -> None:
    server.kind = "ollama"
    backend = make()
    with pytest.raises(ConfigError, match=r"profile\.options\.top_k: a Ollama /v1 server "
                                          r"ignores it"):
        backend.validate_options({"top_k": 20}, "profile.options")
    with pytest.raises(ConfigError, match=r"profile\.options\.num_ctx: a setting of the "
                                          r"loaded model"):
        backend.validate_options({"num_ctx": 2048}, "profile.options")


def test_a_wrong_key_is_one_line_naming_authentication(server: FakeOpenAI, make: Factory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000000000")
    with pytest.raises(BackendUnavailable) as raised:
        make()
    text = str(raised.value)
    assert text.startswith(f"authentication failed at {server.url} (HTTP 401)")
    assert "\n" not in text and "sk-wrong" not in text and KEY not in text


def test_an_unserved_model_is_refused_before_the_first_call(make: Factory) -> None:
    with pytest.raises(BackendUnavailable, match=r"model 'other' is not served at .*; it "
                                                 r"serves: smol"):
        make(name="other")


@pytest.mark.parametrize(("script", "outcome", "status", "words"), [
    (Script(empty=True), NO_FINAL_CHUNK, None, "HTTP 200 with an empty stream"),
    (Script(cut_after=2), NO_FINAL_CHUNK, None, "without a finish_reason"),
    (Script(disconnect_after=2), DISCONNECTED, None, "connection dropped mid-stream"),
    (Script(status=401, body='{"detail": "Invalid API key"}'), HTTP_ERROR, 401,
     "authentication refused (Invalid API key)"),
    (Script(status=400, body='{"error": {"message": "too long", "code": '
                             '"context_length_exceeded"}}'), HTTP_ERROR, 400, "too long"),
    (Script(status=500, body="<html>Internal Server Error</html>"), HTTP_ERROR, 500,
     "<html>Internal Server Error</html>"),
    (Script(status=429, body='{"error": {"message": "slow down"}}'), HTTP_ERROR, 429,
     "slow down"),
])
def test_failure_shapes_are_recorded_never_raised(server: FakeOpenAI, make: Factory,
                                                  script: Script, outcome: str,
                                                  status: int | None, words: str) -> None:
    backend = make()
    server.queue(script)
    m = backend.chat(MESSAGES, OPTIONS)
    assert (m.outcome, m.http_status) == (outcome, status)
    assert words in (m.error or "") and "\n" not in (m.error or "")
    assert m.e2e_ms is None and m.output_tokens is None
    assert KEY not in (m.error or "")


def test_a_finish_without_done_still_ends_the_call(server: FakeOpenAI, make: Factory) -> None:
    server.script = Script(tokens=2, no_done=True, usage=False)
    m = make().chat(MESSAGES, OPTIONS)
    assert m.outcome == OK and m.e2e_ms is not None


def test_an_oversize_prompt_refused_with_400_is_marked_truncated(server: FakeOpenAI,
                                                                 make: Factory) -> None:
    backend = make()
    server.queue(Script(status=400, body='{"error": {"message": "This model\'s maximum '
                                         'context length is 2048 tokens", "code": '
                                         '"context_length_exceeded"}}'))
    assert backend.chat(MESSAGES, OPTIONS).truncated is True


def test_reasoning_is_a_first_token(server: FakeOpenAI, make: Factory) -> None:
    server.script = Script(tokens=2, reasoning_tokens=2)
    m = make().chat(MESSAGES, OPTIONS)
    assert m.first_token_thinking is True and m.output == "w0 w1 "


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("base_url", "http://me:hunter22@h:8000/v1",
     r"model\.base_url: holds a credential in its user info \(user:password@\), which would "
     r"be written to params\.yaml and git"),
    ("host", "http://h:11434/?api_key=abcd1234",
     r"model\.host: holds a credential in its query parameter 'api_key'"),
    ("api_key_env", "sk-abc def", r"model\.api_key_env: the name of an environment variable"),
])
def test_credentials_in_settings_are_refused(raw_config: dict[str, Any], key: str, value: str,
                                             expected: str) -> None:
    raw_config["model"] = {"name": "m", "backend": "ollama" if key == "host" else "openai",
                           key: value}
    with pytest.raises(ConfigError, match=expected) as raised:
        validate_config(raw_config)
    assert "hunter22" not in str(raised.value) and "abcd1234" not in str(raised.value)


def test_busy_answers_are_retried_with_backoff_and_every_try_recorded(
        server: FakeOpenAI, raw_config: dict[str, Any], tmp_path: Path) -> None:
    """429 and 503 (a full queue, a loading model) are worth another try; each is journaled
    and lands in calls.jsonl beside the try that succeeded."""
    raw_config["model"] = {"name": server.model, "backend": "openai", "base_url": server.url,
                           "api_key_env": "OPENAI_API_KEY"}
    config = tiny_config(raw_config, runs=1, warmup=0, max_retries=2, retry_backoff_s=0.01,
                         order="sequential")
    server.queue(Script(status=429, body='{"error": {"message": "queue full"}}'),
                 Script(status=503, body="Service Unavailable"))
    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)

    first = [r for r in records if r.seq == min(r.seq for r in records)]
    assert [(r.attempt, r.outcome, r.http_status) for r in first] == [
        (1, HTTP_ERROR, 429), (2, HTTP_ERROR, 503), (3, OK, None)]
    assert first[0].error == "HTTP 429: queue full"
    assert first[1].error == "HTTP 503: Service Unavailable"
    env = (tmp_path / "raw" / "env.json").read_text()
    assert KEY not in env and '"key_sent": true' in env
