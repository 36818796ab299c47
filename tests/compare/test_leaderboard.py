"""What the leaderboard says an experiment changed (Hydra overrides against its baseline),
and its terminal listing."""

from __future__ import annotations

import copy

import pandas as pd

from ollabench.compare import leaderboard_text, param_changes
from ollabench.compare.leaderboard import TERMINAL_COLUMNS


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


def test_the_terminal_listing_fits_120_columns_whatever_was_changed() -> None:
    """Figures on one line per experiment; verdict, quality and changes wrapped beneath, so a
    long list of overrides never widens the listing (every column stays in the .md file)."""
    changes = " ".join(f"profile.options.option_{i}={i * 1000}" for i in range(12))
    frame = pd.DataFrame([{
        "rank": 1, "experiment": "chimera-num-ctx-512", "rev": "8b3a72e", "baseline": "main",
        "changes": changes, "runs": 40, "treatment_median": 133.04838, "ci_low": 120.1,
        "ci_high": 140.2, "control_median": 119.4875, "median_diff_pct": 11.14,
        "p_holm": 0.0012, "verdict": "no significant difference",
        "quality": "no change detected", "note": ""}])

    lines = leaderboard_text(frame).splitlines()

    assert max(map(len, lines)) <= TERMINAL_COLUMNS
    assert lines[0].split()[:3] == ["#", "experiment", "runs"]
    assert lines[1].split()[:3] == ["1", "chimera-num-ctx-512", "40"]
    assert lines[2].startswith("   no significant difference; quality: no change detected; "
                               "rev 8b3a72e; changes: profile.options.option_0=0")
    assert " ".join(line.strip() for line in lines[2:]).endswith(changes)
