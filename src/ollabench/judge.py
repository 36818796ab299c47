"""The optional judge stage: a judge model scores every measured output against a rubric.

Off by default (conf/judge/disabled.yaml): the stage then writes an empty score file. When on,
each measured call that succeeded is shown to the judge with the input it answered (rebuilt
from the workload and the run's earlier outputs, as the bench built it) and the judge's
first whole number in 1..scale_max is its score. An answer without one is recorded as such,
never guessed. Scores are journaled as they come, so an interrupted stage resumes; they land
in data/judge/scores.jsonl, one line per judged call, with the judge's model identity
(docs/metrics.md, Judge scores). The aggregate joins them to the calls by (seq, attempt).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ollabench.backends import Backend, make_backend
from ollabench.backends.base import Message
from ollabench.config.schema import BenchConfig, JudgeConfig
from ollabench.files import sha256_file, write_json_atomic, write_text_atomic
from ollabench.paths import CALLS_FILE, JUDGE_INFO_FILE, JUDGE_ROOT, JUDGE_SCORES_FILE
from ollabench.records.schema import OK, CallRecord, read_records
from ollabench.workloads import load_workload
from ollabench.workloads.base import Workload

NO_SCORE = "no_score"  # the judge answered, but with no whole number in 1..scale_max
JUDGE_SEED = 0
SCORE = re.compile(r"(?<![\d.])\d{1,3}(?!\d|\.\d)")  # a whole number, not part of 3.5


@dataclass
class JudgeScore:
    """One judged call: which call (seq, attempt), the score, and how the judge answered."""

    seq: int
    attempt: int
    run: int
    arm: str
    stage: str
    judge_score: int | None
    judge_outcome: str  # ok, no_score, or the failed call's outcome
    judge_error: str | None
    judge_output: str
    judge_ms: float | None  # the judge call's end-to-end time


def parse_score(text: str, scale_max: int) -> int | None:
    """The first whole number of the answer if it lies in 1..scale_max, else None."""
    match = SCORE.search(text)
    if match is None:
        return None
    value = int(match.group())
    return value if 1 <= value <= scale_max else None


def judge_messages(judge: JudgeConfig, task: list[Message], output: str) -> list[Message]:
    """What the judge sees: the rubric, the judged call's input (its end kept when long:
    the task comes last), and the answer."""
    given = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in task)
    if len(given) > judge.max_input_chars:
        given = "[...]\n" + given[-judge.max_input_chars:]
    return [
        {"role": "system", "content": judge.rubric.strip()},
        {"role": "user", "content": (
            f"Task and input:\n{given}\n\nAnswer to grade:\n{output}\n\n"
            f"Reply with the score only: one whole number from 1 to {judge.scale_max}.")},
    ]


def judged_calls(records: list[CallRecord],
                 workload: Workload) -> Iterator[tuple[CallRecord, list[Message]]]:
    """Each measured call that succeeded, with the messages it was sent: the workload's
    prompt for its step, built from the same task's earlier outputs (a run and arm's, and
    under load one agent's in one block). A call's step is its place among its task's
    measured calls (the bench numbers them in step order; retries keep their number)."""
    chains: dict[tuple[int, str, int | None, int | None], dict[int, CallRecord]] = {}
    for record in sorted(records, key=lambda r: r.key):
        if record.phase == "measured":
            task = (record.run, record.arm, record.concurrency, record.agent)
            chain = chains.setdefault(task, {})
            if record.error is None or record.seq not in chain:
                chain[record.seq] = record
    for chain in chains.values():
        by_step = [chain[seq] for seq in sorted(chain)]
        if len(by_step) != len(workload.steps):
            continue  # not every step was recorded: the prompts cannot be rebuilt
        for index, record in enumerate(by_step):
            if record.error is None and record.outcome == OK:
                yield record, workload.messages(index, _outputs(by_step))


def _outputs(by_step: list[CallRecord]) -> Callable[[int], str]:
    return lambda index: by_step[index].output


def judge_key(judge: JudgeConfig, calls_sha256: str) -> str:
    payload = json.dumps({"judge": judge.model_dump(mode="json"), "calls": calls_sha256},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_identity(backend: Backend) -> str | None:
    """The judge model's content identity: the GGUF's sha256, or Ollama's digest."""
    info = backend.provenance()
    return info.get("model_sha256") or (info.get("model") or {}).get("digest")


def run_judge(config: BenchConfig, raw_dir: Path, out_dir: Path,
              journal_root: Path = JUDGE_ROOT, progress: bool = True,
              backend: Backend | None = None) -> int:
    """Score raw_dir's measured calls into out_dir (or write the empty files when the judge
    is off). Returns the number of calls scored."""
    judge = config.judge
    calls_path = raw_dir / CALLS_FILE
    if not judge.enabled or judge.model is None:
        write_text_atomic(out_dir / JUDGE_SCORES_FILE, "")
        write_json_atomic(out_dir / JUDGE_INFO_FILE, {"enabled": False})
        return 0
    todo = list(judged_calls(read_records(calls_path), load_workload(config)))
    journal = journal_root / judge_key(judge, sha256_file(calls_path)) / JUDGE_SCORES_FILE
    done = _read_journal(journal)
    backend = backend or make_backend(judge.model, config.run)
    backend.preflight()
    options = {"temperature": 0.0, "seed": JUDGE_SEED, "num_predict": judge.num_predict}
    journal.parent.mkdir(parents=True, exist_ok=True)
    try:
        with journal.open("a", encoding="utf-8") as sink, tqdm(
                total=len(todo), unit="call", desc="judge", disable=not progress,
                dynamic_ncols=True) as bar:
            for record, messages in todo:
                if (record.seq, record.attempt) not in done:
                    score = _score(backend, judge, options, record, messages)
                    done[(score.seq, score.attempt)] = score
                    sink.write(json.dumps(asdict(score)) + "\n")
                    sink.flush()
                bar.update()
        identity = model_identity(backend)
    finally:
        backend.close()
    scores = [done[(r.seq, r.attempt)] for r, _ in todo]
    write_text_atomic(out_dir / JUDGE_SCORES_FILE,
                      "".join(json.dumps(asdict(s)) + "\n" for s in scores))
    write_json_atomic(out_dir / JUDGE_INFO_FILE, {
        "enabled": True, "model": judge.model.name, "backend": judge.model.backend,
        "model_id": identity, "scale_max": judge.scale_max,
        "rubric_sha256": hashlib.sha256(judge.rubric.encode()).hexdigest(),
        "scored": sum(s.judge_score is not None for s in scores),
        "no_score": sum(s.judge_outcome == NO_SCORE for s in scores),
        "failed": sum(s.judge_outcome not in (OK, NO_SCORE) for s in scores)})
    journal.unlink()
    return len(scores)


def _score(backend: Backend, judge: JudgeConfig, options: dict[str, Any], record: CallRecord,
           messages: list[Message]) -> JudgeScore:
    answer = backend.chat(judge_messages(judge, messages, record.output), options)
    score = parse_score(answer.output, judge.scale_max) if answer.error is None else None
    outcome = answer.outcome if answer.error is not None else (OK if score else NO_SCORE)
    return JudgeScore(seq=record.seq, attempt=record.attempt, run=record.run, arm=record.arm,
                      stage=record.stage, judge_score=score, judge_outcome=outcome,
                      judge_error=answer.error, judge_output=answer.output,
                      judge_ms=answer.e2e_ms)


def _read_journal(path: Path) -> dict[tuple[int, int], JudgeScore]:
    """Scores of an interrupted earlier try with the same judge and calls; a torn last
    line (a kill mid-write) is dropped."""
    if not path.is_file():
        return {}
    scores = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            score = JudgeScore(**json.loads(line))
        except (ValueError, TypeError):
            continue
        scores[(score.seq, score.attempt)] = score
    # Rewritten without the torn line, so that new appends start on a clean line.
    write_text_atomic(path, "".join(json.dumps(asdict(s)) + "\n" for s in scores.values()))
    return scores
