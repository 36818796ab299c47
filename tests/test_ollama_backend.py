"""The Ollama backend's stream, faults, pre-flight and provenance against a real HTTP server
speaking Ollama's wire format (tests/helpers/fake_ollama.py).

Timing checks compare the client's measurements with the fake server's scripted delays. The
tolerance is generous (CI machines are noisy) but one-sided where physics allows: the first
token cannot arrive before the server's deadline.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ollabench.backends.ollama import OllamaBackend
from ollabench.backends.ollama_options import parse_parameters
from ollabench.backends.ollama_server import resolve_host
from ollabench.bench import provenance
from ollabench.config.schema import ModelConfig
from ollabench.errors import BackendUnavailable
from ollabench.records.schema import (
    DISCONNECTED,
    FIRST_TOKEN_TIMEOUT,
    HTTP_ERROR,
    MALFORMED,
    NO_FINAL_CHUNK,
    OK,
    STALLED,
    STREAM_ERROR,
    UNREACHABLE,
)
from tests.helpers.fake_ollama import URL_PREFIX, FakeOllama, Script
from tests.helpers.project import OLLAMA_MODEL, BackendFactory, default_run_config

TOLERANCE_MS = 25.0
MODEL = OLLAMA_MODEL
MESSAGES = [{"role": "user", "content": "Summarise the benchmark."}]
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- client-side timing ---------------------------------------------------------------------


def test_ttft_and_inter_token_gaps_follow_the_script(fake_ollama: FakeOllama,
                                                     make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(ttft_ms=80, token_ms=40, tokens=6)

    m = make_backend().chat(MESSAGES, {"num_predict": 6, "seed": 1})

    assert m.outcome == OK and m.error is None
    assert 80 <= m.ttft_ms < 80 + TOLERANCE_MS
    assert m.itl_p50_ms == pytest.approx(40, abs=TOLERANCE_MS)
    assert m.itl_p50_ms <= m.itl_p95_ms <= m.itl_max_ms
    assert m.e2e_ms >= m.ttft_ms + 5 * 40 - TOLERANCE_MS
    assert m.output == "w0 w1 w2 w3 w4 w5 "
    assert m.first_token_thinking is False and m.done_reason == "length"


def test_thinking_first_token_is_flagged_and_kept_out_of_output(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(thinking_tokens=2, tokens=2)

    m = make_backend(name="qwen3:4b", think=True).chat(MESSAGES, {})

    assert m.first_token_thinking is True
    assert m.output == "w0 w1 "
    assert m.output_tokens == 4  # Ollama counts thinking tokens in eval_count


def test_server_durations_are_converted_from_ns_to_ms(fake_ollama: FakeOllama,
                                                      make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(tokens=4, load_ms=12.345678)
    backend = make_backend()
    backend.chat(MESSAGES, {})  # loads the model

    m = backend.chat(MESSAGES, {})
    final = fake_ollama.chats()[-1].final

    assert final["load_duration"] == 12_345_678
    assert m.load_ms == pytest.approx(12.345678, abs=1e-9)
    assert m.prompt_eval_ms == pytest.approx(final["prompt_eval_duration"] / 1e6, abs=1e-9)
    assert m.eval_ms == pytest.approx(final["eval_duration"] / 1e6, abs=1e-9)
    assert m.total_ms == pytest.approx(final["total_duration"] / 1e6, abs=1e-9)
    assert (m.prompt_tokens, m.output_tokens) == (final["prompt_eval_count"], 4)
    assert m.prompt_cached_tokens is None  # Ollama reports no cached count in any version


# --- stream edges ---------------------------------------------------------------------------


def test_a_slow_first_token_is_not_a_stall(fake_ollama: FakeOllama,
                                           make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(ttft_ms=500, token_ms=10, tokens=3)

    m = make_backend(read_timeout_s=0.2, first_token_timeout_s=3.0).chat(MESSAGES, {})

    assert m.outcome == OK and m.ttft_ms >= 500


def test_first_token_timeout_is_its_own_outcome(fake_ollama: FakeOllama,
                                                make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(ttft_ms=1500)

    m = make_backend(read_timeout_s=0.2, first_token_timeout_s=0.3).chat(MESSAGES, {})

    assert (m.outcome, m.error) == (FIRST_TOKEN_TIMEOUT, "no first token within 0.3 s")
    assert m.ttft_ms is None


def test_repeat_abort_ending_is_a_no_final_chunk_outcome(fake_ollama: FakeOllama,
                                                        make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(tokens=100, repeat_abort=True)

    m = make_backend().chat(MESSAGES, {"num_predict": 100})

    assert m.outcome == NO_FINAL_CHUNK
    assert m.error == "stream ended without a final chunk after 31 chunks"
    assert m.output == "again " * 31 and m.e2e_ms is None


@pytest.mark.parametrize(("script", "outcome", "expected", "partial_output"), [
    (Script(status=500, error="CUDA error: out of memory"), HTTP_ERROR,
     "HTTP 500: CUDA error: out of memory", ""),
    (Script(status=503, error="server busy, please try again.  maximum pending requests "
                              "exceeded"), HTTP_ERROR,
     "HTTP 503: server busy, please try again.  maximum pending requests exceeded", ""),
    (Script(disconnect_after=2), DISCONNECTED,
     "connection dropped mid-stream after 2 chunks", "w0 w1 "),
    (Script(stall_after=1), STALLED, "stream stalled: no data for 0.3 s after 1 chunks", "w0 "),
    (Script(garbage_after=1), MALFORMED, "malformed stream line after 1 chunks: ", "w0 "),
    (Script(garbage_after=1, garbage_line="[1, 2]"), MALFORMED,
     "malformed stream line after 1 chunks: not a JSON object", "w0 "),
    (Script(error_line_after=2, error="an error was encountered while running the model"),
     STREAM_ERROR, "server error mid-stream after 2 chunks: an error was encountered while "
                   "running the model", "w0 w1 "),
], ids=["http-500", "http-503", "disconnect", "stall", "not-json", "json-not-object",
        "error-line"])
def test_failed_call_is_recorded_with_outcome_and_partial_timings(
        fake_ollama: FakeOllama, make_backend: BackendFactory, script: Script, outcome: str,
        expected: str, partial_output: str) -> None:
    fake_ollama.queue(script)
    backend = make_backend(read_timeout_s=0.3)

    m = backend.chat(MESSAGES, {})

    assert m.outcome == outcome and m.error.startswith(expected)
    assert m.http_status == (script.status if outcome == HTTP_ERROR else None)
    assert "\n" not in m.error
    assert m.e2e_ms is None and m.load_ms is None and m.output_tokens is None
    assert m.output == partial_output
    assert (m.ttft_ms is not None) == bool(partial_output)
    assert backend.chat(MESSAGES, {}).outcome == OK  # the next call works (default script)


def test_wrong_option_type_is_the_servers_500(make_backend: BackendFactory) -> None:
    m = make_backend().chat(MESSAGES, {"num_ctx": "big"})

    assert (m.outcome, m.http_status) == (HTTP_ERROR, 500)
    assert m.error == 'HTTP 500: option "num_ctx" must be of type integer'


def test_unknown_model_call_records_the_404(make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.model_name = "nope:1b"

    m = backend.chat(MESSAGES, {})

    assert (m.outcome, m.http_status, m.error) == (HTTP_ERROR, 404,
                                                   "HTTP 404: model 'nope:1b' not found")


def test_call_to_a_server_that_went_down_records_an_error(make_backend: BackendFactory) -> None:
    with FakeOllama() as gone:
        backend = make_backend(host=gone.url)

    m = backend.chat(MESSAGES, {})

    assert m.outcome == UNREACHABLE and m.ttft_ms is None
    assert m.error.startswith(f"cannot reach the Ollama server at {gone.url}")


# --- what goes over the wire ----------------------------------------------------------------


@pytest.mark.parametrize(("fake_ollama", "truncate"), [("0.12.5", None), ("0.12.6", False),
                                                      ("0.33.0", False)],
                         indirect=["fake_ollama"])
def test_think_keep_alive_truncate_and_options_are_sent_explicitly(
        fake_ollama: FakeOllama, make_backend: BackendFactory, truncate: bool | None) -> None:
    options = {"num_ctx": 2048, "temperature": 0.0, "num_predict": 7, "seed": 3}
    make_backend().chat(MESSAGES, options)
    make_backend(name="qwen3:4b", think=True, keep_alive=-1).chat(MESSAGES, options)

    defaults, configured = (e.body for e in fake_ollama.chats())
    expected = {"model": MODEL, "messages": MESSAGES, "stream": True, "think": False,
                "keep_alive": "5m", "options": options}
    if truncate is not None:
        expected["truncate"] = truncate  # the field exists from 0.12.6
    assert defaults == expected
    assert (configured["think"], configured["keep_alive"]) == (True, -1)


def test_unload_sends_keep_alive_zero_and_next_call_is_a_reload(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.chat(MESSAGES, {})

    backend.unload()

    unload = [e.body for e in fake_ollama.exchanges if e.path == "/api/chat"][-1]
    assert unload["keep_alive"] == 0 and unload["messages"] == []
    assert backend.ps_snapshot()["models"] == []
    m = backend.chat(MESSAGES, {})
    assert m.reloaded is True and m.reload_expected is True


# --- preflight ------------------------------------------------------------------------------


def test_preflight_names_the_fix_when_the_server_is_down(make_backend: BackendFactory,
                                                         closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"

    with pytest.raises(BackendUnavailable) as raised:
        make_backend(host=url)

    assert str(raised.value) == (f"cannot reach the Ollama server at {url}: start it with "
                                 "`ollama serve` (or set OLLAMA_HOST / model.host)")


def test_preflight_names_the_fix_when_the_model_is_missing(fake_ollama: FakeOllama,
                                                           make_backend: BackendFactory) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        make_backend(name="qwen2.5")  # only qwen2.5:7b is there, not :latest

    assert str(raised.value) == (f"model 'qwen2.5' is not on the server at {fake_ollama.url}: "
                                 "run `ollama pull qwen2.5`")


# --- provenance -----------------------------------------------------------------------------


@pytest.mark.parametrize("fake_ollama", ["0.24.0"], indirect=True)
def test_provenance_identifies_server_model_and_client(
        make_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "do-not-record")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    backend = make_backend(name="gemma3:4b")
    backend.chat(MESSAGES, {})

    info = backend.provenance()

    assert info["server_version"] == "0.24.0"
    assert set(info["client_versions"]) == {"httpx"}
    assert info["model"] == {
        "name": "gemma3:4b", "digest": hashlib.sha256(b"gemma3:4b").hexdigest(),
        "size_bytes": 4_683_087_332, "format": "gguf", "family": "gemma3",
        "parameter_size": "7.6B", "quantization_level": "Q4_K_M", "architecture": "gemma3",
        "training_context": 131072, "capabilities": ["completion", "vision"],
        "projector": False}
    assert info["go_engine"] is True and "Go engine" in info["go_engine_reason"]
    assert info["server_parameters"]["temperature"] == "0.7"
    assert info["request_fields"] == {"think": False, "keep_alive": "5m", "truncate": False}
    [loaded] = info["ps"]["models"]
    assert (loaded["name"], loaded["vram_share"], loaded["context_length"]) == (
        "gemma3:4b", 1.0, 4096)
    env = provenance.ollama_environment()
    assert env["OLLAMA_FLASH_ATTENTION"] == "1" and env["OLLAMA_API_KEY"] == "<redacted>"
    assert info["errors"] == []


def test_ps_snapshot_records_a_failure_instead_of_raising(make_backend: BackendFactory,
                                                          closed_port: int) -> None:
    backend = make_backend(host=f"http://127.0.0.1:{closed_port}", preflight=False)

    snapshot = backend.ps_snapshot()

    assert snapshot["models"] == [] and snapshot["error"].startswith("/api/ps: ")


def test_show_parameters_are_parsed_with_repeated_stops() -> None:
    text = 'num_ctx    4096\nstop    "<|im_start|>"\nstop    "<|im_end|>"\n'

    assert parse_parameters(text) == {"num_ctx": "4096", "stop": ["<|im_start|>", "<|im_end|>"]}


@pytest.mark.parametrize(("configured", "env", "url"), [
    (None, None, "http://127.0.0.1:11434"),
    (None, "0.0.0.0", "http://0.0.0.0:11434"),
    (None, "gpu-box:8080", "http://gpu-box:8080"),
    ("http://gpu-box", "ignored:1", "http://gpu-box:80"),
    ("https://gpu-box/ollama/", None, "https://gpu-box:443/ollama"),
    ("[::1]", None, "http://[::1]:11434"),
])
def test_host_comes_from_model_config_then_ollama_host(
        monkeypatch: pytest.MonkeyPatch, configured: str | None, env: str | None,
        url: str) -> None:
    if env is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", env)

    assert resolve_host(configured) == url


def test_records_match_the_server_log_of_another_process() -> None:
    """The CLI mode serves the version asked for; its log says what it did per request."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_ollama", "--port", "0", "--version",
         "0.33.0", "--script", json.dumps([{"tokens": 2}])],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().removeprefix(URL_PREFIX)
        backend = OllamaBackend(ModelConfig(name=MODEL, backend="ollama", host=url),
                                default_run_config())
        backend.preflight()
        m = backend.chat(MESSAGES, {"num_ctx": 8192})
        backend.close()
        [chat] = [e for e in httpx.get(f"{url}/_fake/exchanges").json()["exchanges"]
                  if e["path"] == "/api/chat"]
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert m.engine_version == "0.33.0"
    did = chat["did"]
    assert (m.prompt_tokens, m.num_ctx, m.num_batch) == (
        did["prompt_eval_count"], did["effective_ctx"], did["num_batch"])
    assert (m.truncated, m.context_shift, m.reloaded) == (
        did["truncated"], did["context_shift"], did["reloaded"])
    assert m.num_batch == 1024 and m.num_batch_basis == "assumed"  # auto batch on 0.30+


@pytest.mark.parametrize("gpu", [False, True])
def test_num_gpu_on_a_server_without_a_gpu_is_noted(fake_ollama: FakeOllama,
                                                    make_backend: BackendFactory,
                                                    gpu: bool) -> None:
    """GPU layers cannot act on a server that holds the model without VRAM (/api/ps
    size_vram 0): the backend names num_gpu so, for the report's configuration table."""
    fake_ollama.state.gpu = gpu
    backend = make_backend()
    backend.validate_options({"num_gpu": 80}, "profile.options")
    assert backend.chat(MESSAGES, {"num_gpu": 80}).outcome == OK

    notes = backend.provenance()["option_notes"]

    if gpu:
        assert "num_gpu" not in notes
    else:
        assert notes["num_gpu"] == ("cannot act here: the server ran the model without a GPU "
                                    "(/api/ps size_vram 0)")
