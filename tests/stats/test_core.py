"""The statistics on plain arrays: the verdict test, outliers, Holm, the bootstrap, the rank
tests (checked against scipy and against simulation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ollabench.stats.core import (
    SCIPY_RANK_TEST_MAX,
    bootstrap_medians,
    holm,
    mann_whitney,
    outlier_flags,
    paired_wilcoxon,
    verdict_test,
    verdicts,
)


def test_verdict_core_false_positive_rate_in_aa_simulations() -> None:
    """1,000 seeded A/A simulations at each of 5, 7 and 10 runs per arm (log-normal, 5% CV):
    better/worse verdicts must stay at about alpha."""
    rng = np.random.default_rng(0)
    sigma = math.sqrt(math.log1p(0.05**2))
    for runs in (5, 7, 10):
        control = rng.lognormal(0.0, sigma, (1000, runs))
        treatment = rng.lognormal(0.0, sigma, (1000, runs))
        test = verdict_test(control, treatment)
        found = verdicts(test["p_welch"], test["effect"], test["mde_pct"], "higher",
                               5.0)
        share = np.isin(found, ["better", "worse"]).mean()
        assert share <= 0.06, f"{runs} runs: {share:.1%} false verdicts"


def test_trimming_the_tails_of_each_arm_would_not_be_calibrated() -> None:
    """Why outliers must also be far from the other arm to leave the test: with the
    one-arm rule alone, the same A/A simulations exceed alpha (this guards the design)."""
    rng = np.random.default_rng(0)
    control = rng.lognormal(0.0, 0.05, (4000, 5))
    treatment = rng.lognormal(0.0, 0.05, (4000, 5))
    flags = outlier_flags(control, treatment)
    trimmed = verdict_test(np.where(flags["flagged_control"], np.nan, control),
                                 np.where(flags["flagged_treatment"], np.nan, treatment))
    ours = verdict_test(control, treatment)
    assert (trimmed["p_welch"] < 0.05).mean() > 0.07
    assert (ours["p_welch"] < 0.05).mean() < 0.06


@pytest.mark.parametrize("n", [1, 2, 5, 8, 11])
def test_exact_bootstrap_medians_match_resampling(n: int) -> None:
    values = np.random.default_rng(n).lognormal(0.0, 0.3, n)
    fast = bootstrap_medians(values, 100_000, np.random.default_rng(1))
    draws = np.random.default_rng(2).integers(0, n, (100_000, n))
    naive = np.median(values[draws], axis=1)
    assert np.allclose(np.percentile(fast, [2.5, 25, 50, 75, 97.5]),
                       np.percentile(naive, [2.5, 25, 50, 75, 97.5]), rtol=0.01)
    assert fast.mean() == pytest.approx(naive.mean(), rel=0.005)


def test_verdict_test_is_welch_on_logs() -> None:
    control = np.exp(sps.norm.ppf(np.linspace(0.05, 0.95, 8)) * 0.1)  # no outliers
    treatment = np.exp(0.05 + sps.norm.ppf(np.linspace(0.05, 0.95, 9)[::-1]) * 0.2)
    expected = sps.ttest_ind(np.log(treatment), np.log(control), equal_var=False).pvalue
    test = verdict_test(control, treatment)
    assert int(test["n_left_out"]) == 0
    assert float(test["p_welch"]) == pytest.approx(expected)
    # vectorized: the same answer row by row
    rows = verdict_test(np.vstack([control[:8], control[:8]]),
                              np.vstack([treatment, treatment[::-1]]))
    assert np.allclose(rows["p_welch"], expected)


def test_large_sample_rank_tests_equal_scipys_normal_approximations() -> None:
    rng = np.random.default_rng(5)
    n = SCIPY_RANK_TEST_MAX + 1000
    control = np.round(rng.lognormal(0, 0.1, n), 2)  # rounded: many ties
    treatment = np.round(rng.lognormal(0.004, 0.1, n - 300), 2)
    reference = sps.mannwhitneyu(treatment, control, method="asymptotic")
    p, delta = mann_whitney(control, treatment)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)
    assert delta == pytest.approx(2 * reference.statistic / (n * (n - 300)) - 1)
    before = control
    after = np.round(control + rng.normal(0.002, 0.05, n), 2)
    expected = sps.wilcoxon(after - before, method="asymptotic").pvalue
    assert paired_wilcoxon(before, after) == pytest.approx(expected, rel=1e-9)


def test_exact_signed_rank_test_equals_scipy_where_scipy_is_exact() -> None:
    """Without ties or zeros scipy's exact distribution (n <= 50); with ties or zeros its
    permutation test over all 2^n sign flips (n <= 13; a second at n = 10, so small n here)."""
    rng = np.random.default_rng(11)
    for _ in range(150):
        n = int(rng.integers(2, 51))
        before = rng.normal(size=n)
        after = before + rng.normal(rng.choice([0.0, 0.5]), 1.0, n)
        assert paired_wilcoxon(before, after) == pytest.approx(
            sps.wilcoxon(after - before, method="exact").pvalue, rel=1e-9, abs=1e-12)
    for n in [*rng.integers(2, 7, 20), 8]:
        before = rng.integers(0, 5, n).astype(float)  # coarse values: ties and zeros
        after = before + rng.integers(-3, 4, n)
        diffs = after - before
        expected = sps.wilcoxon(diffs).pvalue if np.any(diffs) else 1.0
        assert paired_wilcoxon(before, after) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_signed_rank_test_is_exact_on_mid_ranks() -> None:
    """Differences 1, 1, -2: mid-ranks 1.5, 1.5, 3; of the 8 equally likely sign patterns,
    sums of positive ranks <= 3 occur in 4 (0, 1.5, 1.5, 3), so p = 2 x 4/8 = 1; with all
    three positive (sum 6, 1 pattern of 8) p = 2/8."""
    before = np.zeros(3)
    assert paired_wilcoxon(before, np.array([1.0, 1.0, -2.0])) == 1.0
    assert paired_wilcoxon(before, np.array([1.0, 1.0, 2.0])) == 0.25
    assert paired_wilcoxon(before, np.array([1.0, 0.0, 2.0])) == 0.5  # the zero is dropped
    assert math.isnan(paired_wilcoxon(before, np.array([1.0, math.nan, 2.0])))


def test_holm_adjustment() -> None:
    adjusted = holm(np.array([0.01, 0.04, np.nan, 0.03, 0.5]))
    assert np.allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.5], equal_nan=True)


def test_constant_values_are_no_difference_not_a_rounding_artefact() -> None:
    equal = verdict_test(np.full(10, 352.0), np.full(9, 352.0))
    assert float(equal["p_welch"]) == 1.0 and float(equal["mde_pct"]) == 0.0
    differ = verdict_test(np.full(10, 352.0), np.full(9, 300.0))
    assert float(differ["p_welch"]) == 0.0


def test_zero_values_use_the_raw_scale() -> None:
    control = np.array([0.0, 1.0, 2.0, 1.5, 0.5])
    test = verdict_test(control, control + 0.1)
    expected = sps.ttest_ind(control + 0.1, control, equal_var=False).pvalue
    assert float(test["p_welch"]) == pytest.approx(expected)


def test_mde_shrinks_with_runs_and_grows_with_noise() -> None:
    rng = np.random.default_rng(4)

    def mde(runs: int, cv: float) -> float:
        a, b = rng.lognormal(0, cv, (2, 400, runs))
        return float(np.median(verdict_test(a, b)["mde_pct"]))

    assert mde(20, 0.02) < mde(5, 0.02) < mde(5, 0.2)
    # 10 runs at 2% CV: (t_.975 + t_.80) * 0.02 * sqrt(2/10) ~ 2.6%
    assert 2.0 < mde(10, 0.02) < 3.5
