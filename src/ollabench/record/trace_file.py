"""The trace a recording writes: each chat request body as one line, labelled.

A line is the body as the agent sent it (an OpenAI chat-completions or Ollama /api/chat
body, which the trace workload reads as is, workloads/trace_bodies.py) with three keys put
first: `stage`, a kind of request guessed from its system prompt and tool set (`kind1`,
`kind2`, ... in order of first sight; rename them to what your agent does), and `session`
and `turn`, from the conversation prefix (a request whose messages start with all of an
earlier request's messages continues that request's session). Each line is flushed as it is
written, so a crash loses nothing already recorded. `--redact` patterns mask every match in
the body's text before it reaches the file; headers (where API keys travel) are never
written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ollabench.errors import OllabenchError

MASK = "[REDACTED]"


class RecordError(OllabenchError):
    """A recording that cannot start: a bad option or an unwritable trace file."""


@dataclass
class _Session:
    name: str
    turn: int
    messages: list[str]  # the last request's messages, each as canonical JSON


@dataclass
class TraceFile:
    """Appends labelled request bodies to the trace, one flushed line each."""

    path: Path
    redact: tuple[re.Pattern[str], ...] = ()
    lines: int = 0
    _kinds: dict[str, str] = field(default_factory=dict)
    _sessions: list[_Session] = field(default_factory=list)
    _file: IO[str] | None = None

    def open(self) -> TraceFile:
        """Create the file; an existing one is refused (its sessions would be renumbered)."""
        try:
            self._file = self.path.open("x", encoding="utf-8")
        except FileExistsError:
            raise RecordError(f"--out: {self.path} exists; give a new file (a recording "
                              "never appends to or overwrites a trace)") from None
        except OSError as exc:
            raise RecordError(f"--out: cannot create {self.path}: {exc.strerror}") from None
        return self

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, body: dict[str, Any]) -> None:
        """Write one chat request body with its stage, session and turn."""
        messages = [json.dumps(m, sort_keys=True) for m in body["messages"]]
        session = self._continued(messages)
        labels = {"stage": self._kind(body), "session": session.name, "turn": session.turn}
        labelled = labels | {k: v for k, v in body.items() if k not in labels}
        assert self._file is not None, "open() first"
        self._file.write(json.dumps(_masked(labelled, self.redact), ensure_ascii=False) + "\n")
        self._file.flush()
        self.lines += 1

    def _kind(self, body: dict[str, Any]) -> str:
        """The stage of a request: one per pair of system prompt and tool names."""
        system = next((m.get("content") for m in body["messages"]
                       if isinstance(m, dict) and m.get("role") in ("system", "developer")), None)
        tools = sorted(str((t.get("function") or {}).get("name")) for t in body.get("tools") or []
                       if isinstance(t, dict))
        key = json.dumps([system, tools], sort_keys=True)
        return self._kinds.setdefault(key, f"kind{len(self._kinds) + 1}")

    def _continued(self, messages: list[str]) -> _Session:
        """The session these messages continue (the longest earlier request they extend,
        the latest of equals), its turn moved on; else a new session at turn 1."""
        best = max((s for s in reversed(self._sessions) if len(s.messages) < len(messages)
                    and messages[:len(s.messages)] == s.messages),
                   key=lambda s: len(s.messages), default=None)
        if best is None:
            best = _Session(f"s{len(self._sessions) + 1}", 0, messages)
            self._sessions.append(best)
        best.turn += 1
        best.messages = messages
        return best


def compile_patterns(patterns: list[str]) -> tuple[re.Pattern[str], ...]:
    """The --redact patterns as regular expressions; a bad one is refused by name."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise RecordError(f"--redact {pattern!r}: not a regular expression ({exc})") from None
    return tuple(compiled)


def _masked(value: Any, patterns: tuple[re.Pattern[str], ...]) -> Any:
    """The value with every match of every pattern in its strings (keys too) masked."""
    if not patterns:
        return value
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(MASK, value)
        return value
    if isinstance(value, list):
        return [_masked(v, patterns) for v in value]
    if isinstance(value, dict):
        return {_masked(k, patterns): _masked(v, patterns) for k, v in value.items()}
    return value
