"""Compare one arm across two revisions, and rank every experiment of the repository.

`aggregate` compares the two arms of one run. These compare across runs: git revisions or DVC
experiments, read through DVC's API (local cache or DVC remote, never a checkout), so every
number still comes from raw records tied to their parameters. What differs in the provenance
of the two sides comes first: a comparison across machines or model weights measures the
setup as much as the settings, and must say so.
"""

from __future__ import annotations

from ollabench.compare.compare import (
    Comparison,
    compare,
    comparison_markdown,
    levels_line,
    write_comparison,
)
from ollabench.compare.leaderboard import (
    leaderboard,
    leaderboard_table,
    leaderboard_text,
    median_ci,
    param_changes,
    write_leaderboard,
)
from ollabench.compare.provenance import (
    Difference,
    headline_label,
    provenance_differences,
    provenance_facts,
    setup_labels,
)
from ollabench.compare.revisions import Revision, Side, load_side

__all__ = [
    "Comparison",
    "Difference",
    "Revision",
    "Side",
    "compare",
    "comparison_markdown",
    "headline_label",
    "leaderboard",
    "leaderboard_table",
    "leaderboard_text",
    "levels_line",
    "load_side",
    "median_ci",
    "param_changes",
    "provenance_differences",
    "provenance_facts",
    "setup_labels",
    "write_comparison",
    "write_leaderboard",
]
