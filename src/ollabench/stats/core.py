"""The statistics on plain float arrays: robust z, outliers, the verdict test (Welch on the
test scale), Holm, verdicts, the exact bootstrap of medians, the rank tests and a sample's
description. numpy and scipy only: no frames, paths or I/O, so each rule can be checked on
numbers alone. docs/statistics.md explains every rule here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy import stats as sps

from ollabench.stats.metrics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    CONTROL,
    OUTLIER_MIN_VALUES,
    OUTLIER_Z,
    POWER,
    TREATMENT,
)

MAD_TO_SD = 0.6745  # robust z = 0.6745 (x - median) / MAD (Iglewicz and Hoaglin)
# Above this many values per arm Mann-Whitney uses scipy's normal approximation computed
# from sorted arrays: the same p-values, without scipy's stable argsort (10x slower).
SCIPY_RANK_TEST_MAX = 5_000
# Up to this many pairs the signed-rank test is exact (the limit of scipy's exact method).
WILCOXON_EXACT_MAX = 50


@contextmanager
def quiet() -> Iterator[None]:
    """Empty or constant groups are expected; their NaN results carry the meaning."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def on_test_scale(control: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Both arms on the scale of the verdict test, along the last axis: log values (the
    metrics are ratio-scaled and right-skewed), or raw values for a row that holds zero or
    negative numbers. Returns (control, treatment, on_log) with on_log per row."""
    with quiet():
        on_log = np.all(~(control <= 0), axis=-1) & np.all(~(treatment <= 0), axis=-1)
        log_row = np.expand_dims(on_log, -1)
        c = np.where(log_row, np.log(np.where(control > 0, control, np.nan)), control)
        t = np.where(log_row, np.log(np.where(treatment > 0, treatment, np.nan)), treatment)
    return c, t, on_log


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """0.6745 (x - median) / MAD of `reference`, along the last axis: +-inf where the MAD is
    0 and x differs from the median, NaN where x equals it or is missing."""
    return _z(values, *_centre_and_mad(reference))


def _centre_and_mad(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with quiet():
        median = nanmedian(values)
        return median, nanmedian(np.abs(values - median))


def nanmedian(values: np.ndarray) -> np.ndarray:
    """np.nanmedian(values, axis=-1, keepdims=True) through a full sort, which numpy
    vectorizes and runs several times faster than the partition np.nanmedian uses."""
    values = np.asarray(values, dtype=float)
    if values.shape[-1] == 0:
        return np.full((*values.shape[:-1], 1), np.nan)
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    known = np.sum(~np.isnan(values), axis=-1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum(known - 1, 0) // 2, axis=-1)
    high = np.take_along_axis(ordered, known // 2 - (known == 0), axis=-1)
    return np.where(known > 0, (low + high) / 2.0, np.nan)


def _z(values: np.ndarray, median: np.ndarray, mad: np.ndarray) -> np.ndarray:
    with quiet():
        return MAD_TO_SD * (values - median) / mad


def outlier_flags(control: np.ndarray, treatment: np.ndarray) -> dict[str, np.ndarray]:
    """Outliers of both arms, on the test scale (see on_test_scale).

    `z_<arm>` is each value's robust z within its own arm (NaN where the arm's MAD is 0:
    no spread to measure against, so nothing is flagged); `flagged_<arm>` marks |z| above
    OUTLIER_Z in arms of at least OUTLIER_MIN_VALUES values. `left_out_<arm>` marks the
    flagged values that are also that far from the other arm: far from every level the
    data shows, so no profile explains them (a model load, a stall). Only those leave the
    verdict test; trimming values that are merely in the tail of a small sample would make
    the test find differences that are not there."""
    c, t, _ = on_test_scale(control, treatment)
    return _flags_on_test_scale(c, t)


def _flags_on_test_scale(c: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    levels = {CONTROL: _centre_and_mad(c), TREATMENT: _centre_and_mad(t)}
    out: dict[str, np.ndarray] = {}
    with quiet():
        for arm, other, own in ((CONTROL, TREATMENT, c), (TREATMENT, CONTROL, t)):
            z_own = _z(own, *levels[arm])
            z_own = np.where(np.isfinite(z_own), z_own, np.nan)
            enough = np.sum(~np.isnan(own), axis=-1, keepdims=True) >= OUTLIER_MIN_VALUES
            flagged = (np.abs(z_own) > OUTLIER_Z) & enough
            out[f"z_{arm}"] = z_own
            out[f"flagged_{arm}"] = flagged
            out[f"left_out_{arm}"] = flagged & (np.abs(_z(own, *levels[other])) > OUTLIER_Z)
    return out


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample variance along the last axis, ignoring NaN."""
    with quiet():
        n = np.sum(~np.isnan(values), axis=-1)
        mean = np.nansum(values, axis=-1) / n
        sq = np.nansum((values - np.expand_dims(mean, -1)) ** 2, axis=-1)
        var = np.where(n > 1, sq / (n - 1), np.nan)
    return n, mean, var


def verdict_test(control: np.ndarray, treatment: np.ndarray,
                 alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """The verdict test of treatment against control, along the last axis (NaN = missing):
    Welch's t-test on the test scale with the left-out outliers removed.

    Returns p_welch, effect (treatment - control on the test scale), mde_pct (the relative
    change this design detects with POWER at alpha, from the observed spread), hedges_g,
    n_left_out and the outlier flags (see outlier_flags). Works on one comparison (1-D) or
    many at once (2-D)."""
    scaled_c, scaled_t, on_log = on_test_scale(control, treatment)
    flags = _flags_on_test_scale(scaled_c, scaled_t)
    with quiet():
        # Centred on the pooled median, so that equal values are exactly 0 and rounding
        # cannot fake a spread (a constant token count would otherwise "differ").
        centre = nanmedian(np.concatenate([scaled_c, scaled_t], axis=-1))
        c = np.where(flags[f"left_out_{CONTROL}"], np.nan, scaled_c - centre)
        t = np.where(flags[f"left_out_{TREATMENT}"], np.nan, scaled_t - centre)
        n_c, mean_c, var_c = _moments(c)
        n_t, _, var_t = _moments(t)
        _, effect, se2, df = welch(c, t)
        p = 2.0 * sps.t.sf(np.abs(effect) / np.sqrt(se2), df)
        # No spread in either arm: the difference is exact, and so is the test.
        p = np.where(se2 == 0, np.where(effect == 0, 1.0, 0.0), p)
        delta = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(POWER, df)) * np.sqrt(se2)
        delta = np.where(se2 == 0, 0.0, delta)
        mde_pct = np.where(on_log, np.expm1(delta),
                           delta / np.abs(mean_c + np.squeeze(centre, -1))) * 100.0
        pooled = ((n_c - 1) * var_c + (n_t - 1) * var_t) / (n_c + n_t - 2)
        correction = 1.0 - 3.0 / (4.0 * (n_c + n_t) - 9.0)
        hedges_g = np.where(pooled > 0, effect / np.sqrt(pooled) * correction, np.nan)
    n_left_out = (np.sum(flags[f"left_out_{CONTROL}"], axis=-1)
                  + np.sum(flags[f"left_out_{TREATMENT}"], axis=-1))
    return {"p_welch": p, "effect": effect, "mde_pct": mde_pct, "hedges_g": hedges_g,
            "n_left_out": n_left_out, **flags}


def welch(control: np.ndarray, treatment: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray, np.ndarray]:
    """Welch's comparison along the last axis, ignoring NaN: (smaller arm's count, mean
    difference treatment - control, its squared standard error, Welch-Satterthwaite df)."""
    with quiet():
        n_c, mean_c, var_c = _moments(control)
        n_t, mean_t, var_t = _moments(treatment)
        se2 = var_c / n_c + var_t / n_t
        df = se2**2 / ((var_c / n_c) ** 2 / (n_c - 1) + (var_t / n_t) ** 2 / (n_t - 1))
    return np.minimum(n_c, n_t), mean_t - mean_c, se2, df


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjustment of a 1-D array of p-values; NaN entries are not tests."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def verdicts(p_holm: np.ndarray, effect: np.ndarray, mde_pct: np.ndarray,
             direction: np.ndarray | str, threshold_pct: float) -> np.ndarray:
    """better / worse (different for undirected metrics) when the adjusted test is
    significant; else `no significant difference` if the design could have seen a change
    of threshold_pct, else `inconclusive`."""
    with quiet():
        significant = np.asarray(p_holm) < ALPHA
        up = np.asarray(effect) > 0
        good = np.where(np.asarray(direction) == "higher", up, ~up)
        label = np.where(np.asarray(direction) == "neither", "different",
                         np.where(good, "better", "worse"))
        calm = np.where(np.asarray(mde_pct) <= threshold_pct, "no significant difference",
                        "inconclusive")
    return np.where(significant, label, calm)


def bootstrap_medians(values: np.ndarray, resamples: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Medians of `resamples` bootstrap resamples of `values`, drawn exactly and without
    materializing a single resample: the k-th smallest of n draws from the sorted sample is
    sorted[floor(n U_(k))], and the uniform order statistic U_(k) ~ Beta(k, n - k + 1).
    Cost O(n log n + resamples) instead of O(n * resamples)."""
    ordered = np.sort(values)
    n = len(ordered)
    half = n // 2
    if n % 2:
        return ordered[_order_index(rng.beta(half + 1, half + 1, resamples), n)]
    low = rng.beta(half, half + 1, resamples)
    high = low + (1.0 - low) * rng.beta(1, n - half, resamples)  # next of the n uniforms
    return (ordered[_order_index(low, n)] + ordered[_order_index(high, n)]) / 2.0


def _order_index(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


def median_diff_ci(control: np.ndarray, treatment: np.ndarray,
                   rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile-bootstrap CI of (median_t - median_c) / median_c in percent."""
    if len(control) == 0 or len(treatment) == 0:
        return math.nan, math.nan
    with quiet():
        med_c = bootstrap_medians(control, BOOTSTRAP_RESAMPLES, rng)
        med_t = bootstrap_medians(treatment, BOOTSTRAP_RESAMPLES, rng)
        rel = (med_t - med_c) / np.abs(med_c) * 100.0
        low, high = np.nanpercentile(rel, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def mann_whitney(control: np.ndarray, treatment: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U p-value and Cliff's delta (P(t > c) - P(t < c))."""
    n_c, n_t = len(control), len(treatment)
    if not n_c or not n_t:
        return math.nan, math.nan
    if max(n_c, n_t) <= SCIPY_RANK_TEST_MAX:
        with quiet():
            result = sps.mannwhitneyu(treatment, control, alternative="two-sided")
        u_t, p = float(result.statistic), float(result.pvalue)
    else:  # scipy's normal approximation, with tie and continuity corrections
        both = np.sort(np.concatenate([control, treatment]))
        n = n_c + n_t
        u_t = _rank_sum(both, treatment) - n_t * (n_t + 1) / 2
        spread = np.sqrt(n_c * n_t / 12 * ((n + 1) - _tie_term(both) / (n * (n - 1))))
        with quiet():  # all values tied: no spread, z = -inf and p = 1, as in scipy
            z = (max(u_t, n_c * n_t - u_t) - n_c * n_t / 2 - 0.5) / spread
        p = min(1.0, 2.0 * float(sps.norm.sf(z)))
    return p, 2.0 * u_t / (n_c * n_t) - 1.0


def paired_wilcoxon(control: np.ndarray, treatment: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p on per-run pairs (value i of each arm from run i):
    zero differences dropped, ties given mid-ranks. Up to WILCOXON_EXACT_MAX pairs the p is
    exact over the observed ranks (see _signed_rank_exact_p; scipy would run a 2^n-sample
    permutation test when there are ties or zeros, about a second per call); above, the
    normal approximation with tie correction, as scipy's. NaN with fewer than two pairs or a
    missing value."""
    if len(control) < 2:
        return math.nan
    diffs = treatment - control
    if np.any(np.isnan(diffs)):
        return math.nan
    if not np.any(diffs):
        return 1.0
    pairs = len(diffs)
    diffs = diffs[diffs != 0]
    sizes = np.sort(np.abs(diffs))
    plus = _rank_sum(sizes, np.abs(diffs[diffs > 0]))
    if pairs <= WILCOXON_EXACT_MAX:
        return _signed_rank_exact_p(sizes, plus)
    n = len(diffs)
    spread = math.sqrt((n * (n + 1) * (2 * n + 1) - _tie_term(sizes) / 2) / 24)
    return float(2.0 * sps.norm.sf(abs(plus - n * (n + 1) / 4) / spread))


def _signed_rank_exact_p(sizes: np.ndarray, plus: float) -> float:
    """Exact two-sided p of the signed-rank sum `plus` of the sorted nonzero |differences|
    `sizes`: under the null each difference is positive or negative with probability 1/2
    independently, so the null distribution of the sum of the positive ranks is built by
    dynamic programming over the ranks. Mid-ranks are halves, so it runs on doubled ranks,
    which are integers; counts are int64 (at most 2^WILCOXON_EXACT_MAX)."""
    first = np.searchsorted(sizes, sizes, "left")
    doubled = first + np.searchsorted(sizes, sizes, "right") + 1  # 2 x mid-rank
    counts = np.zeros(int(doubled.sum()) + 1, dtype=np.int64)
    counts[0] = 1
    for rank in doubled:
        counts[rank:] += counts[:-rank].copy()
    observed = round(2 * plus)
    tail = min(counts[:observed + 1].sum(), counts[observed:].sum())
    return min(1.0, 2.0 * float(tail) / float(counts.sum()))


def _rank_sum(ordered: np.ndarray, values: np.ndarray) -> float:
    """Sum of the average ranks (1-based, ties averaged) of `values` within `ordered`."""
    keys = np.sort(values)  # sorted keys make each binary search start where the last ended
    first = np.searchsorted(ordered, keys, "left")
    if not _has_ties(ordered):  # every value is alone: its rank is its position + 1
        return float(first.sum() + len(values))
    last = np.searchsorted(ordered, keys, "right")
    return float((first.sum() + last.sum() + len(values)) / 2)


def _tie_term(ordered: np.ndarray) -> float:
    """Sum of t^3 - t over the groups of equal values of a sorted array."""
    if not _has_ties(ordered):
        return 0.0
    sizes = np.diff(np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True]))
    return float(np.sum(sizes.astype(float) ** 3 - sizes))


def _has_ties(ordered: np.ndarray) -> bool:
    return bool(np.any(ordered[1:] == ordered[:-1]))


def relative_pct(control: float, treatment: float) -> float:
    """(treatment - control) / control x 100, signed as arithmetic; NaN if undefined."""
    if not (math.isfinite(control) and math.isfinite(treatment)) or control == 0:
        return math.nan
    return (treatment - control) / abs(control) * 100.0


def sample_summary(values: np.ndarray) -> dict[str, float]:
    """n, mean, sample sd, CV, median, p5, p95, min, max and the t-based 95% CI of the mean."""
    n = len(values)
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    half_width = sps.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {"n": n, "mean": mean, "sd": sd,
            "cv_pct": sd / abs(mean) * 100.0 if mean else math.nan,
            "median": float(median), "p5": float(p5), "p95": float(p95),
            "min": float(values.min()), "max": float(values.max()),
            "ci_low": mean - half_width, "ci_high": mean + half_width}
