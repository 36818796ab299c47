"""What the Ollama backend records against what the server did, per server generation.

Each test runs against the fake server of one or more Ollama versions (0.12.5 lacks the
`truncate` field; 0.12.6 and 0.24.0 run the Go runners; 0.33.0 runs llama-server) and
compares the record with the server's own log of the request (`Exchange.did`).
"""

from __future__ import annotations

import pytest

from ollabench.backends.base import COLD, WARM, CachePlan
from ollabench.errors import ConfigError
from ollabench.records.schema import HTTP_ERROR, OK, rate_per_s
from tests.helpers.fake_ollama import FakeOllama, Script
from tests.helpers.project import BackendFactory

MESSAGES = [{"role": "user", "content": "Summarise the benchmark."}]
GENERATIONS = ["0.12.6", "0.33.0"]
LONG = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": " ".join(f"word{i}" for i in range(100))}]


def _did(fake: FakeOllama) -> dict:
    return fake.chats()[-1].did


# --- cache state and evaluated-token rates --------------------------------------------------


@pytest.mark.parametrize("fake_ollama", GENERATIONS, indirect=True)
def test_a_cold_call_rates_the_tokens_the_server_evaluated(fake_ollama: FakeOllama,
                                                           make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(prompt_token_ms=0.1)
    backend = make_backend()
    backend.chat(MESSAGES, {}, CachePlan(COLD, "11111111"))

    m = backend.chat(MESSAGES, {}, CachePlan(COLD, "22222222"))

    did = _did(fake_ollama)
    assert fake_ollama.chats()[-1].body["messages"][0]["content"].startswith("[22222222]\n")
    assert (m.cache_state, m.cache_controlled, m.nonce) == (COLD, True, "22222222")
    assert did["reused_tokens"] == 1  # the template's first token: the nonce comes next
    assert m.prompt_eval_tokens == m.prompt_tokens == did["evaluated_tokens"] + 1
    # 10 000 tok/s over the evaluated tokens; the nonce leaves one template token cached
    rate = rate_per_s(m.prompt_eval_tokens, m.prompt_eval_ms)
    assert rate == pytest.approx(10_000 * m.prompt_tokens / did["evaluated_tokens"])


@pytest.mark.parametrize("fake_ollama", GENERATIONS, indirect=True)
def test_a_warm_call_has_no_prompt_rate(fake_ollama: FakeOllama,
                                        make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.chat(LONG, {"num_predict": 1})  # the primer

    m = backend.chat(LONG, {}, CachePlan(WARM))

    assert _did(fake_ollama)["evaluated_tokens"] == 1  # a full match still evaluates one
    assert m.prompt_tokens == 105  # the whole prompt, in both generations
    assert (m.cache_state, m.cache_controlled) == (WARM, True)
    assert m.prompt_eval_tokens is None  # so no prompt rate: ~1 token was evaluated


def test_an_unarranged_call_says_nothing_about_the_cache(make_backend: BackendFactory) -> None:
    m = make_backend().chat(MESSAGES, {})

    assert (m.cache_state, m.cache_controlled, m.prompt_eval_tokens) == (None, False, None)


# --- truncation and context shift -----------------------------------------------------------


@pytest.mark.parametrize("fake_ollama", GENERATIONS, indirect=True)
def test_an_oversize_prompt_is_refused_and_flagged(fake_ollama: FakeOllama,
                                                  make_backend: BackendFactory) -> None:
    backend = make_backend()

    m = backend.chat(LONG, {"num_ctx": 64})

    assert fake_ollama.chats()[-1].body["truncate"] is False
    assert (m.outcome, m.http_status, m.truncated) == (HTTP_ERROR, 400, True)
    assert "exceeds" in m.error  # the server's own words
    fitting = backend.chat(LONG, {"num_ctx": 256})
    assert (fitting.outcome, fitting.truncated) == (OK, False)


@pytest.mark.parametrize("fake_ollama", ["0.12.5"], indirect=True)
def test_an_old_server_cuts_silently_and_is_still_caught(fake_ollama: FakeOllama,
                                                         make_backend: BackendFactory) -> None:
    backend = make_backend()

    fitting = backend.chat(LONG, {"num_ctx": 256})
    cut = backend.chat(LONG, {"num_ctx": 64})

    assert "truncate" not in fake_ollama.chats()[-1].body
    assert (fitting.truncated, cut.truncated) == (False, True) == (
        fake_ollama.chats()[0].did["truncated"], _did(fake_ollama)["truncated"])
    assert cut.prompt_tokens == 64


@pytest.mark.parametrize("fake_ollama", ["0.12.5"], indirect=True)
def test_dropped_messages_on_an_old_server_are_caught_after_a_fitting_call(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    history = [LONG[0], {"role": "user", "content": "x " * 60},
               {"role": "assistant", "content": "y " * 30}, {"role": "user", "content": "z"}]
    backend = make_backend()

    unknown = backend.chat(history, {"num_ctx": 80})  # fits? messages may have been dropped
    fitting = backend.chat(history, {"num_ctx": 256})
    dropped = backend.chat(history, {"num_ctx": 80})

    assert unknown.truncated is None  # never "not truncated" when it cannot be known
    assert fitting.truncated is None and fitting.prompt_tokens == 98
    assert dropped.truncated is True and _did(fake_ollama)["truncated"] is True
    assert dropped.prompt_tokens < 80


@pytest.mark.parametrize("fake_ollama", GENERATIONS, indirect=True)
def test_generation_past_the_context_is_a_context_shift(fake_ollama: FakeOllama,
                                                       make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(tokens=40)
    backend = make_backend()

    fits = backend.chat(LONG, {"num_ctx": 256, "num_predict": 40})
    shifts = backend.chat(LONG, {"num_ctx": 128, "num_predict": 40})

    assert (fits.context_shift, shifts.context_shift) == (False, True)
    assert _did(fake_ollama)["context_shift"] is True and shifts.truncated is False


# --- what ran: context and batch ------------------------------------------------------------


@pytest.mark.parametrize("fake_ollama", ["0.12.6", "0.24.0", "0.33.0"], indirect=True)
def test_a_vision_model_runs_at_2048_whatever_is_asked(fake_ollama: FakeOllama,
                                                       make_backend: BackendFactory) -> None:
    m = make_backend(name="gemma3:4b").chat(MESSAGES, {"num_ctx": 512})

    assert m.num_ctx == 2048 == _did(fake_ollama)["effective_ctx"]
    assert m.num_batch == 512


@pytest.mark.parametrize(("fake_ollama", "ps_context"), [("0.12.6", 16384), ("0.24.0", 8192)],
                         indirect=["fake_ollama"])
def test_the_training_context_caps_what_ps_may_overstate(
        fake_ollama: FakeOllama, make_backend: BackendFactory, ps_context: int) -> None:
    backend = make_backend(name="smollm2:135m")

    m = backend.chat(MESSAGES, {"num_ctx": 16384})

    assert backend.ps_snapshot()["models"][0]["context_length"] == ps_context
    assert m.num_ctx == 8192 == _did(fake_ollama)["effective_ctx"]


@pytest.mark.parametrize(("fake_ollama", "batches", "basis"),
                         [("0.24.0", (512, 512), "derived"), ("0.33.0", (512, 1024), "assumed")],
                         indirect=["fake_ollama"])
def test_changing_only_num_ctx_may_change_num_batch(
        fake_ollama: FakeOllama, make_backend: BackendFactory, batches: tuple[int, int],
        basis: str) -> None:
    backend = make_backend()

    small, large = (backend.chat(MESSAGES, {"num_ctx": ctx}) for ctx in (4096, 8192))

    assert (small.num_batch, large.num_batch) == batches
    assert large.num_batch == _did(fake_ollama)["num_batch"]
    assert small.num_batch_basis == large.num_batch_basis == basis


# --- reloads: expected from the options, observed from load time and /api/ps ----------------


@pytest.mark.parametrize("fake_ollama", GENERATIONS, indirect=True)
@pytest.mark.parametrize("change", [{"num_thread": 2}, {"use_mmap": False}, {"num_ctx": 2048}])
def test_a_runner_option_change_is_an_expected_and_observed_reload(
        fake_ollama: FakeOllama, make_backend: BackendFactory, change: dict) -> None:
    backend = make_backend()
    first, same = (backend.chat(MESSAGES, {}) for _ in range(2))

    changed = backend.chat(MESSAGES, change)

    assert (first.reload_expected, first.reloaded) == (True, True)
    assert (same.reload_expected, same.reloaded) == (False, False)
    assert (changed.reload_expected, changed.reloaded) == (True, True)
    assert _did(fake_ollama)["reloaded"] is True


@pytest.mark.parametrize(("fake_ollama", "reloads"), [("0.24.0", True), ("0.33.0", False)],
                         indirect=["fake_ollama"])
def test_dropping_use_mmap_reloads_only_before_0_30(fake_ollama: FakeOllama,
                                                   make_backend: BackendFactory,
                                                   reloads: bool) -> None:
    backend = make_backend()
    backend.chat(MESSAGES, {"use_mmap": False})

    m = backend.chat(MESSAGES, {})

    assert m.reload_expected is reloads
    assert m.reloaded is reloads is _did(fake_ollama)["reloaded"]


# --- options the server would ignore --------------------------------------------------------


@pytest.mark.parametrize("fake_ollama", ["0.12.6", "0.33.0"], indirect=True)
def test_a_dropped_option_is_refused_naming_the_server_version(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    with pytest.raises(ConfigError) as refused:
        make_backend().validate_options({"mirostat": 2}, "profile.options")

    version = fake_ollama.state.version_text
    assert str(refused.value) == (f"profile.options.mirostat: Ollama {version} ignores this "
                                  "option (dropped in 0.7.0, it only logs 'invalid option "
                                  "provided'); remove it")


@pytest.mark.parametrize(("option", "value", "variable"), [
    ("flash_attention", True, "OLLAMA_FLASH_ATTENTION"), ("kv_cache_type", "q8_0",
                                                          "OLLAMA_KV_CACHE_TYPE")])
def test_an_engine_setting_is_refused_naming_the_servers_variable(
        make_backend: BackendFactory, option: str, value: object, variable: str) -> None:
    """server/sched.go and envconfig: these come from the server's environment; a request
    field of that name is dropped as an invalid option (api/types.go Options.FromMap)."""
    with pytest.raises(ConfigError, match=rf"^profile\.options\.{option}: an Ollama server "
                                          rf"takes this from its own environment \({variable}\)"):
        make_backend().validate_options({option: value}, "profile.options")


@pytest.mark.parametrize(("fake_ollama", "model", "verdict"), [
    ("0.24.0", "gemma3:4b", "refused"),
    ("0.24.0", "llama3.1:8b", "honoured"),
    ("0.24.0", "mistral-small3.1:24b", "may be ignored"),  # split projector: llama.cpp runner
    ("0.27.0", "llama3.1:8b", "may be ignored"),  # a list ollabench does not know
    ("0.33.0", "gemma3:4b", "honoured"),
], indirect=["fake_ollama"])
def test_penalties_on_the_go_engine(fake_ollama: FakeOllama, make_backend: BackendFactory,
                                    model: str, verdict: str) -> None:
    backend = make_backend(name=model)
    options = {"repeat_penalty": 1.2}
    if verdict == "refused":
        with pytest.raises(ConfigError, match=r"profile.options.repeat_penalty: Ollama 0.24.0 "
                                              r"ignores this option: gemma3 models run on its "
                                              r"Go engine"):
            backend.validate_options(options, "profile.options")
        return
    backend.validate_options(options, "profile.options")
    notes = backend.provenance()["option_notes"]
    if verdict == "honoured":
        assert notes == {}
    else:
        assert notes["repeat_penalty"].startswith("may be ignored by this server (Ollama ")


# --- think, checked against the model's capabilities and the server version ----------------


@pytest.mark.parametrize(("fake_ollama", "model", "think", "message"), [
    ("0.24.0", "qwen2.5:7b", True, "'qwen2.5:7b' does not support thinking"),
    ("0.24.0", "qwen2.5:7b", "high", "'qwen2.5:7b' does not support thinking"),
    ("0.12.6", "qwen3:4b", "max", "'max' needs Ollama 0.22.0 or newer; this server is 0.12.6"),
    ("0.12.6", "qwen3:4b", "low", "Ollama 0.12.6 takes a level ('low') only for gpt-oss"),
], indirect=["fake_ollama"])
def test_a_think_value_the_server_refuses_is_refused_before_the_first_call(
        fake_ollama: FakeOllama, make_backend: BackendFactory, model: str, think: object,
        message: str) -> None:
    with pytest.raises(ConfigError, match="^model.think: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        make_backend(name=model, think=think)

    assert fake_ollama.chats() == []


@pytest.mark.parametrize(("fake_ollama", "model", "think"), [
    ("0.12.6", "gpt-oss:20b", "low"), ("0.24.0", "qwen3:4b", "max"),
    ("0.24.0", "qwen2.5:7b", False)], indirect=["fake_ollama"])
def test_a_think_value_the_server_takes_is_sent(fake_ollama: FakeOllama,
                                                make_backend: BackendFactory, model: str,
                                                think: object) -> None:
    m = make_backend(name=model, think=think).chat(MESSAGES, {})

    assert m.outcome == OK and fake_ollama.chats()[-1].body["think"] == think
