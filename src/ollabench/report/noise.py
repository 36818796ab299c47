"""The report's section "Noise on this machine", from noise.csv of the aggregate: per primary
comparison, the noise of one run, what pairing within a run removes, the noise's structure
and the runs per arm a decision at the threshold needs (docs/statistics.md, "The noise of
this machine"). Its own module so the report's first screen can change without it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mdutils.mdutils import MdUtils

from ollabench.paths import NOISE_FILE
from ollabench.report.format import fmt_int, fmt_num, fmt_pct, fmt_plain_pct
from ollabench.report.markdown import table
from ollabench.report.words import metric_label


def read_noise(processed_dir: Path) -> pd.DataFrame:
    """noise.csv, or an empty table for an aggregate made before it existed."""
    path = processed_dir / NOISE_FILE
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def noise_section(md: MdUtils, noise: pd.DataFrame, threshold_pct: float) -> None:
    """One row per primary comparison and a sentence on the noisiest."""
    if noise.empty:
        return
    md.new_header(2, "Noise on this machine", add_table_of_contents="n")
    rows = noise.to_dict("records")
    table(md, ["Stage", "Metric", "Run noise", "After pairing", "Pairing removes",
               "Drift over the runs", "Bimodality", "Lag-1 autocorrelation",
               "First call of a run", f"Runs per arm for +-{fmt_plain_pct(threshold_pct)}"],
          [[r["stage"], metric_label(r["metric"]), fmt_plain_pct(r["run_noise_pct"]),
            fmt_plain_pct(r["paired_noise_pct"]), fmt_plain_pct(r["pairing_removes_pct"]),
            fmt_pct(r["drift_pct"]), fmt_num(r["bimodality"]) + (
                " (two levels)" if r["two_levels"] else ""),
            fmt_num(r["lag1_autocorr"]), fmt_pct(r["position_pct"]),
            fmt_int(r["runs_needed"])] for r in rows])
    worst = max(rows, key=lambda r: r["runs_needed"] if r["runs_needed"] == r["runs_needed"]
                else -1.0)
    md.new_paragraph(
        "Run noise: the standard deviation of one run's value (log scale, as a percentage); "
        "after pairing: what is left in the difference of the two arms' calls of the same "
        "run, per arm; first call of a run: how much slower the arm that runs first is. "
        f"The noisiest, {worst['stage']} {metric_label(worst['metric'])}, needs about "
        f"{fmt_int(worst['runs_needed'])} runs per arm to show equivalence within the "
        "threshold at this noise (one look; the sequential rule needs a little more). "
        "`ollabench doctor` measures the noise of other settings on this machine.")
