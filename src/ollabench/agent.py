"""The agent workload: `analysis` reads a folder of benchmark artifacts, `report` writes them up.

The digest carries the numbers in the files, not their names, so the model has real content
to reason about, and it stays small enough that the analysis prompt plus its output cap fit a
512-token context (the chimera profile's).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.backends.base import Message

SUPPORTED_SUFFIXES = (".csv", ".json", ".md")
MAX_MARKDOWN_LINES = 4
# Columns whose extremes are worth naming (which setup was fastest or slowest).
TIMING_SUFFIXES = ("_ms", "_tok_s")

SYSTEM_PROMPT = "You are a performance engineer. Be precise and quote numbers."
ANALYSIS_TASK = (
    "Below is a digest of benchmark artifacts. Analyse it: name the fastest and slowest "
    "setups, the trade-offs, and any regression."
)
REPORT_TASK = (
    "Turn this analysis into a short technical report with a title, findings and "
    "recommendations."
)


class WorkloadError(ValueError):
    """The workload folder cannot be used (missing, empty, unreadable)."""


@dataclass(frozen=True)
class Workload:
    digest: str
    files: tuple[str, ...]
    sha256: str


def load_workload(folder: Path) -> Workload:
    """Read every CSV, JSON and Markdown file of the folder into one compact digest."""
    if not folder.is_dir():
        raise WorkloadError(f"workload_dir: {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not paths:
        raise WorkloadError(f"workload_dir: {folder} holds no CSV, JSON or Markdown file")
    digest = hashlib.sha256()
    sections = []
    for path in paths:
        try:
            raw = path.read_bytes()
            sections.append(_summarise(path, raw.decode("utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise WorkloadError(f"workload_dir: cannot read {path}: {exc}") from exc
        digest.update(path.name.encode() + b"\0" + raw)
    return Workload("\n".join(sections), tuple(p.name for p in paths), digest.hexdigest())


def _summarise(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _summarise_csv(path.stem, text)
    if suffix == ".json":
        return f"{path.stem}: " + "; ".join(_flatten(json.loads(text)))
    return f"{path.stem}: " + " ".join(_markdown_facts(text))


def _summarise_csv(name: str, text: str) -> str:
    from io import StringIO

    frame = pd.read_csv(StringIO(text))
    if frame.empty:
        raise ValueError("the table has no rows")
    numeric = frame.select_dtypes("number")
    labels = [c for c in frame.columns if c not in numeric.columns][:2] or [frame.columns[0]]
    parts = [f"{name}, {len(frame)} rows"]
    for column in numeric.columns:
        if column in labels:
            continue
        values = numeric[column]
        part = f"{column} {_num(values.min())}-{_num(values.max())}"
        if column.endswith(TIMING_SUFFIXES):
            lo, hi = (_row_label(frame.loc[i], labels) for i in (values.idxmin(), values.idxmax()))
            part += f" (min {lo}, max {hi})"
        parts.append(part)
    return "; ".join(parts)


def _row_label(row: pd.Series, labels: list[str]) -> str:
    return " ".join(str(row[c]) for c in labels)


def _flatten(value: Any, prefix: str = "") -> list[str]:
    """Numeric leaves as `key=value`, list items keyed by their first field."""
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flatten(sub, f"{prefix}{key}.")]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        first_key = next(iter(value[0]))
        return [item for v in value
                for item in _flatten({k: x for k, x in v.items() if k != first_key},
                                     f"{v[first_key]}.")]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    return [f"{prefix.rstrip('.')}={_num(value)}"]


def _markdown_facts(text: str) -> list[str]:
    lines = [re.sub(r"^[#\-*\s]+", "", line).strip() for line in text.splitlines()]
    facts = [line for line in lines[1:] if any(ch.isdigit() for ch in line)]
    return facts[:MAX_MARKDOWN_LINES]


def _num(value: float) -> str:
    return f"{value:.4g}"


def analysis_messages(workload: Workload) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{ANALYSIS_TASK}\n\n{workload.digest}"},
    ]


def report_messages(analysis: str) -> list[Message]:
    """The report call builds on the analysis the same arm produced in the same run."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{REPORT_TASK}\n\nAnalysis:\n{analysis.strip()}"},
    ]
