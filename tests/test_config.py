"""Config validation: every kind of bad input stops with one line naming the key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from ollabench.cli import main
from ollabench.config.schema import compose, validate_config
from ollabench.errors import ConfigError
from tests.helpers.project import ROOT


def test_params_yaml_equals_composition_of_conf(committed_config: dict[str, Any]) -> None:
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == committed_config, "params.yaml is stale: run `ollabench params`"


def test_default_config_is_an_aa_run_and_valid(committed_config: dict[str, Any]) -> None:
    config = validate_config(committed_config)
    assert config.profile == config.reference
    assert config.profile.name == "baseline" and config.profile.options == {}
    assert config.model.backend == "llamacpp"
    assert config.run.order == "abba"


def test_the_default_runs_until_decided_within_a_make_repro_budget(
        committed_config: dict[str, Any]) -> None:
    """Issue 11 item 9: the committed default stops sequentially; 9 minutes of calls keep
    `make repro` near 10 minutes on a 2-core machine."""
    stopping = validate_config(committed_config).run.stopping
    assert stopping.mode == "sequential"
    assert stopping.max_minutes is not None and stopping.max_minutes <= 9.0
    assert stopping.min_runs <= stopping.max_runs


def test_quick_is_a_fixed_smoke_run() -> None:
    run = validate_config(compose(["run=quick"], conf_dir=ROOT / "conf")).run
    assert run.stopping.mode == "fixed" and run.runs == 2


def test_chimera_and_quick_compose() -> None:
    config = validate_config(compose(["profile=chimera", "run=quick"], conf_dir=ROOT / "conf"))
    assert config.profile.options == {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8}
    assert config.reference.name == "baseline"
    assert config.run.runs == 2 and config.run.warmup == 1


def _bad(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[leaf] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("profile.options", {"num_ctxx": 512}, r"profile\.options\.num_ctxx: unknown option; "
                                               r"allowed options: .*num_ctx"),
        ("profile.options", {"num_ctx": "big"}, r"profile\.options\.num_ctx: must be an integer"),
        ("profile.options", {"num_ctx": 0}, r"profile\.options\.num_ctx: must be at least 1"),
        ("profile.options", {"temperature": -1}, r"temperature: must be at least 0"),
        ("profile.options", {"top_p": 1.5}, r"top_p: must be between 0 and 1"),
        ("profile.options", {"use_mmap": "yes"}, r"use_mmap: must be true or false"),
        ("profile.options", {"kv_cache_type": "q5_1"},
         r"profile\.options\.kv_cache_type: must be one of f16, q8_0, q4_0, got 'q5_1'"),
        ("profile.options", {"flash_attention": "on"}, r"flash_attention: must be true or false"),
        ("reference.options", {"num_predict": 5},
         r"reference\.options\.num_predict: .*workload\.num_predict"),
        ("run.runs", 0, r"run\.runs: input should be greater than or equal to 1"),
        ("run.runs", "ten", r"run\.runs: input should be a valid integer"),
        ("run.order", "zigzag", r"run\.order: must be one of 'abba', 'random' or 'sequential'"),
        ("run.warmups", 1, r"run\.warmups: unknown key; allowed keys: runs, warmup"),
        ("workload.num_predict.analysis", 0,
         r"workload\.num_predict\.analysis: input should be greater"),
        ("run.max_output_tokens", 0, r"run\.max_output_tokens: input should be greater"),
        ("model.backend", "vllm",
         r"model\.backend: must be one of 'llamacpp', 'ollama' or 'openai'"),
        ("model.gguf", "/nonexistent/model.gguf", r"model\.gguf: file not found"),
        ("model.think", "ultra", r"model\.think: must be true, false, null or one of 'low', "
                                 r"'medium', 'high', 'max' .*got 'ultra'"),
        ("model.keep_alive", "300", r"model\.keep_alive: '300' has no unit, which Ollama "
                                    r"refuses; write '300s' or the number 300"),
        ("model.keep_alive", "5 minutes", r"model\.keep_alive: must be a number of seconds or "
                                          r"a duration such as '5m'"),
        ("model.keep_alive", True, r"model\.keep_alive: must be a number of seconds"),
        ("run.first_token_timeout_s", 10, r"run\.first_token_timeout_s: must be at least "
                                          r"run\.read_timeout_s \(120\), got 10"),
        ("model.think", 1, r"model\.think: must be true, false, null or one of"),
        ("model.think", True, r"model\.think: only for backend ollama; this model runs on "
                              r"llamacpp"),
        ("model.keep_alive", "10m", r"model\.keep_alive: only for backend ollama"),
        ("model.host", "http://127.0.0.1:1", r"model\.host: only for backend ollama"),
        ("colour", "red", r"colour: unknown key; allowed keys: model, reference_model, profile"),
    ],
)
def test_bad_input_names_the_key(raw_config: dict[str, Any], path: str, value: Any,
                                 expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        validate_config(_bad(raw_config, path, value))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep_alive", ["5m", "1h30m", "-1s", "0", "1.5h", 300, -1, 0])
def test_keep_alive_takes_what_ollama_takes(raw_config: dict[str, Any], keep_alive: Any) -> None:
    raw_config["model"] = {"name": "qwen3:4b", "backend": "ollama", "gguf": None,
                           "host": None, "think": "max", "keep_alive": keep_alive}

    model = validate_config(raw_config).model

    assert (model.keep_alive, model.think) == (keep_alive, "max")


def test_missing_key_is_named(raw_config: dict[str, Any]) -> None:
    del raw_config["run"]["seed"]
    with pytest.raises(ConfigError, match=r"run\.seed: required key is missing"):
        validate_config(raw_config)


def test_cli_reports_bad_params_in_one_line(tmp_path, raw_config, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_bad(raw_config, "profile.options", {"num_gpus": 80})))
    assert main(["bench", "--params", str(params), "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ollabench: error: profile.options.num_gpus: unknown option")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "raw").exists()


def test_params_check_detects_drift(tmp_path) -> None:
    out = tmp_path / "params.yaml"
    assert main(["params", "--conf", str(ROOT / "conf"), "--out", str(out)]) == 0
    assert main(["params", "--conf", str(ROOT / "conf"), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("runs: 10", "runs: 3"))
    assert main(["params", "--conf", str(ROOT / "conf"), "--out", str(out), "--check"]) == 1


@pytest.mark.parametrize(("override", "expected"), [
    ("profile=nope", "Could not find 'profile/nope' Available options in 'profile': baseline"),
    ("run.nosuchkey=1", "Could not override 'run.nosuchkey'"),
])
def test_a_bad_override_is_one_line_not_a_traceback(override, expected, tmp_path,
                                                    capsys) -> None:
    assert main(["params", "--out", str(tmp_path / "params.yaml"), override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ollabench: error: overrides: ") and expected in err
    assert len(err.splitlines()) == 1


def test_the_control_arm_may_name_its_own_model_config() -> None:
    same = validate_config(compose(["model=openai", "model.name=served"]))
    assert same.reference_model is None
    assert same.arm_model("control") == same.arm_model("treatment") == same.model
    apart = validate_config(compose(["model=openai", "model.name=served",
                                     "reference_model=smollm2-135m"]))
    assert (apart.arm_model("control").backend, apart.arm_model("treatment").backend) == \
        ("llamacpp", "openai")
    assert apart.model.api_key_env == "OPENAI_API_KEY" and apart.model.base_url is None

