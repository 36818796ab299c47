"""A config as Hydra overrides: how `leaderboard` names what an experiment changed, and how
`tune` asks `dvc exp run -S` for one candidate's exact config."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Text Hydra's grammar reads back as the same string without quotes.
PLAIN_TEXT = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
# Unquoted, these would come back as another type (or as Hydra's null).
RESERVED_WORDS = frozenset({"null", "true", "false", "nan", "inf"})


def by_dotted_key(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level keyed by Hydra's dotted paths: {"run.seed": 1}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(by_dotted_key(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: plain text as is, other text
    quoted, the rest as JSON (null, true, 0.6, [1, 2])."""
    if not isinstance(value, str):
        return json.dumps(value)
    if PLAIN_TEXT.fullmatch(value) and value.lower() not in RESERVED_WORDS:
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def changed_keys(base: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                              list[str]]:
    """The leaves target sets differently from base (dotted key -> value), and the keys of
    base that target lacks."""
    old, new = by_dotted_key(base), by_dotted_key(target)
    changed = {key: value for key, value in new.items() if key not in old or old[key] != value}
    return changed, [key for key in old if key not in new]


def overrides_between(base: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """Overrides that turn the composition `base` into `target`: `++key=value` sets or adds
    a leaf, `~key` removes one."""
    changed, removed = changed_keys(base, target)
    return ([f"++{key}={override_value(value)}" for key, value in changed.items()]
            + [f"~{key}" for key in removed])
