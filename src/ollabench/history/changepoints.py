"""Change points of one series: where its level moved, found by `ruptures` (PELT) and kept
only when the per-run data on both sides says the move is real and large enough to matter.

A series is a sequence of points (one per revision), each holding the per-run values of that
revision. PELT proposes where the per-point medians (on the log scale) change level; each
proposal is then tested on the two segments it separates, and dropped unless the difference
is significant both on their per-run values and on their revisions' medians (Welch,
Bonferroni over the proposals), at least the practical threshold, and held by the revisions
next to it. Run-to-run noise, the A/A floor, therefore yields no change point.
docs/statistics.md explains the choice against E-Divisive.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ollabench.stats.core import MAD_TO_SD, median_diff_ci, quiet, verdict_test
from ollabench.stats.metrics import ALPHA, BOOTSTRAP_SEED

# A level must hold for at least this many revisions to count as one: a single slow revision
# is an outlier (or a flaky run), not a change of the code's speed.
MIN_SEGMENT_POINTS = 2
# PELT's penalty per change point, in units of the noise variance of the point medians times
# log(points): 2 sigma^2 log n is the BIC of a change in mean with known variance. PELT may
# propose too many; the test on per-run data removes the extra ones.
PENALTY_BIC_FACTOR = 2.0


@dataclass(frozen=True)
class Change:
    """A change of level before point `index` (the first point of the new level).

    The step is the relative change of the median of the per-run values of the segment after
    against the segment before (each bounded by the neighbouring change points), with its 95%
    bootstrap CI; p is the larger of the two Welch p-values on the test scale (per-run
    values, and revision medians)."""

    index: int
    start: int  # first point of the segment before
    end: int  # one past the last point of the segment after
    median_before: float
    median_after: float
    step_pct: float
    ci_low_pct: float
    ci_high_pct: float
    p_value: float
    runs_before: int
    runs_after: int


Proposer = Callable[[np.ndarray, int], list[int]]  # (point levels, min points) -> indices


def find_changes(samples: Sequence[np.ndarray], threshold_pct: float,
                 alpha: float = ALPHA, min_points: int = MIN_SEGMENT_POINTS,
                 proposer: Proposer | None = None) -> list[Change]:
    """Change points of a series of per-run samples (one array per point, in time order).
    `proposer` finds the candidates (PELT by default; benchmarks/changepoint_methods.py
    passes others)."""
    samples = [np.asarray(s, dtype=float)[~np.isnan(np.asarray(s, dtype=float))]
               for s in samples]
    if len(samples) < 2 * min_points or any(len(s) == 0 for s in samples):
        return []
    candidates = sorted((proposer or propose)(point_levels(samples), min_points))
    while candidates:
        tested = [_test(samples, candidates, i) for i in range(len(candidates))]
        cutoff = alpha / len(candidates)
        holds = [level_holds(samples, c, min_points) for c in tested]
        failing = [(not holds[i], c.p_value, -abs(c.step_pct), i)
                   for i, c in enumerate(tested)
                   if not (holds[i] and c.p_value < cutoff and abs(c.step_pct) >= threshold_pct)]
        if not failing:
            return [_with_ci(samples, change) for change in tested]
        # Drop the weakest proposal, then test the rest again with wider segments.
        candidates.pop(max(failing)[-1])
    return []


def level_holds(samples: Sequence[np.ndarray], change: Change, min_points: int) -> bool:
    """Whether the new level holds from the change on, and the old one up to it: each of the
    `min_points` points on either side of the change is at least half the step away from
    the other side's level. A single slow revision between normal ones makes a segment of
    two points whose pooled median moved, but whose second point did not: an outlier, not a
    change."""
    med_b, med_a = change.median_before, change.median_after
    half = (med_a - med_b) / 2
    after = [np.median(s) for s in samples[change.index:change.index + min_points]]
    before = [np.median(s) for s in samples[max(change.index - min_points, 0):change.index]]
    return bool(all((m - med_b) / half >= 1 for m in after)
                and all((med_a - m) / half >= 1 for m in before)) if half else False


def point_levels(samples: Sequence[np.ndarray]) -> np.ndarray:
    """Each point's median on the test scale (log when every value is positive)."""
    medians = np.array([np.median(s) for s in samples])
    with quiet():
        return np.log(medians) if np.all(medians > 0) else medians


def propose(levels: np.ndarray, min_points: int = MIN_SEGMENT_POINTS) -> list[int]:
    """PELT (l2 cost) on the point levels with a BIC penalty from a robust noise estimate:
    the indices of the first point of each new level."""
    import ruptures

    n = len(levels)
    if n < 2 * min_points:
        return []
    sigma = noise_sd(levels)
    if sigma == 0:  # no point-to-point noise: any level difference is a candidate
        sigma = max(float(np.ptp(levels)) * 1e-6, np.finfo(float).tiny)
    penalty = PENALTY_BIC_FACTOR * sigma**2 * math.log(n)
    algo = ruptures.Pelt(model="l2", min_size=min_points, jump=1).fit(levels.reshape(-1, 1))
    return [int(b) for b in algo.predict(pen=penalty)[:-1]]  # the last one is always n


def noise_sd(levels: np.ndarray) -> float:
    """Standard deviation of the point levels around their local level, from the median
    absolute successive difference: a few steps in the series barely move it."""
    diffs = np.diff(levels)
    if len(diffs) == 0:
        return 0.0
    return float(np.median(np.abs(diffs - np.median(diffs))) / MAD_TO_SD / math.sqrt(2))


def _sides(samples: Sequence[np.ndarray], candidates: list[int],
           i: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    start = candidates[i - 1] if i else 0
    end = candidates[i + 1] if i + 1 < len(candidates) else len(samples)
    cut = candidates[i]
    return start, end, np.concatenate(samples[start:cut]), np.concatenate(samples[cut:end])


def _test(samples: Sequence[np.ndarray], candidates: list[int], i: int) -> Change:
    """Both tests of one proposal: Welch on the per-run values of the two sides, and Welch on
    their revisions' medians. The second carries the revision-to-revision noise (another
    day, another boot) that pooled runs hide; a change must pass both."""
    start, end, before, after = _sides(samples, candidates, i)
    cut = candidates[i]
    medians = np.array([np.median(s) for s in samples[start:end]])
    p_runs = float(verdict_test(before, after)["p_welch"])
    p_revisions = float(verdict_test(medians[:cut - start], medians[cut - start:])["p_welch"])
    p = max(1.0 if math.isnan(q) else q for q in (p_runs, p_revisions))
    med_b, med_a = float(np.median(before)), float(np.median(after))
    with quiet():
        step = (med_a - med_b) / abs(med_b) * 100.0 if med_b else math.nan
    return Change(cut, start, end, med_b, med_a, step, math.nan, math.nan, p, len(before),
                  len(after))


def _with_ci(samples: Sequence[np.ndarray], change: Change) -> Change:
    before = np.concatenate(samples[change.start:change.index])
    after = np.concatenate(samples[change.index:change.end])
    low, high = median_diff_ci(before, after, np.random.default_rng(BOOTSTRAP_SEED))
    return Change(**{**change.__dict__, "ci_low_pct": low, "ci_high_pct": high})


def segment_levels(samples: Sequence[np.ndarray], changes: Sequence[Change]) -> list[float]:
    """The median of the pooled per-run values of each segment between change points, one
    per point (for plotting the levels)."""
    bounds = [0, *(c.index for c in changes), len(samples)]
    levels: list[float] = []
    for a, b in itertools.pairwise(bounds):
        pooled = np.concatenate(samples[a:b]) if b > a else np.array([])
        levels += [float(np.median(pooled)) if len(pooled) else math.nan] * (b - a)
    return levels
