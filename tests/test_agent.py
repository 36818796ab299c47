"""The workload folder: what the agent reads, and the one-line refusals of what it cannot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ollabench.cli import main
from ollabench.workloads.agent import analysis_messages, read_digest
from tests.helpers.project import ROOT


def bench_exit(tmp_path: Path, raw_config: dict, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`ollabench bench` on raw_config; its exit status and stderr."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_config))
    code = main(["bench", "--params", str(params), "--out", str(tmp_path / "raw"),
                 "--journal-dir", str(tmp_path / "journal"), "--no-progress"])
    return code, capsys.readouterr().err


def test_the_committed_workload_is_digested_with_every_file() -> None:
    workload = read_digest(ROOT / "data" / "workload")
    assert workload.files == ("gpu_inference_runs.csv", "latency_percentiles.csv",
                              "operator_notes.md", "regression_check.json")
    prompt = analysis_messages(workload)[-1]["content"]
    assert all(Path(name).stem in prompt for name in workload.files)


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("runs.csv", b"\xff\xfe,ttft_ms\n", r"runs\.csv is not UTF-8 text \(byte 0xff at offset 0\)"),
    ("notes.md", b"", r"notes\.md is empty"),
    ("check.json", b" \n", r"check\.json is empty"),
    ("check.json", b"{not json", r"cannot parse .*check\.json"),
], ids=["not-utf8", "empty", "blank", "bad-json"])
def test_an_unreadable_workload_file_ends_in_one_line(tmp_path: Path, raw_config: dict,
                                                      capsys: pytest.CaptureFixture, name: str,
                                                      content: bytes, problem: str) -> None:
    folder = tmp_path / "workload"
    folder.mkdir()
    (folder / "good.csv").write_text("gpu,ttft_ms\nA,180\n")
    (folder / name).write_bytes(content)
    raw_config["workload"]["dir"] = str(folder)
    code, err = bench_exit(tmp_path, raw_config, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("ollabench: error: workload.dir: ")
    assert re.search(problem, err)
    assert not (tmp_path / "raw").exists()


def test_a_folder_without_workload_files_is_refused(tmp_path: Path, raw_config: dict,
                                                    capsys: pytest.CaptureFixture) -> None:
    raw_config["workload"]["dir"] = str(tmp_path)
    code, err = bench_exit(tmp_path, raw_config, capsys)
    assert code == 2 and "holds no CSV, JSON or Markdown file" in err
