"""`ollabench tune`: search the settings of the treatment arm for the fastest feasible one,
race candidates with the sequential stopping rule, and keep only a winner that fresh runs
confirm (docs/experiments.md, "Tuning")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollabench.config.schema import BenchConfig, compose, validate_config
from ollabench.errors import ConfigError
from ollabench.paths import CONF_DIR
from ollabench.tune.experiments import ExperimentRecorder
from ollabench.tune.settings import TUNE_REPORTS, TUNE_ROOT, TuneConfig, validate_tune

__all__ = ["TuneConfig", "TuneOutcome", "check_against_backend", "load", "run_tune"]


def load(overrides: list[str], name: str,
         conf_dir: Path = CONF_DIR) -> tuple[BenchConfig, TuneConfig]:
    """Compose conf/ with +tune=NAME and the overrides; validate both parts."""
    raw = compose([f"+tune={name}", *overrides], conf_dir=conf_dir)
    tune = raw.pop("tune", None)
    config = validate_config(raw)
    return config, validate_tune(tune, config)


def check_against_backend(config: BenchConfig, tune: TuneConfig) -> None:
    """Refuse, before the first call, an option of the space that the backend (the server
    version and model, for Ollama) would ignore: the option table of the bench stage."""
    from ollabench.backends import make_backend

    backend = make_backend(config.model, config.run)
    try:
        backend.preflight()
        first = {name: values[0] if isinstance(values, list) else values.low
                 for name, values in tune.space.items()}
        try:
            backend.validate_options({**config.reference.options, **first}, "tune.space")
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith("tune.") else
                              f"tune.space: {message}") from None
    finally:
        backend.close()


@dataclass(frozen=True)
class TuneOutcome:
    result: Any  # search.TuneResult
    report: Path
    profile: Path | None


def recorder_for(root: Path, study: str, git_remote: str | None = None,
                 dvc_remote: str | None = None) -> ExperimentRecorder:
    """Records the study's candidates as DVC experiments of the repository at root (and on a
    cluster pushes them); checks the repository first."""
    recorder = ExperimentRecorder(root, root / TUNE_ROOT / study / "replay",
                                  root / TUNE_ROOT / study / "experiments",
                                  git_remote, dvc_remote)
    recorder.check_repository()
    return recorder


def run_tune(config: BenchConfig, tune: TuneConfig, root: Path, progress: bool = True,
             on_candidate: Any = None, experiments: bool = True) -> TuneOutcome:
    """Check, search, confirm, write the report and (a confirmed winner only) the profile.
    `experiments`: record each measured candidate as a DVC experiment of the repository at
    root (tune/experiments.py)."""
    from ollabench.tune.search import search

    check_against_backend(config, tune)
    recorder = recorder_for(root, tune.study_name(config)) if experiments else None
    return write_outcome(search(config, tune, root, progress, on_candidate, recorder), config,
                         root)


def write_outcome(result: Any, config: BenchConfig, root: Path) -> TuneOutcome:
    """The tuning report, and conf/profile/tuned_<model>.yaml for a confirmed winner."""
    from ollabench.tune.output import write_profile, write_report

    report = write_report(result, root / TUNE_REPORTS / result.study)
    profile = write_profile(result, config.model.name, config.reference.name,
                            root / "conf" / "profile")
    return TuneOutcome(result, report, profile)
