"""Change points on synthetic series, without git (tests.helpers.synthetic.level_series:
per-run values log-normal around a level that moves where the case says, with run-to-run
and revision-to-revision noise)."""

from __future__ import annotations

import numpy as np
import pytest

from ollabench.history.changepoints import find_changes, noise_sd, propose, segment_levels
from tests.helpers.synthetic import level_series as series

THRESHOLD_PCT = 5.0


def test_aa_noise_gives_no_change_point() -> None:
    found = [c for seed in range(60)
             for c in find_changes(series(points=24, seed=seed), THRESHOLD_PCT)]
    assert found == []


def test_a_10_percent_slowdown_is_found_at_its_commit_with_its_size() -> None:
    for seed in range(20):
        changes = find_changes(series(steps=[(8, 0.9)], seed=seed), THRESHOLD_PCT)
        assert [c.index for c in changes] == [8]
        change = changes[0]
        assert abs(change.step_pct + 10.0) < 2.0
        assert change.ci_low_pct < change.step_pct < change.ci_high_pct
        assert change.p_value < 1e-6
        assert (change.start, change.end) == (0, 20)
        assert (change.runs_before, change.runs_after) == (80, 120)


def test_two_changes_are_both_found_each_against_its_own_neighbours() -> None:
    changes = find_changes(series(points=24, steps=[(8, 0.9), (16, 1.2)], seed=3),
                           THRESHOLD_PCT)
    assert [c.index for c in changes] == [8, 16]
    assert [(c.start, c.end) for c in changes] == [(0, 16), (8, 24)]
    assert abs(changes[0].step_pct + 10.0) < 2.0 and abs(changes[1].step_pct - 20.0) < 2.5


def test_a_step_below_the_practical_threshold_is_not_reported() -> None:
    small = series(points=24, runs=30, revision_sd=0.0, steps=[(12, 0.97)], seed=1)
    assert find_changes(small, THRESHOLD_PCT) == []
    assert [c.index for c in find_changes(small, 2.0)] == [12]  # significant, just small


def test_one_slow_revision_is_an_outlier_not_a_change() -> None:
    assert find_changes(series(steps=[(10, 0.8), (11, 1.25)], seed=2), THRESHOLD_PCT) == []


def test_noisy_runs_hide_a_step_the_test_cannot_confirm() -> None:
    # 40% CV and 2 runs a point: the medians jump about, and no step is significant
    noisy = series(points=12, runs=2, cv=0.4, revision_sd=0.0, seed=5)
    assert find_changes(noisy, THRESHOLD_PCT) == []


def test_series_without_noise() -> None:
    flat = [np.full(5, 100.0) for _ in range(10)]
    assert find_changes(flat, THRESHOLD_PCT) == []
    stepped = flat[:6] + [np.full(5, 110.0) for _ in range(4)]
    changes = find_changes(stepped, THRESHOLD_PCT)
    assert [(c.index, round(c.step_pct, 6), c.p_value) for c in changes] == [(6, 10.0, 0.0)]


def test_short_or_empty_series_have_no_change_points() -> None:
    assert find_changes(series(points=3, steps=[(2, 0.5)]), THRESHOLD_PCT) == []
    assert find_changes([np.array([1.0]), np.array([])] * 3, THRESHOLD_PCT) == []


def test_the_noise_estimate_ignores_the_steps() -> None:
    rng = np.random.default_rng(0)
    levels = rng.normal(0.0, 0.01, 200) + np.where(np.arange(200) >= 100, 0.5, 0.0)
    assert noise_sd(levels) == pytest.approx(0.01, rel=0.2)
    assert 100 in propose(levels)


def test_segment_levels_follow_the_change_points() -> None:
    samples = series(points=10, revision_sd=0.0, cv=0.0, steps=[(4, 2.0)])
    changes = find_changes(samples, THRESHOLD_PCT)
    assert segment_levels(samples, changes) == pytest.approx([100.0] * 4 + [200.0] * 6)
