"""What the leaderboard says an experiment changed: Hydra overrides against its baseline."""

from __future__ import annotations

import copy

from ollabench.compare import param_changes


def test_param_changes_are_hydra_overrides() -> None:
    base = {"profile": {"name": "baseline", "options": {}}, "run": {"runs": 10, "seed": 1}}
    new = copy.deepcopy(base)
    new["profile"] = {"name": "chimera", "options": {"num_ctx": 256}}
    del new["run"]["seed"]
    assert param_changes(base, new) == ("profile.name=chimera profile.options.num_ctx=256 "
                                        "~run.seed")
    assert param_changes(base, base) == "(none)"


def test_param_changes_write_values_as_hydra_reads_them() -> None:
    base = {"profile": {"options": {"temperature": 0.8, "top_k": None}}}
    new = {"profile": {"options": {"temperature": 0.123456, "top_k": 20, "stop": ["a"],
                                   "mmap": False}}}
    assert param_changes(base, new) == ("profile.options.temperature=0.123456 "
                                        "profile.options.top_k=20 profile.options.stop=[\"a\"] "
                                        "profile.options.mmap=false")
