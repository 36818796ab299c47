"""Concurrent agents (run.concurrency): settings refused before the first call, the schedule
of (run, arm, level) blocks, the record fields (old records read as level 1), and a bench
against the fake Ollama server with NUM_PARALLEL slots: the in-flight counts, the generation
overlap and the recorded queue wait against the wait the server imposed."""

from __future__ import annotations

import copy
import json
import statistics
import threading
from collections import Counter
from typing import Any

import pytest

from ollabench.backends.ollama import OllamaBackend
from ollabench.bench.concurrent import SequentialOverhead
from ollabench.bench.loop import run_bench
from ollabench.bench.schedule import arm_order, block_order, plan
from ollabench.config.schema import validate_config
from ollabench.errors import ConfigError
from ollabench.records.schema import (
    OK,
    QUEUE_SERVER_RESIDUAL,
    QUEUE_SERVER_RESIDUAL_RAW,
    SKIPPED,
    CallMeasurement,
    CallRecord,
    read_records,
)
from ollabench.report import run_report
from ollabench.stats.aggregate import run_aggregate
from ollabench.stats.frames import records_frame
from ollabench.stats.load import load_table, parallel_mismatch
from tests.helpers.fake_ollama import FakeOllama, Script
from tests.helpers.project import AGENT_STEPS, tiny_config
from tests.test_bench_ollama import ollama_raw


@pytest.mark.parametrize("levels", [[], [0, 1], [2, 4], [1, 1, 2], [1, 4, 2], [1, 65]])
def test_levels_are_refused_naming_the_key(raw_config: dict[str, Any], levels) -> None:
    raw = copy.deepcopy(raw_config)
    raw["run"]["concurrency"] = levels
    with pytest.raises(ConfigError, match=r"^run\.concurrency: .*includes 1"):
        validate_config(raw)


def test_a_warm_cache_cannot_be_arranged_for_agents_at_once(raw_config) -> None:
    raw = copy.deepcopy(raw_config)
    raw["run"].update(concurrency=[1, 2], prompt_cache=True)
    with pytest.raises(ConfigError, match=r"^run\.prompt_cache: "):
        validate_config(raw)


def test_server_parallel_is_for_ollama_only(raw_config) -> None:
    raw = copy.deepcopy(raw_config)
    raw["model"]["server_parallel"] = 2
    with pytest.raises(ConfigError, match=r"^model\.server_parallel: only for backend ollama"):
        validate_config(raw)


def test_one_level_is_todays_schedule(raw_config) -> None:
    run = tiny_config(raw_config, runs=4, order="abba").run
    assert block_order(run) == [(r, arm, 1) for r, arm in arm_order(run)]
    assert all((s.level, s.agent) == (1, 1) for s in plan(run, AGENT_STEPS))


@pytest.mark.parametrize("order", ["abba", "random", "sequential"])
def test_every_block_runs_once_and_the_arms_take_turns_at_every_level(raw_config,
                                                                      order) -> None:
    run = tiny_config(raw_config, runs=4, order=order, concurrency=[1, 2, 4]).run
    blocks = block_order(run)
    assert Counter(blocks) == {(r, arm, level): 1 for r in range(1, 5)
                               for arm in ("control", "treatment") for level in (1, 2, 4)}
    if order == "abba":
        firsts = Counter((level, arm) for i, (_, arm, level) in enumerate(blocks) if i % 2 == 0)
        assert all(firsts[(level, arm)] == 2 for level in (1, 2, 4)
                   for arm in ("control", "treatment"))
    slots = [s for s in plan(run, AGENT_STEPS) if s.phase == "measured"]
    per_block = Counter((s.block, s.agent) for s in slots)
    assert set(per_block.values()) == {len(AGENT_STEPS)}
    assert {b: max(a for (bb, a) in per_block if bb == b) for b, _ in per_block} == {
        b: b[2] for b, _ in per_block}


def test_a_record_written_before_levels_reads_as_level_1(tmp_path) -> None:
    record = json.loads(CallRecord(seq=1, run=1, arm="control", stage="analysis",
                                   phase="measured").to_json())
    for name in ("concurrency", "agent", "due_ms", "sent_ms", "in_flight", "queue_ms",
                 "queue_ms_source"):
        del record[name]
    from ollabench.records.schema import _parse_record

    parsed = _parse_record(json.dumps(record))
    assert parsed.concurrency == 1 and parsed.agent is None
    frame = records_frame([parsed])
    assert frame["concurrency"].tolist() == [1.0]


def _timed(residual_ms: float, **fields: Any) -> CallRecord:
    """A finished server call whose durations leave `residual_ms` unexplained."""
    return CallRecord(**{"arm": "control", "phase": "measured", "concurrency": 1,
                         "outcome": OK, "total_ms": 100.0 + residual_ms, "load_ms": 1.0,
                         "prompt_eval_ms": 9.0, "eval_ms": 90.0, **fields})


def test_queue_ms_is_the_residual_less_the_median_of_the_arm_s_level_1_calls() -> None:
    overhead = SequentialOverhead()
    for record in (_timed(2.0), _timed(4.0), _timed(30.0), _timed(100.0, arm="treatment"),
                   # none of these is a level-1 measured call that succeeded:
                   _timed(500.0, concurrency=2), _timed(500.0, phase="warmup"),
                   _timed(500.0, outcome=SKIPPED), _timed(500.0, total_ms=None)):
        overhead.add(record)
    control, treatment = _timed(54.0, concurrency=4), _timed(54.0, concurrency=4)
    overhead.derive_queue_ms(control, "control")
    overhead.derive_queue_ms(treatment, "treatment")
    assert (control.queue_ms, control.queue_ms_source) == (50.0, QUEUE_SERVER_RESIDUAL)
    assert (treatment.queue_ms, treatment.queue_ms_source) == (-46.0, QUEUE_SERVER_RESIDUAL)
    first = _timed(54.0, concurrency=4)  # no level-1 call of its arm yet: the whole residual
    SequentialOverhead().derive_queue_ms(first, "control")
    assert (first.queue_ms, first.queue_ms_source) == (54.0, QUEUE_SERVER_RESIDUAL_RAW)
    engine = _timed(54.0, concurrency=4, queue_ms=7.0)  # the engine's own wait is kept
    overhead.derive_queue_ms(engine, "control")
    assert engine.queue_ms == 7.0


# Each call: its first token after 50 ms, then 19 gaps of 20 ms: long beside the client's own
# delay between an agent's calls (journaling, /api/ps), even on a busy host.
SCRIPT = Script(ttft_ms=50, token_ms=20, tokens=20)
CALL_MS = 50 + 19 * 20


@pytest.fixture(scope="module")
def loaded_bench(tmp_path_factory, composed, tiny_workload) -> tuple[list[CallRecord], Any]:
    """Levels 1, 2 and 4 against a server with 2 slots (fixed 2 runs, cold calls)."""
    tmp = tmp_path_factory.mktemp("load")
    raw = copy.deepcopy(composed)
    raw["workload"]["dir"] = str(tiny_workload)
    with FakeOllama(parallel=2, script=SCRIPT) as fake:
        raw = ollama_raw(raw, fake.url)
        raw["model"]["server_parallel"] = 2
        raw["run"]["stopping"]["mode"] = "fixed"
        config = tiny_config(raw, runs=2, concurrency=[1, 2, 4], analysis=20, report=20)
        records = run_bench(config, tmp / "raw", journal_root=tmp / "j", progress=False)
        chats = fake.chats()
        most_busy = fake.slots.most_busy
    run_aggregate(tmp / "raw", tmp / "processed", tmp / "metrics.json", 5.0)
    run_report(tmp / "raw", tmp / "processed", tmp / "report.md", tmp / "figures")
    return records, (chats, most_busy, tmp)


def test_each_level_runs_its_agents_at_once(loaded_bench) -> None:
    records, (_, most_busy, _) = loaded_bench
    measured = [r for r in records if r.phase == "measured"]
    assert all(r.error is None for r in records)
    assert Counter(r.concurrency for r in measured) == {1: 8, 2: 16, 4: 32}
    for level in (1, 2, 4):
        at = [r for r in measured if r.concurrency == level]
        assert {r.agent for r in at} == set(range(1, level + 1))
        assert max(r.in_flight for r in at) == level
        assert all(r.sent_ms >= r.due_ms >= 0 for r in at)
    assert most_busy == 2  # the server never generated more than its slots at once


def test_the_recorded_queue_wait_is_the_wait_the_server_imposed(loaded_bench) -> None:
    records, (chats, _, _) = loaded_bench
    waited_ms = {c.body["messages"][0]["content"][1:9]: c.slot_wait_ns / 1e6 for c in chats}
    at_4 = [r for r in records if r.phase == "measured" and r.concurrency == 4]
    assert all(r.queue_ms_source == QUEUE_SERVER_RESIDUAL for r in at_4)
    errors = [r.queue_ms - waited_ms[r.nonce] for r in at_4]
    assert statistics.median(waited_ms[r.nonce] for r in at_4) > CALL_MS / 2  # they waited
    # the residual also holds the server's own delays (a descheduled thread on a busy host):
    # the typical call matches to a few ms
    assert abs(statistics.median(errors)) < 10, errors
    assert sum(abs(e) < 25 for e in errors) >= 0.75 * len(errors), errors


def test_throughput_doubles_up_to_the_slots_then_stays_flat(loaded_bench) -> None:
    records, _ = loaded_bench
    table = load_table(records_frame(records), {"e2e_ms": 10_000.0}, 2).set_index(
        ["arm", "concurrency"])
    for arm in ("control", "treatment"):
        rate = table.loc[arm, "output_tok_s"]
        # doubling and staying flat are told apart at sqrt(2), the midpoint of 1 and 2 on a
        # log scale: the widest margins a busy host may take from either without flaking
        assert 1.41 < rate[2] / rate[1] < 2.83, rate.to_dict()
        assert 0.71 < rate[4] / rate[2] < 1.41, rate.to_dict()
        assert table.loc[(arm, 4), "generating_max"] == 2
        assert table.loc[(arm, 4), "queue_ms_p50"] > table.loc[(arm, 2), "queue_ms_p50"]
        assert table.loc[(arm, 4), "efficiency"] < 0.7
        assert table.loc[(arm, 1), "efficiency"] == 1.0
        assert (table.loc[arm, "goodput_pct"] == 100.0).all()
        assert table.loc[(arm, 4), "effective_concurrency"] > 2.5
    assert parallel_mismatch(table.reset_index()) is None
    assert "at most 2" in parallel_mismatch(table.reset_index().assign(server_parallel=4))


def test_the_report_shows_the_curve_each_level_and_each_arms_capacity(loaded_bench) -> None:
    _, (_, _, tmp) = loaded_bench
    report = (tmp / "report.md").read_text(encoding="utf-8")
    section = report[report.index("## Under load"):]
    assert "(figures/load_curve.png)" in section and (tmp / "figures" / "load_curve.png").is_file()
    assert "- Capacity of control (`baseline`): " in section
    for level in (1, 2, 4):
        assert f"### {level} agent(s) at once" in section
    assert "At 4 agents `baseline` (treatment) serves" in section
    assert "At 1 agents" not in section
    load = (tmp / "processed" / "load.csv").read_text(encoding="utf-8").splitlines()
    assert len(load) == 1 + 2 * 3


class _Interrupting(OllamaBackend):
    """Ctrl-C arrives while the Nth call runs (in an agent's thread at level 2)."""

    def __init__(self, *args: Any, at_call: int) -> None:
        super().__init__(*args)
        self.calls, self.at_call = 0, at_call
        self._count = threading.Lock()

    def chat(self, *args: Any, **kwargs: Any) -> CallMeasurement:
        with self._count:
            self.calls += 1
            interrupt = self.calls == self.at_call
        if interrupt:
            raise KeyboardInterrupt
        return super().chat(*args, **kwargs)


def test_ctrl_c_mid_level_keeps_the_finished_calls_and_a_rerun_resumes(
        fake_ollama: FakeOllama, raw_config, tmp_path) -> None:
    raw = ollama_raw(raw_config, fake_ollama.url)
    raw["run"]["stopping"]["mode"] = "fixed"
    config = tiny_config(raw, runs=2, concurrency=[1, 2])
    backend = _Interrupting(config.model, config.run, at_call=9)
    with pytest.raises(KeyboardInterrupt):
        run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False,
                  backend=backend)
    journal = next((tmp_path / "j").iterdir()) / "calls.jsonl"
    kept = read_records(journal)
    assert len(kept) >= 8 and any(r.concurrency == 2 for r in kept)
    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    assert {r.key for r in kept} <= {r.key for r in records}  # nothing finished is redone
    measured = [r for r in records if r.phase == "measured" and r.error is None]
    assert Counter((r.run, r.arm, r.concurrency, r.agent) for r in measured) == {
        (run, arm, level, agent): 2 for run in (1, 2) for arm in ("control", "treatment")
        for level in (1, 2) for agent in range(1, level + 1)}
