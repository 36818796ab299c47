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

from ollabench.bench.stopping import parse_primary
from ollabench.config.schema import BenchConfig
from ollabench.stats.metrics import METRIC_BY_NAME
from ollabench.stats.sequential import BETTER
from ollabench.tune.candidate import RAW, CandidateResult, candidate_config, measure
from ollabench.tune.experiments import CONFIRM_LABEL, ExperimentRecorder, experiment_name
from ollabench.tune.settings import CAPACITY, TUNE_DATA, Range, TuneConfig, journal_dir

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


def _storage(spec: str) -> Any:
    """An RDB URL as Optuna takes it; any other spec is the path of a journal file, whose
    lock (a symlink) works across the machines of a shared file system."""
    if "://" in spec:
        if spec.startswith("sqlite:///"):
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return spec
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def open_study(tune: TuneConfig, name: str, storage: str, direction: str,
               driver: bool = True) -> Any:
    """Create or load the study. The driver (the only process, or the one that launches the
    jobs of a cluster search, before they start) closes the trials a killed process left
    running and, for a grid search, enqueues every point once, shuffled with the seed;
    candidates past the queue come from the sampler. Jobs that share the study leave both
    alone: the trials running are theirs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind = tune.sampler_kind()
    if kind == "tpe":
        with warnings.catch_warnings():  # Optuna 5 deprecates it; 4 has no replacement
            warnings.simplefilter("ignore", FutureWarning)
            # constant_liar: workers sharing the study are not all sent to one point
            sampler: Any = optuna.samplers.TPESampler(
                seed=tune.seed, n_startup_trials=max(2, tune.budget.max_candidates // 3),
                constant_liar=True,
                constraints_func=lambda t: t.user_attrs.get(CONSTRAINT_KEY, [0.0]))
    else:
        sampler = optuna.samplers.RandomSampler(seed=tune.seed)
    study = optuna.create_study(storage=_storage(storage), study_name=name,
                                sampler=sampler, load_if_exists=True,
                                direction="minimize" if direction == "lower" else "maximize")
    if not driver:
        return study
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

    for trial in _running(study):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params))


def _running(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


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
    if math.isfinite(result.objective_value()):
        study.tell(trial, result.objective_value())
    else:
        study.tell(trial, state=TrialState.FAIL)


def search(config: BenchConfig, tune: TuneConfig, root: Path, progress: bool = True,
           report: Callable[[Candidate], None] | None = None,
           recorder: ExperimentRecorder | None = None) -> TuneResult:
    """Measure candidates until the budget or the space is spent, then confirm the best.
    With a recorder, each measured candidate also becomes a DVC experiment."""
    name = tune.study_name(config)
    direction = objective_direction(tune)
    study = open_study(tune, name, tune.storage_spec(root, name), direction)
    journal = journal_dir(root, name)
    reason = explore(config, tune, root, study, journal, progress, report, recorder)
    confirm_best(config, tune, root, study, journal, progress, recorder)
    return tune_result(tune, name, study, reason)


def objective_direction(tune: TuneConfig) -> str:
    """lower or higher: the objective metric's good direction (a capacity: higher)."""
    if tune.objective == CAPACITY:
        return "higher"
    _, metric = parse_primary([tune.objective])[0]
    return METRIC_BY_NAME[metric].direction


def stop_reason(study: Any, tune: TuneConfig, repeats: int = 0) -> str:
    """Why the search is over ("" while it is not). Candidates in flight on other workers
    count against max_candidates and the space, not yet against max_minutes."""
    done = [c for c in finished(study) if c.duplicate_of is None]
    taken = len(done) + len(_running(study))
    if taken >= tune.budget.max_candidates:
        return f"max_candidates ({tune.budget.max_candidates}) measured"
    if sum(c.result.minutes for c in done) >= tune.budget.max_minutes:
        return f"max_minutes ({tune.budget.max_minutes:g}) of calls spent"
    if taken >= tune.space_size() or repeats >= MAX_REPEATS:
        return "every point of the space measured"
    return ""


def explore(config: BenchConfig, tune: TuneConfig, root: Path, study: Any, journal: Path,
            progress: bool, report: Callable[[Candidate], None] | None,
            recorder: ExperimentRecorder | None) -> str:
    """Ask, measure, tell until stop_reason says stop; return it. Safe to run on several
    machines at once against one shared study."""
    from optuna.trial import TrialState

    name = tune.study_name(config)
    distributions = _distributions(tune, tune.sampler_kind() == "grid")
    repeats = 0
    while not (reason := stop_reason(study, tune, repeats)):
        trial = study.ask(distributions)
        options = dict(trial.params)
        done = [c for c in finished(study) if c.duplicate_of is None]
        twin = next((c for c in done if c.result.options == options), None)
        if twin is not None:
            repeats += 1
            _tell(study, trial, twin.result, twin.number)
            continue
        if any(t.params == options for t in _running(study) if t.number != trial.number):
            repeats += 1  # another worker measures it now: give the sampler another go
            study.tell(trial, state=TrialState.FAIL)
            continue
        repeats = 0
        minutes = sum(c.result.minutes for c in done)
        cfg = candidate_config(config, options, profile_name(options), tune.objective,
                               tune.race, tune.budget.max_minutes - minutes)
        result = measure(cfg, options, root / TUNE_DATA / name / f"trial-{trial.number}",
                         journal, tune.objective, tune.constraints, progress)
        _record(recorder, result, experiment_name(name, f"trial-{trial.number}"), cfg)
        _tell(study, trial, result, None)
        if report is not None:
            report(Candidate(trial.number, result))
    return reason


def _record(recorder: ExperimentRecorder | None, result: CandidateResult, name: str,
            config: BenchConfig) -> None:
    """Before the trial is told: a process killed while recording measures (resumes) and
    records the candidate again."""
    if recorder is not None and result.complete:
        result.experiment = recorder.record(name, config, Path(result.out_dir) / RAW)


def best_candidate(candidates: list[Candidate], direction: str) -> Candidate | None:
    """The feasible candidate with the best objective, if its estimate beats the baseline."""
    feasible = [c for c in candidates if c.duplicate_of is None and c.result.feasible]
    best = max(feasible, key=lambda c: score(c.result, direction), default=None)
    if best is None or not score(best.result, direction) > baseline_score(best.result,
                                                                          direction):
        return None
    return best


def score(result: CandidateResult, direction: str) -> tuple[float, ...]:
    """Larger is better: the capacity, then tasks/min at it (the capacity objective); else
    the objective's ratio, signed by its good direction."""
    if result.by_capacity:
        return (result.capacity, result.tasks_per_min)
    return (result.ratio if direction == "higher" else -result.ratio,)


def baseline_score(result: CandidateResult, direction: str) -> tuple[float, ...]:
    """The baseline's score as measured beside the candidate (a ratio of 1: no change)."""
    if result.by_capacity:
        return (result.control_capacity, result.control_tasks_per_min)
    return (1.0 if direction == "higher" else -1.0,)


def confirm_best(config: BenchConfig, tune: TuneConfig, root: Path, study: Any,
                 journal: Path, progress: bool, recorder: ExperimentRecorder | None) -> None:
    """Measure the best candidate again on fresh runs (its own journal), once per study; the
    verdict is stored in the study."""
    best = best_candidate(finished(study), objective_direction(tune))
    if best is None or stored_confirmation(study, best) is not None:
        return
    name = tune.study_name(config)
    options = best.result.options
    cfg = candidate_config(config, options, f"confirm-{profile_name(options)}",
                           tune.objective, tune.confirm)
    confirm = measure(cfg, options, root / TUNE_DATA / name / CONFIRM_LABEL, journal,
                      tune.objective, tune.constraints, progress)
    _record(recorder, confirm, experiment_name(name, CONFIRM_LABEL), cfg)
    study.set_user_attr(CONFIRM_KEY, {"trial": best.number, "result": confirm.attrs()})


def stored_confirmation(study: Any, best: Candidate) -> CandidateResult | None:
    """The confirmatory run the study holds for this best candidate (None: not run yet)."""
    stored = study.user_attrs.get(CONFIRM_KEY)
    if not stored or stored["trial"] != best.number:
        return None
    return CandidateResult.from_attrs(stored["result"])


def tune_result(tune: TuneConfig, name: str, study: Any, reason: str) -> TuneResult:
    """What the study holds: its candidates, the best, and the stored confirmation."""
    direction = objective_direction(tune)
    candidates = finished(study)
    best = best_candidate(candidates, direction)
    confirm = stored_confirmation(study, best) if best is not None else None
    confirmed = confirm is not None and confirm.feasible and confirm.verdict == BETTER
    return TuneResult(name, tune.objective, direction, candidates, best, confirm, confirmed,
                      reason)
