"""The aggregate stage: raw calls in, every processed file out, all or none.

Reads raw_dir's calls (frames), groups them into per-run values (grouping), and writes
summary.csv, comparisons.csv (tables), per_run.csv, per_run_wide.csv, quality.json
(quality; with the tool agent's tasks, stats/tasks.py) and the headline metrics.json, staged
and moved into place together.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

from ollabench.errors import AggregateError
from ollabench.files import Staging
from ollabench.paths import (
    CALLS_FILE,
    COMPARISONS_FILE,
    ENV_FILE,
    LOAD_FILE,
    LOOKS_FILE,
    NOISE_FILE,
    PER_RUN_FILE,
    PER_RUN_WIDE_FILE,
    PRIMARY_FILE,
    PRIMARY_LEVELS_FILE,
    QUALITY_FILE,
    SUMMARY_FILE,
)
from ollabench.records.schema import ARMS
from ollabench.stats.covariates import with_probe
from ollabench.stats.decisions import (
    FIXED,
    control_first,
    level_decisions,
    levels_table,
    looks_table,
    overrule,
    primary_decisions,
    primary_series,
    primary_table,
    run_settings,
)
from ollabench.stats.frames import at_level, read_calls
from ollabench.stats.grouping import (
    StageFrames,
    is_flagged,
    measured_calls,
    per_run_values,
    split_stages,
)
from ollabench.stats.judged import with_judge_scores
from ollabench.stats.load import load_table, parallel_mismatch
from ollabench.stats.metrics import CONTROL, PER_RUN_COLUMNS, PLOTTED_METRICS, TREATMENT
from ollabench.stats.noise import noise_table
from ollabench.stats.quality import data_quality
from ollabench.stats.tables import comparisons_with_outliers, headline, summary_table
from ollabench.stats.tasks import task_summary, task_table


def run_aggregate(raw_dir: Path, out_dir: Path, metrics_path: Path,
                  threshold_pct: float, judge_dir: Path | None = None) -> Path:
    """Aggregate raw_dir's calls into summary.csv, comparisons.csv, per_run.csv,
    per_run_wide.csv and quality.json in out_dir, and the headline in metrics_path.
    Everything is checked, computed and staged before the first output is moved into place.
    With judge_dir, the judge stage's scores join the calls (stats/judged.py).
    The long CSVs, the summary and the data-quality facts run on worker threads beside the
    comparisons (numpy and Arrow release the GIL). Returns the file the numbers were read
    from: calls.parquet, or calls.jsonl when no copy matched it."""
    every_level, source = read_calls(raw_dir)
    calls = at_level(every_level, 1)  # the arms' comparisons are made one agent at a time
    calls, judge = with_judge_scores(calls, judge_dir)
    env_path = raw_dir / ENV_FILE
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.is_file() else {}
    with ThreadPoolExecutor(max_workers=2) as pool, Staging() as staging:
        stopped = _write_decisions(calls, every_level, env, out_dir, threshold_pct, staging)
        stopped |= _write_load(every_level, env, out_dir, staging)
        _aggregate(calls, raw_dir / CALLS_FILE, out_dir, metrics_path, threshold_pct, pool,
                   staging, judge, stopped)
        staging.commit()
    return source


def _aggregate(calls: pd.DataFrame, calls_path: Path, out_dir: Path, metrics_path: Path,
               threshold_pct: float, pool: Executor, staging: Staging,
               judge: dict[str, Any] | None = None,
               stopped: dict[str, Any] | None = None) -> None:
    """Stage every output file; returns once all of them are written."""
    by_arm = _by_arm(calls)
    if unknown := sorted(set(by_arm) - set(ARMS)):
        raise AggregateError(f"{calls_path}: unknown arm(s) {unknown}; expected {list(ARMS)}")
    if len(by_arm) < len(ARMS):
        raise AggregateError(f"{calls_path}: only one arm ({', '.join(by_arm)}); "
                             "a comparison needs both control and treatment")
    runs: dict[str, StageFrames] = {}
    measured: dict[str, pd.DataFrame] = {}
    per_run_parts = []
    for arm in ARMS:
        measured[arm] = measured_calls(by_arm[arm])
        if measured[arm].empty:
            mine = by_arm[arm]
            raise AggregateError(
                f"{calls_path}: no measured calls in arm {arm} ({len(mine)} calls: "
                f"{int((mine['phase'] != 'measured').sum())} warm-ups, "
                f"{int(mine['error'].notna().sum())} failed, "
                f"{int(is_flagged(mine, 'reloaded').sum())} reloaded)")
        values = per_run_values(measured[arm])
        runs[arm] = split_stages(values)
        per_run_parts.append(values.assign(arm=arm))
    per_run = pd.concat(per_run_parts, ignore_index=True).reindex(columns=list(PER_RUN_COLUMNS))
    background = [
        pool.submit(_write_csv, per_run, staging.path(out_dir / PER_RUN_FILE)),
        pool.submit(lambda path: _write_csv(per_run_wide(per_run), path),
                    staging.path(out_dir / PER_RUN_WIDE_FILE)),
        pool.submit(lambda path: path.write_text(summary_table(runs, by_arm).to_csv(index=False),
                                                 encoding="utf-8"),
                    staging.path(out_dir / SUMMARY_FILE)),
    ]
    quality = pool.submit(data_quality, by_arm, measured, runs, threshold_pct)
    try:
        comparisons, outliers = comparisons_with_outliers(runs[CONTROL], runs[TREATMENT],
                                                          threshold_pct)
        comparisons = overrule(comparisons, (stopped or {}).get("primary", {}))
        staging.write(out_dir / COMPARISONS_FILE, comparisons.to_csv(index=False))
        staging.write(out_dir / QUALITY_FILE,
                      json_text(quality.result() | {"outliers": outliers, "judge": judge}
                                | _tasks(measured), indent=None))
        staging.write(metrics_path, json_text(headline(comparisons) | (stopped or {})))
    finally:  # never leave a worker writing into the staging area
        for done in (*background, quality):
            done.result()


def _tasks(measured: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """quality.json's `tasks` entry, per arm, when the workload has tasks (the tool agent)."""
    tables = {arm: task_table(measured[arm]) for arm in ARMS}
    return {"tasks": {arm: task_summary(table) for arm, table in tables.items()
                      if table is not None}} if any(t is not None for t in tables.values()) \
        else {}


def _write_decisions(calls: pd.DataFrame, every_level: pd.DataFrame, env: dict[str, Any],
                     out_dir: Path, threshold_pct: float, staging: Staging) -> dict[str, Any]:
    """primary.csv and looks.csv: the sequential decisions of the primary comparisons (calls:
    level 1's), and noise.csv, their noise; primary_levels.csv: the decisions at every level.
    Returns their metrics.json entries: runs per arm, why the bench stopped, each primary
    comparison's change and verdict, and with loaded levels `primary_levels`."""
    run, final = run_settings(env, calls, threshold_pct)
    series = primary_series(calls, run["primary"])
    decisions = primary_decisions(calls, run, final, series)
    noise = noise_table(series, partial(control_first, calls), threshold_pct)
    staging.write(out_dir / NOISE_FILE, with_probe(noise, series, calls).to_csv(index=False))
    table = primary_table(decisions)
    staging.write(out_dir / PRIMARY_FILE, table.to_csv(index=False))
    staging.write(out_dir / LOOKS_FILE, looks_table(decisions).to_csv(index=False))
    loaded = level_decisions(every_level, run, final)
    staging.write(out_dir / PRIMARY_LEVELS_FILE,
                  levels_table({1: decisions} | loaded).to_csv(index=False))
    stopping = env.get("stopping") or {}
    return {"runs": stopping.get("runs", run["runs"]),
            "stop_reason": stopping.get("reason", FIXED),
            "primary": _primary_entries(table),
            **({"primary_levels": {str(level): _primary_entries(primary_table(found))
                                   for level, found in loaded.items()}} if loaded else {})}


def _primary_entries(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """metrics.json's entry per primary comparison, keyed stage/metric: change and verdict."""
    return {f"{r.stage}/{r.metric}": {"change_pct": float(f"{r.change_pct:.4g}"),
                                      "verdict": r.verdict}
            for r in table.itertuples(index=False)}


def _write_load(calls: pd.DataFrame, env: dict[str, Any], out_dir: Path,
                staging: Staging) -> dict[str, Any]:
    """load.csv (stats/load.py); metrics.json's note when the stated server_parallel and
    the overlap the records show disagree."""
    config = env.get("config") or {}
    run = config.get("run") or {}
    table = load_table(calls, run.get("slo"), (config.get("model") or {}).get("server_parallel"),
                       run.get("arrivals"))
    staging.write(out_dir / LOAD_FILE, table.to_csv(index=False))
    note = parallel_mismatch(table)
    return {"server_parallel_note": note} if note else {}


def _by_arm(calls: pd.DataFrame) -> dict[str, pd.DataFrame]:
    arms = calls["arm"]
    return {str(arm): calls.loc[arms == arm] for arm in arms.unique() if not pd.isna(arm)}


def per_run_wide(per_run: pd.DataFrame) -> pd.DataFrame:
    """Columns named `<stage>_<arm>_<metric>`, e.g. report_treatment_ttft_ms."""
    wide = (per_run.set_index(["run", "stage", "arm"])[list(PLOTTED_METRICS)]
            .unstack(["stage", "arm"]).sort_index(axis=1))
    wide.columns = [f"{stage}_{arm}_{metric}" for metric, stage, arm in wide.columns]
    return wide.reset_index()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer, streamed to the file: it formats floats in C++ without
    the GIL (pandas formats each float in Python). Floats keep their shortest exact form."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write((",".join(frame.columns) + "\n").encode())
        pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), sink, options)


def json_text(data: Any, indent: int | None = 2) -> str:
    """JSON with NaN as null. indent=None keeps Python's fast C encoder for long lists."""
    return json.dumps(_jsonable(data), indent=indent, sort_keys=True, allow_nan=False) + "\n"


def _jsonable(data: Any) -> Any:
    """Plain JSON types: NaN and pandas' missing values become null, numpy scalars Python."""
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_jsonable(v) for v in data]
    if isinstance(data, np.generic):
        data = data.item()
    if data is pd.NA or (isinstance(data, float) and not math.isfinite(data)):
        return None
    return data
