"""The raw per-call record: the data contract between `bench` and everything downstream.

Every figure in a report is recomputed from these records, so they are never thrown away,
and an unknown value is `None` (JSON null), never 0. docs/metrics.md defines each field.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollabench.errors import RecordError
from ollabench.files import Staging, sha256_file, write_text_atomic
from ollabench.paths import CALLS_FILE, CALLS_TABLE_FILE

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = 2
# Version 1 lacks the fields version 2 added (all of them nullable): its records are read as
# version 2 with those fields null. Its prompt_tok_s, computed over the whole prompt, is kept
# as recorded (see CallRecord.from_dict).
UPGRADED_VERSIONS = frozenset({1})
TABLE_LEFT_OUT = ("output", "options")
SOURCE_SHA256_KEY = b"ollabench.source_sha256"
SOURCE_BYTES_KEY = b"ollabench.source_bytes"
LABEL_FIELDS = frozenset({"arm", "profile", "stage", "phase", "done_reason", "model", "backend",
                          "outcome", "cache_state", "num_batch_basis", "engine_version"})

ARMS = ("control", "treatment")
MEASURED_STAGES = ("analysis", "report")
WARMUP_STAGE = "warmup"
PRIME_PHASE = "prime"  # a primer call before a measured one (run.prompt_cache: true)

# How a call ended (CallMeasurement.outcome), so retries never parse error texts.
OK = "ok"
HTTP_ERROR = "http_error"  # the server answered an HTTP error status before the first chunk
STREAM_ERROR = "stream_error"  # an {"error"} line inside a started stream
NO_FINAL_CHUNK = "no_final_chunk"  # the body ended cleanly without a done chunk or an error
FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # nothing arrived within run.first_token_timeout_s
STALLED = "stalled"  # a started stream went silent for run.read_timeout_s
DISCONNECTED = "disconnected"  # the connection closed mid-stream
MALFORMED = "malformed"  # a stream line that is not a JSON object
UNREACHABLE = "unreachable"  # no connection to the server
ENGINE_ERROR = "engine_error"  # the embedded engine raised
SKIPPED = "skipped"  # not run: the call it depends on never succeeded
OUTCOMES = (OK, HTTP_ERROR, STREAM_ERROR, NO_FINAL_CHUNK, FIRST_TOKEN_TIMEOUT, STALLED,
            DISCONNECTED, MALFORMED, UNREACHABLE, ENGINE_ERROR, SKIPPED)



@dataclass
class CallMeasurement:
    """What a backend measured for one LLM call (times in ms on the client's monotonic clock)."""

    ttft_ms: float | None = None
    e2e_ms: float | None = None
    load_ms: float | None = None
    prompt_eval_ms: float | None = None
    eval_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    prompt_eval_tokens: int | None = None
    prompt_cached_tokens: int | None = None
    output_tokens: int | None = None
    done_reason: str | None = None
    truncated: bool | None = None
    context_shift: bool | None = None
    reloaded: bool | None = None
    reload_expected: bool | None = None
    cache_state: str | None = None
    cache_controlled: bool | None = None
    nonce: str | None = None
    first_token_thinking: bool | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_max_ms: float | None = None
    num_ctx: int | None = None
    num_batch: int | None = None
    num_batch_basis: str | None = None
    engine_version: str | None = None
    output: str = ""
    outcome: str | None = None
    http_status: int | None = None
    error: str | None = None


@dataclass
class CallRecord(CallMeasurement):
    """One line of calls.jsonl: a measurement plus where it sits in the schedule."""

    seq: int = 0
    run: int = 0
    arm: str = ""
    profile: str = ""
    stage: str = ""
    phase: str = ""
    attempt: int = 1
    started_at: str = ""
    model: str = ""
    backend: str = ""
    eval_tok_s: float | None = None
    prompt_tok_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.eval_tok_s = rate_per_s(self.output_tokens, self.eval_ms)
        self.prompt_tok_s = rate_per_s(self.prompt_eval_tokens, self.prompt_eval_ms)

    @property
    def key(self) -> tuple[int, int]:
        """A slot of the schedule (seq) and its try: a resumed run never repeats one."""
        return (self.seq, self.attempt)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        known = {f.name for f in fields(cls)}
        missing = sorted(REQUIRED_FIELDS - data.keys())
        if missing:
            raise RecordError(f"record is missing fields: {', '.join(missing)}")
        version = data.get("schema_version")
        upgraded = version in UPGRADED_VERSIONS
        if version != SCHEMA_VERSION and not upgraded:
            raise RecordError(
                f"record format version {version!r} is not supported "
                f"(this ollabench reads versions {_readable()}); re-run the bench stage"
            )
        record = cls(**{k: v for k, v in data.items() if k in known and k != "schema_version"})
        if upgraded:  # the rate as that version computed it, as the columnar path reads it
            record.prompt_tok_s = data.get("prompt_tok_s")
        return record


REQUIRED_FIELDS = frozenset(
    {"seq", "run", "arm", "profile", "stage", "phase", "ttft_ms", "e2e_ms", "eval_ms",
     "output_tokens", "error", "schema_version"}
)


def _readable() -> str:
    return ", ".join(map(str, sorted({*UPGRADED_VERSIONS, SCHEMA_VERSION})))


def rate_per_s(count: int | None, duration_ms: float | None) -> float | None:
    """Tokens per second, or None when either side is unknown or the duration is zero."""
    if count is None or duration_ms is None or duration_ms <= 0:
        return None
    return count / duration_ms * 1000.0


def append_record(path: Path, record: CallRecord) -> None:
    """Append one record and force it to disk before the next call starts (crash-safe)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(record.to_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path) -> list[CallRecord]:
    """Read a calls.jsonl file; a torn last line (a crash mid-write) is skipped."""
    return list(_iter_records(path))


def _iter_records(path: Path) -> Iterator[CallRecord]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return  # torn tail of an interrupted append
            raise RecordError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        try:
            yield CallRecord.from_dict(data)
        except RecordError as exc:
            raise RecordError(f"{path}:{number}: {exc}") from exc


def write_records_atomic(path: Path, records: Iterable[CallRecord]) -> None:
    """Write a complete calls.jsonl through a temporary file so readers never see half of it."""
    write_text_atomic(path, "".join(r.to_json() + "\n" for r in records))


# --------------------------------------------------------------------------- columnar access


def table_schema() -> pa.Schema:
    """Arrow types of the record fields but TABLE_LEFT_OUT, from the CallRecord type hints,
    so that the contract is written down once."""
    import pyarrow as pa

    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
    hints = typing.get_type_hints(CallRecord)
    schema = []
    for name in (f.name for f in fields(CallRecord) if f.name not in TABLE_LEFT_OUT):
        hint = hints[name]
        if isinstance(hint, types.UnionType):  # `float | None` and the like
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        schema.append((name, arrow[hint]))
    return pa.schema(schema)


def parse_calls(path: Path, schema: pa.Schema) -> pa.Table:
    """calls.jsonl as an Arrow table of the schema's columns (Arrow's multi-threaded JSON
    reader; a field missing from a record is null), labels dictionary-encoded. As in
    read_records, a torn last line (a crash mid-append) is skipped."""
    import pyarrow as pa

    if not path.is_file():
        raise RecordError(f"{path}: not found; run the bench stage first")
    _check_first_record(path)
    source: Path | pa.BufferReader = path
    if (complete := _without_torn_tail(path)) is not None:
        source = pa.BufferReader(complete)
    return _conform(_parse_json(path, source, schema), schema)


def _parse_json(path: Path, source: Path | pa.BufferReader, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa
    from pyarrow import json as pa_json

    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(source, parse_options=options)
    except pa.ArrowInvalid as exc:
        raise RecordError(f"{path}: not valid records ({exc})") from exc
    if table.num_rows == 0:
        raise RecordError(f"{path}: no records")
    return table


def _check_first_record(path: Path) -> None:
    """Name the missing columns from the first record: a file of another format fails here
    with a message that says what is missing, not a parser error."""
    with path.open("rb") as fh:
        first = next((line for line in fh if line.strip()), b"")
    try:
        keys = set(json.loads(first)) if first else set()
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:1: not valid JSON ({exc.msg})") from exc
    if not keys:
        raise RecordError(f"{path}: no records")
    if missing := sorted(REQUIRED_FIELDS - keys):
        raise RecordError(f"{path}: missing columns: {', '.join(missing)}")


def _without_torn_tail(path: Path) -> bytes | None:
    """The file's bytes up to its last complete line when the last line is torn, else None
    (the common case: the file is then read straight from disk)."""
    size = path.stat().st_size
    window = 1 << 16
    with path.open("rb") as fh:
        while True:
            start = max(0, size - window)
            fh.seek(start)
            body = fh.read().rstrip(b"\r\n")
            if b"\n" in body or start == 0:
                break
            window *= 4
    cut = body.rfind(b"\n") + 1
    try:
        json.loads(body[cut:])
    except json.JSONDecodeError:
        return path.read_bytes()[:start + cut]
    return None


def write_calls_table(raw_dir: Path) -> Path:
    """Write raw_dir/calls.parquet from raw_dir/calls.jsonl, stamped with the size and
    SHA-256 of the exact bytes it was parsed from (see read_calls_table)."""
    import pyarrow as pa
    from pyarrow import parquet as pq

    source = raw_dir / CALLS_FILE
    _check_first_record(source)
    data = source.read_bytes()
    table = _parse_json(source, pa.BufferReader(data), table_schema())
    table = table.replace_schema_metadata({
        SOURCE_SHA256_KEY: hashlib.sha256(data).hexdigest().encode(),
        SOURCE_BYTES_KEY: str(len(data)).encode(),
    })
    target = raw_dir / CALLS_TABLE_FILE
    with Staging() as staging:
        pq.write_table(table, staging.path(target), compression="zstd")
        staging.commit()
    return target


def read_calls_table(raw_dir: Path, schema: pa.Schema,
                     pool: Executor) -> tuple[pa.Table, Path, Future[bool]]:
    """The schema's columns of raw_dir's calls, cast to its types, the file they were read
    from, and a future that says whether they are calls.jsonl's content as it is now.

    calls.parquet is read when its stamp has calls.jsonl's size; the SHA-256 of calls.jsonl
    is then computed in `pool` (hashlib releases the GIL) while the caller goes on, and the
    future holds whether it matches the stamp. Otherwise (no copy, another size, a copy that
    cannot be read) calls.jsonl, the source of truth, is parsed and the future is true."""
    import pyarrow as pa
    from pyarrow import parquet as pq

    source, copy = raw_dir / CALLS_FILE, raw_dir / CALLS_TABLE_FILE
    parsed: Future[bool] = Future()
    parsed.set_result(True)
    try:
        stamp = (pq.read_schema(copy).metadata or {}) if copy.is_file() else {}
        if source.is_file() and stamp.get(SOURCE_BYTES_KEY) == str(
                source.stat().st_size).encode():
            matches = pool.submit(
                lambda: sha256_file(source).encode() == stamp.get(SOURCE_SHA256_KEY))
            table = pq.read_table(copy, columns=schema.names,
                                  read_dictionary=_labels(schema.names))
            return _conform(table, schema), copy, matches
    except (pa.ArrowException, OSError):
        pass  # a damaged copy, or one of another format: the copy is only a cache
    return parse_calls(source, schema), source, parsed


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns cast to the schema's types, labels (LABEL_FIELDS) dictionary-encoded, which
    pandas turns into categories, and upgraded versions read as the current one (see
    UPGRADED_VERSIONS): the same table from either file."""
    import pyarrow as pa
    import pyarrow.compute as pc

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


def _labels(columns: Sequence[str]) -> list[str]:
    """String columns with few distinct values, read as dictionaries (pandas categories)."""
    return [c for c in columns if c in LABEL_FIELDS]

