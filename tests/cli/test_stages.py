"""The stage commands end a bad input in one line, `ollabench: error: <file and key>`, exit 2;
and a stage command loads its own stage only (DVC's deps are what a stage loads)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ollabench.cli import main
from ollabench.stats import run_aggregate
from tests.helpers.synthetic import Scenario, make_records, write_raw


def one_line_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `ollabench ARGS`; assert exit 2 and one line on stderr; return that line."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollabench: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- aggregate


@pytest.mark.parametrize(("text", "problem"), [
    ("model: {name: x}\n", "no run.practical_threshold_pct"),
    ("run: {runs: 3}\n", "no run.practical_threshold_pct"),
    ("", "it is empty"),
    ("- a\n- b\n", "got a list"),
    ("run: [unclosed\n", "not valid YAML"),
    ("run: {practical_threshold_pct: five}\n", "must be a number, got 'five'"),
])
def test_aggregate_names_what_its_params_file_lacks(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    text: str, problem: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    err = one_line_error(capsys, "aggregate", "--raw", str(tmp_path / "raw"), "--out",
                         str(tmp_path / "out"), "--params", str(params))
    assert f"{params}: " in err and problem in err


# --------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/ and processed/ of a small synthetic run."""
    folder = tmp_path_factory.mktemp("aggregated")
    scenario = Scenario(runs=3)
    raw = write_raw(folder / "raw", make_records(scenario), scenario)
    run_aggregate(raw, folder / "processed", folder / "metrics.json", 5.0)
    return folder


def report_error(folder: Path, capsys: pytest.CaptureFixture) -> str:
    err = one_line_error(capsys, "report", "--raw", str(folder / "raw"), "--processed",
                         str(folder / "processed"), "--out", str(folder / "report.md"),
                         "--figures", str(folder / "figures"))
    assert not (folder / "report.md").exists() and not (folder / "figures").exists()
    return err


@pytest.mark.parametrize(("file", "edit", "problem"), [
    ("raw/env.json", lambda _: "[1, 2]", "env.json: must be a JSON object, got an array"),
    ("raw/env.json", lambda _: "{not json", "env.json: not valid JSON"),
    ("raw/env.json", lambda text: json.dumps({**json.loads(text), "host": "node7"}),
     "env.json: host must be an object, got a string"),
    ("processed/quality.json", lambda _: "", "quality.json: not valid JSON"),
    ("processed/quality.json", lambda _: '"ok"', "quality.json: must be a JSON object"),
    ("processed/quality.json",
     lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "outliers"}),
     "quality.json: missing outliers"),
    ("processed/quality.json",
     lambda text: text.replace('"threshold_pct"', '"threshold"'),
     "quality.json: missing settings.threshold_pct"),
    ("processed/quality.json",
     lambda text: text.replace('"warmups"', '"warm_ups"'),
     "quality.json: missing arms.control.warmups"),
])
def test_report_names_a_malformed_json_input(aggregated: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture, file: str,
                                             edit: object, problem: str) -> None:
    folder = shutil.copytree(aggregated, tmp_path / "copy")
    path = folder / file
    path.write_text(edit(path.read_text()))  # type: ignore[operator]
    assert problem in report_error(folder, capsys)


# --------------------------------------------------------------------------- imports


def test_report_command_loads_neither_compare_nor_sweep_nor_dvc(tmp_path: Path) -> None:
    """In a fresh interpreter: what `ollabench report` imported (it fails on a missing input,
    after importing its stage)."""
    code = ("import sys\nfrom ollabench.cli import main\n"
            f"main(['report', '--raw', {str(tmp_path)!r}, '--processed', {str(tmp_path)!r}])\n"
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = set(done.stdout.split())
    assert "ollabench.report" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "dvc"
                or m.startswith(("ollabench.compare", "ollabench.sweep"))}
