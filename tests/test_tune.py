"""`ollabench tune`: bad settings refused before the first call (one line naming the key, exit
2), and a search against a fake Ollama server with a known speed surface that finds the
best pair, never picks the faster setting that truncates, confirms the winner and writes
its profile; a killed search resumes the same study."""

from __future__ import annotations

import copy
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from ollabench.cli import main
from ollabench.config.schema import validate_config
from ollabench.errors import ConfigError
from ollabench.records.schema import read_records
from ollabench.tune import run_tune
from ollabench.tune.candidate import (
    CandidateResult,
    capacity_verdict,
    read_capacity,
    worst_quality_change,
)
from ollabench.tune.output import (
    candidate_line,
    pareto_front,
    speed_gain_pct,
    summary,
    write_profile,
    write_report,
)
from ollabench.tune.search import (
    Candidate,
    TuneResult,
    _running,
    best_candidate,
    finished,
    open_study,
    stop_reason,
)
from ollabench.tune.settings import TUNE_DATA, TUNE_ROOT, validate_tune
from tests.helpers.fake_ollama import Script
from tests.helpers.project import ROOT
from tests.helpers.speed_surface import MODEL, SurfaceOllama, grid_surface

BEST = (256, 2)
CUT_CTX = 16  # below the tiny workload's prompt: cut, and fastest of all
SPACE = {"num_batch": [256, 512], "num_thread": [2, 4], "num_ctx": [CUT_CTX, 2048]}


@pytest.fixture
def tune_raw(composed: dict[str, Any]) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "conf" / "tune" / "default.yaml").read_text())
    return raw | {"space": copy.deepcopy(SPACE), "race": {**raw["race"], "max_runs": 8},
                  "confirm": {**raw["confirm"], "max_runs": 12}}


@pytest.mark.parametrize(("change", "message"), [
    ({"space": {}}, "tune.space: empty"),
    ({"space": {"num_thread": {"low": 4, "high": 1, "step": 1}}},
     "tune.space.num_thread: low (4) is greater than high (1)"),
    ({"space": {"num_bach": [1, 2]}}, "tune.space.num_bach: unknown option"),
    ({"space": {"mirostat": [0, 1]}}, "tune.space.mirostat: Ollama 0.12.5 ignores this option"),
    ({"objective": "workflow/ttft_ms"},
     "tune.objective: 'workflow/ttft_ms' is not a primary comparison"),
    ({"budget": {"max_candidates": 0, "max_minutes": 60}},
     "tune.budget.max_candidates: too small for one candidate"),
    ({"budget": {"max_candidates": 4, "max_minutes": 1}},
     "tune.budget.max_minutes: 1 is too small for one candidate"),
])
def test_bad_settings_stop_before_the_first_call_with_one_line(
        change: dict[str, Any], message: str, tune_raw: dict[str, Any], raw_config,
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "tune" / "bad.yaml").write_text(yaml.safe_dump(tune_raw | change))
    with SurfaceOllama(grid_surface(BEST, CUT_CTX)) as server:
        code = main(["tune", "--tune", "bad", "--conf", str(conf), "--root", str(tmp_path),
                     *_model_overrides(server.url, raw_config)])
        assert server.chats() == []
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"ollabench: error: {message}"), err


def _model_overrides(url: str, raw_config: dict[str, Any]) -> list[str]:
    return ["model=qwen2.5-7b", f"model.host='{url}'",
            f"workload.dir='{raw_config['workload']['dir']}'",
            "workload.num_predict.analysis=12", "workload.num_predict.report=12",
            "run.read_timeout_s=5", "run.retry_backoff_s=0.01", "run.max_retries=1"]


def _config(raw_config: dict[str, Any], url: str):
    raw = copy.deepcopy(raw_config)
    raw["model"] = {"name": MODEL, "backend": "ollama", "gguf": None, "host": url,
                    "think": None, "keep_alive": None}
    raw["workload"]["num_predict"] = {"analysis": 12, "report": 12}
    raw["run"].update(retry_backoff_s=0.01, read_timeout_s=5.0, max_retries=1)
    return validate_config(raw)


@pytest.mark.slow
def test_tune_finds_the_best_pair_skips_the_truncating_one_and_confirms_it(
        tune_raw, raw_config, tmp_path: Path) -> None:
    with SurfaceOllama(grid_surface(BEST, CUT_CTX)) as server:
        config = _config(raw_config, server.url)
        outcome = run_tune(config, validate_tune(tune_raw, config), tmp_path, progress=False,
                           experiments=False)

    result = outcome.result
    assert len([c for c in result.candidates if c.duplicate_of is None]) == 8  # the grid
    cut = [c for c in result.candidates if c.result.options["num_ctx"] == CUT_CTX]
    assert cut and all(not c.result.feasible for c in cut)
    assert all(any(v.startswith("truncation") for v in c.result.violations) for c in cut)
    assert result.best is not None
    assert result.best.result.options == {"num_batch": 256, "num_thread": 2, "num_ctx": 2048}
    assert result.confirmed and result.confirm.verdict == "better"
    profile = yaml.safe_load(outcome.profile.read_text())
    assert profile["options"] == result.best.result.options
    assert f"trial {result.best.number}" in outcome.profile.read_text()
    assert "Winner's curse" in outcome.report.read_text()
    assert (outcome.report.parent / "candidates.png").stat().st_size > 0
    assert "## Speed and quality" in outcome.report.read_text()
    assert (outcome.report.parent / "pareto.png").stat().st_size > 0


@pytest.mark.slow
def test_a_killed_tune_resumes_the_same_study(tune_raw, raw_config, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "tune" / "small.yaml").write_text(yaml.safe_dump(
        tune_raw | {"space": {"num_batch": [256, 512], "num_thread": [2]}}))
    with SurfaceOllama(grid_surface(BEST, CUT_CTX)) as server:
        args = ["tune", "--tune", "small", "--conf", str(conf), "--root", str(tmp_path),
                "--no-progress", "--no-experiments", *_model_overrides(server.url, raw_config)]
        proc = subprocess.Popen([sys.executable, "-m", "ollabench.cli", *args], cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # the first candidate is measured ...
        journal = tmp_path / TUNE_ROOT / "tune-qwen2.5-7b" / "journal"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                p.read_text().count("\n") >= 3 for p in journal.rglob("calls.jsonl")):
            time.sleep(0.01)  # ... and the second is in flight
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert first.startswith("trial 0 ")
        kept = read_records(next(journal.rglob("calls.jsonl")))
        trial0 = tmp_path / TUNE_DATA / "tune-qwen2.5-7b" / "trial-0" / "metrics.json"
        measured_at = trial0.stat().st_mtime_ns

        assert main(args) == 0

    assert trial0.stat().st_mtime_ns == measured_at  # not measured again
    tune = validate_tune(yaml.safe_load((conf / "tune" / "small.yaml").read_text()),
                         _config(raw_config, server.url))
    study = open_study(tune, "tune-qwen2.5-7b", tune.storage_spec(tmp_path, "tune-qwen2.5-7b"),
                       "lower")
    measured = [c for c in finished(study) if c.duplicate_of is None]
    assert sorted(c.result.options["num_batch"] for c in measured) == [256, 512]
    resumed = next(c for c in measured if c.number != 0)
    records = read_records(Path(resumed.result.out_dir) / "raw" / "calls.jsonl")
    assert {r.key for r in kept} <= {r.key for r in records}  # its journal resumed
    assert {r.started_at for r in kept} <= {r.started_at for r in records}


def test_when_no_setting_beats_the_baseline_nothing_is_written(
        tune_raw, raw_config, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "tune" / "slower.yaml").write_text(yaml.safe_dump(
        tune_raw | {"space": {"num_batch": [64]}}))

    def slower_with_any_option(options: dict[str, Any]) -> Script:
        return Script(ttft_ms=5.0, token_ms=2.0 if "num_batch" in options else 1.0, tokens=12)

    with SurfaceOllama(slower_with_any_option) as server:
        code = main(["tune", "--tune", "slower", "--conf", str(conf), "--root", str(tmp_path),
                     "--no-progress", "--no-experiments",
                     *_model_overrides(server.url, raw_config)])
    out = capsys.readouterr().out
    assert code == 0
    assert "no setting beat the baseline by more than the threshold" in out
    assert "trial 0 [num_batch=64]: workflow/e2e_ms +" in out
    assert not list(conf.glob("profile/tuned_*"))
    assert (tmp_path / "reports" / "tune" / "tune-qwen2.5-7b" / "tune.md").is_file()


def test_the_pareto_front_keeps_what_nothing_beats_on_both_speed_and_quality() -> None:
    """Known truth, objective e2e_ms (lower is better): speed gain = -change."""
    def cand(number: int, faster_pct: float, quality_pct: float) -> Candidate:
        return Candidate(number, CandidateResult(options={"num_batch": number},
                                                 ratio=1.0 - faster_pct / 100.0,
                                                 quality_pct=quality_pct))

    candidates = [cand(0, 10.0, 0.0),     # faster, no loss: on the front
                  cand(1, 20.0, -30.0),   # fastest, at a price: on the front
                  cand(2, 5.0, -5.0),     # beaten by 0 on both
                  cand(3, -5.0, 2.0),     # slower but better: nothing beats its quality
                  cand(4, -3.0, -1.0),    # beaten by the baseline itself
                  cand(5, 50.0, math.nan)]  # no quality figure: off the chart
    front = pareto_front(candidates, "lower")
    assert [c.number for c in front] == [0, 1, 3]
    assert speed_gain_pct(candidates[1].result, "lower") == pytest.approx(20.0)
    assert speed_gain_pct(candidates[1].result, "higher") == pytest.approx(-20.0)


def test_the_quality_axis_is_the_worst_whole_run_quality_change() -> None:
    rows = [("workflow", "parts_pct", -12.5), ("workflow", "faithful_pct", 3.0),
            ("workflow", "judge_score", math.nan), ("analysis", "parts_pct", -40.0),
            ("workflow", "e2e_ms", -50.0)]
    table = pd.DataFrame(rows, columns=["stage", "metric", "median_diff_pct"])
    assert worst_quality_change(table) == pytest.approx(-12.5)
    assert math.isnan(worst_quality_change(table.iloc[3:]))


def test_jobs_sharing_a_journal_file_see_each_others_candidates_in_flight(
        tune_raw, raw_config, tmp_path: Path) -> None:
    """What the jobs of `tune --workers` rely on: a candidate one job measures counts against
    the budget of the others, which leave it running; only a driver's open closes it."""
    tune = validate_tune(tune_raw | {"space": {"num_batch": [256, 512]},
                                     "storage": "jobs/study.journal"},
                         _config(raw_config, "http://127.0.0.1:9"))
    storage = tune.storage_spec(tmp_path, "s")
    assert storage == str(tmp_path.resolve() / "jobs" / "study.journal")
    open_study(tune, "s", storage, "lower")  # the driver: enqueues the grid
    first = open_study(tune, "s", storage, "lower", driver=False)
    in_flight = first.ask()
    in_flight.suggest_categorical("num_batch", [256, 512])  # a grid point from the queue
    second = open_study(tune, "s", storage, "lower", driver=False)
    assert [t.number for t in _running(second)] == [in_flight.number]
    second.ask().suggest_categorical("num_batch", [256, 512])
    assert stop_reason(second, tune) == "every point of the space measured"
    assert stop_reason(second, tune.model_copy(
        update={"space": {"num_batch": [128, 256, 512]}})) == ""

    driver = open_study(tune, "s", storage, "lower")  # a rerun's driver: nothing runs now
    assert _running(driver) == []
    assert len(driver.get_trials(states=(TrialState.WAITING,))) == 2  # asked again first


def test_a_confirmation_that_did_not_finish_is_not_reported_as_no_winner(
        tmp_path: Path) -> None:
    best = Candidate(3, CandidateResult({"num_batch": 256}, ratio=0.8, low_pct=-25.0,
                                        high_pct=-15.0, verdict="better", runs=8))
    result = TuneResult("s", "workflow/e2e_ms", "lower", [best], best, None, False,
                        "1 of 2 search jobs failed; rerun to resume the study")
    assert summary(result) == ("not decided: the confirmatory run of the best candidate, "
                               "trial 3, did not finish (rerun tune to confirm it)")
    report = write_report(result, tmp_path).read_text()
    assert "Not finished: the confirmation job failed; rerun tune to confirm." in report
    assert write_profile(result, "m", "baseline", tmp_path) is None


def _loaded(raw_config: dict[str, Any], levels: list[int], slo: dict[str, Any]):
    raw = copy.deepcopy(raw_config)
    raw["run"].update(concurrency=levels, slo=slo)
    return validate_config(raw)


@pytest.mark.parametrize(("levels", "slo", "message"), [
    ([1], {"e2e_ms": 9000}, "tune.objective: capacity needs run.concurrency with more than "
                            "one level, e.g. [1, 2, 4]; got [1]"),
    ([1, 2], {"ttft_ms": None, "e2e_ms": None},
     "tune.objective: capacity needs a bound in run.slo (run.slo.ttft_ms or run.slo.e2e_ms, "
     "in ms); both are null"),
])
def test_capacity_needs_levels_and_an_slo(tune_raw, raw_config, levels: list[int],
                                          slo: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_tune(tune_raw | {"objective": "capacity"}, _loaded(raw_config, levels, slo))
    assert str(raised.value) == message
    config = _loaded(raw_config, [1, 2], {"e2e_ms": 9000})
    assert validate_tune(tune_raw | {"objective": "capacity"}, config).objective == "capacity"
    with pytest.raises(ConfigError, match=r"^tune.objective: 'speed' is not a primary "
                                          r"comparison \(run.primary: .*\) nor capacity$"):
        validate_tune(tune_raw | {"objective": "speed"}, config)


def _by_capacity(number: int, level: float, rate: float, control_level: float = 1,
                 control_rate: float = 10.0) -> Candidate:
    result = CandidateResult({"num_batch": number}, capacity=level, tasks_per_min=rate,
                             control_capacity=control_level, control_tasks_per_min=control_rate)
    return Candidate(number, result)


def test_capacity_ranks_by_level_then_tasks_per_minute() -> None:
    """The largest capacity wins, a tie goes to more tasks/min at that level, and a winner
    must beat the baseline's own capacity (or match it with more tasks/min)."""
    candidates = [_by_capacity(0, 2, 20.0), _by_capacity(1, 4, 30.0), _by_capacity(2, 4, 35.0),
                  _by_capacity(3, 1, 50.0)]
    assert best_candidate(candidates, "higher").number == 2
    assert best_candidate([_by_capacity(0, 1, 10.5)], "higher").number == 0  # tie, faster
    assert best_candidate([_by_capacity(0, 1, 9.0), _by_capacity(1, 0, 0.0)], "higher") is None
    assert [c.result.objective_value() for c in candidates] == [2, 4, 4, 1]


def test_capacity_verdict_and_figures_from_load_csv() -> None:
    """load.csv of a run whose treatment keeps its tasks within the SLO at 2 agents and the
    control does not: capacity 2 against 1, tasks/min of each at its own capacity."""
    load = pd.DataFrame([
        {"arm": arm, "concurrency": level, "blocks": 4, "tasks_per_min": rate,
         "goodput_pct": goodput}
        for arm, level, rate, goodput in [("control", 1, 10.0, 100.0), ("control", 2, 12.0, 50.0),
                                          ("treatment", 1, 11.0, 100.0),
                                          ("treatment", 2, 21.0, 100.0)]])
    result = CandidateResult({"num_batch": 256})
    read_capacity(result, load, 5.0)
    assert (result.capacity, result.tasks_per_min) == (2.0, 21.0)
    assert (result.control_capacity, result.control_tasks_per_min) == (1.0, 10.0)
    assert result.verdict == "better" and result.runs == 4 and result.ratio == 2.1
    same = CandidateResult({}, capacity=2, tasks_per_min=10.4, control_capacity=2,
                           control_tasks_per_min=10.0)
    assert capacity_verdict(same, 5.0) == "equivalent"
    assert capacity_verdict(replace(same, tasks_per_min=9.0), 5.0) == "worse"
    assert capacity_verdict(replace(same, capacity=0, control_capacity=0), 5.0) == "equivalent"
    assert "capacity 2 agent(s) at 21.0 tasks/min (baseline 1 at 10.0)" in candidate_line(
        Candidate(0, result), "capacity")


CAPACITY_SLO_MS = 450.0  # a task: 2 calls of 12 tokens; two agents share the one slot


def _slot_bound(options: dict[str, Any]) -> Script:
    """The slower agent's task alone and with two agents on the one slot (4 calls in a row):
    token_ms 15 for the baseline (370 and 740 ms), 4 with num_batch 256 (106 and 212 ms),
    12 with 512 (298 and 596 ms)."""
    token_ms = {256: 4.0, 512: 12.0}.get(options.get("num_batch"), 15.0)
    return Script(ttft_ms=5.0, token_ms=token_ms, tokens=12)


@pytest.mark.slow
def test_tune_for_capacity_picks_the_setting_that_serves_two_agents(
        tune_raw, raw_config, tmp_path: Path) -> None:
    """On a server with one slot, only num_batch 256 keeps two agents' tasks within the SLO:
    its capacity is 2 against the baseline's 1, and fresh runs confirm it."""
    raw = tune_raw | {"objective": "capacity", "space": {"num_batch": [256, 512]},
                      "race": {**tune_raw["race"], "min_runs": 4, "max_runs": 4},
                      "confirm": {**tune_raw["confirm"], "min_runs": 4, "max_runs": 4}}
    with SurfaceOllama(_slot_bound) as server:
        config = _config(raw_config, server.url).model_dump(mode="json")
        config["run"].update(concurrency=[1, 2], slo={"ttft_ms": None,
                                                      "e2e_ms": CAPACITY_SLO_MS})
        config = validate_config(config)
        outcome = run_tune(config, validate_tune(raw, config), tmp_path, progress=False,
                           experiments=False)
    result = outcome.result
    by_batch = {c.result.options["num_batch"]: c.result for c in result.candidates}
    assert (by_batch[256].capacity, by_batch[256].control_capacity) == (2, 1)
    assert by_batch[512].capacity == 1 and by_batch[512].verdict == "better"  # more tasks/min
    assert result.best is not None and result.best.result.options == {"num_batch": 256}
    assert result.confirmed and result.confirm.capacity == 2
    assert "capacity 2 agent(s)" in outcome.profile.read_text()
    assert "Objective: capacity" in outcome.report.read_text()
