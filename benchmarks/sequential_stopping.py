"""Simulate the sequential stopping rule looking after every ABBA block: its error rates and
the runs it needs; the figures behind docs/statistics.md ("Sequential verdicts").

Run as `python benchmarks/sequential_stopping.py [--experiments 2000] [--max-runs 40]`
(about a minute). Not part of run_all.py's timed runs: it measures the statistics, not the
harness's speed. --smoke: 40 experiments of at most 16 runs, the error-rate checks printed but
not enforced (40 experiments cannot resolve them); what CI runs so the script cannot rot.

Each experiment has PRIMARIES independent primary comparisons (the default run.primary of the
agent workload: whole-run end-to-end time, TTFT of both stages, the whole-run decode rate).
A run's value is log-normal with the case's CV, plus a slow drift shared by both arms in
the drift cases: the machine warming up or down by DRIFT_PCT over the whole budget, as a
straight line in the order the calls run (ABBA). The rule is the pipeline's own
(ollabench.stats.sequential.sequential_looks) with run.stopping's committed defaults. Checked:

- A/A: a false better/worse on any primary comparison in at most 5% of experiments (the
  rule spends exactly 5%, so the check allows two Monte Carlo standard errors: 5.97% at
  2,000 experiments);
- a true change of twice the threshold declared equivalent in at most 5%;
- no change declared equivalent in at least 80% of the experiments that ended before the
  budget (every comparison decided);
- the median runs per arm to a decision, and the share of experiments that hit max_runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from ollabench.stats.sequential import (  # noqa: E402
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    WORSE,
    Design,
    sequential_looks,
)

PRIMARIES = 4
THRESHOLD_PCT = 5.0
DRIFT_PCT = 20.0
CASES = ((5.0, 0.0), (10.0, 0.0), (15.0, 0.0), (5.0, DRIFT_PCT), (10.0, DRIFT_PCT))
TRUTHS = {"A/A": 0.0, "2x threshold": 2 * THRESHOLD_PCT}
SEED = 2026
ABBA_BLOCK_RUNS = 2  # one block: A B then B A


def simulate(rng: np.random.Generator, experiments: int, max_runs: int, cv_pct: float,
             drift_pct: float, change_pct: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-run values (experiments, PRIMARIES, max_runs) of both arms in ABBA order."""
    sigma = np.sqrt(np.log1p((cv_pct / 100) ** 2))
    shape = (experiments, PRIMARIES, max_runs)
    run = np.arange(max_runs)
    control_first = run % 2 == 0  # runs 1, 3, ... go A B; runs 2, 4, ... go B A
    position_c = 2 * run + np.where(control_first, 0, 1)
    position_t = 2 * run + np.where(control_first, 1, 0)
    slope = np.log1p(drift_pct / 100) / (2 * max_runs)
    control = np.exp(slope * position_c + rng.normal(0.0, sigma, shape))
    treatment = np.exp(np.log1p(change_pct / 100) + slope * position_t
                       + rng.normal(0.0, sigma, shape))
    return control, treatment


def run_case(design: Design, control: np.ndarray, treatment: np.ndarray) -> dict[str, float]:
    """Outcomes of each experiment: every comparison's first decision, and the runs at
    which the last one was decided (the experiment stops there)."""
    looks = sequential_looks(control, treatment, "lower", design, final=True)
    at = looks.decided_at()  # every comparison is decided by the final look
    outcome = np.take_along_axis(looks.outcome, at[..., None], axis=-1)[..., 0]
    runs = looks.runs[at].max(axis=-1)
    low, high = (np.take_along_axis(bound, at[..., None], axis=-1)[..., 0]
                 for bound in (looks.low_pct, looks.high_pct))
    budget = (outcome == INCONCLUSIVE).any(axis=-1)
    changed = np.isin(outcome, [BETTER, WORSE]).any(axis=-1)
    finished = ~budget
    equivalent = (outcome == EQUIVALENT).all(axis=-1)
    return {
        "better/worse": float(changed.mean()),
        "any equivalent": float((outcome == EQUIVALENT).any(axis=-1).mean()),
        "all equivalent | ended early": (float(equivalent[finished].mean()) if finished.any()
                                     else float("nan")),
        "hit budget": float(budget.mean()),
        "median runs": float(np.median(runs)),
        "precision": (float(np.median(np.maximum(np.abs(low), np.abs(high))[
            outcome == INCONCLUSIVE])) if budget.any() else float("nan")),
        "paired": float(np.take_along_axis(looks.paired, at[..., None], axis=-1).mean()),
    }


def _share(value: float) -> str:
    return "none ended early" if np.isnan(value) else f"{value:.1%}"


def _precision(value: float) -> str:
    return "-" if np.isnan(value) else f"+-{value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--max-runs", type=int, default=40)
    parser.add_argument("--min-runs", type=int, default=8)
    parser.add_argument("--look-every-blocks", type=int, default=1)
    parser.add_argument("--smoke", action="store_true",
                        help="40 experiments of at most 16 runs; checks not enforced")
    args = parser.parse_args(argv)
    if args.smoke:
        args.experiments, args.max_runs = 40, 16
    block = ABBA_BLOCK_RUNS
    design = Design(min_runs=args.min_runs, max_runs=args.max_runs,
                    look_every_runs=block * args.look_every_blocks, block_runs=block,
                    threshold_pct=THRESHOLD_PCT, comparisons=PRIMARIES)
    rng = np.random.default_rng(SEED)
    print(f"{args.experiments} experiments per case, {PRIMARIES} primary comparisons, "
          f"threshold {THRESHOLD_PCT:g}%, min {args.min_runs} / max {args.max_runs} runs per "
          f"arm, a look every {args.look_every_blocks} block(s)\n")
    print("| CV | drift | truth | better/worse (any primary) | equivalent (any primary) | "
          "all equivalent, of those ended early | hit budget | precision | median runs | "
          "paired |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    failed = []
    # the rule spends exactly 5%: allow two Monte Carlo standard errors above it
    monte_carlo_error = 2 * np.sqrt(0.05 * 0.95 / args.experiments)
    for cv_pct, drift_pct in CASES:
        for truth, change_pct in TRUTHS.items():
            control, treatment = simulate(rng, args.experiments, args.max_runs, cv_pct,
                                          drift_pct, change_pct)
            found = run_case(design, control, treatment)
            print(f"| {cv_pct:g}% | {drift_pct:g}% | {truth} | "
                  f"{found['better/worse']:.1%} | {found['any equivalent']:.1%} | "
                  f"{_share(found['all equivalent | ended early'])} | {found['hit budget']:.1%} | "
                  f"{_precision(found['precision'])} | "
                  f"{found['median runs']:g} | {found['paired']:.0%} |")
            if change_pct == 0 and found["better/worse"] > 0.05 + monte_carlo_error:
                failed.append(f"CV {cv_pct:g}% drift {drift_pct:g}%: false better/worse")
            if change_pct and found["any equivalent"] > 0.05:
                failed.append(f"CV {cv_pct:g}% drift {drift_pct:g}%: 2x threshold equivalent")
            if change_pct == 0 and found["all equivalent | ended early"] < 0.80:
                failed.append(f"CV {cv_pct:g}% drift {drift_pct:g}%: A/A not equivalent")
    for line in failed:
        print(f"missed: {line}", file=sys.stderr)
    return 1 if failed and not args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
