"""Run the agent workload for both arms and record every call.

The schedule (schedule.py) interleaves the arms and puts warm-up calls after every switch of
arm. Both arms meet the same
prompt-cache state: with run.prompt_cache false every call is cold (a fresh nonce opens the
prompt where the engine's cache cannot be cleared), with true a primer call (phase "prime")
warms the cache right before each measured call. Every finished call is appended to the
journal (bench/journal.py) before the next starts, so a crash or Ctrl-C loses nothing and a
rerun with the same config resumes. data/raw/ is written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ollabench.backends import Backend, make_backend
from ollabench.backends.base import COLD, UNARRANGED, WARM, CachePlan
from ollabench.bench import provenance
from ollabench.bench.concurrent import InFlight, Pace, groups, run_block
from ollabench.bench.failures import should_retry, why_incomplete
from ollabench.bench.host import busy_warning, cpu_probe_ms, host_at_start, host_load, read_host
from ollabench.bench.interleave import CALL, backend_refusal
from ollabench.bench.journal import Journal
from ollabench.bench.open_loop import run_group
from ollabench.bench.run_control import StopRule
from ollabench.bench.schedule import Slot, plan, warmups_per_switch
from ollabench.config.schema import BenchConfig
from ollabench.errors import BenchIncomplete, ConfigError
from ollabench.files import write_json_atomic
from ollabench.paths import CALLS_FILE, ENV_FILE, JOURNAL_ROOT
from ollabench.records.calls_table import write_calls_table
from ollabench.records.schema import (
    NO_FINAL_CHUNK,
    NOT_REACHED,
    OK,
    SKIPPED,
    WARMUP_STAGE,
    CallMeasurement,
    CallRecord,
    write_records_atomic,
)
from ollabench.workloads import Workload, load_workload, output_cap
from ollabench.workloads.base import TaskEnded
from ollabench.workloads.quality import output_quality, similarity_pct

WARMUP_NUM_PREDICT = 8
PRIME_NUM_PREDICT = 1
NONCE_DIGITS = 8  # fixed width: the same prompt length in both arms
OTHER_ARM = {"control": "treatment", "treatment": "control"}


class MissingInput(Exception):
    """A step's input, the output of an earlier step of the same run, never succeeded."""


def new_nonce() -> str:
    """A per-call tag of NONCE_DIGITS decimal digits: fresh on every call and every rerun
    (so no cache holds it), and of one width (digits tokenize alike in most vocabularies)."""
    return f"{secrets.randbelow(10 ** NONCE_DIGITS):0{NONCE_DIGITS}d}"


def config_key(config: BenchConfig, workload: Workload) -> str:
    """Identifies the experiment: a journal is only ever resumed by the same config and data."""
    payload = json.dumps({"config": config.model_dump(mode="json", exclude={"judge"}),
                          "workload": workload.source.sha256},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Runner:
    """Executes a plan against each arm's backend, journaling every attempt."""

    def __init__(self, config: BenchConfig, backends: dict[str, Backend], workload: Workload,
                 journal: Journal, warmups: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.backends = backends  # by arm (arm_backends)
        self.workload = workload
        self.journal = journal
        self.warmups = warmups
        self.sleep = sleep
        self.snapshots: list[dict[str, Any]] = []
        self.options = arm_options(config)
        self._extra_seq = 0
        self._extra_lock = threading.Lock()
        self.in_flight = InFlight()
        # run.interleave call: both arms' engines stay loaded, so a switch reloads nothing
        self.keep_loaded = config.run.interleave == CALL
        self._warm: set[str] = set()  # arms whose load this process has paid (warm-ups)
        self._seen: list[str] = []  # arms snapshotted "before", in order
        # (run, arm, level, agent, step) -> its slot
        self._seq_of: dict[tuple[int, str, int, int, int], int] = {}

    def profile_name(self, arm: str) -> str:
        return (self.config.reference if arm == "control" else self.config.profile).name

    def execute(self, slots: list[Slot], progress: bool = True,
                stop: Callable[[int], bool] | None = None) -> int:
        """Run the slots not yet done; before each run, ask `stop` whether the runs before
        it settle the experiment. Returns the runs per arm the experiment ended with."""
        done = self.journal.succeeded()
        self._seq_of = {(*s.block, s.agent, s.step): s.seq for s in slots if s.step >= 0}
        pending = [s for s in slots if s.seq not in done]
        bar = tqdm(total=len(slots), initial=len(slots) - len(pending), unit="call",
                   disable=not progress, dynamic_ncols=True, desc="bench")
        current_arm = None
        self._extra_seq = max([len(slots), *(r.seq for r in self.journal.records)])
        asked, runs = 0, max((s.run for s in slots), default=0)

        def call(slot: Slot, pace: Pace) -> None:
            record = self._call(slot, pace)
            bar.update(1)
            if record.eval_tok_s is not None:
                bar.set_postfix_str(f"{record.stage} {record.eval_tok_s:.1f} tok/s")

        try:
            for group in groups(pending):
                first = group[0]
                if stop is not None and first.run != asked:
                    asked = first.run
                    if stop(first.run - 1):
                        runs = first.run - 1
                        break
                if first.arm != current_arm:
                    self._switch_arm(current_arm, first)
                    current_arm = first.arm
                if first.phase == "measured":
                    if first.arm not in self._warm:
                        # Resumed past its warm-ups: this process has not paid the load yet.
                        run_block([self._extra_slot(first, WARMUP_STAGE)
                                   for _ in range(self.warmups)], call)
                    # e.g. a context per agent, loaded off the clock
                    self.backends[first.arm].serve(first.level, self.options[first.arm])
                run_group(group, call, self.config.run)
                self._warm.add(first.arm)
        finally:
            bar.close()
            held = self._seen if self.keep_loaded else [current_arm] if current_arm else []
            for arm in held:
                self._snapshot("after", arm)
        if stop is not None and runs == max((s.run for s in slots), default=0):
            stop(runs)  # the last look, for its reason
        return runs

    def _extra_slot(self, slot: Slot, stage: str, primer: bool = False) -> Slot:
        """A call outside the plan (a resumed warm-up, a primer): numbered after it."""
        with self._extra_lock:
            self._extra_seq += 1
            seq = self._extra_seq
        return Slot(seq, slot.run, slot.arm, stage, slot.step if stage == slot.stage else -1,
                    primer, level=slot.level, agent=slot.agent)

    def _switch_arm(self, previous: str | None, slot: Slot) -> None:
        """Snapshot the engines around a switch, which may reload (the next arm's warm-ups
        absorb it). With both arms kept loaded (run.interleave call) a switch is free: one
        snapshot per arm before its first call, one after the last (execute)."""
        if self.keep_loaded:
            if slot.arm not in self._seen:
                self._seen.append(slot.arm)
                self._snapshot("before", slot.arm, run=slot.run)
            return
        self._warm.clear()
        if previous is not None:
            self._snapshot("after", previous)
        if self.config.run.cold_start:
            self.backends[slot.arm].unload()
        self._snapshot("before", slot.arm, run=slot.run)

    def _snapshot(self, when: str, arm: str, run: int | None = None) -> None:
        self.snapshots.append({"when": when, "arm": arm, "run": run, "at": provenance.utc_now(),
                               "state": self.backends[arm].snapshot()})

    def _messages(self, slot: Slot) -> list[dict[str, str]]:
        if slot.step < 0:
            return self.workload.warmup_messages()
        step = self.workload.steps[slot.step]
        succeeded = self.journal.succeeded()
        outputs = {}
        for needed in step.needs:
            record = succeeded.get(self._seq_of[(*slot.block, slot.agent, needed)])
            if record is None:
                raise MissingInput(f"run {slot.run} {slot.arm}: its input, the "
                                   f"{self.workload.steps[needed].stage} call, failed")
            outputs[needed] = record.output
        return self.workload.messages(slot.step, outputs.__getitem__)

    def _num_predict(self, slot: Slot) -> int:
        if slot.step < 0:
            return WARMUP_NUM_PREDICT
        return output_cap(self.config, self.workload.steps[slot.step])

    def _call(self, slot: Slot, pace: Pace) -> CallRecord:
        """One slot, retried with exponential backoff (a busy server's Retry-After instead,
        where it sent one) while should_retry() says a try may help; every attempt is
        journaled. A stream that ended without a final chunk (the
        server's token-repeat abort) would end so again with the same seed: its retry gets
        seed + the retry number, recorded in `options`. A report call whose analysis never
        succeeded is recorded as skipped: no retry can help it. A step after the one that
        ended its run's task (workloads/base.py TaskEnded) is recorded as unreached."""
        run = self.config.run
        options = {**self.options[slot.arm], "num_predict": self._num_predict(slot)}
        attempt = self.journal.attempts(slot.seq) + 1
        try:
            messages = self._messages(slot)
        except MissingInput as exc:
            return self._record(slot, attempt, options, provenance.utc_now(),
                                CallMeasurement(outcome=SKIPPED, error=f"skipped: {exc}"),
                                {"concurrency": slot.level, "agent": slot.agent})
        except TaskEnded:
            return self._record(replace(slot, unreached=True), attempt, options,
                                provenance.utc_now(), CallMeasurement(outcome=NOT_REACHED),
                                {"concurrency": slot.level, "agent": slot.agent})
        asked_s: float | None = None  # the last try's Retry-After (bounded), in seconds
        for retry in range(run.max_retries + 1):
            if retry:  # the server's Retry-After, where it sent one, replaces the backoff
                self.sleep(run.retry_backoff_s * 2 ** (retry - 1) if asked_s is None
                           else asked_s)
                pace.due_ns = time.perf_counter_ns()  # a retry is due after its backoff
            cache = self._prepare_cache(slot, messages, options, pace)
            started_at = provenance.utc_now()
            record = self._record(slot, attempt + retry, options, started_at,
                                  *self._chat(slot, messages, options, pace, cache), messages)
            if not should_retry(record):
                break
            asked_s = record.retry_after_s
            if record.outcome == NO_FINAL_CHUNK:
                options = {**options, "seed": self.options[slot.arm]["seed"] + retry + 1}
        return record

    def _prepare_cache(self, slot: Slot, messages: list[dict[str, str]],
                       options: dict[str, Any], pace: Pace) -> CachePlan:
        """The same cache state for both arms: cold with a fresh nonce, or warm after a
        primer call with the same messages (a failed primer leaves the state unarranged)."""
        if not self.config.run.prompt_cache:
            return CachePlan(COLD, new_nonce())
        if slot.phase != "measured":
            return UNARRANGED
        primer = self._extra_slot(slot, slot.stage, primer=True)
        primer_options = {**options, "num_predict": PRIME_NUM_PREDICT}
        started_at = provenance.utc_now()
        record = self._record(primer, 1, primer_options, started_at,
                              *self._chat(primer, messages, primer_options, pace))
        return CachePlan(WARM) if record.outcome == OK else UNARRANGED

    def _chat(self, slot: Slot, messages: list[dict[str, str]], options: dict[str, Any],
              pace: Pace, cache: CachePlan = UNARRANGED
              ) -> tuple[CallMeasurement, dict[str, Any]]:
        """One backend call with the step's tools and format, what the host did meanwhile
        (read outside its clocks), and where it sat in its block: due, sent, calls in
        flight, the slot wait."""
        before = read_host()
        probe_ms = cpu_probe_ms()  # before the backend's clocks start: costs them nothing
        in_flight = self.in_flight.enter()
        sent_ns = time.perf_counter_ns()
        try:
            measurement = self.backends[slot.arm].chat(messages, options, cache,
                                                       self.workload.tools_of(slot.step),
                                                       self.workload.format_of(slot.step))
        finally:
            self.in_flight.leave()
        answered_ns = time.perf_counter_ns()
        self.journal.sequential.derive_queue_ms(measurement, slot.arm)
        load = {"concurrency": slot.level, "agent": slot.agent, "in_flight": in_flight,
                "due_ms": pace.ms(pace.due_ns), "sent_ms": pace.ms(sent_ns)}
        pace.due_ns = answered_ns  # closed loop: the agent's next call is due now
        return measurement, host_load(before, read_host()) | load | {"cpu_probe_ms": probe_ms}

    def _record(self, slot: Slot, attempt: int, options: dict[str, Any], started_at: str,
                measurement: CallMeasurement, context: dict[str, Any] | None = None,
                messages: list[dict[str, str]] | None = None) -> CallRecord:
        """The journaled record of one attempt; a measured call that succeeded gets its
        output's quality (workloads/quality.py) and, once the other arm has answered the
        same run and step, the similarity of the two outputs."""
        quality: dict[str, Any] = {}
        if slot.phase == "measured" and measurement.error is None and messages is not None:
            quality = asdict(output_quality(messages, measurement.output,
                                            self.workload.parts(slot.step)))
            quality |= self.workload.call_fields(slot.step, measurement.output)
            other = self.journal.succeeded().get(self._seq_of.get(
                (slot.run, OTHER_ARM[slot.arm], slot.level, slot.agent, slot.step), -1))
            if other is not None:
                quality["output_similarity_pct"] = similarity_pct(measurement.output,
                                                                  other.output)
        backend = self.backends[slot.arm]
        record = CallRecord(
            **asdict(measurement), seq=slot.seq, run=slot.run, arm=slot.arm,
            profile=self.profile_name(slot.arm), stage=slot.stage, phase=slot.phase,
            attempt=attempt, started_at=started_at,
            model=self.config.arm_model(slot.arm).name, backend=backend.name,
            options=backend.effective_options(options),
            **(context or {}), **quality)
        self.journal.append(record)
        return record


def arm_options(config: BenchConfig) -> dict[str, dict[str, Any]]:
    """Each arm's options as sent, the run's seed included unless the profile sets one."""
    return {arm: {"seed": config.run.seed, **profile.options}
            for arm, profile in (("control", config.reference), ("treatment", config.profile))}


def arm_backends(config: BenchConfig, backend: Backend | None = None) -> dict[str, Backend]:
    """Each arm's backend: one shared by both arms, unless the control arm names its own
    model config (reference_model), which gets a backend of its own."""
    treatment = backend or make_backend(config.model, config.run)
    if config.reference_model is None:
        return {"control": treatment, "treatment": treatment}
    return {"control": make_backend(config.reference_model, config.run), "treatment": treatment}


def run_bench(config: BenchConfig, out_dir: Path, journal_root: Path = JOURNAL_ROOT,
              progress: bool = True, backend: Backend | None = None) -> list[CallRecord]:
    """Run (or resume) the benchmark and write calls.jsonl (with its columnar copy) and
    env.json to out_dir."""
    workload = load_workload(config)
    backends = arm_backends(config, backend)
    distinct = list({id(b): b for b in backends.values()}.values())
    for each in distinct:
        each.preflight()
        workload.check_requests(each.refusal, f"the {each.name} backend")
    options = arm_options(config)
    for arm, where in (("control", "reference.options"), ("treatment", "profile.options")):
        backend = backends[arm]
        backend.validate_options(options[arm], where)  # refused before the first call
        num_ctx = backend.context_length(options[arm])
        if num_ctx is not None:
            workload.check_context(backend.count_tokens, num_ctx,
                                   lambda step: output_cap(config, step), f"{arm} arm")
    # Two engines: every switch of arm is treated as a reload (a warm-up absorbs it).
    switch_reloads = len(distinct) > 1 or backends["treatment"].expects_reload(
        options["control"], options["treatment"])
    if config.run.interleave == CALL and (refusal := backend_refusal(
            backends["treatment"].name, all(b.switch_free for b in distinct), len(distinct),
            switch_reloads)):
        raise ConfigError(refusal)
    key = config_key(config, workload)
    journal = Journal(journal_root, key)
    runner = Runner(config, backends, workload, journal,
                    warmups_per_switch(config.run, switch_reloads))
    slots = plan(config.run, workload.steps, switch_reloads)
    start = host_at_start()  # after every check: a refused config is not kept waiting
    if warning := busy_warning(start):
        print(f"ollabench: warning: {warning}", file=sys.stderr)
    stop_rule = StopRule(config, journal.records)
    try:
        runs = runner.execute(slots, progress=progress, stop=stop_rule)
        described = {id(b): b.provenance() for b in distinct}
    finally:
        for each in distinct:
            each.close()
    records = sorted(journal.records, key=lambda r: r.key)
    started_at = min((r.started_at for r in records), default=provenance.utc_now())
    env = provenance.collect(described[id(backends["treatment"])]) | {
        "config": config.model_dump(mode="json"),
        "workload": workload.describe(),
        "journal_key": key,
        "started_at": started_at,
        "finished_at": provenance.utc_now(),
        "engine_states": runner.snapshots,
        "planned_calls": sum(1 for s in slots if s.run <= runs),
        "stopping": stop_rule.summary(runs),
        "host_at_start": start,
    }
    if len(distinct) > 1:
        env["reference_backend"] = described[id(backends["control"])]
    write_records_atomic(out_dir / CALLS_FILE, records)
    write_json_atomic(out_dir / ENV_FILE, env)
    write_calls_table(out_dir)
    succeeded = journal.succeeded()
    failed = sorted(s.seq for s in slots if s.seq not in succeeded and s.run <= runs)
    if failed:
        raise BenchIncomplete(why_incomplete(failed, journal.records, out_dir))
    journal.remove()
    return records

