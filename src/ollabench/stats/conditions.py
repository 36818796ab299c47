"""What each arm's calls really ran with, as their records say: the context and batch the
server used, the prompt-cache state, the engine version, how the calls ended, truncation
(known or not), context shifts, and reloads predicted from the options against those
observed. A comparison is only as good as these are alike; quality.json keeps them under
`conditions` and the report words them (docs/metrics.md defines each field).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ollabench.records.schema import ARMS, PRIME_PHASE
from ollabench.stats.grouping import is_flagged

TRUNCATION_KEYS = ("true", "false", "unknown")
UNEQUAL_CHECKS = ("cache_state", "engine_version", "token_count_source", "timing_source")


def call_list(calls: pd.DataFrame, extra: list[str]) -> list[dict[str, Any]]:
    """Calls as plain records in schedule order, with the `extra` columns they have."""
    columns = ["seq", "run", "arm", "stage", "phase", "attempt",
               *(c for c in extra if c in calls)]
    ordered = calls[columns].sort_values(["seq", "attempt"], kind="stable")
    return ordered.astype("object").to_dict("records")


def arm_conditions(calls: pd.DataFrame) -> dict[str, Any]:
    """One arm's conditions: measured calls for what they ran with, every call for how
    calls ended; truncation over the calls that can say (those that succeeded, and those
    the server refused for an oversize prompt)."""
    measured = calls.loc[calls["phase"] == "measured"]
    answered = calls.loc[calls["error"].isna() | is_flagged(calls, "truncated")]
    return {
        "num_ctx": _distinct(measured, "num_ctx"),
        "num_batch": _distinct(measured, "num_batch"),
        "num_batch_basis": _distinct(measured, "num_batch_basis"),
        "engine_version": _distinct(calls, "engine_version"),
        "cache_state": _counts(measured, "cache_state"),
        "cache_controlled": _flag_counts(measured, "cache_controlled"),
        "truncated": _flag_counts(answered, "truncated"),
        "context_shift": _flag_counts(measured, "context_shift"),
        "outcomes": _counts(calls, "outcome"),
        "primers": int((calls["phase"] == PRIME_PHASE).sum()),
        "backend": _distinct(calls, "backend"),
        "model": _distinct(calls, "model"),
        "token_count_source": _counts(measured, "token_count_source"),
        "timing_source": _counts(measured, "timing_source"),
    }


def context_shift_calls(calls: pd.DataFrame) -> list[dict[str, Any]]:
    """Calls whose prompt and output went past the effective context while generating."""
    return call_list(calls.loc[is_flagged(calls, "context_shift")],
                     ["prompt_tokens", "output_tokens", "num_ctx"])


def reload_mismatches(calls: pd.DataFrame) -> list[dict[str, Any]]:
    """Calls where the reload predicted from the options sent and the one observed (load
    time, /api/ps) disagree; both must be known."""
    expected, observed = calls.get("reload_expected"), calls.get("reloaded")
    if expected is None or observed is None:
        return []
    known = expected.notna() & observed.notna()
    differ = known & (expected.astype("boolean") != observed.astype("boolean")).fillna(False)
    return call_list(calls.loc[differ.astype(bool)], ["reload_expected", "reloaded", "load_ms"])


def unequal_conditions(conditions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Differences between the arms that the profiles do not ask for: another cache state
    (one arm measured warm caches, the other cold), another engine version, or token counts
    and timings from different sources (an engine's counters against a client's count)."""
    found = []
    for check in UNEQUAL_CHECKS:
        control, treatment = (conditions[arm].get(check) or [] for arm in ARMS)
        seen = [set(side) for side in (control, treatment)]  # states or versions
        if seen[0] and seen[1] and seen[0] != seen[1]:
            found.append({"check": check, "stage": None, "control": _text(control),
                          "treatment": _text(treatment)})
    return found


def _distinct(calls: pd.DataFrame, column: str) -> list[Any]:
    """The known values of a column, sorted (several: it changed during the run)."""
    if column not in calls:
        return []
    values = calls[column].dropna().unique().tolist()
    return sorted(int(v) if isinstance(v, float) and v.is_integer() else v for v in values)


def _counts(calls: pd.DataFrame, column: str) -> dict[str, int]:
    if column not in calls:
        return {}
    counts = calls[column].dropna().astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _flag_counts(calls: pd.DataFrame, column: str) -> dict[str, int]:
    """A flag as {"true": n, "false": n, "unknown": n}: unknown is never counted as false."""
    flags = calls[column].astype("boolean") if column in calls else pd.Series(
        pd.NA, index=calls.index, dtype="boolean")
    true = int(flags.fillna(False).sum())
    unknown = int(flags.isna().sum())
    return dict(zip(TRUNCATION_KEYS, (true, len(flags) - true - unknown, unknown), strict=True))


def _text(value: dict[str, int] | list[Any]) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {n}" for k, n in value.items())
    return ", ".join(map(str, value))
