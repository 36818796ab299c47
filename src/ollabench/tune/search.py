"""The search: Optuna's ask/tell over the tune space, its study in a SQLite file under the
repository so that a killed `tune` resumes where it stopped, each candidate raced against
the baseline (candidate.measure), then a confirmatory run of the best feasible candidate on
fresh runs. Only a confirmed winner becomes conf/profile/tuned_<model>.yaml.

Resume: a trial left RUNNING by a killed process is closed as failed and its options asked
again first; the candidate's bench journal (keyed by its config, not the trial) resumes its
calls, so nothing is measured twice beyond the calls of the one in flight."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollabench.config import BenchConfig
from ollabench.stats.metrics import METRIC_BY_NAME
from ollabench.stats.sequential import BETTER
from ollabench.stopping import parse_primary
from ollabench.tune.candidate import RAW, CandidateResult, candidate_config, measure
from ollabench.tune.experiments import CONFIRM_LABEL, ExperimentRecorder, experiment_name
from ollabench.tune.settings import TUNE_DATA, TUNE_ROOT, Range, TuneConfig, journal_dir

RESULT_KEY, DUPLICATE_KEY, CONSTRAINT_KEY = "result", "duplicate_of", "constraints"
CONFIRM_KEY = "confirm"  # study user attr: {"trial": n, "result": attrs}
MAX_REPEATS = 50  # asks in a row that only repeat measured candidates: the space is spent


@dataclass(frozen=True)
class Candidate:
    """A finished trial: its number and what its measurement showed."""

    number: int
    result: CandidateResult
    duplicate_of: int | None = None


@dataclass
class TuneResult:
    study: str
    objective: str
    direction: str  # the objective metric's good direction: lower or higher
    candidates: list[Candidate]
    best: Candidate | None
    confirm: CandidateResult | None
    confirmed: bool
    stop_reason: str


def profile_name(options: dict[str, Any]) -> str:
    """A candidate's treatment profile name, from its options only: the same options give the
    same bench config, whose journal a rerun resumes."""
    text = json.dumps(options, sort_keys=True)
    return f"tune-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _distributions(tune: TuneConfig, grid: bool) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found: dict[str, Any] = {}
    for name, values in (tune.grid() if grid else tune.space).items():
        if not isinstance(values, Range):
            found[name] = CategoricalDistribution(values)
        elif values.integer:
            found[name] = IntDistribution(int(values.low), int(values.high),
                                          step=int(values.step or 1))
        else:
            found[name] = FloatDistribution(values.low, values.high, step=values.step)
    return found


def open_study(tune: TuneConfig, name: str, storage: Path, direction: str) -> Any:
    """Create or load the study. A grid search enqueues every point once, shuffled with the
    seed; candidates past the queue come from the sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage.parent.mkdir(parents=True, exist_ok=True)
    kind = tune.sampler_kind()
    if kind == "tpe":
        with warnings.catch_warnings():  # Optuna 5 deprecates it; 4 has no replacement
            warnings.simplefilter("ignore", FutureWarning)
            sampler: Any = optuna.samplers.TPESampler(
                seed=tune.seed, n_startup_trials=max(2, tune.budget.max_candidates // 3),
                constraints_func=lambda t: t.user_attrs.get(CONSTRAINT_KEY, [0.0]))
    else:
        sampler = optuna.samplers.RandomSampler(seed=tune.seed)
    study = optuna.create_study(storage=f"sqlite:///{storage}", study_name=name,
                                sampler=sampler, load_if_exists=True,
                                direction="minimize" if direction == "lower" else "maximize")
    _reopen_in_flight(study)
    if kind == "grid":
        points = [dict(zip(tune.grid(), combo, strict=True))
                  for combo in itertools.product(*tune.grid().values())]
        random.Random(tune.seed).shuffle(points)
        for point in points:
            study.enqueue_trial(point, skip_if_exists=True)
    return study


def _reopen_in_flight(study: Any) -> None:
    """A trial a killed process left running: close it as failed, ask its options again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params))


def finished(study: Any) -> list[Candidate]:
    """Trials that carry a measurement (or repeat one), in order."""
    return [Candidate(t.number, CandidateResult.from_attrs(t.user_attrs[RESULT_KEY]),
                      t.user_attrs.get(DUPLICATE_KEY))
            for t in study.get_trials(deepcopy=False) if RESULT_KEY in t.user_attrs]


def _tell(study: Any, trial: Any, result: CandidateResult, duplicate_of: int | None) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr(RESULT_KEY, result.attrs())
    trial.set_user_attr(CONSTRAINT_KEY, [0.0 if result.feasible else 1.0])
    if duplicate_of is not None:
        trial.set_user_attr(DUPLICATE_KEY, duplicate_of)
    if math.isfinite(result.ratio):
        study.tell(trial, result.ratio)
    else:
        study.tell(trial, state=TrialState.FAIL)


def search(config: BenchConfig, tune: TuneConfig, root: Path, progress: bool = True,
           report: Callable[[Candidate], None] | None = None,
           recorder: ExperimentRecorder | None = None) -> TuneResult:
    """Measure candidates until the budget or the space is spent, then confirm the best.
    With a recorder, each measured candidate also becomes a DVC experiment."""
    name = tune.study_name(config)
    _, metric = parse_primary([tune.objective])[0]
    direction = METRIC_BY_NAME[metric].direction
    study = open_study(tune, name, root / TUNE_ROOT / f"{name}.db", direction)
    journal = journal_dir(root, name)
    distributions = _distributions(tune, tune.sampler_kind() == "grid")
    reason, repeats = "", 0
    while not reason:
        done = [c for c in finished(study) if c.duplicate_of is None]
        minutes = sum(c.result.minutes for c in done)
        if len(done) >= tune.budget.max_candidates:
            reason = f"max_candidates ({tune.budget.max_candidates}) measured"
        elif minutes >= tune.budget.max_minutes:
            reason = f"max_minutes ({tune.budget.max_minutes:g}) of calls spent"
        elif len(done) >= tune.space_size() or repeats >= MAX_REPEATS:
            reason = "every point of the space measured"
        if reason:
            break
        trial = study.ask(distributions)
        options = dict(trial.params)
        twin = next((c for c in done if c.result.options == options), None)
        if twin is not None:
            repeats += 1
            _tell(study, trial, twin.result, twin.number)
            continue
        repeats = 0
        cfg = candidate_config(config, options, profile_name(options), tune.objective,
                               tune.race, tune.budget.max_minutes - minutes)
        result = measure(cfg, options, root / TUNE_DATA / name / f"trial-{trial.number}",
                         journal, tune.objective, tune.constraints, progress)
        _record(recorder, result, experiment_name(name, f"trial-{trial.number}"), cfg)
        _tell(study, trial, result, None)
        if report is not None:
            report(Candidate(trial.number, result))
    return _confirm(config, tune, root, study, direction, reason, progress, recorder)


def _record(recorder: ExperimentRecorder | None, result: CandidateResult, name: str,
            config: BenchConfig) -> None:
    """Before the trial is told: a process killed while recording measures (resumes) and
    records the candidate again."""
    if recorder is not None and result.complete:
        result.experiment = recorder.record(name, config, Path(result.out_dir) / RAW)


def best_candidate(candidates: list[Candidate], direction: str) -> Candidate | None:
    """The feasible candidate with the best objective, if its estimate beats the baseline."""
    feasible = [c for c in candidates if c.duplicate_of is None and c.result.feasible]
    sign = 1.0 if direction == "lower" else -1.0
    best = min(feasible, key=lambda c: sign * c.result.ratio, default=None)
    if best is None or sign * (best.result.ratio - 1.0) >= 0:
        return None
    return best


def _confirm(config: BenchConfig, tune: TuneConfig, root: Path, study: Any, direction: str,
             reason: str, progress: bool, recorder: ExperimentRecorder | None) -> TuneResult:
    """Measure the best candidate again on fresh runs (its own journal), once per study."""
    name = tune.study_name(config)
    candidates = finished(study)
    best = best_candidate(candidates, direction)
    confirm = None
    if best is not None:
        stored = study.user_attrs.get(CONFIRM_KEY)
        if stored and stored["trial"] == best.number:
            confirm = CandidateResult.from_attrs(stored["result"])
        else:
            options = best.result.options
            cfg = candidate_config(config, options, f"confirm-{profile_name(options)}",
                                   tune.objective, tune.confirm)
            confirm = measure(cfg, options, root / TUNE_DATA / name / CONFIRM_LABEL,
                              journal_dir(root, name), tune.objective, tune.constraints,
                              progress)
            _record(recorder, confirm, experiment_name(name, CONFIRM_LABEL), cfg)
            study.set_user_attr(CONFIRM_KEY, {"trial": best.number,
                                              "result": confirm.attrs()})
    confirmed = confirm is not None and confirm.feasible and confirm.verdict == BETTER
    return TuneResult(name, tune.objective, direction, candidates, best, confirm, confirmed,
                      reason)
