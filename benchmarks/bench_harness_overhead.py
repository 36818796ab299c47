"""How much the Ollama backend's own streaming loop distorts what it measures.

A fake Ollama server in another process (tests/helpers/fake_ollama.py, serving Ollama 0.24.0
behaviour) streams a scripted reply:
first token 50 ms after the request arrives, then 500 tokens 1 ms apart, each sent at an
absolute deadline, with the monotonic time it was really written recorded. The backend and
a bare httpx loop (the floor: read lines, parse JSON, timestamp text) each stream it
alternately (interleaved, so drift hits both alike), and for each call this prints:

- TTFT error: measured TTFT minus the scripted 50 ms. It includes the request's trip to the
  server and the server's own lateness (its sleep overshoot, "server late"), so it is also
  shown against the server's actual first-token time (scripted + late): the harness's part;
- rate error: the client-derived decode rate, (tokens - 1) / (e2e - TTFT), against the rate
  the server really sent at, (tokens - 1) / (last token written - first token written);
- CPU per token: time.process_time() around the call (the server runs in another process),
  divided by the tokens streamed. The backend's call includes its /api/ps query and the
  derivation of what ran (context, batch, truncation, reload).

Run from the repository root: python benchmarks/bench_harness_overhead.py [--reps 10]
(--smoke: one measured call per loop, targets printed but not enforced; what CI runs so the
script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable from a checkout without installing ollabench

from ollabench.backends.ollama import OllamaBackend  # noqa: E402
from ollabench.config.schema import ModelConfig, RunConfig, compose  # noqa: E402

TTFT_MS = 50.0
TOKEN_MS = 1.0
TOKENS = 500
SCRIPT = {"ttft_ms": TTFT_MS, "token_ms": TOKEN_MS, "tokens": TOKENS}
MODEL = "qwen2.5:7b"
SERVER_VERSION = "0.24.0"
MESSAGES = [{"role": "user", "content": "Stream 500 tokens."}]
WARMUP_CALLS = 2
TARGET_TTFT_ERROR_MS = 1.0
TARGET_RATE_ERROR_PCT = 1.0
TARGET_CPU_RATIO = 2.0


@dataclass
class Sample:
    """One streamed call: the client's view and the server's actual send times."""

    ttft_ms: float
    e2e_ms: float
    tokens: int
    cpu_s: float
    server_late_ms: float = 0.0
    server_rate_tok_s: float = 0.0

    @property
    def ttft_error_ms(self) -> float:
        return self.ttft_ms - TTFT_MS

    @property
    def ttft_error_vs_actual_ms(self) -> float:
        return self.ttft_error_ms - self.server_late_ms

    @property
    def rate_error_pct(self) -> float:
        client_rate = (self.tokens - 1) / (self.e2e_ms - self.ttft_ms) * 1000
        return (client_rate / self.server_rate_tok_s - 1) * 100

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_s / self.tokens * 1e6


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_ollama", "--port", "0", "--version",
         SERVER_VERSION, "--script", json.dumps(SCRIPT), "--model", MODEL],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.startswith("FAKE_OLLAMA_URL="):
        server.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return server, line.split("=", 1)[1]


def backend_call(backend: OllamaBackend) -> Sample:
    cpu_start = time.process_time()
    m = backend.chat(MESSAGES, {"num_predict": TOKENS, "seed": 0})
    cpu_s = time.process_time() - cpu_start
    if m.error or m.ttft_ms is None or m.e2e_ms is None or m.output_tokens is None:
        raise SystemExit(f"backend call failed: {m.error}")
    return Sample(m.ttft_ms, m.e2e_ms, m.output_tokens, cpu_s)


def bare_call(client: httpx.Client) -> Sample:
    """The floor: what any streaming client must do (read lines, parse, timestamp)."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "think": False,
            "keep_alive": "5m", "truncate": False, "options": {"num_predict": TOKENS, "seed": 0}}
    token_ns: list[int] = []
    cpu_start = time.process_time()
    started_ns = time.perf_counter_ns()
    with client.stream("POST", "/api/chat", json=body) as response:
        for line in response.iter_lines():
            chunk = json.loads(line)
            now_ns = time.perf_counter_ns()
            message = chunk.get("message") or {}
            if message.get("content") or message.get("thinking"):
                token_ns.append(now_ns)
            if chunk.get("done"):
                final_ns = now_ns
    cpu_s = time.process_time() - cpu_start
    return Sample((token_ns[0] - started_ns) / 1e6, (final_ns - started_ns) / 1e6,
                  len(token_ns), cpu_s)


def attach_server_times(sample: Sample, exchange: dict[str, Any]) -> Sample:
    sent = exchange["token_ns"]
    sample.server_late_ms = (sent[0] - exchange["arrived_ns"]) / 1e6 - TTFT_MS
    sample.server_rate_tok_s = (len(sent) - 1) / ((sent[-1] - sent[0]) / 1e9)
    return sample


def last_chat_exchange(client: httpx.Client) -> dict[str, Any]:
    exchanges = client.get("/_fake/exchanges").json()["exchanges"]
    return next(e for e in reversed(exchanges) if e["path"] == "/api/chat")


def run_config() -> RunConfig:
    """The committed run defaults (conf/, as `ollabench params` composes them), so a field
    added to or removed from RunConfig cannot break this script; one attempt per call, no
    warm-up, timeouts long enough for a loaded machine."""
    run = compose(conf_dir=ROOT / "conf")["run"]
    return RunConfig.model_validate(run | {
        "warmup": 0, "max_retries": 0, "retry_backoff_s": 0.0, "prompt_cache": False,
        "cold_start": False, "connect_timeout_s": 5.0, "first_token_timeout_s": 30.0,
        "read_timeout_s": 30.0})


def measure(reps: int) -> dict[str, list[Sample]]:
    server, url = start_server()
    backend = OllamaBackend(ModelConfig(name=MODEL, backend="ollama", host=url), run_config())
    backend.preflight()
    bare = httpx.Client(base_url=url, timeout=30.0)
    loops: dict[str, Callable[[], Sample]] = {
        "ollabench OllamaBackend.chat": lambda: backend_call(backend),
        "bare httpx loop (floor)": lambda: bare_call(bare),
    }
    samples: dict[str, list[Sample]] = {name: [] for name in loops}
    try:
        for rep in range(WARMUP_CALLS + reps):
            for name, call in loops.items():  # alternate, so drift hits both alike
                sample = attach_server_times(call(), last_chat_exchange(bare))
                if rep >= WARMUP_CALLS:
                    samples[name].append(sample)
    finally:
        backend.close()
        bare.close()
        server.terminate()
        server.wait(timeout=10)
    return samples


def report(samples: dict[str, list[Sample]]) -> bool:
    """Print the table and the verdict on each target; True when all are met."""
    header = ("| client loop | TTFT error vs script, median / max (ms) | server late, median (ms) "
              "| TTFT error vs server's actual, median / max (ms) "
              "| rate error, median / worst (%) | CPU per token, median (µs) |")
    print(header)
    print("|" + "---|" * (header.count(" | ") + 1))
    ttft: dict[str, float] = {}
    rate: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, runs in samples.items():
        vs_script = [s.ttft_error_ms for s in runs]
        vs_actual = [s.ttft_error_vs_actual_ms for s in runs]
        rates = [s.rate_error_pct for s in runs]
        ttft[name], rate[name] = statistics.median(vs_actual), statistics.median(rates)
        cpu[name] = statistics.median(s.cpu_us_per_token for s in runs)
        late = statistics.median(s.server_late_ms for s in runs)
        print(f"| {name} | {statistics.median(vs_script):.3f} / {max(vs_script):.3f} "
              f"| {late:.3f} | {ttft[name]:.3f} / {max(vs_actual):.3f} "
              f"| {rate[name]:+.3f} / {max(rates, key=abs):+.3f} | {cpu[name]:.1f} |")
    harness, floor = samples
    reps = len(samples[harness])
    print(f"\n{reps} calls per loop after {WARMUP_CALLS} warm-up calls, {TOKENS} tokens each.")
    verdicts = [
        (f"median TTFT error vs the server's actual send < {TARGET_TTFT_ERROR_MS:g} ms: "
         f"{ttft[harness]:.3f} ms (bare loop {ttft[floor]:.3f} ms, so the backend adds "
         f"{ttft[harness] - ttft[floor]:+.3f} ms)", ttft[harness] < TARGET_TTFT_ERROR_MS),
        (f"median rate error < {TARGET_RATE_ERROR_PCT:g}%: {rate[harness]:+.3f}%",
         abs(rate[harness]) < TARGET_RATE_ERROR_PCT),
        (f"CPU per token <= {TARGET_CPU_RATIO:g}x the bare loop: "
         f"{cpu[harness] / cpu[floor]:.2f}x", cpu[harness] / cpu[floor] <= TARGET_CPU_RATIO),
    ]
    for text, met in verdicts:
        print(f"- {'met' if met else 'NOT met'}: {text}")
    return all(met for _, met in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="measured calls per client loop")
    parser.add_argument("--smoke", action="store_true",
                        help="one measured call per loop; exit 0 whatever the figures")
    args = parser.parse_args()
    met = report(measure(1 if args.smoke else args.reps))
    sys.exit(0 if met or args.smoke else 1)


if __name__ == "__main__":
    main()
