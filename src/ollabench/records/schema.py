"""The raw per-call record: the data contract between `bench` and everything downstream.

Every figure in a report is recomputed from these records, so they are never thrown away,
and an unknown value is `None` (JSON null), never 0. docs/metrics.md defines each field.

`CallRecord` is the one declaration of the record schema: its type hints give each field's
type, whether it may be null, and (not null) that it must be present. The line validator
(`read_records`) and the columnar readers of calls_table.py apply
those rules; the columnar readers hand any line they refuse to the line validator, so both
name the same file, line and field.
"""

from __future__ import annotations

import functools
import json
import os
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollabench.errors import RecordError
from ollabench.files import write_text_atomic

if TYPE_CHECKING:
    from pydantic import BaseModel

SCHEMA_VERSION = 8
# Versions 1 to 7 lack the fields later versions added (all of them nullable: 2 the cache
# and outcome fields, 3 the tool agent's task fields, 4 the trace's replay_diverged, 5 time
# to first chunk and the sources of token counts and timings, 6 the load fields of
# run.concurrency: level, agent, due and send times, in flight, queue wait; 7 retry_after_s;
# 8 cpu_probe_ms):
# their records are read as the current version with those fields null. Version 1's
# prompt_tok_s, computed over the whole prompt, is kept as recorded (see _parse_record;
# version 2's equals the recomputed one).
UPGRADED_VERSIONS = frozenset({1, 2, 3, 4, 5, 6, 7})
READABLE_VERSIONS = UPGRADED_VERSIONS | {SCHEMA_VERSION}

ARMS = ("control", "treatment")
WARMUP_STAGE = "warmup"
PRIME_PHASE = "prime"  # a primer call before a measured one (run.prompt_cache: true)
UNREACHED_PHASE = "unreached"  # a step not run: its run's task had ended (a final answer)

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
NOT_REACHED = "not_reached"  # not run, and no failure: the task had ended (UNREACHED_PHASE)
# How queue_ms was obtained: measured as the wait for the in-process engine; or derived from
# an Ollama server's durations (total - load - prompt_eval - eval) less the same arm's median
# of that residual at level 1 (template and HTTP overhead), or without that correction while
# no level-1 call of the arm is known yet.
QUEUE_ENGINE_WAIT = "engine_wait"
QUEUE_SERVER_RESIDUAL = "server_residual"
QUEUE_SERVER_RESIDUAL_RAW = "server_residual_uncorrected"
QUEUE_SOURCES = (QUEUE_ENGINE_WAIT, QUEUE_SERVER_RESIDUAL, QUEUE_SERVER_RESIDUAL_RAW)
# Where a record's token counts come from (token_count_source): the engine's own counters
# (embedded, Ollama's final chunk), an OpenAI server's `usage`, the chunks that carried
# output, or the model's tokenizer run on the output by the client.
ENGINE_COUNT, USAGE, CHUNKS, TOKENIZER = "engine", "usage", "chunks", "tokenizer"
TOKEN_SOURCES = (ENGINE_COUNT, USAGE, CHUNKS, TOKENIZER)
# Who timed prompt_eval_ms and eval_ms (timing_source): the engine itself, or the client from
# the chunks' arrival times (no prompt time then).
ENGINE_CLOCK, CLIENT_CLOCK = "engine", "client"
TIMING_SOURCES = (ENGINE_CLOCK, CLIENT_CLOCK)
OUTCOMES = (OK, HTTP_ERROR, STREAM_ERROR, NO_FINAL_CHUNK, FIRST_TOKEN_TIMEOUT, STALLED,
            DISCONNECTED, MALFORMED, UNREACHABLE, ENGINE_ERROR, SKIPPED, NOT_REACHED)


@dataclass
class CallMeasurement:
    """What a backend measured for one LLM call (times in ms on the client's monotonic clock)."""

    ttft_ms: float | None = None
    ttfb_ms: float | None = None  # first chunk of the body, whatever it carried
    e2e_ms: float | None = None
    load_ms: float | None = None
    prompt_eval_ms: float | None = None
    eval_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    prompt_eval_tokens: int | None = None
    prompt_cached_tokens: int | None = None
    output_tokens: int | None = None
    token_count_source: str | None = None  # TOKEN_SOURCES: where output_tokens came from
    timing_source: str | None = None  # TIMING_SOURCES: who timed prompt_eval_ms and eval_ms
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
    # The wait for a free server slot inside ttft_ms and e2e_ms, and how it was obtained
    # (QUEUE_SOURCES; docs/metrics.md, Under load).
    queue_ms: float | None = None
    queue_ms_source: str | None = None
    output: str = ""
    outcome: str | None = None
    http_status: int | None = None
    error: str | None = None
    # A busy server's Retry-After (429/503), bounded by run.retry_after_max_s: the wait
    # before the next try, in seconds.
    retry_after_s: float | None = None


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
    # Output quality (workloads/quality.py), on measured calls that succeeded.
    numbers_in_output: int | None = None
    numbers_supported: int | None = None
    parts_expected: int | None = None
    parts_found: int | None = None
    output_chars: int | None = None
    output_similarity_pct: float | None = None  # to the other arm's output, same run and step
    # The host while the call ran (host.py): other processes' CPU, steal, load, clock.
    host_other_cpu_pct: float | None = None
    host_steal_pct: float | None = None
    host_load_1m: float | None = None
    cpu_mhz: float | None = None
    cpu_probe_ms: float | None = None  # a fixed CPU workload's wall time just before the call
    # The tool agent's turn (workloads/tool_agent.py), on measured calls that succeeded.
    task_turn: int | None = None
    tool_calls: int | None = None
    invalid_tool_calls: int | None = None
    tool_ms: float | None = None
    task_ended_by: str | None = None  # on the turn that ended the task
    # Load (run.concurrency; docs/metrics.md, Under load): the block's level and which of its
    # agents made the call; when the call was due and when it was sent, in ms after its block
    # started (client's monotonic clock); this arm's calls in flight at send, this one
    # included. Records written before levels existed read as level 1.
    concurrency: int | None = None
    agent: int | None = None
    due_ms: float | None = None
    sent_ms: float | None = None
    in_flight: int | None = None
    # A replayed session turn (workloads/trace.py, replay: model): its reply is not the
    # recorded one, so the later turns follow the model, not the recording.
    replay_diverged: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.concurrency is None:  # written before levels existed: one agent at a time
            self.concurrency = 1
        self.eval_tok_s = rate_per_s(self.output_tokens, self.eval_ms)
        self.prompt_tok_s = rate_per_s(self.prompt_eval_tokens, self.prompt_eval_ms)

    @property
    def key(self) -> tuple[int, int]:
        """A slot of the schedule (seq) and its try: a resumed run never repeats one."""
        return (self.seq, self.attempt)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class FieldSpec:
    """One field of the record as the files hold it: JSON type, and whether it may be null.
    A field that may not be null must be present; one that may be null may be left out."""

    name: str
    kind: type  # int, float, str, bool or dict
    nullable: bool
    hint: Any  # the annotation, for the validator


def _field_specs() -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(CallRecord)
    specs = []
    for f in fields(CallRecord):
        hint = hints[f.name]
        args = typing.get_args(hint)
        nullable = isinstance(hint, types.UnionType) and type(None) in args
        kind = next(a for a in args if a is not type(None)) if nullable else hint
        specs.append(FieldSpec(f.name, typing.get_origin(kind) or kind, nullable, hint))
    return tuple(specs)


FIELDS = _field_specs()
FIELD_BY_NAME = {f.name: f for f in FIELDS}
REQUIRED_FIELDS = frozenset(f.name for f in FIELDS if not f.nullable)
_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "an object"}


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


def write_records_atomic(path: Path, records: Iterable[CallRecord]) -> None:
    """Write a complete calls.jsonl through a temporary file so readers never see half of it."""
    write_text_atomic(path, "".join(r.to_json() + "\n" for r in records))


# --------------------------------------------------------------------------- the line validator


def read_records(path: Path) -> list[CallRecord]:
    """Read a calls.jsonl file, every line checked (RecordError names file, line and field).
    A torn last line is skipped: in the resume journal it is the expected trace of a crash
    mid-append."""
    return list(checked_records(path, skip_torn_tail=True))


def checked_records(path: Path, skip_torn_tail: bool) -> Iterator[CallRecord]:
    lines = path.read_bytes().split(b"\n")  # not splitlines: text may hold U+2028 and the like
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for index, line in enumerate(lines[:last + 1]):
        if not line.strip():
            continue
        try:
            yield _parse_record(line)
        except _NotJson as exc:
            if index == last and skip_torn_tail:
                return
            cut = "; the last line is cut short" if index == last else ""
            raise RecordError(f"{path}:{index + 1}: not valid JSON ({exc}){cut}") from None
        except RecordError as exc:
            raise RecordError(f"{path}:{index + 1}: {exc}") from None


class _NotJson(RecordError):
    """A line that is not JSON at all (a torn line, or not a record file)."""


def _parse_record(line: bytes | str) -> CallRecord:
    """One line of calls.jsonl as a CallRecord, checked against the schema: strict types (a
    number in quotes is refused, never converted), null only where the field allows it."""
    from pydantic import ValidationError

    try:
        data = _validator().model_validate_json(line)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        if problems[0]["type"] == "json_invalid":
            raise _NotJson(problems[0]["ctx"]["error"]) from None
        _check_version(json.loads(line).get("schema_version") if problems[0]["loc"] else None)
        raise RecordError(_described(problems)) from None
    _check_version(data.schema_version)
    values = dict(data)
    record = CallRecord(**{**values, "schema_version": SCHEMA_VERSION})
    if data.schema_version in UPGRADED_VERSIONS:  # its rate as recorded, as the columnar path
        record.prompt_tok_s = values["prompt_tok_s"]
    return record


def _check_version(version: Any) -> None:
    if version is not None and version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, sorted(READABLE_VERSIONS)))
        raise RecordError(f"record format version {version!r} is not supported (this "
                          f"ollabench reads versions {readable}); re-run the bench stage")


def _described(problems: list[Any]) -> str:
    """pydantic's errors as one line: `ttft_ms: must be a number, got 'fast'`."""
    missing = [str(p["loc"][0]) for p in problems if p["type"] == "missing"]
    parts = [f"missing fields: {', '.join(missing)}"] if missing else []
    for problem in problems:
        if not problem["loc"]:
            return "not a JSON object"
        if problem["type"] != "missing":
            spec = FIELD_BY_NAME[str(problem["loc"][0])]
            value = problem["input"]
            shown = "null" if value is None else repr(value)
            parts.append(f"{spec.name}: must be {_EXPECTED[spec.kind]}, got {shown}")
    return "; ".join(parts)


@functools.cache
def _validator() -> type[BaseModel]:
    """A strict pydantic model of the record, built from FIELDS (pydantic loads on first use:
    the report stage imports this module for its constants only)."""
    from pydantic import ConfigDict, create_model

    definitions: dict[str, Any] = {
        f.name: (f.hint, None if f.nullable else ...) for f in FIELDS}
    return create_model("CallRecordLine", __config__=ConfigDict(strict=True, extra="ignore"),
                        **definitions)


# --------------------------------------------------------------------------- columnar access
