"""Where the pipeline keeps its files: the defaults of dvc.yaml's stage commands.

Paths are not parameters (they do not change what is measured), so they live here, not in
conf/. The CLI's defaults, `compare` (which reads them at any git revision) and the stages'
file names all come from this one place.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

PARAMS_YAML = Path("params.yaml")
CONF_DIR = Path("conf")
RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
METRICS_JSON = Path("reports/metrics.json")
REPORT_MD = Path("reports/report.md")
APPENDIX_FILE = "appendix.md"  # the report's full tables, written beside it
FIGURES_DIR = Path("reports/figures")
JOURNAL_ROOT = Path(".ollabench/journal")
# Overrides JOURNAL_ROOT for the bench stage: `tune` points the DVC experiment of a candidate
# at the journal it measured the candidate into, so the experiment resumes those calls.
JOURNAL_DIR_ENV = "OLLABENCH_JOURNAL_DIR"
JUDGE_DIR = Path("data/judge")
JUDGE_ROOT = Path(".ollabench/judge")  # the judge stage's resume journals
SWEEP_ROOT = Path(".ollabench/sweep")
TUNE_JOBS = Path(".ollabench/tune/jobs")  # `tune --workers`: <study>/ per cluster search
COMPARE_OUT = Path("reports/compare")
LEADERBOARD_OUT = Path("reports/leaderboard")
HISTORY_OUT = Path("reports/history")

# bench -> RAW_DIR
CALLS_FILE = "calls.jsonl"
# A columnar copy of calls.jsonl (every field but the output text and options) that reads in
# a fraction of the JSON parse; used only while it matches calls.jsonl byte for byte.
CALLS_TABLE_FILE = "calls.parquet"
ENV_FILE = "env.json"
JUDGE_SCORES_FILE = "scores.jsonl"  # in JUDGE_DIR: one line per judged call
JUDGE_INFO_FILE = "judge.json"  # in JUDGE_DIR: the judge's model, identity and counts

# aggregate -> PROCESSED_DIR
SUMMARY_FILE = "summary.csv"
COMPARISONS_FILE = "comparisons.csv"
QUALITY_FILE = "quality.json"
PER_RUN_FILE = "per_run.csv"
PER_RUN_WIDE_FILE = "per_run_wide.csv"
PRIMARY_FILE = "primary.csv"  # the primary comparisons' sequential decisions
LOAD_FILE = "load.csv"  # each arm at each load level (run.concurrency)
LOOKS_FILE = "looks.csv"  # every look of each primary comparison, up to its decision
# the primary comparisons' verdicts at every load level, one row per level, stage and metric
PRIMARY_LEVELS_FILE = "primary_levels.csv"
NOISE_FILE = "noise.csv"  # per primary comparison: this machine's noise and its structure

# compare -> COMPARE_OUT/<A>_vs_<B>, beside its COMPARISONS_FILE
COMPARISON_MD = "comparison.md"

# history -> HISTORY_OUT: one row per point, one per change point, the summary, the series
# as DVC plots read them (one column per series), one figure per series
HISTORY_FILE = "history.csv"
CHANGES_FILE = "changes.csv"
HISTORY_MD = "history.md"
HISTORY_PLOT_FILE = "history_plot.csv"
HISTORY_FIGURES = "figures"


def in_repo(path: Path) -> PurePosixPath:
    """A pipeline path as git and DVC name it inside a revision (always with '/')."""
    return PurePosixPath(path.as_posix())
