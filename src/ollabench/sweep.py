"""Spread a sweep over a cluster: one Hydra job per point of the grid.

DVC's queue runs experiments on one machine. Here Hydra expands the grid and its launcher
(hydra-submitit-launcher: `submitit_slurm` on a cluster, `submitit_local` on one machine)
runs one job per point. Each job clones the repository at the driver's commit (DVC's repo
lock forbids sharing one checkout), runs `dvc exp run -S <its overrides>` against the Ollama
server of its node and pushes the experiment with its data (`dvc exp push`) to the shared git
and DVC remotes. `dvc exp pull` then brings every result home for `leaderboard` and `compare`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollabench.config.schema import validate_config
from ollabench.errors import ConfigError, JobFailed, SweepError
from ollabench.files import write_json_atomic
from ollabench.paths import CONF_DIR

if TYPE_CHECKING:
    from omegaconf import DictConfig

JOB_RESULT = "ollabench-job.json"
JOB_LOG = "job.log"
CLONE_DIR = "repo"
# Config groups that steer the sweep itself and are no benchmark parameter.
SWEEP_GROUPS = frozenset({"sweep"})
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def bench_overrides(task_overrides: Iterable[str]) -> list[str]:
    """A job's overrides that are benchmark parameters, as `dvc exp run -S` takes them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return [o.input_line for o in parsed
            if o.input_line and o.key_or_group.split(".")[0] not in SWEEP_GROUPS]


@dataclass(frozen=True)
class SweepJob:
    """What every Hydra job runs, on its node: the launcher pickles it there."""

    git_url: str
    commit: str
    name: str
    dvc_remote: str | None = None

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        hydra = HydraConfig.get()
        number = hydra.job.num if hydra.mode == RunMode.MULTIRUN else 0
        out = Path(hydra.runtime.output_dir)
        overrides = bench_overrides(hydra.overrides.task)
        result: dict[str, Any] = {"job": number, "experiment": f"{self.name}-{number}",
                                  "overrides": overrides, "node": socket.gethostname()}
        try:
            # The job's own composition: a bad option fails here, before any clone or call.
            validate_config(OmegaConf.to_container(cfg, resolve=True))
            self.run_experiment(out, result["experiment"], overrides)
            result["status"] = "pushed"
        except (ConfigError, JobFailed) as exc:
            result.update(status="failed", error=str(exc))
        write_json_atomic(out / JOB_RESULT, result)
        return result

    def run_experiment(self, out: Path, experiment: str, overrides: list[str]) -> None:
        """Clone at the sweep's commit, run the experiment, push it with its data."""
        clone = clone_at(self.git_url, self.commit, out)
        dvc = [sys.executable, "-m", "dvc"]
        remote = ["--remote", self.dvc_remote] if self.dvc_remote else []
        log = out / JOB_LOG
        run_logged([*dvc, "exp", "run", "--name", experiment,
                    *(arg for o in overrides for arg in ("-S", o))], clone, log)
        run_logged([*dvc, "exp", "push", *remote, "origin", experiment], clone, log)


def tool_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: DVC's stages call `ollabench`, which must be the
    one of this Python, whatever PATH the node has."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | extra | {"PATH": path}


def run_logged(command: list[str], cwd: Path, log: Path,
               env: dict[str, str] | None = None) -> None:
    """Run command with its output appended to log; a failure raises JobFailed with the
    log's last line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, cwd=cwd, env=env or tool_env(), stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise JobFailed(f"`{' '.join(command[:4])}` exited {done.returncode}: "
                        f"{_last_line(log)} (log: {log})")


def clone_at(git_url: str, commit: str, out: Path) -> Path:
    """A job's own clone of the repository at the driver's commit, in out/repo (DVC's repo
    lock forbids two experiments in one checkout)."""
    clone = out / CLONE_DIR
    log = out / JOB_LOG
    run_logged(["git", "clone", "--quiet", "--no-checkout", git_url, str(clone)], out, log)
    run_logged(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", commit],
               clone, log)
    return clone


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# --------------------------------------------------------------------------- the driver


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SweepError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def prepare(root: Path, git_remote: str, dvc_remote: str | None, name: str) -> SweepJob:
    """Check what the jobs will need from the nodes, then describe their task."""
    if not EXPERIMENT_NAME.fullmatch(name):
        raise SweepError(f"--name: {name!r} is no valid experiment name (letters, digits, "
                         "'.', '_', '-')")
    commit = _git(root, "rev-parse", "HEAD")
    try:
        url = _git(root, "remote", "get-url", git_remote)
    except SweepError:
        raise SweepError(f"no git remote '{git_remote}': the jobs clone it and push their "
                         f"experiments there (git remote add {git_remote} URL)") from None
    on_remote = _git(root, "branch", "--remotes", "--contains", commit).split()
    if not any(ref.startswith(f"{git_remote}/") for ref in on_remote):
        raise SweepError(f"commit {commit[:10]} is not on '{git_remote}', which the jobs "
                         f"clone: push it first (git push {git_remote} HEAD)")
    _check_dvc_remote(root, dvc_remote)
    if _git(root, "status", "--porcelain", "--untracked-files=no"):
        print(f"ollabench: warning: uncommitted changes are not part of the sweep; the jobs "
              f"run commit {commit[:10]}", file=sys.stderr)
    if not Path(url).is_absolute() and Path(root, url).exists():
        url = str(Path(root, url).resolve())  # a relative path remote, seen from elsewhere
    return SweepJob(url, commit, name, dvc_remote)


def _check_dvc_remote(root: Path, name: str | None) -> None:
    """The jobs' clones see the committed, global and system DVC config, not config.local."""
    from dvc.repo import Repo

    remotes: dict[str, Any] = {}
    default = None
    with Repo(str(root)) as repo:
        for level in ("system", "global", "repo"):
            config = repo.config.read(level)
            remotes.update(config.get("remote", {}))
            default = config.get("core", {}).get("remote", default)
    wanted = name or default
    if wanted is None:
        raise SweepError("no default DVC remote for the jobs' data: add one with "
                         "`dvc remote add -d NAME URL` and commit .dvc/config")
    if wanted not in remotes:
        raise SweepError(f"DVC remote '{wanted}' is not in the committed .dvc/config (a clone "
                         f"does not see .dvc/config.local): `dvc remote add {wanted} URL`")


def run_sweep(job: SweepJob, conf_dir: Path, sweep_dir: Path, hydra_args: list[str],
              multirun: bool) -> list[dict[str, Any]]:
    """Hand the overrides to Hydra (its sweeper and launcher), then collect the job results."""
    import hydra

    main = hydra.main(version_base=None, config_path=str(conf_dir.resolve()),
                      config_name="config")(job)
    argv = ["ollabench sweep", *(["--multirun"] if multirun else []),
            f"hydra.sweep.dir={sweep_dir}", f"hydra.run.dir={sweep_dir / '0'}", *hydra_args]
    saved, sys.argv = sys.argv, argv  # hydra.main reads its command line from sys.argv
    try:
        main()
    except SystemExit as exc:  # Hydra reports its own errors, then exits
        if exc.code:
            raise SweepError("the Hydra sweep failed (its message is above)") from None
    finally:
        sys.argv = saved
    results = [json.loads(p.read_text(encoding="utf-8"))
               for p in sweep_dir.glob(f"*/{JOB_RESULT}")]
    return sorted(results, key=lambda r: r["job"])


def sweep_experiments(root: Path, overrides: list[str], multirun: bool, name: str | None,
                      git_remote: str, dvc_remote: str | None,
                      workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Check the remotes, run every job, and return the sweep's folder and its job results.
    A name that ran before is refused: its experiments would collide."""
    name = name or datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    job = prepare(root, git_remote, dvc_remote, name)
    sweep_dir = (workdir / name).resolve()
    if sweep_dir.exists():
        raise SweepError(f"{sweep_dir} exists: a sweep named '{name}' ran before; its "
                         "experiments keep that name, so choose another --name")
    return sweep_dir, run_sweep(job, root / CONF_DIR, sweep_dir, overrides, multirun)
