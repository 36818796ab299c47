"""The embedded backend on the real SmolLM2 model, with small output caps."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from ollabench.backends.base import WARM, CachePlan
from ollabench.backends.llamacpp import LlamaCppBackend
from ollabench.backends.llamacpp_options import ollama_defaults
from ollabench.bench.provenance import physical_cores
from ollabench.cli import main
from ollabench.config.schema import bundled_gguf
from ollabench.errors import ConfigError
from ollabench.workloads.agent import analysis_messages, read_digest
from tests.helpers.project import ROOT, tiny_config

MESSAGES = [{"role": "user", "content": "Count from one to ten."}]


@pytest.fixture(scope="module")
def backend(composed):
    raw = copy.deepcopy(composed)
    config = tiny_config(raw)
    engine = LlamaCppBackend(config.model, config.run)
    engine.preflight()
    yield engine
    engine.close()


def test_streamed_call_has_consistent_timings(backend) -> None:
    m = backend.chat(MESSAGES, {"num_predict": 8, "seed": 1, "num_ctx": 1024})
    assert m.error is None
    assert m.done_reason == "length" and m.output_tokens == 8
    assert m.output.strip()
    assert 0 < m.ttft_ms <= m.e2e_ms
    assert m.prompt_tokens > 5 and m.prompt_cached_tokens == 0
    assert m.prompt_eval_ms > 0 and m.eval_ms > 0
    # The engine's own prompt and decode times fit inside the client's end-to-end time.
    assert m.prompt_eval_ms + m.eval_ms <= m.e2e_ms
    assert m.truncated is False and m.num_ctx == 1024


def test_load_time_options_reload_and_others_do_not(backend) -> None:
    first = backend.chat(MESSAGES, {"num_predict": 2, "num_ctx": 768})
    same = backend.chat(MESSAGES, {"num_predict": 2, "num_ctx": 768, "temperature": 0.1})
    other = backend.chat(MESSAGES, {"num_predict": 2, "num_ctx": 640})
    assert first.reloaded is True and other.reloaded is True
    assert same.reloaded is False
    assert same.load_ms < first.load_ms
    assert backend.snapshot()["load_options"]["num_ctx"] == 640
    assert (first.reload_expected, same.reload_expected, other.reload_expected) == (
        True, False, True)
    assert backend.expects_reload({"num_ctx": 768}, {"num_ctx": 640, "temperature": 0.1})
    assert not backend.expects_reload({"num_ctx": 768}, {"num_ctx": 768, "top_k": 5})


def test_flash_attention_and_a_quantized_cache_load_and_answer(backend) -> None:
    """Load-time engine settings (Ollama takes them from its environment): each change
    reloads, and a quantized cache without flash attention is refused before a call."""
    plain = {"num_predict": 4, "seed": 3, "num_ctx": 512}
    flash = backend.chat(MESSAGES, plain | {"flash_attention": True})
    quantized = backend.chat(MESSAGES, plain | {"flash_attention": True, "kv_cache_type": "q8_0"})
    assert flash.error is None and quantized.error is None
    assert flash.output_tokens == quantized.output_tokens == 4
    assert quantized.reloaded is True and quantized.reload_expected is True
    loaded = backend.snapshot()["load_options"]
    assert (loaded["flash_attention"], loaded["kv_cache_type"]) == (True, "q8_0")
    with pytest.raises(ConfigError, match="kv_cache_type: q4_0 needs flash_attention: true"):
        backend.validate_options({"kv_cache_type": "q4_0"}, "profile.options")
    assert backend.effective_options({})["kv_cache_type"] == "f16"


def test_same_seed_same_text(backend) -> None:
    options = {"num_predict": 12, "seed": 7, "num_ctx": 1024}
    assert backend.chat(MESSAGES, options).output == backend.chat(MESSAGES, options).output


def test_prompt_cache_off_evaluates_whole_prompt_every_call(backend) -> None:
    options = {"num_predict": 2, "num_ctx": 1024}
    backend.chat(MESSAGES, options)
    again = backend.chat(MESSAGES, options)
    assert again.prompt_cached_tokens == 0
    assert again.prompt_eval_tokens == again.prompt_tokens
    assert (again.cache_state, again.cache_controlled) == ("cold", True)


def test_a_primed_call_is_warm_with_exact_counts(composed) -> None:
    raw = copy.deepcopy(composed)
    config = tiny_config(raw, prompt_cache=True)
    engine = LlamaCppBackend(config.model, config.run)
    options = {"num_predict": 2, "num_ctx": 512}
    try:
        engine.chat(MESSAGES, {**options, "num_predict": 1})  # the primer
        warm = engine.chat(MESSAGES, options, CachePlan(WARM))
    finally:
        engine.close()
    assert (warm.cache_state, warm.cache_controlled) == ("warm", True)
    # A full prefix match re-evaluates at most the last token (llama.cpp's counters file a
    # one-token batch under decoding).
    assert warm.prompt_eval_tokens <= 1
    assert warm.prompt_cached_tokens == warm.prompt_tokens - warm.prompt_eval_tokens


def test_overlong_prompt_is_truncated_not_crashed(backend) -> None:
    messages = analysis_messages(read_digest(ROOT / "data" / "workload"))
    m = backend.chat(messages, {"num_predict": 16, "num_ctx": 128})
    assert m.error is None
    assert m.truncated is True
    assert m.prompt_tokens == 128 - 16


def test_defaults_mirror_ollama(backend) -> None:
    effective = backend.effective_options({"num_predict": 4})
    assert effective["num_ctx"] == 4096 and effective["num_thread"] == physical_cores()
    assert effective["temperature"] == ollama_defaults()["temperature"] == 0.8


def test_unsupported_option_is_rejected(backend) -> None:
    with pytest.raises(ConfigError, match=r"options\.low_vram: not supported by the llamacpp"):
        backend.effective_options({"low_vram": True})


def test_provenance_identifies_the_model_file(backend) -> None:
    info = backend.provenance()
    assert len(info["model_sha256"]) == 64 and info["engine_version"]


def test_default_caps_fit_the_chimera_context(backend, composed) -> None:
    """The committed prompts plus output caps fit num_ctx 512: chimera is not measured on
    truncated prompts."""
    caps = composed["workload"]["num_predict"]
    messages = analysis_messages(read_digest(ROOT / "data" / "workload"))
    m = backend.chat(messages, {"num_predict": 1, "num_ctx": 512, "seed": 42})  # counts only
    assert m.error is None and m.truncated is False
    assert m.prompt_tokens + caps["analysis"] <= 512


@pytest.mark.parametrize(("name", "make", "expected"), [
    ("random.gguf", lambda model: bytes(range(256)) * 64,
     r"is not a GGUF file: it starts with b'\\x00\\x01\\x02\\x03', not b'GGUF'"),
    ("header.gguf", lambda model: model[:10],
     r"is truncated: 10 bytes, shorter than the 24-byte GGUF header"),
    ("metadata.gguf", lambda model: model[:2000],
     r"has a GGUF header but llama.cpp cannot load it: its metadata or tensors are cut short"),
    ("half.gguf", lambda model: model[:len(model) // 2],
     r"has a GGUF header but llama.cpp cannot load it"),
])
def test_an_invalid_gguf_is_one_line_naming_the_file(raw_config, tmp_path, capsys, name, make,
                                                     expected) -> None:
    """Random bytes, a header cut short, a metadata table cut short and half a model: each
    refused by the bench before the first call, in one line naming the file."""
    bad = tmp_path / name
    bad.write_bytes(make(bundled_gguf().read_bytes()))
    raw_config["model"]["gguf"] = str(bad)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_config))
    assert main(["bench", "--params", str(params), "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"ollabench: error: model.gguf: {bad}")
    assert re.search(expected, err), err
    assert not (tmp_path / "raw").exists()


def test_num_gpu_on_a_build_without_gpu_offload_is_noted(backend) -> None:
    """An engine built without GPU offload runs every layer on the CPU whatever num_gpu
    says: the backend names the option as one that cannot act, for the report."""
    import llama_cpp

    backend.validate_options({"num_gpu": 80}, "profile.options")
    notes = backend.provenance()["option_notes"]
    if llama_cpp.llama_supports_gpu_offload():
        assert "num_gpu" not in notes
    else:
        assert notes["num_gpu"].startswith("cannot act here: this llama.cpp build has no GPU "
                                           "offload")
