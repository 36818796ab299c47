"""The resume journal: every finished call, fsync'd before the next starts, outside DVC's
outputs (.ollabench/journal/<config hash>/), so a crash or Ctrl-C loses nothing and a rerun
with the same config resumes where it stopped."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ollabench.bench.concurrent import SequentialOverhead
from ollabench.paths import CALLS_FILE
from ollabench.records.schema import (
    CallRecord,
    append_record,
    read_records,
    write_records_atomic,
)


class Journal:
    """Append-only, fsync'd log of finished calls, outside DVC's outputs.

    Each call asks it for earlier outputs and its attempt count, so it keeps them indexed as
    records are appended: a pass over the whole journal per call grew with the experiment
    (about 5 ms per call at 5,000 records) and held the GIL while other agents' tokens
    arrived (benchmarks/bench_client_streams.py --prior-records)."""

    def __init__(self, root: Path, key: str) -> None:
        self.dir = root / key
        self.path = self.dir / CALLS_FILE
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # a block's agents append from their threads
        self.records = read_records(self.path) if self.path.exists() else []
        self._succeeded: dict[int, CallRecord] = {}  # by seq: its last attempt without error
        self._attempts: Counter[int] = Counter()
        self.sequential = SequentialOverhead()
        for record in self.records:
            self._index(record)
        if self.records:
            # Rewrite without a torn tail so new appends start on a clean line.
            write_records_atomic(self.path, self.records)

    def _index(self, record: CallRecord) -> None:
        self._attempts[record.seq] += 1
        if record.error is None:
            self._succeeded[record.seq] = record
        self.sequential.add(record)

    def append(self, record: CallRecord) -> None:
        with self._lock:
            append_record(self.path, record)
            self.records.append(record)
            self._index(record)

    def succeeded(self) -> Mapping[int, CallRecord]:
        """Each seq's last attempt without error: a live, read-only view."""
        return MappingProxyType(self._succeeded)

    def attempts(self, seq: int) -> int:
        return self._attempts[seq]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()
