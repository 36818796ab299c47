"""A verdict is never louder than the run's own checks: values built so that the interval
alone would decide, and the check that overrules it (stats/trust.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ollabench.stats.decisions import overrule
from ollabench.stats.sequential import (
    UNDECIDED,
    UNTRUSTWORTHY,
    WORSE,
    Design,
    sequential_looks,
)
from ollabench.stats.trust import (
    AUTOCORRELATION,
    MINORITY,
    OUTSIDE,
    POSITION,
    lag1_autocorrelation,
)
from tests.helpers.aggregate import aggregate, verdict
from tests.helpers.synthetic import Scenario, make_records

FIXED_16 = Design(min_runs=16, max_runs=16, look_every_runs=16, block_runs=2,
                  threshold_pct=5.0, comparisons=1)


def _outcome(control: np.ndarray, treatment: np.ndarray, final: bool = True,
             design: Design = FIXED_16, control_first: np.ndarray | None = None,
             inside: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[str, str]:
    looks = sequential_looks(control, treatment, "lower", design, final, control_first,
                             inside)
    return str(looks.outcome[-1]), str(looks.cause[-1])


def _noise(seed: int, runs: int = 16, sd: float = 0.01) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, runs)


def test_a_plain_slowdown_is_worse_and_trusted() -> None:
    control = np.exp(_noise(1))
    assert _outcome(control, control * 1.08 * np.exp(_noise(2))) == (WORSE, "")


def test_a_wandering_ratio_is_untrustworthy_not_worse() -> None:
    """The treatment slows steadily over the runs (the ratio of successive blocks follow
    each other): the interval says worse, the autocorrelation check overrules it, and at a
    look before the last the comparison stays undecided, so the experiment goes on."""
    design = Design(min_runs=32, max_runs=32, look_every_runs=32, block_runs=2,
                    threshold_pct=5.0, comparisons=1)
    control = np.exp(_noise(3, runs=32))
    treatment = control * np.exp(np.linspace(0.0, 0.3, 32) + _noise(4, runs=32))
    assert _outcome(control, treatment, design=design) == (UNTRUSTWORTHY, AUTOCORRELATION)
    assert _outcome(control, treatment, final=False, design=design) == (UNDECIDED,
                                                                         AUTOCORRELATION)


def test_an_artifact_in_a_few_runs_is_untrustworthy() -> None:
    """A 12% stall on the treatment's calls of 3 of 8 blocks (a delay that hits one arm):
    the interval excludes no change, but the median block difference is near zero."""
    control = np.exp(_noise(17, sd=0.02))
    stalled = np.zeros(16)
    stalled[[2, 3, 8, 9, 14, 15]] = 0.12
    treatment = np.exp(_noise(117, sd=0.02) + stalled)
    assert _outcome(control, treatment) == (UNTRUSTWORTHY, MINORITY)
    # the same stall on every block is a real slowdown
    assert _outcome(control, np.exp(_noise(117, sd=0.02) + 0.12)) == (WORSE, "")


def test_a_position_effect_counts_only_when_the_orders_are_unbalanced() -> None:
    """The call that runs first in a run is 10% slower. ABBA balances the orders and cancels
    it; a random order with 11 of 16 runs control-first does not, and the check says so."""
    design = Design(min_runs=16, max_runs=16, look_every_runs=16, block_runs=1,
                    threshold_pct=5.0, comparisons=1)
    abba = np.arange(16) % 2 == 0
    unbalanced = np.ones(16, dtype=bool)
    unbalanced[[2, 5, 9, 12, 15]] = False
    for order, expected in ((abba, ""), (unbalanced, POSITION)):
        control = np.exp(_noise(7, sd=0.005) + np.where(order, 0.1, 0.0))
        treatment = np.exp(_noise(8, sd=0.005) + np.where(order, 0.0, 0.1))
        assert _outcome(control, treatment, design=design, control_first=order)[1] == expected


def test_a_delay_outside_the_engine_is_untrustworthy_not_worse() -> None:
    """A 6% delay on the treatment's calls that the engine's own timings do not show (the
    connection stalls of issue 26): the interval says worse, the outside check overrules it.
    The same slowdown inside the engine stays worse."""
    control = np.exp(_noise(21, sd=0.02))
    engine = control * np.exp(_noise(22, sd=0.02))
    delayed = engine * 1.06
    assert _outcome(control, delayed) == (WORSE, "")  # nothing else to go by
    assert _outcome(control, delayed, inside=(0.95 * control, 0.95 * engine)) == (
        UNTRUSTWORTHY, OUTSIDE)
    assert _outcome(control, delayed, inside=(0.95 * control, 0.95 * delayed)) == (WORSE, "")


def test_the_outside_check_reads_only_engine_timed_records(tmp_path: Path) -> None:
    """A TTFT 30% slower whose prompt time is not (Scenario's ttft_factor leaves the engine's
    timings alone): untrustworthy when the records say the engine timed them, worse when
    they do not say (records before format 5, such as the golden files')."""
    scenario = Scenario(runs=16, cv_pct=2.0, seed=5, ttft_factor=1.3)
    records = make_records(scenario)
    engine = [replace(r, timing_source="engine") for r in records]
    out = aggregate(tmp_path / "engine", engine, scenario)
    assert out["metrics"]["primary"]["analysis/ttft_ms"]["verdict"] == UNTRUSTWORTHY
    primary = pd.read_csv(tmp_path / "engine" / "processed" / "primary.csv")
    assert set(primary.loc[primary["metric"] == "ttft_ms", "untrusted_by"]) == {OUTSIDE}
    assert out["metrics"]["primary"]["workflow/eval_tok_s"]["verdict"] != UNTRUSTWORTHY
    unsaid = aggregate(tmp_path / "unsaid", records, scenario)
    assert unsaid["metrics"]["primary"]["analysis/ttft_ms"]["verdict"] == WORSE


def test_lag1_autocorrelation_skips_missing_units() -> None:
    trend = np.array([0.0, 0.1, np.nan, 0.2, 0.3, 0.4])
    value, count = lag1_autocorrelation(trend)
    assert count == 5 and value > 0.3
    assert math.isnan(lag1_autocorrelation(np.array([0.1, 0.2, 0.3]))[0])


def test_untrustworthy_reaches_metrics_json_and_comparisons_csv(tmp_path: Path) -> None:
    """A treatment whose analysis TTFT slows run after run: the primary verdict, the
    headline and the comparisons row all read untrustworthy, with the cause and remedy."""
    scenario = Scenario(runs=32, cv_pct=2.0, seed=3, spikes={
        ("treatment", run, "analysis", "ttft_ms"): 1.0 + 0.01 * (run - 1)
        for run in range(1, 33)})
    out = aggregate(tmp_path, make_records(scenario), scenario)
    assert out["metrics"]["primary"]["analysis/ttft_ms"]["verdict"] == UNTRUSTWORTHY
    assert verdict(out["comparisons"], "analysis", "ttft_ms") == UNTRUSTWORTHY
    primary = pd.read_csv(tmp_path / "processed" / "primary.csv").set_index(["stage", "metric"])
    row = primary.loc[("analysis", "ttft_ms")]
    assert row["untrusted_by"] == AUTOCORRELATION and "remedy:" in row["untrusted_note"]
    assert out["metrics"]["primary"]["report/ttft_ms"]["verdict"] != UNTRUSTWORTHY


def test_overrule_leaves_trusted_rows_alone() -> None:
    table = pd.DataFrame({"stage": ["workflow", "analysis"], "metric": ["e2e_ms", "ttft_ms"],
                          "verdict": ["worse", "better"]})
    found = overrule(table, {"workflow/e2e_ms": {"verdict": UNTRUSTWORTHY},
                             "analysis/ttft_ms": {"verdict": "better"}})
    assert found["verdict"].tolist() == [UNTRUSTWORTHY, "better"]
