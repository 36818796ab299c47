"""The report: sections, figures, wording that follows each metric's direction, and numbers
that are the CSVs' numbers."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ollabench import report, stats
from ollabench.paths import PRIMARY_FILE
from ollabench.report.applicable import ALL_ZERO, NO_LOAD
from ollabench.report.verdicts import change_text, verdict_text
from tests.helpers.report_files import report_with_appendix, write_words
from tests.helpers.synthetic import Scenario, make_records, swap_arms, write_raw

SECTIONS = ("Executive summary", "How the experiment stopped", "Configuration of both arms",
            "Methodology", "Data quality", "Conclusion")
APPENDIX_SECTIONS = ("Aggregate results", "Statistical analysis", "Run-by-run results",
                     "System information")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?%?")


def build(tmp_path: Path, scenario: Scenario, swap: bool = False, figures: bool = False
          ) -> dict[str, object]:
    """The report of a synthetic run and the CSVs it read; its figures where asked for."""
    records = make_records(scenario)
    raw = write_raw(tmp_path / "raw", swap_arms(records) if swap else records, scenario)
    processed = tmp_path / "data" / "processed"
    stats.run_aggregate(raw, processed, tmp_path / "reports" / "metrics.json", 5.0)
    path, figures_dir = tmp_path / "reports" / "report.md", tmp_path / "reports" / "figures"
    if figures:
        report.run_report(raw, processed, path, figures_dir)
    else:
        write_words(raw, processed, path)
    return {"text": report_with_appendix(path), "summary_text": path.read_text(),
            "figures": figures_dir,
            "comparisons": pd.read_csv(processed / stats.COMPARISONS_FILE),
            "summary": pd.read_csv(processed / stats.SUMMARY_FILE),
            "primary": pd.read_csv(processed / PRIMARY_FILE),
            "skipped": report.Inputs(raw, processed).not_applicable}


def section(text: str, title: str) -> str:
    """The body of one `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {title}"
    return match.group(1)


@pytest.fixture(scope="module")
def improvement(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Treatment decodes 10% faster and reaches the first token 20% sooner."""
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10, ttft_factor=0.8,
                        failures=[("treatment", 2, "report")],
                        spikes={("control", 7, "analysis", "ttft_ms"): 8.0})
    return build(tmp_path_factory.mktemp("improvement"), scenario, figures=True)


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    scenario = Scenario(runs=10, cv_pct=2.0, eval_rate_gain=0.10, ttft_factor=0.8)
    return build(tmp_path_factory.mktemp("regression"), scenario, swap=True)


@pytest.fixture(scope="module")
def aa_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    scenario = Scenario(runs=10, cv_pct=2.0, treatment_profile="baseline")
    return build(tmp_path_factory.mktemp("aa"), scenario)


def test_sections_in_order_and_header(improvement: dict[str, object]) -> None:
    text, full = str(improvement["summary_text"]), str(improvement["text"])
    assert text.startswith("# ollabench report: smollm2-135m\n")
    positions = [text.index(f"\n## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)
    appendix = full[len(text):]
    assert appendix.startswith("\n# ollabench report, appendix: smollm2-135m\n")
    in_appendix = [appendix.index(f"\n## {title}\n") for title in APPENDIX_SECTIONS]
    assert in_appendix == sorted(in_appendix)
    assert not any(f"\n## {title}\n" in text for title in APPENDIX_SECTIONS)
    header = text[:positions[0]]
    for fact in ("Date: 2025-01-01T00:10:00+00:00",
                 "Model: smollm2-135m (SmolLM2-135M-Instruct.Q4_1.gguf, sha256 abababababab)",
                 "Backend: llamacpp (llama.cpp (llama-cpp-python)) 0.3.36",
                 "Runs: 10 runs per arm, fixed", "Host: testhost", "`chimera` (profile)"):
        assert fact in header
    runs = section(full, "Run-by-run results")
    assert "### Control (`baseline`)" in runs and "### Treatment (`chimera`)" in runs
    config = section(text, "Configuration of both arms")
    assert "|`num_ctx`|backend default|512|" in config


def test_figures_are_written_and_embedded(improvement: dict[str, object]) -> None:
    figures = Path(str(improvement["figures"]))
    names = sorted(p.name for p in figures.iterdir())
    assert names == ["analysis_by_arm.png", "per_run.png", "primary_looks.png",
                     "report_by_arm.png", "workflow_by_arm.png"]
    for name in names:
        assert (figures / name).read_bytes().startswith(b"\x89PNG")
        assert f"](figures/{name})" in str(improvement["text"])


def _primary_line(summary: str, stage: str, metric: str) -> str:
    return next(line for line in summary.splitlines()
                if line.startswith(f"|{stage}|{report.metric_label(metric)}|"))


def test_improvement_wording(improvement: dict[str, object]) -> None:
    summary = section(str(improvement["text"]), "Executive summary")
    assert re.search(r"\|-\d+\.\d% \(.*\)\|better\|$", _primary_line(summary, "report", "ttft_ms"))
    assert re.search(r"\|\+\d+\.\d% \(.*\)\|better\|$",
                     _primary_line(summary, "workflow", "eval_tok_s"))
    assert summary.splitlines()[3].startswith("Yes: the treatment is better on")
    text = str(improvement["text"]).lower()
    assert not re.search(r"-\d[\d.]*%?\s*(improvement|reduction)", text)
    assert "reduction" not in text and "improvement" not in text


def test_regression_wording(regression: dict[str, object]) -> None:
    text = str(regression["text"])
    summary = section(text, "Executive summary")
    # higher TTFT: slower, worse
    assert re.search(r"\|\+\d+\.\d% \(.*\)\|worse\|$", _primary_line(summary, "report", "ttft_ms"))
    assert re.search(r"\|-\d+\.\d% \(.*\)\|worse\|$",
                     _primary_line(summary, "workflow", "eval_tok_s"))
    assert "improve" not in text.lower() and "|better|" not in summary


def test_aa_run_is_presented_as_a_noise_floor(aa_run: dict[str, object]) -> None:
    text = str(aa_run["text"])
    summary = section(text, "Executive summary")
    assert "A/A run: both arms ran `baseline`" in summary and "run-to-run noise" in summary
    assert "noise floor" in section(text, "Conclusion")
    for part in (summary, section(text, "Conclusion")):
        # "significant" only where a test says so: here, only "no significant difference"
        assert "significant" not in part.replace("no significant difference", "")


def test_what_could_not_be_concluded_is_said(tmp_path: Path) -> None:
    scenario = Scenario(runs=3, cv_pct=20.0, eval_rate_gain=0.05)
    summary = section(str(build(tmp_path, scenario)["text"]), "Executive summary")
    assert "Not decided: the runs could not tell the arms apart on" in summary
    assert re.search(r"\|inconclusive: no change larger than \+-\d+\.\d% \(95%\)\|", summary)


def test_data_quality_lists_failed_calls_and_outliers(improvement: dict[str, object]) -> None:
    quality = section(str(improvement["text"]), "Data quality")
    assert "|treatment|report|measured|1|stalled|ReadTimeout: timed out|" in quality
    assert re.search(r"\|control\|analysis\|TTFT\|7\|\d+ ms\|\d+ ms\|[\d.]+\|yes\|", quality)
    assert "the number of failed calls differs: control 0, treatment 1" in quality


def test_every_number_matches_the_csvs(improvement: dict[str, object]) -> None:
    text = str(improvement["text"])
    comparisons = improvement["comparisons"]
    analysis = section(text, "Statistical analysis")
    skipped = improvement["skipped"]
    assert skipped == {"load_ms": NO_LOAD}  # the embedded engine, no load in a measured call
    for row in comparisons.to_dict("records"):
        if row["metric"] in skipped:
            assert f"|{report.metric_label(row['metric'])}|" not in text
            continue
        cells = next(line for line in analysis.splitlines()
                     if line.startswith(f"|{row['stage']}|{report.metric_label(row['metric'])}|"))
        expected = [
            row["stage"], report.metric_label(row["metric"]), row["better"],
            f"{row['n_control']}/{row['n_treatment']}",
            report.fmt_value(row["control_median"], row["metric"]),
            report.fmt_value(row["treatment_median"], row["metric"]),
            report.fmt_pct(row["median_diff_pct"]),
            f"{report.fmt_pct(row['ci_low_pct'])} to {report.fmt_pct(row['ci_high_pct'])}",
            report.fmt_value(row["control_mean"], row["metric"]),
            report.fmt_value(row["treatment_mean"], row["metric"]),
            report.fmt_pct(row["mean_diff_pct"]), report.fmt_p(row["p_welch"]),
            report.fmt_p(row["p_mannwhitney"]), report.fmt_p(row["p_paired"]),
            report.fmt_p(row["p_holm"]), report.fmt_effect(row["hedges_g"]),
            report.fmt_effect(row["cliffs_delta"]), report.fmt_plain_pct(row["mde_pct"]),
            row["verdict"]]
        assert cells.strip("|").split("|") == expected
    aggregate = section(text, "Aggregate results")
    for row in improvement["summary"].to_dict("records"):
        if row["metric"] in skipped:
            continue
        unit = stats.METRIC_BY_NAME[row["metric"]].unit
        prefix = f"|{row['stage']}|{report.metric_label(row['metric'])} ({unit})|{row['arm']}|"
        cells = next(line for line in aggregate.splitlines() if line.startswith(prefix))
        assert cells.strip("|").split("|")[3:8] == [
            str(row["n"]), report.fmt_num(row["mean"]), report.fmt_num(row["median"]),
            report.fmt_num(row["sd"]), report.fmt_plain_pct(row["cv_pct"])]
    summary = section(text, "Executive summary")
    for row in improvement["primary"].to_dict("records"):
        assert _primary_line(summary, row["stage"], row["metric"]).strip("|").split("|") == [
            row["stage"], report.metric_label(row["metric"]),
            report.fmt_value(row["control_mean"], row["metric"]),
            report.fmt_value(row["treatment_mean"], row["metric"]), change_text(row),
            verdict_text(row, 5.0)]


def test_a_faster_treatment_with_worse_output_is_not_called_better(tmp_path: Path) -> None:
    scenario = Scenario(runs=10, eval_rate_gain=0.3, quality_loss=0.5)
    text = str(build(tmp_path, scenario)["text"])
    summary = section(text, "Executive summary")
    assert "Quality gate: faster, but lower quality." in summary
    assert "Yes:" not in summary and "Faster, but lower quality: the treatment is better" \
        in summary
    assert "not a better profile" in section(text, "Conclusion")


def test_an_a_a_run_shows_no_quality_change(aa_run: dict[str, object]) -> None:
    summary = section(str(aa_run["text"]), "Executive summary")
    assert "Quality (A/A): no quality change detected." in summary
    assert "alike in the analysis stage" in summary and "alike in the report stage" in summary


def test_the_header_states_the_sequential_budget_not_a_fixed_count() -> None:
    from ollabench.report.sections import _planned_runs

    sequential = {"runs": 10, "stopping": {"mode": "sequential", "min_runs": 8, "max_runs": 40}}
    assert _planned_runs(sequential) == "until decided, 8 to 40 per arm (sequential)"
    assert _planned_runs({"runs": 10, "stopping": {"mode": "fixed"}}) == "10 runs per arm, fixed"


def test_the_first_screen_holds_the_answer(aa_run: dict[str, object]) -> None:
    """Header (with the host), the one-sentence answer, the verdict table with its
    estimator, the noise and the data quality, then the link to the full tables: all
    before the first section after the summary, within a screen."""
    text = str(aa_run["summary_text"])
    first = text[:text.index("\n## How the experiment stopped\n")]
    assert len(first.splitlines()) <= 45
    assert "- Host: testhost, Test CPU" in first
    assert re.search(r"^No change that matters: every primary comparison is equivalent", first,
                     re.M)
    assert ("|Stage|Metric|Control (mean of runs)|Treatment (mean of runs)|Paired change: "
            "geometric mean of per-block ratios (95% interval)|Verdict|") in first
    assert "it can differ from the ratio of the two means beside it" in first
    assert re.search(r"^Noise: run-to-run CV of whole runs: TTFT control \d", first, re.M)
    assert first.rstrip().endswith("[appendix](appendix.md).")


def test_metrics_that_did_not_apply_are_named_once(tmp_path: Path) -> None:
    """Quality metrics 0 in every call of both arms, and the embedded engine's load time
    with no load: one line, no table row, no outlier row, no verdict counted."""
    scenario = Scenario(runs=6, cv_pct=2.0, treatment_profile="baseline",
                        spikes={("control", 3, "analysis", "load_ms"): 8.0})
    records = [replace(r, numbers_supported=0, parts_found=0)
               if r.numbers_supported is not None else r for r in make_records(scenario)]
    raw = write_raw(tmp_path / "raw", records, scenario)
    processed = tmp_path / "processed"
    stats.run_aggregate(raw, processed, tmp_path / "metrics.json", 5.0)
    text = write_words(raw, processed, tmp_path / "report.md")
    summary = section(text, "Executive summary")

    lines = [line for line in summary.splitlines() if line.startswith("Not applicable here")]
    assert lines == [
        "Not applicable here, left out of the tables (the CSVs keep them): figures found in "
        f"the input, figures quoted from the input, required parts present: {ALL_ZERO}; "
        f"load time: {NO_LOAD}."]
    for label in ("figures found in the input", "required parts present", "load time"):
        assert f"|{label}|" not in text and f"|{label} (" not in text
    assert "Quality (A/A)" not in summary
    assert "Quality gate: not applied; no quality metric applied to these outputs" in summary
    quality = section(text, "Data quality")
    assert "|load time|" not in quality
    assert "more in metrics that did not apply" in summary
    counted = section(text, "Conclusion")
    comparisons = pd.read_csv(processed / stats.COMPARISONS_FILE)
    applied = comparisons.loc[~comparisons["metric"].isin(
        ["faithful_pct", "numbers_supported", "parts_pct", "load_ms"])]
    assert f"All {len(applied)} comparisons that applied:" in counted
