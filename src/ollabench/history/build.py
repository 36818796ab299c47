"""`ollabench history`: read the revisions, build the series, find and explain change
points. The entry function of the command; the parts live beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ollabench.errors import HistoryError
from ollabench.history.output import History
from ollabench.history.series import build_series, changes_frame, explain, history_frame
from ollabench.history.timeline import Snapshot, load_snapshots, timeline
from ollabench.paths import RAW_DIR
from ollabench.records.schema import ARMS
from ollabench.stats import HEADLINE_METRICS, METRIC_BY_NAME, WORKFLOW_STAGE

# The default agent workload's stages and the whole run; another workload names its own.
DEFAULT_STAGES = ("analysis", "report", WORKFLOW_STAGE)


def history(root: Path, revs: str | None = None, all_experiments: bool = False,
            arm: str = "treatment", stages: Sequence[str] = DEFAULT_STAGES,
            metrics: Sequence[str] = HEADLINE_METRICS, merge_hosts: bool = False,
            threshold_pct: float | None = None, progress: bool = True) -> History:
    """The history of `metrics` x `stages` of one arm over the revisions of `revs` and/or
    every DVC experiment (HEAD and its ancestors when neither is given)."""
    _check_choice("--arm", [arm], ARMS)
    _check_choice("--metric", metrics, tuple(METRIC_BY_NAME))
    entries = timeline(root, revs, all_experiments)
    keys = [(stage, metric) for stage in stages for metric in metrics]
    snapshots, skipped = load_snapshots(root, entries, arm, keys, progress)
    if not snapshots:
        where = f"--revs {revs}" if revs else ("the DVC experiments" if all_experiments
                                               else "HEAD and its ancestors")
        raise HistoryError(f"no revision of {where} has raw data ({RAW_DIR}) with measured "
                           f"calls in the {arm} arm ({len(skipped)} revisions looked at)")
    threshold = threshold_pct if threshold_pct is not None else _recorded_threshold(snapshots)
    series = build_series(snapshots, arm, keys, merge_hosts, threshold)
    positions = {snap.entry.sha: i for i, snap in enumerate(snapshots, start=1)}
    explained = [e for s in series for e in explain(s)]
    return History([s.entry for s in snapshots], skipped, series, explained,
                   history_frame(series, positions), changes_frame(explained), threshold,
                   merge_hosts)


def _check_choice(option: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    for value in given:
        if value not in allowed:
            raise HistoryError(f"{option}: must be one of {', '.join(allowed)}, got {value!r}")


def _recorded_threshold(snapshots: Sequence[Snapshot]) -> float:
    """The largest practical threshold any revision recorded (the strictest)."""
    known = [s.threshold_pct for s in snapshots if s.threshold_pct is not None]
    if not known:
        raise HistoryError("no revision records run.practical_threshold_pct; give "
                           "--threshold-pct")
    return max(known)

