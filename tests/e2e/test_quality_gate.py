"""The quality gate on the real embedded model (slow: real model, real `dvc exp run`).

The default model (SmolLM2-135M) is weak: at its default sampling it quotes few figures from
the input and rarely writes the report's parts, so a mild change such as temperature 2.0
under the default top-k/top-p can even quote more. Degradation shows against its best output
(greedy decoding) when the treatment samples from the whole vocabulary at temperature 2.0:
noise that quotes no figure from the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.project import make_project, run_cmd

QUICK = ["-S", "run=quick", "-S", "run.max_output_tokens=null"]
GREEDY = ["-S", "reference.name=greedy", "-S", "reference.options.temperature=0.0"]
NOISE = ["-S", "profile.name=noise", "-S", "profile.options.temperature=2.0",
         "-S", "profile.options.top_k=1000", "-S", "profile.options.top_p=1.0",
         "-S", "profile.options.min_p=0.0"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Output caps long enough for the greedy control to quote figures from the input.
    return make_project(tmp_path_factory.mktemp("gate") / "repo", caps=120)


def quality_of(repo: Path, *overrides: str) -> dict[str, object]:
    run_cmd(["dvc", "exp", "run", "-q", *QUICK, *overrides], repo)
    return json.loads((repo / "reports" / "metrics.json").read_text())["quality"]


@pytest.mark.slow
def test_noise_sampling_gets_a_lower_quality_verdict(repo: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(repo.parent / "dvc-site"))
    quality = quality_of(repo, *GREEDY, *NOISE)
    assert quality["verdict"] == "lower", quality
    report = (repo / "reports" / "report.md").read_text()
    assert "lower quality" in report and "faster, better" not in report


@pytest.mark.slow
def test_an_a_a_run_shows_no_quality_change(repo: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(repo.parent / "dvc-site"))
    quality = quality_of(repo, *GREEDY, "-S", "profile=baseline",
                         "-S", "profile.name=greedy", "-S", "profile.options.temperature=0.0")
    assert quality["verdict"] == "no change detected", quality
