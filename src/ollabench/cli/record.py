"""`ollabench record`: the recording proxy's command line (ollabench/record/)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_record(args: argparse.Namespace) -> int:
    from ollabench.record import run_record

    run_record(args.upstream, args.port, args.out, args.redact, bind_host=args.host,
               say=lambda line: print(line, flush=True))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="record an agent's chat requests as a trace (a proxy to its server)",
        description="Listen on --port and pass every request and streamed answer between an "
                    "agent and its server (Ollama's API or an OpenAI-compatible one) "
                    "unchanged, appending each chat request body to --out as a trace line "
                    "with a guessed stage and its session and turn. Point the agent at "
                    "http://127.0.0.1:PORT; Ctrl-C stops. Replay it with "
                    "`dvc exp run -S workload=trace -S workload.path=FILE` "
                    "(docs/workloads.md). Headers (API keys) are never written.")
    p.add_argument("--upstream", required=True, metavar="URL",
                   help="the agent's server, http://HOST:PORT (e.g. http://127.0.0.1:11434)")
    p.add_argument("--port", required=True, type=int, metavar="N",
                   help="the port to listen on (0: any free port, printed at start)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the trace to write (a new file; keep it under data/traces/)")
    p.add_argument("--redact", action="append", default=[], metavar="PATTERN",
                   help="a regular expression whose matches in the bodies are written as "
                        "[REDACTED] (repeatable)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1: this machine only)")
    p.set_defaults(func=_cmd_record)
