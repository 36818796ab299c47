"""Reading what the report stage wrote: the summary (report.md) and its appendix; writing
both without figures for tests that read only the words."""

from __future__ import annotations

from pathlib import Path

from ollabench.paths import APPENDIX_FILE
from ollabench.report.appendix import render_appendix
from ollabench.report.inputs import Inputs
from ollabench.report.sections import render


def report_with_appendix(path: Path) -> str:
    """report.md followed by the appendix beside it, for tests that find a section by its
    title wherever it lives."""
    return path.read_text() + "\n" + path.with_name(APPENDIX_FILE).read_text()


def write_words(raw: Path, processed: Path, path: Path) -> str:
    """The summary at path and the appendix beside it as run_report writes them, less the
    figures (matplotlib's drawing: 95% of run_report's CPU time, 1.5 of 1.58 s for a
    10-run report): for tests of the wording. report.md and the appendix link a figure only
    where run_report drew it, so these texts are run_report's without the image lines. The
    figures are drawn and checked by tests/report/test_report.py::
    test_figures_are_written_and_embedded, the golden files (tests/test_golden.py) and
    tests/test_concurrency.py's load curve. Returns report_with_appendix(path)."""
    inputs = Inputs(raw, processed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(inputs, {}, APPENDIX_FILE), encoding="utf-8")
    path.with_name(APPENDIX_FILE).write_text(render_appendix(inputs, {}, path.name),
                                             encoding="utf-8")
    return report_with_appendix(path)
