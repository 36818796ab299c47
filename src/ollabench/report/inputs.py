"""What the report shows, read once: the aggregate's CSVs and quality.json, and env.json.

The report recomputes nothing; every number it prints is one of these files' values. The
JSON files are checked here for the keys the sections read, so that a malformed file ends in
one line naming the file and key, not in a traceback halfway through the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.errors import ReportError
from ollabench.paths import (
    COMPARISONS_FILE,
    ENV_FILE,
    LOOKS_FILE,
    PER_RUN_FILE,
    PRIMARY_FILE,
    PRIMARY_LEVELS_FILE,
    QUALITY_FILE,
    SUMMARY_FILE,
)
from ollabench.records.schema import ARMS
from ollabench.report.applicable import not_applicable
from ollabench.report.load import read_level_primary, read_load
from ollabench.report.noise import read_noise
from ollabench.stats import HEADLINE_METRICS, WORKFLOW_STAGE

QUALITY_KEYS = ("arms", "settings", "outliers", "errors", "reloaded_calls", "load_spikes",
                "truncated_calls", "unequal_work", "unknown_values", "duplicate_keys",
                "conditions", "reload_mismatches", "context_shift_calls")
QUALITY_LISTS = ("outliers", "errors", "reloaded_calls", "load_spikes", "truncated_calls",
                 "unequal_work", "reload_mismatches", "context_shift_calls")
SETTINGS_KEYS = ("threshold_pct", "alpha", "power", "seed", "bootstrap_resamples", "outlier_z",
                 "outlier_min_values", "unequal_tokens_pct", "load_factor", "load_excess_ms")
ARM_KEYS = ("profile", "calls", "measured", "warmups", "errors", "retries", "reloaded", "runs",
            "warmup_load_ms_median", "warmup_load_ms_mean", "length_stops")
CONDITION_KEYS = ("num_ctx", "num_batch", "num_batch_basis", "engine_version", "cache_state",
                  "cache_controlled", "truncated", "context_shift", "outcomes", "primers")
# Sections of env.json the report reads with .get(): each an object when present.
ENV_OBJECTS = ("config", "host", "host_at_start", "backend", "reference_backend", "git",
               "packages")
CONFIG_OBJECTS = ("model", "run", "reference", "profile")
JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}


class Inputs:
    """Everything the report shows, read once from disk."""

    def __init__(self, raw_dir: Path, processed_dir: Path) -> None:
        paths = {name: processed_dir / name
                 for name in (SUMMARY_FILE, COMPARISONS_FILE, PER_RUN_FILE, QUALITY_FILE)}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ReportError(f"missing aggregate output(s): {', '.join(missing)}; "
                              "run the aggregate stage first")
        self.summary = pd.read_csv(paths[SUMMARY_FILE])
        self.comparisons = pd.read_csv(paths[COMPARISONS_FILE])
        self.per_run = pd.read_csv(paths[PER_RUN_FILE])
        self.quality = _read_quality(paths[QUALITY_FILE])
        # The primary comparisons' decisions; empty for an aggregate made before they existed.
        self.primary, self.looks = (pd.read_csv(processed_dir / name)
                                    if (processed_dir / name).is_file() else pd.DataFrame()
                                    for name in (PRIMARY_FILE, LOOKS_FILE))
        self.noise = read_noise(processed_dir)
        env_path = raw_dir / ENV_FILE
        self.env = _read_env(env_path) if env_path.is_file() else {}
        self.config: dict[str, Any] = self.env.get("config") or {}
        self.profiles = {arm: self.quality["arms"][arm]["profile"] for arm in ARMS}
        self.load = read_load(processed_dir)  # None unless agents ran at once
        # The loaded levels' primary verdicts (primary_levels.csv, levels above 1), by level
        self.level_primary = read_level_primary(processed_dir / PRIMARY_LEVELS_FILE)
        # The workload's stages in its order (the aggregate writes them so), `workflow` last.
        ordered = dict.fromkeys(str(s) for s in self.summary["stage"] if s != WORKFLOW_STAGE)
        self.stages = [*ordered, WORKFLOW_STAGE]
        # {metric: why it did not apply}: left out of the tables, named once (applicable.py)
        self.not_applicable = not_applicable(self.summary, self.quality, self.config)

    @property
    def noise_floor(self) -> bool:
        """An A/A run: both arms ran the same profile with the same options, on the same
        model config (no reference_model of its own)."""
        if self.config.get("reference_model"):
            return False
        same_name = self.profiles["control"] == self.profiles["treatment"]
        options = [(self.config.get(key) or {}).get("options") for key in ("reference",
                                                                          "profile")]
        return same_name and options[0] == options[1]

    def comparison(self, stage: str, metric: str) -> pd.Series | None:
        rows = self.comparisons.loc[(self.comparisons["stage"] == stage)
                                    & (self.comparisons["metric"] == metric)]
        return None if rows.empty else rows.iloc[0]

    def headline_rows(self) -> Iterable[pd.Series]:
        for stage in self.stages:
            for metric in HEADLINE_METRICS:
                row = self.comparison(stage, metric)
                if row is not None:
                    yield row


def _read_quality(path: Path) -> dict[str, Any]:
    """quality.json with every key a section reads (the aggregate writes them all)."""
    quality = _read_object(path)
    _require(quality, QUALITY_KEYS, path)
    _require(_object(quality, "settings", path), SETTINGS_KEYS, path, "settings.")
    arms = _object(quality, "arms", path)
    _require(arms, ARMS, path, "arms.")
    conditions = _object(quality, "conditions", path)
    for arm in ARMS:
        _require(_object(arms, arm, path, "arms."), ARM_KEYS, path, f"arms.{arm}.")
        _require(_object(conditions, arm, path, "conditions."), CONDITION_KEYS, path,
                 f"conditions.{arm}.")
    for key in QUALITY_LISTS:
        if not isinstance(quality[key], list):
            raise ReportError(f"{path}: {key} must be an array, got {_json_type(quality[key])}")
    return quality


def _read_env(path: Path) -> dict[str, Any]:
    """env.json, whose sections may be missing (older runs) but must be objects if present."""
    env = _read_object(path)
    for key in ENV_OBJECTS:
        if env.get(key) is not None:
            _object(env, key, path)
    for key in CONFIG_OBJECTS:
        if (env.get("config") or {}).get(key) is not None:
            _object(env["config"], key, path, "config.")
    return env


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        raise ReportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: must be a JSON object, got {_json_type(data)}")
    return data


def _object(data: dict[str, Any], key: str, path: Path, where: str = "") -> dict[str, Any]:
    value = data[key]
    if not isinstance(value, dict):
        raise ReportError(f"{path}: {where}{key} must be an object, got {_json_type(value)}")
    return value


def _require(data: dict[str, Any], keys: Iterable[str], path: Path, where: str = "") -> None:
    missing = [f"{where}{key}" for key in keys if key not in data]
    if missing:
        raise ReportError(f"{path}: missing {', '.join(missing)}; was it written by "
                          "`ollabench aggregate`? Run the aggregate stage again")


def _json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)
