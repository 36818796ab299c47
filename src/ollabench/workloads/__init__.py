"""Workloads: what the agent under test does in one run (docs/workloads.md).

`conf/workload/` chooses one: `agent` (the default, workloads/agent.py), `trace`
(workloads/trace.py) or `tool_agent` (workloads/tool_agent.py). The bench sees only the
`Workload` interface (workloads/base.py).
"""

from __future__ import annotations

from pathlib import Path

from ollabench.config.schema import AgentWorkloadConfig, BenchConfig, ToolAgentWorkloadConfig
from ollabench.workloads.base import Step, Workload

__all__ = ["Step", "Workload", "load_workload", "output_cap"]


def load_workload(config: BenchConfig) -> Workload:
    """Read and check the configured workload (a problem is a WorkloadError naming it)."""
    chosen = config.workload
    if isinstance(chosen, AgentWorkloadConfig):
        from ollabench.workloads.agent import AgentWorkload

        return AgentWorkload(Path(chosen.dir))
    if isinstance(chosen, ToolAgentWorkloadConfig):
        from ollabench.workloads.tool_agent import ToolAgentWorkload

        return ToolAgentWorkload(Path(chosen.dir), chosen.task, chosen.max_turns,
                                 tuple(chosen.tools))
    from ollabench.workloads.trace import TraceWorkload

    return TraceWorkload(Path(chosen.path), chosen.replay)


def output_cap(config: BenchConfig, step: Step) -> int:
    """A step's num_predict: its own (a trace line's), else the workload config's for its
    stage, never above run.max_output_tokens."""
    chosen = config.workload
    if step.num_predict is not None:
        cap = step.num_predict
    elif isinstance(chosen, AgentWorkloadConfig):
        cap = getattr(chosen.num_predict, step.stage)
    else:
        cap = chosen.num_predict
    ceiling = config.run.max_output_tokens
    return cap if ceiling is None else min(cap, ceiling)
