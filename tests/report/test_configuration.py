"""The configuration section: requested and effective values side by side, confounded
changes named, options the server may ignore marked, and truncation never claimed absent
when it is unknown."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ollabench import report, stats
from ollabench.paths import ENV_FILE
from ollabench.records.schema import CallRecord
from ollabench.report.configuration import confounded_changes
from tests.helpers.report_files import report_with_appendix, write_words
from tests.helpers.synthetic import Scenario, make_records, write_raw
from tests.report.test_report import section

SCENARIO = Scenario(runs=6, cv_pct=2.0)
ASKED = {"control": {}, "treatment": {"num_ctx": 512}}


def _report(tmp_path: Path, records: list[CallRecord], notes: dict[str, str] | None = None,
            figures: bool = False) -> str:
    """The summary and appendix; the figures too where a test asks for them."""
    raw = write_raw(tmp_path / "raw", records, SCENARIO)
    if notes:
        env = json.loads((raw / ENV_FILE).read_text())
        env["backend"]["option_notes"] = notes
        (raw / ENV_FILE).write_text(json.dumps(env))
    processed = tmp_path / "processed"
    stats.run_aggregate(raw, processed, tmp_path / "metrics.json", 5.0)
    path = tmp_path / "report.md"
    if not figures:
        return write_words(raw, processed, path)
    report.run_report(raw, processed, path, tmp_path / "figures")
    return report_with_appendix(path)


def _ran(control: list[int], treatment: list[int], name: str = "num_batch"
         ) -> dict[str, dict[str, list[int]]]:
    return {"control": {name: control}, "treatment": {name: treatment}}


def test_a_change_the_profile_did_not_ask_for_is_named_confounded() -> None:
    found = confounded_changes(ASKED, _ran([1024], [512]))

    assert len(found) == 1
    assert found[0].startswith("Confounded change: the profiles do not change `num_batch`")
    assert "control ran 1024, treatment 512" in found[0]


def test_an_asked_change_that_did_not_happen_is_named() -> None:
    found = confounded_changes(ASKED, _ran([2048], [2048], "num_ctx"))

    assert found == ["`num_ctx` was asked to change (backend default -> 512) but both arms ran "
                     "with 2048: this comparison cannot show an effect of `num_ctx`."]


def test_what_ran_as_asked_or_unknown_raises_nothing() -> None:
    assert confounded_changes(ASKED, _ran([512], [512])) == []
    assert confounded_changes(ASKED, _ran([4096], [512], "num_ctx")) == []
    assert confounded_changes(ASKED, _ran([], [512])) == []


def test_the_table_shows_requested_and_effective_values(tmp_path: Path) -> None:
    records = [replace(r, num_ctx=512, num_batch=512, num_batch_basis="assumed")
               if r.arm == "treatment" else r for r in make_records(SCENARIO)]

    text = section(_report(tmp_path, records), "Configuration of both arms")

    assert "|`num_ctx`|backend default|512|" in text
    assert "|`num_ctx` that ran|4096|512|" in text
    assert ("|`num_batch` that ran|512 (derived from the context)|512 (assumed: the server's "
            "automatic choice, not reported)|") in text
    assert "Confounded" not in text


def test_an_option_the_server_may_ignore_is_marked_and_never_credited(tmp_path: Path) -> None:
    why = "may be ignored by this server (Ollama 0.13.0: architecture unknown)"

    text = _report(tmp_path, make_records(SCENARIO), {"num_gpu": why})

    assert "|`num_gpu` †|backend default|80|" in section(text, "Configuration of both arms")
    assert f"`num_gpu`: {why}" in text
    assert (f"No difference above is evidence of the effect of `num_gpu`, which {why} (see "
            "Configuration).") in section(text, "Executive summary")


def test_an_option_that_cannot_act_is_named_as_such(tmp_path: Path) -> None:
    """chimera's num_gpu on a llama.cpp built without GPU offload: marked in the table like an
    option the server ignores, and no verdict credited to it."""
    why = ("cannot act here: this llama.cpp build has no GPU offload "
           "(llama_supports_gpu_offload() is false), every layer runs on the CPU")

    text = _report(tmp_path, make_records(SCENARIO), {"num_gpu": why})

    config = section(text, "Configuration of both arms")
    assert "|`num_gpu` †|backend default|80|" in config
    assert f"Options marked † cannot act on this engine or server, or it may ignore them: " \
        f"`num_gpu`: {why}." in config
    summary = section(text, "Executive summary")
    assert "evidence of the effect of `num_gpu`, which cannot act here" in summary
    assert "num_gpu" not in summary.split("No difference above")[0]


def test_unknown_truncation_is_never_reported_as_none(tmp_path: Path) -> None:
    records = [replace(r, truncated=None) if r.arm == "control" else r
               for r in make_records(SCENARIO)]

    text = section(_report(tmp_path, records), "Data quality")

    assert "No prompt was truncated." not in text
    assert ("No prompt was truncated among the calls where it is known; for 18 control "
            "call(s) the server gives no way to tell") in text


def test_any_workloads_stages_are_reported_in_their_run_order(tmp_path: Path) -> None:
    """A trace's stage labels, not the agent's: every table in the order a run reaches them
    (here not alphabetical), `workflow` last."""
    names = {"analysis": "triage", "report": "follow_up"}
    records = [replace(r, stage=names.get(r.stage, r.stage)) for r in make_records(SCENARIO)]

    text = _report(tmp_path, records, figures=True)

    summary = section(text, "Executive summary")
    assert summary.index("|triage|TTFT|") < summary.index("|follow_up|TTFT|")
    assert "analysis" not in section(text, "Statistical analysis")
    assert (tmp_path / "figures" / "follow_up_by_arm.png").is_file()
