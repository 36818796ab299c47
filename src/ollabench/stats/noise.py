"""Know the noise: per primary comparison, how noisy one run is on this machine, how much of
it pairing within a run removes, its structure (drift, regimes, autocorrelation, position in
the run) and the runs per arm a decision at the practical threshold needs at this noise
(data/processed/noise.csv; docs/statistics.md, "The noise of this machine").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from ollabench.stats.core import on_test_scale, quiet
from ollabench.stats.metrics import ALPHA
from ollabench.stats.trust import lag1_autocorrelation

NOISE_COLUMNS = ("stage", "metric", "runs", "run_noise_pct", "paired_noise_pct",
                 "pairing_removes_pct", "drift_pct", "bimodality", "two_levels", "lag1_autocorr",
                 "position_pct", "runs_needed")
BIMODAL = 5 / 9  # Sarle's bimodality coefficient of a uniform distribution: above, two modes
MODES_RUNS = 16  # fewer runs make the coefficient too noisy to call two levels
POWER = 0.80  # of the runs_needed estimate: equivalence declared with this chance at no change


def _pct(log_value: float) -> float:
    return float(np.expm1(log_value) * 100.0)


def bimodality(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient (skew^2 + 1) / (excess kurtosis + 3 (n-1)^2 /
    ((n-2)(n-3))) of the known values; NaN under 4 values."""
    known = values[np.isfinite(values)]
    n = len(known)
    if n < 4 or np.ptp(known) == 0:
        return math.nan
    skew = sps.skew(known, bias=False)
    kurtosis = sps.kurtosis(known, bias=False)
    return float((skew**2 + 1) / (kurtosis + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def runs_needed(paired_sd_log: float, threshold_pct: float) -> float:
    """Runs per arm for the equivalence test (one-sided ALPHA each side) to find no change
    within +-threshold_pct with POWER when there is none, at a per-run paired spread
    paired_sd_log (one fixed look: the sequential rule needs a little more)."""
    if not math.isfinite(paired_sd_log) or paired_sd_log <= 0:
        return math.nan
    z = sps.norm.isf(ALPHA) + sps.norm.isf((1 - POWER) / 2)
    return float(math.ceil((z * paired_sd_log / math.log1p(threshold_pct / 100)) ** 2))


def noise_row(control: np.ndarray, treatment: np.ndarray, control_first: np.ndarray | None,
              threshold_pct: float) -> dict[str, float]:
    """The noise figures of one comparison's per-run values (index i = run i + 1)."""
    c, t, on_log = on_test_scale(control, treatment)
    if not bool(on_log):
        return {}
    with quiet():
        run_sd = float(np.sqrt(np.nanmean([np.nanvar(c, ddof=1), np.nanvar(t, ddof=1)])))
        diffs = t - c
        paired_sd = float(np.nanstd(diffs, ddof=1) / math.sqrt(2))  # per arm and run
        both = np.nanmean(np.stack([c, t]), axis=0)
        runs = np.arange(len(both), dtype=float)
        known = np.isfinite(both)
        slope = (np.polyfit(runs[known], both[known], 1)[0] * (len(both) - 1)
                 if known.sum() >= 3 else math.nan)
        position = math.nan
        if control_first is not None:
            first = np.where(control_first, c, t) - np.where(control_first, t, c)
            position = float(np.nanmean(first))
    autocorr, _ = lag1_autocorrelation(both)
    return {"runs": int(known.sum()), "run_noise_pct": _pct(run_sd),
            "paired_noise_pct": _pct(paired_sd),
            "pairing_removes_pct": (1 - paired_sd**2 / run_sd**2) * 100 if run_sd > 0 else math.nan,
            "drift_pct": _pct(slope), "bimodality": bimodality(both),
            "two_levels": bool(known.sum() >= MODES_RUNS and bimodality(both) > BIMODAL),
            "lag1_autocorr": float(autocorr), "position_pct": _pct(position),
            "runs_needed": runs_needed(paired_sd, threshold_pct)}


def noise_table(series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                control_first: Callable[[str], np.ndarray | None],
                threshold_pct: float) -> pd.DataFrame:
    """noise.csv: one row per primary comparison (decisions.primary_series); control_first:
    a stage's per-run order (decisions.control_first)."""
    rows = []
    for (stage, metric), (control, treatment) in series.items():
        first = control_first(stage)
        order = None if first is None else first[:len(control)]
        found = noise_row(control, treatment, order, threshold_pct)
        if found:
            rows.append({"stage": stage, "metric": metric, **found})
    return pd.DataFrame(rows, columns=list(NOISE_COLUMNS))
