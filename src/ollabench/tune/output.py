"""What a search leaves: the tuning report (Markdown and two figures) and, for a confirmed
winner only, conf/profile/tuned_<model>.yaml with a comment naming the study, the trial and
the confirmatory result."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ollabench.files import write_text_atomic
from ollabench.tune.candidate import CandidateResult
from ollabench.tune.search import Candidate, TuneResult
from ollabench.tune.settings import CAPACITY, PROFILE_DIR, slug

NO_WINNER = "no setting beat the baseline by more than the threshold"
REPORT_MD = "tune.md"
CANDIDATES_PNG, HISTORY_PNG, PARETO_PNG = "candidates.png", "history.png", "pareto.png"


def change_pct(result: CandidateResult) -> float:
    return (result.ratio - 1.0) * 100.0


def effect(result: CandidateResult, objective: str, interval: bool = False) -> str:
    """The objective against the baseline in a few words: a change in % (with its interval),
    or both arms' capacity and tasks/min at it."""
    if result.by_capacity:
        return (f"capacity {result.capacity:g} agent(s) at {result.tasks_per_min:.1f} tasks/min "
                f"(baseline {result.control_capacity:g} at "
                f"{result.control_tasks_per_min:.1f})")
    text = f"{objective} {_pct(change_pct(result))}"
    return f"{text} [{_pct(result.low_pct)}, {_pct(result.high_pct)}]" if interval else text


def summary(result: TuneResult) -> str:
    """One sentence: the confirmed winner, or why there is none."""
    if result.confirmed and result.best is not None and result.confirm is not None:
        return (f"trial {result.best.number} ({_options(result.best.result)}) is confirmed: "
                f"{effect(result.confirm, result.objective, interval=True)} against "
                f"the baseline on fresh runs")
    if result.best is None:
        return f"{NO_WINNER}: no feasible candidate was faster in the search"
    if result.confirm is None:  # a cluster search whose confirmation job failed
        return (f"not decided: the confirmatory run of the best candidate, trial "
                f"{result.best.number}, did not finish (rerun tune to confirm it)")
    return (f"{NO_WINNER}: the best candidate, trial {result.best.number}, was not confirmed "
            f"on fresh runs (verdict: {result.confirm.verdict})")


def candidate_line(candidate: Candidate, objective: str) -> str:
    """One line per measured candidate, as the search goes."""
    r = candidate.result
    state = "feasible" if r.feasible else "infeasible: " + "; ".join(r.violations)
    recorded = f"; DVC experiment {r.experiment}" if r.experiment else ""
    return (f"trial {candidate.number} [{_options(r)}]: {effect(r, objective)} "
            f"({r.verdict} after {r.runs} runs per arm), {state}{recorded}")


def _options(result: CandidateResult) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.options.items())


def write_profile(result: TuneResult, model: str, reference: str,
                  conf_dir: Path = PROFILE_DIR) -> Path | None:
    """conf/profile/tuned_<model>.yaml for a confirmed winner; None (nothing written)
    otherwise."""
    if not (result.confirmed and result.best and result.confirm):
        return None
    name = f"tuned_{slug(model)}"
    confirm = result.confirm
    folder = f"data/tune/{result.study}"
    header = (
        f"# Found by `ollabench tune`: study {result.study}, trial {result.best.number} "
        f"({_where(result.best.result, f'{folder}/trial-{result.best.number}/')}).\n"
        f"# Confirmed on fresh runs against {reference} "
        f"({_where(confirm, f'{folder}/confirm/')}): "
        f"{effect(confirm, result.objective, interval=True)}, verdict {confirm.verdict} after "
        f"{confirm.runs} runs per arm.\n")
    body = {"defaults": ["baseline", "_self_"], "name": name,
            "options": dict(result.best.result.options)}
    path = conf_dir / f"{name}.yaml"
    write_text_atomic(path, header + yaml.safe_dump(body, sort_keys=False))
    return path


def _where(result: CandidateResult, folder: str) -> str:
    """Where a measurement lives: its DVC experiment, else its folder of records."""
    return f"DVC experiment {result.experiment}" if result.experiment else folder


def _row(label: str, result: CandidateResult, note: str = "") -> str:
    feasible = "yes" if result.feasible else "no: " + "; ".join(result.violations)
    change = effect(result, "") if result.by_capacity else _pct(change_pct(result))
    return (f"| {label} | {_options(result) or '-'} | {result.runs} | "
            f"{change} | [{_pct(result.low_pct)}, {_pct(result.high_pct)}] | "
            f"{result.verdict} | {feasible}{note} | {result.experiment or '-'} |")


def _pct(value: float) -> str:
    return f"{value:+.1f}%" if math.isfinite(value) else "-"


def speed_gain_pct(result: CandidateResult, direction: str) -> float:
    """The objective's change signed so that faster is positive, whatever its direction."""
    return -change_pct(result) if direction == "lower" else change_pct(result)


def pareto_front(candidates: list[Candidate], direction: str) -> list[Candidate]:
    """The candidates that neither another candidate nor the baseline (no change on either
    axis) beats on both speed and quality: the trade-offs worth a look, feasible or not."""
    points = [(c, speed_gain_pct(c.result, direction), c.result.quality_pct)
              for c in candidates
              if math.isfinite(c.result.ratio) and math.isfinite(c.result.quality_pct)]
    others = [(speed, quality) for _, speed, quality in points] + [(0.0, 0.0)]
    return [c for c, speed, quality in points
            if not any(s >= speed and q >= quality and (s > speed or q > quality)
                       for s, q in others)]


def pareto_lines(result: TuneResult) -> list[str]:
    """The speed-quality section: each candidate's two axes and whether it is on the front."""
    measured = [c for c in result.candidates if c.duplicate_of is None]
    front = {c.number for c in pareto_front(measured, result.direction)}
    lines = [f"Speed: {result.objective}'s change against the baseline, signed so that faster "
             "is positive. Quality: the largest loss of any whole-run quality metric "
             "(median difference; 0 or above: no loss). The front holds the candidates that no "
             "other candidate, nor the baseline, beats on both.", "",
             f"![speed and quality]({PARETO_PNG})", "",
             "| trial | options | speed | quality | on the front | feasible |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c.number} | {_options(c.result) or '-'} | "
              f"{_pct(speed_gain_pct(c.result, result.direction))} | "
              f"{_pct(c.result.quality_pct)} | {'yes' if c.number in front else 'no'} | "
              f"{'yes' if c.result.feasible else 'no'} |" for c in measured]
    if not any(math.isfinite(c.result.quality_pct) for c in measured):
        lines += ["", "No quality metric could be compared (every control median was 0 or "
                  "missing), so there is no trade-off to show."]
    return lines


def shrinkage_lines(result: TuneResult) -> list[str]:
    """The winner's curse: the effect the search saw for its pick against the effect fresh
    runs confirm; picking the best of several noisy estimates inflates the former."""
    if result.best is None or result.confirm is None:
        return ["No candidate was confirmed, so there is no shrinkage to estimate."]
    selected, confirmed = change_pct(result.best.result), change_pct(result.confirm)
    lines = [f"- selection effect (search runs): {_pct(selected)}",
             f"- confirmed effect (fresh runs): {_pct(confirmed)}",
             f"- shrinkage: {confirmed - selected:+.1f} percentage points"]
    if selected and math.isfinite(confirmed):
        lines.append(f"- the confirmed effect is {confirmed / selected:.0%} of the selected one")
    return lines


def write_report(result: TuneResult, out_dir: Path) -> Path:
    """tune.md and its figures in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _figures(result, out_dir)
    measured = [c for c in result.candidates if c.duplicate_of is None]
    lines = [f"# Tuning report: {result.study}", "",
             f"**{summary(result)}.**", "",
             f"Objective: {_objective_words(result)}. {len(measured)} candidate(s) measured; "
             f"the search stopped: {result.stop_reason}.", "",
             "## Candidates against the baseline", "",
             f"![candidates]({CANDIDATES_PNG})", "",
             "| trial | options | runs per arm | change | interval | verdict | feasible | "
             "DVC experiment |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in measured:
        mark = " (best)" if result.best and c.number == result.best.number else ""
        lines.append(_row(str(c.number), c.result, mark))
    lines += ["", "## Speed and quality", "", *pareto_lines(result),
              "", "## Search history", "", f"![history]({HISTORY_PNG})", "",
              "## Confirmatory run", ""]
    if result.confirm is None:
        lines.append("Not run: no feasible candidate beat the baseline in the search."
                     if result.best is None else
                     "Not finished: the confirmation job failed; rerun tune to confirm.")
    else:
        lines += ["| run | options | runs per arm | change | interval | verdict | feasible | "
                  "DVC experiment |", "| --- | --- | --- | --- | --- | --- | --- | --- |",
                  _row("confirm", result.confirm)]
    lines += ["", "## Winner's curse", "", *shrinkage_lines(result), ""]
    path = out_dir / REPORT_MD
    write_text_atomic(path, "\n".join(lines))
    return path


def _objective_words(result: TuneResult) -> str:
    if result.objective == CAPACITY:
        return ("capacity, the largest level of run.concurrency whose tasks meet run.slo, ties "
                "broken by tasks/min at that level (load.csv; descriptive, no interval); "
                "'change' below is the treatment's tasks/min at its capacity against the "
                "baseline's at its own")
    return f"{result.objective} ({result.direction} is better), treatment / baseline"


def _figures(result: TuneResult, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [c for c in result.candidates if c.duplicate_of is None]
    rows = [(f"trial {c.number}", c.result) for c in measured]
    if result.confirm is not None:
        rows.append(("confirm", result.confirm))
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.5))
    for y, (_, r) in enumerate(rows):
        x = change_pct(r)
        if not math.isfinite(x):
            continue
        low, high = r.low_pct, r.high_pct
        err = [[x - low], [high - x]] if math.isfinite(low) and math.isfinite(high) else None
        ax.errorbar(x, y, xerr=err, fmt="o", capsize=3,
                    color="tab:blue" if r.feasible else "tab:red")
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel(f"{result.objective}: change against the baseline (%); red: infeasible")
    fig.tight_layout()
    fig.savefig(out_dir / CANDIDATES_PNG, dpi=100)
    plt.close(fig)

    _pareto_figure(plt, measured, result.direction, out_dir / PARETO_PNG)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    shown = [c for c in measured if math.isfinite(c.result.ratio)]
    for feasible, color in ((True, "tab:blue"), (False, "tab:red")):
        ax.plot([c.number for c in shown if c.result.feasible == feasible],
                [change_pct(c.result) for c in shown if c.result.feasible == feasible], "o",
                color=color, label="feasible" if feasible else "infeasible")
    sign = 1.0 if result.direction == "lower" else -1.0
    best, xs, running = [], [], math.inf
    for c in shown:
        if c.result.feasible:
            running = min(running, sign * change_pct(c.result))
        if math.isfinite(running):
            xs.append(c.number)
            best.append(sign * running)
    ax.step(xs, best, where="post", color="tab:green", label="best feasible so far")
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_xlabel("trial")
    ax.set_ylabel("change against the baseline (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / HISTORY_PNG, dpi=100)
    plt.close(fig)


def _pareto_figure(plt: Any, measured: list[Candidate], direction: str, path: Path) -> None:
    """Speed gain against quality change per candidate, the baseline at the origin and the
    front joined by a line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = [c for c in measured
             if math.isfinite(c.result.ratio) and math.isfinite(c.result.quality_pct)]
    for feasible, color in ((True, "tab:blue"), (False, "tab:red")):
        mine = [c for c in shown if c.result.feasible == feasible]
        ax.plot([speed_gain_pct(c.result, direction) for c in mine],
                [c.result.quality_pct for c in mine], "o", color=color,
                label="feasible" if feasible else "infeasible")
        for c in mine:
            ax.annotate(str(c.number), (speed_gain_pct(c.result, direction),
                                        c.result.quality_pct), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
    front = sorted(pareto_front(measured, direction),
                   key=lambda c: speed_gain_pct(c.result, direction))
    ax.plot([speed_gain_pct(c.result, direction) for c in front],
            [c.result.quality_pct for c in front], "-", color="tab:green", label="front")
    ax.plot([0.0], [0.0], "s", color="grey", label="baseline")
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set_xlabel("speed: faster than the baseline (%)")
    ax.set_ylabel("quality: largest loss of a quality metric (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
