"""The noise figures of noise.csv from per-run values whose structure is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ollabench.stats.noise import bimodality, noise_row, runs_needed

ABBA = np.arange(40) % 2 == 0


def test_pairing_removes_a_level_both_arms_share() -> None:
    """Both arms move together from run to run (a wandering machine) with little noise of
    their own: pairing removes nearly all of the run noise."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0.0, 0.10, 40)
    control = np.exp(shared + rng.normal(0.0, 0.01, 40))
    treatment = np.exp(shared + rng.normal(0.0, 0.01, 40))
    row = noise_row(control, treatment, ABBA, 5.0)
    assert row["run_noise_pct"] == pytest.approx(10.0, abs=3.0)
    assert row["paired_noise_pct"] == pytest.approx(1.0, abs=0.4)
    assert row["pairing_removes_pct"] > 95
    assert row["runs"] == 40 and row["runs_needed"] < 5


def test_drift_regimes_and_the_first_call_are_seen() -> None:
    rng = np.random.default_rng(2)
    drift = np.linspace(0.0, math.log(1.2), 40)  # 20% slower by the end
    regimes = np.where(((np.arange(40) + 5) // 10) % 2 == 1, math.log(1.3), 0.0)  # centred
    first = math.log(1.1)  # the call that runs first in a run is 10% slower
    noise = rng.normal(0.0, 0.01, (2, 40))
    control = np.exp(drift + regimes + noise[0] + np.where(ABBA, first, 0.0))
    treatment = np.exp(drift + regimes + noise[1] + np.where(ABBA, 0.0, first))
    row = noise_row(control, treatment, ABBA, 5.0)
    assert row["drift_pct"] == pytest.approx(20.0, abs=8.0)
    assert row["two_levels"] and row["lag1_autocorr"] > 0.5
    assert row["position_pct"] == pytest.approx(10.0, abs=1.0)


def test_bimodality_and_runs_needed_edges() -> None:
    assert math.isnan(bimodality(np.array([1.0, 2.0, 3.0])))
    assert bimodality(np.r_[np.zeros(20), np.ones(20)]) > 5 / 9
    # 7% paired noise at a 5% threshold: ((1.645 + 1.282) 0.07 / ln 1.05)^2 = 17.6
    assert runs_needed(0.07, 5.0) == 18
    assert math.isnan(runs_needed(0.0, 5.0))
