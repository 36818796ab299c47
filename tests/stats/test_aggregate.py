"""The aggregate stage: outputs independent of the file read, and refusals that leave the
previous outputs untouched."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ollabench.errors import AggregateError, OllabenchError, RecordError
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE, PER_RUN_FILE, SUMMARY_FILE
from ollabench.stats import run_aggregate
from ollabench.stats.aggregate import json_text
from tests.helpers.aggregate import edit_first_measured_ttft, raw_lines
from tests.helpers.synthetic import Scenario, make_records, write_raw


def test_aggregate_outputs_do_not_depend_on_the_copy(tmp_path: Path) -> None:
    """The same files from a matching copy, from calls.jsonl alone, and from a stale copy
    (calls.jsonl edited after the copy was written: the edit must show)."""
    scenario = Scenario(runs=6, failures=[("treatment", 2, "report")])
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)

    def outputs(name: str, source: str) -> dict[str, bytes]:
        out = tmp_path / name
        assert run_aggregate(raw, out, out / "metrics.json", 5.0) == raw / source
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    with_copy = outputs("with-copy", CALLS_TABLE_FILE)
    copy = (raw / CALLS_TABLE_FILE).read_bytes()
    (raw / CALLS_TABLE_FILE).unlink()
    assert outputs("json-only", CALLS_FILE) == with_copy
    (raw / CALLS_TABLE_FILE).write_bytes(copy)
    edit_first_measured_ttft(raw, 12345.5)
    stale = outputs("stale-copy", CALLS_FILE)
    assert b"12345.5" in stale[PER_RUN_FILE]
    assert stale[PER_RUN_FILE] != with_copy[PER_RUN_FILE]
    (raw / CALLS_TABLE_FILE).unlink()
    assert outputs("json-only-after-edit", CALLS_FILE) == stale


def _assert_refused(tmp_path: Path, raw: Path, error: type[OllabenchError], *words: str) -> None:
    out, metrics = tmp_path / "processed", tmp_path / "reports" / "metrics.json"
    out.mkdir(parents=True)
    (out / SUMMARY_FILE).write_text("previous\n")
    with pytest.raises(error) as caught:
        run_aggregate(raw, out, metrics, 5.0)
    for word in words:
        assert word in str(caught.value)
    # nothing half-written: the previous output is untouched, no new file, no staging left
    assert "\n" not in str(caught.value)  # one line on stderr
    assert [p.name for p in out.iterdir()] == [SUMMARY_FILE]
    assert (out / SUMMARY_FILE).read_text() == "previous\n"
    assert not metrics.exists()


def test_missing_fields_are_named_with_file_and_line(tmp_path: Path) -> None:
    def drop(data: dict[str, object]) -> None:
        del data["run"], data["stage"]

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), drop)
    _assert_refused(tmp_path, raw, RecordError, f"{raw / CALLS_FILE}:1: missing fields: run, stage")


def test_a_wrong_type_is_named_with_file_line_and_field(tmp_path: Path) -> None:
    """Arrow's type error is not shown: the line validator names the line and field."""
    def fast(data: dict[str, object]) -> None:
        if data["seq"] == 3:
            data["ttft_ms"] = "fast"

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), fast)
    _assert_refused(tmp_path, raw, RecordError,
                    f"{raw / CALLS_FILE}:4: ttft_ms: must be a number, got 'fast'")


def test_a_torn_last_line_is_refused(tmp_path: Path) -> None:
    """calls.jsonl in data/raw is written whole by the bench stage, so a line cut short is
    damage, not the trace of a crash (unlike the resume journal: see test_records)."""
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    lines = (raw / CALLS_FILE).read_text(encoding="utf-8").splitlines()
    (raw / CALLS_FILE).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40],
                                  encoding="utf-8")
    _assert_refused(tmp_path, raw, RecordError, f"{raw / CALLS_FILE}:{len(lines)}: not valid JSON",
                    "cut short")


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / CALLS_FILE).write_text("")
    _assert_refused(tmp_path, raw, RecordError, f"{raw / CALLS_FILE}: no records (empty file)")


def test_a_single_arm_is_refused(tmp_path: Path) -> None:
    records = [r for r in make_records(Scenario(runs=3)) if r.arm == "control"]
    _assert_refused(tmp_path, raw_lines(tmp_path / "raw", records), AggregateError,
                    "only one arm", "control")


def test_no_measured_calls_is_refused(tmp_path: Path) -> None:
    records = [r for r in make_records(Scenario(runs=3)) if r.phase == "warmup"]
    _assert_refused(tmp_path, raw_lines(tmp_path / "raw", records), AggregateError,
                    "no measured calls", "3 warm-ups")


def test_a_missing_file_and_a_wrong_version_are_named(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="not found"):
        run_aggregate(tmp_path / "nowhere", tmp_path / "p", tmp_path / "m.json", 5.0)

    def old(data: dict[str, object]) -> None:
        data["schema_version"] = 0

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), old)
    _assert_refused(tmp_path, raw, RecordError, f"{raw / CALLS_FILE}:1: record format version 0")


def test_nan_becomes_null_in_json() -> None:
    text = json_text({"a": math.nan, "b": np.float64("nan"), "c": [np.int64(2)]})
    assert json.loads(text) == {"a": None, "b": None, "c": [2]}
