"""The judge stage's scores joined to the calls they judged (docs/metrics.md, Judge scores).

The judge writes one line per judged call keyed by (seq, attempt); a call it did not judge,
or judged without a score, has an unknown `judge_score`. Without a judge directory, or with
the judge off, the calls are returned as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ollabench.errors import AggregateError
from ollabench.paths import JUDGE_INFO_FILE, JUDGE_SCORES_FILE

KEYS = ["seq", "attempt"]


def with_judge_scores(calls: pd.DataFrame,
                      judge_dir: Path | None) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The calls with a `judge_score` column when the judge ran, and the judge's facts
    (model, identity, counts) for quality.json; (calls, None) when it did not."""
    if judge_dir is None or not (judge_dir / JUDGE_INFO_FILE).is_file():
        return calls, None
    info = json.loads((judge_dir / JUDGE_INFO_FILE).read_text(encoding="utf-8"))
    if not info.get("enabled"):
        return calls, None
    path = judge_dir / JUDGE_SCORES_FILE
    try:
        scores = pd.read_json(path, lines=True, dtype={"judge_score": "float64"})
    except ValueError as exc:
        raise AggregateError(f"{path}: not JSON lines ({exc}); rerun the judge stage") from None
    if scores.empty:
        return calls.assign(judge_score=float("nan")), info
    missing = [c for c in (*KEYS, "judge_score") if c not in scores]
    if missing:
        raise AggregateError(f"{path}: no column(s) {missing}; rerun the judge stage")
    if scores.duplicated(KEYS).any():
        raise AggregateError(f"{path}: a call (seq, attempt) judged twice; rerun the judge "
                             "stage")
    keyed = scores.set_index(KEYS)["judge_score"].astype("float64")
    index = pd.MultiIndex.from_arrays([calls[k].astype("int64") for k in KEYS])
    return calls.assign(judge_score=keyed.reindex(index).to_numpy()), info
