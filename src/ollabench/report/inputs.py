"""What the report shows, read once: the aggregate's CSVs and quality.json, and env.json.

The report recomputes nothing; every number it prints is one of these files' values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.errors import ReportError
from ollabench.paths import COMPARISONS_FILE, ENV_FILE, PER_RUN_FILE, QUALITY_FILE, SUMMARY_FILE
from ollabench.records import ARMS
from ollabench.stats import HEADLINE_METRICS, STAGES


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
        self.quality: dict[str, Any] = json.loads(paths[QUALITY_FILE].read_text("utf-8"))
        env_path = raw_dir / ENV_FILE
        self.env: dict[str, Any] = (json.loads(env_path.read_text("utf-8"))
                                    if env_path.is_file() else {})
        self.config: dict[str, Any] = self.env.get("config") or {}
        self.profiles = {arm: self.quality["arms"][arm]["profile"] for arm in ARMS}

    @property
    def noise_floor(self) -> bool:
        """An A/A run: both arms ran the same profile with the same options."""
        same_name = self.profiles["control"] == self.profiles["treatment"]
        options = [(self.config.get(key) or {}).get("options") for key in ("reference",
                                                                          "profile")]
        return same_name and options[0] == options[1]

    def comparison(self, stage: str, metric: str) -> pd.Series | None:
        rows = self.comparisons.loc[(self.comparisons["stage"] == stage)
                                    & (self.comparisons["metric"] == metric)]
        return None if rows.empty else rows.iloc[0]

    def headline_rows(self) -> Iterable[pd.Series]:
        for stage in STAGES:
            for metric in HEADLINE_METRICS:
                row = self.comparison(stage, metric)
                if row is not None:
                    yield row
