"""`ollabench doctor`: how long a decision will take on this machine, and what would shorten it.

A few A/A runs on the configured model and backend at the current settings, then at each
measurement choice still open (the embedded engine's threads, pinning this process to one
CPU, a shorter output per call). For each: the noise of one run, what pairing within a run
leaves, the runs per arm a decision at the practical threshold needs (stats/noise.py) and
the minutes of calls that makes. Everything runs in a temporary folder: no experiment's
data, journal or params.yaml is read or written besides the config it is given.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollabench.bench.loop import run_bench
from ollabench.config.schema import BenchConfig, validate_config
from ollabench.stats.decisions import control_first, primary_series
from ollabench.stats.frames import records_frame
from ollabench.stats.noise import noise_row

MS_PER_MINUTE = 60_000.0


@dataclass(frozen=True)
class Choice:
    """One measurement setting to try: options set in both arms, pinning to one CPU, and
    the output per call scaled."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    pin: bool = False
    output_factor: float = 1.0
    how: str = ""  # how to adopt it, for the advice


@dataclass(frozen=True)
class Finding:
    """What one choice measured: the worst primary comparison's figures."""

    choice: Choice
    run_noise_pct: float
    paired_noise_pct: float
    runs_needed: float
    minutes_per_run: float  # of measured calls, both arms

    @property
    def minutes_to_decide(self) -> float:
        return self.runs_needed * self.minutes_per_run


def choices(config: BenchConfig) -> list[Choice]:
    """The current settings and the open choices: one thread (pinned to one CPU where there
    are several: the quietest setting, issue 26's measurements) only where the engine runs
    in this process (embedded llama.cpp); a shorter output everywhere. Three settings of
    two runs per arm (the CLI's default) keep the doctor near a minute and a half on the
    default workload (four settings of three runs took about three)."""
    found = [Choice("current settings")]
    threads = "-S profile.options.num_thread=1 -S reference.options.num_thread=1"
    if config.model.backend == "llamacpp" and len(os.sched_getaffinity(0)) > 1:
        found.append(Choice("num_thread 1, pinned to one CPU", {"num_thread": 1}, pin=True,
                            how=f"taskset -c 0 before the command, and {threads}"))
    elif config.model.backend == "llamacpp":
        found.append(Choice("num_thread 1", {"num_thread": 1}, how=threads))
    found.append(Choice("half the output per call", output_factor=0.5,
                        how="halve workload.num_predict (the calls measure less decode)"))
    return found


def variant(config: BenchConfig, choice: Choice, runs: int) -> BenchConfig:
    """An A/A experiment of `runs` fixed runs per arm at this choice: the profile under test
    in both arms, its options with the choice's."""
    raw = copy.deepcopy(config.model_dump(mode="json"))
    profile = raw["profile"]
    profile["options"] = {**profile["options"], **choice.options}
    raw["reference"] = copy.deepcopy(profile)
    raw["run"].update(runs=runs, stopping={**raw["run"]["stopping"], "mode": "fixed"})
    caps = raw["workload"].get("num_predict")
    if choice.output_factor != 1.0 and caps is not None:
        raw["workload"]["num_predict"] = (
            {stage: max(1, round(cap * choice.output_factor)) for stage, cap in caps.items()}
            if isinstance(caps, dict) else max(1, round(caps * choice.output_factor)))
    return validate_config(raw)


@contextmanager
def pinned(pin: bool) -> Iterator[None]:
    """This process (and the engine threads it starts) on its first allowed CPU."""
    before = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure(config: BenchConfig, choice: Choice, runs: int, folder: Path) -> Finding:
    """Run the choice's A/A experiment in folder and read its noise."""
    aa = variant(config, choice, runs)
    with pinned(choice.pin):
        records = run_bench(aa, folder / "raw", journal_root=folder / "journal",
                            progress=False)
    calls = records_frame(records)
    rows = [noise_row(c, t, control_first(calls, stage), aa.run.practical_threshold_pct)
            for (stage, _), (c, t) in primary_series(calls, aa.run.primary).items()]
    rows = [row for row in rows if row]
    measured = [r for r in records if r.phase == "measured" and r.e2e_ms]
    minutes = sum(r.e2e_ms or 0.0 for r in measured) / MS_PER_MINUTE / max(runs, 1)
    if not rows:
        return Finding(choice, math.nan, math.nan, math.nan, minutes)
    worst = max(rows, key=lambda row: _finite(row["runs_needed"]))
    return Finding(choice, worst["run_noise_pct"], worst["paired_noise_pct"],
                   worst["runs_needed"], minutes)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -1.0


def run_doctor(config: BenchConfig, runs: int) -> tuple[list[Finding], float]:
    """Every choice's finding, and the seconds it all took."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ollabench-doctor-") as tmp:
        findings = [measure(config, choice, runs, Path(tmp) / str(k))
                    for k, choice in enumerate(choices(config))]
    return findings, time.monotonic() - start


def advice(findings: list[Finding], config: BenchConfig) -> list[str]:
    """The table's lines and what would shorten a decision."""
    threshold = config.run.practical_threshold_pct
    lines = [f"| setting | run noise | after pairing | runs per arm for +-{threshold:g}% | "
             "minutes per run | minutes to decide |", "| --- | --- | --- | --- | --- | --- |"]
    for f in findings:
        lines.append(f"| {f.choice.name} | {f.run_noise_pct:.1f}% | {f.paired_noise_pct:.1f}% | "
                     f"{f.runs_needed:.0f} | {f.minutes_per_run:.2f} | "
                     f"{f.minutes_to_decide:.1f} |")
    current = findings[0]
    budget = config.run.stopping.max_runs
    lines.append(f"At the current settings a decision needs about {current.runs_needed:.0f} "
                 f"runs per arm ({current.minutes_to_decide:.1f} minutes of calls); the "
                 f"budget is {budget} runs per arm (run.stopping.max_runs).")
    known = [f for f in findings[1:] if math.isfinite(f.minutes_to_decide)]
    best = min(known, key=lambda f: f.minutes_to_decide, default=None)
    if best is not None and math.isfinite(current.minutes_to_decide) \
            and best.minutes_to_decide < current.minutes_to_decide:
        lines.append(f"Shorter: {best.choice.name} ({best.runs_needed:.0f} runs, "
                     f"{best.minutes_to_decide:.1f} minutes): {best.choice.how}.")
    else:
        lines.append("None of the open choices would shorten it on this measurement.")
    lines.append("A few runs per setting give rough figures; the noise also changes from "
                 "hour to hour. The report's noise section has the figures of a full run.")
    return lines
