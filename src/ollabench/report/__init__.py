"""The Markdown report (mdutils) and its figures (matplotlib's Agg canvas), from the
aggregate's outputs.

The report reads data/processed (summary.csv, comparisons.csv, per_run.csv, quality.json) and
raw/env.json and recomputes nothing: every number is formatted by report.format, the only
place where numbers become text, and every verdict is worded by report.words.
"""

from __future__ import annotations

import os
from pathlib import Path

from ollabench.files import Staging
from ollabench.paths import APPENDIX_FILE
from ollabench.report.appendix import render_appendix
from ollabench.report.figures import draw_figures
from ollabench.report.format import (
    Table,
    fmt_cell,
    fmt_effect,
    fmt_int,
    fmt_mde,
    fmt_num,
    fmt_p,
    fmt_p_clause,
    fmt_pct,
    fmt_plain_pct,
    fmt_setting,
    fmt_value,
)
from ollabench.report.inputs import Inputs
from ollabench.report.load import LOAD_FIGURE, load_figure
from ollabench.report.sections import render
from ollabench.report.verdicts import LOOKS_FIGURE, looks_figure
from ollabench.report.words import metric_label, verdict_words

__all__ = [
    "Inputs",
    "Table",
    "fmt_cell",
    "fmt_effect",
    "fmt_int",
    "fmt_mde",
    "fmt_num",
    "fmt_p",
    "fmt_p_clause",
    "fmt_pct",
    "fmt_plain_pct",
    "fmt_setting",
    "fmt_value",
    "metric_label",
    "run_report",
    "verdict_words",
]


def run_report(raw_dir: Path, processed_dir: Path, report_path: Path,
               figures_dir: Path) -> None:
    """Write report_path (Markdown, the summary), its appendix beside it (APPENDIX_FILE, the
    full tables) and the PNG figures into figures_dir. The figures are drawn into a
    temporary folder and moved into place together with both files."""
    inputs = Inputs(raw_dir, processed_dir)
    with Staging() as staging:
        names = draw_figures(inputs.per_run, inputs.profiles, staging, figures_dir)
        if looks_figure(inputs.looks, inputs.quality["settings"]["threshold_pct"],
                        staging.path(figures_dir / LOOKS_FIGURE)):
            names["looks"] = LOOKS_FIGURE
        if inputs.load is not None:  # agents ran at once
            load_figure(inputs.load, inputs.profiles, staging.path(figures_dir / LOAD_FIGURE))
            names["load"] = LOAD_FIGURE
        relative = os.path.relpath(figures_dir, report_path.parent)
        links = {key: Path(relative, name).as_posix() for key, name in names.items()}
        appendix_path = report_path.with_name(APPENDIX_FILE)
        staging.write(report_path, render(inputs, links, APPENDIX_FILE))
        staging.write(appendix_path, render_appendix(inputs, links, report_path.name))
        staging.commit()
