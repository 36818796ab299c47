"""The tool agent: a multi-turn agent that answers a question about the workload folder
with tools (workloads/tools.py), until it gives a final answer or reaches the turn limit.

Step k of a run is turn k (stage `turnk`), so the statistics compare turn k of one arm
with turn k of the other. Turn k's prompt is the task plus every earlier turn of the same
run: the model's output, then each tool's reply. A call the tools cannot run (unknown tool,
bad arguments, output that is not valid JSON) is answered with the error, as an agent
framework would, and counted; it never stops the run. Once a turn gives a final answer the
later turns are not run (the bench records them as unreached).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ollabench.backends.base import Message
from ollabench.backends.tool_wire import Turn, read_turn
from ollabench.workloads.agent import read_digest
from ollabench.workloads.base import Source, Step, TaskEnded, Workload
from ollabench.workloads.tools import ToolError, run_tool, tool_definitions

FINAL_ANSWER = "final_answer"
TURN_LIMIT = "turn_limit"
SYSTEM_PROMPT = ("You are a performance engineer with tools over a folder of benchmark "
                 "results. Call one tool at a time; when you know the answer, give it.")


class ToolAgentWorkload(Workload):
    """Up to `max_turns` turns per run over the folder's files."""

    name = "tool_agent"

    def __init__(self, folder: Path, task: str, max_turns: int,
                 tools: tuple[str, ...]) -> None:
        digest = read_digest(folder)  # checks every file, as the agent workload does
        self.folder, self.task, self.max_turns, self.tool_names = folder, task, max_turns, tools
        self.tools = tool_definitions(tools)
        self.source = Source("folder", str(folder), digest.files, digest.sha256,
                             {"max_turns": max_turns, "tools": list(tools)})

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(Step(f"turn{k + 1}", needs=tuple(range(k))) for k in range(self.max_turns))

    def messages(self, index: int, output_of: Callable[[int], str]) -> list[Message]:
        conversation: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT},
                                       {"role": "user", "content": self.task}]
        for earlier in range(index):
            output = output_of(earlier)
            turn = read_turn(output)
            if turn.answer is not None:
                raise TaskEnded(f"the task ended at turn {earlier + 1} with a final answer")
            conversation.append({"role": "assistant", "content": output})
            conversation += [{"role": "tool", "content": reply}
                             for reply, _ in self._replies(turn)]
        return conversation

    def call_fields(self, index: int, output: str) -> dict[str, Any]:
        """task_turn, the turn's tool calls and invalid ones, the time its tools took, and
        how the task ended when it ended here (docs/metrics.md, Tool agent)."""
        turn = read_turn(output)
        started_ns = time.perf_counter_ns()
        replies = self._replies(turn)
        tool_ms = (time.perf_counter_ns() - started_ns) / 1e6
        ended_by = FINAL_ANSWER if turn.answer is not None else (
            TURN_LIMIT if index == self.max_turns - 1 else None)
        return {"task_turn": index + 1, "tool_calls": len(turn.calls) or int(bool(turn.problem)),
                "invalid_tool_calls": sum(not valid for _, valid in replies),
                "tool_ms": tool_ms if turn.calls else None, "task_ended_by": ended_by}

    def _replies(self, turn: Turn) -> list[tuple[str, bool]]:
        """Each call's reply text and whether the call was valid; an unreadable call gets
        one error reply."""
        if turn.problem is not None:
            return [(f"error: {turn.problem}", False)]
        replies = []
        for call in turn.calls:
            try:
                replies.append((run_tool(self.folder, call, self.tool_names), True))
            except ToolError as exc:
                replies.append((f"error: {exc}", False))
        return replies
