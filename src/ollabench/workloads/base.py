"""What a workload is to the bench: the calls one run makes, in order, each a step.

A step has a stage (the label its records carry and the statistics group by), an output cap
of its own or none (then the workload config's cap for its stage applies), and the earlier
steps whose outputs its prompt is built from (the agent's report needs its analysis; a
replayed session turn may need the model's reply to the turn before). The bench runs the
steps of every run in order for both arms and never starts a step whose inputs failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ollabench.backends.base import Message, OutputFormat, Tools
from ollabench.errors import WorkloadError
from ollabench.workloads.quality import Part


@dataclass(frozen=True)
class Step:
    """One call of a run."""

    stage: str
    num_predict: int | None = None  # the step's own output cap (a trace line's), else None
    needs: tuple[int, ...] = ()  # indexes of earlier steps whose outputs the prompt uses


@dataclass(frozen=True)
class Source:
    """Where a workload's content comes from, for env.json and the journal's identity."""

    kind: str
    location: str
    files: tuple[str, ...]
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)


class TaskEnded(Exception):
    """A step not to run: the run's task ended at an earlier step (a final answer)."""


class Workload(ABC):
    """A task the agent under test performs once per run."""

    name: str
    source: Source
    tools: list[dict[str, Any]] | None = None  # tool definitions sent with every call

    @property
    @abstractmethod
    def steps(self) -> tuple[Step, ...]:
        """The calls of one run, in the order they execute."""

    @abstractmethod
    def messages(self, index: int, output_of: Callable[[int], str]) -> list[Message]:
        """The messages of step `index`; output_of(i) is this run's output of step i (only
        for i in the step's `needs`). TaskEnded: the step is not to run."""

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages in the order they first occur in a run (the report's order)."""
        return tuple(dict.fromkeys(step.stage for step in self.steps))

    def parts(self, index: int) -> tuple[Part, ...]:
        """The parts step `index`'s output must have (none: no such check)."""
        return ()

    def call_fields(self, index: int, output: str) -> dict[str, Any]:
        """Record fields step `index`'s output adds (the tool agent's task fields)."""
        return {}

    def tools_of(self, index: int) -> Tools | None:
        """The tool definitions sent with step `index` (-1: the warm-up, the first step's)."""
        return self.tools

    def format_of(self, index: int) -> OutputFormat | None:
        """The structured-output format of step `index` (None: free text)."""
        return None

    def place(self, index: int) -> str:
        """Where step `index` comes from, for an error message."""
        return f"{self.name} step {index + 1} ({self.steps[index].stage})"

    def check_requests(self, refusal: Callable[[Tools | None, OutputFormat | None],
                                               tuple[str, str] | None], where: str) -> None:
        """Refuse, before the first call, a step with a field the backend cannot honour
        (Backend.refusal), naming the step and the field."""
        for index in range(len(self.steps)):
            refused = refusal(self.tools_of(index), self.format_of(index))
            if refused is not None:
                field_name, why = refused
                raise WorkloadError(f"{self.place(index)}: field {field_name!r} cannot be "
                                    f"replayed on {where}: {why}")

    def warmup_messages(self) -> list[Message]:
        """A warm-up call runs the first step's prompt (it has no inputs)."""
        return self.messages(0, _no_outputs)

    def check_context(  # noqa: B027 - optional: only some workloads refuse
            self, count_tokens: Callable[[list[Message]], int | None], num_ctx: int,
            cap_of: Callable[[Step], int], where: str) -> None:
        """Refuse, before the first call, a step that cannot fit the context `num_ctx`.
        The agent refuses nothing: a context that cuts its prompt is a treatment worth
        measuring, and the records and the report show the cut."""

    def describe(self) -> dict[str, Any]:
        """What env.json records about the workload."""
        return {"name": self.name, "kind": self.source.kind, "location": self.source.location,
                "files": list(self.source.files), "sha256": self.source.sha256,
                "stages": list(self.stages), "steps": len(self.steps),
                **self.source.details}


def _no_outputs(index: int) -> str:
    raise AssertionError(f"the first step needs no earlier output (asked for step {index})")
