"""The agent workload (the default): `analysis` reads a folder of benchmark artifacts,
`report` writes them up.

The digest carries the numbers in the files, not their names, so the model has real content
to reason about, and it stays small enough that the analysis prompt plus its output cap fit a
512-token context (the chimera profile's).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.backends.base import Message
from ollabench.errors import WorkloadError
from ollabench.workloads.base import Source, Step, Workload
from ollabench.workloads.quality import Part

SUPPORTED_SUFFIXES = (".csv", ".json", ".md")
MAX_MARKDOWN_LINES = 2
# Columns whose extremes are worth naming (which setup was fastest or slowest).
TIMING_SUFFIXES = ("_ms", "_tok_s")

SYSTEM_PROMPT = "You are a performance engineer. Quote numbers."
ANALYSIS_TASK = ("Analyse these benchmark results: fastest and slowest setups, trade-offs, "
                 "regressions.")
REPORT_TASK = ("Write a short technical report (title, findings, recommendations) from this "
               "analysis.")
# The parts REPORT_TASK asks for: a title (a Markdown heading, or a short first line), the
# findings, the recommendations (their headings or words).
REPORT_PARTS = (
    Part("title", r"\A\s*(#{1,3} \S|\**title\b|[^\n]{1,80}\n\s*\n)"),
    Part("findings", r"\bfinding"),
    Part("recommendations", r"\brecommend"),
)



@dataclass(frozen=True)
class Digest:
    """The folder's content as the analysis prompt carries it."""

    text: str
    files: tuple[str, ...]
    sha256: str


class AgentWorkload(Workload):
    """Two steps per run: the analysis of the folder, then the report built on that
    analysis (the same run's, from the same arm)."""

    name = "agent"

    def __init__(self, folder: Path) -> None:
        self.digest = read_digest(folder)
        self.source = Source("folder", str(folder), self.digest.files, self.digest.sha256)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (Step("analysis"), Step("report", needs=(0,)))

    def messages(self, index: int, output_of: Callable[[int], str]) -> list[Message]:
        if index == 0:
            return analysis_messages(self.digest)
        return report_messages(output_of(0))

    def parts(self, index: int) -> tuple[Part, ...]:
        return REPORT_PARTS if index == 1 else ()


def read_digest(folder: Path) -> Digest:
    """Read every CSV, JSON and Markdown file of the folder into one compact digest."""
    if not folder.is_dir():
        raise WorkloadError(f"workload.dir: {folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not paths:
        raise WorkloadError(f"workload.dir: {folder} holds no CSV, JSON or Markdown file")
    digest = hashlib.sha256()
    sections = []
    for path in paths:
        raw = _read_text_bytes(path)
        try:
            sections.append(_summarise(path, raw.decode("utf-8")))
        except ValueError as exc:  # a CSV or JSON parser's complaint
            raise WorkloadError(f"workload.dir: cannot parse {path}: {exc}") from None
        digest.update(path.name.encode() + b"\0" + raw)
    return Digest("\n".join(sections), tuple(p.name for p in paths), digest.hexdigest())


def _read_text_bytes(path: Path) -> bytes:
    """The file's bytes, refused with the reason when they are no non-empty UTF-8 text: an
    empty or undecodable file would silently shrink the prompt both arms are measured on."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"workload.dir: cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(
            f"workload.dir: {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise WorkloadError(f"workload.dir: {path} is empty; remove it or give it content")
    return raw


def _summarise(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _summarise_csv(path.stem, text)
    if suffix == ".json":
        return f"{path.stem}: " + "; ".join(_flatten(json.loads(text)))
    return f"{path.stem}: " + " ".join(_markdown_facts(text))


def _summarise_csv(name: str, text: str) -> str:
    """Row count, the range of each numeric column, and which rows hold the extreme timings."""
    from io import StringIO

    frame = pd.read_csv(StringIO(text))
    if frame.empty:
        raise ValueError("the table has no rows")
    labels = _label_columns(frame)
    parts = [f"{name}, {len(frame)} rows"]
    for column in frame.select_dtypes("number").columns.difference(labels, sort=False):
        values = frame[column]
        lo, hi = values.idxmin(), values.idxmax()
        if column.endswith(TIMING_SUFFIXES):
            parts.append(f"{column} {_num(values[lo])} ({_row_label(frame.loc[lo], labels)}) "
                         f"to {_num(values[hi])} ({_row_label(frame.loc[hi], labels)})")
        else:
            parts.append(f"{column} {_num(values[lo])}-{_num(values[hi])}")
    return "; ".join(parts)


def _label_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that name a setup: text columns with repeated values (ids say nothing), else
    the first column (e.g. a concurrency level)."""
    text = [c for c in frame.columns
            if not pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique() < len(frame)]
    return text[:1] or [frame.columns[0]]


def _row_label(row: pd.Series, labels: list[str]) -> str:
    return " ".join(str(row[c]) if isinstance(row[c], str) else f"{c} {_num(row[c])}"
                    for c in labels)


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
    """Short numbers: integers and large values without decimals or exponents."""
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.3g}"


def analysis_messages(digest: Digest) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{ANALYSIS_TASK}\n\n{digest.text}"},
    ]


def report_messages(analysis: str) -> list[Message]:
    """The report call builds on the analysis the same arm produced in the same run."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{REPORT_TASK}\n\nAnalysis:\n{analysis.strip()}"},
    ]
