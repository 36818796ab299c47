"""The report's wording: verdicts that follow each metric's direction (a higher TTFT is slower
and worse), likely causes of outliers, findings of unequal work.

A difference is called significant only where the verdict test says so; these functions turn
the aggregate's verdicts and flags into words and never judge the numbers themselves.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from ollabench.report.format import (
    fmt_cell,
    fmt_mde,
    fmt_num,
    fmt_p_clause,
    fmt_pct,
    fmt_plain_pct,
    fmt_setting,
    fmt_value,
)
from ollabench.stats import LEVEL_METRIC_BY_NAME

NOT_RECORDED = "not recorded"

ORDER_WORDS = {
    "abba": "the arm that goes first alternates, so a slow drift hits both arms alike",
    "random": "a seeded random arm order per run",
    "sequential": "all control runs, then all treatment runs: a drift over time looks like "
                  "an effect",
}
INTERLEAVE_WORDS = {  # run.interleave
    "run": "each run makes one call per stage.",
    "call": "each run makes one call per stage and arm, the arms alternating call by call "
            "(`run.interleave: call`: A B, then B A, stage after stage), each arm's later "
            "stages reading its own earlier outputs.",
}
WARMUP_WORDS = {
    "run": "after every switch of arm absorb a model (re)load",
    "call": "per arm before its first measured call (at least one where the arms' "
            "load-time options differ) absorb its engine's load; both arms' engines then "
            "stay loaded, so a switch of arm reloads nothing",
}
CAUSE_WORDS = {
    "reloaded": "the model was reloaded (record flag)",
    "model_load": "a model load (load time far above the warm level)",
    "truncated": "the prompt was truncated",
    "output_length": "a different output length",
    "host_busy": "host busy",
}
# Who times what, per backend (backends/): the report must not credit the engine with a clock
# that ollabench itself reads.
CLOCK_WORDS = {
    "llamacpp": "TTFT, end-to-end and load times are measured by ollabench on a monotonic "
                "clock (TTFT at the first non-empty streamed text; the load time around the "
                "in-process model (re)load); prompt-eval and eval times come from llama.cpp's "
                "performance counters",
    "ollama": "TTFT and end-to-end time are measured by the client on a monotonic clock (TTFT "
              "at the first non-empty streamed text); load, prompt-eval and eval times come "
              "from the Ollama server (its final streamed chunk)",
    "openai": "TTFT (first chunk with content, reasoning or a tool call), time to first "
              "chunk and end-to-end time are measured by the client on a monotonic clock; "
              "token counts come from the server's usage, its tokenizer or the chunks, and "
              "decode times from the server's timings (llama-server) or the chunks' arrival, "
              "as each record's token_count_source and timing_source say",
}
CHECK_WORDS = {
    "output_tokens": "mean output tokens differ by more than {limit}%",
    "length_stops": "the number of calls stopped by the output cap differs",
    "truncated": "prompts were truncated",
    "errors": "the number of failed calls differs",
    "measured_calls": "the number of measured calls differs",
    "cache_state": "the measured calls met different prompt-cache states",
    "engine_version": "the arms ran on different engine versions",
    "token_count_source": "the arms' token counts come from different sources (an engine's "
                          "own count, a server's usage, counted chunks, a tokenizer): their "
                          "per-token figures are not counted alike",
    "timing_source": "the arms' decode times come from different clocks (the engine's, or "
                     "derived by the client from chunk arrivals)",
}


def metric_label(metric: str) -> str:
    return LEVEL_METRIC_BY_NAME[metric].label


def clocks_sentence(backend: str | None) -> str:
    """Which clock each time comes from, for the backend that ran."""
    words = CLOCK_WORDS.get(str(backend), "TTFT and end-to-end time are measured by the client "
                            "on a monotonic clock; load, prompt-eval and eval times come from "
                            f"the backend ({backend or 'not recorded'})")
    return f"Clocks: {words}; rates are tokens over engine time."


def verdict_words(row: pd.Series, quality_lower: bool = False) -> str:
    """The verdict in words that follow the metric's direction; a speed-up is never called
    better when the quality gate found the output worse."""
    verdict = row["verdict"]
    if verdict == "better":
        return "faster, but lower quality" if quality_lower else "faster, better"
    if verdict == "worse":
        return "slower, worse"
    if verdict == "different":
        return "more output" if row["median_diff_pct"] > 0 else "less output"
    return str(verdict)


def summary_sentence(row: pd.Series, noise_floor: bool, quality_lower: bool = False) -> str:
    """One sentence per stage and metric, e.g. `report stage: median TTFT 820 -> 410 ms
    (-50.0%, faster, better, p = 0.004); mean 830 -> 412 ms (-50.4%).`"""
    metric = row["metric"]
    unit = LEVEL_METRIC_BY_NAME[metric].unit
    words = verdict_words(row, quality_lower)
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


def quality_line(quality: dict[str, Any], skipped: Collection[str] = ()) -> str:
    """The data-quality findings in one sentence, for the executive summary; outliers of the
    metrics in `skipped` (those that did not apply) are counted apart."""
    outliers = [o for o in quality["outliers"] if o["metric"] not in skipped]
    left_out = sum(1 for o in outliers if o["left_out"])
    apart = len(quality["outliers"]) - len(outliers)
    parts = [
        f"{len(quality['errors'])} failed call(s)",
        f"{len(outliers)} outlier(s), {left_out} left out of the verdict test"
        + (f" ({apart} more in metrics that did not apply)" if apart else ""),
        f"{len(quality['reloaded_calls'])} measured call(s) flagged as reloads",
        f"{len(quality['load_spikes'])} measured call(s) with a model load",
        f"{len(quality['truncated_calls'])} truncated prompt(s)",
    ]
    unequal = quality["unequal_work"]
    parts.append("the arms did the same work" if not unequal
                 else f"the arms did not do the same work ({len(unequal)} finding(s))")
    return "; ".join(parts)


def cause_text(outlier: dict[str, Any]) -> str:
    """What the record shows about an outlier, with the numbers behind each cause."""
    words = []
    for cause in outlier["causes"]:
        text = CAUSE_WORDS[cause]
        if cause == "model_load":
            text += (f": {fmt_value(outlier['load_ms'], 'load_ms')} against "
                     f"{fmt_value(outlier['warm_load_ms'], 'load_ms')}")
        if cause == "output_length":
            text += (f": {fmt_num(outlier['output_tokens'])} tokens against a median of "
                     f"{fmt_num(outlier['median_output_tokens'])}")
        if cause == "host_busy":
            text += f": {host_busy_text(outlier)}"
        words.append(text)
    return "; ".join(words) or "not shown by the record"


def host_busy_text(outlier: dict[str, Any]) -> str:
    """The host's numbers behind a "host busy" cause: load, other processes, steal."""
    parts = []
    if outlier.get("host_load_1m") is not None:
        parts.append(f"load {fmt_setting(outlier['host_load_1m'])}")
    parts.append(f"other processes {fmt_plain_pct(outlier['host_other_cpu_pct'])} of the CPU "
                 f"against {fmt_plain_pct(outlier['typical_other_cpu_pct'])} typical")
    parts.append(f"steal {fmt_plain_pct(outlier['host_steal_pct'])}")
    return ", ".join(parts)


def unequal_text(finding: dict[str, Any], limit: str) -> str:
    """One unequal-work finding with both arms' numbers."""
    where = f"{finding['stage']} stage: " if finding.get("stage") else ""
    text = CHECK_WORDS[finding["check"]].format(limit=limit)
    numbers = (f"control {fmt_cell(finding['control'])}, "
               f"treatment {fmt_cell(finding['treatment'])}")
    if "diff_pct" in finding:
        numbers += f" ({fmt_pct(finding['diff_pct'])})"
    return f"{where}{text}: {numbers}"
