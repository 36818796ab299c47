"""Running the aggregate stage on synthetic or hand-edited raw data, and reading its outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.paths import CALLS_FILE, COMPARISONS_FILE, PER_RUN_FILE, QUALITY_FILE, SUMMARY_FILE
from ollabench.records.schema import CallRecord
from ollabench.stats import run_aggregate
from tests.helpers.synthetic import Scenario, write_raw


def aggregate(tmp_path: Path, records: list[CallRecord], scenario: Scenario,
              threshold_pct: float = 5.0) -> dict[str, Any]:
    """Run the aggregate stage on synthetic records; return its outputs, parsed."""
    raw = write_raw(tmp_path / "raw", records, scenario)
    out, metrics = tmp_path / "processed", tmp_path / "reports" / "metrics.json"
    run_aggregate(raw, out, metrics, threshold_pct)
    return {
        "summary": pd.read_csv(out / SUMMARY_FILE),
        "comparisons": pd.read_csv(out / COMPARISONS_FILE),
        "per_run": pd.read_csv(out / PER_RUN_FILE),
        "quality": json.loads((out / QUALITY_FILE).read_text()),
        "metrics": json.loads(metrics.read_text()),
    }


def verdict(table: pd.DataFrame, stage: str, metric: str) -> str:
    row = table.loc[(table["stage"] == stage) & (table["metric"] == metric)]
    assert len(row) == 1, f"no single row for {stage} {metric}"
    return str(row["verdict"].iloc[0])


def raw_lines(raw: Path, records: list[CallRecord],
              edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """raw/calls.jsonl (no columnar copy) from records, each passed through `edit` first."""
    raw.mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        data = json.loads(record.to_json())
        if edit:
            edit(data)
        lines.append(json.dumps(data))
    (raw / CALLS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return raw


def edit_first_measured_ttft(raw: Path, ttft_ms: float) -> int:
    """Rewrite calls.jsonl with the first measured record's ttft_ms changed, at the same
    size; returns that record's line index."""
    lines = (raw / CALLS_FILE).read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["phase"] == "measured")
    record = json.loads(lines[index])
    old = json.dumps(record, sort_keys=True)
    record["ttft_ms"] = ttft_ms
    new = json.dumps(record, sort_keys=True)
    lines[index] = new + " " * (len(old) - len(new))
    (raw / CALLS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index
