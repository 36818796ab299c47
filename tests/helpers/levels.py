"""Synthetic records of an experiment with load levels (run.concurrency), with a known truth
per level: each level's treatment takes `factor[level]` times the control's time."""

from __future__ import annotations

import numpy as np

from ollabench.records.schema import CallRecord

STAGE_MS = {"analysis": 800.0, "report": 1200.0}
OUTPUT_TOKENS = {"analysis": 80, "report": 120}


def level_records(runs: int, levels: tuple[int, ...] = (1, 2),
                  factor: dict[int, float] | None = None, cv: float = 0.03,
                  seed: int = 0, block_cv: dict[int, float] | None = None) -> list[CallRecord]:
    """Measured calls in the bench's block order (bench/schedule.py block_order: each run's
    ABBA pair, reversed from one level to the next); a block's agents start together and
    each does the stages back to back on the client's clock. block_cv: per level, the noise
    a whole block shares (its agents' conditions)."""
    factor, block_cv = factor or {}, block_cv or {}
    rng = np.random.default_rng(seed)
    records: list[CallRecord] = []
    clock_ms = 0.0
    for run in range(1, runs + 1):
        pair = ("control", "treatment") if run % 2 else ("treatment", "control")
        for index, level in enumerate(levels):
            for arm in pair if index % 2 == 0 else pair[::-1]:
                scale = factor.get(level, 1.0) if arm == "treatment" else 1.0
                scale *= float(rng.lognormal(0.0, block_cv.get(level, 0.0)))
                ends = []
                for agent in range(1, level + 1):
                    sent_ms = clock_ms
                    for stage, base_ms in STAGE_MS.items():
                        e2e_ms = base_ms * scale * float(rng.lognormal(0.0, cv))
                        records.append(_record(len(records) + 1, run, arm, stage, level, agent,
                                               sent_ms, e2e_ms))
                        sent_ms += e2e_ms
                    ends.append(sent_ms)
                clock_ms = max(ends) + 10.0
    return records


def _record(seq: int, run: int, arm: str, stage: str, level: int, agent: int, sent_ms: float,
            e2e_ms: float) -> CallRecord:
    tokens = OUTPUT_TOKENS[stage]
    return CallRecord(
        seq=seq, run=run, arm=arm, stage=stage, phase="measured",
        profile="chimera" if arm == "treatment" else "baseline",
        ttft_ms=0.25 * e2e_ms, e2e_ms=e2e_ms, eval_ms=0.7 * e2e_ms, load_ms=1.0,
        prompt_eval_ms=0.2 * e2e_ms, total_ms=e2e_ms, prompt_tokens=400,
        prompt_eval_tokens=400, output_tokens=tokens, outcome="ok", done_reason="length",
        model="smollm2-135m", backend="llamacpp", started_at="2025-01-01T00:00:00Z",
        output="ok", concurrency=level, agent=agent, due_ms=sent_ms, sent_ms=sent_ms,
        in_flight=level, queue_ms=0.0)
