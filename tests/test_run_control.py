"""The sequential stopping loop with a scripted backend whose truth is known: it adds whole
ABBA blocks until every primary comparison is decided or the budget ends, records why, and
a run killed mid-sequence resumes to the same decisions."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ollabench.backends.base import Backend, CachePlan
from ollabench.bench.loop import run_bench
from ollabench.bench.run_control import minutes_of_calls
from ollabench.errors import ConfigError
from ollabench.records.schema import OK, CallMeasurement, read_records
from ollabench.stats.decisions import DECIDED, MAX_MINUTES, MAX_RUNS, primary_decisions
from ollabench.stats.frames import records_frame
from tests.helpers.project import tiny_config


class ScriptedBackend(Backend):
    """Every call's timing from a seeded generator: the treatment (temperature 1.0) is
    `ratio` times the control's times, with `cv` run-to-run noise."""

    name = "scripted"

    def __init__(self, ratio: float, cv: float, seed: int = 0,
                 fail_after: int | None = None) -> None:
        self.ratio, self.cv = ratio, cv
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.fail_after = fail_after

    def preflight(self) -> None:
        pass

    def chat(self, messages: list[dict[str, str]], options: dict[str, Any],
             cache: CachePlan | None = None, tools: Any = None,
             output_format: Any = None) -> CallMeasurement:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the process dies mid-sequence
        scale = self.ratio if options.get("temperature") == 1.0 else 1.0
        noise = float(self.rng.lognormal(0.0, self.cv))
        e2e = 1000.0 * scale * noise
        return CallMeasurement(ttft_ms=e2e / 4, e2e_ms=e2e, eval_ms=e2e * 3 / 4,
                               output_tokens=20, prompt_tokens=50, output="Throughput 10",
                               outcome=OK)

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return dict(options)

    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return False


def _sequential(raw_config: dict[str, Any], workload: Path, ratio: float,
                **stopping: Any) -> Any:
    raw = copy.deepcopy(raw_config)
    raw["workload"]["dir"] = str(workload)
    if ratio != 1.0:
        raw["profile"]["options"]["temperature"] = 1.0
    raw["run"]["stopping"] = {"mode": "sequential", "min_runs": 8, "max_runs": 24,
                              "max_minutes": None, "look_every_blocks": 1, **stopping}
    return tiny_config(raw, warmup=0)


def _env(out: Path) -> dict[str, Any]:
    return json.loads((out / "env.json").read_text())


def test_a_clear_change_stops_at_the_first_look(tmp_path, raw_config, tiny_workload) -> None:
    config = _sequential(raw_config, tiny_workload, ratio=1.5)
    records = run_bench(config, tmp_path / "raw", tmp_path / "journal", progress=False,
                        backend=ScriptedBackend(1.5, 0.01))
    stopping = _env(tmp_path / "raw")["stopping"]
    assert stopping["reason"] == DECIDED and stopping["runs"] == 8
    measured = Counter(r.arm for r in records if r.phase == "measured")
    assert measured == {"control": 16, "treatment": 16}  # 8 runs x 2 stages, balanced
    decisions = primary_decisions(records_frame(records),
                                  config.run.model_dump(mode="json"), final=False)
    assert {d.verdict for d in decisions if d.metric != "eval_tok_s"} == {"worse"}


def test_equal_arms_are_declared_equivalent(tmp_path, raw_config, tiny_workload) -> None:
    config = _sequential(raw_config, tiny_workload, ratio=1.0)
    run_bench(config, tmp_path / "raw", tmp_path / "journal", progress=False,
              backend=ScriptedBackend(1.0, 0.005))
    stopping = _env(tmp_path / "raw")["stopping"]
    assert stopping["reason"] == DECIDED and stopping["runs"] % 2 == 0


def test_noise_larger_than_the_threshold_ends_at_the_budget(tmp_path, raw_config,
                                                            tiny_workload) -> None:
    config = _sequential(raw_config, tiny_workload, ratio=1.0, max_runs=12)
    records = run_bench(config, tmp_path / "raw", tmp_path / "journal", progress=False,
                        backend=ScriptedBackend(1.0, 0.3))
    assert _env(tmp_path / "raw")["stopping"]["reason"] == MAX_RUNS
    assert max(r.run for r in records) == 12


def test_the_time_budget_counts_the_recorded_calls(tmp_path, raw_config,
                                                   tiny_workload) -> None:
    """Each call takes about a second: a 0.2-minute budget ends after 3 blocks (12 s)."""
    config = _sequential(raw_config, tiny_workload, ratio=1.0, max_minutes=0.2)
    records = run_bench(config, tmp_path / "raw", tmp_path / "journal", progress=False,
                        backend=ScriptedBackend(1.0, 0.3))
    stopping = _env(tmp_path / "raw")["stopping"]
    assert stopping["reason"] == MAX_MINUTES
    assert stopping["runs"] % 2 == 0 and minutes_of_calls(records) >= 0.2
    assert minutes_of_calls([r for r in records if r.run <= stopping["runs"] - 2]) < 0.2


def test_a_killed_sequence_resumes_to_the_same_decisions(tmp_path, raw_config,
                                                         tiny_workload) -> None:
    config = _sequential(raw_config, tiny_workload, ratio=1.0)
    whole = run_bench(config, tmp_path / "a", tmp_path / "journal_a", progress=False,
                      backend=ScriptedBackend(1.0, 0.03, seed=7))
    with pytest.raises(KeyboardInterrupt):
        run_bench(config, tmp_path / "b", tmp_path / "journal_b", progress=False,
                  backend=ScriptedBackend(1.0, 0.03, seed=7, fail_after=37))
    # The resumed process draws the rest of the same sequence of timings.
    backend = ScriptedBackend(1.0, 0.03, seed=7)
    backend.rng.lognormal(0.0, 0.03, 37)
    resumed = run_bench(config, tmp_path / "b", tmp_path / "journal_b", progress=False,
                        backend=backend)
    assert _env(tmp_path / "a")["stopping"] == _env(tmp_path / "b")["stopping"]
    assert [r.e2e_ms for r in whole] == [r.e2e_ms for r in resumed]
    assert read_records(tmp_path / "b" / "calls.jsonl")[-1].run == max(r.run for r in whole)


@pytest.mark.parametrize(("stopping", "order", "expected"), [
    ({"min_runs": 7}, "abba", r"run\.stopping\.min_runs: must be a multiple of 2"),
    ({"min_runs": 50}, "abba", r"run\.stopping\.min_runs: must be at most run\.stopping\.max_"),
    ({}, "sequential", r"run\.stopping\.mode: sequential needs run\.order abba or random"),
    ({"mode": "adaptive"}, "abba", r"run\.stopping\.mode: must be one of 'fixed' or "
                                   r"'sequential'"),
    ({"look_every_blocks": 0}, "abba", r"run\.stopping\.look_every_blocks: input should be"),
])
def test_bad_stopping_settings_name_the_key(raw_config, stopping, order, expected) -> None:
    raw = copy.deepcopy(raw_config)
    raw["run"]["stopping"] = {**raw["run"]["stopping"], "mode": "sequential", **stopping}
    with pytest.raises(ConfigError, match=expected):
        tiny_config(raw, order=order)


def test_bad_primary_names_the_key(raw_config) -> None:
    raw = copy.deepcopy(raw_config)
    raw["run"]["primary"] = ["workflow/speed"]
    with pytest.raises(ConfigError, match=r"run\.primary: 'workflow/speed' must be "
                                          r"'stage/metric'"):
        tiny_config(raw)


def test_minutes_of_calls_sums_end_to_end_times() -> None:
    from ollabench.records.schema import CallRecord
    records = [CallRecord(e2e_ms=30_000.0), CallRecord(e2e_ms=None), CallRecord(e2e_ms=60_000.0)]
    assert math.isclose(minutes_of_calls(records), 1.5)
