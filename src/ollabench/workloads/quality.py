"""Output quality per call: deterministic, cheap, recorded beside the timings.

A faster profile must not win by spoiling the answers (a prompt cut short, a sampling setting
that turns the text to noise). These checks need no judge model (docs/metrics.md, Quality):

- faithfulness: of the figures the output quotes, how many appear in its input. The agent is
  asked to quote numbers from the artifacts; a figure that is not in its input is invented.
  Whole numbers below 10 are left out (list markers, "3 setups");
- required parts: for a step that must produce a document with named parts (the agent's
  report: a title, findings, recommendations), how many are there;
- similarity to the other arm's output for the same run and step (rapidfuzz's normalized
  Indel similarity, 0-100): how much a profile changed what the model says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ollabench.backends.base import Message

# A figure as written in a report: 1,234.5, -3.2, 48%, 0.8; commas group thousands.
NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?")
SMALLEST_FIGURE = 10  # whole numbers below it are not figures (list markers, counts)


@dataclass(frozen=True)
class Part:
    """A part a document must have, found by a pattern (case-insensitive, multiline)."""

    name: str
    pattern: str


@dataclass(frozen=True)
class OutputQuality:
    numbers_in_output: int
    numbers_supported: int
    parts_expected: int | None
    parts_found: int | None
    output_chars: int


def figures(text: str) -> list[float]:
    """The figures a text quotes, in order, as numbers (so 44.0 and 44 match, 1,200 and
    1200 too)."""
    values = (float(match.group().replace(",", "")) for match in NUMBER.finditer(text))
    return [v for v in values if not (v.is_integer() and abs(v) < SMALLEST_FIGURE)]


def output_quality(messages: list[Message], output: str,
                   parts: tuple[Part, ...] = ()) -> OutputQuality:
    """The checks of one call's output against its input messages."""
    given = set(figures("\n".join(m["content"] for m in messages)))
    quoted = figures(output)
    found = sum(bool(re.search(p.pattern, output, re.IGNORECASE | re.MULTILINE)) for p in parts)
    return OutputQuality(
        numbers_in_output=len(quoted),
        numbers_supported=sum(v in given for v in quoted),
        parts_expected=len(parts) or None,
        parts_found=found if parts else None,
        output_chars=len(output),
    )


def similarity_pct(output: str, other: str) -> float:
    """How alike two outputs are, 0-100 (100: identical), by rapidfuzz's normalized Indel
    similarity on the texts with runs of whitespace collapsed."""
    from rapidfuzz.distance import Indel

    def squeezed(text: str) -> str:
        return " ".join(text.split())

    return 100.0 * Indel.normalized_similarity(squeezed(output), squeezed(other))
