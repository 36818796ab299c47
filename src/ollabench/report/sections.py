"""The report's sections, in reading order, and the Markdown that holds them (mdutils).

Each section takes the Inputs and writes Markdown; numbers go through report.format and
verdicts through report.words, so a section only chooses what to show and in which order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from mdutils.mdutils import MdUtils

from ollabench.paths import PER_RUN_FILE
from ollabench.records.schema import ARMS
from ollabench.redaction import scrub
from ollabench.report.configuration import configuration, option_notes
from ollabench.report.format import (
    fmt_effect,
    fmt_int,
    fmt_mde,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_plain_pct,
    fmt_setting,
    fmt_value,
    md_escape,
)
from ollabench.report.inputs import Inputs
from ollabench.report.load import under_load
from ollabench.report.markdown import table, tidy
from ollabench.report.noise import noise_section
from ollabench.report.quality import data_quality
from ollabench.report.quality_gate import quality_gate, quality_lower
from ollabench.report.verdicts import answer_sentence, how_it_stopped, primary_table
from ollabench.report.words import (
    ORDER_WORDS,
    clocks_sentence,
    metric_label,
    quality_line,
    summary_sentence,
)
from ollabench.stats import HEADLINE_METRICS, METRIC_BY_NAME, WORKFLOW_STAGE

NOT_RECORDED = "not recorded"
MAX_RUNS_LISTED = 100  # runs per arm in the run-by-run tables; per_run.csv has them all


def render(inputs: Inputs, figures: dict[str, str]) -> str:
    """The report's Markdown; figures maps a stage (or \"per_run\") to its image link."""
    md = MdUtils(file_name="report")
    _header(md, inputs)
    _executive_summary(md, inputs)
    if not inputs.primary.empty:
        how_it_stopped(md, inputs.env, inputs.primary, figures.get("looks"))
    noise_section(md, inputs.noise, inputs.quality["settings"]["threshold_pct"])
    _aggregate_table(md, inputs, figures)
    under_load(md, inputs.load, inputs.profiles, inputs.config, figures.get("load"))
    configuration(md, inputs)
    _methodology(md, inputs)
    _statistical_analysis(md, inputs)
    data_quality(md, inputs)
    _run_tables(md, inputs, figures.get("per_run"))
    _system(md, inputs)
    _conclusion(md, inputs)
    return tidy(md.get_md_text())


def _header(md: MdUtils, inputs: Inputs) -> None:
    env, config = inputs.env, inputs.config
    model = config.get("model") or {}
    host = env.get("host") or {}
    run = config.get("run") or {}
    md.new_header(1, f"ollabench report: {model.get('name', 'unknown model')}",
                  add_table_of_contents="n")
    arms = inputs.quality["arms"]
    md.new_list([
        f"Date: {env.get('finished_at') or env.get('started_at') or NOT_RECORDED}",
        f"Model: {_model_text(inputs)}",
        f"Backend: {_backend_text(inputs)}",
        f"Runs: {_planned_runs(run)}; measured runs: control "
        f"{arms['control']['runs']}, treatment {arms['treatment']['runs']}",
        f"Arms: control = `{inputs.profiles['control']}` (reference), "
        f"treatment = `{inputs.profiles['treatment']}` (profile)",
        f"Host: {host.get('hostname', NOT_RECORDED)}, {host.get('cpu_model', 'unknown CPU')}, "
        f"{fmt_int(host.get('cpu_cores_physical'))} cores / "
        f"{fmt_int(host.get('cpu_cores_logical'))} threads, "
        f"{fmt_num(host.get('memory_gib'))} GiB",
    ])


def _planned_runs(run: dict[str, Any]) -> str:
    """What the config asked for: a fixed count, or the sequential rule's budget."""
    stopping = run.get("stopping") or {}
    if stopping.get("mode") != "sequential":
        return f"{fmt_int(run.get('runs'))} runs per arm, fixed"
    return (f"until decided, {fmt_int(stopping.get('min_runs'))} to "
            f"{fmt_int(stopping.get('max_runs'))} per arm (sequential)")


def _model_text(inputs: Inputs) -> str:
    """The model's name and identity: the GGUF file and hash, or Ollama's digest."""
    backend = inputs.env.get("backend") or {}
    name = (inputs.config.get("model") or {}).get("name", NOT_RECORDED)
    served = backend.get("model") or {}
    identity = [Path(backend["model_file"]).name] if backend.get("model_file") else []
    digest = backend.get("model_sha256") or served.get("digest")
    identity += [f"sha256 {str(digest).removeprefix('sha256:')[:12]}"] if digest else []
    return f"{name} ({', '.join(identity)})" if identity else name


def _backend_text(inputs: Inputs) -> str:
    """The backend, its engine and version (llama-cpp-python's, or the Ollama server's)."""
    backend = inputs.env.get("backend") or {}
    name = (inputs.config.get("model") or {}).get("backend") or NOT_RECORDED
    engine = f" ({backend['engine']})" if backend.get("engine") else ""
    version = backend.get("engine_version") or backend.get("server_version")
    return f"{name}{engine}" + (f" {version}" if version else "")


def _executive_summary(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Executive summary", add_table_of_contents="n")
    threshold = inputs.quality["settings"]["threshold_pct"]
    if inputs.noise_floor:
        md.new_paragraph(
            f"Both arms ran the same profile (`{inputs.profiles['control']}`): this is an A/A "
            "run, a noise-floor calibration. The differences below are run-to-run noise of "
            "this machine and setup, not effects of a profile; the detectable change of each "
            "comparison (MDE) says how large a real effect must be to stand out from it.")
    else:
        md.new_paragraph(
            f"Treatment `{inputs.profiles['treatment']}` against control "
            f"`{inputs.profiles['control']}`. Differences are (treatment - control) / control"
            + ("." if not inputs.primary.empty
               else "; p is the Holm-adjusted p-value of the verdict test."))
    lower = quality_lower(inputs)
    if not inputs.primary.empty:
        md.new_paragraph(answer_sentence(inputs.primary, lower))
        primary_table(md, inputs.primary, threshold)
        quality_gate(md, inputs)
    else:  # an aggregate made before the primary comparisons existed
        md.new_list([summary_sentence(row, inputs.noise_floor, lower)
                     for row in inputs.headline_rows()])
        quality_gate(md, inputs)
        _open_headlines(md, inputs, threshold)
    notes = option_notes(inputs.env)
    if notes:
        md.new_paragraph(
            "This server may ignore " + ", ".join(f"`{name}`" for name in sorted(notes))
            + " (see Configuration): the differences above are not evidence of "
            + ("its" if len(notes) == 1 else "their") + " effect.")
    md.new_paragraph(f"Data quality: {quality_line(inputs.quality)}.")


def _open_headlines(md: MdUtils, inputs: Inputs, threshold: float) -> None:
    open_rows = [r for r in inputs.headline_rows() if r["verdict"] == "inconclusive"]
    if open_rows:
        items = "; ".join(f"{r['stage']} {metric_label(r['metric'])} (detectable change "
                          f"{fmt_mde(r['mde_pct'])})" for r in open_rows)
        md.new_paragraph(
            f"Could not be concluded: {items}. These runs are too few or too noisy to tell a "
            f"change of {fmt_plain_pct(threshold)} (the practical threshold) from noise; more "
            "runs or a quieter machine would be needed.")
    else:
        md.new_paragraph("Every headline comparison reached a verdict.")


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
            for r in _stage_metric_sorted(inputs.summary, inputs.stages).to_dict("records")]
    table(md, header, rows)
    for stage in inputs.stages:
        if stage in figures:
            md.new_paragraph(md.new_inline_image(f"{stage}: TTFT and eval rate by arm",
                                                 figures[stage]))


def _stage_metric_sorted(frame: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    order = {"stage": stages, "metric": list(METRIC_BY_NAME), "arm": list(ARMS)}
    keys = [k for k in order if k in frame]
    return frame.sort_values(keys, key=lambda col: col.map(
        {v: i for i, v in enumerate(order[col.name])}), kind="stable")


def _clocks(config: dict[str, Any]) -> list[str]:
    """Which clock times what: once, or per arm when the arms ran on different backends."""
    backends = [(config.get(key) or {}).get("backend") for key in ("reference_model", "model")]
    if backends[0] in (None, backends[1]):
        return [clocks_sentence(backends[1])]
    return [f"Control arm: {clocks_sentence(backends[0])}",
            f"Treatment arm: {clocks_sentence(backends[1])}"]


def _methodology(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Methodology", add_table_of_contents="n")
    run = inputs.config.get("run") or {}
    s = inputs.quality["settings"]
    md.new_list([
        f"Schedule: {_planned_runs(run)}, arm order "
        f"`{run.get('order', NOT_RECORDED)}` ({ORDER_WORDS.get(run.get('order'), 'not known')}"
        "); each run makes one call per stage.",
        f"Warm-up: {fmt_int(run.get('warmup'))} call(s) after every switch of arm absorb a "
        "model (re)load; they are recorded as `warmup` and never measured.",
        *_clocks(inputs.config),
        "Statistics: only measured calls without an error and without a model reload "
        "count; the unit is one value per run, arm and stage.",
        "Verdict test: Welch's t-test on the logarithm of the values (the metrics are ratios "
        f"and right-skewed), outliers left out (robust z above {fmt_setting(s['outlier_z'])} "
        "within the arm and from the other arm too, in arms of at least "
        f"{fmt_int(s['outlier_min_values'])} runs), Holm-adjusted across every row of the "
        f"comparisons table, significant below {fmt_setting(s['alpha'])}.",
        "Beside it: the Mann-Whitney U test (all values), the Wilcoxon signed-rank test on "
        "per-run pairs when every run has both arms, Hedges' g (log scale), Cliff's delta, and "
        f"a 95% bootstrap CI of the relative difference of medians ({s['bootstrap_resamples']} "
        f"resamples, seed {s['seed']}).",
        f"Detectable change (MDE): the smallest relative change these runs detect with "
        f"{fmt_plain_pct(100 * s['power'])} power at alpha {fmt_setting(s['alpha'])}, from the "
        "observed spread.",
        f"Thresholds: practical threshold {fmt_plain_pct(s['threshold_pct'])} (a "
        "non-significant comparison whose MDE is at most this is `no significant "
        "difference`, otherwise `inconclusive`); unequal output when mean output tokens "
        f"differ by more than {fmt_plain_pct(s['unequal_tokens_pct'])}; a model load when the "
        f"load time is at least {fmt_setting(s['load_factor'])} times the warm level and "
        f"{fmt_setting(s['load_excess_ms'])} ms above it.",
        "Details: docs/statistics.md.",
    ])


def _statistical_analysis(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Statistical analysis", add_table_of_contents="n")
    md.new_paragraph("Descriptive comparisons (secondary: Holm-adjusted among themselves, "
                     "apart from the primary comparisons of the executive summary). "
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
            for r in inputs.comparisons.to_dict("records")]
    table(md, header, rows)


def _run_tables(md: MdUtils, inputs: Inputs, figure: str | None) -> None:
    md.new_header(2, "Run-by-run results", add_table_of_contents="n")
    if figure:
        md.new_paragraph(md.new_inline_image("Per-run TTFT and eval rate of both arms", figure))
    for arm in ARMS:
        md.new_header(3, f"{arm.capitalize()} (`{inputs.profiles[arm]}`)",
                      add_table_of_contents="n")
        mine = _stage_metric_sorted(inputs.per_run.loc[inputs.per_run["arm"] == arm],
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


def _conclusion(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Conclusion", add_table_of_contents="n")
    by_verdict: dict[str, list[str]] = {}
    for row in inputs.headline_rows():
        by_verdict.setdefault(row["verdict"], []).append(
            f"{row['stage']} {metric_label(row['metric'])}")
    counts = inputs.comparisons["verdict"].value_counts()
    tally = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    if inputs.noise_floor:
        flagged = int(counts.get("better", 0) + counts.get("worse", 0))
        md.new_paragraph(
            f"This A/A run measured the noise floor of `{inputs.profiles['control']}` on this "
            f"machine. {_noise_text(inputs)} Of {len(inputs.comparisons)} comparisons, "
            f"{flagged} came out better or worse, which in an A/A run is noise or drift; "
            "a profile comparison on this setup can only resolve changes above the MDEs "
            "shown in the statistical analysis.")
    else:
        parts = [f"{verdict}: {', '.join(items)}" for verdict, items in by_verdict.items()]
        md.new_paragraph(
            f"Treatment `{inputs.profiles['treatment']}` against control "
            f"`{inputs.profiles['control']}`, headline metrics: " + "; ".join(parts) + ".")
        if quality_lower(inputs):
            md.new_paragraph("Its output was worse on a quality metric (see the quality gate "
                             "in the executive summary): it is not a better profile, however "
                             "fast.")
    md.new_paragraph(f"All {len(inputs.comparisons)} comparisons: {tally}.")
    if inputs.quality["unequal_work"]:
        md.new_paragraph("The arms did not do the same work (see Data quality): differences "
                         "in end-to-end time may come from that rather than from speed.")


def _noise_text(inputs: Inputs) -> str:
    """The run-to-run spread (CV) of the headline metrics in the workflow stage."""
    rows = inputs.summary.loc[(inputs.summary["stage"] == WORKFLOW_STAGE)
                              & inputs.summary["metric"].isin(HEADLINE_METRICS)]
    parts = [f"{metric_label(r['metric'])} {r['arm']} {fmt_plain_pct(r['cv_pct'])}"
             for r in _stage_metric_sorted(rows, inputs.stages).to_dict("records")]
    return ("Run-to-run CV of whole runs: " + ", ".join(parts) + ".") if parts else ""
