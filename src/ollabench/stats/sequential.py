"""Sequential verdicts: a group-sequential confidence interval of each primary ratio,
looked at after every few ABBA blocks, and the four outcomes it supports.

Looking after every block and stopping when an interval excludes 1 would find differences
that are not there; O'Brien-Fleming-type alpha spending (Lan-DeMets) spends the error rate
over the looks, so that the chance of any false better/worse over all looks stays at the
level asked. numpy and scipy only; docs/statistics.md ("Sequential verdicts") explains why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as sps

from ollabench.stats.core import on_test_scale, outlier_flags, quiet, welch
from ollabench.stats.metrics import ALPHA
from ollabench.stats.trust import Checks, check, lag1_autocorrelation, unit_differences

BETTER, WORSE, EQUIVALENT = "better", "worse", "equivalent"
UNDECIDED, INCONCLUSIVE = "undecided", "inconclusive"  # still running / the budget ended
UNTRUSTWORTHY = "untrustworthy"  # the run's own checks overrule the interval (stats/trust.py)
GRID_POINTS = 601  # quadrature points of the boundary recursion
FAR_Z = 40.0
# Blocks before the paired estimator takes over: fewer leave too few degrees of freedom.
MIN_PAIRED_BLOCKS = 4
CALIBRATION_PATHS = 200_000
# The simulation holds CALIBRATION_PATHS x blocks values (about 160 MiB an array at 100
# blocks): beyond it the t statistic has so many degrees of freedom that it is the z
# statistic that boundaries() assumes, and a million-record fixed run stays affordable.
MAX_CALIBRATED_BLOCKS = 100
CALIBRATION_SEED = 11  # a boundary that no finite sample reaches (nothing spent at this look)


def spent_alpha(alpha: float, fraction: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending function, two-sided (alpha/2 per side):
    the error spent by information fraction t, 4 - 4 Phi(z_{1-alpha/4} / sqrt(t)); all of
    alpha at t >= 1."""
    if fraction >= 1.0:
        return alpha
    if fraction <= 0.0:
        return 0.0
    return float(4.0 * sps.norm.sf(sps.norm.isf(alpha / 4) / math.sqrt(fraction)))


@lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """Two-sided z boundaries c_k at information fractions t_1 < ... < t_K (each boundary
    depends only on the looks up to it): P(|Z_j| < c_j for j < k, |Z_k| >= c_k) under no
    change equals the alpha spent between t_{k-1} and t_k. Exact recursion (Armitage,
    McPherson and Rowe) for the score S_k = Z_k sqrt(t_k), a Brownian motion in t,
    integrated on a grid over the continuation region."""
    out: list[float] = []
    grid = mass = None  # the continuation region's sub-density of S, times the weights
    previous_t = previous_spent = 0.0
    for t in fractions:
        if t <= previous_t:
            raise ValueError(f"information fractions must increase, got {fractions}")
        spend = spent_alpha(alpha, t) - previous_spent
        sd = math.sqrt(t - previous_t)

        def crossing(b: float, sd: float = sd, grid: np.ndarray | None = grid,
                     mass: np.ndarray | None = mass) -> float:
            if grid is None or mass is None:
                return float(2.0 * sps.norm.sf(b / sd))
            return float(np.sum(mass * (sps.norm.sf((b - grid) / sd)
                                        + sps.norm.cdf((-b - grid) / sd))))

        far = FAR_Z * math.sqrt(t)
        if spend <= 0.0 or crossing(far) >= spend:
            b = far
        else:
            b = optimize.brentq(lambda b, spend=spend: crossing(b) - spend, 0.0, far,
                              xtol=1e-10)
        out.append(b / math.sqrt(t))
        half = min(b, 12.0 * math.sqrt(t))  # beyond 12 sd nothing is left to integrate
        new_grid = np.linspace(-half, half, GRID_POINTS)
        weights = np.full(GRID_POINTS, new_grid[1] - new_grid[0])
        weights[[0, -1]] /= 2.0
        if grid is None or mass is None:
            density = sps.norm.pdf(new_grid / sd) / sd
        else:
            density = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / sd) @ mass / sd
        grid, mass = new_grid, density * weights
        previous_t, previous_spent = t, previous_spent + spend
    return tuple(out)


def nominal_alpha(z_boundary: float) -> float:
    """The two-sided level of one look whose boundary is z_boundary."""
    return float(2.0 * sps.norm.sf(z_boundary))


@dataclass(frozen=True)
class Estimate:
    """log(treatment / control) per experiment (the leading axes) with its standard error
    and degrees of freedom; NaN where the values cannot say."""

    log_ratio: np.ndarray
    se: np.ndarray
    df: np.ndarray
    paired: np.ndarray


def test_scale(control: np.ndarray, treatment: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both arms on the verdict test's scale (core.on_test_scale) with core's left-out
    outliers set to NaN: what the interval and the trust checks read."""
    c, t, on_log = on_test_scale(control, treatment)
    flags = outlier_flags(control, treatment)
    return (np.where(flags["left_out_control"], np.nan, c),
            np.where(flags["left_out_treatment"], np.nan, t), on_log)


def estimate(control: np.ndarray, treatment: np.ndarray, block_runs: int) -> Estimate:
    """The log ratio from per-run values along the last axis, aligned by run (index i =
    run i + 1; NaN missing).

    Welch on the logs (core.welch, core's left-out outliers removed) until the schedule has
    MIN_PAIRED_BLOCKS blocks of block_runs runs (ABBA: 2; 0 = no pairing); from then on the
    mean of the per-block differences of mean logs, which cancels drift slower than a block.
    The choice follows the schedule, never the data: taking whichever interval is narrower
    would make them too narrow (docs/statistics.md). NaN with fewer than two values per
    arm, or with a zero or negative value (no log scale)."""
    return _estimate(*test_scale(control, treatment), block_runs)


def paired_units(block_runs: int, runs: int) -> int:
    """Runs per block of the paired interval at this many runs per arm, once the schedule
    has MIN_PAIRED_BLOCKS blocks; 0 before (Welch on the runs)."""
    return block_runs if block_runs >= 1 and runs >= MIN_PAIRED_BLOCKS * block_runs else 0


def _estimate(c: np.ndarray, t: np.ndarray, on_log: np.ndarray, block_runs: int) -> Estimate:
    n_min, effect, se2, df = welch(c, t)
    known = on_log & (n_min >= 2) & np.isfinite(se2)
    se = np.sqrt(se2)
    with quiet():
        found = Estimate(np.where(known, effect, np.nan), np.where(known, se, np.nan),
                         df, np.zeros(np.shape(effect), dtype=bool))
        if not paired_units(block_runs, c.shape[-1]):
            return found
        diffs = unit_differences(c, t, block_runs)
        count = np.sum(np.isfinite(diffs), axis=-1)
        pair_effect = np.nanmean(diffs, axis=-1)
        pair_se = np.nanstd(diffs, axis=-1, ddof=1) / np.sqrt(count)
        pair_df = count - 1.0
    use = known & (count >= MIN_PAIRED_BLOCKS)
    return Estimate(np.where(use, pair_effect, found.log_ratio),
                    np.where(use, pair_se, found.se), np.where(use, pair_df, df), use)


def block_autocorrelation(control: np.ndarray, treatment: np.ndarray,
                          block_runs: int) -> float:
    """Lag-1 autocorrelation of the per-block log ratios of one comparison (per-run ones
    without blocks), the units the paired interval treats as independent: primary.csv's
    `lag1_autocorr`. NaN with fewer than trust.MIN_UNITS units or off the log scale."""
    c, t, on_log = test_scale(control, treatment)
    value, _ = lag1_autocorrelation(unit_differences(c, t, block_runs))
    return float(value) if bool(on_log) else math.nan


@dataclass(frozen=True)
class Design:
    """When to look and how strict to be: looks at min_runs per arm, then every
    look_every_runs, up to max_runs (information fraction = runs / max_runs); alpha is
    family-wise over `comparisons` primary comparisons (Bonferroni)."""

    min_runs: int
    max_runs: int
    look_every_runs: int
    block_runs: int
    threshold_pct: float
    comparisons: int
    alpha: float = ALPHA
    # per comparison, the error of equivalent (0: the better/worse interval decides it)
    equivalence_alpha: float = ALPHA

    def looks(self, available_runs: int, final: bool) -> tuple[list[int], tuple[float, ...]]:
        """Runs per arm at each look reached with available_runs, and each look's nominal
        two-sided level. A final look before max_runs (a time budget ran out) spends all
        that is left: its information fraction counts as 1."""
        points = list(range(self.min_runs, self.max_runs + 1, self.look_every_runs))
        if points[-1] != self.max_runs:
            points.append(self.max_runs)
        reached = [n for n in points if n <= available_runs]
        if final and available_runs >= 2 and (not reached or reached[-1] < available_runs):
            reached.append(available_runs)
        fractions = [n / self.max_runs for n in reached]
        if final and fractions:
            fractions[-1] = 1.0
        alpha = self.alpha / self.comparisons
        if self.calibrated(reached):
            blocks = tuple(n // self.block_runs for n in reached)
            return reached, paired_levels(blocks, tuple(fractions), alpha)
        return reached, tuple(nominal_alpha(z) for z in boundaries(tuple(fractions), alpha))

    def calibrated(self, reached: list[int]) -> bool:
        """Every look reached pairs by blocks (the first has MIN_PAIRED_BLOCKS of them) and
        none has more blocks than the t calibration simulates (MAX_CALIBRATED_BLOCKS)."""
        block = self.block_runs
        return bool(block and reached and reached[0] >= MIN_PAIRED_BLOCKS * block
                    and reached[-1] <= MAX_CALIBRATED_BLOCKS * block)

    def equivalence(self, reached: list[int], levels: tuple[float, ...],
                    final: bool) -> tuple[float, ...]:
        """Each look's one-sided TOST level: with paired looks, its own error
        (equivalence_alpha per comparison, Pocock-type spending over runs / max_runs);
        otherwise (Welch looks, or past the calibrated blocks) half the look's two-sided
        level, the interval the verdict reads."""
        if not self.equivalence_alpha or not self.calibrated(reached):
            return tuple(level / 2 for level in levels)
        fractions = [n / self.max_runs for n in reached]
        if final and fractions:
            fractions[-1] = 1.0
        return equivalence_levels(tuple(n // self.block_runs for n in reached),
                                  tuple(fractions), self.equivalence_alpha)


@lru_cache(maxsize=64)
def paired_levels(blocks: tuple[int, ...], fractions: tuple[float, ...],
                  alpha: float) -> tuple[float, ...]:
    """Nominal two-sided levels of the paired t intervals at looks after blocks_1 < ...
    blocks, calibrated so that the error spent by each look is exactly the spending
    function's. The boundaries of boundaries() assume a known variance; with a t statistic
    of a few degrees of freedom re-estimated at every look, their t quantiles let about 10%
    more errors through over 17 looks. Under no change, the sequence of paired t statistics
    does not depend on the spread, so CALIBRATION_PATHS seeded simulated sequences give
    each look's boundary (a pure function of its arguments)."""
    return calibrated_levels(blocks, tuple(spent_alpha(alpha, f) for f in fractions), True)


def pocock_spent(alpha: float, fraction: float) -> float:
    """Lan-DeMets Pocock-type spending function alpha ln(1 + (e - 1) t): spends early."""
    return alpha * math.log1p((math.e - 1.0) * min(fraction, 1.0)) if fraction > 0 else 0.0


@lru_cache(maxsize=64)
def equivalence_levels(blocks: tuple[int, ...], fractions: tuple[float, ...],
                       alpha: float) -> tuple[float, ...]:
    """One-sided levels of each paired look's two one-sided tests (TOST): the chance of
    ever declaring equivalent when the true change sits on the threshold is at most alpha,
    spent over the looks with the Pocock-type function (docs/statistics.md, "Equivalence
    and its own error"), calibrated like paired_levels."""
    return calibrated_levels(blocks, tuple(pocock_spent(alpha, f) for f in fractions),
                             False)


@lru_cache(maxsize=64)
def calibrated_levels(blocks: tuple[int, ...], spent: tuple[float, ...],
                      two_sided: bool) -> tuple[float, ...]:
    """Nominal levels of paired t statistics at looks after blocks_1 < ... blocks such that
    the share of null paths (standard normal block differences, CALIBRATION_PATHS seeded)
    that first cross at look k is spent_k - spent_(k-1): two-sided on |t|, or one-sided."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    draws = rng.standard_normal((CALIBRATION_PATHS, blocks[-1]))
    sums, squares = np.cumsum(draws, axis=1), np.cumsum(draws**2, axis=1)
    alive = np.ones(CALIBRATION_PATHS, dtype=bool)
    levels: list[float] = []
    previous_spent = 0.0
    for b, spent_now in zip(blocks, spent, strict=True):
        mean = sums[:, b - 1] / b
        sd = np.sqrt(np.maximum(squares[:, b - 1] - b * mean**2, 0.0) / (b - 1))
        statistic = (np.abs(mean) if two_sided else mean) / (sd / math.sqrt(b))
        crossing = round((spent_now - previous_spent) * CALIBRATION_PATHS)
        candidates = np.sort(statistic[alive])[::-1]
        if crossing < 1 or len(candidates) <= crossing:
            boundary = math.inf
        else:  # halfway between the last path that crosses and the first that does not
            boundary = float(candidates[crossing - 1] + candidates[crossing]) / 2.0
        alive &= statistic < boundary
        levels.append(float((2.0 if two_sided else 1.0) * sps.t.sf(boundary, b - 1)))
        previous_spent = spent_now
    return tuple(levels)


@dataclass(frozen=True)
class Looks:
    """One comparison's looks (last axis) for each experiment (leading axes)."""

    runs: np.ndarray
    level: np.ndarray  # confidence of each look's interval (the TOST's when equivalent)
    change_pct: np.ndarray
    low_pct: np.ndarray
    high_pct: np.ndarray
    outcome: np.ndarray
    paired: np.ndarray
    cause: np.ndarray  # the trust check that held the look back ('' for none: trust.CAUSES)

    def decided_at(self) -> np.ndarray:
        """Index of the look that decided (the first not undecided), -1 for none yet."""
        decided = self.outcome != UNDECIDED
        if decided.shape[-1] == 0:  # no look yet (fewer runs than the first look needs)
            return np.full(decided.shape[:-1], -1)
        return np.where(decided.any(axis=-1), np.argmax(decided, axis=-1), -1)


def judge(found: Estimate, level_alpha: float, direction: str, threshold_pct: float,
          final: bool, checks: Checks, equivalence_alpha: float) -> dict[str, np.ndarray]:
    """The outcome of one look. Equivalent when the whole interval lies within
    +-threshold_pct (two one-sided tests on the log scale, each at equivalence_alpha, the
    look's one-sided TOST level; a significant change smaller than the threshold is
    equivalent too); better or worse
    when it excludes no change on the metric's good or bad side; else undecided, or
    inconclusive at the final look. level_alpha is this look's nominal two-sided level.
    A look whose trust checks fail decides nothing: undecided, or untrustworthy at the
    final look, whatever the interval says."""
    with quiet():
        half = np.where(found.se > 0, sps.t.isf(level_alpha / 2, found.df) * found.se, 0.0)
        low = np.expm1(found.log_ratio - half) * 100.0
        high = np.expm1(found.log_ratio + half) * 100.0
        up = low > 0
        label = np.where(direction == "neither", "different",
                         np.where(up == (direction == "higher"), BETTER, WORSE))
        tost = np.where(found.se > 0,
                        sps.t.isf(equivalence_alpha, found.df) * found.se, 0.0)
        tost_low = np.expm1(found.log_ratio - tost) * 100.0
        tost_high = np.expm1(found.log_ratio + tost) * 100.0
        equivalent = (-threshold_pct < tost_low) & (tost_high < threshold_pct)
        changed = ~equivalent & (up | (high < 0))
        cause = checks.causes(changed)
        outcome = np.where(cause != "", UNTRUSTWORTHY if final else UNDECIDED,
                           np.where(equivalent, EQUIVALENT,
                                    np.where(changed, label,
                                             INCONCLUSIVE if final else UNDECIDED)))
    # An equivalent verdict shows the interval that decided it: the TOST's, at 1 - 2 x its
    # one-sided level (early looks spend little of the two-sided level: its interval is wide).
    shown = outcome == EQUIVALENT
    return {"change_pct": np.expm1(found.log_ratio) * 100.0,
            "low_pct": np.where(shown, tost_low, low), "high_pct": np.where(shown, tost_high, high),
            "level": np.where(shown, 1.0 - 2.0 * equivalence_alpha, 1.0 - level_alpha),
            "outcome": outcome, "cause": cause}


def _logs(pair: tuple[np.ndarray, np.ndarray], runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Both arms' first runs on the log scale, NaN where not positive."""
    with quiet():
        control, treatment = (np.log(np.where(arm[..., :runs] > 0, arm[..., :runs], np.nan))
                              for arm in pair)
    return control, treatment


def sequential_looks(control: np.ndarray, treatment: np.ndarray, direction: str,
                     design: Design, final: bool,
                     control_first: np.ndarray | None = None,
                     inside: tuple[np.ndarray, np.ndarray] | None = None) -> Looks:
    """Every look the runs so far allow (the last axis holds runs 1, 2, ...): a pure
    function of the values, so a resumed experiment reaches the same decisions.
    control_first: per run, whether control ran first (the records' order); None reads
    ABBA's alternation when the blocks are ABBA, else skips the order check. inside: both
    arms' engine-own part of the values (trust's outside check), None where unknown."""
    runs, levels = design.looks(control.shape[-1], final)
    tost_levels = design.equivalence(runs, levels, final)
    if control_first is None and design.block_runs == 2:
        control_first = np.arange(control.shape[-1]) % 2 == 0
    columns: dict[str, list[np.ndarray]] = {}
    for k, (n, level_alpha, tost_alpha) in enumerate(zip(runs, levels, tost_levels,
                                                          strict=True)):
        c, t, on_log = test_scale(control[..., :n], treatment[..., :n])
        found = _estimate(c, t, on_log, design.block_runs)
        inner = None if inside is None or not np.all(on_log) else _logs(inside, n)
        checks = check(c, t, paired_units(design.block_runs, n), control_first, inner)
        for key, value in judge(found, level_alpha, direction, design.threshold_pct,
                                final and k == len(runs) - 1, checks, tost_alpha).items():
            columns.setdefault(key, []).append(np.broadcast_to(value, found.se.shape))
        columns.setdefault("paired", []).append(found.paired)
    lead = control.shape[:-1]
    stacked = {key: np.stack(values, axis=-1) if values else np.empty((*lead, 0))
               for key, values in columns.items()}
    return Looks(runs=np.array(runs),
                 **{key: stacked.get(key, np.empty((*lead, 0)))
                    for key in ("level", "change_pct", "low_pct", "high_pct", "outcome", "paired",
                                "cause")})
