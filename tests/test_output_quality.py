"""Output quality per call: figures checked against the input, required parts, similarity
of the two arms' outputs."""

from __future__ import annotations

import pytest

from ollabench.workloads.agent import REPORT_PARTS
from ollabench.workloads.quality import figures, output_quality, similarity_pct

INPUT = [{"role": "user", "content": "A: ttft_ms 180 to 1,402; eval 61.0 tok/s; 48% slower"}]


def test_figures_are_numbers_as_written_in_reports() -> None:
    assert figures("1,402 ms, 61.0 tok/s, -3.5%, v2 and 3 setups; 48%") == [
        1402.0, 61.0, -3.5, 48.0]


def test_faithfulness_counts_quoted_figures_found_in_the_input() -> None:
    quality = output_quality(INPUT, "TTFT went from 180 ms to 1402 ms; 61 tok/s; 99 users.")

    assert (quality.numbers_in_output, quality.numbers_supported) == (4, 3)  # 99 is invented
    assert quality.parts_expected is quality.parts_found is None
    assert quality.output_chars == 53


@pytest.mark.parametrize(("report", "found"), [
    ("# GPU report\n\n## Findings\nB is slow.\n\n## Recommendations\nUse A.", 3),
    ("GPU inference report\n\nKey finding: B is slow. We recommend A.", 3),
    ("B is slow and A is fast, so use A everywhere.", 0),
    ("**Title:** GPU\n\nFindings: none.", 2),
], ids=["markdown", "plain", "none", "no-recommendations"])
def test_the_reports_required_parts(report: str, found: int) -> None:
    quality = output_quality(INPUT, report, REPORT_PARTS)
    assert (quality.parts_expected, quality.parts_found) == (3, found)


def test_similarity_is_100_for_identical_text_and_falls_with_changes() -> None:
    text = "The fastest setup is A at 61 tok/s."
    assert similarity_pct(text, text) == 100.0
    assert similarity_pct(text, "The  fastest setup\nis A at 61 tok/s.") == 100.0
    assert 50 < similarity_pct(text, "The slowest setup is B at 44 tok/s.") < 90
    assert similarity_pct(text, "zq xv") < 20

