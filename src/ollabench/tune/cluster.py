"""`ollabench tune --workers N`: one search on several machines, through the submitit/SLURM
path of `ollabench sweep` (Hydra's launcher, one job per node, each with its own server).

The driver checks the remotes, opens the study in a storage every node reaches (an Optuna
journal file in the shared job folder, or `tune.storage`), closes trials a killed run left
in flight, then launches N search jobs. Each clones the repository at the driver's commit
and runs `ollabench tune --role search` there: the usual ask/measure/tell loop against the
shared study, each candidate recorded as a DVC experiment and pushed with its data. Once all
have ended, one more job measures the best candidate again (`--role confirm`). The driver
then writes the report and, for a confirmed winner, the profile, from the study alone."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollabench.config.overrides import override_value
from ollabench.config.schema import BenchConfig
from ollabench.errors import ConfigError, JobFailed
from ollabench.files import write_json_atomic
from ollabench.paths import CONF_DIR
from ollabench.sweep import JOB_LOG, JOB_RESULT, clone_at, prepare, run_logged, run_sweep
from ollabench.tune import TuneOutcome, check_against_backend, recorder_for, write_outcome
from ollabench.tune.search import (
    best_candidate,
    confirm_best,
    explore,
    finished,
    objective_direction,
    open_study,
    stop_reason,
    stored_confirmation,
    tune_result,
)
from ollabench.tune.settings import TuneConfig

if TYPE_CHECKING:
    from omegaconf import DictConfig

SEARCH, CONFIRM = "search", "confirm"
JOB_AXIS = "tune_job"  # the Hydra sweep axis that makes N jobs: a worker number or "confirm"
STUDY_JOURNAL = "study.journal"


@dataclass(frozen=True)
class TuneJob:
    """What every Hydra job of a cluster search runs, on its node: the launcher pickles it."""

    git_url: str
    commit: str
    tune_name: str
    overrides: tuple[str, ...]  # the driver's tune overrides, tune.storage pinned
    journal_dir: str  # the candidates' bench journals, shared: any job resumes any candidate
    git_remote: str
    dvc_remote: str | None

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        out = Path(hydra.runtime.output_dir)
        role = CONFIRM if str(cfg[JOB_AXIS]) == CONFIRM else SEARCH
        result: dict[str, Any] = {"job": hydra.job.num, "role": role,
                                  "node": socket.gethostname()}
        try:
            clone = clone_at(self.git_url, self.commit, out)
            remote = ["--dvc-remote", self.dvc_remote] if self.dvc_remote else []
            run_logged([sys.executable, "-m", "ollabench.cli", "tune", "--role", role,
                        "--tune", self.tune_name, "--journal-dir", self.journal_dir,
                        "--git-remote", self.git_remote, *remote, "--no-progress",
                        *self.overrides], clone, out / JOB_LOG)
            result["status"] = "done"
        except JobFailed as exc:
            result.update(status="failed", error=str(exc))
        write_json_atomic(out / JOB_RESULT, result)
        return result


def run_job(config: BenchConfig, tune: TuneConfig, root: Path, role: str, journal: Path,
            git_remote: str, dvc_remote: str | None, on_candidate: Any = None) -> None:
    """One job, in its clone: check its node's backend, then search or confirm against the
    shared study. Trials in flight belong to other jobs: they are left alone."""
    check_against_backend(config, tune)
    name = tune.study_name(config)
    recorder = recorder_for(root, name, git_remote, dvc_remote)
    study = open_study(tune, name, tune.storage_spec(root, name), objective_direction(tune),
                       driver=False)
    if role == SEARCH:
        explore(config, tune, root, study, journal, False, on_candidate, recorder)
    else:
        confirm_best(config, tune, root, study, journal, False, recorder)


@dataclass(frozen=True)
class ClusterOutcome:
    outcome: TuneOutcome
    jobs: list[dict[str, Any]]  # each job's result: job, role, node, status (and error)
    folder: Path  # this launch's job folders


def run_cluster(config: BenchConfig, tune: TuneConfig, tune_name: str, overrides: list[str],
                hydra_args: list[str], workers: int, root: Path, git_remote: str,
                dvc_remote: str | None, workdir: Path) -> ClusterOutcome:
    """Drive a search of `workers` jobs, then its confirmation job; write the outcome."""
    name = tune.study_name(config)
    base = (workdir / name).resolve()
    storage = shared_storage(tune, root, base)
    checkout = prepare(root, git_remote, dvc_remote, name)
    study = open_study(tune, name, storage, objective_direction(tune))  # closes in-flight
    folder = base / datetime.now().strftime("%Y%m%d-%H%M%S")
    job = TuneJob(checkout.git_url, checkout.commit, tune_name,
                  (*[o for o in overrides if o.split("=")[0].lstrip("+") != "tune.storage"],
                   f"tune.storage={override_value(storage)}"),
                  str(base / "journal"), git_remote, dvc_remote)
    conf_dir = root / CONF_DIR
    jobs = run_sweep(job, conf_dir, folder / SEARCH,
                     [*hydra_args, f"+{JOB_AXIS}=range(0,{workers})"], multirun=True)
    failed = sum(j["status"] != "done" for j in jobs)
    reason = (f"{failed} of {workers} search jobs failed; rerun to resume the study"
              if failed else stop_reason(study, tune) or "the search jobs ended early")
    best = best_candidate(finished(study), objective_direction(tune))
    if best is not None and stored_confirmation(study, best) is None:
        jobs += run_sweep(job, conf_dir, folder / CONFIRM,
                          [*hydra_args, f"+{JOB_AXIS}={CONFIRM}"], multirun=True)
    outcome = write_outcome(tune_result(tune, name, study, reason), config, root)
    return ClusterOutcome(outcome, jobs, folder)


def shared_storage(tune: TuneConfig, root: Path, base: Path) -> str:
    """The study's storage for jobs on several machines: tune.storage, else an Optuna journal
    file in the job folder (which the launcher already needs on a shared file system)."""
    if tune.storage is None:
        return str(base / STUDY_JOURNAL)
    if tune.storage.startswith("sqlite:"):
        raise ConfigError("tune.storage: a SQLite file cannot be shared by jobs on several "
                          "machines; use an Optuna journal file on a shared file system (a "
                          "path) or a database server URL (postgresql://..., mysql://...)")
    return tune.storage_spec(root, base.name)
