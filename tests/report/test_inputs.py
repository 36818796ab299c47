"""What the report reads: missing or malformed aggregate outputs and provenance are named in
one line, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollabench import report, stats
from ollabench.errors import ReportError
from tests.helpers.report_files import write_words
from tests.helpers.synthetic import Scenario, make_records, write_raw


def test_missing_aggregate_outputs_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    path, figures = tmp_path / "reports" / "report.md", tmp_path / "reports" / "figures"
    with pytest.raises(ReportError, match=r"summary\.csv.*run the aggregate stage"):
        report.run_report(tmp_path / "raw", tmp_path / "processed", path, figures)
    assert not path.exists() and not figures.exists()


def test_report_without_env_json_says_not_recorded(tmp_path: Path) -> None:
    scenario = Scenario(runs=3)
    raw = write_raw(tmp_path / "raw", make_records(scenario), scenario)
    (raw / "env.json").unlink()
    processed = tmp_path / "processed"
    stats.run_aggregate(raw, processed, tmp_path / "metrics.json", 5.0)
    text = write_words(raw, processed, tmp_path / "report.md")
    assert "Date: not recorded" in text and "Not recorded (no env.json)." in text
