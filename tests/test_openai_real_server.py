"""The OpenAI-compatible backend against a real server: llama-cpp-python's, on the shipped
GGUF, behind a key (tests/helpers/llama_cpp_server.py). What the notes say of that server
(no usage on streams, its tokenizer endpoint, 401 on a wrong key, an empty HTTP 200 for a
prompt over its context) is checked here, on the live server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ollabench.backends.base import COLD, CachePlan
from ollabench.backends.openai import OpenAIBackend
from ollabench.config.schema import ModelConfig
from ollabench.errors import BackendUnavailable
from ollabench.records.schema import CLIENT_CLOCK, NO_FINAL_CHUNK, OK, TOKENIZER
from tests.helpers.llama_cpp_server import LlamaCppServer
from tests.helpers.project import default_run_config

MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture
def backend(llama_cpp_server: LlamaCppServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBackend]:
    monkeypatch.setenv("OPENAI_API_KEY", llama_cpp_server.key)
    made = OpenAIBackend(
        ModelConfig(name=llama_cpp_server.alias, backend="openai",
                    base_url=llama_cpp_server.url, api_key_env="OPENAI_API_KEY"),
        default_run_config(read_timeout_s=60.0, first_token_timeout_s=120.0))
    made.preflight()
    yield made
    made.close()


def test_a_call_on_the_real_server_is_measured_and_labelled(backend: OpenAIBackend) -> None:
    assert backend.provenance()["server"] == "llama-cpp-python"
    m = backend.chat(MESSAGES, {"seed": 42, "temperature": 0.0, "num_predict": 12},
                     CachePlan(COLD, "31415926"))

    assert m.outcome == OK, m.error
    assert 0 < m.ttfb_ms <= m.ttft_ms < m.e2e_ms
    assert m.done_reason in ("stop", "length") and m.output
    # no usage on its streams: the output is counted by its own tokenizer, after the call
    assert m.token_count_source == TOKENIZER and 0 < m.output_tokens <= 12
    assert m.timing_source == CLIENT_CLOCK and m.prompt_eval_ms is None
    assert (m.cache_state, m.cache_controlled, m.nonce) == (COLD, True, "31415926")


def test_a_prompt_over_its_context_is_an_empty_200(backend: OpenAIBackend) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    m = backend.chat(long, {"seed": 1, "num_predict": 4})
    assert (m.outcome, m.http_status) == (NO_FINAL_CHUNK, None)
    assert m.error.startswith("HTTP 200 with an empty stream")


def test_a_wrong_key_fails_preflight_in_one_line(llama_cpp_server: LlamaCppServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRONG_KEY", "sk-not-the-key-11111")
    wrong = OpenAIBackend(
        ModelConfig(name=llama_cpp_server.alias, backend="openai",
                    base_url=llama_cpp_server.url, api_key_env="WRONG_KEY"),
        default_run_config())
    with pytest.raises(BackendUnavailable) as raised:
        wrong.preflight()
    wrong.close()
    assert str(raised.value) == (
        f"authentication failed at {llama_cpp_server.url} (HTTP 401) with the key in "
        "$WRONG_KEY: set the right key in that variable")


def test_a_schema_holds_the_real_servers_output(backend: OpenAIBackend) -> None:
    """llama-cpp-python's server constrains the output by the schema in json_object's
    `schema` key (openai_dialects): even the tiny model writes the object asked for."""
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}},
              "required": ["colour"]}
    m = backend.chat(MESSAGES, {"seed": 7, "temperature": 0.0, "num_predict": 48},
                     output_format=schema)
    assert m.outcome == OK, m.error
    assert m.done_reason == "stop"
    assert set(json.loads(m.output)) == {"colour"}
