"""The raw per-call record: the data contract between `bench` and everything downstream.

Every figure in a report is recomputed from these records, so they are never thrown away,
and an unknown value is `None` (JSON null), never 0. docs/metrics.md defines each field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
CALLS_FILE = "calls.jsonl"
ENV_FILE = "env.json"

ARMS = ("control", "treatment")
MEASURED_STAGES = ("analysis", "report")
WARMUP_STAGE = "warmup"


class RecordError(ValueError):
    """A raw file that does not follow the record contract."""


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
    prompt_cached_tokens: int | None = None
    output_tokens: int | None = None
    done_reason: str | None = None
    truncated: bool | None = None
    reloaded: bool | None = None
    first_token_thinking: bool | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_max_ms: float | None = None
    num_ctx: int | None = None
    output: str = ""
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
        self.prompt_tok_s = rate_per_s(self.prompt_tokens, self.prompt_eval_ms)

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
        if version != SCHEMA_VERSION:
            raise RecordError(
                f"record format version {version!r} is not supported "
                f"(this ollabench reads version {SCHEMA_VERSION}); re-run the bench stage"
            )
        return cls(**{k: v for k, v in data.items() if k in known})


REQUIRED_FIELDS = frozenset(
    {"seq", "run", "arm", "profile", "stage", "phase", "ttft_ms", "e2e_ms", "eval_ms",
     "output_tokens", "error", "schema_version"}
)


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


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
