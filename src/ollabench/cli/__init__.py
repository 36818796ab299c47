"""`ollabench`: one subcommand per pipeline stage, plus tools to compare experiments.

Every argument parser lives in this package; the commands only parse, call one entry function
and print. Each handler imports its stage when it runs, so `ollabench report` loads the report
and nothing of compare, sweep or DVC (a DVC stage's code deps are what its command loads).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ollabench.cli import experiments, record, stages
from ollabench.errors import OllabenchError

EXIT_INTERRUPTED = 130

__all__ = ["EXIT_INTERRUPTED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollabench",
        description="Reproducible benchmarks of LLM agents on Ollama and embedded llama.cpp. "
                    "The DVC pipeline (dvc.yaml) runs bench -> aggregate -> report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stages.add_commands(sub)
    experiments.add_commands(sub)
    record.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user-fixable error ends in one line on stderr and its exit status."""
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
