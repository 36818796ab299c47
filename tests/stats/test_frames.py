"""Calls as frames: the same frame from in-memory records, calls.parquet and calls.jsonl."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE
from ollabench.records.schema import read_records
from ollabench.stats.frames import FRAME_COLUMNS, read_calls, records_frame
from tests.helpers.synthetic import Scenario, make_records, write_raw


def test_every_reader_gives_the_same_frame(tmp_path: Path) -> None:
    """Columns, types and values: records_frame (compare), the copy and calls.jsonl."""
    scenario = Scenario(runs=3, failures=[("treatment", 1, "report")])
    raw = write_raw(tmp_path, make_records(scenario), scenario)
    from_records = records_frame(read_records(raw / CALLS_FILE))
    from_copy, source = read_calls(raw)
    assert source == raw / CALLS_TABLE_FILE
    (raw / CALLS_TABLE_FILE).unlink()
    parsed, source = read_calls(raw)
    assert source == raw / CALLS_FILE
    assert list(from_records.columns) == list(FRAME_COLUMNS)
    assert from_records["output_tokens"].dtype == "float64"  # a count may be unknown: NaN
    assert from_records["arm"].dtype == "category"
    for frame in (from_copy, parsed):
        pd.testing.assert_frame_equal(frame, from_records, check_categorical=False)
