"""How much time to first token `ollabench record` adds for the agent behind it.

The fake Ollama server (tests/helpers/fake_ollama.py) runs in its own process and streams a
scripted reply: first token 20 ms after the request arrives, then 20 tokens 1 ms apart.
`ollabench record` runs in another process in front of it, writing its trace to a temporary
file. One client process (this one) streams the same /api/chat request alternately to the
server directly and through the proxy, each path on its own kept-alive connection (as an
agent's HTTP client does), and takes TTFT on time.perf_counter_ns from sending the request
to the first chunk with content. Interleaving puts drift on both paths alike.

Printed: the median and p90 TTFT of each path, and the added TTFT: the median (and p90) of
the per-pair difference, proxy minus direct. Every call must bring all 20 content chunks and
the trace must hold one line per proxied call. Target: median added TTFT under 1 ms. Exits 1
when the target is missed.

Run from the repository root: python benchmarks/bench_record_proxy.py [--pairs 300]
(--smoke: 3 pairs, the target printed but not enforced; what CI runs so the script cannot
rot).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = {"ttft_ms": 20.0, "token_ms": 1.0, "tokens": 20}
MODEL = "qwen2.5:7b"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Stream 20 tokens."}],
        "stream": True, "options": {"num_predict": 20, "seed": 0}}
WARMUP_PAIRS = 10
TARGET_ADDED_MS = 1.0


def start(cmd: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    """A server process and the URL it prints after `marker`."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if marker not in line:
        process.kill()
        raise SystemExit(f"{cmd[2]} did not start: {line!r}")
    return process, line.split(marker, 1)[1].split(",")[0].strip()


def ttft_ms(client: httpx.Client) -> tuple[float, int]:
    """One streamed call: its TTFT and the number of content chunks it got."""
    started = time.perf_counter_ns()
    first = None
    chunks = 0
    with client.stream("POST", "/api/chat", json=BODY) as answer:
        for line in answer.iter_lines():
            if line and json.loads(line).get("message", {}).get("content"):
                first = first or time.perf_counter_ns()
                chunks += 1
    if first is None:
        raise SystemExit("a call streamed no content")
    return (first - started) / 1e6, chunks


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--smoke", action="store_true",
                        help="3 pairs, target not enforced (the script still has to work)")
    args = parser.parse_args()
    if args.smoke:
        args.pairs = 3
    server, direct_url = start(
        [sys.executable, "-m", "tests.helpers.fake_ollama", "--port", "0", "--model", MODEL,
         "--script", json.dumps(SCRIPT)], "FAKE_OLLAMA_URL=")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        proxy, proxy_url = start(
            [sys.executable, "-m", "ollabench.cli", "record", "--upstream", direct_url,
             "--port", "0", "--out", str(trace)], "listening on ")
        try:
            direct, through = httpx.Client(base_url=direct_url), httpx.Client(base_url=proxy_url)
            samples: dict[str, list[float]] = {"direct": [], "proxy": []}
            for pair in range(WARMUP_PAIRS + args.pairs):
                order = (("direct", direct), ("proxy", through))
                for name, client in order if pair % 2 else order[::-1]:
                    value, chunks = ttft_ms(client)
                    if chunks != SCRIPT["tokens"]:
                        raise SystemExit(f"{name}: {chunks} content chunks, expected 20")
                    if pair >= WARMUP_PAIRS:
                        samples[name].append(value)
            proxy.send_signal(signal.SIGINT)
            proxy.wait(timeout=10)
            recorded = len(trace.read_text().splitlines())
        finally:
            for process in (proxy, server):
                if process.poll() is None:
                    process.kill()
    added = [p - d for p, d in zip(samples["proxy"], samples["direct"], strict=True)]
    print(f"{args.pairs} pairs, scripted TTFT {SCRIPT['ttft_ms']:.0f} ms; trace lines "
          f"written: {recorded}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name, values in samples.items():
        print(f"{name:>7}: TTFT median {statistics.median(values):.3f} ms, "
              f"p90 {pct(values, 90):.3f} ms")
    median_added = statistics.median(added)
    print(f"  added: median {median_added:.3f} ms, p90 {pct(added, 90):.3f} ms "
          f"(target: median under {TARGET_ADDED_MS} ms)")
    if recorded != WARMUP_PAIRS + args.pairs:
        print(f"the trace holds {recorded} lines, expected {WARMUP_PAIRS + args.pairs}")
        return 1
    return 0 if median_added < TARGET_ADDED_MS or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
