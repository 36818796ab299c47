"""The covariate analysis (stats/covariates.py) finds a planted covariate-driven noise and
finds nothing in a probe that is unrelated to the values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ollabench.records.schema import CallRecord
from ollabench.stats.covariates import explained_pct, share_table, with_probe
from ollabench.stats.decisions import primary_series
from ollabench.stats.frames import records_frame
from ollabench.stats.noise import noise_table
from tests.helpers.synthetic import Scenario, make_records

PRIMARY = ["workflow/e2e_ms", "each/ttft_ms", "workflow/eval_tok_s"]


def _slowed(records: list[CallRecord], tracks: bool, seed: int = 1) -> list[CallRecord]:
    """Each measured call slowed by a random factor of 10% spread; its probe reads that
    factor (tracks) or an unrelated one, with 2% noise of its own."""
    rng = np.random.default_rng(seed)
    out = []
    for record in records:
        slow = float(np.exp(rng.normal(0.0, 0.10)))
        read = slow if tracks else float(np.exp(rng.normal(0.0, 0.10)))
        probe = 2.3 * read * float(np.exp(rng.normal(0.0, 0.02)))
        if record.phase == "measured" and record.ttft_ms is not None:
            record = replace(record, ttft_ms=record.ttft_ms * slow, e2e_ms=record.e2e_ms * slow,
                             eval_ms=record.eval_ms * slow)
        out.append(replace(record, cpu_probe_ms=probe))
    return out


def _table(records: list[CallRecord]):
    calls = records_frame(records)
    return share_table(primary_series(calls, PRIMARY), calls).set_index(["stage", "metric"])


def test_a_probe_that_tracks_the_slowness_explains_most_of_the_paired_noise() -> None:
    table = _table(_slowed(make_records(Scenario(runs=24, cv_pct=2.0)), tracks=True))
    assert list(table.index) == [("workflow", "e2e_ms"), ("analysis", "ttft_ms"),
                                 ("report", "ttft_ms"), ("workflow", "eval_tok_s")]
    assert (table["probe_explains_paired_pct"] > 70).all()
    assert (table["probe_loo_paired_pct"] > 70).all()  # out of sample too
    assert (table["probe_explains_calls_pct"] > 70).all()
    assert (table.loc[("analysis", "ttft_ms"), "probe_r_paired"]) > 0.8
    assert table.loc[("workflow", "eval_tok_s"), "probe_r_paired"] < -0.8  # slower: lower rate
    assert (table["probe_p_arm"] > 0.001).all()  # A/A: the probe does not depend on the arm


def test_a_probe_that_depends_on_the_arm_is_found() -> None:
    records = [replace(r, cpu_probe_ms=r.cpu_probe_ms * (1.2 if r.arm == "treatment" else 1.0))
               for r in _slowed(make_records(Scenario(runs=24, cv_pct=2.0)), tracks=True)]
    table = _table(records)
    assert (table["probe_p_arm"] < 0.001).all()
    assert table["probe_mean_diff_pct"].to_numpy() == pytest.approx(20.0, abs=10.0)


def test_a_probe_unrelated_to_the_values_explains_about_nothing() -> None:
    table = _table(_slowed(make_records(Scenario(runs=24, cv_pct=2.0)), tracks=False))
    assert (table["probe_explains_paired_pct"] < 20).all()
    assert (table["probe_loo_paired_pct"] < 10).all()
    assert (table["probe_explains_calls_pct"] < 20).all()


def test_explained_share_is_adjusted_for_the_columns_fitted() -> None:
    """Pure-noise covariates explain about 0% on average, not the in-sample R-squared's
    k / (n - 1)."""
    rng = np.random.default_rng(3)
    shares = [explained_pct(rng.normal(size=16), rng.normal(size=(16, 3)))
              for _ in range(400)]
    assert np.mean(shares) == pytest.approx(0.0, abs=3.0)
    y = rng.normal(size=40)
    assert explained_pct(y, (y + 0.1 * rng.normal(size=40))[:, None]) > 95


def test_noise_csv_carries_the_probes_share_and_leaves_it_unknown_without_a_probe() -> None:
    records = _slowed(make_records(Scenario(runs=24, cv_pct=2.0)), tracks=True)
    for given, tracked in ((records, True), (make_records(Scenario(runs=24)), False)):
        calls = records_frame(given)
        series = primary_series(calls, PRIMARY)
        noise = with_probe(noise_table(series, lambda _stage: None, 5.0), series, calls)
        assert len(noise) == 4 and noise["run_noise_pct"].notna().all()
        if tracked:
            assert (noise["probe_loo_paired_pct"] > 70).all()
        else:  # records without cpu_probe_ms: unknown, never 0
            assert noise["probe_loo_paired_pct"].isna().all()
