"""The Ollama backend against a real HTTP server that speaks Ollama's wire format.

Timing checks compare the client's measurements with the fake server's scripted delays. The
tolerance is generous (CI machines are noisy) but one-sided where physics allows: the first
token cannot arrive before the server's deadline, so a TTFT below the script would mean the
empty first chunk was counted.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import yaml

from ollabench import provenance
from ollabench.backends.ollama import OllamaBackend, parse_parameters, resolve_host
from ollabench.config import ModelConfig, RunConfig
from ollabench.errors import BackendUnavailable
from tests.helpers.fake_ollama import (
    URL_PREFIX,
    FakeOllama,
    Script,
)

TOLERANCE_MS = 25.0
MODEL = "qwen2.5:7b"
MESSAGES = [{"role": "user", "content": "Summarise the benchmark."}]
REPO_ROOT = Path(__file__).resolve().parents[1]

BackendFactory = Callable[..., OllamaBackend]


def run_config(**overrides: float) -> RunConfig:
    """The committed run defaults (conf/run/default.yaml) with some values replaced."""
    raw = yaml.safe_load((REPO_ROOT / "conf" / "run" / "default.yaml").read_text(encoding="utf-8"))
    return RunConfig.model_validate({**raw, **overrides})


@pytest.fixture
def make_backend(fake_ollama: FakeOllama) -> Iterator[BackendFactory]:
    """Backends pointed at the fake server (model.host), closed after the test."""
    made: list[OllamaBackend] = []

    def make(name: str = MODEL, read_timeout_s: float = 5.0, host: str | None = None,
             **model_fields: object) -> OllamaBackend:
        model = ModelConfig(name=name, backend="ollama", host=host or fake_ollama.url,
                            **model_fields)
        backend = OllamaBackend(model, run_config(read_timeout_s=read_timeout_s,
                                                  connect_timeout_s=1.0))
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- client-side timing ---------------------------------------------------------------------


def test_ttft_and_inter_token_gaps_follow_the_script(fake_ollama: FakeOllama,
                                                     make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(ttft_ms=80, token_ms=40, tokens=6)

    m = make_backend().chat(MESSAGES, {"num_predict": 6, "seed": 1})

    assert m.error is None
    assert 80 <= m.ttft_ms < 80 + TOLERANCE_MS
    assert m.itl_p50_ms == pytest.approx(40, abs=TOLERANCE_MS)
    assert m.itl_p50_ms <= m.itl_p95_ms <= m.itl_max_ms
    assert m.e2e_ms >= m.ttft_ms + 5 * 40 - TOLERANCE_MS
    assert m.output == "w0 w1 w2 w3 w4 w5 "
    assert m.first_token_thinking is False


def test_empty_first_chunk_does_not_count_as_first_token(fake_ollama: FakeOllama,
                                                         make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(ttft_ms=60, tokens=1)  # the empty chunk leaves at 0 ms

    m = make_backend().chat(MESSAGES, {})

    assert m.ttft_ms >= 60
    assert m.itl_p50_ms is None and m.itl_p95_ms is None and m.itl_max_ms is None  # 0 gaps


def test_thinking_first_token_is_flagged_and_kept_out_of_output(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(thinking_tokens=2, tokens=2)

    m = make_backend(think=True).chat(MESSAGES, {})

    assert m.first_token_thinking is True
    assert m.output == "w0 w1 "
    assert m.output_tokens == 4  # Ollama counts thinking tokens in eval_count


# --- server-side figures --------------------------------------------------------------------


def test_server_durations_are_converted_from_ns_to_ms(fake_ollama: FakeOllama,
                                                      make_backend: BackendFactory) -> None:
    fake_ollama.script = Script(tokens=4, load_ms=12.345678, prompt_tokens=321,
                                cached_tokens=300, done_reason="length")

    m = make_backend().chat(MESSAGES, {})
    final = fake_ollama.requests_to("/api/chat")[0].final

    assert final["load_duration"] == 12_345_678
    assert m.load_ms == pytest.approx(12.345678, abs=1e-9)
    assert m.prompt_eval_ms == pytest.approx(final["prompt_eval_duration"] / 1e6, abs=1e-9)
    assert m.eval_ms == pytest.approx(final["eval_duration"] / 1e6, abs=1e-9)
    assert m.total_ms == pytest.approx(final["total_duration"] / 1e6, abs=1e-9)
    assert (m.prompt_tokens, m.prompt_cached_tokens, m.output_tokens) == (321, 300, 4)
    assert m.done_reason == "length"


def test_missing_cached_count_is_unknown_not_zero(make_backend: BackendFactory) -> None:
    m = make_backend().chat(MESSAGES, {})

    assert m.error is None
    assert m.prompt_cached_tokens is None


def test_context_comes_from_options_else_from_ps(make_backend: BackendFactory) -> None:
    backend = make_backend()

    assert backend.chat(MESSAGES, {}).num_ctx == 4096  # the server's choice, via /api/ps
    assert backend.chat(MESSAGES, {"num_ctx": 2048}).num_ctx == 2048


@pytest.mark.parametrize(("prompt_tokens", "truncated"), [(12, False), (4096, True)])
def test_prompt_filling_the_context_is_flagged_truncated(
        fake_ollama: FakeOllama, make_backend: BackendFactory, prompt_tokens: int,
        truncated: bool) -> None:
    fake_ollama.script = Script(prompt_tokens=prompt_tokens)

    assert make_backend().chat(MESSAGES, {}).truncated is truncated


def test_reload_is_flagged_from_load_time(fake_ollama: FakeOllama,
                                          make_backend: BackendFactory) -> None:
    fake_ollama.queue(*(Script(load_ms=2.0) for _ in range(3)), Script(load_ms=3000.0))
    backend = make_backend()

    assert [backend.chat(MESSAGES, {}).reloaded for _ in range(4)] == [False] * 3 + [True]


def test_reload_is_flagged_when_ps_shows_a_new_context(make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.chat(MESSAGES, {})

    assert backend.chat(MESSAGES, {"num_ctx": 2048}).reloaded is True  # load_ms stayed small
    assert backend.chat(MESSAGES, {"num_ctx": 2048}).reloaded is False


# --- what goes over the wire ----------------------------------------------------------------


def test_think_keep_alive_and_options_are_sent_explicitly(fake_ollama: FakeOllama,
                                                          make_backend: BackendFactory) -> None:
    options = {"num_ctx": 2048, "temperature": 0.0, "num_predict": 7, "seed": 3}
    make_backend().chat(MESSAGES, options)
    make_backend(think=True, keep_alive=-1).chat(MESSAGES, options)
    make_backend(think="high").chat(MESSAGES, options)  # gpt-oss style effort level

    defaults, configured, level = (e.body for e in fake_ollama.requests_to("/api/chat"))
    assert defaults == {"model": MODEL, "messages": MESSAGES, "stream": True, "think": False,
                        "keep_alive": "5m", "options": options}
    assert (configured["think"], configured["keep_alive"]) == (True, -1)
    assert level["think"] == "high"


def test_effective_options_are_the_options_sent(make_backend: BackendFactory) -> None:
    options = {"num_gpu": 80, "num_predict": 160, "seed": 42}

    assert make_backend().effective_options(options) == options


def test_unload_sends_keep_alive_zero_and_next_call_is_a_reload(
        fake_ollama: FakeOllama, make_backend: BackendFactory) -> None:
    backend = make_backend()
    backend.chat(MESSAGES, {})

    backend.unload()

    unload = fake_ollama.requests_to("/api/chat")[-1].body
    assert unload["keep_alive"] == 0 and unload["messages"] == []
    assert backend.ps_snapshot()["models"] == []
    assert backend.chat(MESSAGES, {}).reloaded is True


# --- faults: recorded, never raised ---------------------------------------------------------


@pytest.mark.parametrize(("script", "expected", "partial_output"), [
    (Script(status=500, error="CUDA error: out of memory"), "HTTP 500: CUDA error: out of memory",
     ""),
    (Script(disconnect_after=3), "connection dropped mid-stream after 3 chunks", "w0 w1 "),
    (Script(stall_after=2), "stream stalled: no data for 0.5 s after 2 chunks", "w0 "),
    (Script(garbage_after=2), "malformed stream line after 2 chunks: ", "w0 "),
    (Script(garbage_after=2, garbage_line="[1, 2]"), "malformed stream line after 2 chunks: ",
     "w0 "),
    (Script(error_line_after=3, error="an error was encountered while running the model"),
     "server error mid-stream after 3 chunks: an error was encountered while running the model",
     "w0 w1 "),
], ids=["http-500", "disconnect", "stall", "not-json", "json-not-object", "error-line"])
def test_failed_call_is_recorded_with_partial_timings(
        fake_ollama: FakeOllama, make_backend: BackendFactory, script: Script, expected: str,
        partial_output: str) -> None:
    fake_ollama.queue(script)  # chunk 0 is the empty one, then one token per chunk
    backend = make_backend(read_timeout_s=0.5)

    m = backend.chat(MESSAGES, {})

    assert m.error is not None and m.error.startswith(expected)
    assert "\n" not in m.error
    assert m.e2e_ms is None and m.load_ms is None and m.output_tokens is None
    assert m.output == partial_output
    assert (m.ttft_ms is not None) == bool(partial_output)
    assert backend.chat(MESSAGES, {}).error is None  # the next call works (default script)


def test_unknown_model_call_records_the_404(make_backend: BackendFactory) -> None:
    m = make_backend(name="nope:1b").chat(MESSAGES, {})

    assert m.error == "HTTP 404: model 'nope:1b' not found"


def test_call_to_a_server_that_is_down_records_an_error(make_backend: BackendFactory,
                                                        closed_port: int) -> None:
    m = make_backend(host=f"http://127.0.0.1:{closed_port}").chat(MESSAGES, {})

    assert m.error.startswith(f"cannot reach the Ollama server at http://127.0.0.1:{closed_port}")
    assert m.ttft_ms is None


# --- preflight ------------------------------------------------------------------------------


def test_preflight_names_the_fix_when_the_server_is_down(make_backend: BackendFactory,
                                                         closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"

    with pytest.raises(BackendUnavailable) as raised:
        make_backend(host=url).preflight()

    assert str(raised.value) == (f"cannot reach the Ollama server at {url}: start it with "
                                 "`ollama serve` (or set OLLAMA_HOST / model.host)")


def test_preflight_names_the_fix_when_the_model_is_missing(fake_ollama: FakeOllama,
                                                           make_backend: BackendFactory) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        make_backend(name="qwen2.5").preflight()  # only qwen2.5:7b is there, not :latest

    assert str(raised.value) == (f"model 'qwen2.5' is not on the server at {fake_ollama.url}: "
                                 "run `ollama pull qwen2.5`")


def test_preflight_passes_for_a_pulled_model(make_backend: BackendFactory) -> None:
    make_backend(name="gemma3:4b").preflight()


# --- provenance -----------------------------------------------------------------------------


def test_provenance_identifies_server_model_and_client(
        fake_ollama: FakeOllama, make_backend: BackendFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "do-not-record")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    backend = make_backend()
    backend.chat(MESSAGES, {})

    info = backend.provenance()

    assert info["server_version"] == "0.12.6"
    assert info["client_versions"]["ollama"] == metadata.version("ollama")
    assert info["model"] == {
        "name": MODEL, "digest": hashlib.sha256(MODEL.encode()).hexdigest(),
        "size_bytes": 4_683_087_332, "format": "gguf", "family": "qwen",
        "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}
    assert info["server_parameters"]["num_ctx"] == "4096"
    assert info["request_fields"] == {"think": False, "keep_alive": "5m"}
    [loaded] = info["ps"]["models"]
    assert (loaded["name"], loaded["vram_share"], loaded["context_length"]) == (MODEL, 1.0, 4096)
    assert loaded["expires_at"]
    env = provenance.ollama_environment()
    assert env["OLLAMA_FLASH_ATTENTION"] == "1" and env["OLLAMA_API_KEY"] == "<redacted>"
    assert info["errors"] == []


def test_ps_snapshot_shows_what_is_loaded(make_backend: BackendFactory) -> None:
    backend = make_backend()
    assert backend.ps_snapshot()["models"] == []

    backend.chat(MESSAGES, {"num_ctx": 1024})

    [loaded] = backend.snapshot()["models"]
    assert (loaded["name"], loaded["context_length"]) == (MODEL, 1024)


def test_ps_snapshot_records_a_failure_instead_of_raising(make_backend: BackendFactory,
                                                          closed_port: int) -> None:
    snapshot = make_backend(host=f"http://127.0.0.1:{closed_port}").ps_snapshot()

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


# --- the fake server itself -----------------------------------------------------------------


def test_fake_generate_streams_ollama_ndjson(fake_ollama: FakeOllama) -> None:
    fake_ollama.script = Script(tokens=2, thinking_tokens=1)
    body = {"model": MODEL, "prompt": "hi", "think": True}

    with httpx.stream("POST", f"{fake_ollama.url}/api/generate", json=body) as response:
        chunks = [json.loads(line) for line in response.iter_lines()]
    whole = httpx.post(f"{fake_ollama.url}/api/generate", json={**body, "stream": False}).json()

    assert [c.get("thinking", "") + c["response"] for c in chunks] == ["", "t0 ", "w0 ", "w1 ", ""]
    assert [c["done"] for c in chunks] == [False] * 4 + [True]
    assert isinstance(chunks[-1]["eval_duration"], int)
    assert (whole["response"], whole["thinking"], whole["done"]) == ("w0 w1 ", "t0 ", True)


def test_fake_runs_in_another_process() -> None:
    script = json.dumps([{"tokens": 1}])
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_ollama", "--port", "0", "--script", script],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline().strip()
        assert line.startswith(URL_PREFIX)
        url = line.removeprefix(URL_PREFIX)
        chat = httpx.post(f"{url}/api/chat", json={"model": MODEL, "messages": MESSAGES,
                                                   "stream": False}).json()
        exchanges = httpx.get(f"{url}/_fake/exchanges").json()["exchanges"]
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert chat["message"]["content"] == "w0 "
    assert [e["path"] for e in exchanges] == ["/api/chat", "/_fake/exchanges"]
    assert len(exchanges[0]["token_ns"]) == 1
