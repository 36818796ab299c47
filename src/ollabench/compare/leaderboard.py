"""Every DVC experiment of the repository, ranked by the treatment median of one metric, or
by the treatment's capacity under load.

Each row comes from the files its experiment committed (comparisons.csv, per_run.csv,
metrics.json's quality verdict, params.yaml); a file that cannot be read becomes a note on its
row, not an error. The ranking is one agent at a time (level 1, as `aggregate` compares the
arms); an experiment that ran several levels (run.concurrency) also gets each arm's capacity
at its run.slo and one row per level (load.csv, primary_levels.csv), never averaged across
levels. `--by capacity` ranks by that capacity instead, ties broken by the tasks per minute
served at it, as tune's capacity objective does (docs/experiments.md).
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml

from ollabench.compare.revisions import Revision
from ollabench.config.overrides import changed_keys, override_value
from ollabench.errors import CompareError
from ollabench.files import write_all_atomic
from ollabench.paths import (
    COMPARISONS_FILE,
    LOAD_FILE,
    METRICS_JSON,
    PARAMS_YAML,
    PER_RUN_FILE,
    PRIMARY_LEVELS_FILE,
    PROCESSED_DIR,
    in_repo,
)
from ollabench.report.format import Table, fmt_num, fmt_p, fmt_pct
from ollabench.report.load import capacity, capacity_rate
from ollabench.stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HEADLINE_METRICS,
    METRIC_BY_NAME,
    QUALITY_KEY,
    bootstrap_medians,
)
from ollabench.stats.metrics import SYSTEM_STAGE

T = TypeVar("T")
TERMINAL_COLUMNS = 120  # the width the terminal listing keeps to (README, a test)
DETAIL_INDENT = "   "  # the verdict and changes line under an experiment's figures

LEADERBOARD_COLUMNS = ("rank", "experiment", "rev", "baseline", "changes", "runs",
                       "treatment_median", "ci_low", "ci_high", "control_median",
                       "median_diff_pct", "p_holm", "verdict", "quality", "levels",
                       "capacity", "capacity_tasks_per_min", "control_capacity", "note")
# One row per experiment with levels and level: both arms' load.csv figures, and the verdicts
# at that level (primary_levels.csv) of the ranked metric and of the tasks served per minute.
LOAD_FIGURES = ("tasks_per_min", "output_tok_s", "e2e_ms_p95", "goodput_pct")
LEVEL_COLUMNS = ("experiment", "concurrency",
                 *(f"{arm}_{figure}" for figure in LOAD_FIGURES
                   for arm in ("treatment", "control")),
                 "verdict", "tasks_verdict")
# The served-tasks comparison a level's verdict is read from, the SLO's when the run set one
TASKS_METRICS = ("slo_tasks_per_min", "tasks_per_min")
RANKINGS = ("median", "capacity")  # leaderboard --by


@dataclass(frozen=True)
class Experiment:
    name: str
    sha: str
    baseline: str


def list_experiments(root: Path) -> list[Experiment]:
    """Every DVC experiment of the repository, on any baseline commit."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = repo.experiments.ls(all_commits=True)
    return [Experiment(name, sha, baseline)
            for baseline, experiments in found.items() for name, sha in experiments if sha]


def leaderboard(root: Path, metric: str, stage: str,
                by: str = "median") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Experiments ranked best first (rank_experiments), and the per-level rows of those
    with levels (LEVEL_COLUMNS)."""
    if metric not in HEADLINE_METRICS:
        raise CompareError(f"--metric: must be one of {', '.join(HEADLINE_METRICS)} "
                           f"(the headline metrics), got {metric!r}")
    if by not in RANKINGS:
        raise CompareError(f"--by: must be one of {', '.join(RANKINGS)}, got {by!r}")
    experiments = list_experiments(root)
    if not experiments:
        raise CompareError("this repository has no DVC experiments: run some with `dvc exp run`,"
                           " or fetch shared ones with `dvc exp pull -A origin`")
    baselines: dict[str, dict[str, Any]] = {}
    levels: list[dict[str, Any]] = []
    rows = [_leaderboard_row(root, exp, metric, stage, baselines, levels)
            for exp in experiments]
    frame = rank_experiments(
        pd.DataFrame(rows, columns=[c for c in LEADERBOARD_COLUMNS if c != "rank"]), metric, by)
    order = {name: i for i, name in enumerate(frame["experiment"])}
    load = pd.DataFrame(levels, columns=list(LEVEL_COLUMNS))
    load = load.sort_values(["experiment", "concurrency"], key=lambda c: c.map(order)
                            if c.name == "experiment" else c, ignore_index=True)
    return frame, load


def rank_experiments(frame: pd.DataFrame, metric: str, by: str) -> pd.DataFrame:
    """Best first, numbered. `median`: the level-1 treatment median of the metric. `capacity`:
    the treatment's capacity at its run.slo, then the tasks/min served at that level, then the
    median; experiments without levels (no capacity) last. Refused when no experiment ran
    several levels: a capacity ranking of none would only repeat the median's."""
    lower = METRIC_BY_NAME[metric].direction == "lower"
    keys, ascending = ["treatment_median", "experiment"], [lower, True]
    if by == "capacity":
        if frame["capacity"].isna().all():
            raise CompareError("--by capacity: no experiment ran several levels with a capacity "
                               "at its run.slo (run.concurrency, e.g. -S 'run.concurrency=[1,2,4]'"
                               "); rank by the median instead (--by median)")
        keys, ascending = ["capacity", "capacity_tasks_per_min", *keys], [False, False,
                                                                           *ascending]
    frame = frame.sort_values(keys, ascending=ascending, na_position="last", kind="stable",
                              ignore_index=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def _leaderboard_row(root: Path, exp: Experiment, metric: str, stage: str,
                     baselines: dict[str, dict[str, Any]],
                     levels: list[dict[str, Any]]) -> dict[str, Any]:
    revision = Revision(root, exp.sha)
    if exp.baseline not in baselines:
        baselines[exp.baseline] = _params(Revision(root, exp.baseline))
    notes: list[str] = []
    metrics = _optional(lambda: json.loads(revision.read_text(str(in_repo(METRICS_JSON)))),
                        {}, notes)
    published = _optional(lambda: _comparison(revision, metric, stage), {}, notes)
    values = _optional(lambda: _per_run_values(revision, metric, stage), None, notes)
    if values is not None and not len(values):
        notes.append(f"no per-run {stage} values (a stage of another workload?)")
    low, high = median_ci(values) if values is not None else (math.nan, math.nan)
    load = _optional(lambda: _load_table(revision), None, [])  # absent before levels
    level, tasks_per_min = (None, None) if load is None else capacity_rate(load, "treatment")
    levels += level_rows(exp.name, load, _optional(lambda: _processed_csv(
        revision, PRIMARY_LEVELS_FILE), None, []), metric, stage)
    return {
        "experiment": exp.name, "rev": exp.sha[:7], "baseline": exp.baseline[:7],
        "changes": param_changes(baselines[exp.baseline], _params(revision)),
        "runs": None if values is None else len(values),
        "treatment_median": _number(published.get("treatment_median")),
        "ci_low": low, "ci_high": high,
        "control_median": _number(published.get("control_median")),
        "median_diff_pct": _number(published.get("median_diff_pct")),
        "p_holm": _number(published.get("p_holm")),
        "verdict": published.get("verdict"),
        "quality": (metrics.get(QUALITY_KEY) or {}).get("verdict", "not recorded"),
        "levels": "1" if load is None else ",".join(str(c) for c in
                                                    sorted(load["concurrency"].unique())),
        "capacity": level, "capacity_tasks_per_min": tasks_per_min,
        "control_capacity": None if load is None else capacity(load, "control"),
        "note": "; ".join(notes),
    }


def _load_table(revision: Revision) -> pd.DataFrame:
    return _processed_csv(revision, LOAD_FILE)


def level_rows(experiment: str, load: pd.DataFrame | None, verdicts: pd.DataFrame | None,
               metric: str, stage: str) -> list[dict[str, Any]]:
    """One row per level of an experiment that ran several: each arm's load.csv figures and
    the verdicts at that level (primary_levels.csv, when the experiment has it)."""
    if load is None or not (load["concurrency"] > 1).any():
        return []
    rows = []
    for level in sorted(int(c) for c in load["concurrency"].unique()):
        at = load.loc[load["concurrency"] == level].set_index("arm")
        row: dict[str, Any] = {"experiment": experiment, "concurrency": level}
        for figure in LOAD_FIGURES:
            for arm in ("treatment", "control"):
                row[f"{arm}_{figure}"] = at.loc[arm, figure] if arm in at.index else None
        row["verdict"] = _level_verdict(verdicts, level, [(stage, metric)])
        row["tasks_verdict"] = _level_verdict(verdicts, level,
                                              [(SYSTEM_STAGE, m) for m in TASKS_METRICS])
        rows.append(row)
    return rows


def _level_verdict(verdicts: pd.DataFrame | None, level: int,
                   keys: list[tuple[str, str]]) -> str | None:
    """The first of `keys` (stage, metric) that primary_levels.csv decided at this level."""
    if verdicts is None:
        return None
    for stage, metric in keys:
        rows = verdicts.loc[(verdicts["concurrency"] == level) & (verdicts["stage"] == stage)
                            & (verdicts["metric"] == metric)]
        if not rows.empty:
            return str(rows.iloc[0]["verdict"])
    return None


def _optional(read: Callable[[], T], default: T, notes: list[str]) -> T:
    """A leaderboard row shows what it can: a file that cannot be read becomes a note."""
    try:
        return read()
    except CompareError as exc:
        notes.append(str(exc))
        return default


def _params(revision: Revision) -> dict[str, Any]:
    return _optional(lambda: yaml.safe_load(revision.read_text(str(in_repo(PARAMS_YAML))))
                     or {}, {}, [])


def _processed_csv(revision: Revision, name: str) -> pd.DataFrame:
    """One of the aggregate's CSV files as the experiment committed it."""
    return pd.read_csv(io.StringIO(revision.read_text(str(in_repo(PROCESSED_DIR / name)))))


def _comparison(revision: Revision, metric: str, stage: str) -> dict[str, Any]:
    """The experiment's own comparisons.csv row for metric and stage (empty when absent)."""
    table = _processed_csv(revision, COMPARISONS_FILE)
    rows = table.loc[(table["stage"] == stage) & (table["metric"] == metric)]
    return {} if rows.empty else rows.iloc[0].to_dict()


def _per_run_values(revision: Revision, metric: str, stage: str) -> np.ndarray:
    runs = _processed_csv(revision, PER_RUN_FILE)
    chosen = runs.loc[(runs["arm"] == "treatment") & (runs["stage"] == stage), metric]
    return chosen.dropna().to_numpy(dtype=float)


def median_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the median, as aggregate computes its CIs."""
    if len(values) == 0:
        return math.nan, math.nan
    medians = bootstrap_medians(values, BOOTSTRAP_RESAMPLES,
                                np.random.default_rng(BOOTSTRAP_SEED))
    low, high = np.percentile(medians, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


def param_changes(base: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The parameters an experiment changed against its baseline, as Hydra overrides."""
    changed, removed = changed_keys(base, params)
    return " ".join([f"{key}={override_value(value)}" for key, value in changed.items()]
                    + [f"~{key}" for key in removed]) or "(none)"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def leaderboard_table(frame: pd.DataFrame) -> Table:
    """The ranking as a table, for the terminal (.text()) and the Markdown file."""
    return Table(
        ["#", "experiment", "rev", "changes", "runs", "treatment median", "95% CI",
         "control median", "difference", "p (Holm)", "verdict", "quality"],
        [[r.rank, r.experiment, r.rev, r.changes, r.runs, r.treatment_median,
          f"{fmt_num(r.ci_low)} to {fmt_num(r.ci_high)}", r.control_median,
          fmt_pct(r.median_diff_pct), fmt_p(r.p_holm), r.verdict, r.quality]
         for r in frame.itertuples()])


def leaderboard_text(frame: pd.DataFrame, load: pd.DataFrame | None = None,
                     width: int = TERMINAL_COLUMNS) -> str:
    """The ranking for a terminal `width` columns wide: each experiment's figures on one
    line, then its verdict, quality, revision and changes wrapped beneath it. `dvc exp show`
    cannot do this: every parameter, dependency and metric is a column of its own, over 60
    of them, each squeezed to a letter. The Markdown file has every column side by side."""
    lines = Table(
        ["#", "experiment", "runs", "treatment median", "95% CI", "control median",
         "difference", "p (Holm)"],
        [[r.rank, r.experiment, r.runs, r.treatment_median,
          f"{fmt_num(r.ci_low)} to {fmt_num(r.ci_high)}", r.control_median,
          fmt_pct(r.median_diff_pct), fmt_p(r.p_holm)] for r in frame.itertuples()],
    ).text().splitlines()
    out = lines[:1]
    for line, r in zip(lines[1:], frame.itertuples(), strict=True):
        out.append(line)
        out += textwrap.wrap(f"{r.verdict}; quality: {r.quality}; rev {r.rev}; changes: "
                             f"{r.changes}", width, initial_indent=DETAIL_INDENT,
                             subsequent_indent=DETAIL_INDENT + "  ", break_on_hyphens=False)
        if load is not None and (mine := load.loc[load["experiment"] == r.experiment]).size:
            out += textwrap.wrap(_under_load(r, mine), width, initial_indent=DETAIL_INDENT,
                                 subsequent_indent=DETAIL_INDENT + "  ",
                                 break_on_hyphens=False)
    return "\n".join(out) + "\n"


def _under_load(r: Any, levels: pd.DataFrame) -> str:
    """One experiment's levels in words, treatment against control: capacity, then tasks
    per minute at each level with the verdict on the tasks served at that level."""
    parts = [f"{_agents(row.concurrency)}: {fmt_num(row.treatment_tasks_per_min)} vs "
             f"{fmt_num(row.control_tasks_per_min)} tasks/min"
             + (f" ({row.tasks_verdict})" if isinstance(row.tasks_verdict, str) else "")
             for row in levels.itertuples()]
    return (f"under load, treatment vs control: capacity {_capacity(r.capacity)} vs "
            f"{_capacity(r.control_capacity)}; " + "; ".join(parts))


def _capacity(level: Any) -> str:
    return "none" if level is None or pd.isna(level) else _agents(level)


def _agents(level: Any) -> str:
    return f"{int(level)} agent{'' if int(level) == 1 else 's'}"


def load_markdown_table(frame: pd.DataFrame, load: pd.DataFrame) -> Table:
    """The experiments with levels: capacity of each arm, then one row per level."""
    capacities = frame.set_index("experiment")
    return Table(
        ["experiment", "agents", "capacity", "tasks/min", "output tok/s", "task p95 ms",
         "goodput %", "verdict", "tasks/min verdict"],
        [[r.experiment, r.concurrency,
          f"{_capacity(capacities.loc[r.experiment, 'capacity'])} / "
          f"{_capacity(capacities.loc[r.experiment, 'control_capacity'])}",
          *(f"{fmt_num(getattr(r, f'treatment_{f}'))} / {fmt_num(getattr(r, f'control_{f}'))}"
            for f in LOAD_FIGURES), r.verdict, r.tasks_verdict]
         for r in load.itertuples()])


def write_leaderboard(frame: pd.DataFrame, metric: str, stage: str, out_dir: Path,
                      load: pd.DataFrame | None = None, by: str = "median") -> Path:
    """<stage>_<metric>.csv and .md in out_dir, together, and <stage>_<metric>_load.csv when
    an experiment ran several levels (each name with _by_capacity when ranked so); returns
    the Markdown path."""
    stem = out_dir / f"{stage}_{metric}{'_by_capacity' if by == 'capacity' else ''}"
    direction = METRIC_BY_NAME[metric].direction
    notes = [f"- {r.experiment}: {r.note}" for r in frame.itertuples() if r.note]
    ranked_by = (f"the median of its treatment arm ({direction} is better)" if by == "median"
                 else "its treatment arm's capacity (the most agents at once whose tasks met "
                      "its run.slo), then the tasks/min served at that level, then the median "
                      f"of its treatment arm ({direction} is better); experiments without "
                      "levels last")
    blocks = [
        f"# Leaderboard: {metric}, {stage} stage"
        + (", by capacity" if by == "capacity" else ""),
        f"Every DVC experiment of the repository, ranked by {ranked_by}. CI: 95% percentile "
        f"bootstrap of the treatment median over runs (from "
        f"{in_repo(PROCESSED_DIR / PER_RUN_FILE)}). Difference, p and verdict: against "
        f"the experiment's own control arm, as `aggregate` published them "
        f"({in_repo(PROCESSED_DIR / COMPARISONS_FILE)}). Quality: the quality gate's verdict "
        f"against that control ({in_repo(METRICS_JSON)}; docs/statistics.md): an experiment of "
        f"`lower` quality is fast by spoiling its output, not a better setting.",
        leaderboard_table(frame).markdown(),
    ]
    files = {stem.with_suffix(".csv"): frame.to_csv(index=False)}
    if load is not None and not load.empty:
        blocks += [
            "## Under load",
            "The experiments that ran several levels (run.concurrency): each level on its own, "
            "never averaged across levels; treatment / control. Capacity: the largest level "
            "whose tasks meet the experiment's own run.slo; figures from its "
            f"{in_repo(PROCESSED_DIR / LOAD_FILE)}, verdicts at that level (of {stage}/{metric} "
            f"and of the tasks served per minute) from its "
            f"{in_repo(PROCESSED_DIR / PRIMARY_LEVELS_FILE)}, empty where it has none.",
            load_markdown_table(frame, load).markdown()]
        files[out_dir / f"{stem.name}_load.csv"] = load.to_csv(index=False)
    blocks += ["## Notes", "\n".join(notes)] if notes else []
    markdown = stem.with_suffix(".md")
    files[markdown] = "\n\n".join(b.strip("\n") for b in blocks) + "\n"
    write_all_atomic(files)
    return markdown
