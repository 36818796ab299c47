"""The optional judge stage: config checks, scores from a judge on the Ollama wire format and
on the embedded engine, answers without a score, resume, and the scores in the statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ollabench.bench.loop import run_bench
from ollabench.config.schema import compose, validate_config
from ollabench.errors import ConfigError
from ollabench.files import sha256_file
from ollabench.judge import NO_SCORE, judge_key, parse_score, run_judge
from ollabench.paths import JUDGE_INFO_FILE, JUDGE_SCORES_FILE
from ollabench.stats import run_aggregate
from tests.helpers.fake_ollama import FakeOllama, Script
from tests.helpers.project import tiny_config

JUDGE_MODEL = {"name": "qwen2.5:7b", "backend": "ollama", "gguf": None, "host": None,
               "think": None, "keep_alive": None}


@pytest.mark.parametrize(("answer", "score"), [
    ("4", 4), ("Score: 5/5", 5), ("3.", 3), (" 2\n", 2), ("0", None), ("7", None),
    ("3.5", None), ("excellent", None), ("", None),
])
def test_the_score_is_the_first_whole_number_on_the_scale(answer: str, score: int | None) -> None:
    assert parse_score(answer, 5) == score


def test_the_model_under_test_is_not_its_own_judge() -> None:
    raw = compose(["judge=embedded"])
    with pytest.raises(ConfigError, match=r"^judge.model: smollm2-135m is the model under test"):
        validate_config(raw)
    assert validate_config(compose(["judge=embedded", "judge.allow_model_under_test=true"]))


def test_an_enabled_judge_needs_a_model_and_a_rubric() -> None:
    raw = compose(["judge.enabled=true"])
    with pytest.raises(ConfigError, match=r"^judge.model: required when judge.enabled"):
        validate_config(raw)
    raw = compose(["judge=ollama", "judge.rubric= "])
    with pytest.raises(ConfigError, match=r"^judge.rubric: required"):
        validate_config(raw)
    with pytest.raises(ConfigError, match=r"^judge.scale_max: "):
        validate_config(compose(["judge=ollama", "judge.scale_max=1"]))


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory, composed: dict[str, Any],
            tiny_workload: Path) -> Path:
    """Raw records of two runs of the embedded model on the tiny workload, with 8-token
    answers: the judge tests check what is scored and recorded, not the answers' quality."""
    base = tmp_path_factory.mktemp("judged")
    raw = {**composed, "workload": {**composed["workload"], "dir": str(tiny_workload)}}
    run_bench(tiny_config(raw, runs=2, analysis=8, report=8), base / "raw",
              journal_root=base / "journal", progress=False)
    return base / "raw"


def judge_config(composed: dict[str, Any], tiny_workload: Path, url: str,
                 **judge: Any) -> Any:
    raw = json.loads(json.dumps(composed))
    raw["workload"]["dir"] = str(tiny_workload)
    raw["judge"] = {**compose(["judge=ollama"])["judge"],
                    "model": {**JUDGE_MODEL, "host": url}, **judge}
    return tiny_config(raw, runs=2, analysis=24, report=24)


def test_a_judge_on_ollama_scores_every_measured_call(
        fake_ollama: FakeOllama, raw_dir: Path, composed: dict[str, Any],
        tiny_workload: Path, tmp_path: Path) -> None:
    fake_ollama.script = Script(text="4", tokens=1)
    config = judge_config(composed, tiny_workload, fake_ollama.url)
    out = tmp_path / "judge"
    assert run_judge(config, raw_dir, out, journal_root=tmp_path / "j", progress=False) == 8
    scores = [json.loads(line) for line in (out / JUDGE_SCORES_FILE).read_text().splitlines()]
    assert {s["judge_score"] for s in scores} == {4}
    assert {(s["arm"], s["stage"]) for s in scores} == {
        (arm, stage) for arm in ("control", "treatment") for stage in ("analysis", "report")}
    info = json.loads((out / JUDGE_INFO_FILE).read_text())
    assert info["model"] == "qwen2.5:7b" and info["model_id"] and info["scored"] == 8
    chats = fake_ollama.chats()
    assert len(chats) == 8
    judged = chats[0].body
    assert judged["options"]["temperature"] == 0.0 and judged["stream"] is True
    assert "Answer to grade:" in judged["messages"][1]["content"]
    # A report call is judged against the analysis it was built on (same run and arm).
    report = next(c.body for c in chats if "Write a short technical report"
                  in c.body["messages"][1]["content"])
    assert "Analyse these benchmark results" not in report["messages"][1]["content"]

    processed = tmp_path / "processed"
    run_aggregate(raw_dir, processed, tmp_path / "metrics.json", 5.0, judge_dir=out)
    table = pd.read_csv(processed / "comparisons.csv")
    judged_rows = table.loc[table["metric"] == "judge_score"]
    assert set(judged_rows["stage"]) == {"analysis", "report", "workflow"}
    assert (judged_rows["control_median"] == 4).all()
    quality = json.loads((processed / "quality.json").read_text())
    assert quality["judge"]["scored"] == 8


def test_an_answer_without_a_score_is_recorded_not_guessed(
        fake_ollama: FakeOllama, raw_dir: Path, composed: dict[str, Any],
        tiny_workload: Path, tmp_path: Path) -> None:
    fake_ollama.script = Script(text="quite good overall", tokens=3)
    config = judge_config(composed, tiny_workload, fake_ollama.url)
    run_judge(config, raw_dir, tmp_path / "judge", journal_root=tmp_path / "j", progress=False)
    scores = [json.loads(line)
              for line in (tmp_path / "judge" / JUDGE_SCORES_FILE).read_text().splitlines()]
    assert {s["judge_outcome"] for s in scores} == {NO_SCORE}
    assert all(s["judge_score"] is None and s["judge_output"] for s in scores)
    info = json.loads((tmp_path / "judge" / JUDGE_INFO_FILE).read_text())
    assert info["no_score"] == 8 and info["scored"] == 0


def test_an_interrupted_judge_resumes(fake_ollama: FakeOllama, raw_dir: Path,
                                      composed: dict[str, Any], tiny_workload: Path,
                                      tmp_path: Path) -> None:
    fake_ollama.script = Script(text="3", tokens=1)
    config = judge_config(composed, tiny_workload, fake_ollama.url)
    run_judge(config, raw_dir, tmp_path / "first", journal_root=tmp_path / "done",
              progress=False)
    lines = (tmp_path / "first" / JUDGE_SCORES_FILE).read_text().splitlines()
    # A kill after three scores, the last line torn mid-write.
    journal = (tmp_path / "j" / judge_key(config.judge, sha256_file(raw_dir / "calls.jsonl"))
               / JUDGE_SCORES_FILE)
    journal.parent.mkdir(parents=True)
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    before = len(fake_ollama.chats())
    run_judge(config, raw_dir, tmp_path / "judge", journal_root=tmp_path / "j", progress=False)
    assert len(fake_ollama.chats()) - before == 5  # the torn one is judged again
    resumed = (tmp_path / "judge" / JUDGE_SCORES_FILE).read_text().splitlines()
    assert resumed[:3] == lines[:3]  # kept from the journal, not judged again
    assert [json.loads(line)["seq"] for line in resumed] == [json.loads(x)["seq"] for x in lines]
    assert not journal.exists()


def test_the_judge_off_writes_an_empty_score_file(raw_dir: Path, composed: dict[str, Any],
                                                  tmp_path: Path) -> None:
    assert run_judge(validate_config(composed), raw_dir, tmp_path / "judge",
                     journal_root=tmp_path / "j", progress=False) == 0
    assert (tmp_path / "judge" / JUDGE_SCORES_FILE).read_text() == ""
    assert json.loads((tmp_path / "judge" / JUDGE_INFO_FILE).read_text()) == {"enabled": False}


def test_an_embedded_judge_scores_on_the_real_model(raw_dir: Path, composed: dict[str, Any],
                                                    tiny_workload: Path,
                                                    tmp_path: Path) -> None:
    raw = json.loads(json.dumps(composed))
    raw["workload"]["dir"] = str(tiny_workload)
    # the shortest input the config allows: 8 judge prompts on the real model stay short
    raw["judge"] = compose(["judge=embedded", "judge.allow_model_under_test=true",
                            "judge.max_input_chars=100"])["judge"]
    config = tiny_config(raw, runs=2, analysis=24, report=24)
    run_judge(config, raw_dir, tmp_path / "judge", journal_root=tmp_path / "j", progress=False)
    scores = [json.loads(line)
              for line in (tmp_path / "judge" / JUDGE_SCORES_FILE).read_text().splitlines()]
    assert len(scores) == 8
    for score in scores:
        assert score["judge_outcome"] in ("ok", NO_SCORE)
        assert score["judge_score"] is None or 1 <= score["judge_score"] <= 5
    info = json.loads((tmp_path / "judge" / JUDGE_INFO_FILE).read_text())
    assert info["backend"] == "llamacpp" and len(info["model_id"]) == 64
