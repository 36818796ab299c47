"""The tool agent's tools: definitions in Ollama's `tools` shape, and their execution.

The tools run over the workload folder only, deterministically (sorted listings, fixed
caps), so both arms get the same result for the same call and a resumed run rebuilds the
same conversation. A call they cannot run is a ToolError whose text goes back to the model.
"""

from __future__ import annotations

import json
import typing
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.backends.tool_wire import ToolCall
from ollabench.config.schema import ToolName

READ_LIMIT_CHARS = 1200  # read_file returns at most this much: every prompt stays small
LIST_FILE = "list_files"
READ_FILE = "read_file"
CSV_SUMMARY = "csv_column_summary"
TOOL_NAMES: tuple[str, ...] = typing.get_args(ToolName)

_FILE = {"type": "string", "description": "a file name from list_files"}
_PARAMETERS: dict[str, dict[str, Any]] = {
    LIST_FILE: {"type": "object", "properties": {}, "required": []},
    READ_FILE: {"type": "object", "properties": {"file": _FILE}, "required": ["file"]},
    CSV_SUMMARY: {"type": "object",
                  "properties": {"file": _FILE,
                                 "column": {"type": "string", "description": "a column name"}},
                  "required": ["file", "column"]},
}
_DESCRIPTIONS = {
    LIST_FILE: "List the files of the benchmark results folder.",
    READ_FILE: f"Read a file of the folder (its first {READ_LIMIT_CHARS} characters).",
    CSV_SUMMARY: "Summarise a numeric column of a CSV file: count, min, median, max.",
}


class ToolError(Exception):
    """A call the tools cannot run: the text goes back to the model as the tool's reply."""


def tool_definitions(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The tools in Ollama's `tools` shape (api/types.go Tool: type + function schema)."""
    return [{"type": "function",
             "function": {"name": n, "description": _DESCRIPTIONS[n],
                          "parameters": _PARAMETERS[n]}} for n in names]


def run_tool(folder: Path, call: ToolCall, allowed: tuple[str, ...]) -> str:
    """The tool's reply text; ToolError for an unknown tool or bad arguments."""
    if call.name not in allowed:
        raise ToolError(f"unknown tool {call.name!r}; tools: {', '.join(allowed)}")
    schema = _PARAMETERS[call.name]
    missing = [k for k in schema["required"] if not isinstance(call.arguments.get(k), str)]
    unknown = sorted(set(call.arguments) - set(schema["properties"]))
    if missing or unknown:
        raise ToolError(f"{call.name} takes {', '.join(schema['properties']) or 'no arguments'}"
                        f" (strings); got {json.dumps(call.arguments)}")
    if call.name == LIST_FILE:
        return "\n".join(p.name for p in sorted(folder.iterdir()) if p.is_file())
    path = _file_in(folder, call.arguments["file"])
    if call.name == READ_FILE:
        return path.read_text(encoding="utf-8")[:READ_LIMIT_CHARS]
    return _column_summary(path, call.arguments["column"])


def _file_in(folder: Path, name: str) -> Path:
    """A file directly in the folder: no path leads out of it."""
    path = folder / name
    if Path(name).name != name or not path.is_file():
        raise ToolError(f"no file {name!r}; call list_files for the names")
    return path


def _column_summary(path: Path, column: str) -> str:
    if path.suffix.lower() != ".csv":
        raise ToolError(f"{path.name} is not a CSV file")
    frame = pd.read_csv(StringIO(path.read_text(encoding="utf-8")))
    if column not in frame:
        raise ToolError(f"{path.name} has no column {column!r}; columns: "
                        f"{', '.join(map(str, frame.columns))}")
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    if values.empty:
        raise ToolError(f"column {column!r} of {path.name} holds no numbers")
    return (f"{column}: count {len(values)}, min {values.min():g}, "
            f"median {values.median():g}, max {values.max():g}")
