"""When a sequential experiment stops: after a block of the schedule, once every primary
comparison is decided at every load level or a budget is spent (run.stopping;
docs/statistics.md, Sequential verdicts and Under load). Every answer is a function of the
journaled calls, so a resumed run stops where an uninterrupted one would have."""

from __future__ import annotations

from typing import Any

from ollabench.bench.stopping import BLOCK_RUNS
from ollabench.config.schema import BenchConfig
from ollabench.records.schema import CallRecord
from ollabench.stats.decisions import (
    DECIDED,
    FIXED,
    MAX_MINUTES,
    MAX_RUNS,
    all_decided,
    design_for,
    level_decisions,
    primary_decisions,
)
from ollabench.stats.frames import at_level, records_frame

MS_PER_MINUTE = 60_000.0


def minutes_of_calls(records: list[CallRecord]) -> float:
    """The time the recorded calls took, in minutes: the budget's clock, read from the
    records so that a resumed run counts the same. One agent at a time: the sum of the calls'
    end-to-end times; a block of agents at once: its span, first send to last answer."""
    alone = sum(r.e2e_ms or 0.0 for r in records if r.concurrency == 1)
    spans: dict[tuple[int, str, int | None], tuple[float, float]] = {}
    for r in records:
        if r.concurrency != 1 and r.sent_ms is not None:
            key = (r.run, r.arm, r.concurrency)
            first, last = spans.get(key, (r.sent_ms, r.sent_ms))
            spans[key] = (min(first, r.sent_ms), max(last, r.sent_ms + (r.e2e_ms or 0.0)))
    return (alone + sum(last - first for first, last in spans.values())) / MS_PER_MINUTE


class StopRule:
    """Asked after each run of a sequential experiment: stop now? `reason` says why."""

    def __init__(self, config: BenchConfig, records: list[CallRecord]) -> None:
        self.run = config.run.model_dump(mode="json")
        self.stopping = config.run.stopping
        self.records = records  # the journal's list: it grows as calls finish
        self.block = max(BLOCK_RUNS[config.run.order], 1)
        runs, _ = design_for(self.run, 1).looks(self.stopping.max_runs, final=False)
        self.look_runs = frozenset(runs)
        self.reason = FIXED if self.stopping.mode == "fixed" else MAX_RUNS

    @property
    def sequential(self) -> bool:
        return self.stopping.mode == "sequential"

    def __call__(self, runs_done: int) -> bool:
        """True once runs 1..runs_done (a whole number of blocks) settle the experiment."""
        if not self.sequential or runs_done <= 0 or runs_done % self.block:
            return False
        # Only runs 1..runs_done count: a resumed run may have retried later calls first.
        records = [r for r in self.records if r.run <= runs_done]
        if runs_done in self.look_runs and self._every_level_decided(records):
            self.reason = DECIDED
            return True
        limit = self.stopping.max_minutes
        if limit is not None and minutes_of_calls(records) >= limit:
            self.reason = MAX_MINUTES
            return True
        return False

    def _every_level_decided(self, records: list[CallRecord]) -> bool:
        """Level 1's primaries and every loaded level's, each level its own family
        (docs/statistics.md, Under load): one undecided level keeps them all running."""
        calls = records_frame(records)
        if not all_decided(primary_decisions(at_level(calls), self.run, final=False)):
            return False
        return all(all_decided(decisions) for decisions
                   in level_decisions(calls, self.run, final=False).values())

    def summary(self, runs: int) -> dict[str, Any]:
        """env.json `stopping`: the mode, why it stopped, runs per arm, minutes of calls."""
        return {"mode": self.stopping.mode, "reason": self.reason, "runs": runs,
                "minutes_of_calls": round(minutes_of_calls(self.records), 3)}
