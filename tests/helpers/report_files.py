"""Reading what the report stage wrote: the summary (report.md) and its appendix."""

from __future__ import annotations

from pathlib import Path

from ollabench.paths import APPENDIX_FILE


def report_with_appendix(path: Path) -> str:
    """report.md followed by the appendix beside it, for tests that find a section by its
    title wherever it lives."""
    return path.read_text() + "\n" + path.with_name(APPENDIX_FILE).read_text()
