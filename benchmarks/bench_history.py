"""Benchmark: `ollabench history` over 200 git revisions of 100 runs each.

Run as `python benchmarks/bench_history.py [--revisions N] [--runs R] [--repeat K]`. It builds
a real git + DVC repository in a temporary folder (not timed): one commit per revision, each
with its own synthetic raw data (`dvc add data/raw`: 100 runs x 2 arms x (1 warm-up + 2
stages) = 600 records, calls.jsonl + calls.parquet + env.json), a 10% slowdown from the
middle commit on, so the data sits in the local DVC cache as after `dvc pull`. Then each
repeat runs, in a fresh Python process:

- `history.build.history()` with its defaults (HEAD and its ancestors; treatment arm; ttft_ms,
  eval_tok_s and e2e_ms of the analysis, report and workflow stages: 9 series): every
  revision resolved and read through DVC's API, per-run values, medians with bootstrap CIs,
  change points and their explanations;
- `history.output.write_history()`: the CSVs, the Markdown and the 9 figures;

and prints their wall times, CPU times and peak memory (imports excluded from the times,
included in the memory). It checks that the slowdown was found at its commit.

Target: under 30 s for both together on a 2-core machine. --smoke: 12 revisions of 10 runs,
one repeat, the time target not enforced (the slowdown must still be found at its commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.helpers.revisions import Step, commit_steps, init_repo, repo_env  # noqa: E402
from tests.helpers.synthetic import Scenario  # noqa: E402

TARGET_S = 30.0
CHILD = """
import json, sys, time
from pathlib import Path
from ollabench.history.build import history
from ollabench.history.output import write_history
import dvc.repo, ollabench.compare.leaderboard  # imports before the clock
repo, out = Path(sys.argv[1]), Path(sys.argv[2])
start, cpu = time.perf_counter(), time.process_time()
result = history(repo, progress=False)
read_s, read_cpu = time.perf_counter() - start, time.process_time() - cpu
write_history(result, out)
status = Path("/proc/self/status").read_text().splitlines()
peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"history_s": read_s, "history_cpu_s": read_cpu,
                  "total_s": time.perf_counter() - start,
                  "total_cpu_s": time.process_time() - cpu, "peak_rss_mib": peak_kib / 1024,
                  "revisions": len(result.read), "series": len(result.series),
                  "changes": sorted({c.rev for c in result.changes.itertuples()})}))
"""


def build(repo: Path, revisions: int, runs: int) -> list[str]:
    slow_at = revisions // 2
    steps = [Step(Scenario(runs=runs, seed=i, eval_rate_gain=1 / 1.1 - 1 if i >= slow_at
                           else 0.0, ttft_factor=1.1 if i >= slow_at else 1.0))
             for i in range(revisions)]
    init_repo(repo)
    return commit_steps(repo, steps)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="12 revisions of 10 runs, one repeat; no time target")
    args = parser.parse_args()
    if args.smoke:
        args.revisions, args.runs, args.repeat = 12, 10, 1
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp, repo_env(Path(tmp)):
        start = time.perf_counter()
        shas = build(Path(tmp) / "repo", args.revisions, args.runs)
        print(f"built {len(shas)} commits of {args.runs} runs in "
              f"{time.perf_counter() - start:.0f} s (not timed)", flush=True)
        env = os.environ | {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        results = []
        for i in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "repo"),
                                  str(Path(tmp) / f"out{i}")], env=env, check=True,
                                 capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    slow = shas[args.revisions // 2][:10]
    found_ok = all(r["changes"] == [slow] for r in results)
    best = min(r["total_s"] for r in results)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs: history over {args.revisions} revisions x "
          f"{args.runs} runs: " + ", ".join(f"{r['total_s']:.1f} s" for r in results)
          + " (read + analyse: " + ", ".join(f"{r['history_s']:.1f} s" for r in results)
          + f"); target {TARGET_S:.0f} s; slowdown found at {slow}: {found_ok}")
    return 0 if (best < TARGET_S or args.smoke) and found_ok else 1


if __name__ == "__main__":
    sys.exit(main())
