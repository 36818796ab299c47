"""Numbers and table cells as text: the one place where values become words and digits.

The report, `compare` and `leaderboard` all format through here, so a median, a p-value or an
unknown value reads the same in every output, and every table is built the same way:
Markdown (mdutils) for files, aligned plain text for the terminal.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mdutils.tools.Table import Table as MdTable

from ollabench.stats import LEVEL_METRIC_BY_NAME

UNKNOWN = "n/a"
# Beyond this a detectable change says only "far too few runs"; its digits would be noise.
MDE_DISPLAY_CAP_PCT = 1000.0


def _unknown_as_na(format_known: Callable[[float], str]) -> Callable[[Any], str]:
    """Formatters accept any value: unknown (None, NaN, missing) is written n/a, never 0."""

    @functools.wraps(format_known)
    def formatter(value: Any) -> str:
        if _is_unknown(value) or not math.isfinite(float(value)):
            return UNKNOWN
        return format_known(float(value))

    return formatter


def _is_unknown(value: Any) -> bool:
    """None, NaN or pandas' NA; a list or mapping is a value, not unknown."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


@_unknown_as_na
def fmt_num(x: float) -> str:
    """Four significant digits without an exponent: 1353, 119.2, 5.062; whole numbers such
    as token counts without decimals."""
    if x.is_integer():
        return f"{x:.0f}"
    decimals = min(4, max(0, 3 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


@_unknown_as_na
def fmt_setting(x: float) -> str:
    """A configured constant as written: 0.05, 3.5, 100."""
    return f"{x:g}"


@_unknown_as_na
def fmt_pct(x: float) -> str:
    """A signed relative difference: +10.0%, -4.4% (arithmetic sign, never reworded)."""
    return f"{x:+.1f}%"


@_unknown_as_na
def fmt_plain_pct(x: float) -> str:
    """A size in percent without a sign (CV, detectable change, thresholds)."""
    return f"{x:.1f}%"


@_unknown_as_na
def fmt_mde(x: float) -> str:
    """The detectable change (MDE), capped for display: 12.3%, over 1000%."""
    return f"over {MDE_DISPLAY_CAP_PCT:.0f}%" if x > MDE_DISPLAY_CAP_PCT else fmt_plain_pct(x)


@_unknown_as_na
def fmt_p(p: float) -> str:
    """A p-value: 0.62, 0.004, < 0.001."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def fmt_p_clause(value: Any) -> str:
    """`p = 0.01` or `p < 0.001`, for running text."""
    text = fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


@_unknown_as_na
def fmt_effect(x: float) -> str:
    """An effect size (Hedges' g, Cliff's delta), signed."""
    return f"{x:+.2f}"


@_unknown_as_na
def fmt_int(x: float) -> str:
    return f"{x:.0f}"


def fmt_value(value: Any, metric: str) -> str:
    """A metric's value with its unit: 410 ms, 119.2 tok/s."""
    return f"{fmt_num(value)} {LEVEL_METRIC_BY_NAME[metric].unit}"


def fmt_cell(value: Any) -> str:
    """Any value as a table cell: text as is, numbers by fmt_num, lists and mappings as JSON,
    unknown as n/a."""
    if _is_unknown(value):
        return UNKNOWN
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return fmt_num(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def one_line(text: str) -> str:
    """Text without the line breaks that would end a Markdown table row or list item."""
    return text.replace("\r", " ").replace("\n", " ")


def md_escape(text: str) -> str:
    """One line with its pipes escaped, for Markdown written outside a table."""
    return one_line(text).replace("|", "\\|")


@dataclass(frozen=True)
class Table:
    """A header and rows of any values, laid out as Markdown (for files) or as aligned
    columns (for the terminal); both show the same cells."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def cells(self) -> list[list[str]]:
        return [list(self.header), *([fmt_cell(v) for v in row] for row in self.rows)]

    def markdown(self) -> str:
        """mdutils' table, left-aligned (mdutils escapes the pipes); starts and ends with a
        line break."""
        text = [one_line(c) for row in self.cells() for c in row]
        return MdTable().create_table(columns=len(self.header), rows=len(self.rows) + 1,
                                      text=text, text_align="left")

    def text(self) -> str:
        cells = self.cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.header))]
        return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                       + "\n" for row in cells)
