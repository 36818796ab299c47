"""Synthetic raw data with a known truth, for the statistics and report tests.

Each run has, per arm, one warm-up call and one call per measured stage, in ABBA order like
the bench schedule. Values are log-normal around fixed levels with the given CV, so the true
effect of every option below is known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ollabench.paths import CALLS_FILE, ENV_FILE
from ollabench.records.calls_table import write_calls_table
from ollabench.records.schema import SCHEMA_VERSION, CallRecord, write_records_atomic

PROMPT_TOKENS = {"analysis": 400, "report": 600}
OUTPUT_TOKENS = {"analysis": 160, "report": 192}
EVAL_TOK_S = 120.0
PROMPT_TOK_S = 300.0
WARM_LOAD_MS = 5.0
COLD_LOAD_MS = 400.0
OVERHEAD_MS = 12.0
FIGURES_QUOTED = 12  # numbers in every measured output
QUALITY_SLIP = 0.05  # chance that a control figure is not in the input
REPORT_PARTS = 3


@dataclass
class Scenario:
    """What to generate. Gains are relative (0.10 = 10%) and apply to the treatment arm."""

    runs: int = 10
    cv_pct: float = 2.0
    eval_rate_gain: float = 0.0
    ttft_factor: float = 1.0
    treatment_tokens_factor: float = 1.0
    control_profile: str = "baseline"
    treatment_profile: str = "chimera"
    itl: bool = False
    # Share of the treatment's quoted figures that are not in the input, and of the report's
    # required parts it leaves out (the control misquotes QUALITY_SLIP of its figures).
    quality_loss: float = 0.0
    seed: int = 0
    # (arm, run, stage, metric) -> factor applied to that one measured call
    spikes: dict[tuple[str, int, str, str], float] = field(default_factory=dict)
    # (arm, run, stage) of measured calls that fail once before a good retry
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    # (arm, run, stage) of measured calls that pay a model load
    loads: list[tuple[str, int, str]] = field(default_factory=list)
    truncated: list[tuple[str, int, str]] = field(default_factory=list)
    # Load levels (run.concurrency) after level 1: each run then holds, per arm, one block of
    # N agents at once for each level N, on a server with `slots` generation slots (a call
    # waits for a slot: its TTFT and end-to-end time grow with N / slots past the slots).
    levels: tuple[int, ...] = (1,)
    slots: int = 2
    slo_e2e_ms: float | None = None  # run.slo.e2e_ms of a run with levels


def make_records(scenario: Scenario) -> list[CallRecord]:
    rng = np.random.default_rng(scenario.seed)
    sigma = float(np.sqrt(np.log1p((scenario.cv_pct / 100.0) ** 2)))
    records: list[CallRecord] = []
    for run in range(1, scenario.runs + 1):
        order = ("control", "treatment") if run % 2 else ("treatment", "control")
        for arm in order:
            records.append(_call(scenario, rng, sigma, arm, run, "warmup", len(records)))
            for stage in PROMPT_TOKENS:
                if (arm, run, stage) in scenario.failures:
                    failed = _call(scenario, rng, sigma, arm, run, stage, len(records))
                    records.append(replace(failed, error="ReadTimeout: timed out",
                                           outcome="stalled", ttft_ms=None, e2e_ms=None,
                                           eval_ms=None, output_tokens=None))
                    records.append(replace(_call(scenario, rng, sigma, arm, run, stage,
                                                 failed.seq), attempt=2))
                else:
                    records.append(_call(scenario, rng, sigma, arm, run, stage, len(records)))
        for level in scenario.levels[1:]:
            for arm in order:
                records += _block(scenario, sigma, arm, run, level, len(records))
    return records


def _block(s: Scenario, sigma: float, arm: str, run: int, level: int,
           seq: int) -> list[CallRecord]:
    """One block of `level` agents at once, each doing every stage back to back (closed
    loop); the timings from their own random stream, so level 1's never change."""
    rng = np.random.default_rng([s.seed, run, level, 0 if arm == "control" else 1])
    slowdown = max(1.0, level / s.slots)
    records = []
    for agent in range(1, level + 1):
        sent_ms = 0.0
        for stage in PROMPT_TOKENS:
            call = _call(s, rng, sigma, arm, run, stage, seq + len(records))
            wait_ms = (slowdown - 1.0) * call.e2e_ms
            records.append(replace(call, concurrency=level, agent=agent, due_ms=sent_ms,
                                   sent_ms=sent_ms, in_flight=level, queue_ms=wait_ms,
                                   ttft_ms=call.ttft_ms + wait_ms,
                                   e2e_ms=call.e2e_ms + wait_ms,
                                   total_ms=call.e2e_ms + wait_ms))
            sent_ms += call.e2e_ms + wait_ms
    return records


def _call(s: Scenario, rng: np.random.Generator, sigma: float, arm: str, run: int, stage: str,
          seq: int) -> CallRecord:
    treated = arm == "treatment"
    measured_stage = "analysis" if stage == "warmup" else stage

    def noisy(level: float) -> float:
        return float(level * rng.lognormal(-sigma**2 / 2, sigma))

    tokens = OUTPUT_TOKENS[measured_stage]
    if treated:
        tokens = round(tokens * s.treatment_tokens_factor)
    rate = EVAL_TOK_S * (1 + s.eval_rate_gain if treated else 1.0)
    eval_ms = tokens / noisy(rate) * 1000.0
    prompt_tokens = PROMPT_TOKENS[measured_stage]
    prompt_eval_ms = prompt_tokens / noisy(PROMPT_TOK_S) * 1000.0
    cold = stage == "warmup" or (arm, run, stage) in s.loads
    load_ms = noisy(COLD_LOAD_MS if cold else WARM_LOAD_MS)
    ttft_ms = (load_ms + prompt_eval_ms + noisy(OVERHEAD_MS)) * (s.ttft_factor if treated else 1)
    spike = {metric: factor for (a, r, st, metric), factor in s.spikes.items()
             if (a, r, st) == (arm, run, stage)}
    ttft_ms *= spike.get("ttft_ms", 1.0)
    e2e_ms = ttft_ms + eval_ms + noisy(OVERHEAD_MS)
    return CallRecord(
        seq=seq, run=run, arm=arm, stage=stage,
        profile=s.treatment_profile if treated else s.control_profile,
        phase="warmup" if stage == "warmup" else "measured",
        ttft_ms=ttft_ms, e2e_ms=e2e_ms, load_ms=load_ms, prompt_eval_ms=prompt_eval_ms,
        eval_ms=eval_ms, total_ms=e2e_ms, prompt_tokens=prompt_tokens,
        prompt_eval_tokens=prompt_tokens, output_tokens=tokens, outcome="ok",
        done_reason="length", truncated=(arm, run, stage) in s.truncated, context_shift=False,
        reloaded=(arm, run, stage) in s.loads, reload_expected=False,
        cache_state="cold", cache_controlled=True, num_ctx=4096, num_batch=512,
        num_batch_basis="derived", engine_version="0.3.36",
        itl_p50_ms=eval_ms / tokens if s.itl else None,
        itl_p95_ms=1.5 * eval_ms / tokens if s.itl else None,
        itl_max_ms=3 * eval_ms / tokens if s.itl else None,
        started_at=f"2025-01-01T00:00:{seq % 60:02d}Z", model="smollm2-135m",
        backend="llamacpp", output="ok", **_quality(s, arm, run, stage, seq),
    )


def _quality(s: Scenario, arm: str, run: int, stage: str, seq: int) -> dict[str, Any]:
    """Output-quality fields of a measured call, from their own random stream (the timings'
    stream, and so every golden timing, does not depend on them)."""
    if stage == "warmup":
        return {}
    rng = np.random.default_rng([s.seed, seq, 7])
    loss = s.quality_loss if arm == "treatment" else 0.0
    fields: dict[str, Any] = {
        "numbers_in_output": FIGURES_QUOTED,
        "numbers_supported": FIGURES_QUOTED - int(rng.binomial(FIGURES_QUOTED,
                                                               QUALITY_SLIP + loss)),
        "output_chars": 900,
    }
    if stage == "report":
        fields |= {"parts_expected": REPORT_PARTS,
                   "parts_found": REPORT_PARTS - int(rng.binomial(REPORT_PARTS, loss))}
    second = (arm == "control") == (run % 2 == 0)  # ABBA: the later call of the run's pair
    if second:
        fields["output_similarity_pct"] = 100.0 * (1 - s.quality_loss) - float(rng.uniform(0, 3))
    return fields


def swap_arms(records: list[CallRecord]) -> list[CallRecord]:
    """The same calls with control and treatment exchanged (profiles travel with them)."""
    other = {"control": "treatment", "treatment": "control"}
    return [replace(r, arm=other[r.arm]) for r in records]


def env_for(scenario: Scenario) -> dict[str, Any]:
    """An env.json like the bench writes, for the report's header and configuration."""
    options = {"baseline": {}, "chimera": {"num_ctx": 512, "num_gpu": 80, "temperature": 0.8}}
    return {
        "host": {"hostname": "testhost", "os": "Linux 6.1", "cpu_model": "Test CPU",
                 "cpu_cores_physical": 2, "cpu_cores_logical": 2, "memory_gib": 8.0},
        "python": "3.11.9",
        "packages": {"ollabench": "0.1.0", "llama-cpp-python": "0.3.36"},
        "backend": {"engine": "llama.cpp (llama-cpp-python)", "engine_version": "0.3.36",
                    "model_file": "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "model_sha256": "ab" * 32, "model_bytes": 98_000_000},
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
        "config": {
            "model": {"name": "smollm2-135m", "backend": "llamacpp"},
            "profile": {"name": scenario.treatment_profile,
                        "options": options.get(scenario.treatment_profile, {})},
            "reference": {"name": scenario.control_profile,
                          "options": options.get(scenario.control_profile, {})},
            "run": {"runs": scenario.runs, "warmup": 1, "order": "abba", "order_seed": 0,
                    "num_predict": dict(OUTPUT_TOKENS), "seed": 42, "prompt_cache": False,
                    "cold_start": False, "practical_threshold_pct": 5.0},
            "workload_dir": "data/workload",
        },
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": "2025-01-01T00:10:00+00:00",
    } | ({} if scenario.levels == (1,) else {"config": _loaded_config(scenario)})


def _loaded_config(scenario: Scenario) -> dict[str, Any]:
    """env.json's config of a run with levels: run.concurrency and run.slo recorded too."""
    config = env_for(replace(scenario, levels=(1,)))["config"]
    config["run"] |= {"concurrency": list(scenario.levels),
                      "slo": {"ttft_ms": None, "e2e_ms": scenario.slo_e2e_ms}}
    return config


def write_raw(raw_dir: Path, records: list[CallRecord], scenario: Scenario) -> Path:
    """calls.jsonl, its columnar copy and env.json in raw_dir, as the bench stage leaves them
    (records of another format version get no copy: this ollabench refuses to write one)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    write_records_atomic(raw_dir / CALLS_FILE, records)
    if all(r.schema_version == SCHEMA_VERSION for r in records):
        write_calls_table(raw_dir)
    (raw_dir / ENV_FILE).write_text(json.dumps(env_for(scenario), indent=2), encoding="utf-8")
    return raw_dir


def level_series(points: int = 20, runs: int = 10, cv: float = 0.02,
                 revision_sd: float = 0.01, steps: Sequence[tuple[int, float]] = (),
                 seed: int = 0) -> list[np.ndarray]:
    """A history as `history` sees one series: per point (revision), the per-run values,
    log-normal with the given CV around a level of 100 that has its own revision-to-revision
    noise (log-sd revision_sd) and moves by each step (first point of the new level,
    factor) from then on."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(points):
        level = 100.0 * np.exp(rng.normal(0.0, revision_sd))
        for at, factor in steps:
            level *= factor if i >= at else 1.0
        out.append(level * rng.lognormal(-cv**2 / 2, cv, runs))
    return out
