"""When a call paid a model load: one rule for the backends' per-call flag and the report.

A warm call's load time is scheduling only (Ollama: well under 100 ms; llama.cpp in
process: zero), while even a small model's reload costs hundreds of ms. So a load time is a
model load when it is both several times the warm level and clearly above it in absolute
terms; the second condition keeps a 2 ms -> 7 ms wobble from counting. docs/metrics.md
states the rule.
"""

from __future__ import annotations

from typing import TypeVar

LOAD_FACTOR = 3.0  # a load at least this many times the warm level ...
LOAD_EXCESS_MS = 100.0  # ... and at least this much above it is a model load

Value = TypeVar("Value")


def is_model_load(load_ms: Value, warm_ms: Value) -> Value:
    """Element-wise for numpy arrays and pandas Series, plain bool for floats."""
    return (load_ms >= LOAD_FACTOR * warm_ms) & (load_ms - warm_ms >= LOAD_EXCESS_MS)  # type: ignore[operator]
