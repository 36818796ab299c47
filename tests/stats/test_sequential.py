"""The sequential decision rule with known truth: published boundaries, intervals built from
values whose mean and spread are known, and the outcome at each look."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from ollabench.stats.sequential import (
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    MAX_CALIBRATED_BLOCKS,
    UNDECIDED,
    WORSE,
    Design,
    block_autocorrelation,
    boundaries,
    equivalence_levels,
    estimate,
    paired_levels,
    pocock_spent,
    sequential_looks,
    spent_alpha,
)


def test_obrien_fleming_spending_spends_all_alpha_at_the_end() -> None:
    assert spent_alpha(0.05, 1.0) == 0.05
    assert spent_alpha(0.05, 0.0) == 0.0
    # 4 (1 - Phi(z_0.9875 / sqrt(0.5))), z_0.9875 = 2.241403
    assert spent_alpha(0.05, 0.5) == pytest.approx(
        2.0 * math.erfc(2.241403 / math.sqrt(0.5) / math.sqrt(2)), rel=1e-5)


def test_boundaries_match_the_published_lan_demets_obrien_fleming_values() -> None:
    """Five equally spaced looks at two-sided 0.05 (Jennison and Turnbull, gsDesign)."""
    found = boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.05)
    assert found == pytest.approx((4.877, 3.357, 2.680, 2.290, 2.031), abs=0.002)
    assert boundaries((1.0,), 0.05) == pytest.approx((1.959964,), abs=1e-5)


def _arm(mean_log: float, offsets: np.ndarray) -> np.ndarray:
    return np.exp(mean_log + offsets)


# Eight offsets with mean 0 and sample sd exactly 0.02 on the log scale.
OFFSETS = np.array([1, -1, 1, -1, 1, -1, 1, -1], dtype=float)
OFFSETS *= 0.02 / OFFSETS.std(ddof=1)


def test_welch_estimate_of_a_known_ratio() -> None:
    control = _arm(0.0, OFFSETS)
    treatment = _arm(math.log(1.2), OFFSETS[::-1])
    found = estimate(control, treatment, block_runs=0)
    assert found.log_ratio == pytest.approx(math.log(1.2))
    assert found.se == pytest.approx(math.sqrt(2 * 0.02**2 / 8))
    assert found.df == pytest.approx(14.0)
    assert not found.paired


def test_pairing_is_used_when_drift_moves_both_arms() -> None:
    """A linear drift shared by both arms: per-block differences cancel it."""
    drift = np.linspace(0.0, 0.5, 12)
    wiggle = np.tile([0.001, -0.001], 6)
    control = np.exp(drift + wiggle)
    treatment = np.exp(drift - wiggle + math.log(0.9))
    found = estimate(control, treatment, block_runs=2)
    assert found.paired
    assert found.log_ratio == pytest.approx(math.log(0.9))
    assert found.se < 0.001


DESIGN = Design(min_runs=4, max_runs=8, look_every_runs=2, block_runs=2, threshold_pct=5.0,
                comparisons=1)


def test_looks_and_their_levels() -> None:
    """Too few blocks to pair: the z boundaries; paired from MIN_PAIRED_BLOCKS blocks on."""
    runs, levels = DESIGN.looks(available_runs=8, final=False)
    assert runs == [4, 6, 8]
    assert levels == pytest.approx([2 * sps.norm.sf(z)
                                    for z in boundaries((0.5, 0.75, 1.0), 0.05)])
    assert levels[0] < levels[1] < levels[2] < 0.05
    # a time budget that ends at 5 runs: one final look that spends the rest
    runs, levels = DESIGN.looks(available_runs=5, final=True)
    assert runs == [4, 5]
    assert levels == pytest.approx([2 * sps.norm.sf(z) for z in boundaries((0.5, 1.0), 0.05)])
    paired = replace(DESIGN, min_runs=8, max_runs=16)
    runs, levels = paired.looks(available_runs=16, final=False)
    assert runs == [8, 10, 12, 14, 16]
    assert levels == paired_levels((4, 5, 6, 7, 8), (0.5, 0.625, 0.75, 0.875, 1.0), 0.05)


def test_paired_levels_of_one_look_are_alpha() -> None:
    """One look spends all of alpha: the calibrated t boundary is the t quantile."""
    assert paired_levels((6,), (1.0,), 0.05)[0] == pytest.approx(0.05, rel=0.03)
    assert paired_levels((20,), (1.0,), 0.01)[0] == pytest.approx(0.01, rel=0.06)


def test_past_the_calibrated_blocks_the_z_boundaries_apply() -> None:
    """A fixed run of a million records (83,334 blocks a look) takes the z level at once;
    simulating 200,000 paths of that many blocks would need 130 GB. Up to
    MAX_CALIBRATED_BLOCKS the level is the calibrated t one."""
    runs = 2 * 83_334
    fixed = Design(min_runs=runs, max_runs=runs, look_every_runs=runs, block_runs=2,
                   threshold_pct=5.0, comparisons=4)
    assert fixed.looks(available_runs=runs, final=True) == ([runs], (pytest.approx(0.05 / 4),))
    edge = 2 * MAX_CALIBRATED_BLOCKS
    sequential = replace(DESIGN, min_runs=edge - 2, max_runs=edge + 2)
    assert sequential.looks(available_runs=edge, final=False)[1] == paired_levels(
        (MAX_CALIBRATED_BLOCKS - 1, MAX_CALIBRATED_BLOCKS),
        ((edge - 2) / (edge + 2), edge / (edge + 2)), 0.05)
    runs_past, levels = sequential.looks(available_runs=edge + 2, final=False)
    assert runs_past == [edge - 2, edge, edge + 2]
    assert levels == pytest.approx([2 * sps.norm.sf(z) for z in boundaries(
        tuple(n / (edge + 2) for n in runs_past), 0.05)])


def test_paired_levels_spend_like_obrien_fleming() -> None:
    """Early looks nearly nothing, the last close to alpha: (a t analogue of) the
    published boundaries."""
    levels = paired_levels((4, 8, 12, 16, 20), (0.2, 0.4, 0.6, 0.8, 1.0), 0.05)
    assert levels[0] < 1e-5
    assert levels[1] == pytest.approx(2 * sps.norm.sf(3.357), rel=0.3)
    assert 0.03 < levels[-1] < 0.05


def test_equivalence_levels_spend_their_own_alpha_early() -> None:
    """One look: the one-sided t level is alpha itself. Several: Pocock-type spending gives
    the first look a real share of it (O'Brien-Fleming gives it almost nothing), and a
    change exactly on the threshold is declared equivalent in about alpha of simulated
    experiments over all looks."""
    assert equivalence_levels((6,), (1.0,), 0.05)[0] == pytest.approx(0.05, rel=0.03)
    levels = equivalence_levels((4, 8, 12, 16, 20), (0.2, 0.4, 0.6, 0.8, 1.0), 0.05)
    assert pocock_spent(0.05, 0.2) == pytest.approx(0.05 * math.log1p((math.e - 1) * 0.2))
    assert levels[0] > 0.005 and all(level < 0.05 for level in levels)
    design = Design(min_runs=8, max_runs=40, look_every_runs=2, block_runs=2,
                    threshold_pct=5.0, comparisons=4)
    rng = np.random.default_rng(9)
    control = rng.lognormal(0.0, 0.05, (2000, 40))
    treatment = rng.lognormal(math.log(1.05), 0.05, (2000, 40))
    looks = sequential_looks(control, treatment, "lower", design, final=True)
    first = np.take_along_axis(looks.outcome, looks.decided_at()[:, None], axis=1)[:, 0]
    assert (first == EQUIVALENT).mean() <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 2000)


@pytest.mark.parametrize(("ratio", "direction", "expected"), [
    (2.0, "lower", WORSE), (2.0, "higher", BETTER), (0.5, "lower", BETTER),
    (0.5, "higher", WORSE), (1.0, "lower", EQUIVALENT), (1.01, "higher", EQUIVALENT),
])
def test_a_clear_truth_is_decided_at_the_first_look(ratio: float, direction: str,
                                                    expected: str) -> None:
    control = _arm(0.0, OFFSETS / 4)
    treatment = _arm(math.log(ratio), OFFSETS[::-1] / 4)
    looks = sequential_looks(control, treatment, direction, DESIGN, final=False)
    assert looks.outcome[0] == expected
    assert looks.decided_at() == 0
    assert looks.change_pct[0] == pytest.approx((ratio - 1) * 100)


def test_interval_at_each_look_has_the_spent_level() -> None:
    """Known mean and sd at 4, 6 and 8 runs: the interval is the t interval at each look's
    nominal level, widest at the first look."""
    offsets = np.tile([0.04, -0.04], 4)
    control, treatment = _arm(0.0, offsets), _arm(math.log(1.03), -offsets)
    looks = sequential_looks(control, treatment, "lower", replace(DESIGN, block_runs=0),
                             final=True)
    for k, n in enumerate(looks.runs):
        sd = 0.04 * math.sqrt(n / (n - 1))
        half = sps.t.isf((1 - looks.level[k]) / 2, 2 * n - 2) * sd * math.sqrt(2 / n)
        assert looks.low_pct[k] == pytest.approx(math.expm1(math.log(1.03) - half) * 100)
        assert looks.high_pct[k] == pytest.approx(math.expm1(math.log(1.03) + half) * 100)
    assert list(looks.outcome) == [UNDECIDED, UNDECIDED, INCONCLUSIVE]
    assert looks.level[0] > looks.level[1] > looks.level[2] > 0.95 - 1e-9


def test_an_equivalent_verdict_shows_the_interval_that_decided_it() -> None:
    """An early look of a long design spends almost none of the two-sided level (its
    interval is unbounded) while the TOST spends early: the verdict's interval is the
    TOST's, within the threshold, at 1 - 2 x the TOST level (a make repro once showed an
    equivalent verdict beside -100% to n/a)."""
    design = replace(DESIGN, max_runs=40, min_runs=8, comparisons=4)
    noise = np.random.default_rng(7).normal(0.0, 0.005, (2, 40))
    looks = sequential_looks(_arm(0.0, noise[0]), _arm(0.0, noise[1]), "lower", design,
                             final=False)
    k = int(looks.decided_at())
    assert (k, looks.outcome[k]) == (0, EQUIVALENT)
    assert -design.threshold_pct < looks.low_pct[k] < looks.high_pct[k] < design.threshold_pct
    assert 0.5 < looks.level[k] < 0.999


def test_decisions_depend_on_the_values_only() -> None:
    """The same values looked at in one go or after each block: the same decisions."""
    rng = np.random.default_rng(3)
    control = rng.lognormal(0.0, 0.05, 8)
    treatment = rng.lognormal(0.0, 0.05, 8)
    whole = sequential_looks(control, treatment, "lower", DESIGN, final=True)
    for n in (4, 6):
        part = sequential_looks(control[:n], treatment[:n], "lower", DESIGN, final=False)
        k = len(part.runs)
        assert np.array_equal(part.low_pct, whole.low_pct[:k])
        assert np.array_equal(part.outcome, whole.outcome[:k])


def test_many_experiments_at_once_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(4)
    control = rng.lognormal(0.0, 0.05, (6, 8))
    treatment = rng.lognormal(0.05, 0.05, (6, 8))
    many = sequential_looks(control, treatment, "higher", DESIGN, final=True)
    for i in range(6):
        one = sequential_looks(control[i], treatment[i], "higher", DESIGN, final=True)
        assert np.allclose(many.high_pct[i], one.high_pct)
        assert np.array_equal(many.outcome[i], one.outcome)


def test_false_decisions_on_aa_stay_below_alpha_over_all_looks() -> None:
    """Seeded A/A experiments looked at after every block: any better/worse at any look
    stays at about alpha (the benchmark checks this at 2,000 experiments per case)."""
    rng = np.random.default_rng(5)
    design = Design(min_runs=4, max_runs=20, look_every_runs=2, block_runs=2,
                    threshold_pct=5.0, comparisons=1)
    control = rng.lognormal(0.0, 0.10, (1000, 20))
    treatment = rng.lognormal(0.0, 0.10, (1000, 20))
    looks = sequential_looks(control, treatment, "lower", design, final=True)
    first = np.take_along_axis(looks.outcome, looks.decided_at()[:, None], axis=1)[:, 0]
    assert np.isin(first, [BETTER, WORSE]).mean() <= 0.06


def test_block_autocorrelation_sees_a_wandering_ratio() -> None:
    """Per-block ratios that trend (positive lag-1 autocorrelation) against ratios that
    alternate (negative), and too few blocks to say."""
    control = np.ones(16)
    trend = np.exp(np.repeat(np.linspace(0.0, 0.1, 8), 2))
    assert block_autocorrelation(control, trend, 2) > 0.5
    alternating = np.exp(np.repeat(np.tile([0.05, -0.05], 4), 2))
    assert block_autocorrelation(control, alternating, 2) == pytest.approx(-7 / 8)
    assert math.isnan(block_autocorrelation(control[:6], trend[:6], 2))
