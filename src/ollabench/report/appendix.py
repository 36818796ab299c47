"""The report's appendix (reports/appendix.md): the full tables behind the summary.

The summary (report.md) answers the question and links here; this file holds every metric
per stage and arm, every descriptive comparison with each estimator in its own column, the
run-by-run values and the system. Metrics that did not apply (applicable.py) are named once
at the top instead of filling rows.
"""

from __future__ import annotations

import json

import pandas as pd
from mdutils.mdutils import MdUtils

from ollabench.paths import PER_RUN_FILE
from ollabench.records.schema import ARMS
from ollabench.redaction import scrub
from ollabench.report.applicable import applicable, not_applicable_line
from ollabench.report.format import (
    fmt_effect,
    fmt_int,
    fmt_mde,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_plain_pct,
    fmt_value,
    md_escape,
)
from ollabench.report.inputs import Inputs
from ollabench.report.markdown import table, tidy
from ollabench.report.words import NOT_RECORDED, metric_label
from ollabench.stats import METRIC_BY_NAME

MAX_RUNS_LISTED = 100  # runs per arm in the run-by-run tables; per_run.csv has them all


def render_appendix(inputs: Inputs, figures: dict[str, str], report_link: str) -> str:
    """The appendix's Markdown; figures maps a stage (or \"per_run\") to its image link."""
    md = MdUtils(file_name="appendix")
    model = (inputs.config.get("model") or {}).get("name", "unknown model")
    md.new_header(1, f"ollabench report, appendix: {model}", add_table_of_contents="n")
    md.new_paragraph(f"The full tables behind [the report]({report_link}), whose summary "
                     "gives the answer.")
    if inputs.not_applicable:
        md.new_paragraph(not_applicable_line(inputs.not_applicable))
    _aggregate_table(md, inputs, figures)
    _statistical_analysis(md, inputs)
    _run_tables(md, inputs, figures.get("per_run"))
    _system(md, inputs)
    return tidy(md.get_md_text())


def _aggregate_table(md: MdUtils, inputs: Inputs, figures: dict[str, str]) -> None:
    md.new_header(2, "Aggregate results", add_table_of_contents="n")
    md.new_paragraph("One value per run, arm and stage; `workflow` is a whole run (the sum of "
                     "its stage times, tokens over eval time for rates). The 95% CI is that of "
                     "the mean (t distribution).")
    header = ["Stage", "Metric", "Arm", "n", "Mean", "Median", "SD", "CV", "95% CI of mean",
              "p5", "p95", "Min", "Max"]
    rows = [[r["stage"], f"{metric_label(r['metric'])} ({METRIC_BY_NAME[r['metric']].unit})",
             r["arm"], fmt_int(r["n"]), fmt_num(r["mean"]), fmt_num(r["median"]),
             fmt_num(r["sd"]), fmt_plain_pct(r["cv_pct"]),
             f"{fmt_num(r['ci_low'])} to {fmt_num(r['ci_high'])}", fmt_num(r["p5"]),
             fmt_num(r["p95"]), fmt_num(r["min"]), fmt_num(r["max"])]
            for r in stage_metric_sorted(applicable(inputs.summary, inputs.not_applicable),
                                         inputs.stages).to_dict("records")]
    table(md, header, rows)
    for stage in inputs.stages:
        if stage in figures:
            md.new_paragraph(md.new_inline_image(f"{stage}: TTFT and eval rate by arm",
                                                 figures[stage]))


def stage_metric_sorted(frame: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    order = {"stage": stages, "metric": list(METRIC_BY_NAME), "arm": list(ARMS)}
    keys = [k for k in order if k in frame]
    return frame.sort_values(keys, key=lambda col: col.map(
        {v: i for i, v in enumerate(order[col.name])}), kind="stable")


def _statistical_analysis(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Statistical analysis", add_table_of_contents="n")
    md.new_paragraph("Descriptive comparisons (secondary: Holm-adjusted among themselves, "
                     "apart from the primary comparisons of the report's summary). "
                     "Treatment against control, per stage and metric. Differences are signed "
                     "as arithmetic: a positive TTFT difference is slower, a positive eval-rate "
                     "difference is faster; `Better` says which direction is good.")
    header = ["Stage", "Metric", "Better", "n (C/T)", "Control median", "Treatment median",
              "Median diff", "95% CI of median diff", "Control mean", "Treatment mean",
              "Mean diff", "p Welch (log)", "p Mann-Whitney", "p paired", "p Holm",
              "Hedges g", "Cliff's delta", "MDE", "Verdict"]
    rows = [[r["stage"], metric_label(r["metric"]), r["better"],
             f"{fmt_int(r['n_control'])}/{fmt_int(r['n_treatment'])}",
             fmt_value(r["control_median"], r["metric"]),
             fmt_value(r["treatment_median"], r["metric"]), fmt_pct(r["median_diff_pct"]),
             f"{fmt_pct(r['ci_low_pct'])} to {fmt_pct(r['ci_high_pct'])}",
             fmt_value(r["control_mean"], r["metric"]),
             fmt_value(r["treatment_mean"], r["metric"]), fmt_pct(r["mean_diff_pct"]),
             fmt_p(r["p_welch"]), fmt_p(r["p_mannwhitney"]), fmt_p(r["p_paired"]),
             fmt_p(r["p_holm"]), fmt_effect(r["hedges_g"]), fmt_effect(r["cliffs_delta"]),
             fmt_mde(r["mde_pct"]), r["verdict"]]
            for r in applicable(inputs.comparisons, inputs.not_applicable).to_dict("records")]
    table(md, header, rows)


def _run_tables(md: MdUtils, inputs: Inputs, figure: str | None) -> None:
    md.new_header(2, "Run-by-run results", add_table_of_contents="n")
    if figure:
        md.new_paragraph(md.new_inline_image("Per-run TTFT and eval rate of both arms", figure))
    for arm in ARMS:
        md.new_header(3, f"{arm.capitalize()} (`{inputs.profiles[arm]}`)",
                      add_table_of_contents="n")
        mine = stage_metric_sorted(inputs.per_run.loc[inputs.per_run["arm"] == arm],
                                    inputs.stages)
        mine = mine.sort_values("run", kind="stable")
        runs = sorted(mine["run"].unique())
        shown = mine.loc[mine["run"].isin(runs[:MAX_RUNS_LISTED])]
        table(md, ["Run", "Stage", "TTFT (ms)", "Eval rate (tok/s)", "Output tokens",
                    "Duration (ms)"],
               [[fmt_int(r["run"]), r["stage"], fmt_num(r["ttft_ms"]), fmt_num(r["eval_tok_s"]),
                 fmt_num(r["output_tokens"]), fmt_num(r["e2e_ms"])]
                for r in shown.to_dict("records")])
        if len(runs) > MAX_RUNS_LISTED:
            md.new_paragraph(f"{len(runs) - MAX_RUNS_LISTED} more runs in data/processed/"
                             f"{PER_RUN_FILE}.")


def _system(md: MdUtils, inputs: Inputs) -> None:
    env = inputs.env
    md.new_header(2, "System information", add_table_of_contents="n")
    if not env:
        md.new_paragraph("Not recorded (no env.json).")
        return
    git = env.get("git") or {}
    dirty = {True: " (with local changes)", False: ""}.get(git.get("dirty"), "")
    items = [f"{key}: {value}" for key, value in (env.get("host") or {}).items()]
    items += [f"Python: {env.get('python', NOT_RECORDED)}",
              f"Git commit: {git.get('commit') or NOT_RECORDED}{dirty}",
              f"Started: {env.get('started_at', NOT_RECORDED)}; finished: "
              f"{env.get('finished_at', NOT_RECORDED)}"]
    for section, label in (("backend", "Backend"), ("reference_backend", "Control's backend")):
        items += [f"{label} {key}: {json.dumps(value, sort_keys=True)}"
                  for key, value in (env.get(section) or {}).items()]
    # scrubbed: the env.json of a run before the redaction may hold a URL with credentials
    md.new_list([md_escape(scrub(i)) for i in items])
    packages = env.get("packages") or {}
    if packages:
        table(md, ["Package", "Version"], [[k, v] for k, v in sorted(packages.items())])
