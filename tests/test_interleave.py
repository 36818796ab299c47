"""run.interleave call: the arms alternate call by call within each run (ABBA at the call
level), one warm-up per arm, each arm's report reading its own analysis; refused where a
switch of arm would cost a reload; resumed after Ctrl-C with the warm-ups a fresh process
needs; on the embedded engine both arms' engines stay loaded (a real model, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ollabench.backends.base import Backend, CachePlan
from ollabench.bench.interleave import backend_refusal
from ollabench.bench.loop import run_bench
from ollabench.bench.schedule import plan
from ollabench.config.schema import validate_config
from ollabench.errors import ConfigError
from ollabench.records.schema import OK, CallMeasurement
from ollabench.stats.decisions import control_first
from ollabench.stats.frames import records_frame
from tests.helpers.fake_ollama import FakeOllama
from tests.helpers.project import AGENT_STEPS, tiny_config
from tests.test_bench_ollama import ollama_raw

LETTER = {"control": "C", "treatment": "T"}


def _order(slots: list[Any]) -> list[str]:
    """Each slot as arm letter + stage initial (w: warm-up)."""
    return [LETTER[s.arm] + s.stage[0] for s in slots]


def test_call_alternates_the_arms_call_by_call_abba(raw_config: dict[str, Any]) -> None:
    config = tiny_config(raw_config, runs=4, warmup=1, interleave="call")
    slots = plan(config.run, AGENT_STEPS)
    assert _order(slots) == ["Cw", "Tw",
                             "Ca", "Ta", "Tr", "Cr",   # run 1 starts with control
                             "Ta", "Ca", "Cr", "Tr",   # run 2 with the other arm
                             "Ca", "Ta", "Tr", "Cr",
                             "Ta", "Ca", "Cr", "Tr"]
    assert [s.seq for s in slots] == list(range(1, len(slots) + 1))
    assert [s.run for s in slots if s.phase == "measured"] == [r for r in (1, 2, 3, 4)
                                                               for _ in range(4)]


def test_each_arm_warms_up_once_before_its_first_call(raw_config: dict[str, Any]) -> None:
    for warmup, reloads, per_arm in ((0, False, 0), (0, True, 1), (2, False, 2)):
        config = tiny_config(raw_config, runs=6, warmup=warmup, interleave="call")
        slots = plan(config.run, AGENT_STEPS, switch_reloads=reloads)
        warmups = [s for s in slots if s.phase == "warmup"]
        assert [s.arm for s in warmups] == ["control"] * per_arm + ["treatment"] * per_arm
        assert slots[:len(warmups)] == warmups  # all before the first measured call


def test_run_is_the_default_and_keeps_the_schedule(raw_config: dict[str, Any]) -> None:
    default = tiny_config(raw_config, runs=4, warmup=1)
    assert default.run.interleave == "run"
    explicit = tiny_config(raw_config, runs=4, warmup=1, interleave="run")
    assert plan(default.run, AGENT_STEPS) == plan(explicit.run, AGENT_STEPS)
    assert _order(plan(default.run, AGENT_STEPS))[:7] == ["Cw", "Ca", "Cr",
                                                          "Tw", "Ta", "Tr", "Ta"]


@pytest.mark.parametrize(("run", "expected"), [
    ({"interleave": "calls"}, r"^run\.interleave: must be one of 'run' or 'call', got 'calls'$"),
    ({"order": "sequential", "stopping": {"mode": "fixed"}},
     r"^run\.interleave: call alternates the arms within every run; run\.order sequential"),
    ({"concurrency": [1, 2]}, r"^run\.interleave: call runs one agent at a time; "
                              r"run\.concurrency \[1, 2\]"),
    ({"arrivals": {"rate_per_min": 6.0}}, r"^run\.interleave: call runs one agent at a time; "
                                          r"run\.concurrency \[1\] with run\.arrivals"),
    ({"cold_start": True}, r"^run\.interleave: call keeps both arms loaded; run\.cold_start"),
])
def test_settings_call_cannot_serve_are_refused(raw_config: dict[str, Any], run: dict[str, Any],
                                                expected: str) -> None:
    stopping = {**raw_config["run"]["stopping"], **run.pop("stopping", {})}
    raw_config["run"].update({"interleave": "call", "stopping": stopping, **run})
    with pytest.raises(ConfigError, match=expected) as raised:
        validate_config(raw_config)
    assert len(str(raised.value).splitlines()) == 1


def test_a_server_whose_arms_would_reload_is_refused_before_the_first_call(
        fake_ollama: FakeOllama, raw_config: dict[str, Any], tmp_path: Path) -> None:
    raw = ollama_raw(raw_config, fake_ollama.url)
    raw["profile"]["options"]["num_ctx"] = 2048
    config = tiny_config(raw, runs=2, interleave="call")
    with pytest.raises(ConfigError, match=r"^run\.interleave: call needs both arms' load-time "
                       r"options to match on the ollama backend: this server would reload "
                       r"the model at every call; .*or set run\.interleave: run") as raised:
        run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    assert len(str(raised.value).splitlines()) == 1
    assert fake_ollama.chats() == []


def test_a_server_with_matching_options_alternates_call_by_call(
        fake_ollama: FakeOllama, raw_config: dict[str, Any], tmp_path: Path) -> None:
    config = tiny_config(ollama_raw(raw_config, fake_ollama.url), runs=2, interleave="call")
    records = run_bench(config, tmp_path / "raw", journal_root=tmp_path / "j", progress=False)
    assert _order(sorted(records, key=lambda r: r.seq)) == [
        "Cw", "Tw", "Ca", "Ta", "Tr", "Cr", "Ta", "Ca", "Cr", "Tr"]
    assert not any(chat.did["reloaded"] for chat in fake_ollama.chats()[1:])


def test_refusals_name_the_cause() -> None:
    assert backend_refusal("llamacpp", True, 2, True) is None  # in process: nothing reloads
    assert backend_refusal("openai", False, 1, False) is None
    assert "would swap models (a reload) at every call" in str(
        backend_refusal("ollama", False, 2, True))
    assert "would reload the model at every call" in str(backend_refusal("ollama", False, 1,
                                                                         True))


class EchoBackend(Backend):
    """A scripted engine whose answers name the arm, run and stage they answer (the arm
    from its temperature) and their place in its calls, and that keeps every request's
    messages; it stops the process (KeyboardInterrupt) after `fail_after` calls."""

    name = "echo"

    def __init__(self, fail_after: int | None = None) -> None:
        self.requests: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self.fail_after = fail_after

    def preflight(self) -> None:
        pass

    def chat(self, messages: list[dict[str, Any]], options: dict[str, Any],
             cache: CachePlan | None = None, tools: Any = None,
             output_format: Any = None) -> CallMeasurement:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise KeyboardInterrupt
        self.requests.append((options, messages))
        arm = "treatment" if options.get("temperature") == 0.5 else "control"
        return CallMeasurement(ttft_ms=10.0, e2e_ms=40.0, eval_ms=30.0, output_tokens=4,
                               prompt_tokens=50, outcome=OK,
                               output=f"answer-{arm}-{len(self.requests):03d}")

    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return dict(options)

    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return False


def _echo_config(raw_config: dict[str, Any], runs: int) -> Any:
    raw_config["profile"]["options"]["temperature"] = 0.5
    return tiny_config(raw_config, runs=runs, interleave="call")


def test_each_arms_report_reads_its_own_arms_analysis(raw_config: dict[str, Any],
                                                      tmp_path: Path) -> None:
    backend = EchoBackend()
    records = run_bench(_echo_config(raw_config, 4), tmp_path / "raw", tmp_path / "j",
                        progress=False, backend=backend)
    analysis = {(r.run, r.arm): r.output for r in records if r.stage == "analysis"}
    reports = [r for r in records if r.stage == "report"]
    assert len(reports) == 8
    for report in reports:
        own, other = analysis[(report.run, report.arm)], analysis[
            (report.run, "treatment" if report.arm == "control" else "control")]
        _, messages = backend.requests[report.seq - 1]
        sent = json.dumps(messages)
        assert own in sent and other not in sent
    # The position checks read each stage's own order: the report's is the analysis's reversed.
    calls = records_frame(records)
    assert list(control_first(calls, "analysis")) == [True, False, True, False]
    assert list(control_first(calls, "report")) == [False, True, False, True]
    assert list(control_first(calls, "workflow")) == [True, False, True, False]


def test_an_interrupted_run_resumes_with_a_warm_up_per_arm(raw_config: dict[str, Any],
                                                           tmp_path: Path) -> None:
    config = _echo_config(raw_config, 4)
    with pytest.raises(KeyboardInterrupt):  # stopped after the warm-ups and run 1
        run_bench(config, tmp_path / "raw", tmp_path / "j", progress=False,
                  backend=EchoBackend(fail_after=6))
    backend = EchoBackend()
    records = run_bench(config, tmp_path / "raw", tmp_path / "j", progress=False,
                        backend=backend)
    slots = plan(config.run, AGENT_STEPS)
    by_seq = sorted(records, key=lambda r: r.seq)
    assert [r.seq for r in by_seq[:len(slots)]] == [s.seq for s in slots]  # each slot once
    # The fresh process warmed each arm once, before that arm's first call, after the plan.
    extra = by_seq[len(slots):]
    assert [(r.arm, r.phase) for r in extra] == [("treatment", "warmup"), ("control", "warmup")]
    resumed = sorted(records[6:], key=lambda r: r.output[-3:])  # in the order they ran
    assert all(r.run == 2 for r in resumed[:4]) and len(resumed) == len(backend.requests)
    assert _order(resumed[:4]) == ["Tw", "Ta", "Cw", "Ca"]  # run 2 starts with treatment
    env = json.loads((tmp_path / "raw" / "env.json").read_text())
    # One snapshot per arm before its first call and one after the last: not two per call.
    assert [(s["when"], s["arm"]) for s in env["engine_states"]] == [
        ("before", "treatment"), ("before", "control"), ("after", "treatment"),
        ("after", "control")]


@pytest.mark.slow
def test_embedded_arms_with_their_own_context_keep_both_engines_loaded(
        raw_config: dict[str, Any], tmp_path: Path) -> None:
    """The real engine, arms differing in num_ctx: each engine is loaded once (by its arm's
    warm-up) and stays loaded while the arms alternate, where `run` reloads at every switch."""
    raw_config["profile"]["options"]["num_ctx"] = 1024
    loads = {}
    for interleave in ("call", "run"):
        config = tiny_config(raw_config, runs=2, analysis=4, report=4, warmup=0,
                             interleave=interleave)
        out = tmp_path / interleave
        records = run_bench(config, out / "raw", out / "j", progress=False)
        reloaded = [(r.arm, r.phase) for r in sorted(records, key=lambda r: r.seq)
                    if r.reloaded]
        states = json.loads((out / "raw" / "env.json").read_text())["engine_states"]
        loads[interleave] = states[-1]["state"]["loads"]
        if interleave == "call":
            assert reloaded == [("control", "warmup"), ("treatment", "warmup")]
            assert {(r.arm, r.num_ctx) for r in records} == {("control", 4096),
                                                             ("treatment", 1024)}
            assert states[-1]["state"]["engines"] == 2 and len(states) == 4
        else:
            assert reloaded == [("control", "warmup"), ("treatment", "warmup"),
                                ("control", "warmup")]  # C | T T | C: a load per switch
    assert loads == {"call": 2, "run": 3}
