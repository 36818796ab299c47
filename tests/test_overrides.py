"""A config as Hydra overrides: values read back as written, and the overrides `tune` hands to
`dvc exp run -S` compose exactly the candidate's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollabench.config.overrides import override_value
from ollabench.config.schema import compose, validate_config
from ollabench.tune.candidate import candidate_config
from ollabench.tune.experiments import ExperimentRecorder
from ollabench.tune.settings import Stopping
from tests.helpers.project import ROOT

RACE = Stopping(min_runs=4, max_runs=8, max_minutes=3.0, look_every_blocks=1)


@pytest.mark.parametrize("value", ["qwen2.5:7b", "http://127.0.0.1:8080", "baseline", "q8_0",
                                   "null", "true", "1.5", "it's", "a b", 7, 0.25, None, True,
                                   ["workflow/e2e_ms", "each/ttft_ms"]])
def test_values_read_back_as_written(value: object) -> None:
    composed = compose([f"++run.extra={override_value(value)}"], ROOT / "conf")
    assert composed["run"]["extra"] == value


@pytest.mark.parametrize(("overrides", "options"), [
    ([], {"num_batch": 256, "num_thread": 2}),
    # an engine option that no profile file names, on a user-chosen reference
    (["profile@reference=chimera"], {"flash_attention": True, "kv_cache_type": "q8_0"}),
    (["model=qwen2.5-7b", "model.host='http://127.0.0.1:9'"], {"num_ctx": 4096}),
])
def test_dvc_composes_exactly_the_candidates_config(overrides: list[str],
                                                    options: dict[str, object]) -> None:
    config = validate_config(compose(overrides, ROOT / "conf"))
    candidate = candidate_config(config, options, "tune-x", "workflow/e2e_ms", RACE, 2.5)
    recorder = ExperimentRecorder(ROOT, Path("replay"), Path("logs"))
    asked = recorder.overrides(candidate)
    assert validate_config(compose(asked, ROOT / "conf")) == candidate
    assert "++profile.name=tune-x" in asked

