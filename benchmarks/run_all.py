"""Run every benchmark of the harness itself: `python benchmarks/run_all.py` (or make bench-perf).

Each bench_*.py script prints its figures and the target it is held to; this runner runs them
one after another (never in parallel: they time themselves) and exits non-zero if any fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode:
            failed.append(script.name)
    if failed:
        print(f"failed or missed its target: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
