"""One trace line read as what an agent sent: a compact line, an OpenAI chat-completions body
or an Ollama /api/chat body, recognised per line and brought to one form.

Every key of a line is replayed, overridden by the arm's profile, or refused (docs/workloads.md
has the table and the reasons). Replayed: the messages (tool calls and tool replies included),
the tool definitions, the structured-output format and the output cap under any of its names.
Overridden: what the arms' profiles set (sampling, context, model, thinking, keep-alive) and
transport keys that do not change the prompt (stream, user). The mapping of OpenAI fields to
Ollama's follows Ollama's own OpenAI layer (ollama/ollama openai/openai.go `FromChatRequest`):
`response_format` json_object -> format "json", json_schema -> its schema; a tool reply's
`tool_call_id` -> `tool_name` of the call it answers; content parts -> one message per text
part. OpenAI's `developer` role (its newer name for the instructions a system message holds)
is read as `system`, as OpenAI's API treats it for models that have no developer role: no
engine here has one (Ollama's and llama.cpp's chat templates render system, user, assistant
and tool), so every backend sends it as the system message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ollabench.backends.base import Message, OutputFormat, Tools
from ollabench.errors import WorkloadError

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name -> the role every engine has
LABEL_KEYS = ("stage", "session", "turn")  # ollabench's own keys, on a line of any kind
COMPACT_KEYS = ("messages", "num_predict", "tools", "format")
OPENAI_CAPS = ("max_completion_tokens", "max_tokens")  # the newer name wins where both are set
# Keys that only one API has: they tell the line's kind.
OPENAI_ONLY = frozenset({
    *OPENAI_CAPS, "response_format", "tool_choice", "parallel_tool_calls", "n",
    "stream_options", "temperature", "top_p", "seed", "stop", "frequency_penalty",
    "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "reasoning_effort",
    "metadata", "store", "service_tier", "modalities", "prediction"})
OLLAMA_ONLY = frozenset({"options", "format", "think", "keep_alive", "truncate", "shift"})
# Keys the bench sets itself: the arm's profile and model config, or the transport.
OVERRIDDEN = frozenset({
    "model", "stream", "stream_options", "temperature", "top_p", "seed", "stop",
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "user",
    "reasoning_effort", "metadata", "store", "service_tier", "parallel_tool_calls", "think",
    "keep_alive", "truncate", "shift", "tool_choice", "n"})
# A message's keys: the replayed ones, and those Ollama's chat has no field for (OpenAI's
# participant `name` and the assistant's `refusal` text: not sent, listed as overridden).
UNSENT_MESSAGE_KEYS = frozenset({"name", "refusal"})
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "tool_name",
                          "thinking"}) | UNSENT_MESSAGE_KEYS


@dataclass(frozen=True)
class Body:
    """A line's request in one form: Ollama-shaped messages, tools and format."""

    kind: str  # compact, openai, ollama, or chat (a body with keys both APIs share)
    messages: tuple[Message, ...]
    tools: Tools | None
    output_format: OutputFormat | None
    num_predict: int | None
    overridden: tuple[str, ...]  # the line's keys the arm's profile replaced (options.* named)


def read_body(where: str, data: dict[str, Any]) -> Body:
    """The request of one parsed line; a key or value that cannot be replayed is refused."""
    keys = set(data) - set(LABEL_KEYS)
    openai, ollama = sorted(keys & OPENAI_ONLY), sorted(keys & OLLAMA_ONLY - {"format"})
    if "format" in keys and openai:
        ollama.append("format")
    if openai and ollama:
        raise WorkloadError(f"{where}: mixes OpenAI key {openai[0]!r} and Ollama key "
                            f"{ollama[0]!r}; a line is one API's request body")
    kind = "openai" if openai else "ollama" if ollama else "chat" if "model" in keys else "compact"
    allowed = set(COMPACT_KEYS) | {"model", "stream"} | (
        OPENAI_ONLY if kind == "openai" else OLLAMA_ONLY if kind == "ollama" else set())
    if kind != "compact":
        allowed.discard("num_predict")
    unknown = sorted(keys - allowed)
    if unknown:
        raise WorkloadError(f"{where}: unknown key {unknown[0]!r}; a line is a compact line "
                            f"({', '.join((*COMPACT_KEYS, *LABEL_KEYS))}), an OpenAI "
                            "chat-completions body or an Ollama /api/chat body")
    _refuse_unreplayable(where, data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WorkloadError(f"{where}: messages must be a non-empty list of "
                            "{\"role\", \"content\"} objects")
    overridden = sorted(keys & OVERRIDDEN)
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise WorkloadError(f"{where}: options must be an object")
    overridden += sorted(f"options.{k}" for k in options if k != "num_predict")
    overridden += sorted({f"messages[].{k}" for m in messages if isinstance(m, dict)
                          for k in m if k in UNSENT_MESSAGE_KEYS})
    return Body(kind, _messages(where, messages), _tools(where, data.get("tools")),
                _format(where, data), _cap(where, data, options), tuple(overridden))


def _refuse_unreplayable(where: str, data: dict[str, Any]) -> None:
    """Values that ask for something the bench cannot give both arms alike."""
    if data.get("n", 1) != 1:
        raise WorkloadError(f"{where}: n must be 1 (one reply per request), got {data['n']!r}")
    choice = data.get("tool_choice", "auto")
    if choice not in ("auto", "none") or (choice == "none" and data.get("tools")):
        raise WorkloadError(f"{where}: tool_choice {choice!r} cannot be replayed: the engines "
                            "let the model choose (use \"auto\", or drop the tools)")


def _cap(where: str, data: dict[str, Any], options: dict[str, Any]) -> int | None:
    names = [name for name in ("num_predict", *OPENAI_CAPS) if data.get(name) is not None]
    if "num_predict" in options:
        names.append("options.num_predict")
    if not names:
        return None
    values = {name: options["num_predict"] if name == "options.num_predict" else data[name]
              for name in names}
    value = values[names[0]]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where}: {names[0]} must be a positive integer, got {value!r}")
    return value


def _format(where: str, data: dict[str, Any]) -> OutputFormat | None:
    if "response_format" in data:
        spec = data["response_format"]
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            return "json"
        schema = (spec.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if not isinstance(schema, dict):
            raise WorkloadError(f"{where}: response_format must be {{\"type\": \"text\"}}, "
                                "{\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
                                "\"json_schema\": {\"schema\": {...}}}")
        return schema
    value = data.get("format")
    if value in (None, ""):
        return None
    if value != "json" and not isinstance(value, dict):
        raise WorkloadError(f"{where}: format must be \"json\" or a JSON schema object")
    return value


def _tools(where: str, tools: Any) -> Tools | None:
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise WorkloadError(f"{where}: tools must be a list of tool definitions")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(function, dict) or tool.get("type", "function") != "function"
                or not isinstance(function.get("name"), str)):
            raise WorkloadError(f"{where}: tools[{index}] must be {{\"type\": \"function\", "
                                "\"function\": {\"name\", \"description\", \"parameters\"}}")
    return tools


def _messages(where: str, messages: list[Any]) -> tuple[Message, ...]:
    names: dict[str, str] = {}  # tool_call_id -> the called tool's name
    read: list[Message] = []
    for index, message in enumerate(messages):
        at = f"{where}: messages[{index}]"
        if not isinstance(message, dict):
            raise WorkloadError(f"{at} must be an object")
        unknown = sorted(set(message) - MESSAGE_KEYS)
        if unknown:
            raise WorkloadError(f"{at}: unknown key {unknown[0]!r}; a replayed message has "
                                f"{', '.join(sorted(MESSAGE_KEYS))}")
        role = ROLE_ALIASES.get(message.get("role"), message.get("role"))
        if role not in ROLES:
            raise WorkloadError(f"{at}: unknown role {message.get('role')!r}; allowed: "
                                f"{', '.join([*ROLES, *ROLE_ALIASES])}")
        calls = _calls(at, message.get("tool_calls"), names)
        extra: dict[str, Any] = {"tool_calls": calls} if calls else {}
        if role == "tool":
            name = message.get("tool_name") or names.get(str(message.get("tool_call_id")))
            extra |= {"tool_name": name} if name else {}
        if role == "assistant" and isinstance(message.get("thinking"), str):
            extra["thinking"] = message["thinking"]
        read += [{"role": role, "content": text, **extra}
                 for text in _texts(at, message.get("content"), bool(calls))]
    return tuple(read)


def _texts(at: str, content: Any, has_calls: bool) -> list[str]:
    """The message's text: a string, a list of text parts (one message each), or none
    beside tool calls."""
    if isinstance(content, str):
        return [content]
    if content is None and has_calls:
        return [""]
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return [p["text"] for p in content]
    raise WorkloadError(f"{at}: content must be a string or a list of text parts "
                        "(images are not replayed)")


def _calls(at: str, calls: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    """Tool calls in Ollama's shape, arguments as an object (OpenAI sends a JSON string)."""
    if not calls:
        return []
    if not isinstance(calls, list):
        raise WorkloadError(f"{at}: tool_calls must be a list")
    read = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise WorkloadError(f"{at}: tool_calls[{index}] needs function.name")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = None
        if not isinstance(arguments, dict):
            raise WorkloadError(f"{at}: tool_calls[{index}]: arguments must be a JSON object")
        if call.get("id") is not None:
            names[str(call["id"])] = function["name"]
        read.append({"function": {"name": function["name"], "arguments": arguments}})
    return read
