"""Tool calls on the wire: each engine's format mapped to one canonical output text.

A call's output is canonical JSON whatever the engine, so the records, the journal's resume
and the workload read it alike: `{"tool": name, "arguments": {...}}` (a JSON list of them
for several calls in one turn) or `{"final_answer": text}`. Plain text that does not open
with `{` or `[` is an answer as well (a model answering without calling a tool).

- Ollama: the request carries the tools in its `tools` field; the reply's calls arrive in a
  chunk's `message.tool_calls`, each `{"function": {"name", "arguments": {...}}}` with the
  arguments as an object (ollama api/types.go `Message.ToolCalls`, `ToolCall`,
  `ToolCallFunction`; server/routes.go `ChatHandler` streams them as its tool parser finds
  them). Earlier calls go back the same way, and tool replies as `role: tool` messages.
- OpenAI chat completions: the same `tools` definitions; the reply's calls stream as
  `delta.tool_calls` fragments keyed by `index` (the first with `id` and `function.name`, the
  rest appending to `function.arguments`, a JSON text; openai_stream joins them). Earlier
  calls go back as `tool_calls` with an `id`, `type: function` and the arguments as JSON text,
  each tool reply with the `tool_call_id` of the call it answers (OpenAI API reference,
  "Chat Completions: messages").
- llama.cpp (embedded): the tools are described in the system message and the output is
  constrained by a grammar built from CALL_SCHEMA-style JSON schema, so even a tiny model
  writes a parseable call or answer (it may still name a wrong file or be cut by the cap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FINAL_KEY = "final_answer"
CALL_FORMAT = ('Reply with one JSON object: {"tool": <name>, "arguments": {...}} to call a '
               'tool, or {"final_answer": <text>} when you know the answer.')


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """A turn's output as read: an answer, tool calls, or an unreadable call (problem)."""

    answer: str | None = None
    calls: tuple[ToolCall, ...] = ()
    problem: str | None = None


def read_turn(output: str) -> Turn:
    """Read a turn's canonical output (see the module docstring)."""
    text = output.strip()
    if not text.startswith(("{", "[")):
        return Turn(answer=text)
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Turn(problem=f"the tool call is not valid JSON ({exc})")
    if isinstance(data, dict) and FINAL_KEY in data:
        answer = data[FINAL_KEY]
        return Turn(answer=answer) if isinstance(answer, str) else \
            Turn(problem=f"{FINAL_KEY} must be a string")
    calls = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict) or not isinstance(item.get("tool"), str):
            return Turn(problem='a tool call needs {"tool": name, "arguments": {...}}')
        arguments = item.get("arguments", {})
        if not isinstance(arguments, dict):
            return Turn(problem="arguments must be a JSON object")
        calls.append(ToolCall(item["tool"], arguments))
    return Turn(calls=tuple(calls)) if calls else Turn(problem="an empty list of tool calls")


# --------------------------------------------------------------------------- Ollama


def calls_from_ollama(tool_calls: list[Any]) -> str:
    """A reply's `message.tool_calls` as the canonical output (one call: an object)."""
    calls = [{"tool": (c.get("function") or {}).get("name"),
              "arguments": (c.get("function") or {}).get("arguments", {})}
             if isinstance(c, dict) else c for c in tool_calls]
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def ollama_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as Ollama expects it: an assistant turn that called tools carries
    them in `tool_calls` (its canonical text is not sent as content); a replayed trace's
    message that already has them is sent as it is."""
    sent: list[dict[str, Any]] = []
    for message in messages:
        turn = read_turn(message["content"]) if message["role"] == "assistant" \
            and "tool_calls" not in message else None
        if turn is not None and turn.calls:
            sent.append({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls]})
        else:
            sent.append(dict(message))
    return sent


# --------------------------------------------------------------------------- OpenAI


def openai_messages(messages: list[dict[str, Any]], tools_sent: bool) -> list[dict[str, Any]]:
    """The conversation in the OpenAI shape: an assistant turn's calls (replayed, or its
    canonical text when tools are sent) in `tool_calls` with ids made up here, each tool
    reply answering the first unanswered call of its tool's name (of any name when it names
    none); a reply with no call to answer (the error for an unreadable call) is sent without
    `tool_call_id`. Ollama's `tool_name` is not an OpenAI field and is dropped."""
    sent: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, tool name) of calls not yet answered
    for number, message in enumerate(messages):
        role, calls = message["role"], _calls_of(message, tools_sent)
        if calls:
            ids = [(f"call_{number}_{i}", call.name) for i, call in enumerate(calls)]
            pending = ids
            content = "" if "tool_calls" not in message else message["content"]
            sent.append({"role": "assistant", "content": content, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": call.name,
                              "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
                for (call_id, _), call in zip(ids, calls, strict=True)]})
        elif role == "tool":
            name = message.get("tool_name")
            answered = next((p for p in pending if name in (None, p[1])), None)
            if answered is not None:
                pending.remove(answered)
            sent.append({"role": "tool", "content": message["content"],
                         **({"tool_call_id": answered[0]} if answered else {})})
        else:
            pending = [] if role == "assistant" else pending
            sent.append({k: v for k, v in message.items() if k not in ("tool_calls",
                                                                        "tool_name")})
    return sent


def _calls_of(message: dict[str, Any], tools_sent: bool) -> tuple[ToolCall, ...]:
    """An assistant message's tool calls: replayed ones (Ollama's shape), else those of its
    canonical text when tools are sent."""
    if message["role"] != "assistant":
        return ()
    if message.get("tool_calls"):
        return tuple(ToolCall((c.get("function") or {}).get("name", ""),
                              (c.get("function") or {}).get("arguments") or {})
                     for c in message["tool_calls"])
    return read_turn(message["content"]).calls if tools_sent else ()


# --------------------------------------------------------------------------- llama.cpp


def embedded_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation as the embedded engine's chat template takes it: role and content,
    a replayed assistant's tool calls as their canonical text (the reply format the tool
    prompt asks for), a tool reply's text as it is."""
    return [{"role": m["role"],
             "content": calls_from_ollama(m["tool_calls"]) if m.get("tool_calls")
             else m["content"]} for m in messages]


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one turn's output: a call of one of the tools, or an answer."""
    calls = [{"type": "object",
              "properties": {"tool": {"const": t["function"]["name"]},
                             "arguments": t["function"].get("parameters") or {"type": "object"}},
              "required": ["tool", "arguments"]} for t in tools]
    answer = {"type": "object", "properties": {FINAL_KEY: {"type": "string"}},
              "required": [FINAL_KEY]}
    return {"oneOf": [*calls, answer]}


def format_schema(output_format: str | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a structured-output format: Ollama's "json" is any JSON object."""
    return {"type": "object"} if output_format == "json" else output_format


def with_tool_prompt(messages: list[dict[str, str]],
                     tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages with the tools and the reply format added to the system message (a new
    one first if there is none), as Ollama's templates render a model's tools."""
    listing = "\n".join(
        f"- {t['function']['name']}: {t['function'].get('description', '')} Arguments: "
        f"{json.dumps((t['function'].get('parameters') or {}).get('properties', {}))}"
        for t in tools)
    text = f"Tools:\n{listing}\n{CALL_FORMAT}"
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"},
                *messages[1:]]
    return [{"role": "system", "content": text}, *messages]
