"""Every measured candidate, and the confirmatory run, becomes a DVC experiment, so that
`dvc exp show`, `compare`, `leaderboard` and `history` see its params, raw records and
metrics like those of any `dvc exp run`.

How: `dvc exp run --temp --name <study>-trial-<n> -S ...`. The overrides turn DVC's own
Hydra composition of conf/ into the candidate's exact bench config (checked here before the
run). The candidate's measured calls are laid out as a bench journal under its config key,
and $OLLABENCH_JOURNAL_DIR points the experiment's bench stage there: the stage resumes
every call, the stopping rule reads the same calls and stops where the search stopped, and
no call is made. The stage removes a journal it completed, so a journal still there after
the run means the experiment did not resume it (an error). Aggregate and report then run as
in any experiment. Nothing is measured twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollabench.config.overrides import changed_keys, overrides_between
from ollabench.config.schema import BenchConfig, compose, validate_config
from ollabench.errors import JobFailed, OllabenchError, TuneError
from ollabench.paths import CALLS_FILE, CONF_DIR, ENV_FILE, JOURNAL_DIR_ENV
from ollabench.sweep import run_logged, tool_env

CONFIRM_LABEL = "confirm"


def experiment_name(study: str, label: str) -> str:
    """`<study>-trial-<n>` or `<study>-confirm`: unique per study, resumable by name."""
    return f"{study}-{label}"


@dataclass(frozen=True)
class ExperimentRecorder:
    """Records candidates of one study as DVC experiments of the repository at root."""

    root: Path
    replay: Path  # the journals the experiments resume
    logs: Path  # one `dvc exp run` log per experiment
    # On a cluster: push each experiment, with its data, to this git remote (and DVC remote)
    git_remote: str | None = None
    dvc_remote: str | None = None

    def check_repository(self) -> None:
        """Before the first call: DVC needs a repository with a commit to hang them on."""
        done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"],
                              cwd=self.root, capture_output=True, check=False)
        if not (self.root / ".dvc").is_dir() or done.returncode:
            raise OllabenchError(
                f"{self.root.resolve()}: not a DVC repository with a commit; tune records each "
                "candidate as a DVC experiment (run it in the project folder, or pass "
                "--no-experiments to keep the candidates out of DVC)")

    def overrides(self, config: BenchConfig) -> list[str]:
        """`-S` overrides under which DVC composes exactly `config`."""
        conf_dir = self.root / CONF_DIR

        def composed(overrides: list[str]) -> dict[str, Any]:
            # validated: an unset option (null) is absent, as in `config`
            return validate_config(compose(overrides, conf_dir)).model_dump(mode="json")

        target = config.model_dump(mode="json")
        overrides = overrides_between(composed([]), target)
        changed, removed = changed_keys(composed(overrides), target)
        if changed or removed:
            raise TuneError(f"DVC's composition of {conf_dir} cannot express the candidate's "
                            f"config (keys: {', '.join([*changed, *removed])})")
        return overrides

    def record(self, name: str, config: BenchConfig, raw_dir: Path) -> str:
        """Run the experiment from the calls in raw_dir (the candidate's bench output);
        return its name."""
        overrides = self.overrides(config)
        key = json.loads((raw_dir / ENV_FILE).read_text(encoding="utf-8"))["journal_key"]
        journal = self.replay / key
        journal.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw_dir / CALLS_FILE, journal / CALLS_FILE)
        log = self.logs / f"{name}.log"
        log.unlink(missing_ok=True)
        try:
            run_logged([sys.executable, "-m", "dvc", "exp", "run", "--temp", "--force",
                        "--name", name, *(arg for o in overrides for arg in ("-S", o))],
                       self.root, log, tool_env(**{JOURNAL_DIR_ENV: str(self.replay.resolve())}))
            if journal.exists():
                shutil.rmtree(journal)
                raise TuneError(f"experiment {name} did not resume the calls the search "
                                f"measured; its bench config differs from the candidate's "
                                f"(log: {log})")
            if self.git_remote is not None:
                remote = ["--remote", self.dvc_remote] if self.dvc_remote else []
                run_logged([sys.executable, "-m", "dvc", "exp", "push", *remote,
                            self.git_remote, name], self.root, log)
        except JobFailed as exc:
            raise TuneError(str(exc)) from None
        return name
