"""Markdown plumbing shared by the report's sections: tables, lists, and one blank line
between blocks so every renderer sees the same structure."""

from __future__ import annotations

from typing import Any

from mdutils.mdutils import MdUtils

from ollabench.report.format import Table, md_escape


def list_or_none(md: MdUtils, items: list[str], none_text: str) -> None:
    if items:
        md.new_list([md_escape(i) for i in items])
    else:
        md.new_paragraph(none_text)


def table(md: MdUtils, header: list[str], rows: list[list[Any]]) -> None:
    md.write(Table(header, rows).markdown())


def tidy(text: str) -> str:
    """One blank line between blocks (mdutils leaves none before some tables and headers,
    and several elsewhere), so every Markdown renderer sees the same structure."""
    lines: list[str] = []
    for line in text.strip("\n").splitlines():
        previous = lines[-1] if lines else ""
        if not line.strip():
            if previous:
                lines.append("")
            continue
        if previous and not _block(line) == _block(previous) in ("table", "list", "text"):
            lines.append("")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _block(line: str) -> str:
    for prefix, kind in (("#", "header"), ("|", "table"), ("- ", "list"), ("![", "image")):
        if line.startswith(prefix):
            return kind
    return "text"
