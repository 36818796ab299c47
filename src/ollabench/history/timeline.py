"""The revisions of a history, in time order, and what each holds: its per-run values and its
provenance, read through DVC's API as `compare` reads them (local cache, else the DVC remote,
never a checkout).

A revision whose bench stage never ran (no raw data, or no measured call in the arm), or
that holds the same raw data as an earlier one (it did not re-run the bench), is skipped and
named; raw data that is recorded but neither cached nor pushed stops the history,
as it stops `compare`: a gap in the series would move change points silently.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ollabench.compare.provenance import provenance_facts
from ollabench.compare.revisions import RAW_CALLS, Revision, Revisions, Side, read_raw
from ollabench.errors import CompareError, HistoryError
from ollabench.records.schema import CallRecord

COMMIT, EXPERIMENT = "commit", "experiment"


@dataclass(frozen=True)
class Entry:
    """One revision of the time line: a git commit or a DVC experiment."""

    label: str  # as shown: the short hash of a commit, the name of an experiment
    sha: str
    date: str  # committer date, ISO 8601
    kind: str


@dataclass(frozen=True)
class Snapshot:
    """What one revision measured in one arm: per-run values by (level, stage, metric), and
    the provenance facts (`category.name -> value`, as `compare` lists them)."""

    entry: Entry
    facts: dict[str, Any]
    values: dict[tuple[int, str, str], np.ndarray] = field(repr=False)
    threshold_pct: float | None


def timeline(root: Path, revs: str | None, all_experiments: bool) -> list[Entry]:
    """The commits of `revs` ("A..B": reachable from B and not from A; "B": B and its
    ancestors) in topological order, oldest first, and/or every DVC experiment; both
    together are ordered by committer date (at equal dates commits first, in git's order,
    then experiments by name)."""
    commits: list[str] = []
    if revs is not None or not all_experiments:
        commits = _rev_list(root, revs or "HEAD")
    experiments: dict[str, str] = {}
    if all_experiments:
        from ollabench.compare.leaderboard import list_experiments

        experiments = {exp.sha: exp.name for exp in list_experiments(root)}
        if not experiments and revs is None:
            raise HistoryError("this repository has no DVC experiments: run some with "
                               "`dvc exp run`, or fetch shared ones with `dvc exp pull -A "
                               "origin`")
    shas = [*commits, *(sha for sha in experiments if sha not in commits)]
    dates = _commit_dates(root, shas)
    entries = [Entry(experiments.get(sha, sha[:10]), sha, dates[sha],
                     EXPERIMENT if sha in experiments else COMMIT) for sha in shas]
    if experiments:
        # by date; at equal dates commits first, in git's order, then experiments by name
        order = {sha: i for i, sha in enumerate(commits)}
        entries.sort(key=lambda e: (_utc(e.date), e.kind == EXPERIMENT,
                                    order.get(e.sha, 0), e.label))
    return entries


def _rev_list(root: Path, revs: str) -> list[str]:
    if "..." in revs:
        raise HistoryError(f"--revs {revs}: give A..B (commits after A up to B) or one "
                           "revision (it and its ancestors)")
    start, _, end = revs.rpartition("..") if ".." in revs else ("", "", revs)
    if ".." in revs and not (start and end):
        raise HistoryError(f"--revs {revs}: both ends of A..B are needed")
    ends = [_resolve(root, rev) for rev in (start, end) if rev]
    span = f"{ends[0]}..{ends[1]}" if start else ends[0]
    shas = _git(root, "rev-list", "--reverse", "--topo-order", span).split()
    if not shas:
        raise HistoryError(f"--revs {revs}: the range holds no commits")
    return shas


def _resolve(root: Path, rev: str) -> str:
    """A commit hash for a commit, branch, tag or DVC experiment name (compare's message)."""
    try:
        return Revision(root, rev).sha
    except CompareError as exc:
        raise HistoryError(str(exc)) from None


def _commit_dates(root: Path, shas: Sequence[str]) -> dict[str, str]:
    if not shas:
        return {}
    out = _git(root, "show", "-s", "--format=%H %cI", *shas)
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def _utc(date: str) -> str:
    from datetime import datetime, timezone

    return datetime.fromisoformat(date).astimezone(timezone.utc).isoformat()


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode:
        said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise HistoryError(f"git {' '.join(args[:3])}: {said[-1]}")
    return done.stdout


def load_snapshots(root: Path, entries: Sequence[Entry], arm: str, keys: Sequence[tuple[str,
                   str]], progress: bool = True) -> tuple[list[Snapshot], list[tuple[Entry,
                                                                                   str]]]:
    """Every entry's snapshot of `arm`, with a progress bar; and the entries skipped, each
    with the reason (no raw data, no measured call in the arm)."""
    from tqdm import tqdm

    snapshots: list[Snapshot] = []
    skipped: list[tuple[Entry, str]] = []
    measured_by: dict[str, str] = {}  # raw data hash -> the revision that recorded it
    bar = tqdm(entries, desc="history", unit="rev", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    with Revisions(root) as revisions:
        for entry in bar:
            try:
                with revisions.at(entry.sha, entry.label) as revision:
                    read = _read(revision, measured_by)
            except CompareError as exc:
                raise HistoryError(str(exc)) from None
            if isinstance(read, str):
                skipped.append((entry, read))
                continue
            records, env = read
            side = Side(entry.label, entry.sha, arm, env, [r for r in records if r.arm == arm])
            values = per_run_values(side, keys)
            if not any(len(v) for v in values.values()):
                skipped.append((entry, f"no measured call in the {arm} arm"))
                continue
            snapshots.append(Snapshot(entry, history_facts(side), values, _threshold(env)))
    return snapshots, skipped


def _read(revision: Revision | None, measured_by: dict[str, str]
          ) -> tuple[list[CallRecord], dict[str, Any]] | str:
    """The revision's raw records and env.json, or why it is skipped."""
    if revision is None:
        return "not a DVC repository at this commit"
    if not revision.has(RAW_CALLS):
        return f"no raw data ({RAW_CALLS})"
    checksum = revision.checksum(RAW_CALLS)
    if checksum in measured_by:  # a commit that did not re-run the bench
        return f"the same raw data as {measured_by[checksum]}"
    if checksum:
        measured_by[checksum] = revision.rev
    return read_raw(revision)


def per_run_values(side: Side, keys: Sequence[tuple[str, str]]
                   ) -> dict[tuple[int, str, str], np.ndarray]:
    """The known values of each (level, stage, metric): at level 1 one per run, as
    `aggregate` computes them; at a level above 1 one per block (the median over its agents'
    tasks, docs/statistics.md, Under load). Records from before levels are level 1."""
    from ollabench.stats import records_frame
    from ollabench.stats.decisions import block_values
    from ollabench.stats.frames import at_level
    from ollabench.stats.grouping import measured_calls, split_stages, stage_values
    from ollabench.stats.grouping import per_run_values as runs_of

    calls = measured_calls(records_frame(side.records)) if side.records else None
    if calls is None or calls.empty:
        return {(1, *key): np.array([]) for key in keys}
    values = {}
    for level in sorted(int(c) for c in calls["concurrency"].unique()):
        mine = at_level(calls, level)
        stages = split_stages(runs_of(mine) if level == 1 else block_values(mine))
        values |= {(level, stage, metric): stage_values(stages, stage, metric)
                   .to_numpy(dtype=float) for stage, metric in keys}
    return values


def history_facts(side: Side) -> dict[str, Any]:
    """`compare`'s provenance facts plus the ollabench commit the bench ran from."""
    git = side.env.get("git") or {}
    commit = git.get("commit")
    if commit and git.get("dirty"):
        commit = f"{commit} (uncommitted changes)"
    return {**provenance_facts(side), "software.ollabench_commit": commit}


def _threshold(env: dict[str, Any]) -> float | None:
    value = ((env.get("config") or {}).get("run") or {}).get("practical_threshold_pct")
    return None if value is None else float(value)
