"""Statistics with a known truth: synthetic raw data whose effects are set by construction."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyarrow import parquet as pq
from scipy import stats as sps

from ollabench import stats
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE
from ollabench.records import SOURCE_BYTES_KEY, CallRecord, read_records
from tests.helpers.synthetic import Scenario, make_records, swap_arms, write_raw


def aggregate(tmp_path: Path, records: list[CallRecord], scenario: Scenario,
              threshold_pct: float = 5.0) -> dict[str, object]:
    """Run the aggregate stage on synthetic records; return its outputs, parsed."""
    raw = write_raw(tmp_path / "raw", records, scenario)
    out, metrics = tmp_path / "processed", tmp_path / "reports" / "metrics.json"
    stats.run_aggregate(raw, out, metrics, threshold_pct)
    return {
        "summary": pd.read_csv(out / stats.SUMMARY_FILE),
        "comparisons": pd.read_csv(out / stats.COMPARISONS_FILE),
        "per_run": pd.read_csv(out / stats.PER_RUN_FILE),
        "quality": json.loads((out / stats.QUALITY_FILE).read_text()),
        "metrics": json.loads(metrics.read_text()),
    }


def verdict(table: pd.DataFrame, stage: str, metric: str) -> str:
    row = table.loc[(table["stage"] == stage) & (table["metric"] == metric)]
    assert len(row) == 1, f"no single row for {stage} {metric}"
    return str(row["verdict"].iloc[0])


# --------------------------------------------------------------------------- verdicts


def test_rate_gain_of_ten_percent_is_better(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in stats.STAGES:
        assert verdict(table, stage, "eval_tok_s") == "better"
        assert verdict(table, stage, "eval_ms") == "better"  # same tokens in less time
    row = table.loc[(table["stage"] == "workflow") & (table["metric"] == "eval_tok_s")].iloc[0]
    assert 7.0 < row["median_diff_pct"] < 13.0
    assert row["ci_low_pct"] < row["median_diff_pct"] < row["ci_high_pct"]
    assert row["ci_low_pct"] > 0  # the bootstrap CI excludes "no change"
    assert row["mde_pct"] <= 5.0
    assert row["hedges_g"] > 0 and row["cliffs_delta"] > 0.5
    assert not math.isnan(row["p_paired"])  # every run has both arms


def test_the_same_data_with_arms_swapped_is_worse(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10)
    out = aggregate(tmp_path, swap_arms(make_records(scenario)), scenario)
    table = out["comparisons"]
    for stage in stats.STAGES:
        assert verdict(table, stage, "eval_tok_s") == "worse"
    row = table.loc[(table["stage"] == "report") & (table["metric"] == "eval_tok_s")].iloc[0]
    assert row["median_diff_pct"] < 0 and row["better"] == "higher"


def test_aa_data_has_no_significant_difference(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, cv_pct=2.0, treatment_profile="baseline")
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in stats.STAGES:
        for metric in stats.HEADLINE_METRICS:
            assert verdict(table, stage, metric) == "no significant difference"


def test_three_runs_at_twenty_percent_cv_are_inconclusive(tmp_path: Path) -> None:
    scenario = Scenario(runs=3, cv_pct=20.0, eval_rate_gain=0.05)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    table = out["comparisons"]
    for stage in stats.STAGES:
        for metric in stats.HEADLINE_METRICS:
            assert verdict(table, stage, metric) == "inconclusive"
    assert (table.loc[table["verdict"] == "inconclusive", "mde_pct"] > 5.0).all()


@pytest.mark.parametrize("gain", [0.10, 0.0])
def test_one_eightfold_ttft_outlier_does_not_flip_a_verdict(tmp_path: Path,
                                                            gain: float) -> None:
    base = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=gain, ttft_factor=1 - gain)
    spiked = replace(base, spikes={("treatment", 4, "report", "ttft_ms"): 8.0})
    clean = aggregate(tmp_path / "clean", make_records(base), base)["comparisons"]
    out = aggregate(tmp_path / "spiked", make_records(spiked), spiked)
    for stage in stats.STAGES:
        for metric in stats.HEADLINE_METRICS:
            assert verdict(out["comparisons"], stage, metric) == verdict(clean, stage, metric)
    listed = [o for o in out["quality"]["outliers"]
              if (o["arm"], o["run"], o["stage"], o["metric"]) ==
              ("treatment", 4, "report", "ttft_ms")]
    assert len(listed) == 1 and listed[0]["left_out"] and listed[0]["robust_z"] > 3.5


def test_verdict_core_false_positive_rate_in_aa_simulations() -> None:
    """1,000 seeded A/A simulations at each of 5, 7 and 10 runs per arm (log-normal, 5% CV):
    better/worse verdicts must stay at about alpha."""
    rng = np.random.default_rng(0)
    sigma = math.sqrt(math.log1p(0.05**2))
    for runs in (5, 7, 10):
        control = rng.lognormal(0.0, sigma, (1000, runs))
        treatment = rng.lognormal(0.0, sigma, (1000, runs))
        test = stats.verdict_test(control, treatment)
        found = stats.verdicts(test["p_welch"], test["effect"], test["mde_pct"], "higher",
                               5.0)
        share = np.isin(found, ["better", "worse"]).mean()
        assert share <= 0.06, f"{runs} runs: {share:.1%} false verdicts"


def test_trimming_the_tails_of_each_arm_would_not_be_calibrated() -> None:
    """Why outliers must also be far from the other arm to leave the test: with the
    one-arm rule alone, the same A/A simulations exceed alpha (this guards the design)."""
    rng = np.random.default_rng(0)
    control = rng.lognormal(0.0, 0.05, (4000, 5))
    treatment = rng.lognormal(0.0, 0.05, (4000, 5))
    flags = stats.outlier_flags(control, treatment)
    trimmed = stats.verdict_test(np.where(flags["flagged_control"], np.nan, control),
                                 np.where(flags["flagged_treatment"], np.nan, treatment))
    ours = stats.verdict_test(control, treatment)
    assert (trimmed["p_welch"] < 0.05).mean() > 0.07
    assert (ours["p_welch"] < 0.05).mean() < 0.06


# --------------------------------------------------------------------------- the core


@pytest.mark.parametrize("n", [1, 2, 5, 8, 11])
def test_exact_bootstrap_medians_match_resampling(n: int) -> None:
    values = np.random.default_rng(n).lognormal(0.0, 0.3, n)
    fast = stats.bootstrap_medians(values, 100_000, np.random.default_rng(1))
    draws = np.random.default_rng(2).integers(0, n, (100_000, n))
    naive = np.median(values[draws], axis=1)
    assert np.allclose(np.percentile(fast, [2.5, 25, 50, 75, 97.5]),
                       np.percentile(naive, [2.5, 25, 50, 75, 97.5]), rtol=0.01)
    assert fast.mean() == pytest.approx(naive.mean(), rel=0.005)


def test_verdict_test_is_welch_on_logs() -> None:
    control = np.exp(sps.norm.ppf(np.linspace(0.05, 0.95, 8)) * 0.1)  # no outliers
    treatment = np.exp(0.05 + sps.norm.ppf(np.linspace(0.05, 0.95, 9)[::-1]) * 0.2)
    expected = sps.ttest_ind(np.log(treatment), np.log(control), equal_var=False).pvalue
    test = stats.verdict_test(control, treatment)
    assert int(test["n_left_out"]) == 0
    assert float(test["p_welch"]) == pytest.approx(expected)
    # vectorized: the same answer row by row
    rows = stats.verdict_test(np.vstack([control[:8], control[:8]]),
                              np.vstack([treatment, treatment[::-1]]))
    assert np.allclose(rows["p_welch"], expected)


def test_large_sample_rank_tests_equal_scipys_normal_approximations() -> None:
    rng = np.random.default_rng(5)
    n = stats.SCIPY_RANK_TEST_MAX + 1000
    control = np.round(rng.lognormal(0, 0.1, n), 2)  # rounded: many ties
    treatment = np.round(rng.lognormal(0.004, 0.1, n - 300), 2)
    reference = sps.mannwhitneyu(treatment, control, method="asymptotic")
    p, delta = stats._mann_whitney(control, treatment)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)
    assert delta == pytest.approx(2 * reference.statistic / (n * (n - 300)) - 1)
    before = pd.Series(control)
    after = pd.Series(np.round(control + rng.normal(0.002, 0.05, n), 2))
    expected = sps.wilcoxon(after - before, method="asymptotic").pvalue
    assert stats._paired_wilcoxon(before, after) == pytest.approx(expected, rel=1e-9)


def test_holm_adjustment() -> None:
    adjusted = stats.holm(np.array([0.01, 0.04, np.nan, 0.03, 0.5]))
    assert np.allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.5], equal_nan=True)


def test_constant_values_are_no_difference_not_a_rounding_artefact() -> None:
    equal = stats.verdict_test(np.full(10, 352.0), np.full(9, 352.0))
    assert float(equal["p_welch"]) == 1.0 and float(equal["mde_pct"]) == 0.0
    differ = stats.verdict_test(np.full(10, 352.0), np.full(9, 300.0))
    assert float(differ["p_welch"]) == 0.0


def test_zero_values_use_the_raw_scale() -> None:
    control = np.array([0.0, 1.0, 2.0, 1.5, 0.5])
    test = stats.verdict_test(control, control + 0.1)
    expected = sps.ttest_ind(control + 0.1, control, equal_var=False).pvalue
    assert float(test["p_welch"]) == pytest.approx(expected)


def test_mde_shrinks_with_runs_and_grows_with_noise() -> None:
    rng = np.random.default_rng(4)

    def mde(runs: int, cv: float) -> float:
        a, b = rng.lognormal(0, cv, (2, 400, runs))
        return float(np.median(stats.verdict_test(a, b)["mde_pct"]))

    assert mde(20, 0.02) < mde(5, 0.02) < mde(5, 0.2)
    # 10 runs at 2% CV: (t_.975 + t_.80) * 0.02 * sqrt(2/10) ~ 2.6%
    assert 2.0 < mde(10, 0.02) < 3.5


# --------------------------------------------------------------------------- workflow and units


def test_workflow_sums_stage_times_and_divides_tokens_by_eval_time(tmp_path: Path) -> None:
    scenario = Scenario(runs=4)
    records = make_records(scenario)
    out = aggregate(tmp_path, records, scenario)
    measured = [r for r in records if r.phase == "measured" and r.error is None]
    per_run = out["per_run"]
    for run in (1, 2):
        calls = [r for r in measured if r.run == run and r.arm == "control"]
        row = per_run.loc[(per_run["arm"] == "control") & (per_run["run"] == run)
                          & (per_run["stage"] == "workflow")].iloc[0]
        assert row["ttft_ms"] == pytest.approx(sum(r.ttft_ms for r in calls))
        assert row["e2e_ms"] == pytest.approx(sum(r.e2e_ms for r in calls))
        rate = sum(r.output_tokens for r in calls) / sum(r.eval_ms for r in calls) * 1000
        assert row["eval_tok_s"] == pytest.approx(rate)
    assert list(per_run.columns) == list(stats.PER_RUN_COLUMNS)


def test_summary_has_the_issue_columns_and_a_t_interval(tmp_path: Path) -> None:
    scenario = Scenario(runs=6)
    out = aggregate(tmp_path, make_records(scenario), scenario)
    summary = out["summary"]
    assert list(summary.columns) == list(stats.SUMMARY_COLUMNS)
    assert list(out["comparisons"].columns) == list(stats.COMPARISON_COLUMNS)
    row = summary.loc[(summary["arm"] == "control") & (summary["stage"] == "analysis")
                      & (summary["metric"] == "ttft_ms")].iloc[0]
    values = out["per_run"].loc[(out["per_run"]["arm"] == "control")
                                & (out["per_run"]["stage"] == "analysis"), "ttft_ms"]
    half = sps.t.ppf(0.975, 5) * values.std(ddof=1) / math.sqrt(6)
    assert row["n"] == 6 and row["profile"] == "baseline"
    assert row["mean"] == pytest.approx(values.mean())
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert row["cv_pct"] == pytest.approx(values.std(ddof=1) / values.mean() * 100)


def test_unknown_values_stay_unknown(tmp_path: Path) -> None:
    scenario = Scenario(runs=5)
    records = [replace(r, load_ms=None) if (r.arm, r.run) == ("treatment", 2) else r
               for r in make_records(scenario)]
    out = aggregate(tmp_path, records, scenario)
    summary = out["summary"]
    load = summary.loc[(summary["arm"] == "treatment") & (summary["metric"] == "load_ms")]
    assert set(load["n"]) == {4}  # run 2 is unknown, not 0 ms
    assert load["min"].min() > 1.0
    assert out["quality"]["unknown_values"]["treatment"] == {"load_ms": 2}
    # itl_* are unknown everywhere (llamacpp): no rows at all rather than zeros
    assert not summary["metric"].str.startswith("itl_").any()


def test_inter_token_figures_appear_when_present(tmp_path: Path) -> None:
    scenario = Scenario(runs=4, itl=True)
    table = aggregate(tmp_path, make_records(scenario), scenario)["comparisons"]
    assert {"itl_p50_ms", "itl_p95_ms", "itl_max_ms"} <= set(table["metric"])
    workflow = set(table.loc[table["stage"] == "workflow", "metric"])
    assert "itl_max_ms" in workflow and "itl_p50_ms" not in workflow


# --------------------------------------------------------------------------- data quality


def test_warmups_errors_and_reloads_are_counted_not_measured(tmp_path: Path) -> None:
    scenario = Scenario(runs=6, failures=[("control", 2, "analysis")],
                        loads=[("treatment", 3, "report")])
    out = aggregate(tmp_path, make_records(scenario), scenario)
    quality = out["quality"]
    arms = quality["arms"]
    assert arms["control"]["warmups"] == 6 and arms["treatment"]["warmups"] == 6
    assert arms["control"]["errors"] == 1 and arms["control"]["retries"] == 1
    assert arms["treatment"]["reloaded"] == 1
    assert arms["control"]["length_stops"] == {"analysis": 6, "report": 6}
    assert arms["control"]["runs"] == 6 and arms["treatment"]["runs"] == 6
    assert [(e["arm"], e["run"], e["stage"], e["attempt"]) for e in quality["errors"]] == [
        ("control", 2, "analysis", 1)]
    assert quality["errors"][0]["error"].startswith("ReadTimeout")
    assert [(c["arm"], c["run"], c["stage"]) for c in quality["reloaded_calls"]] == [
        ("treatment", 3, "report")]
    summary = out["summary"]
    n = summary.set_index(["arm", "stage", "metric"])["n"]
    assert n[("control", "analysis", "ttft_ms")] == 6  # the retry counts, the failure not
    assert n[("treatment", "report", "ttft_ms")] == 5  # the reloaded call is left out
    assert n[("treatment", "workflow", "ttft_ms")] == 5  # and so is its run's workflow
    table = out["comparisons"]
    assert math.isnan(table.loc[(table["stage"] == "report")
                                & (table["metric"] == "ttft_ms"), "p_paired"].iloc[0])
    assert {"check": "errors", "stage": None, "control": 1, "treatment": 0} in (
        quality["unequal_work"])


def test_an_unflagged_model_load_is_named_as_the_outlier_cause(tmp_path: Path) -> None:
    scenario = Scenario(runs=8, loads=[("control", 5, "analysis")])
    records = [replace(r, reloaded=False) for r in make_records(scenario)]
    quality = aggregate(tmp_path, records, scenario)["quality"]
    spikes = [(s["arm"], s["run"], s["stage"]) for s in quality["load_spikes"]]
    assert spikes == [("control", 5, "analysis")]
    ttft = [o for o in quality["outliers"] if o["metric"] == "load_ms"
            and o["stage"] == "analysis" and o["arm"] == "control"]
    assert [o["run"] for o in ttft] == [5] and "model_load" in ttft[0]["causes"]
    assert ttft[0]["load_ms"] > 10 * ttft[0]["warm_load_ms"]


def test_unequal_work_is_reported(tmp_path: Path) -> None:
    scenario = Scenario(runs=5, treatment_tokens_factor=0.7,
                        truncated=[("treatment", 1, "report")])
    records = [replace(r, done_reason="stop") if r.arm == "treatment" else r
               for r in make_records(scenario)]
    quality = aggregate(tmp_path, records, scenario)["quality"]
    checks = {(u["check"], u["stage"]) for u in quality["unequal_work"]}
    assert {("output_tokens", "analysis"), ("output_tokens", "report"),
            ("length_stops", "analysis"), ("length_stops", "report"),
            ("truncated", None)} <= checks
    tokens = next(u for u in quality["unequal_work"] if u["check"] == "output_tokens")
    assert tokens["diff_pct"] == pytest.approx(-30.0, abs=1.0)
    assert [(c["arm"], c["run"]) for c in quality["truncated_calls"]] == [("treatment", 1)]


def test_metrics_json_is_compact_and_nan_free(tmp_path: Path) -> None:
    scenario = Scenario(runs=4, eval_rate_gain=0.1)
    metrics = aggregate(tmp_path, make_records(scenario), scenario)["metrics"]
    assert set(metrics) == set(stats.STAGES)
    for stage in metrics.values():
        assert set(stage) == set(stats.HEADLINE_METRICS)
        for entry in stage.values():
            assert set(entry) == {"control_median", "treatment_median", "median_diff_pct",
                                  "p_holm", "verdict"}


def test_nan_becomes_null_in_json() -> None:
    text = stats._json_text({"a": math.nan, "b": np.float64("nan"), "c": [np.int64(2)]})
    assert json.loads(text) == {"a": None, "b": None, "c": [2]}


# --------------------------------------------------------------------------- inputs


def test_compare_arms_takes_rows_from_two_experiments() -> None:
    """`ollabench compare A B`: one arm of each experiment, both labelled treatment."""
    a = Scenario(runs=8, seed=1)
    b = Scenario(runs=8, seed=2, eval_rate_gain=0.10)
    side_a = [r for r in make_records(a) if r.arm == "treatment"]
    side_b = [r for r in make_records(b) if r.arm == "treatment"]
    table = stats.compare_arms(stats.records_frame(side_a), stats.records_frame(side_b), 5.0)
    assert verdict(table, "workflow", "eval_tok_s") == "better"
    assert list(table.columns) == list(stats.COMPARISON_COLUMNS)


def test_records_frame_matches_the_fast_reader(tmp_path: Path) -> None:
    scenario = Scenario(runs=3, failures=[("treatment", 1, "report")])
    raw = write_raw(tmp_path, make_records(scenario), scenario)
    slow = stats.records_frame(read_records(raw / CALLS_FILE))
    from_copy = stats.read_calls(raw)
    (raw / CALLS_TABLE_FILE).unlink()
    parsed = stats.read_calls(raw)
    for fast in (from_copy, parsed):
        pd.testing.assert_frame_equal(fast[slow.columns.intersection(fast.columns)],
                                      slow[slow.columns.intersection(fast.columns)],
                                      check_dtype=False, check_categorical=False)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    complete = len(stats.read_calls(raw))
    with (raw / CALLS_FILE).open("a", encoding="utf-8") as fh:
        fh.write('{"seq": 999, "run": 3, "arm": "contr')
    assert len(stats.read_calls(raw)) == complete


def _edit_first_measured_ttft(raw: Path, ttft_ms: float) -> int:
    """Rewrite calls.jsonl with the first measured record's ttft_ms changed, at the same
    size; returns that record's line index."""
    lines = (raw / CALLS_FILE).read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["phase"] == "measured")
    record = json.loads(lines[index])
    old = json.dumps(record, sort_keys=True)
    record["ttft_ms"] = ttft_ms
    new = json.dumps(record, sort_keys=True)
    lines[index] = new + " " * (len(old) - len(new))
    (raw / CALLS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index


def test_the_columnar_copy_is_used_only_while_it_matches_calls_jsonl(tmp_path: Path) -> None:
    """calls.jsonl is the source of truth: an edit of the same size (which a size check
    alone would miss) makes aggregate parse the JSON again instead of using the copy."""
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    copy = pq.read_table(raw / CALLS_TABLE_FILE)
    assert copy.schema.metadata[SOURCE_BYTES_KEY] == str((raw / CALLS_FILE).stat().st_size).encode()
    assert "output" not in copy.column_names and "options" not in copy.column_names
    assert stats.read_calls(raw)["ttft_ms"].iloc[0] == copy.column("ttft_ms")[0].as_py()

    edited = _edit_first_measured_ttft(raw, 12345.5)
    assert (raw / CALLS_FILE).stat().st_size == int(copy.schema.metadata[SOURCE_BYTES_KEY])
    assert stats.read_calls(raw)["ttft_ms"].iloc[edited] == 12345.5


def test_aggregate_outputs_do_not_depend_on_the_copy(tmp_path: Path) -> None:
    """The same files from a matching copy, from calls.jsonl alone, and from a stale copy
    (calls.jsonl edited after the copy was written: the edit must show)."""
    scenario = Scenario(runs=6, failures=[("treatment", 2, "report")])
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)

    def outputs(name: str, source: str) -> dict[str, bytes]:
        out = tmp_path / name
        assert stats.run_aggregate(raw, out, out / "metrics.json", 5.0) == raw / source
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    with_copy = outputs("with-copy", CALLS_TABLE_FILE)
    copy = (raw / CALLS_TABLE_FILE).read_bytes()
    (raw / CALLS_TABLE_FILE).unlink()
    assert outputs("json-only", CALLS_FILE) == with_copy
    (raw / CALLS_TABLE_FILE).write_bytes(copy)
    _edit_first_measured_ttft(raw, 12345.5)
    stale = outputs("stale-copy", CALLS_FILE)
    assert b"12345.5" in stale[stats.PER_RUN_FILE]
    assert stale[stats.PER_RUN_FILE] != with_copy[stats.PER_RUN_FILE]
    (raw / CALLS_TABLE_FILE).unlink()
    assert outputs("json-only-after-edit", CALLS_FILE) == stale


def test_a_damaged_copy_is_ignored(tmp_path: Path) -> None:
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    expected = stats.read_calls(raw)
    copy = (raw / CALLS_TABLE_FILE).read_bytes()
    (raw / CALLS_TABLE_FILE).write_bytes(copy[: len(copy) // 2])
    pd.testing.assert_frame_equal(stats.read_calls(raw), expected)
    (raw / CALLS_TABLE_FILE).write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(stats.read_calls(raw), expected)


def test_a_matching_copy_is_read_instead_of_the_json(tmp_path: Path) -> None:
    """The copy's stamp is what decides: a copy stamped for the current calls.jsonl is
    read as it is (here one whose values were changed after stamping)."""
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    copy = pq.read_table(raw / CALLS_TABLE_FILE)
    ttft = copy.column("ttft_ms").to_pylist()
    ttft[0] = 777.0
    changed = copy.set_column(copy.schema.get_field_index("ttft_ms"), "ttft_ms", pa.array(ttft))
    pq.write_table(changed.replace_schema_metadata(copy.schema.metadata), raw / CALLS_TABLE_FILE)
    assert stats.read_calls(raw)["ttft_ms"].iloc[0] == 777.0


def _raw_lines(tmp_path: Path, records: list[CallRecord], edit: object = None) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        data = json.loads(record.to_json())
        if callable(edit):
            edit(data)
        lines.append(json.dumps(data))
    (raw / CALLS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return raw


def _assert_refused(tmp_path: Path, raw: Path, *words: str) -> None:
    out, metrics = tmp_path / "processed", tmp_path / "reports" / "metrics.json"
    out.mkdir(parents=True)
    (out / stats.SUMMARY_FILE).write_text("previous\n")
    with pytest.raises(stats.AggregateError) as caught:
        stats.run_aggregate(raw, out, metrics, 5.0)
    for word in words:
        assert word in str(caught.value)
    # nothing half-written: the previous output is untouched, no new file, no staging left
    assert [p.name for p in out.iterdir()] == [stats.SUMMARY_FILE]
    assert (out / stats.SUMMARY_FILE).read_text() == "previous\n"
    assert not metrics.exists()


def test_missing_columns_are_named(tmp_path: Path) -> None:
    def drop(data: dict[str, object]) -> None:
        del data["ttft_ms"], data["stage"]

    raw = _raw_lines(tmp_path, make_records(Scenario(runs=2)), drop)
    _assert_refused(tmp_path, raw, "missing columns", "stage", "ttft_ms")


def test_a_single_arm_is_refused(tmp_path: Path) -> None:
    records = [r for r in make_records(Scenario(runs=3)) if r.arm == "control"]
    _assert_refused(tmp_path, _raw_lines(tmp_path, records), "only one arm", "control")


def test_no_measured_calls_is_refused(tmp_path: Path) -> None:
    records = [r for r in make_records(Scenario(runs=3)) if r.phase == "warmup"]
    _assert_refused(tmp_path, _raw_lines(tmp_path, records), "no measured calls",
                    "3 warm-ups")


def test_a_missing_file_and_a_wrong_version_are_named(tmp_path: Path) -> None:
    with pytest.raises(stats.AggregateError, match="not found"):
        stats.run_aggregate(tmp_path / "nowhere", tmp_path / "p", tmp_path / "m.json", 5.0)

    def old(data: dict[str, object]) -> None:
        data["schema_version"] = 0

    raw = _raw_lines(tmp_path, make_records(Scenario(runs=2)), old)
    _assert_refused(tmp_path, raw, "version")


def test_compare_arms_names_bad_input() -> None:
    frame = stats.records_frame(make_records(Scenario(runs=2)))
    with pytest.raises(stats.AggregateError, match="missing columns: run"):
        stats.compare_arms(frame.drop(columns="run"), frame, 5.0)
    warmups = frame.loc[frame["phase"] == "warmup"]
    with pytest.raises(stats.AggregateError, match="treatment calls: no measured calls"):
        stats.compare_arms(frame, warmups, 5.0)
