"""Why calls failed, in the words a user acts on: which retries may help (should_retry) and
the closing line of a bench whose calls never succeeded (why_incomplete).

A failure's outcome, never its error text, decides a retry. The closing line names each
cause once, with the arm and the option at fault, and asks for a rerun only where a rerun
can help: a timeout, a dropped or broken stream, a server error (5xx, 408, 429, 499). A
prompt longer than the context, an unknown model or a refused option fail the same way on
every try, so the line says what to change instead.
"""

from __future__ import annotations

from pathlib import Path

from ollabench.records.schema import HTTP_ERROR, OK, SKIPPED, CallRecord

# HTTP statuses worth another try: the server was busy or failed while running. Any other
# status (400 prompt too long, 404 unknown model) would only repeat.
RETRY_STATUSES = frozenset({408, 429, 499})
PROFILE_KEY = {"control": "reference", "treatment": "profile"}  # where an arm's options live
SEQS_SHOWN = 10


def should_retry(record: CallRecord) -> bool:
    """A failure that another try may not repeat; outcomes, never error texts, decide."""
    if record.outcome in (OK, SKIPPED):
        return False
    if record.outcome == HTTP_ERROR:
        return record.http_status is None or record.http_status >= 500 \
            or record.http_status in RETRY_STATUSES
    return True


def why_incomplete(failed: list[int], records: list[CallRecord], out_dir: Path) -> str:
    """The closing line of a bench with calls that never succeeded: how many, each cause
    once with its arm and fix, and "run again" only when some failure may pass on a retry."""
    last = {r.seq: r for r in sorted(records, key=lambda r: (r.seq, r.attempt))}
    failures = [last[seq] for seq in failed if seq in last]
    overflows: dict[str, list[CallRecord]] = {}
    causes: dict[str, list[int]] = {}
    for record in failures:
        if _overflowed(record):
            overflows.setdefault(record.arm, []).append(record)
        elif record.outcome == SKIPPED:
            causes.setdefault(f"{record.arm} arm: {record.stage} call(s) skipped because "
                              "the call whose output they need failed", []).append(record.seq)
        else:
            causes.setdefault(_cause(record), []).append(record.seq)
    parts = [_overflow(arm, mine, records) for arm, mine in overflows.items()]
    parts += [f"{text} (seq {_seqs(seqs)})" for text, seqs in causes.items()]
    tail = ("run again to retry the calls that may pass on another try (the journal keeps "
            "the others)" if any(should_retry(r) for r in failures) else
            "a rerun would fail the same way: change what is named above")
    return (f"{len(failed)} call(s) never succeeded (seq {_seqs(failed)}): " + "; ".join(parts)
            + f". Everything else is in {out_dir}; {tail}")


def _seqs(seqs: list[int]) -> str:
    return ", ".join(map(str, seqs[:SEQS_SHOWN])) + (", ..." if len(seqs) > SEQS_SHOWN else "")


def _overflowed(record: CallRecord) -> bool:
    """The server refused the prompt as longer than the context (the backend marks such a
    400 as truncated: the prompt did not fit)."""
    return record.outcome == HTTP_ERROR and record.http_status == 400 and bool(record.truncated)


def _cause(record: CallRecord) -> str:
    """One failure in words: the arm, what went wrong and, where the setup is at fault,
    what to change."""
    error = (record.error or record.outcome).splitlines()[0]
    if record.outcome == HTTP_ERROR and record.http_status == 404:
        return f"{record.arm} arm: {error}; check model.name (pull the model first)"
    if should_retry(record):
        return f"{record.arm} arm: {error}"
    return (f"{record.arm} arm: {error} (the server's answer to the request as configured: "
            f"check {PROFILE_KEY.get(record.arm, 'profile')}.options and model)")


def _overflow(arm: str, refused: list[CallRecord], records: list[CallRecord]) -> str:
    """An arm's prompts that the server refused as longer than the context: their size where
    another call of the same stage counted it, the context asked for, and the value that
    would fit them with their output cap."""
    where = f"{PROFILE_KEY.get(arm, 'profile')}.options.num_ctx"
    stages = list(dict.fromkeys(r.stage for r in refused))
    counted = {stage: max((r.prompt_tokens for r in records if r.stage == stage
                           and r.outcome == OK and r.prompt_tokens), default=None)
               for stage in stages}
    sizes = [n for n in counted.values() if n is not None]
    num_ctx = refused[0].options.get("num_ctx") or refused[0].num_ctx
    prompts = " and ".join(stages) + (" prompt" if len(stages) == 1 else " prompts")
    if sizes:
        prompts += (f" of {sizes[0]} tokens" if len(stages) == 1 and len(sizes) == 1
                    else f" of up to {max(sizes)} tokens")
    verb = "does" if len(stages) == 1 else "do"
    context = f"num_ctx {num_ctx}" if num_ctx else "the server's context"
    caps = [(counted[r.stage] or 0) + r.options.get("num_predict", 0) for r in refused
            if counted[r.stage] is not None and isinstance(r.options.get("num_predict"), int)]
    fix = (f"set {where} to at least {max(caps)} (prompt and output cap)" if caps
           else f"raise {where}")
    return (f"{arm} arm: the {prompts} {verb} not fit {context}; {fix} or shorten the "
            f"workload's prompts (seq {_seqs([r.seq for r in refused])})")
