"""The trace workload: replay a user's own chat requests, one JSON object per line.

Each line is one request: `messages` in the OpenAI/Ollama chat shape, an optional `stage`
label (the statistics group by it), an optional `num_predict`, and optionally a `session`
with its `turn` (1, 2, ... in file order). A run replays every line in order. With
`replay: model`, the assistant messages of a session's turn are replaced by the model's own
replies to the turns before it, so the conversation follows what the model under test said;
with `replay: recorded` they are sent as recorded. Every line is checked before the first
call; a problem ends the bench with the file, the line and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollabench.backends.base import Message
from ollabench.errors import WorkloadError
from ollabench.workloads.base import Source, Step, Workload

ROLES = ("system", "user", "assistant", "tool")
LINE_KEYS = ("messages", "stage", "num_predict", "session", "turn")
MESSAGE_KEYS = ("role", "content")
# Without the model's tokenizer (Ollama has no tokenize endpoint), a prompt has at least one
# token per this many UTF-8 bytes: text averages 3-5, so only a sure overflow is refused.
BYTES_PER_TOKEN_BOUND = 6


@dataclass(frozen=True)
class Request:
    """One line of the trace."""

    line: int
    messages: tuple[Message, ...]
    stage: str
    num_predict: int | None
    session: str | None
    turn: int | None


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
        self.source = Source("trace", str(path), (path.name,), hashlib.sha256(raw).hexdigest(),
                             {"replay": replay, "requests": len(self.requests)})

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def messages(self, index: int, output_of: Callable[[int], str]) -> list[Message]:
        request = self.requests[index]
        if not self._steps[index].needs:
            return [dict(m) for m in request.messages]
        replies = iter(self._steps[index].needs)
        return [{"role": "assistant", "content": output_of(next(replies))}
                if m["role"] == "assistant" else dict(m) for m in request.messages]

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
                size = sum(len(m["content"].encode("utf-8")) for m in messages)
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
    unknown = sorted(set(data) - set(LINE_KEYS))
    if unknown:
        raise WorkloadError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                            f"{', '.join(LINE_KEYS)}")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WorkloadError(f"{where}: messages must be a non-empty list of "
                            "{\"role\", \"content\"} objects")
    checked = tuple(_message(where, index, m) for index, m in enumerate(messages))
    session, turn = data.get("session"), data.get("turn")
    if session is not None and not isinstance(session, (str, int)):
        raise WorkloadError(f"{where}: session must be a string or an integer")
    if (session is None) != (turn is None):
        raise WorkloadError(f"{where}: session and turn go together (a turn numbers a "
                            "request within its session)")
    stage = data.get("stage", f"turn{turn}" if turn is not None else f"request{number}")
    if not isinstance(stage, str) or not stage.strip():
        raise WorkloadError(f"{where}: stage must be a non-empty string")
    return Request(number, checked, stage, _positive(where, "num_predict", data),
                   None if session is None else str(session), _positive(where, "turn", data))


def _message(where: str, index: int, message: Any) -> Message:
    if not isinstance(message, dict):
        raise WorkloadError(f"{where}: messages[{index}] must be an object")
    unknown = sorted(set(message) - set(MESSAGE_KEYS))
    if unknown:
        raise WorkloadError(f"{where}: messages[{index}]: unknown key {unknown[0]!r}; a "
                            f"replayed message has only {' and '.join(MESSAGE_KEYS)}")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise WorkloadError(f"{where}: messages[{index}]: unknown role {role!r}; allowed: "
                            f"{', '.join(ROLES)}")
    if not isinstance(content, str):
        raise WorkloadError(f"{where}: messages[{index}]: content must be a string")
    return {"role": role, "content": content}


def _positive(where: str, key: str, data: dict[str, Any]) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _steps(path: Path, requests: tuple[Request, ...], replay: str) -> tuple[Step, ...]:
    """One step per request; with replay `model`, a session turn needs the turns before it
    (their replies replace its assistant messages, which must be one per earlier turn)."""
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
            replies = sum(m["role"] == "assistant" for m in request.messages)
            if replies != len(earlier):
                raise WorkloadError(
                    f"{path}:{request.line}: turn {request.turn} has {replies} assistant "
                    f"message(s), but replay 'model' replaces one per earlier turn "
                    f"({len(earlier)})")
            needs = tuple(earlier)
        steps.append(Step(request.stage, request.num_predict, needs))
        if request.session is not None:
            earlier.append(index)
    return tuple(steps)
