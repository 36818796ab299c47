"""What ran, from the records: cache states, effective context and batch, engine versions,
truncation known or not, context shifts, and reloads predicted against those observed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ollabench.records.schema import CallRecord
from tests.helpers.aggregate import aggregate
from tests.helpers.synthetic import Scenario, make_records

SCENARIO = Scenario(runs=6, cv_pct=2.0)


def _edited(match: str, **fields: object) -> list[CallRecord]:
    """The scenario's records with `fields` set on every call of arm `match` (measured)."""
    return [replace(r, **fields) if r.arm == match and r.phase == "measured" else r
            for r in make_records(SCENARIO)]


def test_the_prompt_rate_counts_only_the_tokens_the_server_evaluated(tmp_path: Path) -> None:
    half = [replace(r, prompt_eval_tokens=r.prompt_tokens // 2) if r.arm == "treatment" else r
            for r in make_records(SCENARIO)]

    out = aggregate(tmp_path, half, SCENARIO)

    rows = out["comparisons"].set_index(["stage", "metric"])
    for stage in ("analysis", "report", "workflow"):  # same durations, half the tokens
        assert -53 < rows.loc[(stage, "prompt_tok_s"), "median_diff_pct"] < -47


def test_like_conditions_are_recorded_and_raise_no_finding(tmp_path: Path) -> None:
    quality = aggregate(tmp_path, make_records(SCENARIO), SCENARIO)["quality"]

    control = quality["conditions"]["control"]
    assert control["cache_state"] == {"cold": 12}
    assert control["cache_controlled"] == {"true": 12, "false": 0, "unknown": 0}
    assert (control["num_ctx"], control["num_batch"], control["num_batch_basis"]) == (
        [4096], [512], ["derived"])
    assert control["truncated"] == {"true": 0, "false": 18, "unknown": 0}
    assert control["outcomes"] == {"ok": 18}
    assert quality["unequal_work"] == []
    assert quality["reload_mismatches"] == quality["context_shift_calls"] == []


def test_a_different_cache_state_or_engine_is_unequal_work(tmp_path: Path) -> None:
    records = _edited("treatment", cache_state="warm", engine_version="0.3.37")

    quality = aggregate(tmp_path, records, SCENARIO)["quality"]

    found = {u["check"]: u for u in quality["unequal_work"]}
    assert found["cache_state"]["control"] == "cold 12"
    assert found["cache_state"]["treatment"] == "warm 12"
    assert found["engine_version"]["treatment"] == "0.3.36, 0.3.37"  # warm-ups kept 0.3.36


def test_unknown_truncation_is_counted_never_taken_as_none(tmp_path: Path) -> None:
    records = _edited("control", truncated=None)

    quality = aggregate(tmp_path, records, SCENARIO)["quality"]

    assert quality["conditions"]["control"]["truncated"] == {
        "true": 0, "false": 6, "unknown": 12}
    assert quality["truncated_calls"] == []


def test_context_shifts_and_reload_mismatches_are_listed(tmp_path: Path) -> None:
    records = make_records(SCENARIO)
    shifted = next(r for r in records if r.arm == "treatment" and r.stage == "report")
    due = next(r for r in records if r.arm == "control" and r.stage == "analysis")
    records = [replace(r, context_shift=True) if r is shifted
               else replace(r, reload_expected=True) if r is due else r for r in records]

    quality = aggregate(tmp_path, records, SCENARIO)["quality"]

    assert [(c["arm"], c["seq"]) for c in quality["context_shift_calls"]] == [
        ("treatment", shifted.seq)]
    assert quality["conditions"]["treatment"]["context_shift"]["true"] == 1
    mismatch, = quality["reload_mismatches"]
    assert (mismatch["seq"], mismatch["reload_expected"], mismatch["reloaded"]) == (
        due.seq, True, False)
