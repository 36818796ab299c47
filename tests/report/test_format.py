"""Numbers and tables as text: one formatting layer for the report, compare and leaderboard."""

from __future__ import annotations

import pytest

from ollabench.report.format import Table, fmt_cell, fmt_mde, fmt_num, fmt_p, fmt_p_clause, fmt_pct


@pytest.mark.parametrize(("value", "text"), [
    (1352.85, "1353"), (119.15, "119.2"), (5.0624, "5.062"), (160.0, "160"), (0.01234, "0.0123"),
    (float("nan"), "n/a"), (None, "n/a")])
def test_fmt_num(value: float | None, text: str) -> None:
    assert fmt_num(value) == text


def test_fmt_pct_and_p() -> None:
    assert fmt_pct(-50.0) == "-50.0%" and fmt_pct(3.04) == "+3.0%"
    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.004) == "0.004"
    assert fmt_p(0.62) == "0.62" and fmt_p_clause(0.0001) == "p < 0.001"
    assert fmt_p_clause(0.01) == "p = 0.01"


def test_detectable_change_is_capped_for_display() -> None:
    assert fmt_mde(12.34) == "12.3%"
    assert fmt_mde(6.4e9) == "over 1000%"


def test_one_table_for_markdown_and_terminal() -> None:
    table = Table(["x", "y", "z"], [["a|b", 1.23456, None], ["c", float("nan"), [1, 2]]])
    assert table.markdown().splitlines() == [
        "", "|x|y|z|", "| :--- | :--- | :--- |", "|a\\|b|1.235|n/a|", "|c|n/a|[1, 2]|"]
    assert table.text().splitlines() == ["x    y      z", "a|b  1.235  n/a", "c    n/a    [1, 2]"]


@pytest.mark.parametrize(("value", "text"), [
    ("text", "text"), (3, "3"), (2.5, "2.500"), (True, "True"), ({"a": 1}, '{"a": 1}'),
    (None, "n/a")])
def test_any_value_as_a_cell(value: object, text: str) -> None:
    assert fmt_cell(value) == text
