"""The closing line of a bench with calls that never succeeded (bench/failures.py): each
cause once, with its arm and what to change, and a rerun suggested only where it can help."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ollabench.bench.failures import why_incomplete
from ollabench.records.schema import HTTP_ERROR, STALLED
from tests.helpers.synthetic import Scenario, make_records

OUT = Path("data/raw")


def _failing(**fields: object) -> tuple[list[int], list]:
    """Synthetic records whose treatment analysis calls all failed with `fields`."""
    records = make_records(Scenario(runs=2))
    failed = [r.seq for r in records if r.arm == "treatment" and r.stage == "analysis"
              and r.phase == "measured"]
    return failed, [replace(r, **fields) if r.seq in failed else r for r in records]


def test_an_unknown_model_names_the_key_and_no_rerun() -> None:
    failed, records = _failing(outcome=HTTP_ERROR, http_status=404,
                               error="HTTP 404: model 'x' not found")
    line = why_incomplete(failed, records, OUT)
    assert line.startswith(f"{len(failed)} call(s) never succeeded (seq ")
    assert "treatment arm: HTTP 404: model 'x' not found; check model.name" in line
    assert line.endswith("a rerun would fail the same way: change what is named above")


def test_a_refusal_points_at_the_arms_options() -> None:
    failed, records = _failing(outcome=HTTP_ERROR, http_status=400,
                               error="HTTP 400: invalid options")
    line = why_incomplete(failed, records, OUT)
    assert "treatment arm: HTTP 400: invalid options (the server's answer to the request as " \
        "configured: check profile.options and model)" in line
    assert "run again" not in line


def test_a_stalled_stream_asks_for_a_rerun_once() -> None:
    failed, records = _failing(outcome=STALLED, error="ReadTimeout: timed out")
    line = why_incomplete(failed, records, OUT)
    assert line.count("treatment arm: ReadTimeout: timed out") == 1
    assert line.endswith("run again to retry the calls that may pass on another try (the "
                         "journal keeps the others)")
