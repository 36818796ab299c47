"""Compare one arm across two revisions, and rank every experiment of the repository.

`aggregate` compares the two arms of one run. These commands compare across runs: git
revisions or DVC experiments, read through DVC's API (local cache or DVC remote, never a
checkout), so every number still comes from raw records tied to their parameters. What
differs in the provenance of the two sides comes first in the report: a comparison across
machines or model weights measures the setup as much as the settings, and must say so.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from ollabench.errors import CompareError
from ollabench.files import write_text_atomic
from ollabench.paths import CALLS_FILE, ENV_FILE
from ollabench.records import (
    ARMS,
    MEASURED_STAGES,
    SCHEMA_VERSION,
    CallRecord,
    RecordError,
    read_records,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

T = TypeVar("T")

RAW_DIR = PurePosixPath("data/raw")
PER_RUN_CSV = "data/processed/per_run.csv"
METRICS_JSON = "reports/metrics.json"
PARAMS_YAML = "params.yaml"
COMPARE_OUT = Path("reports/compare")
LEADERBOARD_OUT = Path("reports/leaderboard")
COMPARISON_MD = "comparison.md"
COMPARISONS_CSV = "comparisons.csv"

# Provenance categories that make a comparison "not like for like", in report order, with
# the words used when they differ. `options` and `run` are what experiments vary on purpose.
SETUP_LABELS = {
    "machine": "different machines",
    "hardware": "different hardware",
    "weights": "different model weights",
    "engine": "different engine or server versions",
    "server": "different server environment",
    "software": "different software versions",
    "prompt": "different prompts",
}
CATEGORY_ORDER = (*SETUP_LABELS, "options", "run")
HOST_HARDWARE = ("cpu_model", "cpu_cores_physical", "cpu_cores_logical", "memory_gib",
                 "machine", "os")
RUN_SETTINGS = ("runs", "warmup", "order", "seed", "prompt_cache", "cold_start")
LEADERBOARD_COLUMNS = ("rank", "experiment", "rev", "baseline", "changes", "runs",
                       "treatment_median", "ci_low", "ci_high", "control_median",
                       "median_diff_pct", "p_holm", "verdict", "note")



# --------------------------------------------------------------------------- revisions


class Revision:
    """The files of one git revision or DVC experiment, read through DVC's file system: git
    files from the commit, DVC outputs from the local cache or else the DVC remote."""

    def __init__(self, root: Path, rev: str) -> None:
        from dvc.api import DVCFileSystem
        from dvc.repo import Repo
        from dvc.scm import RevError, resolve_rev

        self.rev = rev
        with Repo(str(root)) as repo:
            try:
                self.sha: str = resolve_rev(repo.scm, rev)
            except RevError:
                raise CompareError(
                    f"unknown revision '{rev}': not a commit, branch, tag or DVC experiment of "
                    f"this repository (a shared experiment needs `dvc exp pull origin {rev}`)"
                ) from None
        self.fs = DVCFileSystem(str(root), rev=self.sha)

    def has(self, path: str) -> bool:
        """True when the revision records the file, whether or not its data is at hand."""
        from dvc_data.index.index import DataIndexError

        if self.fs.exists(path):
            return True
        try:
            self.fs.ls(str(PurePosixPath(path).parent))
        except FileNotFoundError:
            return False
        except DataIndexError:
            return True  # a DVC-tracked folder whose listing is neither cached nor pushed
        return False

    def read_text(self, path: str) -> str:
        return self._fetch(path, lambda: self.fs.read_text(path, encoding="utf-8"))

    def download(self, path: str, dest: Path) -> Path:
        """Copy one file to a local path (raw files can be large)."""
        self._fetch(path, lambda: self.fs.get_file(path, str(dest)))
        return dest

    def _fetch(self, path: str, action: Callable[[], T]) -> T:
        from dvc_data.index.index import DataIndexError

        if not self.has(path):
            raise CompareError(f"revision '{self.rev}' has no {path}")
        try:
            return action()
        except (FileNotFoundError, DataIndexError):
            raise CompareError(
                f"revision '{self.rev}': {path} is neither in the local DVC cache nor on a "
                f"DVC remote; fetch it with `dvc pull` (a commit) or `dvc exp pull origin "
                f"{self.rev}` (an experiment)") from None


def repo_root() -> Path:
    """The DVC repository around the working directory."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except NotDvcRepoError:
        raise CompareError("not inside a DVC repository (run it in the project folder)") from None


# --------------------------------------------------------------------------- one side


@dataclass(frozen=True)
class Side:
    """One arm of one revision: its raw records and the env.json written beside them."""

    rev: str
    sha: str
    arm: str
    env: dict[str, Any]
    records: list[CallRecord]


def load_side(root: Path, rev: str, arm: str) -> Side:
    """Read a revision's raw records and provenance; keep the records of one arm."""
    revision = Revision(root, rev)
    calls = str(RAW_DIR / CALLS_FILE)
    if not revision.has(calls):
        raise CompareError(f"revision '{rev}' has no raw data ({calls}): its bench stage "
                           "never ran there")
    with tempfile.TemporaryDirectory(prefix="ollabench-") as tmp:
        local = revision.download(calls, Path(tmp) / CALLS_FILE)
        try:
            records = read_records(local)
        except RecordError as exc:
            raise CompareError(_record_problem(rev, local, exc)) from None
    env = json.loads(revision.read_text(str(RAW_DIR / ENV_FILE)))
    mine = [r for r in records if r.arm == arm]
    if not mine:
        raise CompareError(f"revision '{rev}' has no calls in the {arm} arm")
    return Side(rev, revision.sha, arm, env, mine)


def _record_problem(rev: str, path: Path, exc: RecordError) -> str:
    """Name a record-format mismatch as such: the fix is a re-run, not a repair."""
    version = _declared_version(path)
    if version == SCHEMA_VERSION:
        return f"revision '{rev}': {exc}"
    age = "a newer" if isinstance(version, int) and version > SCHEMA_VERSION else "an older"
    fix = ("upgrade ollabench" if age == "a newer"
           else "re-run that experiment with this ollabench")
    return (f"revision '{rev}' was recorded in {age} record format (version {version!r}; this "
            f"ollabench reads version {SCHEMA_VERSION}): {fix}")


def _declared_version(path: Path) -> Any:
    """schema_version of the first record (None when it has none); the current version when
    the line is not a JSON object, so that the reader's own message is kept."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line).get("schema_version")
                except (json.JSONDecodeError, AttributeError):
                    return SCHEMA_VERSION
    return SCHEMA_VERSION


def _measured(records: Iterable[CallRecord]) -> list[CallRecord]:
    return [r for r in records if r.phase == "measured" and r.error is None]


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Difference:
    category: str
    name: str
    a: Any
    b: Any


def provenance_facts(side: Side) -> dict[str, Any]:
    """Flat `category.name -> value` facts: where, on what and how the side was measured."""
    env = side.env
    host = env.get("host") or {}
    backend = env.get("backend") or {}
    served = backend.get("model") if isinstance(backend.get("model"), dict) else {}
    config = env.get("config") or {}
    model = config.get("model") or {}
    run = config.get("run") or {}
    return {
        "machine.hostname": host.get("hostname"),
        **{f"hardware.{key}": host.get(key) for key in HOST_HARDWARE},
        "weights.model": model.get("name"),
        "weights.gguf_sha256": backend.get("model_sha256"),
        "weights.ollama_digest": served.get("digest"),
        "weights.quantization": served.get("quantization_level"),
        "engine.backend": model.get("backend"),
        "engine.engine_version": backend.get("engine_version"),
        "engine.server_version": backend.get("server_version"),
        **{f"server.{key}": value for key, value in (env.get("ollama_env") or {}).items()},
        "software.python": env.get("python"),
        **{f"software.{key}": value for key, value in (env.get("packages") or {}).items()},
        "prompt.workload_sha256": (env.get("workload") or {}).get("sha256"),
        f"prompt.tokens.{MEASURED_STAGES[0]}": _prompt_tokens(side.records),
        **{f"options.{key}": value for key, value in _arm_options(side.records).items()},
        **{f"run.{key}": run.get(key) for key in RUN_SETTINGS},
    }


def _prompt_tokens(records: list[CallRecord]) -> float | None:
    """Median prompt size of the first stage, whose prompt is the workload alone (later
    prompts carry earlier outputs, so their size follows the settings under test)."""
    known = [r.prompt_tokens for r in _measured(records)
             if r.stage == MEASURED_STAGES[0] and r.prompt_tokens is not None]
    return statistics.median(known) if known else None


def _arm_options(records: list[CallRecord]) -> dict[str, Any]:
    """The arm's profile and the options its engine really used (output cap per stage)."""
    options: dict[str, Any] = {}
    for record in _measured(records):
        options.setdefault("profile", record.profile)
        for key, value in record.options.items():
            options.setdefault(f"num_predict.{record.stage}" if key == "num_predict" else key,
                               value)
    return options


def provenance_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    """Every fact that differs, setup categories first (a fact one side lacks differs too)."""
    keys = [*a, *(key for key in b if key not in a)]
    found = [Difference(*key.split(".", 1), a.get(key), b.get(key))
             for key in keys if a.get(key) != b.get(key)]
    return sorted(found, key=lambda d: CATEGORY_ORDER.index(d.category))


def setup_labels(differences: Iterable[Difference]) -> list[str]:
    """What makes the comparison not like for like, e.g. ["different machines"]."""
    changed = {d.category for d in differences}
    return [label for category, label in SETUP_LABELS.items() if category in changed]


def headline_label(differences: Sequence[Difference]) -> str:
    labels = setup_labels(differences)
    if not labels:
        return ("Like for like: same machine, hardware, model weights, engine, software and "
                "prompts; only the settings listed below differ.")
    return (f"Across {_join(labels)}: part of every difference below comes from the setup, "
            "not from the settings.")


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    differences: list[Difference]
    table: pd.DataFrame
    threshold_pct: float


def compare(root: Path, rev_a: str, rev_b: str, arm: str = "treatment",
            threshold_pct: float | None = None) -> Comparison:
    """A's arm as control, B's arm as treatment, with aggregate's statistics and verdicts."""
    from ollabench import stats

    if arm not in ARMS:
        raise CompareError(f"--arm: must be one of {', '.join(ARMS)}, got {arm!r}")
    a, b = load_side(root, rev_a, arm), load_side(root, rev_b, arm)
    threshold = threshold_pct if threshold_pct is not None else _recorded_threshold(a, b)
    try:
        table = stats.compare_arms(stats.records_frame(a.records),
                                   stats.records_frame(b.records), threshold,
                                   seed=stats.BOOTSTRAP_SEED)
    except stats.AggregateError as exc:
        raise CompareError(f"{rev_a} vs {rev_b}: {exc}") from None
    # Run i of one experiment and run i of another are not a pair: no paired test.
    table["p_paired"] = math.nan
    differences = provenance_differences(provenance_facts(a), provenance_facts(b))
    return Comparison(a, b, differences, table, threshold)


def _recorded_threshold(a: Side, b: Side) -> float:
    """The stricter (larger) practical threshold of the two experiments."""
    recorded = [((side.env.get("config") or {}).get("run") or {}).get("practical_threshold_pct")
                for side in (a, b)]
    known = [value for value in recorded if value is not None]
    if not known:
        raise CompareError("neither side records run.practical_threshold_pct; "
                           "give --threshold-pct")
    return float(max(known))


def write_comparison(result: Comparison, out_dir: Path) -> Path:
    """comparisons.csv (every stage x metric) and comparison.md; returns the Markdown path."""
    write_text_atomic(out_dir / COMPARISONS_CSV, result.table.to_csv(index=False))
    report = out_dir / COMPARISON_MD
    write_text_atomic(report, comparison_markdown(result))
    return report


def comparison_markdown(result: Comparison) -> str:
    from ollabench import stats

    a, b = result.a, result.b
    lines = [f"# {a.rev} vs {b.rev}: {a.arm} arm", "", f"**{headline_label(result.differences)}**",
             "", "## Provenance differences", ""]
    if result.differences:
        lines.append(format_table(
            ["category", "what", f"A: {a.rev}", f"B: {b.rev}"],
            [[d.category, d.name, _value(d.a), _value(d.b)] for d in result.differences],
            markdown=True))
    else:
        lines.append("None: both sides were measured the same way.\n")
    lines += ["## Sides", "", format_table(
        ["", f"A: {a.rev}", f"B: {b.rev}"],
        [["commit", a.sha[:10], b.sha[:10]],
         ["code ran from", *(_code_commit(s) for s in (a, b))],
         ["started", *(s.env.get("started_at") for s in (a, b))],
         ["profile", *(", ".join(sorted({r.profile for r in s.records})) for s in (a, b))],
         ["measured calls", *(len(_measured(s.records)) for s in (a, b))]],
        markdown=True)]
    headline = result.table[result.table["metric"].isin(stats.HEADLINE_METRICS)]
    lines += [
        "## Verdicts: B against A", "",
        f"Both sides are the {a.arm} arm of their revision. A is the reference (control), B "
        f"the one under test (treatment): a positive difference means B is higher. Same "
        f"statistics as `ollabench aggregate` (one value per run, Welch test on "
        f"logs with Holm adjustment, bootstrap CI of the median difference), practical "
        f"threshold {result.threshold_pct:g}%. The paired test is left out: runs of two "
        f"experiments are not pairs. Every stage and metric: {COMPARISONS_CSV}.", "",
        format_table(
            ["stage", "metric", "better", "A median", "B median", "difference", "95% CI",
             "p (Holm)", "verdict"],
            [[r.stage, r.metric, r.better, r.control_median, r.treatment_median,
              _pct(r.median_diff_pct), f"{_pct(r.ci_low_pct)} to {_pct(r.ci_high_pct)}",
              r.p_holm, r.verdict] for r in headline.itertuples(index=False)],
            markdown=True)]
    return "\n".join(lines)


def _code_commit(side: Side) -> str:
    git = side.env.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:10]
    return f"{commit} with uncommitted changes" if git.get("dirty") else commit


# --------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True)
class Experiment:
    name: str
    sha: str
    baseline: str


def list_experiments(root: Path) -> list[Experiment]:
    """Every DVC experiment of the repository, on any baseline commit."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = repo.experiments.ls(all_commits=True)
    return [Experiment(name, sha, baseline)
            for baseline, experiments in found.items() for name, sha in experiments if sha]


def leaderboard(root: Path, metric: str = "eval_tok_s", stage: str = "report") -> pd.DataFrame:
    """Experiments ranked by the treatment median of one metric and stage (best first)."""
    import pandas as pd

    from ollabench import stats

    if metric not in stats.HEADLINE_METRICS:
        raise CompareError(f"--metric: must be one of {', '.join(stats.HEADLINE_METRICS)} "
                           f"(the metrics in {METRICS_JSON}), got {metric!r}")
    if stage not in stats.STAGES:
        raise CompareError(f"--stage: must be one of {', '.join(stats.STAGES)}, got {stage!r}")
    experiments = list_experiments(root)
    if not experiments:
        raise CompareError("this repository has no DVC experiments: run some with `dvc exp run`,"
                           " or fetch shared ones with `dvc exp pull -A origin`")
    baselines: dict[str, dict[str, Any]] = {}
    rows = [_leaderboard_row(root, exp, metric, stage, baselines) for exp in experiments]
    frame = pd.DataFrame(rows, columns=[c for c in LEADERBOARD_COLUMNS if c != "rank"])
    lower = stats.METRIC_BY_NAME[metric].direction == "lower"
    frame = frame.sort_values(["treatment_median", "experiment"], ascending=[lower, True],
                              na_position="last", kind="stable", ignore_index=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def _leaderboard_row(root: Path, exp: Experiment, metric: str, stage: str,
                     baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    revision = Revision(root, exp.sha)
    if exp.baseline not in baselines:
        baselines[exp.baseline] = _params(Revision(root, exp.baseline))
    notes: list[str] = []
    published = _optional(
        lambda: json.loads(revision.read_text(METRICS_JSON)).get(stage, {}).get(metric, {}),
        {}, notes)
    values = _optional(lambda: _per_run_values(revision, metric, stage), None, notes)
    low, high = median_ci(values) if values is not None else (math.nan, math.nan)
    return {
        "experiment": exp.name, "rev": exp.sha[:7], "baseline": exp.baseline[:7],
        "changes": param_changes(baselines[exp.baseline], _params(revision)),
        "runs": None if values is None else len(values),
        "treatment_median": _number(published.get("treatment_median")),
        "ci_low": low, "ci_high": high,
        "control_median": _number(published.get("control_median")),
        "median_diff_pct": _number(published.get("median_diff_pct")),
        "p_holm": _number(published.get("p_holm")),
        "verdict": published.get("verdict"), "note": "; ".join(notes),
    }


def _optional(read: Callable[[], T], default: T, notes: list[str]) -> T:
    """A leaderboard row shows what it can: a file that cannot be read becomes a note."""
    try:
        return read()
    except CompareError as exc:
        notes.append(str(exc))
        return default


def _params(revision: Revision) -> dict[str, Any]:
    return _optional(lambda: yaml.safe_load(revision.read_text(PARAMS_YAML)) or {}, {}, [])


def _per_run_values(revision: Revision, metric: str, stage: str) -> np.ndarray:
    import pandas as pd

    runs = pd.read_csv(io.StringIO(revision.read_text(PER_RUN_CSV)))
    chosen = runs.loc[(runs["arm"] == "treatment") & (runs["stage"] == stage), metric]
    return chosen.dropna().to_numpy(dtype=float)


def median_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the median, as aggregate computes its CIs."""
    import numpy as np

    from ollabench import stats

    if len(values) == 0:
        return math.nan, math.nan
    medians = stats.bootstrap_medians(values, stats.BOOTSTRAP_RESAMPLES,
                                      np.random.default_rng(stats.BOOTSTRAP_SEED))
    low, high = np.percentile(medians, [100 * stats.ALPHA / 2, 100 * (1 - stats.ALPHA / 2)])
    return float(low), float(high)


def param_changes(base: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The parameters an experiment changed against its baseline, as Hydra overrides."""
    old, new = _flatten(base), _flatten(params)
    changed = [f"{key}={_value(value)}" for key, value in new.items() if old.get(key) != value]
    removed = [f"~{key}" for key in old if key not in new]
    return " ".join(changed + removed) or "(none)"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_leaderboard(frame: pd.DataFrame, metric: str, stage: str, out_dir: Path) -> Path:
    """<stage>_<metric>.csv and .md in out_dir; returns the Markdown path."""
    from ollabench import stats

    stem = out_dir / f"{stage}_{metric}"
    write_text_atomic(stem.with_suffix(".csv"), frame.to_csv(index=False))
    direction = stats.METRIC_BY_NAME[metric].direction
    notes = [f"- {r.experiment}: {r.note}" for r in frame.itertuples() if r.note]
    text = "\n".join([
        f"# Leaderboard: {metric}, {stage} stage", "",
        f"Every DVC experiment of the repository, ranked by the median of its treatment arm "
        f"({direction} is better). CI: 95% percentile bootstrap of that median over runs "
        f"(from data/processed/per_run.csv). Difference, p and verdict: against the "
        f"experiment's own control arm, as `aggregate` published them ({METRICS_JSON}).", "",
        leaderboard_table(frame, markdown=True), *(["## Notes", "", *notes, ""] if notes else []),
    ])
    markdown = stem.with_suffix(".md")
    write_text_atomic(markdown, text)
    return markdown


def leaderboard_table(frame: pd.DataFrame, markdown: bool) -> str:
    return format_table(
        ["#", "experiment", "rev", "changes", "runs", "treatment median", "95% CI",
         "control median", "difference", "p (Holm)", "verdict"],
        [[r.rank, r.experiment, r.rev, r.changes, r.runs, r.treatment_median,
          f"{_value(r.ci_low)} to {_value(r.ci_high)}", r.control_median,
          _pct(r.median_diff_pct), r.p_holm, r.verdict] for r in frame.itertuples()],
        markdown=markdown)


# --------------------------------------------------------------------------- formatting


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]], markdown: bool) -> str:
    """A Markdown table, or the same cells aligned for a terminal."""
    cells = [list(header), *([_value(v) for v in row] for row in rows)]
    if markdown:
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join(" --- " for _ in header) + "|")
    else:
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in cells]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    """A cell: 4 significant digits, '-' for unknown, JSON for lists and mappings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.1f}%"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------- CLI


def _slug(rev: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rev)


def _cmd_compare(args: argparse.Namespace) -> int:
    result = compare(repo_root(), args.a, args.b, args.arm, args.threshold_pct)
    out = args.out or COMPARE_OUT / f"{_slug(args.a)}_vs_{_slug(args.b)}"
    report = write_comparison(result, out)
    print(headline_label(result.differences))
    for d in result.differences:
        print(f"  {d.category}.{d.name}: {_value(d.a)} -> {_value(d.b)}")
    print(f"wrote {report} and {out / COMPARISONS_CSV}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    frame = leaderboard(repo_root(), args.metric, args.stage)
    print(leaderboard_table(frame, markdown=False), end="")
    report = write_leaderboard(frame, args.metric, args.stage, args.out)
    print(f"wrote {report} and {report.with_suffix('.csv')}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `compare`, `leaderboard` and `sweep` on the ollabench command line."""
    from ollabench import sweep

    p = sub.add_parser(
        "compare", help="compare one arm across two revisions or DVC experiments",
        description="Read the raw records of A and B through DVC (local cache or DVC remote, "
                    "no checkout) and compare A's arm (control) with B's arm (treatment) with "
                    "the statistics of `aggregate`. Provenance differences (machine, model "
                    "weights, engine, options, prompt size) head the report.")
    p.add_argument("a", metavar="A", help="git revision, branch, tag or DVC experiment name")
    p.add_argument("b", metavar="B", help="git revision, branch, tag or DVC experiment name")
    p.add_argument("--arm", choices=ARMS, default="treatment",
                   help="the arm compared on both sides (treatment)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for {COMPARISON_MD} and {COMPARISONS_CSV} "
                        f"({COMPARE_OUT}/A_vs_B)")
    p.add_argument("--threshold-pct", type=float, default=None,
                   help="practical threshold in %% (the larger of the two recorded ones)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "leaderboard", help="rank every DVC experiment by a metric's treatment median",
        description="Rank all DVC experiments of the repository by the treatment median of "
                    "one metric and stage, with its bootstrap CI and its verdict against its "
                    "own control arm. Prints a table and writes Markdown and CSV.")
    p.add_argument("--metric", default="eval_tok_s",
                   help=f"a headline metric of {METRICS_JSON} (eval_tok_s)")
    p.add_argument("--stage", default="report", help="analysis, report or workflow (report)")
    p.add_argument("--out", type=Path, default=LEADERBOARD_OUT,
                   help=f"folder for <stage>_<metric>.md and .csv ({LEADERBOARD_OUT})")
    p.set_defaults(func=_cmd_leaderboard)

    sweep.add_parser(sub)
