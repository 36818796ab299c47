"""`ollabench`: one subcommand per pipeline stage, plus tools to compare experiments.

Stage paths are options whose defaults are the paths dvc.yaml uses, so any stage can be run
by hand on any raw data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from ollabench.errors import ConfigError, OllabenchError

EXIT_INTERRUPTED = 130


def _cmd_params(args: argparse.Namespace) -> int:
    from ollabench.config import compose, dump_params, validate_config

    params = compose(args.overrides, conf_dir=args.conf)
    validate_config(params)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if yaml.safe_load(current) != params:
            print(f"{args.out} differs from the composition of {args.conf}/; "
                  "run `ollabench params` to regenerate it", file=sys.stderr)
            return 1
        print(f"{args.out} matches {args.conf}/")
        return 0
    args.out.write_text(dump_params(params), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ollabench.bench import run_bench
    from ollabench.config import load_config

    config = load_config(args.params)
    records = run_bench(config, args.out, journal_root=args.journal_dir,
                        progress=not args.no_progress)
    print(f"wrote {len(records)} call records to {args.out}")
    return 0


def _cmd_aggregate(args: argparse.Namespace) -> int:
    from ollabench.stats import run_aggregate

    threshold = args.threshold_pct
    if threshold is None:
        threshold = _read_params(args.params)["run"]["practical_threshold_pct"]
    source = run_aggregate(args.raw, args.out, args.metrics, threshold_pct=float(threshold))
    how = ("the same SHA-256 as calls.jsonl" if source.suffix == ".parquet"
           else "no columnar copy matches it")
    print(f"read {source} ({how}); wrote {args.out} and {args.metrics}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ollabench.report import run_report

    run_report(args.raw, args.processed, args.out, args.figures)
    print(f"wrote {args.out}")
    return 0


def _read_params(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run `ollabench params` to compose it from conf/")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollabench",
        description="Reproducible benchmarks of LLM agents on Ollama and embedded llama.cpp. "
                    "The DVC pipeline (dvc.yaml) runs bench -> aggregate -> report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("params", help="compose conf/ with Hydra into params.yaml",
                       description="Compose conf/ (as `dvc exp run` does) and write params.yaml. "
                                   "With --check, only verify that params.yaml matches.")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=chimera")
    p.add_argument("--conf", type=Path, default=Path("conf"), help="config folder (conf)")
    p.add_argument("--out", type=Path, default=Path("params.yaml"), help="(params.yaml)")
    p.add_argument("--check", action="store_true", help="exit 1 if params.yaml is stale")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("bench", help="run the agent workload for both arms (stage 1)",
                       description="Run the two-stage agent for the control (reference) and "
                                   "treatment (profile) arms and record every call. Completed "
                                   "calls are journaled: rerun after a crash to resume.")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="(params.yaml)")
    p.add_argument("--out", type=Path, default=Path("data/raw"),
                   help="folder for calls.jsonl, its columnar copy calls.parquet and env.json "
                        "(data/raw)")
    p.add_argument("--journal-dir", type=Path, default=Path(".ollabench/journal"),
                   help="resume journals, keyed by config hash (.ollabench/journal)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("aggregate", help="statistics and verdicts from raw calls (stage 2)",
                       description="Recompute summary.csv, comparisons.csv, per_run.csv, "
                                   "per_run_wide.csv, quality.json and metrics.json from the "
                                   "raw per-call records: calls.jsonl, read through its "
                                   "columnar copy calls.parquet while that matches it.")
    p.add_argument("--raw", type=Path, default=Path("data/raw"),
                   help="folder holding calls.jsonl (data/raw)")
    p.add_argument("--out", type=Path, default=Path("data/processed"), help="(data/processed)")
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"),
                   help="(reports/metrics.json)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="source of run.practical_threshold_pct (params.yaml)")
    p.add_argument("--threshold-pct", type=float, default=None,
                   help="practical threshold in %% (overrides params.yaml)")
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("report", help="write the Markdown report and figures (stage 3)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="(data/raw)")
    p.add_argument("--processed", type=Path, default=Path("data/processed"),
                   help="(data/processed)")
    p.add_argument("--out", type=Path, default=Path("reports/report.md"),
                   help="(reports/report.md)")
    p.add_argument("--figures", type=Path, default=Path("reports/figures"),
                   help="(reports/figures)")
    p.set_defaults(func=_cmd_report)

    from ollabench.compare import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("ollabench: interrupted; every completed call is kept in the journal, "
              "run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OllabenchError as exc:
        print(f"ollabench: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
