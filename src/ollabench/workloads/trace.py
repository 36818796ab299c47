"""The trace workload: replay a user's own chat requests, one JSON object per line.

Each line is one request: a compact line (`messages`, optional `num_predict`, `tools`,
`format`), or an OpenAI chat-completions or Ollama /api/chat body as the agent sent it
(workloads/trace_bodies.py reads all three alike), with an optional `stage` label (the
statistics group by it) and optionally a `session` with its `turn` (1, 2, ... in file order).
A run replays every line in order, with its tools and format. With `replay: model`, the last
assistant messages of a session's turn are replaced by the model's own replies to the turns
before it, so the conversation follows what the model under test said (each call records
whether its reply diverged from the recording); with `replay: recorded` they are sent as
recorded, tool replies always as recorded. Every line is checked before the first call; a
problem ends the bench with the file, the line and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollabench.backends.base import Message, OutputFormat, Tools
from ollabench.backends.tool_wire import calls_from_ollama, read_turn
from ollabench.errors import WorkloadError
from ollabench.workloads.base import Source, Step, Workload
from ollabench.workloads.trace_bodies import Body, read_body

# Without the model's tokenizer (Ollama has no tokenize endpoint), a prompt has at least one
# token per this many UTF-8 bytes: text averages 3-5, so only a sure overflow is refused.
BYTES_PER_TOKEN_BOUND = 6


@dataclass(frozen=True)
class Request:
    """One line of the trace."""

    line: int
    body: Body
    stage: str
    session: str | None
    turn: int | None

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.body.messages


class TraceWorkload(Workload):
    """The requests of a trace file, replayed in order once per run."""

    name = "trace"

    def __init__(self, path: Path, replay: str) -> None:
        self.path = path
        self.replay = replay
        raw = _read(path)
        self.requests = tuple(_parse_line(path, number, text)
                              for number, text in enumerate(raw.decode("utf-8").split("\n"), 1)
                              if text.strip())
        if not self.requests:
            raise WorkloadError(f"workload.path: {path} holds no request")
        self._steps = _steps(path, self.requests, replay)
        self._recorded_replies = _recorded_replies(self.requests, self._steps)
        overridden = sorted({key for r in self.requests for key in r.body.overridden})
        kinds = sorted({r.body.kind for r in self.requests})
        self.source = Source("trace", str(path), (path.name,), hashlib.sha256(raw).hexdigest(),
                             {"replay": replay, "requests": len(self.requests),
                              "line_kinds": kinds, "overridden_fields": overridden})

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def messages(self, index: int, output_of: Callable[[int], str]) -> list[Message]:
        request = self.requests[index]
        needs = self._steps[index].needs
        if not needs:
            return [dict(m) for m in request.messages]
        replaced = set(_assistants(request)[-len(needs):])
        replies = iter(needs)
        return [{"role": "assistant", "content": output_of(next(replies))}
                if position in replaced else dict(m)
                for position, m in enumerate(request.messages)]

    def tools_of(self, index: int) -> Tools | None:
        return self.requests[max(index, 0)].body.tools

    def format_of(self, index: int) -> OutputFormat | None:
        return self.requests[max(index, 0)].body.output_format

    def place(self, index: int) -> str:
        return f"{self.path}:{self.requests[index].line}"

    def call_fields(self, index: int, output: str) -> dict[str, Any]:
        """With replay `model`, whether this session turn's reply differs from the reply
        the recording holds (the next turn's last assistant message): from the first
        such turn on, the conversation is the model's, not the recording's."""
        recorded = self._recorded_replies.get(index)
        if self.replay != "model" or recorded is None:
            return {}
        return {"replay_diverged": not _same_reply(output, recorded)}

    def check_context(self, count_tokens: Callable[[list[Message]], int | None],
                      num_ctx: int, cap_of: Callable[[Step], int], where: str) -> None:
        """Refuse a request whose prompt and output cap cannot fit `num_ctx` (the context
        of the arm `where` names): with the model's tokenizer where the backend has it, else
        with a lower bound on the token count, so only a sure overflow is refused."""
        for request, step in zip(self.requests, self._steps, strict=True):
            messages = [dict(m) for m in request.messages]
            tokens = count_tokens(messages)
            how = "tokens"
            if tokens is None:
                size = sum(_text_bytes(m) for m in messages)
                tokens, how = math.ceil(size / BYTES_PER_TOKEN_BOUND), "tokens at least"
            cap = cap_of(step)
            if tokens + cap > num_ctx:
                raise WorkloadError(
                    f"{self.path}:{request.line}: the request is longer than the context: "
                    f"{tokens} prompt {how} + {cap} output tokens > num_ctx {num_ctx} "
                    f"({where}); shorten it or raise num_ctx")


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"workload.path: cannot read {path}: {exc.strerror}") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"workload.path: {path} is not UTF-8 text (byte "
                            f"0x{raw[exc.start]:02x} at offset {exc.start})") from None
    return raw


def _parse_line(path: Path, number: int, text: str) -> Request:
    where = f"{path}:{number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WorkloadError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WorkloadError(f"{where}: a request must be a JSON object, got {type(data).__name__}")
    body = read_body(where, data)
    session, turn = data.get("session"), data.get("turn")
    if session is not None and not isinstance(session, (str, int)):
        raise WorkloadError(f"{where}: session must be a string or an integer")
    if (session is None) != (turn is None):
        raise WorkloadError(f"{where}: session and turn go together (a turn numbers a "
                            "request within its session)")
    stage = data.get("stage", f"turn{turn}" if turn is not None else f"request{number}")
    if not isinstance(stage, str) or not stage.strip():
        raise WorkloadError(f"{where}: stage must be a non-empty string")
    return Request(number, body, stage, None if session is None else str(session),
                   _positive(where, "turn", data))


def _text_bytes(message: Message) -> int:
    """The UTF-8 bytes of a message's text and tool calls."""
    calls = message.get("tool_calls")
    return len((message["content"] + (json.dumps(calls) if calls else "")).encode("utf-8"))


def _assistants(request: Request) -> list[int]:
    """The positions of a request's assistant messages."""
    return [i for i, m in enumerate(request.messages) if m["role"] == "assistant"]


def _reply_text(message: Message) -> str:
    """A recorded assistant message as a call's canonical output (backends/tool_wire.py)."""
    calls = message.get("tool_calls")
    return calls_from_ollama(calls) if calls else message["content"]


def _same_reply(output: str, recorded: str) -> bool:
    """Whether the model said what the recording holds: the same tool calls (name and
    arguments), or the same text up to surrounding white space."""
    mine, theirs = read_turn(output), read_turn(recorded)
    if mine.calls or theirs.calls:
        return mine.calls == theirs.calls
    return output.strip() == recorded.strip()


def _positive(where: str, key: str, data: dict[str, Any]) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _steps(path: Path, requests: tuple[Request, ...], replay: str) -> tuple[Step, ...]:
    """One step per request; with replay `model`, a session turn needs the turns before it
    (their replies replace its last assistant messages, one per earlier turn)."""
    sessions: dict[str, list[int]] = {}
    steps = []
    for index, request in enumerate(requests):
        earlier: list[int] = []
        if request.session is not None:
            earlier = sessions.setdefault(request.session, [])
            if request.turn != len(earlier) + 1:
                raise WorkloadError(
                    f"{path}:{request.line}: session {request.session!r} turn {request.turn} "
                    f"comes after {len(earlier)} turn(s); number turns 1, 2, ... in file order")
        needs: tuple[int, ...] = ()
        if replay == "model" and earlier:
            replies = len(_assistants(request))
            if replies < len(earlier):
                raise WorkloadError(
                    f"{path}:{request.line}: turn {request.turn} has {replies} assistant "
                    f"message(s), but replay 'model' replaces one per earlier turn "
                    f"({len(earlier)})")
            needs = tuple(earlier)
        steps.append(Step(request.stage, request.body.num_predict, needs))
        if request.session is not None:
            earlier.append(index)
    return tuple(steps)


def _recorded_replies(requests: tuple[Request, ...],
                      steps: tuple[Step, ...]) -> dict[int, str]:
    """Step -> the reply the recording holds for it: the assistant message a later turn
    replaces with that step's output."""
    replies: dict[int, str] = {}
    for request, step in zip(requests, steps, strict=True):
        positions = _assistants(request)[-len(step.needs):] if step.needs else []
        for needed, position in zip(step.needs, positions, strict=True):
            replies[needed] = _reply_text(request.messages[position])
    return replies
