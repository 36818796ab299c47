"""The quality gate: a faster treatment whose output got worse is never summarised as better.

The quality metrics (QUALITY_METRICS) go through the same comparison and verdict test as the
timings; the gate reads their whole-run (`workflow`) rows beside the whole-run end-to-end
time and words the outcome once, for the report's executive summary and metrics.json.
"""

from __future__ import annotations

import pandas as pd

from ollabench.stats.metrics import QUALITY_METRICS, WORKFLOW_STAGE

SPEED_METRIC = "e2e_ms"  # the whole task's time: what "faster" means in the gate
LOWER, HIGHER, NO_CHANGE, NOT_MEASURED = ("lower", "higher", "no change detected",
                                          "not measured")
SPEED_WORDS = {"better": "faster", "worse": "slower"}
QUALITY_WORDS = {LOWER: "lower quality", HIGHER: "higher quality",
                 NO_CHANGE: "no quality change detected", NOT_MEASURED: "quality not measured"}


def quality_verdict(comparisons: pd.DataFrame) -> str:
    """`lower` when any quality metric is significantly worse on the whole run, `higher`
    when one is better and none worse, `no change detected` otherwise (which includes an
    inconclusive test), `not measured` when the workload records no quality metric."""
    rows = workflow_rows(comparisons, QUALITY_METRICS)
    if rows.empty:
        return NOT_MEASURED
    if (rows["verdict"] == "worse").any():
        return LOWER
    if (rows["verdict"] == "better").any():
        return HIGHER
    return NO_CHANGE


def gate_words(comparisons: pd.DataFrame, primary: pd.DataFrame | None = None) -> str:
    """The treatment's speed and quality in one phrase, e.g. `faster, but lower quality`.
    A significant speed-up with lower quality is never worded as plain "faster". The speed
    half is read from the primary comparisons when there are any (the verdicts the report's
    answer gives, so the two never disagree), else from the whole run's end-to-end time."""
    quality = quality_verdict(comparisons)
    rows = primary if primary is not None and not primary.empty \
        else workflow_rows(comparisons, (SPEED_METRIC,))
    speed = speed_words(set(rows["verdict"]) if not rows.empty else set())
    joiner = ", but " if (speed, quality) in (("faster", LOWER), ("slower", HIGHER)) else ", "
    return speed + joiner + QUALITY_WORDS[quality]


def speed_words(verdicts: set[str]) -> str:
    """`faster`, `slower`, both, or no change, from the speed comparisons' verdicts."""
    found = [SPEED_WORDS[v] for v in ("better", "worse") if v in verdicts]
    if len(found) == 2:
        return "faster on some primary metrics and slower on others"
    return found[0] if found else "no speed change detected"


def workflow_rows(comparisons: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    if comparisons.empty:
        return comparisons
    keep = (comparisons["stage"] == WORKFLOW_STAGE) & comparisons["metric"].isin(metrics)
    return comparisons.loc[keep]


def output_similarity(measured: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per stage, how alike the arms' outputs were for the same run and step (recorded on
    whichever call of the pair ran second): pairs compared, median and lowest similarity."""
    calls = pd.concat(list(measured.values()))
    if "output_similarity_pct" not in calls:
        return {}
    known = calls.loc[calls["output_similarity_pct"].notna()]
    grouped = known.groupby(known["stage"].astype(str), sort=False)["output_similarity_pct"]
    return {str(stage): {"pairs": int(values.size), "median": float(values.median()),
                         "min": float(values.min())}
            for stage, values in grouped}
