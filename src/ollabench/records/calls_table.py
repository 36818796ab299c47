"""calls.parquet: a columnar copy of calls.jsonl that makes the aggregate fast, and the one
reader that hands the statistics either file as the same Arrow table.

The copy is only a cache: it is used while its stamp (the size and SHA-256 of the exact
calls.jsonl bytes it was parsed from) matches, and otherwise calls.jsonl, the source of truth,
is parsed and checked again. Both paths apply the record schema of records.py; a refused file
is handed to the line validator so both name the same file, line and field.
"""

from __future__ import annotations

import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ollabench.errors import RecordError
from ollabench.files import Staging, sha256_file
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE
from ollabench.records.schema import (
    FIELDS,
    READABLE_VERSIONS,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    UPGRADED_VERSIONS,
    CallRecord,
    checked_records,
)

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_LEFT_OUT = ("output", "options")  # long texts and free-form maps: not in calls.parquet
SOURCE_SHA256_KEY = b"ollabench.source_sha256"
SOURCE_BYTES_KEY = b"ollabench.source_bytes"
# String fields with few distinct values: Arrow dictionaries, pandas categories.
LABEL_FIELDS = frozenset({"arm", "profile", "stage", "phase", "done_reason", "model", "backend",
                          "outcome", "cache_state", "num_batch_basis", "engine_version",
                          "task_ended_by"})


def table_schema() -> pa.Schema:
    """Arrow types of every field but TABLE_LEFT_OUT: calls.parquet's columns."""
    import pyarrow as pa

    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    return pa.schema([(f.name, arrow[f.kind]) for f in FIELDS if f.name not in TABLE_LEFT_OUT])


def write_calls_table(raw_dir: Path) -> Path:
    """Write raw_dir/calls.parquet from raw_dir/calls.jsonl, checked as the JSON path of
    read_calls_table checks it, and stamped with the size and SHA-256 of the exact bytes it
    was parsed from."""
    import hashlib

    import pyarrow as pa
    from pyarrow import parquet as pq

    source = raw_dir / CALLS_FILE
    data = source.read_bytes()
    table = _checked_table(source, pa.BufferReader(data)).replace_schema_metadata({
        SOURCE_SHA256_KEY: hashlib.sha256(data).hexdigest().encode(),
        SOURCE_BYTES_KEY: str(len(data)).encode(),
    })
    target = raw_dir / CALLS_TABLE_FILE
    with Staging() as staging:
        pq.write_table(table, staging.path(target), compression="zstd")
        staging.commit()
    return target


def read_calls_table(raw_dir: Path, schema: pa.Schema) -> tuple[pa.Table, Path]:
    """The schema's columns of raw_dir's calls, cast to its types, and the file they came
    from. calls.parquet when its stamp holds calls.jsonl's current size and SHA-256 (the
    hash is computed on a worker thread while the copy is read: hashlib and Arrow release
    the GIL); otherwise calls.jsonl, the source of truth, parsed and checked."""
    import pyarrow as pa
    from pyarrow import parquet as pq

    source, copy = raw_dir / CALLS_FILE, raw_dir / CALLS_TABLE_FILE
    if not source.is_file():
        raise RecordError(f"{source}: not found; run the bench stage first")
    try:
        stamp = (pq.read_schema(copy).metadata or {}) if copy.is_file() else {}
        if stamp.get(SOURCE_BYTES_KEY) == str(source.stat().st_size).encode():
            with ThreadPoolExecutor(max_workers=1) as pool:
                digest = pool.submit(sha256_file, source)
                table = pq.read_table(copy, columns=schema.names,
                                      read_dictionary=_labels(schema.names))
                if digest.result().encode() == stamp.get(SOURCE_SHA256_KEY):
                    return _conform(table, schema), copy
    except (pa.ArrowException, OSError):
        pass  # a damaged copy, or one of another format: the copy is only a cache
    return _conform(_checked_table(source, source), schema), source


def records_table(records: list[CallRecord], schema: pa.Schema) -> pa.Table:
    """In-memory records as read_calls_table gives the files: the same columns and types."""
    import pyarrow as pa

    return _conform(pa.table({target.name: pa.array([getattr(r, target.name) for r in records],
                                                    type=target.type) for target in schema}),
                    schema)


def _checked_table(path: Path, data: Path | pa.BufferReader) -> pa.Table:
    """Every field but TABLE_LEFT_OUT as parsed by Arrow's multi-threaded JSON reader with
    the record's own types (it refuses a string in a number field, a float in an integer
    field, ...), then the rules Arrow cannot apply: no null where the field allows none,
    the supported format version. A refused file is read again by the line validator to
    name the first bad line and field; a torn last line is refused too (calls.jsonl is
    written whole, so it means damage)."""
    import pyarrow as pa
    from pyarrow import compute as pc
    from pyarrow import json as pa_json

    schema = table_schema()
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(data, parse_options=options)
    except pa.ArrowInvalid as exc:
        _name_the_bad_line(path, str(exc))
    if table.num_rows == 0:
        raise RecordError(f"{path}: no records (empty file); run the bench stage")
    nulls = any(table.column(f).null_count for f in REQUIRED_FIELDS if f in schema.names)
    readable = pa.array(sorted(READABLE_VERSIONS), table.column("schema_version").type)
    if nulls or not pc.all(pc.is_in(table.column("schema_version"), readable)).as_py():
        _name_the_bad_line(path, "a field is null or missing")
    return table


def _name_the_bad_line(path: Path, fallback: str) -> typing.NoReturn:
    if path.stat().st_size == 0:
        raise RecordError(f"{path}: no records (empty file); run the bench stage")
    for _ in checked_records(path, skip_torn_tail=False):
        pass
    raise RecordError(f"{path}: not valid records ({fallback})")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The schema's columns cast to its types, labels (LABEL_FIELDS) dictionary-encoded,
    which pandas turns into categories, and upgraded versions read as the current one (see
    UPGRADED_VERSIONS): the same table from either file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.select(schema.names)
    for index, target in enumerate(schema):
        column = table.column(index)
        if target.name == "schema_version":
            upgraded = pc.is_in(column, pa.array(sorted(UPGRADED_VERSIONS), column.type))
            column = pc.if_else(upgraded, pa.scalar(SCHEMA_VERSION, column.type), column)
            table = table.set_column(index, target.name, column)
        if target.name in LABEL_FIELDS:
            if not pa.types.is_dictionary(column.type):
                table = table.set_column(index, target.name, column.dictionary_encode())
        elif column.type != target.type:
            table = table.set_column(index, target.name, column.cast(target.type))
    return table


def _labels(columns: list[str]) -> list[str]:
    """The label columns among `columns`, read from Parquet as dictionaries."""
    return [c for c in columns if c in LABEL_FIELDS]
