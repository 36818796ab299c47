"""Provenance facts of a side and what differs between two: setup first, then settings."""

from __future__ import annotations

from dataclasses import replace

from ollabench.compare import (
    Side,
    headline_label,
    provenance_differences,
    provenance_facts,
    setup_labels,
)
from tests.helpers.synthetic import Scenario, env_for, make_records


def _side(scenario: Scenario, rev: str = "a", **env_changes: dict) -> Side:
    env = env_for(scenario)
    for key, changes in env_changes.items():
        env[key] = {**env.get(key, {}), **changes}
    records = [r for r in make_records(scenario) if r.arm == "treatment"]
    return Side(rev, "0" * 40, "treatment", env, records)


def test_same_setup_other_profile_is_like_for_like() -> None:
    a = _side(Scenario(treatment_profile="baseline"))
    b = _side(Scenario(treatment_profile="chimera"), rev="b")
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    assert {(d.category, d.name, d.a, d.b) for d in differences} >= {
        ("options", "profile", "baseline", "chimera")}
    assert setup_labels(differences) == []
    assert headline_label(differences).startswith("Like for like")


def test_other_machine_and_weights_are_labelled_and_listed_first() -> None:
    a = _side(Scenario())
    b = _side(Scenario(), rev="b", host={"hostname": "node7", "cpu_model": "Other CPU"},
              backend={"model_sha256": "cd" * 32})
    b = replace(b, records=[replace(r, options={"num_ctx": 1024}) for r in b.records])
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    assert [d.category for d in differences] == ["machine", "hardware", "weights", "options"]
    assert setup_labels(differences) == ["different machines", "different hardware",
                                         "different model weights"]
    assert headline_label(differences).startswith(
        "Across different machines, different hardware and different model weights")


def test_prompt_size_and_server_settings_count_as_setup() -> None:
    a = _side(Scenario())
    b = _side(Scenario(), rev="b", ollama_env={"OLLAMA_FLASH_ATTENTION": "1"})
    b = replace(b, records=[replace(r, prompt_tokens=(r.prompt_tokens or 0) * 2)
                            for r in b.records])
    labels = setup_labels(provenance_differences(provenance_facts(a), provenance_facts(b)))
    assert labels == ["different server environment", "different prompts"]
