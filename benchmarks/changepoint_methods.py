"""Compare change-point methods on the synthetic cases `history` must get right; the figures
behind the choice in docs/statistics.md ("Change points over revisions").

Run as `python benchmarks/changepoint_methods.py [--seeds N]` (--smoke: 2 seeds, what CI
runs so the script cannot rot). Not part of run_all.py's timed runs: the E-Divisive
implementation (MongoDB's signal-processing-algorithms, the algorithm of Apache Otava) pins
numpy < 2 and gevent, so it lives in a separate virtual environment:

    python -m venv /tmp/edv && /tmp/edv/bin/pip install signal-processing-algorithms \\
        ruptures pydantic pyarrow 'pandas<3'
    PYTHONPATH=src:. /tmp/edv/bin/python benchmarks/changepoint_methods.py

Without it the E-Divisive rows are left out. Each case is a series of 24 points (revisions;
one case 200) of 10 runs each, 2% run-to-run CV, 1% revision-to-revision noise unless said
(tests.helpers.synthetic.level_series), repeated over --seeds seeds. Every method proposes
change points on the point medians (log scale); "raw" reports its proposals as they are,
"+ check" passes them through `history`'s significance check (Welch on the per-run values
and on the revision medians of both sides, Bonferroni, the 5% practical threshold, the
level holding for two points).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.helpers.synthetic import level_series  # noqa: E402

from ollabench.history.changepoints import (  # noqa: E402
    MIN_SEGMENT_POINTS,
    PENALTY_BIC_FACTOR,
    find_changes,
    noise_sd,
    point_levels,
    propose,
)

THRESHOLD_PCT = 5.0


@dataclass(frozen=True)
class Case:
    steps: list[tuple[int, float]]
    truth: list[int]  # where the true change points are
    points: int = 24
    revision_sd: float = 0.01


CASES = {
    "A/A noise": Case([], []),
    "-10% at 8": Case([(8, 0.9)], [8]),
    "-10% at 8, +20% at 16": Case([(8, 0.9), (16, 1.2)], [8, 16]),
    "one slow revision (-20% at 10)": Case([(10, 0.8), (11, 1.25)], []),
    "-3% at 12 (below threshold)": Case([(12, 0.97)], []),
    "A/A, 3% revision noise": Case([], [], revision_sd=0.03),
    "-7% at 12, 3% revision noise": Case([(12, 0.93)], [12], revision_sd=0.03),
    "200 points: -10% at 60, +8% at 150": Case([(60, 0.9), (150, 1.08)], [60, 150], 200),
}
Proposer = Callable[[np.ndarray, int], list[int]]


def binseg(levels: np.ndarray, min_points: int) -> list[int]:
    """ruptures' binary segmentation with the same cost and penalty as PELT."""
    import ruptures

    sigma = noise_sd(levels) or 1e-12
    penalty = PENALTY_BIC_FACTOR * sigma**2 * math.log(len(levels))
    algo = ruptures.Binseg(model="l2", min_size=min_points, jump=1).fit(levels.reshape(-1, 1))
    return [int(b) for b in algo.predict(pen=penalty)[:-1]]


def e_divisive(levels: np.ndarray, min_points: int) -> list[int]:
    """E-Divisive means (permutation test at p 0.05, 100 permutations), seeded."""
    from signal_processing_algorithms.energy_statistics.energy_statistics import (
        e_divisive as run,
    )

    np.random.seed(0)  # the permutations draw from numpy's global generator
    return sorted(int(i) for i in run(levels, pvalue=0.05, permutations=100))


def methods() -> dict[str, Proposer]:
    found: dict[str, Proposer] = {"ruptures PELT": propose, "ruptures BinSeg": binseg}
    try:
        import signal_processing_algorithms  # noqa: F401
    except ImportError:
        print("signal-processing-algorithms not installed: E-Divisive left out",
              file=sys.stderr)
    else:
        found["E-Divisive (MongoDB)"] = e_divisive
    return found


def score(found: Sequence[list[int]], truth: list[int]) -> tuple[float, float, float]:
    """Share of series found exactly right, false change points per series (more than one
    point away from every true one), and share of true change points found within one
    point."""
    exact = sum(f == truth for f in found) / len(found)
    false = sum(sum(all(abs(i - t) > 1 for t in truth) for i in f) for f in found) / len(found)
    hits = (sum(sum(any(abs(i - t) <= 1 for i in f) for t in truth) for f in found)
            / (len(truth) * len(found)) if truth else math.nan)
    return exact, false, hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="2 seeds")
    args = parser.parse_args()
    if args.smoke:
        args.seeds = 2
    print("| method | case | exactly right | false change points per series | true ones "
          "found (within 1 point) | ms per series |\n| --- | --- | --- | --- | --- | --- |")
    for name, proposer in methods().items():
        for checked in (False, True):
            for label, case in CASES.items():
                found, start = [], time.perf_counter()
                for seed in range(args.seeds):
                    samples = level_series(case.points, revision_sd=case.revision_sd,
                                           steps=case.steps, seed=seed)
                    if checked:
                        changes = find_changes(samples, THRESHOLD_PCT, proposer=proposer)
                        found.append([c.index for c in changes])
                    else:
                        found.append(sorted(proposer(point_levels(samples),
                                                     MIN_SEGMENT_POINTS)))
                ms = (time.perf_counter() - start) / args.seeds * 1000
                exact, false, hits = score(found, case.truth)
                hit_text = "" if math.isnan(hits) else f"{hits:.0%}"
                print(f"| {name}{' + check' if checked else ' (raw)'} | {label} | {exact:.0%} "
                      f"| {false:.2f} | {hit_text} | {ms:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
