"""The pipeline's commands: `params`, and one per DVC stage (`bench`, `judge`, `aggregate`,
`report`).

Path options default to the paths dvc.yaml uses (ollabench.paths), so any stage can be run by
hand on any raw data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ollabench.errors import ConfigError
from ollabench.paths import (
    APPENDIX_FILE,
    CONF_DIR,
    FIGURES_DIR,
    JOURNAL_DIR_ENV,
    JOURNAL_ROOT,
    JUDGE_DIR,
    JUDGE_ROOT,
    METRICS_JSON,
    PARAMS_YAML,
    PROCESSED_DIR,
    RAW_DIR,
    REPORT_MD,
)

THRESHOLD_KEY = ("run", "practical_threshold_pct")  # the aggregate stage's one parameter


def _cmd_params(args: argparse.Namespace) -> int:
    from ollabench.config.schema import compose, dump_params, validate_config
    from ollabench.files import write_text_atomic

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
    write_text_atomic(args.out, dump_params(params))
    print(f"wrote {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ollabench.bench.loop import run_bench
    from ollabench.config.schema import load_config

    config = load_config(args.params)
    records = run_bench(config, args.out, journal_root=args.journal_dir,
                        progress=not args.no_progress)
    print(f"wrote {len(records)} call records to {args.out}")
    return 0


def _cmd_judge(args: argparse.Namespace) -> int:
    from ollabench.config.schema import load_config
    from ollabench.judge import run_judge

    config = load_config(args.params)
    scored = run_judge(config, args.raw, args.out, journal_root=args.journal_dir,
                       progress=not args.no_progress)
    print(f"judged {scored} call(s) into {args.out}" if config.judge.enabled
          else f"judge off (judge.enabled: false); wrote an empty score file to {args.out}")
    return 0


def _cmd_aggregate(args: argparse.Namespace) -> int:
    from ollabench.stats.aggregate import run_aggregate

    threshold = args.threshold_pct
    if threshold is None:
        threshold = read_threshold(args.params)
    source = run_aggregate(args.raw, args.out, args.metrics, threshold_pct=threshold,
                           judge_dir=args.judge)
    how = ("the same SHA-256 as calls.jsonl" if source.suffix == ".parquet"
           else "no columnar copy matches it")
    print(f"read {source} ({how}); wrote {args.out} and {args.metrics}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ollabench.report import run_report

    run_report(args.raw, args.processed, args.out, args.figures)
    print(f"wrote {args.out}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ollabench.config.schema import load_config
    from ollabench.doctor import advice, run_doctor

    if args.runs < 2:
        raise ConfigError(f"--runs: must be at least 2 (a spread needs two runs), got {args.runs}")
    config = load_config(args.params)
    findings, seconds = run_doctor(config, args.runs)
    print(f"{args.runs} A/A runs per arm at each setting, {config.model.name} on "
          f"{config.model.backend}, {seconds:.0f} s; worst primary comparison per setting:")
    print("\n".join(advice(findings, config)))
    return 0


def read_threshold(path: Path) -> float:
    """run.practical_threshold_pct from a params file, the file and key named if it is not
    there or not a number."""
    key = ".".join(THRESHOLD_KEY)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run `ollabench params` to compose it from conf/")
    try:
        params: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(params, dict):
        found = "it is empty" if params is None else f"got a {type(params).__name__}"
        raise ConfigError(f"{path}: must be a mapping of parameters with {key}, {found}; "
                          "run `ollabench params` to compose it from conf/")
    run = params.get(THRESHOLD_KEY[0])
    if not isinstance(run, dict) or THRESHOLD_KEY[1] not in run:
        raise ConfigError(f"{path}: no {key} (the aggregate stage's parameter); run "
                          "`ollabench params` to compose it from conf/, or give --threshold-pct")
    value = run[THRESHOLD_KEY[1]]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `params`, `bench`, `judge`, `aggregate`, `report` and `doctor`."""
    p = sub.add_parser("params", help="compose conf/ with Hydra into params.yaml",
                       description="Compose conf/ (as `dvc exp run` does) and write params.yaml. "
                                   "With --check, only verify that params.yaml matches.")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=chimera")
    p.add_argument("--conf", type=Path, default=CONF_DIR, help=f"config folder ({CONF_DIR})")
    p.add_argument("--out", type=Path, default=PARAMS_YAML, help=f"({PARAMS_YAML})")
    p.add_argument("--check", action="store_true", help="exit 1 if params.yaml is stale")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("bench", help="run the workload for both arms (stage 1)",
                       description="Run the workload (conf/workload; the two-stage agent by "
                                   "default) for the control (reference) and "
                                   "treatment (profile) arms and record every call. The arms "
                                   "alternate run by run (run.order, ABBA by default), or call "
                                   "by call with run.interleave call. Completed "
                                   "calls are journaled: rerun after a crash to resume.")
    p.add_argument("--out", type=Path, default=RAW_DIR,
                   help="folder for calls.jsonl, its columnar copy calls.parquet and env.json "
                        f"({RAW_DIR})")
    _add_model_run_options(p, JOURNAL_ROOT, JOURNAL_DIR_ENV)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("judge", help="score every measured output with a judge model "
                                     "(optional stage, off by default)",
                       description="Score every measured call that succeeded with the judge "
                                   "model of conf/judge (judge.enabled: false writes an empty "
                                   "score file). Scores are journaled: rerun after a crash to "
                                   "resume.")
    p.add_argument("--raw", type=Path, default=RAW_DIR,
                   help=f"folder holding calls.jsonl ({RAW_DIR})")
    p.add_argument("--out", type=Path, default=JUDGE_DIR,
                   help=f"folder for scores.jsonl and judge.json ({JUDGE_DIR})")
    _add_model_run_options(p, JUDGE_ROOT)
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("aggregate", help="statistics and verdicts from raw calls (stage 2)",
                       description="Recompute summary.csv, comparisons.csv, per_run.csv, "
                                   "per_run_wide.csv, quality.json and metrics.json from the "
                                   "raw per-call records: calls.jsonl, read through its "
                                   "columnar copy calls.parquet while that matches it.")
    p.add_argument("--raw", type=Path, default=RAW_DIR,
                   help=f"folder holding calls.jsonl ({RAW_DIR})")
    p.add_argument("--out", type=Path, default=PROCESSED_DIR, help=f"({PROCESSED_DIR})")
    p.add_argument("--metrics", type=Path, default=METRICS_JSON, help=f"({METRICS_JSON})")
    p.add_argument("--params", type=Path, default=PARAMS_YAML,
                   help=f"source of {'.'.join(THRESHOLD_KEY)} ({PARAMS_YAML})")
    p.add_argument("--threshold-pct", type=float, default=None,
                   help=f"practical threshold in %% (overrides {PARAMS_YAML})")
    p.add_argument("--judge", type=Path, default=JUDGE_DIR,
                   help=f"the judge stage's scores, joined when present ({JUDGE_DIR})")
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("report", help="write the Markdown report and figures (stage 3)",
                       description="Write the Markdown report and its figures from the "
                                   "aggregate's outputs and the raw env.json; it recomputes "
                                   "nothing. The report leads with the answer and links to "
                                   f"its full tables, written beside it as {APPENDIX_FILE}.")
    p.add_argument("--raw", type=Path, default=RAW_DIR, help=f"folder holding env.json ({RAW_DIR})")
    p.add_argument("--processed", type=Path, default=PROCESSED_DIR, help=f"({PROCESSED_DIR})")
    p.add_argument("--out", type=Path, default=REPORT_MD,
                   help=f"the report; {APPENDIX_FILE} goes beside it ({REPORT_MD})")
    p.add_argument("--figures", type=Path, default=FIGURES_DIR, help=f"({FIGURES_DIR})")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("doctor", help="measure this machine's noise and what would shorten a "
                                      "decision (a minute or two)",
                       description="Run a few A/A runs of the configured model and backend at "
                                   "the current settings and at each open measurement choice "
                                   "(embedded threads, pinning to one CPU, shorter outputs), "
                                   "in a temporary folder, and print the noise, the runs and "
                                   "minutes a decision at the practical threshold will take, "
                                   "and what would shorten it. No experiment's data is "
                                   "touched.")
    p.add_argument("--params", type=Path, default=PARAMS_YAML, help=f"({PARAMS_YAML})")
    p.add_argument("--runs", type=int, default=2,
                   help="A/A runs per arm at each setting (2, the least that measures a "
                        "spread; more: slower, surer)")
    p.set_defaults(func=_cmd_doctor)


def _add_model_run_options(p: argparse.ArgumentParser, journal_root: Path,
                           journal_env: str | None = None) -> None:
    """The options of a stage that calls a model: its config, resume journals, progress."""
    p.add_argument("--params", type=Path, default=PARAMS_YAML, help=f"({PARAMS_YAML})")
    chosen = os.environ.get(journal_env) if journal_env else None
    where = f"${journal_env}, else {journal_root}" if journal_env else str(journal_root)
    p.add_argument("--journal-dir", type=Path, default=Path(chosen) if chosen else journal_root,
                   help=f"resume journals, keyed by config hash ({where})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
