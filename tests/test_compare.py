"""`compare` and `leaderboard`: provenance differences, statistics across revisions, errors.

Fast tests use synthetic raw data in a real git + DVC repository (`dvc add`, no model). The
slow ones run the real pipeline with DVC experiments and the documented queued sweep.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ollabench.cli import main
from ollabench.compare import (
    Side,
    format_table,
    headline_label,
    param_changes,
    provenance_differences,
    provenance_facts,
    setup_labels,
)
from ollabench.records import CallRecord
from tests.helpers.project import cli, git_env, run_cmd, small_project
from tests.helpers.synthetic import Scenario, env_for, make_records, write_raw

QUEUE_TIMEOUT_S = 600


def _side(scenario: Scenario, rev: str = "a", **env_changes: dict) -> Side:
    env = env_for(scenario)
    for key, changes in env_changes.items():
        env[key] = {**env.get(key, {}), **changes}
    records = [r for r in make_records(scenario) if r.arm == "treatment"]
    return Side(rev, "0" * 40, "treatment", env, records)


# --------------------------------------------------------------------------- provenance


def test_same_setup_other_profile_is_like_for_like() -> None:
    a = _side(Scenario(treatment_profile="baseline"))
    b = _side(Scenario(treatment_profile="chimera"), rev="b")
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    assert {(d.category, d.name, d.a, d.b) for d in differences} >= {
        ("options", "profile", "baseline", "chimera")}
    assert setup_labels(differences) == []
    assert headline_label(differences).startswith("Like for like")


def test_other_machine_and_weights_are_labelled_and_listed_first() -> None:
    a = _side(Scenario())
    b = _side(Scenario(), rev="b", host={"hostname": "node7", "cpu_model": "Other CPU"},
              backend={"model_sha256": "cd" * 32})
    b = replace(b, records=[replace(r, options={"num_ctx": 1024}) for r in b.records])
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    assert [d.category for d in differences] == ["machine", "hardware", "weights", "options"]
    assert setup_labels(differences) == ["different machines", "different hardware",
                                         "different model weights"]
    assert headline_label(differences).startswith(
        "Across different machines, different hardware and different model weights")


def test_prompt_size_and_server_settings_count_as_setup() -> None:
    a = _side(Scenario())
    b = _side(Scenario(), rev="b", ollama_env={"OLLAMA_FLASH_ATTENTION": "1"})
    b = replace(b, records=[replace(r, prompt_tokens=(r.prompt_tokens or 0) * 2)
                            for r in b.records])
    labels = setup_labels(provenance_differences(provenance_facts(a), provenance_facts(b)))
    assert labels == ["different server environment", "different prompts"]


def test_param_changes_are_hydra_overrides() -> None:
    base = {"profile": {"name": "baseline", "options": {}}, "run": {"runs": 10, "seed": 1}}
    new = copy.deepcopy(base)
    new["profile"] = {"name": "chimera", "options": {"num_ctx": 256}}
    del new["run"]["seed"]
    assert param_changes(base, new) == ("profile.name=chimera profile.options.num_ctx=256 "
                                        "~run.seed")
    assert param_changes(base, base) == "(none)"


def test_tables_for_terminal_and_markdown() -> None:
    rows = [["a|b", 1.23456, None], ["c", float("nan"), [1, 2]]]
    assert format_table(["x", "y", "z"], rows, markdown=True).splitlines() == [
        "| x | y | z |", "| --- | --- | --- |", "| a\\|b | 1.235 | - |", "| c | - | [1, 2] |"]
    assert format_table(["x", "y", "z"], rows, markdown=False).splitlines()[1] == (
        "a|b  1.235  -")


# --------------------------------------------------------------------------- real git + DVC


def _commit_raw(repo: Path, records: list[CallRecord], scenario: Scenario, tag: str,
                **env_changes: dict) -> None:
    """Raw data as a DVC-tracked folder in a tagged commit (as `bench` would leave it)."""
    raw = write_raw(repo / "data" / "raw", records, scenario)
    env = json.loads((raw / "env.json").read_text())
    for key, changes in env_changes.items():
        env[key] = {**env.get(key, {}), **changes}
    (raw / "env.json").write_text(json.dumps(env))
    run_cmd(["dvc", "add", "-q", "data/raw"], repo)
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-qm", tag], repo)
    run_cmd(["git", "tag", tag], repo)


@pytest.fixture(scope="module")
def tagged_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tags: `bare` (no raw data), `a`, `b` (+30% eval rate, on another host), `old` (an
    older record format). Git identity and a private DVC site cache stay set for the tests."""
    tmp = tmp_path_factory.mktemp("synthetic")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**git_env(), "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site")}.items():
            mp.setenv(key, value)
        repo = tmp / "repo"
        repo.mkdir()
        run_cmd(["git", "init", "-q", "-b", "main"], repo)
        run_cmd(["dvc", "init", "-q"], repo)
        run_cmd(["git", "commit", "-qm", "init"], repo)
        run_cmd(["git", "tag", "bare"], repo)
        same = Scenario(treatment_profile="chimera")
        _commit_raw(repo, make_records(same), same, "a")
        faster = Scenario(treatment_profile="chimera", eval_rate_gain=0.3, seed=1)
        _commit_raw(repo, make_records(faster), faster, "b", host={"hostname": "node7"})
        old = [replace(r, schema_version=0) for r in make_records(same)]
        _commit_raw(repo, old, same, "old")
        yield repo


@pytest.fixture
def synthetic_repo(tagged_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tagged repository, as the working directory."""
    repo = shutil.copytree(tagged_repo, tmp_path / "repo", symlinks=True)
    monkeypatch.chdir(repo)
    return repo


def test_compare_commits_reports_setup_then_verdicts(synthetic_repo: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "a", "b", "--out", "cmp"]) == 0
    assert "Across different machines" in capsys.readouterr().out
    report = (synthetic_repo / "cmp" / "comparison.md").read_text()
    assert report.index("different machines") < report.index("## Provenance differences") \
        < report.index("node7") < report.index("## Verdicts")
    with (synthetic_repo / "cmp" / "comparisons.csv").open() as fh:
        rows = {(r["stage"], r["metric"]): r for r in csv.DictReader(fh)}
    eval_rate = rows[("report", "eval_tok_s")]
    assert eval_rate["verdict"] == "better"
    assert 20 < float(eval_rate["median_diff_pct"]) < 40
    assert eval_rate["p_paired"] == ""  # runs of two experiments are no pairs
    assert rows[("report", "output_tokens")]["verdict"] == "no significant difference"


def test_compare_control_arm_of_the_same_setup(synthetic_repo: Path) -> None:
    assert main(["compare", "a", "a", "--arm", "control", "--out", "aa"]) == 0
    report = (synthetic_repo / "aa" / "comparison.md").read_text()
    assert "Like for like" in report and "None: both sides" in report


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("a", "nosuch", "unknown revision 'nosuch'"),
        ("bare", "a", "revision 'bare' has no raw data (data/raw/calls.jsonl)"),
        ("a", "old", "revision 'old' was recorded in an older record format (version 0"),
    ],
)
def test_compare_errors_are_one_line(synthetic_repo: Path, capsys: pytest.CaptureFixture,
                                     a: str, b: str, message: str) -> None:
    assert main(["compare", a, b]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollabench: error: ") and message in err
    assert err.count("\n") == 1


def test_compare_says_when_data_is_neither_cached_nor_pushed(synthetic_repo: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    shutil.rmtree(synthetic_repo / ".dvc" / "cache")
    assert main(["compare", "a", "b"]) == 2
    assert "neither in the local DVC cache nor on a DVC remote" in capsys.readouterr().err


# --------------------------------------------------------------------------- real pipeline



def wait_for_queue(repo: Path) -> None:
    """`dvc queue start` returns at once; wait until no experiment is queued or running."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = run_cmd(["dvc", "queue", "status"], repo)
        if not any(word in status for word in ("Queued", "Running")):
            assert "Failed" not in status, status
            return
        time.sleep(2)
    raise AssertionError(f"queue still busy after {QUEUE_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three queued experiments: `aa` (baseline profile, the default A/A run) and a two-point
    sweep of the chimera profile over num_ctx, run one at a time as the docs say."""
    tmp = tmp_path_factory.mktemp("experiments")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_SITE_CACHE_DIR", str(tmp / "dvc-site"))
        repo = small_project(tmp / "repo")
        run_cmd(["dvc", "exp", "run", "--queue", "-q", "--name", "aa"], repo)
        run_cmd(["dvc", "exp", "run", "--queue", "-q", "-S", "profile=chimera",
              "-S", "profile.options.num_ctx=256,1024"], repo)
        run_cmd(["dvc", "queue", "start", "-j", "1"], repo)
        wait_for_queue(repo)
        yield repo


def _experiments(repo: Path, queued: bool = False) -> dict[str, dict]:
    """name -> params of every finished (or queued) experiment, from `dvc exp show`."""
    found = {}
    for baseline in json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo)):
        for exp in baseline.get("experiments") or []:
            if ((exp.get("executor") or {}).get("state") == "queued") == queued:
                found[exp["name"]] = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]
    return found


@pytest.mark.slow
def test_queued_sweep_runs_each_point_as_an_experiment(project: Path) -> None:
    params = _experiments(project)
    aa = params["aa"]["profile"]
    assert aa["name"] == "baseline" and set(aa["options"].values()) == {None}
    swept = [p["profile"] for name, p in params.items() if name != "aa"]
    assert sorted(p["options"]["num_ctx"] for p in swept) == [256, 1024]
    assert all(p["name"] == "chimera" for p in swept)


@pytest.mark.slow
def test_compare_experiments_by_name_and_by_commit(project: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    by_ctx = {p["profile"]["options"].get("num_ctx"): name
              for name, p in _experiments(project).items()}
    done = cli(project, capsys, "compare", "aa", by_ctx[1024], "--out", "by-name")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Like for like")
    report = (project / "by-name" / "comparison.md").read_text()
    assert "| options | profile | baseline | chimera |" in report
    assert "| report | eval_tok_s |" in report

    run_cmd(["dvc", "exp", "branch", by_ctx[256], "ctx256"], project)
    head = run_cmd(["git", "rev-parse", "HEAD"], project).strip()
    large = run_cmd(["git", "rev-parse", f"refs/exps/{head[:2]}/{head[2:]}/{by_ctx[1024]}"],
                 project).strip()
    done = cli(project, capsys, "compare", "ctx256", large, "--out", "by-commit")
    assert done.returncode == 0, done.stderr
    report = (project / "by-commit" / "comparison.md").read_text()
    assert "| options | num_ctx | 256 | 1024 |" in report
    assert (project / "by-commit" / "comparisons.csv").is_file()


@pytest.mark.slow
def test_leaderboard_ranks_the_three_experiments(project: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    done = cli(project, capsys, "leaderboard", "--metric", "eval_tok_s", "--stage", "report")
    assert done.returncode == 0, done.stderr
    with (project / "reports" / "leaderboard" / "report_eval_tok_s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["experiment"] for r in rows)[0] == "aa" and len(rows) == 3
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    medians = [float(r["treatment_median"]) for r in rows]
    assert medians == sorted(medians, reverse=True)  # higher is better for a rate
    for row in rows:
        assert float(row["ci_low"]) <= float(row["treatment_median"]) <= float(row["ci_high"])
        assert row["verdict"] and row["runs"] == "2" and not row["note"]
        assert row["changes"] == "(none)" if row["experiment"] == "aa" else (
            "profile.name=chimera" in row["changes"])
    terminal = done.stdout.splitlines()
    assert terminal[0].split()[:3] == ["#", "experiment", "rev"]
    assert rows[0]["experiment"] in terminal[1]
    markdown = (project / "reports" / "leaderboard" / "report_eval_tok_s.md").read_text()
    assert "higher is better" in markdown

    ttft = cli(project, capsys, "leaderboard", "--metric", "ttft_ms", "--stage", "workflow")
    assert ttft.returncode == 0, ttft.stderr
    bad = cli(project, capsys, "leaderboard", "--metric", "tokens")
    assert bad.returncode == 2 and "--metric: must be one of ttft_ms" in bad.stderr


@pytest.mark.slow
def test_documented_grid_queues_one_experiment_per_point(project: Path) -> None:
    """The sweep of docs/experiments.md: 3 x 2 points, each composed and validated when
    queued (removed again here, without running)."""
    run_cmd(["dvc", "exp", "run", "--queue", "-q",
          "-S", "profile.options.num_ctx=256,512,1024",
          "-S", "profile.options.temperature=0.6,0.8"], project)
    try:
        queued = _experiments(project, queued=True)
        assert sorted((p["profile"]["options"]["num_ctx"], p["profile"]["options"]["temperature"])
                      for p in queued.values()) == sorted(
            itertools.product((256, 512, 1024), (0.6, 0.8)))
    finally:
        run_cmd(["dvc", "queue", "remove", "--queued"], project)
