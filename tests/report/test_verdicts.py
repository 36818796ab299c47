"""The primary comparisons' words: each outcome, the precision an open one reached, and the
one sentence that answers whether the treatment is better."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ollabench.report.verdicts import answer_sentence, verdict_text


def _row(stage: str, metric: str, verdict: str, change: float, low: float,
         high: float) -> dict[str, Any]:
    return {"stage": stage, "metric": metric, "verdict": verdict, "change_pct": change,
            "low_pct": low, "high_pct": high, "runs": 8, "control_mean": 1.0,
            "treatment_mean": 1.0 + change / 100}


def test_an_open_comparison_states_the_precision_reached() -> None:
    row = _row("workflow", "e2e_ms", "inconclusive", 1.0, -6.2, 8.0)
    assert verdict_text(row, 5.0) == "inconclusive: no change larger than +-8.0% (95%)"
    # an edge just above the threshold is rounded up, never down onto the threshold
    row = _row("workflow", "e2e_ms", "inconclusive", 1.1, -2.6, 5.04)
    assert verdict_text(row, 5.0) == "inconclusive: no change larger than +-5.1% (95%)"


def test_a_significant_change_below_the_threshold_says_so() -> None:
    assert verdict_text(_row("workflow", "e2e_ms", "equivalent", 2.0, 0.5, 3.5), 5.0) == \
        "equivalent (within +-5.0%), significant but smaller than the threshold"
    assert verdict_text(_row("workflow", "e2e_ms", "equivalent", 0.0, -2.0, 2.0), 5.0) == \
        "equivalent (within +-5.0%)"


def test_the_answer_leads_with_the_whole_run() -> None:
    rows = pd.DataFrame([_row("analysis", "ttft_ms", "better", -20.0, -25.0, -15.0),
                         _row("workflow", "e2e_ms", "better", -12.0, -15.0, -9.0)])
    assert answer_sentence(rows, quality_lower=False) == (
        "Yes: the treatment is better on analysis TTFT, workflow end-to-end time; workflow "
        "end-to-end time changed by -12.0% (95% interval -15.0% to -9.0%).")
    assert answer_sentence(rows, quality_lower=True).startswith(
        "Faster, but lower quality: the treatment is better on")


def test_the_answer_for_equivalent_and_open_comparisons() -> None:
    same = pd.DataFrame([_row("workflow", "e2e_ms", "equivalent", 0.5, -2.0, 3.0)])
    assert answer_sentence(same, False).startswith("No change that matters")
    open_ = pd.DataFrame([_row("workflow", "e2e_ms", "inconclusive", 0.5, -9.0, 10.0)])
    assert answer_sentence(open_, False).startswith(
        "Not decided: the runs could not tell the arms apart on workflow end-to-end time")
    mixed = pd.DataFrame([_row("workflow", "e2e_ms", "equivalent", 0.2, -4.1, 4.7),
                          _row("report", "ttft_ms", "inconclusive", -1.9, -7.8, 4.3)])
    assert answer_sentence(mixed, False) == (
        "Not decided: equivalent within the practical threshold on workflow end-to-end time; "
        "the runs could not tell the arms apart on report TTFT (no change larger than +-7.8%); "
        "workflow end-to-end time changed by +0.2% (95% interval -4.1% to +4.7%).")
    worse = pd.DataFrame([_row("workflow", "e2e_ms", "worse", 30.0, 20.0, 40.0)])
    assert answer_sentence(worse, False).startswith("No: the treatment is worse")


def test_autocorrelation_is_judged_against_the_schedules_units() -> None:
    """16 runs are 8 ABBA blocks (limit 2/sqrt(8) = 0.71) but 16 units in random order
    (limit 0.5): the same 0.6 is chance in one and drift in the other."""
    from ollabench.report.verdicts import _autocorrelated

    row = _row("workflow", "e2e_ms", "inconclusive", 1.0, -6.0, 8.0) | {"runs": 16,
                                                                         "lag1_autocorr": 0.6}
    assert not _autocorrelated(row, block_runs=2)
    assert _autocorrelated(row, block_runs=1)
    assert not _autocorrelated(row | {"lag1_autocorr": math.nan}, block_runs=1)


def test_an_untrustworthy_comparison_is_not_called_better() -> None:
    """The run's checks overruled the interval: the words give the cause and the remedy,
    and the one-sentence answer says not trusted, never yes or no."""
    row = _row("analysis", "ttft_ms", "untrustworthy", 10.3, 1.4, 19.9) | {
        "untrusted_note": "successive blocks' differences follow each other; remedy: run "
                          "more blocks"}
    assert verdict_text(row, 5.0) == ("not trusted: successive blocks' differences follow "
                                      "each other; remedy: run more blocks")
    rows = pd.DataFrame([row, _row("workflow", "e2e_ms", "equivalent", 0.5, -2.0, 3.0)])
    answer = answer_sentence(rows, quality_lower=False)
    assert answer.startswith("Not trusted: the run's own checks overrule analysis TTFT")
    assert "remedy: run more blocks" in answer and "better" not in answer


def test_an_open_comparison_without_an_interval_says_too_few_runs() -> None:
    # one run per arm: the interval is NaN, which once crashed the report
    row = {"verdict": "inconclusive", "low_pct": float("nan"), "high_pct": float("nan")}

    assert verdict_text(row, 5.0) == "inconclusive: too few runs for an interval (95%)"


def test_an_interval_too_wide_to_bound_anything_says_so() -> None:
    # two runs per arm once read "no change larger than +-3219064192470%"
    row = {"verdict": "inconclusive", "low_pct": -97.0, "high_pct": 3.2e12}

    assert verdict_text(row, 5.0) == ("inconclusive: too few runs to bound the change "
                                      "(interval wider than +-100%) (95%)")
    assert verdict_text({**row, "low_pct": -40.0, "high_pct": 60.0}, 5.0) == (
        "inconclusive: no change larger than +-60.0% (95%)")
