"""The record contract across versions: version-1 files stay readable as version 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollabench.errors import RecordError
from ollabench.records import SCHEMA_VERSION, parse_calls, read_records, table_schema

GOLDEN_RAW = Path(__file__).resolve().parent / "golden" / "raw" / "calls.jsonl"


def test_a_version_1_record_reads_as_version_2_with_the_new_fields_unknown() -> None:
    stored = json.loads(GOLDEN_RAW.read_text().splitlines()[1])
    assert stored["schema_version"] == 1

    record = read_records(GOLDEN_RAW)[1]

    assert record.schema_version == SCHEMA_VERSION == 2
    assert (record.prompt_eval_tokens, record.cache_state, record.outcome,
            record.reload_expected, record.num_batch) == (None, None, None, None, None)
    assert record.prompt_tok_s == stored["prompt_tok_s"]  # as version 1 computed it


def test_the_columnar_path_upgrades_version_1_alike() -> None:
    table = parse_calls(GOLDEN_RAW, table_schema())

    assert set(table.column("schema_version").to_pylist()) == {SCHEMA_VERSION}
    assert set(table.column("outcome").to_pylist()) == {None}
    assert table.column("prompt_tok_s").null_count == 0


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    line = json.loads(GOLDEN_RAW.read_text().splitlines()[0]) | {"schema_version": 0}
    (tmp_path / "calls.jsonl").write_text(json.dumps(line) + "\n")

    with pytest.raises(RecordError, match=r"version 0 is not supported .*versions 1, 2"):
        read_records(tmp_path / "calls.jsonl")
