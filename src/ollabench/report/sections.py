"""The report's sections, in reading order, and the Markdown that holds them (mdutils).

The report leads with the answer: its first screen is the header (model, backend, host), the
one-sentence answer, the primary verdict table, the noise and the data quality in a line
each. The sections after it say how the run stopped, what ran and how it was measured; the
full tables are in the appendix (appendix.py), which the summary links to. Each section
takes the Inputs and writes Markdown; numbers go through report.format and verdicts through
report.words, so a section only chooses what to show and in which order. A new section is a
function of (md, inputs) added to SECTIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdutils.mdutils import MdUtils

from ollabench.report.appendix import stage_metric_sorted
from ollabench.report.applicable import applicable, not_applicable_line
from ollabench.report.configuration import configuration, option_notes
from ollabench.report.format import fmt_int, fmt_mde, fmt_num, fmt_plain_pct, fmt_setting
from ollabench.report.inputs import Inputs
from ollabench.report.load import level_answer, under_load, where_at
from ollabench.report.markdown import tidy
from ollabench.report.noise import noise_section
from ollabench.report.quality import data_quality
from ollabench.report.quality_gate import quality_gate, quality_lower
from ollabench.report.verdicts import answer_sentence, how_it_stopped, primary_table
from ollabench.report.words import (
    INTERLEAVE_WORDS,
    NOT_RECORDED,
    ORDER_WORDS,
    WARMUP_WORDS,
    clocks_sentence,
    metric_label,
    quality_line,
    summary_sentence,
)
from ollabench.stats import HEADLINE_METRICS, WORKFLOW_STAGE


def render(inputs: Inputs, figures: dict[str, str], appendix_link: str) -> str:
    """The report's Markdown; figures maps a stage (or \"looks\") to its image link."""
    md = MdUtils(file_name="report")
    _header(md, inputs)
    _executive_summary(md, inputs, appendix_link)
    if not inputs.primary.empty:
        how_it_stopped(md, inputs.env, inputs.primary, figures.get("looks"),
                       inputs.level_primary)
    _noise(md, inputs)
    under_load(md, inputs.load, inputs.profiles, inputs.config, figures.get("load"),
               inputs.level_primary, inputs.quality["settings"]["threshold_pct"])
    for section in SECTIONS:
        section(md, inputs)
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


def _executive_summary(md: MdUtils, inputs: Inputs, appendix_link: str) -> None:
    md.new_header(2, "Executive summary", add_table_of_contents="n")
    threshold = inputs.quality["settings"]["threshold_pct"]
    if inputs.noise_floor:
        md.new_paragraph(
            f"A/A run: both arms ran `{inputs.profiles['control']}`, so every difference "
            "below is this machine's run-to-run noise, not an effect; each interval shows how "
            "large a real effect must be to stand out from it.")
    else:
        md.new_paragraph(
            f"Treatment `{inputs.profiles['treatment']}` against control "
            f"`{inputs.profiles['control']}`; a change is (treatment - control) / control"
            + ("." if not inputs.primary.empty
               else ", p the Holm-adjusted p-value of the verdict test."))
    lower = quality_lower(inputs)
    if not inputs.primary.empty:
        md.new_paragraph(answer_sentence(inputs.primary, lower))
        primary_table(md, inputs.primary, threshold)
        quality_gate(md, inputs)
        _loaded_answers(md, inputs, threshold)
    else:  # an aggregate made before the primary comparisons existed
        md.new_list([summary_sentence(row, inputs.noise_floor, lower)
                     for row in inputs.headline_rows()])
        quality_gate(md, inputs)
        _open_headlines(md, inputs, threshold)
    notes = option_notes(inputs.env)
    if notes:
        md.new_paragraph(
            "No difference above is evidence of the effect of " + "; ".join(
                f"`{name}`, which {why}" for name, why in sorted(notes.items()))
            + " (see Configuration).")
    if noise := _noise_text(inputs):
        md.new_paragraph(f"Noise: {noise}")
    md.new_paragraph(f"Data quality: {quality_line(inputs.quality, inputs.not_applicable)}.")
    if inputs.not_applicable:
        md.new_paragraph(not_applicable_line(inputs.not_applicable))
    md.new_paragraph(f"Every metric per stage and arm, every descriptive comparison, the "
                     f"run-by-run values and the system: [appendix]({appendix_link}).")


def _loaded_answers(md: MdUtils, inputs: Inputs, threshold: float) -> None:
    """The answer at each loaded level, a line each (the table above is one agent at a
    time): each level decided on its own, never averaged across levels."""
    if not inputs.level_primary or inputs.load is None:  # the levels' table says how they ran
        return
    md.new_paragraph("The table above is one agent at a time. Under load, each level decided "
                     "on its own (never averaged across levels; tables in Under load):")
    md.new_list([level_answer(rows, where_at(inputs.load, level), inputs.profiles, threshold)
                 for level, rows in sorted(inputs.level_primary.items())])


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
        f"); {INTERLEAVE_WORDS[run.get('interleave', 'run')]}",
        f"Warm-up: {fmt_int(run.get('warmup'))} call(s) "
        f"{WARMUP_WORDS[run.get('interleave', 'run')]}; they are recorded as `warmup` and "
        "never measured.",
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


def _conclusion(md: MdUtils, inputs: Inputs) -> None:
    md.new_header(2, "Conclusion", add_table_of_contents="n")
    by_verdict: dict[str, list[str]] = {}
    for row in inputs.headline_rows():
        by_verdict.setdefault(row["verdict"], []).append(
            f"{row['stage']} {metric_label(row['metric'])}")
    shown = applicable(inputs.comparisons, inputs.not_applicable)
    counts = shown["verdict"].value_counts()
    tally = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    if inputs.noise_floor:
        flagged = int(counts.get("better", 0) + counts.get("worse", 0))
        md.new_paragraph(
            f"This A/A run measured the noise floor of `{inputs.profiles['control']}` on this "
            f"machine. Noise: {_noise_text(inputs)} Of {len(shown)} comparisons, "
            f"{flagged} came out better or worse, which in an A/A run is noise or drift; "
            "a profile comparison on this setup can only resolve changes above the MDEs "
            "shown in the appendix's statistical analysis.")
    else:
        parts = [f"{verdict}: {', '.join(items)}" for verdict, items in by_verdict.items()]
        md.new_paragraph(
            f"Treatment `{inputs.profiles['treatment']}` against control "
            f"`{inputs.profiles['control']}`, headline metrics: " + "; ".join(parts) + ".")
        if quality_lower(inputs):
            md.new_paragraph("Its output was worse on a quality metric (see the quality gate "
                             "in the executive summary): it is not a better profile, however "
                             "fast.")
    md.new_paragraph(f"All {len(shown)} comparisons that applied: {tally}.")
    if inputs.quality["unequal_work"]:
        md.new_paragraph("The arms did not do the same work (see Data quality): differences "
                         "in end-to-end time may come from that rather than from speed.")


def _noise(md: MdUtils, inputs: Inputs) -> None:
    noise_section(md, inputs.noise, inputs.quality["settings"]["threshold_pct"])


def _noise_text(inputs: Inputs) -> str:
    """The run-to-run spread (CV) of the headline metrics of whole runs, and how busy the
    rest of the machine was meanwhile."""
    rows = inputs.summary.loc[(inputs.summary["stage"] == WORKFLOW_STAGE)
                              & inputs.summary["metric"].isin(HEADLINE_METRICS)]
    parts = [f"{metric_label(r['metric'])} {r['arm']} {fmt_plain_pct(r['cv_pct'])}"
             for r in stage_metric_sorted(rows, inputs.stages).to_dict("records")]
    text = ("run-to-run CV of whole runs: " + ", ".join(parts)) if parts else ""
    busy = [h.get("other_cpu_pct_max") for h in (inputs.quality.get("host") or {}).values()]
    busy = [b for b in busy if b is not None]
    if text and busy:
        text += (f"; other processes used at most {fmt_plain_pct(max(busy))} of the CPU "
                 "during the calls")
    return text + "." if text else ""


# The sections after the summary and "How the experiment stopped", in reading order.
SECTIONS: tuple[Callable[[MdUtils, Inputs], None], ...] = (
    configuration, _methodology, data_quality, _conclusion)
