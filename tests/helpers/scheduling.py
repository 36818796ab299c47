"""How `make test` hands whole modules to the pytest-xdist workers (--dist loadscope), with
two changes: modules that read one per-process fixture share a worker, and the modules
that take longest start first.

xdist's loadscope sends the modules with the most tests first; the fake-server modules
that mostly wait (scripted calls of hundreds of ms at several levels) have few tests, so
they came late and one worker ran alone at the end of the suite. The order below is from
`--durations` (2026-12-08); a module missing from it only starts later, nothing else
changes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from xdist.scheduler import LoadScopeScheduling

# module -> the module whose worker it runs on: test_judge reads the `embedded_run` bench
# (tests/conftest.py) that test_bench reads; built once per process, it took 10 s twice
SHARED_WORKER = {"tests/test_judge.py": "tests/test_bench.py"}
# The slow modules (make test) first, then the fast ones (make test-fast deselects the slow).
LONGEST_FIRST = ("tests/e2e/test_quality_gate.py", "tests/e2e/test_experiments.py",
                 "tests/e2e/test_tune_cluster.py", "tests/e2e/test_workloads.py",
                 "tests/test_tune.py", "tests/e2e/test_tune_experiments.py",
                 "tests/e2e/test_pipeline.py", "tests/test_benchmarks.py",
                 "tests/e2e/test_ollama_generations.py", "tests/e2e/test_load.py",
                 "tests/e2e/test_openai_server.py", "tests/e2e/test_judge_stage.py",
                 "tests/e2e/test_sweep_cluster.py",
                 "tests/test_concurrency.py", "tests/test_bench.py", "tests/test_arrivals.py",
                 "tests/test_bench_ollama.py", "tests/history/test_history.py",
                 "tests/test_run_control.py", "tests/test_tool_agent.py",
                 "tests/test_llamacpp_backend.py", "tests/history/test_history_levels.py")


class _LongestFirst(OrderedDict[str, Any]):
    """xdist's queue of modules; the next one taken is the first of LONGEST_FIRST left,
    else the first queued (xdist queues the modules with the most tests first)."""

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        if last:
            return super().popitem(last=True)
        scope = min(self, key=lambda s: LONGEST_FIRST.index(s) if s in LONGEST_FIRST
                    else len(LONGEST_FIRST))
        return scope, self.pop(scope)


class ModuleScheduling(LoadScopeScheduling):
    """loadscope, with SHARED_WORKER's modules as one unit and LONGEST_FIRST's order."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self.workqueue = _LongestFirst()

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return SHARED_WORKER.get(scope, scope)
