"""Raw records as typed frames: the columns the statistics use, one row per call.

The types come from the record schema (records.FIELDS), so both readers give the same frame:
numbers as float64 (unknown: NaN, never 0; counts too), the schedule's integers as Int64,
flags as nullable booleans, labels as categories. The rest of a record (output text,
options, times of day) stays on disk.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from ollabench.records.calls_table import read_calls_table, records_table
from ollabench.records.schema import FIELD_BY_NAME, CallRecord
from ollabench.stats.metrics import METRICS, SHARE_COUNTS

# Share metrics (faithful_pct, ...) are not fields: grouping derives them from SHARE_COUNTS;
# judge_score comes from the judge stage's file (stats/judged.py).
FRAME_COLUMNS = tuple(dict.fromkeys((
    "seq", "run", "attempt", "schema_version",
    "arm", "profile", "stage", "phase", "done_reason", "error",
    *(m.name for m in METRICS if m.name in FIELD_BY_NAME), *SHARE_COUNTS,
    "output_similarity_pct",
    "task_turn", "tool_calls", "invalid_tool_calls", "tool_ms", "task_ended_by",
    "prompt_tokens", "prompt_eval_tokens", "prompt_cached_tokens",
    "total_ms", "num_ctx", "num_batch", "http_status",
    "outcome", "cache_state", "num_batch_basis", "engine_version",
    "backend", "model", "token_count_source", "timing_source",
    "reloaded", "reload_expected", "truncated", "context_shift", "cache_controlled",
    "host_other_cpu_pct", "host_steal_pct", "host_load_1m", "cpu_probe_ms",
    "concurrency", "agent", "due_ms", "sent_ms", "in_flight", "queue_ms")))
FLAG_COLUMNS = tuple(c for c in FRAME_COLUMNS if FIELD_BY_NAME[c].kind is bool)
# The host's noise during a call (host.py): a run or stage takes its calls' worst.
HOST_COLUMNS = ("host_other_cpu_pct", "host_steal_pct", "host_load_1m")


def _frame_type(name: str) -> pa.DataType:
    """A number that may be unknown is float64 whatever its record type (NaN, never 0)."""
    spec = FIELD_BY_NAME[name]
    if spec.kind is float or (spec.kind is int and spec.nullable):
        return pa.float64()
    return {int: pa.int64(), str: pa.string(), bool: pa.bool_()}[spec.kind]


CALLS_SCHEMA = pa.schema([(c, _frame_type(c)) for c in FRAME_COLUMNS])


def records_frame(records: list[CallRecord]) -> pd.DataFrame:
    """In-memory records (`ollabench compare` reads them from git) as the same frame."""
    return _calls_frame(records_table(records, CALLS_SCHEMA))


def read_calls(raw_dir: Path) -> tuple[pd.DataFrame, Path]:
    """The calls of raw_dir as a frame, and the file it was read from: the columnar copy
    when it matches calls.jsonl, else calls.jsonl (see calls_table.read_calls_table)."""
    table, source = read_calls_table(raw_dir, CALLS_SCHEMA)
    return _calls_frame(table), source


def _calls_frame(table: pa.Table) -> pd.DataFrame:
    """Labels as categories (dictionary-encoded by records), flags as nullable booleans,
    integers as nullable Int64. The table's memory is released as it is converted: do not
    use it afterwards."""
    frame = table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype(),
                                          pa.int64(): pd.Int64Dtype()}.get,
                            self_destruct=True, split_blocks=True)
    pa.default_memory_pool().release_unused()  # the read's buffers, kept by the allocator
    frame["concurrency"] = frame["concurrency"].fillna(1.0)  # before levels: one at a time
    return frame


def at_level(calls: pd.DataFrame, level: int = 1) -> pd.DataFrame:
    """The calls of one load level (run.concurrency); level 1 is the sequential bench that
    every comparison of arms without a level is made on."""
    return calls.loc[calls["concurrency"] == level]
