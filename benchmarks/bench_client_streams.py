"""Whether ollabench's own client is ever the bottleneck at 16 concurrent streams.

The test Ollama server (tests/helpers/fake_ollama.py, Ollama 0.24.0 behaviour, 16 generation
slots) runs in a process of its own and answers every chat with a fixed script: the first
token TTFT_MS after the request got its slot, then one token every TOKEN_MS, each sent at an
absolute deadline. Three clients, each in a process of its own, run 16 agents at once against
it, closed loop (an agent's next call starts when its previous answer is in), each agent
making the agent workload's two calls (analysis, then report) per round:

- ollabench: the bench's own path, `Runner.execute` on one block of the schedule
  (bench/loop.py: the concurrent executor of bench/concurrent.py, OllamaBackend's streamed
  calls, the /api/ps query after each, host readings, output quality, every record fsync'd
  to a journal, the progress bar);
- the floor: a bare asyncio + httpx.AsyncClient loop, 16 tasks that read each NDJSON line,
  timestamp it and parse it, and keep nothing else;
- bare threads: the same loop on 16 threads with httpx's blocking client, ollabench's
  transport without the bench around it (what ollabench itself adds).

The rounds alternate (A B C, C B A, ...), so drift and the server's own lateness hit all
alike. For each client it prints the per-call TTFT error (measured
TTFT minus the scripted TTFT_MS: it includes the request's trip, the server's lateness and
the client's own delays), median and p95, and the CPU per token: the client process's CPU
time (time.process_time, every thread) over a round, divided by the tokens streamed in it.
The server's lateness (its first write after the slot, minus TTFT_MS) is shown per client
from its own log, so a late server is not mistaken for a slow client.

Targets: ollabench's median TTFT error at most TARGET_TTFT_DELTA_MS above the floor's, and
its CPU per token at most TARGET_CPU_RATIO times the floor's (docs/performance.md).

Run from the repository root: python benchmarks/bench_client_streams.py [--reps 10]
[--prior-records 5000] (--smoke: 4 streams, a few tokens, one round each, targets printed
but not enforced). Each client process is this script again, with --worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runnable from a checkout without installing

from tests.helpers.fake_ollama_process import fake_ollama_process  # noqa: E402

MODEL = "qwen2.5:7b"
MODEL_CONFIG = "qwen2.5-7b"  # conf/model/
SERVER_VERSION = "0.24.0"
CALLS_PER_AGENT = 2  # the agent workload's steps: analysis, then report
PRIOR_SEQ = 1_000_000  # --prior-records are numbered from here
TARGET_TTFT_DELTA_MS = 1.0
TARGET_CPU_RATIO = 1.5
OLLABENCH = "ollabench: Runner, threads, OllamaBackend"
FLOOR = "floor: bare asyncio + httpx.AsyncClient"
THREADS = "bare threads + httpx.Client"
WORKERS = {OLLABENCH: "ollabench", FLOOR: "asyncio", THREADS: "threads"}


@dataclass(frozen=True)
class Sizes:
    """One benchmark's shape: the streams, the script and the rounds."""

    streams: int
    ttft_ms: float
    token_ms: float
    tokens: int
    warmup_rounds: int
    rounds: int
    prior_records: int = 0  # in ollabench's journal before the first round

    def script(self) -> dict[str, Any]:
        return {"ttft_ms": self.ttft_ms, "token_ms": self.token_ms, "tokens": self.tokens}


FULL = Sizes(streams=16, ttft_ms=50.0, token_ms=10.0, tokens=120, warmup_rounds=2, rounds=10)
SMOKE = Sizes(streams=4, ttft_ms=20.0, token_ms=2.0, tokens=8, warmup_rounds=0, rounds=1)


# --- the clients (each runs in a worker process: --worker) ---------------------------------

class OllabenchClient:
    """The bench's own path on one block per round: the run group's defaults from conf/ with
    this server, run.concurrency [1, 16] (only the 16-agent blocks run), no warm-up or retry,
    cold prompt cache."""

    def __init__(self, url: str, sizes: Sizes, journal_root: Path) -> None:
        from ollabench.backends.ollama import OllamaBackend
        from ollabench.bench.concurrent import groups
        from ollabench.bench.journal import Journal
        from ollabench.bench.loop import Runner, arm_backends, config_key
        from ollabench.bench.schedule import plan
        from ollabench.config.schema import compose, validate_config
        from ollabench.records.schema import write_records_atomic
        from ollabench.workloads import load_workload

        raw = compose([f"model={MODEL_CONFIG}"], conf_dir=ROOT / "conf")
        raw["model"]["host"] = url
        raw["run"] |= {"concurrency": [1, sizes.streams],
                       "runs": sizes.warmup_rounds + sizes.rounds,
                       "stopping": raw["run"]["stopping"] | {"mode": "fixed"},
                       "order": "sequential", "warmup": 0, "max_retries": 0,
                       "prompt_cache": False, "first_token_timeout_s": 30.0,
                       "read_timeout_s": 30.0}
        config = validate_config(raw)
        workload = load_workload(config)
        if len(workload.steps) != CALLS_PER_AGENT:
            raise SystemExit(f"the agent workload has {len(workload.steps)} steps, "
                             f"not {CALLS_PER_AGENT}")
        self.backend = OllamaBackend(config.model, config.run)
        self.backend.preflight()
        self.journal = Journal(journal_root, config_key(config, workload))
        if sizes.prior_records:  # what an experiment has journaled by its late blocks
            write_records_atomic(self.journal.path, prior_records(sizes.prior_records))
            self.journal = Journal(journal_root, config_key(config, workload))
        self.runner = Runner(config, arm_backends(config, self.backend), workload,
                             self.journal, warmups=0)
        self.blocks = iter([block for block in groups(plan(config.run, workload.steps))
                            if block[0].level == sizes.streams])

    def round(self) -> list[tuple[float | None, int]]:
        """One block (16 agents x 2 calls): (TTFT ms, tokens) of each call, as recorded."""
        before = len(self.journal.records)
        self.runner.execute(next(self.blocks), progress=True)
        return [(r.ttft_ms, r.output_tokens or 0) for r in self.journal.records[before:]]

    def close(self) -> None:
        self.backend.close()


def prior_records(count: int) -> list[Any]:
    """Finished calls of earlier blocks, as a 40-run experiment at levels [1, 2, 4, 8, 16]
    leaves about 5,000 (2 arms x 40 runs x (1 + 2 + 4 + 8 + 16) agents x 2 calls): numbered
    after every planned call, so none of this run's calls counts as done."""
    from ollabench.records.schema import OK, CallRecord

    levels = (1, 2, 4, 8, 16)
    return [CallRecord(seq=PRIOR_SEQ + i, run=i // 62 + 1, arm=("control", "treatment")[i % 2],
                       stage="analysis", phase="measured", concurrency=levels[i % 5], agent=1,
                       outcome=OK, ttft_ms=50.0, e2e_ms=1240.0, total_ms=1240.0, load_ms=1.0,
                       prompt_eval_ms=5.0, eval_ms=1190.0, output_tokens=120,
                       output="w0 " * 120) for i in range(count)]


FLOOR_BODY = {"model": MODEL, "stream": True, "think": False, "keep_alive": "5m",
              "truncate": False, "options": {"seed": 42},
              "messages": [{"role": "user", "content": "Stream the answer."}]}
Call = tuple[float | None, int]  # (TTFT ms, content tokens) of one call


def read_line(line: str, started_ns: int, now_ns: int, call: list[Any]) -> None:
    """A floor's work per line: parse it, count a content token, keep the first's TTFT."""
    message = json.loads(line).get("message") or {}
    if message.get("content") or message.get("thinking"):
        call[1] += 1
        if call[0] is None:
            call[0] = (now_ns - started_ns) / 1e6


class AsyncioFloor:
    """What any async streaming client must do: 16 tasks that send, read lines, timestamp and
    parse them, and keep nothing else."""

    def __init__(self, url: str, sizes: Sizes) -> None:
        self.sizes = sizes
        self.loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=sizes.streams,
                              max_keepalive_connections=sizes.streams)
        self.client = httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits)

    async def _call(self) -> Call:
        call: list[Any] = [None, 0]
        started_ns = time.perf_counter_ns()
        async with self.client.stream("POST", "/api/chat", json=FLOOR_BODY) as response:
            async for line in response.aiter_lines():
                read_line(line, started_ns, time.perf_counter_ns(), call)
        return call[0], call[1]

    async def _agent(self) -> list[Call]:
        return [await self._call() for _ in range(CALLS_PER_AGENT)]

    async def _round(self) -> list[Call]:
        agents = await asyncio.gather(*(self._agent() for _ in range(self.sizes.streams)))
        return [call for calls in agents for call in calls]

    def round(self) -> list[Call]:
        return self.loop.run_until_complete(self._round())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


class ThreadsFloor:
    """The same with a thread per agent and httpx's blocking client, as ollabench streams:
    what the backend's transport costs without the bench around it."""

    def __init__(self, url: str, sizes: Sizes) -> None:
        self.sizes = sizes
        limits = httpx.Limits(max_connections=sizes.streams,
                              max_keepalive_connections=sizes.streams)
        self.client = httpx.Client(base_url=url, timeout=30.0, limits=limits)

    def _call(self) -> Call:
        call: list[Any] = [None, 0]
        started_ns = time.perf_counter_ns()
        with self.client.stream("POST", "/api/chat", json=FLOOR_BODY) as response:
            for line in response.iter_lines():
                read_line(line, started_ns, time.perf_counter_ns(), call)
        return call[0], call[1]

    def round(self) -> list[Call]:
        calls: list[Call] = []
        agents = [threading.Thread(target=lambda: calls.extend(
            [self._call() for _ in range(CALLS_PER_AGENT)])) for _ in range(self.sizes.streams)]
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.join()
        return calls

    def close(self) -> None:
        self.client.close()


def worker(kind: str, url: str, sizes: Sizes) -> None:
    """Serve rounds: one per line on stdin, one JSON line on stdout for each (its calls, the
    process's CPU time over it, its monotonic start and end)."""
    with tempfile.TemporaryDirectory(prefix="clientbench-") as journal_root:
        client = (OllabenchClient(url, sizes, Path(journal_root)) if kind == "ollabench"
                  else AsyncioFloor(url, sizes) if kind == "asyncio" else ThreadsFloor(url, sizes))
        print("ready", flush=True)
        for _ in sys.stdin:
            cpu_start, start_ns = time.process_time(), time.perf_counter_ns()
            calls = client.round()
            cpu_s, end_ns = time.process_time() - cpu_start, time.perf_counter_ns()
            print(json.dumps({"calls": calls, "cpu_s": cpu_s, "start_ns": start_ns,
                              "end_ns": end_ns}), flush=True)
        client.close()


# --- the coordinator -----------------------------------------------------------------------

@dataclass
class Figures:
    """One client's measured rounds."""

    ttft_errors_ms: list[float] = field(default_factory=list)
    cpu_us_per_token: list[float] = field(default_factory=list)  # one per round
    server_late_ms: list[float] = field(default_factory=list)
    failed_calls: int = 0
    windows: list[tuple[int, int]] = field(default_factory=list)  # its rounds, monotonic ns


class Worker:
    """A client process, driven one round at a time; it reads this command line's sizes."""

    def __init__(self, kind: str, url: str, log: IO[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *sys.argv[1:], "--worker", kind, "--url", url],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        if self._line() != "ready":
            raise SystemExit(f"the {kind} client did not start (see its log)")

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def round(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self._line()
        if not line:
            raise SystemExit("a client died mid-round (see its log)")
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait(timeout=60):
            raise SystemExit("a client exited with an error (see its log)")


def measure(sizes: Sizes, log: IO[str]) -> dict[str, Figures]:
    """Alternate the clients' rounds on one server; the server's log is read at the end."""
    figures = {name: Figures() for name in WORKERS}
    with fake_ollama_process(sizes.script(), "--version", SERVER_VERSION, "--model", MODEL,
                             "--parallel", str(sizes.streams)) as url:
        workers = {name: Worker(kind, url, log) for name, kind in WORKERS.items()}
        try:
            for index in range(sizes.warmup_rounds + sizes.rounds):
                order = list(workers) if index % 2 == 0 else list(workers)[::-1]  # ABC CBA
                for name in order:
                    done = workers[name].round()
                    if index >= sizes.warmup_rounds:
                        add_round(figures[name], done, sizes)
        finally:
            for each in workers.values():
                each.close()
        exchanges = httpx.get(f"{url}/_fake/exchanges", timeout=60).json()["exchanges"]
    for each in figures.values():
        each.server_late_ms = server_late_ms(exchanges, each.windows, sizes)
    return figures


def add_round(figures: Figures, done: dict[str, Any], sizes: Sizes) -> None:
    tokens = sum(t for _, t in done["calls"])
    figures.ttft_errors_ms += [t - sizes.ttft_ms for t, _ in done["calls"] if t is not None]
    figures.failed_calls += sum(1 for t, n in done["calls"] if t is None or n != sizes.tokens)
    figures.cpu_us_per_token.append(done["cpu_s"] / max(tokens, 1) * 1e6)
    figures.windows.append((done["start_ns"], done["end_ns"]))


def server_late_ms(exchanges: list[dict[str, Any]], windows: list[tuple[int, int]],
                   sizes: Sizes) -> list[float]:
    """How late the server wrote each first token (after the slot, less the script) for the
    chats that arrived in these rounds (the server and clients share the monotonic clock)."""
    return [(e["token_ns"][0] - e["generating_ns"]) / 1e6 - sizes.ttft_ms for e in exchanges
            if e["path"] == "/api/chat" and e["token_ns"]
            and any(start <= e["arrived_ns"] <= end for start, end in windows)]


def report(figures: dict[str, Figures], sizes: Sizes) -> bool:
    """Print the table and the verdict on each target; True when all are met."""
    print(f"{sizes.streams} concurrent streams, {CALLS_PER_AGENT} calls each per round; script: "
          f"first token {sizes.ttft_ms:g} ms after the slot, then {sizes.tokens - 1} more "
          f"{sizes.token_ms:g} ms apart; {sizes.rounds} measured rounds per client after "
          f"{sizes.warmup_rounds} warm-up rounds, alternating.\n")
    print("| client | TTFT error median (ms) | TTFT error p95 (ms) | server late median / p95 "
          "(ms) | CPU per token median, min-max (µs) | failed calls |")
    print("|---|---|---|---|---|---|")
    ttft, cpu = {}, {}
    for name, f in figures.items():
        ttft[name] = statistics.median(f.ttft_errors_ms)
        cpu[name] = statistics.median(f.cpu_us_per_token)
        late = f.server_late_ms or [float("nan")]
        print(f"| {name} | {ttft[name]:.3f} | {np.percentile(f.ttft_errors_ms, 95):.3f} "
              f"| {statistics.median(late):.3f} / {np.percentile(late, 95):.3f} "
              f"| {cpu[name]:.1f}, {min(f.cpu_us_per_token):.1f}-{max(f.cpu_us_per_token):.1f} "
              f"| {f.failed_calls} |")
    print()
    for other in (FLOOR, THREADS):
        print(f"- ollabench against {other}: median TTFT error "
              f"{ttft[OLLABENCH] - ttft[other]:+.3f} ms, CPU per token "
              f"{cpu[OLLABENCH] / cpu[other]:.2f}x")
    delta, ratio = ttft[OLLABENCH] - ttft[FLOOR], cpu[OLLABENCH] / cpu[FLOOR]
    failed = sum(f.failed_calls for f in figures.values())
    verdicts = [
        (f"median TTFT error at most {TARGET_TTFT_DELTA_MS:g} ms above the floor's: "
         f"{delta:+.3f} ms", delta <= TARGET_TTFT_DELTA_MS),
        (f"CPU per token at most {TARGET_CPU_RATIO:g}x the floor's: {ratio:.2f}x",
         ratio <= TARGET_CPU_RATIO),
        (f"every call streamed all {sizes.tokens} tokens: {failed} did not", failed == 0),
    ]
    print()
    for text, met in verdicts:
        print(f"- {'met' if met else 'NOT met'}: {text}")
    return all(met for _, met in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=FULL.rounds,
                        help="measured rounds per client")
    parser.add_argument("--smoke", action="store_true",
                        help="4 streams, a few tokens, one round; exit 0 whatever the figures")
    parser.add_argument("--prior-records", type=int, default=0,
                        help="records in ollabench's journal before the first round, as late "
                             "in a long experiment (about 5000 after 40 runs at levels "
                             "[1, 2, 4, 8, 16]); the default 0 is a fresh experiment")
    parser.add_argument("--worker", choices=sorted(set(WORKERS.values())),
                        help=argparse.SUPPRESS)  # a client process, started by this script
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base = SMOKE if args.smoke else FULL
    sizes = Sizes(**{**base.__dict__, "prior_records": args.prior_records,
                     "rounds": base.rounds if args.smoke else args.reps})
    if args.worker:
        worker(args.worker, args.url, sizes)
        return
    with tempfile.TemporaryFile("w+") as log:
        try:
            met = report(measure(sizes, log), sizes)
        except SystemExit:
            log.seek(0)
            print(log.read()[-4000:], file=sys.stderr)
            raise
    sys.exit(0 if met or args.smoke else 1)


if __name__ == "__main__":
    main()
