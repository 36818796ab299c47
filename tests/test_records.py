"""The record contract: one set of rules for the line validator (journal, compare) and the
columnar readers (aggregate), and the columnar copy used only while it matches calls.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import parquet as pq

from ollabench.errors import RecordError
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE
from ollabench.records.calls_table import (
    SOURCE_BYTES_KEY,
    read_calls_table,
    table_schema,
    write_calls_table,
)
from ollabench.records.schema import REQUIRED_FIELDS, SCHEMA_VERSION, CallRecord, read_records
from tests.helpers.aggregate import edit_first_measured_ttft, raw_lines
from tests.helpers.synthetic import Scenario, make_records, write_raw

SCHEMA = table_schema()


def _read_table(raw: Path) -> tuple[pa.Table, Path]:
    return read_calls_table(raw, SCHEMA)


def _edited(tmp_path: Path, seq: int, **fields: Any) -> Path:
    """raw/calls.jsonl of a small scenario with fields of record `seq` (line seq + 1) set."""
    def edit(data: dict[str, Any]) -> None:
        if data["seq"] == seq:
            data.update(fields)

    return raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), edit)


# --------------------------------------------------------------------------- one set of rules


@pytest.mark.parametrize(("fields", "problem"), [
    ({"ttft_ms": "fast"}, "ttft_ms: must be a number, got 'fast'"),
    ({"output_tokens": "160"}, "output_tokens: must be an integer, got '160'"),
    ({"output_tokens": 160.5}, "output_tokens: must be an integer, got 160.5"),
    ({"reloaded": 1}, "reloaded: must be true or false, got 1"),
    ({"arm": None}, "arm: must be a string, got null"),
    ({"options": []}, "options: must be an object, got []"),
], ids=["string-number", "string-count", "float-count", "int-flag", "null-label", "options"])
def test_a_wrong_type_is_named_by_file_line_and_field(tmp_path: Path, fields: dict[str, Any],
                                                     problem: str) -> None:
    raw = _edited(tmp_path, 3, **fields)
    expected = f"{raw / CALLS_FILE}:4: {problem}"
    with pytest.raises(RecordError) as by_line:
        read_records(raw / CALLS_FILE)
    assert str(by_line.value) == expected
    if "options" not in fields:  # the columnar readers never read options (TABLE_LEFT_OUT)
        with pytest.raises(RecordError) as by_arrow:
            _read_table(raw)
        assert str(by_arrow.value) == expected


def test_a_field_that_may_be_null_may_be_left_out(tmp_path: Path) -> None:
    """Absent is null: the Arrow reader cannot tell them apart, so neither may the rules."""
    def drop(data: dict[str, Any]) -> None:
        del data["ttft_ms"], data["num_ctx"]

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), drop)
    assert {r.ttft_ms for r in read_records(raw / CALLS_FILE)} == {None}
    assert _read_table(raw)[0].column("ttft_ms").null_count == len(read_records(raw / CALLS_FILE))
    assert "seq" in REQUIRED_FIELDS and "ttft_ms" not in REQUIRED_FIELDS


def test_a_missing_field_and_another_version_are_named(tmp_path: Path) -> None:
    def drop(data: dict[str, Any]) -> None:
        del data["run"], data["stage"]

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), drop)
    for read in (read_records, lambda path: _read_table(path.parent)):
        with pytest.raises(RecordError, match=r"calls.jsonl:1: missing fields: run, stage$"):
            read(raw / CALLS_FILE)
    raw = _edited(tmp_path / "old", 5, schema_version=0)
    for read in (read_records, lambda path: _read_table(path.parent)):
        with pytest.raises(RecordError, match=r"calls.jsonl:6: record format version 0 is not"):
            read(raw / CALLS_FILE)


def test_a_line_that_is_not_a_record_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    record = make_records(Scenario(runs=1))[0].to_json()
    (raw / CALLS_FILE).write_text(f"{record}\n[1, 2]\n{record}\n", encoding="utf-8")
    for read in (read_records, lambda path: _read_table(path.parent)):
        with pytest.raises(RecordError, match=r"calls.jsonl:2: not a JSON object$"):
            read(raw / CALLS_FILE)


def test_text_with_unicode_line_separators_stays_one_line(tmp_path: Path) -> None:
    """A model's output may hold U+2028 or U+0085, which JSON leaves unescaped and which
    str.splitlines() would take for line breaks."""
    records = [CallRecord(seq=1, run=1, arm="control", profile="p", stage="analysis",
                          phase="measured", output="a\u2028b\x85c")]
    (tmp_path / CALLS_FILE).write_text(records[0].to_json() + "\n", encoding="utf-8")
    assert read_records(tmp_path / CALLS_FILE) == records


# --------------------------------------------------------------------------- torn and empty


def test_a_torn_last_line_is_skipped_in_the_journal(tmp_path: Path) -> None:
    """The resume journal is appended call by call: a crash can leave half a last line."""
    path = tmp_path / CALLS_FILE
    records = make_records(Scenario(runs=1))
    path.write_text("".join(r.to_json() + "\n" for r in records)
                    + '{"seq": 999, "run": 3, "arm": "contr', encoding="utf-8")
    assert read_records(path) == records


def test_a_torn_line_before_the_last_is_refused(tmp_path: Path) -> None:
    path = tmp_path / CALLS_FILE
    record = make_records(Scenario(runs=1))[0].to_json()
    path.write_text(f"{record}\n{record[:40]}\n{record}\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"calls.jsonl:2: not valid JSON \(EOF"):
        read_records(path)


def test_a_torn_last_line_is_refused_by_the_columnar_readers(tmp_path: Path) -> None:
    """data/raw/calls.jsonl is written whole: a line cut short there means damage. The copy
    is never written from it, and a copy of the whole file no longer matches."""
    scenario = Scenario(runs=2)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    text = (raw / CALLS_FILE).read_text(encoding="utf-8")
    lines = text.count("\n")
    (raw / CALLS_FILE).write_text(text[:-60], encoding="utf-8")
    message = rf"calls.jsonl:{lines}: not valid JSON \(.*\); the last line is cut short$"
    with pytest.raises(RecordError, match=message):
        _read_table(raw)
    with pytest.raises(RecordError, match=message):
        write_calls_table(raw)


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / CALLS_FILE
    path.write_text("")
    assert read_records(path) == []  # an empty journal: nothing to resume
    for text in ("", "\n\n"):
        path.write_text(text)
        with pytest.raises(RecordError, match=r"calls.jsonl: no records \(empty file\)"):
            _read_table(tmp_path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"calls\.jsonl: not found; run the bench stage"):
        _read_table(tmp_path)


# --------------------------------------------------------------------------- the columnar copy


def test_the_columnar_copy_is_used_only_while_it_matches_calls_jsonl(tmp_path: Path) -> None:
    """calls.jsonl is the source of truth: an edit of the same size (which a size check
    alone would miss) makes the reader parse the JSON again instead of using the copy."""
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    copy = pq.read_table(raw / CALLS_TABLE_FILE)
    assert copy.schema.metadata[SOURCE_BYTES_KEY] == str((raw / CALLS_FILE).stat().st_size).encode()
    assert "output" not in copy.column_names and "options" not in copy.column_names
    table, source = _read_table(raw)
    assert source == raw / CALLS_TABLE_FILE
    assert table.column("ttft_ms")[0].as_py() == copy.column("ttft_ms")[0].as_py()

    edited = edit_first_measured_ttft(raw, 12345.5)
    assert (raw / CALLS_FILE).stat().st_size == int(copy.schema.metadata[SOURCE_BYTES_KEY])
    table, source = _read_table(raw)
    assert source == raw / CALLS_FILE
    assert table.column("ttft_ms")[edited].as_py() == 12345.5


def test_a_damaged_copy_is_ignored(tmp_path: Path) -> None:
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    expected, _ = _read_table(raw)
    copy = (raw / CALLS_TABLE_FILE).read_bytes()
    for damaged in (copy[: len(copy) // 2], b"not parquet"):
        (raw / CALLS_TABLE_FILE).write_bytes(damaged)
        table, source = _read_table(raw)
        assert source == raw / CALLS_FILE
        assert table.equals(expected)


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
    assert _read_table(raw)[0].column("ttft_ms")[0].as_py() == 777.0


def test_the_copy_holds_what_the_records_hold(tmp_path: Path) -> None:
    scenario = Scenario(runs=2, failures=[("control", 1, "report")])
    records = make_records(scenario)
    raw = write_raw(tmp_path / "raw", records, scenario)
    rows = pq.read_table(raw / CALLS_TABLE_FILE).to_pylist()
    expected = [{k: v for k, v in json.loads(r.to_json()).items() if k in SCHEMA.names}
                for r in records]
    assert rows == expected


# --------------------------------------------------------------------------- format versions

GOLDEN_RAW = Path(__file__).resolve().parent / "golden" / "raw"


def test_a_version_1_record_reads_as_the_current_version_with_the_new_fields_unknown() -> None:
    stored = json.loads((GOLDEN_RAW / CALLS_FILE).read_text().splitlines()[1])
    assert stored["schema_version"] == 1

    record = read_records(GOLDEN_RAW / CALLS_FILE)[1]

    assert record.schema_version == SCHEMA_VERSION == 8
    assert (record.prompt_eval_tokens, record.cache_state, record.outcome,
            record.reload_expected, record.num_batch, record.task_turn,
            record.task_ended_by, record.replay_diverged, record.ttfb_ms,
            record.token_count_source, record.timing_source,
            record.retry_after_s, record.cpu_probe_ms) == (None,) * 13
    assert record.prompt_tok_s == stored["prompt_tok_s"]  # as version 1 computed it


def test_a_version_4_record_reads_with_the_later_fields_unknown(tmp_path: Path) -> None:
    later = ("ttfb_ms", "token_count_source", "timing_source",  # version 5
             "concurrency", "agent", "due_ms", "sent_ms", "in_flight", "queue_ms",  # version 6
             "retry_after_s",  # version 7
             "cpu_probe_ms")  # version 8
    stored = json.loads((GOLDEN_RAW / CALLS_FILE).read_text().splitlines()[1])
    for name in later:
        stored.pop(name, None)
    path = tmp_path / CALLS_FILE
    path.write_text(json.dumps({**stored, "schema_version": 4}) + "\n")

    record = read_records(path)[0]

    assert record.schema_version == SCHEMA_VERSION == 8
    assert record.concurrency == 1  # a record from before levels ran at level 1
    unknown = [name for name in later if name != "concurrency"]
    assert tuple(getattr(record, name) for name in unknown) == (None,) * len(unknown)
    assert record.ttft_ms == stored["ttft_ms"]


def test_the_columnar_path_upgrades_version_1_alike(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / CALLS_FILE).write_bytes((GOLDEN_RAW / CALLS_FILE).read_bytes())

    table, _ = _read_table(raw)

    assert set(table.column("schema_version").to_pylist()) == {SCHEMA_VERSION}
    assert set(table.column("outcome").to_pylist()) == {None}
    assert table.column("prompt_tok_s").null_count == 0


def test_a_version_7_file_and_its_older_copy_read_with_the_probe_unknown(tmp_path: Path) -> None:
    """A bench from before the CPU probe (schema 7) left a calls.parquet without the column:
    the copy is refused and calls.jsonl read, cpu_probe_ms null, never 0."""
    def as_version_7(data: dict[str, Any]) -> None:
        data.pop("cpu_probe_ms", None)
        data["schema_version"] = 7

    raw = raw_lines(tmp_path / "raw", make_records(Scenario(runs=2)), as_version_7)
    copy = write_calls_table(raw)
    older = pq.read_table(copy)
    pq.write_table(older.drop_columns(["cpu_probe_ms"]).replace_schema_metadata(
        older.schema.metadata), copy)

    table, source = _read_table(raw)

    assert source == raw / CALLS_FILE
    assert set(table.column("schema_version").to_pylist()) == {SCHEMA_VERSION}
    assert table.column("cpu_probe_ms").null_count == table.num_rows
