"""Series that compare like with like, their change points, and what explains each change.

Results measured on another machine, with another backend or other model weights are not the
same quantity: by default each such setup gets a series of its own (per arm, stage and
metric), so that a move to a faster host is no "change point". With `merge_hosts` the hosts
share one series and a change of host shows up as the cause of the change it makes.

Each load level (run.concurrency) is a series of its own too: level 1 (one agent at a time,
and every result from before levels) as it always was, each level above 1 with one value
per block; levels are never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ollabench.compare.leaderboard import median_ci
from ollabench.compare.provenance import SETUP_LABELS, Difference, provenance_differences
from ollabench.history.changepoints import Change, find_changes, segment_levels
from ollabench.history.timeline import Snapshot
from ollabench.stats import METRIC_BY_NAME

HOST_FACTS = ("hardware.cpu_model", "hardware.cpu_cores_physical",
              "hardware.cpu_cores_logical", "hardware.memory_gib")
BACKEND_FACT = "engine.backend"
MODEL_FACTS = ("weights.gguf_sha256", "weights.ollama_digest", "weights.model")
MERGED = "(all hosts)"
# What a difference of each non-setup category is called in a cause
OTHER_LABELS = {"options": "different profile options", "run": "different run settings"}


@dataclass(frozen=True)
class Setup:
    """What must be equal for two results to be one quantity: host, backend, model."""

    host: str
    backend: str
    model: str

    def label(self) -> str:
        return f"{self.host}; {self.backend}; model {self.model}"


def setup_of(facts: Mapping[str, Any], merge_hosts: bool) -> Setup:
    cpu, physical, logical, memory_gib = (facts.get(key) for key in HOST_FACTS)
    host = MERGED if merge_hosts else (
        f"{cpu or 'unknown CPU'}, {physical or '?'}/{logical or '?'} cores, "
        f"{'?' if memory_gib is None else f'{float(memory_gib):g}'} GiB")
    model = next((str(facts[k]) for k in MODEL_FACTS if facts.get(k)), "unknown")
    return Setup(host, str(facts.get(BACKEND_FACT) or "unknown"), model[:12])


@dataclass
class Series:
    """One metric of one stage and arm on one setup, point by point in time order."""

    arm: str
    stage: str
    metric: str
    setup: Setup
    number: int  # the setup's number, 1-based, in order of first appearance
    snapshots: list[Snapshot]
    changes: list[Change]
    level: int = 1  # agents at once (run.concurrency)

    @property
    def name(self) -> str:
        at = "" if self.level == 1 else f" at {self.level} agents"
        return f"{self.arm} {self.stage} {self.metric}{at} (setup {self.number})"

    @property
    def slug(self) -> str:
        at = "" if self.level == 1 else f"_c{self.level}"
        return f"{self.arm}_{self.stage}_{self.metric}{at}_setup{self.number}"

    def samples(self) -> list[np.ndarray]:
        return [s.values[(self.level, self.stage, self.metric)] for s in self.snapshots]


@dataclass(frozen=True)
class Explained:
    """A change point with the provenance of the revisions on either side of it."""

    series: Series
    change: Change
    before: Snapshot  # the last revision of the old level
    after: Snapshot  # the first revision of the new level
    differences: list[Difference]

    @property
    def cause(self) -> str:
        return cause(self.differences)

    @property
    def verdict(self) -> str:
        direction = METRIC_BY_NAME[self.series.metric].direction
        if direction == "neither" or math.isnan(self.change.step_pct):
            return "different"
        return "better" if (self.change.step_pct > 0) == (direction == "higher") else "worse"


def build_series(snapshots: Sequence[Snapshot], arm: str, keys: Sequence[tuple[str, str]],
                 merge_hosts: bool, threshold_pct: float) -> list[Series]:
    """Every series with at least one point, with its change points."""
    by_setup: dict[Setup, list[Snapshot]] = {}
    for snap in snapshots:
        by_setup.setdefault(setup_of(snap.facts, merge_hosts), []).append(snap)
    found: list[Series] = []
    for number, (setup, snaps) in enumerate(by_setup.items(), start=1):
        levels = sorted({level for snap in snaps for level, _, _ in snap.values})
        for level in levels:
            for stage, metric in keys:
                points = [s for s in snaps if len(s.values.get((level, stage, metric), ()))]
                if points:
                    series = Series(arm, stage, metric, setup, number, points, [], level)
                    series.changes = find_changes(series.samples(), threshold_pct)
                    found.append(series)
    return found


def explain(series: Series) -> list[Explained]:
    snaps = series.snapshots
    return [Explained(series, c, snaps[c.index - 1], snaps[c.index],
                      provenance_differences(snaps[c.index - 1].facts, snaps[c.index].facts))
            for c in series.changes]


def cause(differences: Sequence[Difference]) -> str:
    """What changed between the two revisions around a change point, in words."""
    categories = {d.category for d in differences}
    labels = [label for category, label in {**SETUP_LABELS, **OTHER_LABELS}.items()
              if category in categories]
    if not labels:
        return ("nothing recorded differs (look outside the provenance: load on the machine, "
                "its temperature, other jobs)")
    return ", ".join(labels)


def history_frame(series_list: Sequence[Series], positions: Mapping[str, int]) -> pd.DataFrame:
    """One row per point: the series, the revision, the per-run median with its 95% CI, the
    level of its segment and the provenance that most often explains a change."""
    rows: list[dict[str, Any]] = []
    for series in series_list:
        samples = series.samples()
        levels = segment_levels(samples, series.changes)
        starts = {c.index for c in series.changes}
        for i, (snap, values) in enumerate(zip(series.snapshots, samples, strict=True)):
            low, high = median_ci(values)
            facts = snap.facts
            rows.append({
                **_series_columns(series), "position": positions[snap.entry.sha],
                "rev": snap.entry.label, "sha": snap.entry.sha, "date": snap.entry.date,
                "kind": snap.entry.kind, "runs": len(values), "median": float(np.median(values)),
                "ci_low": low, "ci_high": high, "level": levels[i], "change": i in starts,
                "ollabench_commit": facts.get("software.ollabench_commit"),
                "engine_version": facts.get("engine.engine_version"),
                "server_version": facts.get("engine.server_version"),
                "profile": facts.get("options.profile"),
            })
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def changes_frame(explained: Sequence[Explained]) -> pd.DataFrame:
    """One row per change point: where, how large (per-run data of both sides), and what
    differs in the provenance of the revisions on either side."""
    rows = []
    for e in explained:
        c = e.change
        rows.append({
            **_series_columns(e.series), "rev_before": e.before.entry.label,
            "rev": e.after.entry.label, "sha": e.after.entry.sha, "date": e.after.entry.date,
            "points_before": c.index - c.start, "points_after": c.end - c.index,
            "runs_before": c.runs_before, "runs_after": c.runs_after,
            "median_before": c.median_before, "median_after": c.median_after,
            "step_pct": c.step_pct, "ci_low_pct": c.ci_low_pct, "ci_high_pct": c.ci_high_pct,
            "p_value": c.p_value, "verdict": e.verdict, "cause": e.cause,
            "differences": "; ".join(f"{d.category}.{d.name}: {d.a} -> {d.b}"
                                     for d in e.differences),
        })
    return pd.DataFrame(rows, columns=CHANGES_COLUMNS)


def _series_columns(series: Series) -> dict[str, Any]:
    return {"series": series.slug, "arm": series.arm, "stage": series.stage,
            "metric": series.metric, "concurrency": series.level, "setup": series.number,
            "host": series.setup.host, "backend": series.setup.backend,
            "model": series.setup.model}


SERIES_COLUMNS = ("series", "arm", "stage", "metric", "concurrency", "setup", "host", "backend",
                  "model")
HISTORY_COLUMNS = (*SERIES_COLUMNS, "position", "rev", "sha", "date", "kind", "runs", "median",
                   "ci_low", "ci_high", "level", "change", "ollabench_commit",
                   "engine_version", "server_version", "profile")
CHANGES_COLUMNS = (*SERIES_COLUMNS, "rev_before", "rev", "sha", "date", "points_before",
                   "points_after", "runs_before", "runs_after", "median_before",
                   "median_after", "step_pct", "ci_low_pct", "ci_high_pct", "p_value",
                   "verdict", "cause", "differences")
