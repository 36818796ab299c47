"""The Markdown report (mdutils) and its figures (matplotlib's Agg canvas), from the
aggregate's outputs.

The report reads data/processed (summary.csv, comparisons.csv, per_run.csv, quality.json) and
raw/env.json and recomputes nothing: every number is formatted from the CSV values by the
formatters below, the only place where numbers become text. Wording follows each metric's
direction (a higher TTFT is slower and worse) and calls a difference significant only when
the verdict test says so.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mdutils.mdutils import MdUtils

from ollabench.errors import ReportError
from ollabench.files import Staging
from ollabench.paths import COMPARISONS_FILE, ENV_FILE, PER_RUN_FILE, QUALITY_FILE, SUMMARY_FILE
from ollabench.records import ARMS
from ollabench.stats import HEADLINE_METRICS, METRIC_BY_NAME, STAGES, WORKFLOW_STAGE

UNKNOWN = "n/a"
NOT_RECORDED = "not recorded"
MAX_LISTED = 50  # outliers listed in the report; quality.json has them all
MAX_RUNS_LISTED = 100  # runs per arm in the run-by-run tables; per_run.csv has them all
FIGURE_METRICS = ("ttft_ms", "eval_tok_s")
ARM_COLORS = {"control": "#4C72B0", "treatment": "#DD8452"}
ORDER_WORDS = {
    "abba": "the arm that goes first alternates, so a slow drift hits both arms alike",
    "random": "a seeded random arm order per run",
    "sequential": "all control runs, then all treatment runs: a drift over time looks like "
                  "an effect",
}
CAUSE_WORDS = {
    "reloaded": "the model was reloaded (record flag)",
    "model_load": "a model load (load time far above the warm level)",
    "truncated": "the prompt was truncated",
    "output_length": "a different output length",
}
CHECK_WORDS = {
    "output_tokens": "mean output tokens differ by more than {limit}%",
    "length_stops": "the number of calls stopped by the output cap differs",
    "truncated": "prompts were truncated",
    "errors": "the number of failed calls differs",
    "measured_calls": "the number of measured calls differs",
}



# --------------------------------------------------------------------------- formatting


def _unknown_as_na(format_known: Callable[[float], str]) -> Callable[[Any], str]:
    """Formatters accept any value: unknown (None, NaN, missing) is written n/a, never 0."""

    @functools.wraps(format_known)
    def formatter(value: Any) -> str:
        if value is None or pd.isna(value) or not math.isfinite(float(value)):
            return UNKNOWN
        return format_known(float(value))

    return formatter


@_unknown_as_na
def fmt_num(x: float) -> str:
    """Four significant digits without an exponent: 1353, 119.2, 5.062; whole numbers such
    as token counts without decimals."""
    if x.is_integer():
        return f"{x:.0f}"
    decimals = min(4, max(0, 3 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


@_unknown_as_na
def fmt_setting(x: float) -> str:
    """A configured constant as written: 0.05, 3.5, 100."""
    return f"{x:g}"


@_unknown_as_na
def fmt_pct(x: float) -> str:
    """A signed relative difference: +10.0%, -4.4% (arithmetic sign, never reworded)."""
    return f"{x:+.1f}%"


@_unknown_as_na
def fmt_plain_pct(x: float) -> str:
    """A size in percent without a sign (CV, detectable change, thresholds)."""
    return f"{x:.1f}%"


# Beyond this a detectable change says only "far too few runs"; its digits would be noise.
MDE_DISPLAY_CAP_PCT = 1000.0


@_unknown_as_na
def fmt_mde(x: float) -> str:
    """The detectable change (MDE), capped for display: 12.3%, over 1000%."""
    return f"over {MDE_DISPLAY_CAP_PCT:.0f}%" if x > MDE_DISPLAY_CAP_PCT else fmt_plain_pct(x)


@_unknown_as_na
def fmt_p(p: float) -> str:
    """A p-value: 0.62, 0.004, < 0.001."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def fmt_p_clause(value: Any) -> str:
    """`p = 0.01` or `p < 0.001`, for running text."""
    text = fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


@_unknown_as_na
def fmt_effect(x: float) -> str:
    """An effect size (Hedges' g, Cliff's delta), signed."""
    return f"{x:+.2f}"


@_unknown_as_na
def fmt_int(x: float) -> str:
    return f"{x:.0f}"


def fmt_value(value: Any, metric: str) -> str:
    return f"{fmt_num(value)} {METRIC_BY_NAME[metric].unit}"


def _cell(value: Any) -> str:
    """Table cell text: no pipes or line breaks that would break the Markdown table."""
    text = UNKNOWN if value is None else str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------- wording


def metric_label(metric: str) -> str:
    return METRIC_BY_NAME[metric].label


def verdict_words(row: pd.Series) -> str:
    """The verdict in words that follow the metric's direction."""
    verdict = row["verdict"]
    if verdict == "better":
        return "faster, better"
    if verdict == "worse":
        return "slower, worse"
    if verdict == "different":
        return "more output" if row["median_diff_pct"] > 0 else "less output"
    return str(verdict)


def summary_sentence(row: pd.Series, noise_floor: bool) -> str:
    """One sentence per stage and metric, e.g. `report stage: median TTFT 820 -> 410 ms
    (-50.0%, faster, better, p = 0.004); mean 830 -> 412 ms (-50.4%).`"""
    metric = row["metric"]
    unit = METRIC_BY_NAME[metric].unit
    words = verdict_words(row)
    if row["verdict"] == "inconclusive":
        words += f": these runs detect only changes above {fmt_mde(row['mde_pct'])}"
    text = (f"{row['stage']} stage: median {metric_label(metric)} "
            f"{fmt_num(row['control_median'])} -> {fmt_num(row['treatment_median'])} {unit} "
            f"({fmt_pct(row['median_diff_pct'])}, {words}, {fmt_p_clause(row['p_holm'])}); "
            f"mean {fmt_num(row['control_mean'])} -> {fmt_num(row['treatment_mean'])} {unit} "
            f"({fmt_pct(row['mean_diff_pct'])}).")
    if noise_floor and row["verdict"] in ("better", "worse", "different"):
        text += (" Both arms ran the same profile, so this is noise or drift, not an effect "
                 "(see the per-run plot).")
    return text


# --------------------------------------------------------------------------- inputs


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


# --------------------------------------------------------------------------- sections


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
        f"Runs: {fmt_int(run.get('runs'))} planned per arm; measured runs: control "
        f"{arms['control']['runs']}, treatment {arms['treatment']['runs']}",
        f"Arms: control = `{inputs.profiles['control']}` (reference), "
        f"treatment = `{inputs.profiles['treatment']}` (profile)",
        f"Host: {host.get('hostname', NOT_RECORDED)}, {host.get('cpu_model', 'unknown CPU')}, "
        f"{fmt_int(host.get('cpu_cores_physical'))} cores / "
        f"{fmt_int(host.get('cpu_cores_logical'))} threads, "
        f"{fmt_num(host.get('memory_gib'))} GiB",
    ])


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
            f"`{inputs.profiles['control']}`. Differences are (treatment - control) / control; "
            "p is the Holm-adjusted p-value of the verdict test.")
    md.new_list([summary_sentence(row, inputs.noise_floor) for row in inputs.headline_rows()])
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
    md.new_paragraph(f"Data quality: {_quality_line(inputs.quality)}.")


def _quality_line(quality: dict[str, Any]) -> str:
    left_out = sum(1 for o in quality["outliers"] if o["left_out"])
    parts = [
        f"{len(quality['errors'])} failed call(s)",
        f"{len(quality['outliers'])} outlier(s), {left_out} left out of the verdict test",
        f"{len(quality['reloaded_calls'])} measured call(s) flagged as reloads",
        f"{len(quality['load_spikes'])} measured call(s) with a model load",
        f"{len(quality['truncated_calls'])} truncated prompt(s)",
    ]
    unequal = quality["unequal_work"]
    parts.append("the arms did the same work" if not unequal
                 else f"the arms did not do the same work ({len(unequal)} finding(s))")
    return "; ".join(parts)


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
            for r in _stage_metric_sorted(inputs.summary).to_dict("records")]
    _table(md, header, rows)
    for stage in STAGES:
        if stage in figures:
            md.new_paragraph(md.new_inline_image(f"{stage}: TTFT and eval rate by arm",
                                                 figures[stage]))


def _stage_metric_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    order = {"stage": list(STAGES), "metric": list(METRIC_BY_NAME), "arm": list(ARMS)}
    keys = [k for k in order if k in frame]
    return frame.sort_values(keys, key=lambda col: col.map(
        {v: i for i, v in enumerate(order[col.name])}), kind="stable")


def _configuration(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Configuration of both arms", add_table_of_contents="n")
    config = inputs.config
    arms = {"control": config.get("reference") or {}, "treatment": config.get("profile") or {}}
    names = sorted(set().union(*((a.get("options") or {}) for a in arms.values())))
    rows = [["profile", *(f"`{inputs.profiles[arm]}`" for arm in ARMS)]]
    rows += [[f"`{name}`", *(_option(arms[arm], name) for arm in ARMS)] for name in names]
    _table(md, ["Setting", "Control (reference)", "Treatment (profile)"], rows)
    run = config.get("run") or {}
    if run:
        md.new_paragraph("Run settings, the same for both arms:")
        md.new_list([f"`{key}`: {json.dumps(value)}" for key, value in run.items()])
    if not config:
        md.new_paragraph("The configuration was not recorded (no env.json).")


def _option(profile: dict[str, Any], name: str) -> str:
    options = profile.get("options") or {}
    return json.dumps(options[name]) if name in options else "backend default"


def _methodology(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Methodology", add_table_of_contents="n")
    run = inputs.config.get("run") or {}
    s = inputs.quality["settings"]
    md.new_list([
        f"Schedule: {fmt_int(run.get('runs'))} runs per arm, arm order "
        f"`{run.get('order', NOT_RECORDED)}` ({ORDER_WORDS.get(run.get('order'), 'not known')}"
        "); each run makes one call per stage.",
        f"Warm-up: {fmt_int(run.get('warmup'))} call(s) after every switch of arm absorb a "
        "model (re)load; they are recorded as `warmup` and never measured.",
        "Clocks: TTFT and end-to-end time are measured by the client on a monotonic clock "
        "(TTFT at the first non-empty streamed text); load, prompt-eval and eval times come "
        "from the engine; rates are tokens over engine time.",
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
    md.new_paragraph("Treatment against control, per stage and metric. Differences are signed "
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
    _table(md, header, rows)


def _data_quality(md: MdUtils, inputs: Inputs) -> None:
    quality = inputs.quality
    md.new_header(2, "Data quality", add_table_of_contents="n")
    rows = [[arm, f"`{a['profile']}`", a["calls"], a["measured"], a["warmups"], a["errors"],
             a["retries"], a["reloaded"], a["runs"],
             f"{fmt_value(a['warmup_load_ms_median'], 'load_ms')} / "
             f"{fmt_value(a['warmup_load_ms_mean'], 'load_ms')}"]
            for arm, a in quality["arms"].items()]
    _table(md, ["Arm", "Profile", "Calls", "Measured", "Warm-ups", "Failed", "Retries",
                "Reloaded (left out)", "Runs", "Warm-up load (median / mean)"], rows)
    for title, section in (("Outliers", _outliers_section),
                           ("Reloads and model loads", _reloads_section),
                           ("Truncations and length stops", _truncations_section),
                           ("Failed calls", _failures_section),
                           ("Unequal work", _unequal_section)):
        md.new_header(3, title, add_table_of_contents="n")
        section(md, quality)


def _outliers_section(md: MdUtils, quality: dict[str, Any]) -> None:
    outliers = quality["outliers"]
    if not outliers:
        md.new_paragraph("No outliers.")
        return
    md.new_paragraph("Per arm, stage and metric, values with a robust z above "
                     f"{fmt_setting(quality['settings']['outlier_z'])}. Those also that far "
                     "from the other arm are left out of the verdict test; the others stay in "
                     "(they are within what the other arm shows).")
    _table(md, ["Arm", "Stage", "Metric", "Run", "Value", "Median", "Robust z",
                "Left out of the test", "Likely cause"],
           [[o["arm"], o["stage"], metric_label(o["metric"]), o["run"],
             fmt_value(o["value"], o["metric"]), fmt_value(o["median"], o["metric"]),
             fmt_num(o["robust_z"]), "yes" if o["left_out"] else "no", _cause_text(o)]
            for o in outliers[:MAX_LISTED]])
    if len(outliers) > MAX_LISTED:
        md.new_paragraph(f"{len(outliers) - MAX_LISTED} more in data/processed/{QUALITY_FILE}.")


def _reloads_section(md: MdUtils, quality: dict[str, Any]) -> None:
    items = [f"{c['arm']} run {c['run']} {c['stage']}: flagged as a reload (left out of the "
             f"statistics), load {fmt_value(c.get('load_ms'), 'load_ms')}"
             for c in quality["reloaded_calls"]]
    items += [f"{s['arm']} run {s['run']} {s['stage']}: load "
              f"{fmt_value(s['load_ms'], 'load_ms')} against a warm level of "
              f"{fmt_value(s['warm_load_ms'], 'load_ms')}" for s in quality["load_spikes"]]
    _list_or_none(md, items, "No measured call was flagged as a reload or paid a model load "
                  "(warm-ups absorb them).")


def _truncations_section(md: MdUtils, quality: dict[str, Any]) -> None:
    _list_or_none(md, [f"{c['arm']} run {c['run']} {c['stage']} ({c['phase']}): prompt "
                       f"truncated (num_ctx {fmt_int(c.get('num_ctx'))})"
                       for c in quality["truncated_calls"]], "No prompt was truncated.")
    stops = [f"{arm}: " + ", ".join(f"{stage} {n}" for stage, n in counts["length_stops"].items())
             for arm, counts in quality["arms"].items() if counts["length_stops"]]
    if stops:
        md.new_paragraph("Measured calls stopped by the output cap (`done_reason: length`): "
                         + "; ".join(stops) + ".")


def _failures_section(md: MdUtils, quality: dict[str, Any]) -> None:
    if not quality["errors"]:
        md.new_paragraph("No call failed.")
        return
    _table(md, ["Seq", "Run", "Arm", "Stage", "Phase", "Attempt", "Error"],
           [[e["seq"], e["run"], e["arm"], e["stage"], e["phase"], e["attempt"], e["error"]]
            for e in quality["errors"]])


def _unequal_section(md: MdUtils, quality: dict[str, Any]) -> None:
    limit = fmt_setting(quality["settings"]["unequal_tokens_pct"])
    _list_or_none(md, [_unequal_text(u, limit) for u in quality["unequal_work"]],
                  f"The arms did the same work: output lengths within {limit}%, the same "
                  "number of length stops and failed calls, no truncation.")
    unknown = [f"{arm}: " + ", ".join(f"{metric_label(m)} in {n} call(s)"
                                      for m, n in counts.items())
               for arm, counts in quality["unknown_values"].items() if counts]
    if unknown:
        md.new_paragraph("Unknown values (left out, never counted as 0): "
                         + "; ".join(unknown) + ".")
    if quality["duplicate_keys"]:
        md.new_paragraph(f"{quality['duplicate_keys']} record(s) repeat a (seq, attempt) key.")


def _cause_text(outlier: dict[str, Any]) -> str:
    words = []
    for cause in outlier["causes"]:
        text = CAUSE_WORDS[cause]
        if cause == "model_load":
            text += (f": {fmt_value(outlier['load_ms'], 'load_ms')} against "
                     f"{fmt_value(outlier['warm_load_ms'], 'load_ms')}")
        if cause == "output_length":
            text += (f": {fmt_num(outlier['output_tokens'])} tokens against a median of "
                     f"{fmt_num(outlier['median_output_tokens'])}")
        words.append(text)
    return "; ".join(words) or "not shown by the record"


def _unequal_text(finding: dict[str, Any], limit: str) -> str:
    where = f"{finding['stage']} stage: " if finding.get("stage") else ""
    text = CHECK_WORDS[finding["check"]].format(limit=limit)
    numbers = (f"control {fmt_num(finding['control'])}, "
               f"treatment {fmt_num(finding['treatment'])}")
    if "diff_pct" in finding:
        numbers += f" ({fmt_pct(finding['diff_pct'])})"
    return f"{where}{text}: {numbers}"


def _run_tables(md: MdUtils, inputs: Inputs, figure: str | None) -> None:
    md.new_header(2, "Run-by-run results", add_table_of_contents="n")
    if figure:
        md.new_paragraph(md.new_inline_image("Per-run TTFT and eval rate of both arms", figure))
    for arm in ARMS:
        md.new_header(3, f"{arm.capitalize()} (`{inputs.profiles[arm]}`)",
                      add_table_of_contents="n")
        mine = _stage_metric_sorted(inputs.per_run.loc[inputs.per_run["arm"] == arm])
        mine = mine.sort_values("run", kind="stable")
        runs = sorted(mine["run"].unique())
        shown = mine.loc[mine["run"].isin(runs[:MAX_RUNS_LISTED])]
        _table(md, ["Run", "Stage", "TTFT (ms)", "Eval rate (tok/s)", "Output tokens",
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
    items += [f"Backend {key}: {json.dumps(value, sort_keys=True)}"
              for key, value in (env.get("backend") or {}).items()]
    md.new_list([_cell(i) for i in items])
    packages = env.get("packages") or {}
    if packages:
        _table(md, ["Package", "Version"], [[k, v] for k, v in sorted(packages.items())])


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
    md.new_paragraph(f"All {len(inputs.comparisons)} comparisons: {tally}.")
    if inputs.quality["unequal_work"]:
        md.new_paragraph("The arms did not do the same work (see Data quality): differences "
                         "in end-to-end time may come from that rather than from speed.")


def _noise_text(inputs: Inputs) -> str:
    """The run-to-run spread (CV) of the headline metrics in the workflow stage."""
    rows = inputs.summary.loc[(inputs.summary["stage"] == WORKFLOW_STAGE)
                              & inputs.summary["metric"].isin(HEADLINE_METRICS)]
    parts = [f"{metric_label(r['metric'])} {r['arm']} {fmt_plain_pct(r['cv_pct'])}"
             for r in _stage_metric_sorted(rows).to_dict("records")]
    return ("Run-to-run CV of whole runs: " + ", ".join(parts) + ".") if parts else ""


def _list_or_none(md: MdUtils, items: list[str], none_text: str) -> None:
    if items:
        md.new_list([_cell(i) for i in items])
    else:
        md.new_paragraph(none_text)


def _table(md: MdUtils, header: list[str], rows: list[list[Any]]) -> None:
    cells = [_cell(c) for c in header] + [_cell(c) for row in rows for c in row]
    md.new_table(columns=len(header), rows=len(rows) + 1, text=cells, text_align="left")


# --------------------------------------------------------------------------- figures


def _by_arm_figure(per_run: pd.DataFrame, stage: str, profiles: dict[str, str],
                   path: Path) -> bool:
    """Box plus points per arm for TTFT and eval rate of one stage; False if no data."""
    data = per_run.loc[per_run["stage"] == stage]
    if data.empty:
        return False
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, len(FIGURE_METRICS))
    jitter = np.random.default_rng(0)
    for ax, metric in zip(axes, FIGURE_METRICS, strict=True):
        groups = [data.loc[data["arm"] == arm, metric].dropna().to_numpy() for arm in ARMS]
        ax.boxplot(groups, showfliers=False)
        ax.set_xticks(range(1, len(ARMS) + 1), [f"{arm}\n{profiles[arm]}" for arm in ARMS])
        for i, (arm, values) in enumerate(zip(ARMS, groups, strict=True), start=1):
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=14,
                       alpha=0.7, color=ARM_COLORS[arm], zorder=3)
        ax.set_title(f"{stage}: {metric_label(metric)}")
        ax.set_ylabel(METRIC_BY_NAME[metric].unit)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _per_run_figure(per_run: pd.DataFrame, path: Path) -> None:
    """Per-run series of both arms: drift and cold starts at a glance."""
    stages = [s for s in STAGES if (per_run["stage"] == s).any()]
    fig = Figure(figsize=(9, 2.6 * len(stages)))
    axes = fig.subplots(len(stages), len(FIGURE_METRICS), squeeze=False)
    for row, stage in enumerate(stages):
        for col, metric in enumerate(FIGURE_METRICS):
            ax = axes[row][col]
            for arm in ARMS:
                series = per_run.loc[(per_run["stage"] == stage) & (per_run["arm"] == arm)]
                ax.plot(series["run"], series[metric], marker="o", markersize=3,
                        color=ARM_COLORS[arm], label=arm)
            ax.set_title(f"{stage}: {metric_label(metric)}")
            ax.set_xlabel("run")
            ax.set_ylabel(METRIC_BY_NAME[metric].unit)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- the stage


def run_report(raw_dir: Path, processed_dir: Path, report_path: Path,
               figures_dir: Path) -> None:
    """Write report_path (Markdown) and its PNG figures into figures_dir. The figures are
    drawn into a temporary folder and moved into place together with the report."""
    inputs = Inputs(raw_dir, processed_dir)
    with Staging() as staging:
        links: dict[str, str] = {}
        for stage in STAGES:
            name = f"{stage}_by_arm.png"
            if _by_arm_figure(inputs.per_run, stage, inputs.profiles,
                              staging.path(figures_dir / name)):
                links[stage] = name
        _per_run_figure(inputs.per_run, staging.path(figures_dir / "per_run.png"))
        links["per_run"] = "per_run.png"
        relative = os.path.relpath(figures_dir, report_path.parent)
        links = {key: Path(relative, name).as_posix() for key, name in links.items()}
        staging.write(report_path, _markdown(inputs, links))
        staging.commit()


def _markdown(inputs: Inputs, figures: dict[str, str]) -> str:
    md = MdUtils(file_name="report")
    _header(md, inputs)
    _executive_summary(md, inputs)
    _aggregate_table(md, inputs, figures)
    _configuration(md, inputs)
    _methodology(md, inputs)
    _statistical_analysis(md, inputs)
    _data_quality(md, inputs)
    _run_tables(md, inputs, figures.get("per_run"))
    _system(md, inputs)
    _conclusion(md, inputs)
    return _tidy(md.get_md_text())


def _tidy(text: str) -> str:
    """One blank line between blocks (mdutils leaves none before some tables and headers,
    and several elsewhere), so every Markdown renderer sees the same structure."""
    lines: list[str] = []
    for line in text.strip("\n").splitlines():
        previous = lines[-1] if lines else ""
        if not line.strip():
            if previous:
                lines.append("")
            continue
        if previous and not _block(line) == _block(previous) in ("table", "list", "text"):
            lines.append("")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _block(line: str) -> str:
    for prefix, kind in (("#", "header"), ("|", "table"), ("- ", "list"), ("![", "image")):
        if line.startswith(prefix):
            return kind
    return "text"
