"""Writing outputs so that a reader never sees half of one, and hashing them.

Every stage writes through here: a crash or Ctrl-C leaves the previous outputs, never a torn
file, and a set of files that belong together (the aggregate's CSVs and JSON, the report and
its figures) is replaced together.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

HASH_CHUNK_BYTES = 1 << 22


class Staging:
    """Output files written into temporary folders beside their targets, then moved into
    place together by commit(): an error before that leaves the previous outputs untouched
    instead of half a new set. Leaving the `with` block removes whatever was not moved."""

    def __init__(self) -> None:
        self._folders: dict[Path, Path] = {}
        self._targets: dict[Path, Path] = {}

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)

    def path(self, target: Path) -> Path:
        """Where to write `target` until commit()."""
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders[target.parent] = Path(
                tempfile.mkdtemp(prefix=".ollabench-", dir=target.parent))
        self._targets[target] = self._folders[target.parent] / target.name
        return self._targets[target]

    def write(self, target: Path, text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        for target, staged in self._targets.items():
            os.replace(staged, target)


def write_all_atomic(files: dict[Path, str]) -> None:
    """Write every file, all or none (see Staging)."""
    with Staging() as staging:
        for target, text in files.items():
            staging.write(target, text)
        staging.commit()


def write_text_atomic(path: Path, text: str) -> None:
    write_all_atomic({path: text})


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in large chunks (hashlib releases the GIL on them, so a
    worker thread can hash while the caller computes)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()
