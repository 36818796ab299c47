"""Run the benchmarks: `python benchmarks/run_all.py` (or make bench-perf) for the timed ones,
`python benchmarks/run_all.py --smoke` for every script in smoke mode.

Without --smoke it runs each bench_*.py script (the harness's own speed; each prints its figures
and the target it is held to) one after another, never in parallel: they time themselves.
With --smoke it runs every script in this folder with --smoke: tiny sizes, no timing targets,
so that a change to the code they call breaks them in CI (tests/test_benchmarks.py runs each
one the same way) instead of leaving them to rot. It exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(smoke: bool) -> list[Path]:
    """The timed benchmarks (bench_*.py), or with smoke every script but this runner."""
    found = HERE.glob("*.py" if smoke else "bench_*.py")
    return sorted(p for p in found if p.name != Path(__file__).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="every script, tiny sizes, no timing targets")
    args = parser.parse_args()
    failed = []
    for script in scripts(args.smoke):
        print(f"== {script.name}", flush=True)
        command = [sys.executable, str(script), *(["--smoke"] if args.smoke else [])]
        if subprocess.run(command, cwd=HERE.parent).returncode:
            failed.append(script.name)
    if failed:
        print(f"failed or missed its target: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
