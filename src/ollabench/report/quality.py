"""The report's data-quality section: failed calls, outliers and their likely causes,
reloads, truncations and unequal work, as quality.json records them."""

from __future__ import annotations

from typing import Any

from mdutils.mdutils import MdUtils

from ollabench.paths import QUALITY_FILE
from ollabench.report.format import fmt_int, fmt_num, fmt_plain_pct, fmt_setting, fmt_value
from ollabench.report.inputs import Inputs
from ollabench.report.markdown import list_or_none, table
from ollabench.report.words import cause_text, metric_label, unequal_text

MAX_LISTED = 50  # outliers listed in the report; quality.json has them all


def data_quality(md: MdUtils, inputs: Inputs) -> None:
    # Outliers of a metric that did not apply (applicable.py) are not listed.
    quality = {**inputs.quality, "outliers": [o for o in inputs.quality["outliers"]
                                              if o["metric"] not in inputs.not_applicable]}
    md.new_header(2, "Data quality", add_table_of_contents="n")
    conditions = quality["conditions"]
    rows = [[arm, f"`{a['profile']}`", a["calls"], a["measured"], a["warmups"],
             conditions[arm]["primers"], a["errors"],
             a["retries"], a["reloaded"], a["runs"],
             f"{fmt_value(a['warmup_load_ms_median'], 'load_ms')} / "
             f"{fmt_value(a['warmup_load_ms_mean'], 'load_ms')}"]
            for arm, a in quality["arms"].items()]
    table(md, ["Arm", "Profile", "Calls", "Measured", "Warm-ups", "Primers", "Failed",
                "Retries", "Reloaded (left out)", "Runs", "Warm-up load (median / mean)"], rows)
    for title, section in (("Outliers", _outliers_section),
                           ("Prompt cache", _cache_section),
                           ("Reloads and model loads", _reloads_section),
                           ("Truncations, context shifts and length stops",
                            _truncations_section),
                           ("Failed calls", _failures_section),
                           ("Unequal work", _unequal_section),
                           ("Tool agent tasks", _tasks_section)):
        if title == "Tool agent tasks" and "tasks" not in quality:
            continue  # only the tool agent has tasks
        md.new_header(3, title, add_table_of_contents="n")
        section(md, quality)
    md.new_header(3, "The host", add_table_of_contents="n")
    _host_section(md, quality, inputs.env.get("host_at_start"))


def _host_section(md: MdUtils, quality: dict[str, Any],
                  at_start: dict[str, Any] | None) -> None:
    """What else the machine was doing: other processes' CPU, steal, load (host.py)."""
    if at_start:
        md.new_paragraph(
            f"Before the first call: load {fmt_setting(at_start.get('host_load_1m'))}, other "
            f"processes {fmt_plain_pct(at_start.get('host_other_cpu_pct'))} of the CPU, "
            f"steal {fmt_plain_pct(at_start.get('host_steal_pct'))}.")
    host = quality.get("host") or {}
    if all(value is None for arm in host.values() for value in arm.values()):
        md.new_paragraph("Not recorded (records made before ollabench recorded the host).")
        return
    md.new_paragraph("During the measured calls (docs/metrics.md, The host while the call "
                     "ran): CPU used by other processes and stolen by the hypervisor, as a "
                     "share of the machine, and the 1-minute load average.")
    table(md, ["Arm", "Other processes (median)", "Other processes (max)", "Steal (max)",
               "Load average (max)"],
          [[arm, fmt_plain_pct(h["other_cpu_pct_median"]),
            fmt_plain_pct(h["other_cpu_pct_max"]), fmt_plain_pct(h["steal_pct_max"]),
            fmt_setting(h["load_1m_max"])]
           for arm, h in host.items()])


def _tasks_section(md: MdUtils, quality: dict[str, Any]) -> None:
    md.new_paragraph("One task per run and arm: its turns, the tool calls it made, those "
                     "the tools could not run (unknown tool, bad arguments, not valid JSON), "
                     "how it ended, and its whole time (turns plus tools; docs/metrics.md).")
    rows = [[arm, t["tasks"], fmt_num(t["turns_mean"]), t["tool_calls"],
             f"{t['invalid_tool_calls']} ({fmt_plain_pct(t['invalid_pct'])})",
             ", ".join(f"{k} {v}" for k, v in sorted(t["ended_by"].items())),
             fmt_num(t["task_s_median"])]
            for arm, t in quality["tasks"].items()]
    table(md, ["Arm", "Tasks", "Turns (mean)", "Tool calls", "Invalid (share)", "Ended by",
               "Task time, s (median)"], rows)


def _outliers_section(md: MdUtils, quality: dict[str, Any]) -> None:
    outliers = quality["outliers"]
    if not outliers:
        md.new_paragraph("No outliers.")
        return
    md.new_paragraph("Per arm, stage and metric, values with a robust z above "
                     f"{fmt_setting(quality['settings']['outlier_z'])}. Those also that far "
                     "from the other arm are left out of the verdict test; the others stay in "
                     "(they are within what the other arm shows).")
    table(md, ["Arm", "Stage", "Metric", "Run", "Value", "Median", "Robust z",
                "Left out of the test", "Likely cause"],
           [[o["arm"], o["stage"], metric_label(o["metric"]), o["run"],
             fmt_value(o["value"], o["metric"]), fmt_value(o["median"], o["metric"]),
             fmt_num(o["robust_z"]), "yes" if o["left_out"] else "no", cause_text(o)]
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
    items += [f"{c['arm']} run {c['run']} {c['stage']} ({c['phase']}): "
              + ("a reload was due to the options sent but none was seen" if c["reload_expected"]
                 else "reloaded though the options sent did not call for it (evicted, or "
                 "another client?)") + f", load {fmt_value(c.get('load_ms'), 'load_ms')}"
              for c in quality["reload_mismatches"]]
    list_or_none(md, items, "No measured call was flagged as a reload or paid a model load "
                  "(warm-ups absorb them), and every reload the options called for was seen.")


def _truncations_section(md: MdUtils, quality: dict[str, Any]) -> None:
    truncated = [f"{c['arm']} run {c['run']} {c['stage']} ({c['phase']}): {_cut_text(c)}"
                 for c in quality["truncated_calls"]]
    unknown = {arm: (c.get("truncated") or {}).get("unknown", 0)
               for arm, c in quality["conditions"].items()}
    unknown_text = ", ".join(f"{n} {arm} call(s)" for arm, n in unknown.items() if n)
    none_text = "No prompt was truncated."
    if unknown_text:
        none_text = ("No prompt was truncated among the calls where it is known; for "
                     f"{unknown_text} the server gives no way to tell (docs/metrics.md, "
                     "`truncated`).")
    list_or_none(md, truncated, none_text)
    if truncated and unknown_text:
        md.new_paragraph(f"Truncation is unknown for {unknown_text}.")
    shifts = quality["context_shift_calls"]
    if shifts:
        md.new_paragraph("Context shifts (the prompt and the output went past the context, so "
                         "the server discarded part of its cache while generating): "
                         + "; ".join(f"{c['arm']} run {c['run']} {c['stage']} "
                                     f"({fmt_int(c.get('prompt_tokens'))} + "
                                     f"{fmt_int(c.get('output_tokens'))} tokens, num_ctx "
                                     f"{fmt_int(c.get('num_ctx'))})" for c in shifts) + ".")
    stops = [f"{arm}: " + ", ".join(f"{stage} {n}" for stage, n in counts["length_stops"].items())
             for arm, counts in quality["arms"].items() if counts["length_stops"]]
    if stops:
        md.new_paragraph("Measured calls stopped by the output cap (`done_reason: length`): "
                         + "; ".join(stops) + ".")


def _cut_text(call: dict[str, Any]) -> str:
    """A truncated call: refused by the server (truncate: false), or cut to what it saw."""
    context = f"num_ctx {fmt_int(call.get('num_ctx'))}"
    if call.get("http_status") is not None:
        return (f"prompt longer than the context ({context}), refused with HTTP "
                f"{fmt_int(call['http_status'])}")
    if call.get("prompt_tokens") is not None:
        return f"prompt truncated to {fmt_int(call['prompt_tokens'])} tokens ({context})"
    return f"prompt truncated ({context})"


def _cache_section(md: MdUtils, quality: dict[str, Any]) -> None:
    conditions = quality["conditions"]
    rows = [[arm, ", ".join(f"{state} {n}" for state, n in c["cache_state"].items()),
             ", ".join(f"{key} {n}" for key, n in c["cache_controlled"].items() if n)]
            for arm, c in conditions.items() if c.get("cache_state")]
    if not rows:
        md.new_paragraph("The records do not say which cache state the calls met.")
        return
    md.new_paragraph("Measured calls by the prompt-cache state they met (`cold`: the whole "
                     "prompt evaluated; `warm`: a primer call had just run the same prompt), "
                     "and whether ollabench arranged that state (controlled) or assumed it:")
    table(md, ["Arm", "Cache state", "Controlled"], rows)


def _failures_section(md: MdUtils, quality: dict[str, Any]) -> None:
    if not quality["errors"]:
        md.new_paragraph("No call failed.")
        return
    table(md, ["Seq", "Run", "Arm", "Stage", "Phase", "Attempt", "Outcome", "Error"],
           [[e["seq"], e["run"], e["arm"], e["stage"], e["phase"], e["attempt"],
             e.get("outcome"), e["error"]] for e in quality["errors"]])


def _unequal_section(md: MdUtils, quality: dict[str, Any]) -> None:
    limit = fmt_setting(quality["settings"]["unequal_tokens_pct"])
    list_or_none(md, [unequal_text(u, limit) for u in quality["unequal_work"]],
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
