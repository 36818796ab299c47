"""Commands across experiments: `compare` two revisions, rank them (`leaderboard`), follow
them over time (`history`), and run a grid of them on a cluster (`sweep`). Each needs the DVC
repository it runs in."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ollabench.errors import EXIT_INCOMPLETE, OllabenchError
from ollabench.paths import (
    COMPARE_OUT,
    COMPARISON_MD,
    COMPARISONS_FILE,
    CONF_DIR,
    HISTORY_OUT,
    LEADERBOARD_OUT,
    SWEEP_ROOT,
    TUNE_JOBS,
)

# an override for Hydra itself (the launcher), not for the benchmark
HYDRA_OVERRIDE = re.compile(r"^\+{0,2}hydra[./]")


def repo_root() -> Path:
    """The DVC repository around the working directory."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except NotDvcRepoError:
        raise OllabenchError("not inside a DVC repository (run it in the project folder)"
                             ) from None


def _slug(rev: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rev)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ollabench.compare import compare, headline_label, levels_line, write_comparison
    from ollabench.report.format import fmt_cell

    result = compare(repo_root(), args.a, args.b, args.arm, args.threshold_pct)
    out = args.out or COMPARE_OUT / f"{_slug(args.a)}_vs_{_slug(args.b)}"
    report = write_comparison(result, out)
    print(headline_label(result.differences))
    for d in result.differences:
        print(f"  {d.category}.{d.name}: {fmt_cell(d.a)} -> {fmt_cell(d.b)}")
    if max(result.levels[0] + result.levels[1]) > 1:
        print(levels_line(result))
    print(f"wrote {report} and {out / COMPARISONS_FILE}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from ollabench.compare import leaderboard, leaderboard_text, write_leaderboard

    frame, load = leaderboard(repo_root(), args.metric, args.stage, args.by)
    print(leaderboard_text(frame, load), end="")
    report = write_leaderboard(frame, args.metric, args.stage, args.out, load, args.by)
    print(f"wrote {report} and {report.with_suffix('.csv')}")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from ollabench.history.build import DEFAULT_STAGES, history
    from ollabench.history.output import summary_lines, write_history
    from ollabench.stats import HEADLINE_METRICS

    result = history(repo_root(), args.revs, args.all_experiments, args.arm,
                     args.stage or DEFAULT_STAGES, args.metric or HEADLINE_METRICS,
                     args.merge_hosts,
                     args.threshold_pct, progress=not args.no_progress)
    write_history(result, args.out)
    print("\n".join(summary_lines(result, args.out)))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ollabench.sweep import sweep_experiments

    sweep_dir, results = sweep_experiments(repo_root(), args.overrides, args.multirun,
                                           args.name, args.git_remote, args.dvc_remote,
                                           args.workdir)
    for r in results:
        status = r["status"] if r["status"] == "pushed" else f"FAILED: {r.get('error')}"
        print(f"#{r['job']} {r['experiment']} on {r['node']} "
              f"[{' '.join(r['overrides']) or 'defaults'}]: {status}")
    failed = sum(r["status"] != "pushed" for r in results)
    print(f"{len(results) - failed} of {len(results)} experiments pushed to "
          f"'{args.git_remote}' (jobs in {sweep_dir}); fetch them with "
          f"`dvc exp pull {args.git_remote}`, then `ollabench leaderboard`")
    return EXIT_INCOMPLETE if failed or not results else 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from ollabench.tune import load, run_tune
    from ollabench.tune.output import candidate_line

    hydra_args = [o for o in args.overrides if HYDRA_OVERRIDE.match(o)]
    overrides = [o for o in args.overrides if not HYDRA_OVERRIDE.match(o)]
    _check_tune_args(args, hydra_args)
    config, tune = load(overrides, args.tune, conf_dir=args.conf)

    def show(candidate: Any) -> None:
        print(candidate_line(candidate, tune.objective), flush=True)

    if args.role:
        from ollabench.tune.cluster import run_job

        run_job(config, tune, args.root, args.role, args.journal_dir, args.git_remote,
                args.dvc_remote, show)
        return 0
    if args.workers:
        from ollabench.tune.cluster import run_cluster

        cluster = run_cluster(config, tune, args.tune, overrides, hydra_args, args.workers,
                              args.root, args.git_remote, args.dvc_remote, args.workdir)
        for job in cluster.jobs:
            status = "done" if job["status"] == "done" else f"FAILED: {job.get('error')}"
            print(f"{job['role']} job #{job['job']} on {job['node']}: {status}")
        for candidate in cluster.outcome.result.candidates:
            if candidate.duplicate_of is None:
                show(candidate)
        _print_outcome(cluster.outcome)
        print(f"jobs in {cluster.folder}; fetch the experiments with "
              f"`dvc exp pull {args.git_remote}`")
        return EXIT_INCOMPLETE if any(j["status"] != "done" for j in cluster.jobs) else 0
    _print_outcome(run_tune(config, tune, args.root, progress=not args.no_progress,
                            on_candidate=show, experiments=not args.no_experiments))
    return 0


def _check_tune_args(args: argparse.Namespace, hydra_args: list[str]) -> None:
    if args.workers is not None and args.workers < 1:
        raise OllabenchError(f"--workers: must be at least 1, got {args.workers}")
    if not args.workers:
        if hydra_args:
            raise OllabenchError(f"{hydra_args[0]}: launcher settings need --workers N")
        return
    if args.no_experiments:
        raise OllabenchError("--no-experiments: a cluster search brings its candidates home "
                             "as DVC experiments; it cannot run without them")
    if args.conf != CONF_DIR:
        raise OllabenchError(f"--conf: the jobs compose the committed {CONF_DIR}/ of their "
                             "clone; commit your search there instead")


def _print_outcome(outcome: Any) -> None:
    from ollabench.tune.output import summary

    print(summary(outcome.result))
    if outcome.profile is not None:
        print(f"wrote {outcome.profile}: use it with `dvc exp run -S "
              f"profile={outcome.profile.stem}`")
    print(f"wrote {outcome.report}")


def add_tune_command(sub: argparse._SubParsersAction) -> None:
    """Register `tune`."""
    p = sub.add_parser(
        "tune", help="search the fastest settings for this model on this machine, and prove it",
        description="Search the options of conf/tune/NAME.yaml (Optuna; its study in "
                    ".ollabench/tune/<study>.db, so a killed tune resumes) against the "
                    "reference arm (profile@reference, the baseline). Each candidate is a "
                    "bench of baseline vs baseline + its options, raced with the sequential "
                    "stopping rule on the objective; one that truncates prompts, fails calls "
                    "or lowers answer quality is infeasible. The best feasible candidate is "
                    "measured again on fresh runs; only a confirmed winner is written to "
                    "conf/profile/tuned_<model>.yaml. tune.objective: capacity maximises the "
                    "treatment's capacity at run.slo instead (the largest level of "
                    "run.concurrency whose tasks meet it, ties broken by tasks/min at that "
                    "level; needs several levels and an SLO bound). Each measured candidate "
                    "and the confirmatory run is a DVC experiment (<study>-trial-<n>, "
                    "<study>-confirm); "
                    "their records are also in data/tune/<study>/; report: "
                    "reports/tune/<study>/tune.md. With --workers N the search runs as N jobs "
                    "of a Hydra launcher (SLURM), sharing the study (docs/experiments.md).")
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides of the benchmark (model=qwen2.5-7b, "
                        "profile@reference=baseline) and of the search "
                        "(tune.budget.max_candidates=6, tune.space.num_batch=[128,256])")
    p.add_argument("--tune", default="default", metavar="NAME",
                   help="the search: conf/tune/NAME.yaml (default)")
    p.add_argument("--conf", type=Path, default=CONF_DIR, help=f"config folder ({CONF_DIR})")
    p.add_argument("--root", type=Path, default=Path("."),
                   help="project folder for the study, records, report and profile (.)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-experiments", action="store_true",
                   help="keep the candidates out of DVC (by default each measured candidate "
                        "and the confirmatory run is a DVC experiment, <study>-trial-<n> and "
                        "<study>-confirm, for `dvc exp show`, compare, leaderboard, history)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run the search as N jobs of a Hydra launcher (add "
                        "hydra/launcher=submitit_slurm and hydra.launcher.* overrides, as for "
                        "`sweep`), each on its node with its own server, sharing the study; "
                        "then one job confirms the winner")
    _add_job_options(p, TUNE_JOBS, "with --workers: ",
                     "the jobs' folders and the shared study journal (<workdir>/<study>/)")
    # What each job of a cluster search runs in its clone (tune/cluster.py).
    p.add_argument("--role", choices=("search", "confirm"), help=argparse.SUPPRESS)
    p.add_argument("--journal-dir", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_tune)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `compare`, `leaderboard`, `history`, `sweep` and `tune`."""
    p = sub.add_parser(
        "compare", help="compare one arm across two revisions or DVC experiments",
        description="Read the raw records of A and B through DVC (local cache or DVC remote, "
                    "no checkout) and compare A's arm (control) with B's arm (treatment) with "
                    "the statistics of `aggregate`. Provenance differences (machine, model "
                    "weights, engine, options, prompt size) head the report. Under load "
                    "(run.concurrency) only the levels both ran are compared, each on its own: "
                    "verdicts (one value per block above level 1), load.csv's figures and "
                    "each side's capacity at its run.slo; results without levels are "
                    "level 1.")
    p.add_argument("a", metavar="A", help="git revision, branch, tag or DVC experiment name")
    p.add_argument("b", metavar="B", help="git revision, branch, tag or DVC experiment name")
    p.add_argument("--arm", default="treatment",
                   help="the arm compared on both sides: control or treatment (treatment)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for {COMPARISON_MD} and {COMPARISONS_FILE} "
                        f"({COMPARE_OUT}/A_vs_B)")
    p.add_argument("--threshold-pct", type=float, default=None,
                   help="practical threshold in %% (the larger of the two recorded ones)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "leaderboard", help="rank every DVC experiment by a metric's treatment median",
        description="Rank all DVC experiments of the repository by the treatment median of "
                    "one metric and stage, with its bootstrap CI and its verdict against its "
                    "own control arm. Prints a listing that fits 120 columns (each experiment's "
                    "figures, then its verdict, quality and changes beneath) and writes "
                    "Markdown and CSV with every column: the readable form of `dvc exp show`. "
                    "An experiment with several load levels (run.concurrency) also gets each "
                    "arm's capacity at its run.slo and a line per level (never averaged), "
                    "and <stage>_<metric>_load.csv; --by capacity ranks by that capacity.")
    p.add_argument("--by", choices=("median", "capacity"), default="median",
                   help="median: the treatment median of --metric at one agent (default); "
                        "capacity: the treatment's capacity at its run.slo, ties broken by the "
                        "tasks/min served at it, then the median (experiments without levels "
                        "last)")
    p.add_argument("--metric", default="eval_tok_s",
                   help="ttft_ms, eval_tok_s or e2e_ms, a headline metric (eval_tok_s)")
    p.add_argument("--stage", default="workflow",
                   help="a stage of the workload (analysis, report, or a trace's stage "
                        "labels) or workflow, the whole run (workflow)")
    p.add_argument("--out", type=Path, default=LEADERBOARD_OUT,
                   help=f"folder for <stage>_<metric>.md and .csv ({LEADERBOARD_OUT})")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser(
        "history", help="every commit and experiment on one time line, change points explained",
        description="Read each revision's raw records and provenance through DVC (local cache "
                    "or DVC remote, no checkout), build one series per metric, stage and arm "
                    "on each setup (host, backend, model weights) and load level "
                    "(run.concurrency; results without levels are level 1), find the change "
                    "points "
                    "(ruptures' PELT, kept only when significant on the per-run data and at "
                    "least the practical threshold) and explain each by the provenance that "
                    "differs. Writes history.csv, changes.csv, history.md, history_plot.csv "
                    "and a figure per series.")
    p.add_argument("--revs", default=None,
                   help="A..B (the commits after A up to B) or B (B and its ancestors); "
                        "HEAD when neither this nor --all-experiments is given")
    p.add_argument("--all-experiments", action="store_true",
                   help="every DVC experiment of the repository, placed by its date")
    p.add_argument("--metric", action="append", default=None,
                   help="a metric, repeatable (ttft_ms, eval_tok_s, e2e_ms)")
    p.add_argument("--stage", action="append", default=None,
                   help="a stage of the workload or workflow, repeatable (analysis, report "
                        "and workflow: the agent workload's)")
    p.add_argument("--arm", default="treatment", help="control or treatment (treatment)")
    p.add_argument("--merge-hosts", action="store_true",
                   help="one series across hosts: a host change is then named as the cause "
                        "of the change point it makes")
    p.add_argument("--threshold-pct", type=float, default=None,
                   help="smallest step reported, in %% (the largest recorded "
                        "run.practical_threshold_pct)")
    p.add_argument("--out", type=Path, default=HISTORY_OUT,
                   help=f"folder for the history's files ({HISTORY_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser(
        "sweep", help="run a sweep as a Hydra multirun, one clone and experiment per job",
        description="Expand Hydra overrides into jobs (-m) and run them with a Hydra launcher, "
                    "e.g. hydra/launcher=submitit_slurm. Each job clones this repository at "
                    "HEAD (which must be on the git remote), runs `dvc exp run -S <its "
                    "overrides>` and pushes the experiment and its data (`dvc exp push`). "
                    "+sweep=chimera_sweep selects a grid from conf/sweep/.")
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides: benchmark parameters (profile.options.num_ctx=256,512)"
                        ", hydra/launcher=..., hydra.launcher.*=..., +sweep=NAME")
    p.add_argument("-m", "--multirun", action="store_true",
                   help="expand sweeps into one job each (without it: one job, here)")
    p.add_argument("--name", default=None,
                   help="experiment name prefix; job N is <name>-N (sweep-<date>-<time>)")
    _add_job_options(p, SWEEP_ROOT, "", "the jobs' folders: clones, logs, Hydra files")
    p.set_defaults(func=_cmd_sweep)
    add_tune_command(sub)


def _add_job_options(p: argparse.ArgumentParser, workdir: Path, when: str,
                     workdir_what: str) -> None:
    """Where the jobs of a cluster run (sweep, tune --workers) clone, push and keep files."""
    p.add_argument("--git-remote", default="origin",
                   help=f"{when}the git remote the jobs clone and push to (origin)")
    p.add_argument("--dvc-remote", default=None,
                   help=f"{when}the DVC remote for the jobs' data (the default remote)")
    p.add_argument("--workdir", type=Path, default=workdir,
                   help=f"{when}{workdir_what}; on a cluster, a file system every node sees "
                        f"({workdir})")

