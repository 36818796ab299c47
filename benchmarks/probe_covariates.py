"""How much of each primary comparison's noise the per-call covariates explain in recorded
runs (the CPU probe before each call, other processes' CPU, steal, load): the figures behind
docs/statistics.md ("Per-call covariates").

Run as `python benchmarks/probe_covariates.py RAW [RAW ...]`, each RAW a folder holding a
bench's calls.jsonl and env.json (data/raw), or a calls.jsonl itself (a resume journal's).
For each it prints the host (CPU model, load average), the probe's own noise (median, spread
of its log, Sarle's bimodality, largest over median, each arm's median), and per primary
comparison (stats/covariates.share_table): the probe's and other processes' CPU's mean
paired difference between the arms and its paired t-test p, the probe's correlation with
the values and the share of their variance it explains (per run with the arm as a factor,
and of the paired differences), and the share all covariates together explain (adjusted
R-squared). --smoke: a synthetic run with a
planted probe-driven noise, what CI runs so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from ollabench.records.schema import CallRecord, read_records  # noqa: E402
from ollabench.stats.covariates import share_table  # noqa: E402
from ollabench.stats.decisions import primary_series  # noqa: E402
from ollabench.stats.frames import records_frame  # noqa: E402
from ollabench.stats.noise import bimodality  # noqa: E402

PRIMARY = ["workflow/e2e_ms", "each/ttft_ms", "workflow/eval_tok_s"]


def probe_noise(records: list[CallRecord]) -> str:
    """The probe's own spread over every call that recorded it (warm-ups included)."""
    probes = np.array([r.cpu_probe_ms for r in records if r.cpu_probe_ms], dtype=float)
    if len(probes) == 0:
        return "no call recorded cpu_probe_ms"
    logs, median = np.log(probes), np.median(probes)
    arms = {arm: np.median([r.cpu_probe_ms for r in records if r.arm == arm and r.cpu_probe_ms])
            for arm in ("control", "treatment")}
    return (f"probe over {len(probes)} calls: median {median:.3f} ms, SD of log "
            f"{logs.std(ddof=1) * 100:.1f}%, p95 / median "
            f"{np.percentile(probes, 95) / median:.2f}, "
            f"max / median {probes.max() / median:.2f}, bimodality "
            f"{bimodality(logs):.2f} (above 0.56: two modes); median by arm "
            f"{arms['control']:.3f} / {arms['treatment']:.3f} ms")


def report(records: list[CallRecord], host: str) -> None:
    calls = records_frame(records)
    table = share_table(primary_series(calls, PRIMARY), calls)
    loads = np.array([r.host_load_1m for r in records if r.host_load_1m is not None])
    print(host)
    if len(loads):
        print(f"load average (1 min) at the calls: median {np.median(loads):.1f}, "
              f"{loads.min():.1f} to {loads.max():.1f}")
    print(probe_noise(records))
    print("| " + " | ".join(table.columns) + " |")
    print("|" + " --- |" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                for v in row) + " |")
    print()


def host_line(raw: Path) -> str:
    env_file = raw / "env.json"
    if not env_file.is_file():
        return f"{raw}: no env.json"
    env = json.loads(env_file.read_text())
    start = env.get("host_at_start") or {}
    return (f"{raw}: {env['host'].get('cpu_model')}, {env['host'].get('cpu_cores_logical')} "
            f"logical CPUs; at the first call load {start.get('host_load_1m')}, other "
            f"processes {start.get('host_other_cpu_pct')}% of the CPU, steal "
            f"{start.get('host_steal_pct')}%")


def smoke_records() -> list[CallRecord]:
    """A synthetic A/A whose calls are slowed by a factor the probe reads."""
    from tests.helpers.synthetic import Scenario, make_records

    rng = np.random.default_rng(0)
    out = []
    for record in make_records(Scenario(runs=12, cv_pct=2.0)):
        slow = float(np.exp(rng.normal(0.0, 0.1)))
        if record.phase == "measured" and record.ttft_ms is not None:
            record = replace(record, ttft_ms=record.ttft_ms * slow, e2e_ms=record.e2e_ms * slow,
                             eval_ms=record.eval_ms * slow)
        out.append(replace(record, cpu_probe_ms=2.3 * slow))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="*", type=Path,
                        help="folders holding calls.jsonl, or calls.jsonl files")
    parser.add_argument("--smoke", action="store_true", help="a synthetic run instead")
    args = parser.parse_args()
    if args.smoke:
        report(smoke_records(), "synthetic: a planted probe-driven noise")
        return 0
    for raw in args.raw:  # a folder, or a resume journal's calls.jsonl itself
        path = raw if raw.is_file() else raw / "calls.jsonl"
        report(read_records(path), host_line(path.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
