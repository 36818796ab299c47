"""The backend interface: one LLM call in, one measurement out.

A backend owns its clocks. It streams the reply, timestamps the first non-empty text on the
client's monotonic clock, and copies the engine's own timings. It never raises for a failed
call: it returns a measurement whose `outcome` and `error` say what went wrong, so the call
is recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ollabench.records.schema import CallMeasurement

Message = dict[str, Any]  # role and content; a replayed trace's also tool_calls, tool_name
Tools = list[dict[str, Any]]  # tool definitions in Ollama's `tools` shape
OutputFormat = str | dict[str, Any]  # Ollama's `format`: "json" or a JSON schema
COLD, WARM = "cold", "warm"


@dataclass(frozen=True)
class CachePlan:
    """The prompt-cache state the bench arranged for a call: "cold" (with a nonce for an
    engine whose cache it cannot clear), "warm" (a primer call just ran the same messages),
    or None (not arranged)."""

    state: str | None = None
    nonce: str | None = None


UNARRANGED = CachePlan()


def with_nonce(messages: list[Message], nonce: str | None) -> list[Message]:
    """The messages with the nonce opening the first one: no cached prefix can reach past
    the chat template's first tokens."""
    if nonce is None or not messages:
        return messages
    first = {**messages[0], "content": f"[{nonce}]\n{messages[0]['content']}"}
    return [first, *messages[1:]]


def record_token_gaps(measurement: CallMeasurement, token_times_ns: list[int]) -> None:
    """Inter-token latency between successive non-empty chunks: p50, p95 and max in ms.

    Left unknown (None) with fewer than two gaps: one gap is no distribution.
    """
    if len(token_times_ns) < 3:
        return
    gaps_ms = np.diff(np.asarray(token_times_ns, dtype=np.int64)) / 1e6
    p50, p95 = np.percentile(gaps_ms, [50, 95])
    measurement.itl_p50_ms = float(p50)
    measurement.itl_p95_ms = float(p95)
    measurement.itl_max_ms = float(gaps_ms.max())


class Backend(ABC):
    """A local inference engine seen through the calls an agent makes."""

    name: str
    # Holds each set of load-time options in an engine of its own, side by side, when asked
    # to (run.interleave call): alternating the arms call by call then reloads nothing.
    switch_free: bool = False

    @abstractmethod
    def preflight(self) -> None:
        """Check before the first call that the engine and model are there; raise
        BackendUnavailable with a one-line fix otherwise (ConfigError for a model setting
        the engine refuses)."""

    @abstractmethod
    def chat(self, messages: list[Message], options: dict[str, Any],
             cache: CachePlan = UNARRANGED, tools: Tools | None = None,
             output_format: OutputFormat | None = None) -> CallMeasurement:
        """Run one streamed chat call with Ollama-named options (num_predict included);
        with `tools`, the model may call them, and a call's output is canonical JSON
        (workloads/tools.py, backends/tool_wire.py); with `output_format`, the output is
        held to it."""

    def refusal(self, tools: Tools | None,
                output_format: OutputFormat | None) -> tuple[str, str] | None:
        """The request field this engine cannot honour and why (None: it can all)."""
        return None

    @abstractmethod
    def effective_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options the engine really uses: the profile's, filled with the defaults."""

    def validate_options(self, options: dict[str, Any], where: str) -> None:
        """Refuse (ConfigError), after preflight and before the first call, options the
        engine would ignore."""
        self.effective_options(options)

    def context_length(self, options: dict[str, Any]) -> int | None:
        """The context these options will run with, where it can be known before the
        first call (None: the server decides)."""
        return None

    def count_tokens(self, messages: list[Message]) -> int | None:
        """The prompt's tokens with the model's chat template, where the engine can count
        them before the first call (None: it cannot)."""
        return None

    @abstractmethod
    def expects_reload(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether switching from `old` to `new` options makes the engine reload the model."""

    def serve(self, agents: int, options: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Get ready, before a block's clocks start, to serve `agents` calls at once with
        these options (a server has its slots already)."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Drop the loaded model so the next call pays a cold load (cold-start mode)."""

    def provenance(self) -> dict[str, Any]:
        """Engine version, model identity and anything else that makes a result reproducible."""
        return {}

    def snapshot(self) -> dict[str, Any]:
        """What the engine has loaded right now (recorded before and after each arm)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""
