"""Whether a primary comparison's interval can be trusted: the run's own checks of what the
interval assumes. A verdict is never louder than these checks: a comparison that fails one
is not decided (the budget goes on), and at the last look it is `untrustworthy`, with the
cause and the remedy (docs/statistics.md, "When the run's checks overrule the interval").

The checks, on the units the interval treats as independent (per-block differences of mean
logs once paired, per-run differences before):
- autocorrelation: lag-1 autocorrelation of the units above 2 / sqrt(units): drift or a
  wandering machine faster than a block, so the interval is too narrow;
- position: the arms' difference depends on which arm ran first in a run (significant at
  POSITION_P) while the runs are unbalanced between the two orders, so the estimate carries
  the position effect (ABBA's complete blocks balance it and cancel it exactly);
- outside: a better/worse on a time whose engine-own part (the time less what came before
  the first token outside the engine's load and prompt timings, where the records have
  them) changed by less than half as much: the change lies outside the engine (a stall on
  the connection, the client), the mark of an artifact that hits one arm's calls; the
  values alone cannot tell it from a real change;
- minority: a better/worse whose median unit difference is less than half the mean
  difference (or on the other side): the change comes from a minority of the runs, the mark
  of an artifact (stalls, a server hiccup) that hits one arm's calls.
numpy and scipy only, vectorized over experiments for the simulation benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ollabench.stats.core import quiet, welch

AUTOCORRELATION, POSITION = "autocorrelation", "position"
OUTSIDE, MINORITY = "outside", "minority"
POSITION_P = 0.01  # two-sided level of the order-effect test
MIN_UNITS = 4  # fewer units say nothing about their autocorrelation
# cause -> (what the check saw, what to do about it); the report and primary.csv use both
CAUSES = {
    AUTOCORRELATION: ("successive blocks' differences follow each other (lag-1 "
                      "autocorrelation beyond 2 / sqrt(blocks)): the machine drifted or "
                      "wandered faster than a block, so the interval is too narrow",
                      "run more blocks (run.stopping.max_runs), quiet the machine, or check "
                      "for a periodic load (ollabench doctor)"),
    POSITION: ("the difference depends on which arm ran first in a run, and the runs are "
               "unbalanced between the two orders",
               "use run.order abba (it balances the orders in every block) or add warm-up "
               "calls (run.warmup)"),
    OUTSIDE: ("the engine's own timings do not show the change: it lies in the time "
              "before the first token that the engine's load and prompt timings leave out, "
              "in the connection or the client, such as stalls that hit one arm's calls",
              "look at the calls' ttft_ms - load_ms - prompt_eval_ms and the server's "
              "connection handling, then rerun; a treatment that changes the work before "
              "the engine (a template) is not an artifact"),
    MINORITY: ("the change comes from a minority of the runs (the median difference is "
               "under half the mean): an artifact such as stalls that hit one arm's calls",
               "look at the flagged calls and the server, then rerun with a randomised "
               "order (run.order random, another run.order_seed)"),
}


def cause_note(cause: str) -> str:
    """What a failed check saw and the remedy, in words ('' for no cause)."""
    if not cause:
        return ""
    what, remedy = CAUSES[cause]
    return f"{what}; remedy: {remedy}"


def unit_differences(c: np.ndarray, t: np.ndarray, units_of: int) -> np.ndarray:
    """Differences treatment - control of the mean log per unit of units_of runs (1: per
    run), along the last axis; NaN where a unit lacks either arm."""
    size = max(units_of, 1)
    units = c.shape[-1] // size
    shape = (*c.shape[:-1], units, size)
    with quiet():
        return (np.nanmean(t[..., :units * size].reshape(shape), axis=-1)
                - np.nanmean(c[..., :units * size].reshape(shape), axis=-1))


def lag1_autocorrelation(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lag-1 autocorrelation of the known units along the last axis (missing ones skipped),
    with their count; NaN with fewer than MIN_UNITS or no spread."""
    known = np.isfinite(diffs)
    count = known.sum(axis=-1)
    with quiet():
        centred = np.where(known, diffs - np.nanmean(diffs, axis=-1, keepdims=True), 0.0)
        # successive known units: compact each row's known values to the front
        order = np.argsort(~known, axis=-1, kind="stable")
        packed = np.take_along_axis(centred, order, axis=-1)
        lagged = np.sum(packed[..., 1:] * packed[..., :-1], axis=-1)
        value = lagged / np.sum(centred**2, axis=-1)
    return np.where(count >= MIN_UNITS, value, np.nan), count


@dataclass(frozen=True)
class Checks:
    """The checks of one look, per experiment (the leading axes)."""

    autocorr: np.ndarray  # lag-1 autocorrelation of the units
    units: np.ndarray  # how many units it was computed from
    order_p: np.ndarray  # p of the order effect where the orders are unbalanced, else NaN
    median_share: np.ndarray  # median unit difference / mean unit difference
    inside_share: np.ndarray  # the engine-own part's mean unit difference / the whole's

    def causes(self, decided_change: np.ndarray) -> np.ndarray:
        """The first failed check per experiment ('' for none). decided_change: the
        interval excludes no change (better/worse), where the minority check applies."""
        with quiet():
            drifting = self.autocorr > 2.0 / np.sqrt(self.units)
            position = self.order_p < POSITION_P
            outside = decided_change & (self.inside_share < 0.5)
            minority = decided_change & ~(self.median_share >= 0.5)
        return np.where(drifting, AUTOCORRELATION, np.where(position, POSITION, np.where(
            outside, OUTSIDE, np.where(minority, MINORITY, ""))))


def check(c: np.ndarray, t: np.ndarray, units_of: int,
          control_first: np.ndarray | None,
          inside: tuple[np.ndarray, np.ndarray] | None = None) -> Checks:
    """The checks of the values on the test scale (runs along the last axis), with units of
    units_of runs (the interval's pairing; 1 per run) and each run's order (True: control
    ran first; None: not known, no order check). inside: both arms' engine-own part of the
    same values on the same scale (None, or NaN where unknown: no outside check)."""
    diffs = unit_differences(c, t, units_of)
    autocorr, units = lag1_autocorrelation(diffs)
    with quiet():
        median_share = np.nanmedian(diffs, axis=-1) / np.nanmean(diffs, axis=-1)
        inside_share = np.full(np.shape(median_share), np.nan)
        if inside is not None:  # the same runs as the whole: the left-out ones left out
            known = np.isfinite(c) & np.isfinite(t)
            inner = unit_differences(*(np.where(known, arm, np.nan) for arm in inside),
                                     units_of)
            whole = np.where(np.isfinite(inner), diffs, np.nan)
            inside_share = np.nanmean(inner, axis=-1) / np.nanmean(whole, axis=-1)
    order_p = np.full(np.shape(autocorr), np.nan)
    if control_first is not None:
        runs = unit_differences(c, t, 1)
        first = np.broadcast_to(control_first[:runs.shape[-1]], runs.shape)
        counts = [np.sum(np.isfinite(runs) & side, axis=-1) for side in (first, ~first)]
        n_min, effect, se2, df = welch(np.where(first, runs, np.nan),
                                       np.where(first, np.nan, runs))
        with quiet():
            p = 2.0 * sps.t.sf(np.abs(effect) / np.sqrt(se2), df)
        order_p = np.where((counts[0] != counts[1]) & (n_min >= 2), p, np.nan)
    return Checks(autocorr, units, order_p, median_share, inside_share)
