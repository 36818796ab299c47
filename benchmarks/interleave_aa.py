"""A/A experiments with run.interleave run against call on the committed default (embedded
engine, SmolLM2-135M, the agent workload): each primary comparison's paired noise and its
verdict, the two settings alternated round after round (run, call, then call, run, ...) so
the machine's load hits both alike. The figures behind docs/statistics.md ("Interleaving").

Run as `python benchmarks/interleave_aa.py [--runs 12] [--rounds 3] [--out results.jsonl]
[--set profile.options.num_thread=1 ...]` (--set: Hydra overrides of the committed config;
about 3 minutes per experiment on an idle 2-vCPU machine at 12 runs per arm). Each
experiment is a fixed run of --runs runs per arm (one look, all the error spent there);
printed per experiment and primary: the standard deviation of the per-run log paired
difference treatment - control (x100: percent on the log scale) and the verdict; then per
setting the root mean square of those deviations over the rounds and the verdicts' counts.
--smoke: one round of 2 runs with 8-token outputs (no figures to read), what CI runs so the
script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from ollabench.bench.loop import run_bench  # noqa: E402
from ollabench.config.schema import BenchConfig, compose, validate_config  # noqa: E402
from ollabench.stats.decisions import primary_decisions, primary_series  # noqa: E402
from ollabench.stats.frames import records_frame  # noqa: E402

SETTINGS = ("run", "call")


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def config_for(interleave: str, runs: int, overrides: list[str]) -> BenchConfig:
    """The committed default (an A/A) with the overrides, fixed at `runs` per arm,
    interleaved as asked."""
    raw = compose([*overrides, f"run.interleave={interleave}", "run.stopping.mode=fixed",
                   f"run.runs={runs}"], conf_dir=ROOT / "conf")
    return validate_config(raw)


def experiment(interleave: str, runs: int, overrides: list[str],
               folder: Path) -> dict[str, Any]:
    """One A/A: per primary, the sd of the per-run log paired differences and the verdict."""
    config = config_for(interleave, runs, overrides)
    load_before = os.getloadavg()[0]
    records = run_bench(config, folder / "raw", folder / "journal", progress=False)
    calls = records_frame(records)
    run = config.run.model_dump(mode="json")
    found: dict[str, Any] = {}
    series = primary_series(calls, config.run.primary)
    for decision in primary_decisions(calls, run, final=True, series=series):
        control, treatment = series[(decision.stage, decision.metric)]
        with np.errstate(all="ignore"):
            diffs = np.log(treatment) - np.log(control)
        sd = float(np.nanstd(diffs, ddof=1)) if np.isfinite(diffs).sum() > 1 else math.nan
        found[f"{decision.stage}/{decision.metric}"] = {
            "paired_sd_pct": 100 * sd, "verdict": decision.verdict,
            "change_pct": float(decision.looks.change_pct[-1])
            if len(decision.looks.runs) else math.nan}
    return {"interleave": interleave, "runs": runs, "load_1m_before": load_before,
            "load_1m_after": os.getloadavg()[0], "primaries": found}


def summary(results: list[dict[str, Any]]) -> list[str]:
    """Per setting and primary: the root mean square of the experiments' paired sds, and
    the verdicts' counts."""
    lines = ["| primary | setting | paired sd of log diff (rms, %) | per experiment | verdicts |",
             "| --- | --- | --- | --- | --- |"]
    primaries = sorted({p for r in results for p in r["primaries"]})
    for primary in primaries:
        for setting in SETTINGS:
            rows = [r["primaries"][primary] for r in results
                    if r["interleave"] == setting and primary in r["primaries"]]
            sds = [row["paired_sd_pct"] for row in rows if math.isfinite(row["paired_sd_pct"])]
            rms = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else math.nan
            verdicts = Counter(row["verdict"] for row in rows)
            lines.append(f"| {primary} | {setting} | {rms:.1f} | "
                         f"{', '.join(f'{s:.1f}' for s in sds)} | "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=12, help="runs per arm per experiment")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each one experiment of either setting")
    parser.add_argument("--out", type=Path, help="append each experiment's figures (JSON lines)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override of the committed config (repeatable)")
    parser.add_argument("--summarize", type=Path, metavar="RESULTS",
                        help="only print the summary of an --out file (no experiment)")
    parser.add_argument("--smoke", action="store_true", help="one round of 2 runs, tiny outputs")
    args = parser.parse_args()
    if args.summarize:
        lines = args.summarize.read_text(encoding="utf-8").splitlines()
        print("\n".join(summary([json.loads(line) for line in lines if line.strip()])))
        return 0
    runs, rounds = (2, 1) if args.smoke else (args.runs, args.rounds)
    overrides = [*args.set, *(["run.max_output_tokens=8"] if args.smoke else [])]
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load average at start "
          f"{os.getloadavg()[0]:.2f}; overrides {overrides}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(rounds):
            order = SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]
            for interleave in order:
                found = experiment(interleave, runs, overrides,
                                   Path(tmp) / f"{round_index}-{interleave}")
                found["round"] = round_index + 1
                results.append(found)
                print(json.dumps(found), flush=True)
                if args.out:
                    with args.out.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(found) + "\n")
    print("\n".join(summary(results)))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
