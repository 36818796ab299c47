"""The aggregate and report outputs of fixed raw data, byte for byte.

tests/golden/raw holds calls.jsonl and env.json made once from a seeded synthetic scenario
(improvement, a failure and retry, a model load, a truncation, a spike); tests/golden/expected
holds what `aggregate` and `report` wrote from them. Refactorings must not change a byte
(a CSV's numbers: not beyond 1e-9 relative, which CPUs may differ by); a deliberate change
of the outputs is made with

    python -m tests.test_golden --update

and reviewed in the diff of tests/golden/expected.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ollabench.paths import APPENDIX_FILE, CALLS_FILE, ENV_FILE
from ollabench.records.calls_table import write_calls_table
from ollabench.report import run_report
from ollabench.stats import run_aggregate

GOLDEN = Path(__file__).resolve().parent / "golden"
THRESHOLD_PCT = 5.0
REPORT = Path("reports/report.md")
METRICS = Path("reports/metrics.json")
PROCESSED = Path("data/processed")


def produce(work: Path, columnar_copy: bool) -> dict[str, bytes]:
    """Run aggregate and report on a copy of the golden raw data; every text output by its
    path relative to `work` (the PNG figures are left out: they depend on matplotlib)."""
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for name in (CALLS_FILE, ENV_FILE):
        shutil.copy(GOLDEN / "raw" / name, raw / name)
    if columnar_copy:
        write_calls_table(raw)
    run_aggregate(raw, work / PROCESSED, work / METRICS, THRESHOLD_PCT)
    run_report(raw, work / PROCESSED, work / REPORT, work / "reports" / "figures")
    outputs = [*sorted((work / PROCESSED).iterdir()), work / METRICS, work / REPORT,
               work / REPORT.with_name(APPENDIX_FILE)]
    return {path.relative_to(work).as_posix(): path.read_bytes() for path in outputs}


@pytest.mark.parametrize("columnar_copy", [True, False], ids=["parquet", "jsonl"])
def test_outputs_match_the_golden_files(tmp_path: Path, columnar_copy: bool) -> None:
    produced = produce(tmp_path, columnar_copy)
    expected_dir = GOLDEN / "expected"
    expected = {p.relative_to(expected_dir).as_posix(): p.read_bytes()
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(produced) == sorted(expected)
    changed = [name for name in produced if not same_output(name, produced[name],
                                                             expected[name])]
    assert not changed, (f"outputs differ from tests/golden/expected: {changed} (produced "
                         f"in {tmp_path}; if the change is intended: python -m "
                         "tests.test_golden --update)")


def same_output(name: str, produced: bytes, expected: bytes) -> bool:
    """Byte for byte, except the numbers of a CSV: those may differ in their last bits
    between CPUs (scipy's and numpy's kernels on AVX2 or AVX-512, Intel or AMD), so they are
    compared to 1e-9 relative; every column, label and verdict must still match exactly."""
    if produced == expected or not name.endswith(".csv"):
        return produced == expected
    got, want = (pd.read_csv(io.BytesIO(data)) for data in (produced, expected))
    if list(got.columns) != list(want.columns) or got.shape != want.shape:
        return False
    numeric = [c for c in want.columns if pd.api.types.is_float_dtype(want[c])]
    others = [c for c in want.columns if c not in numeric]
    return (got[others].equals(want[others])
            and all(pd.api.types.is_float_dtype(got[c]) for c in numeric)
            and np.allclose(got[numeric].to_numpy(), want[numeric].to_numpy(),
                            rtol=1e-9, atol=0.0, equal_nan=True))


def update() -> None:
    """Rewrite tests/golden/expected from the current code."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        produced = produce(Path(work), columnar_copy=False)
    shutil.rmtree(GOLDEN / "expected", ignore_errors=True)
    for name, data in produced.items():
        target = GOLDEN / "expected" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(f"wrote {len(produced)} files under {GOLDEN / 'expected'}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.test_golden --update")
    update()
