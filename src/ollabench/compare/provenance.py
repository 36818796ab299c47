"""Where, on what and how each side was measured, and what differs between two sides.

A comparison across machines, model weights or engine versions measures the setup as much as
the settings; these facts come first in the comparison so that it says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ollabench.compare.revisions import Side
from ollabench.redaction import redact_url

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
        "weights.reference_model": (config.get("reference_model") or {}).get("name"),
        "engine.reference_backend": (config.get("reference_model") or {}).get("backend"),
        "engine.server": backend.get("server"),
        # env.json of runs before the redaction may hold a URL with credentials
        **{f"server.{key}": redact_url(str(value))
           for key, value in (env.get("ollama_env") or {}).items()},
        "software.python": env.get("python"),
        **{f"software.{key}": value for key, value in (env.get("packages") or {}).items()},
        "prompt.workload_sha256": (env.get("workload") or {}).get("sha256"),
        "prompt.tokens.first_stage": _prompt_tokens(side),
        **{f"options.{key}": value for key, value in _arm_options(side).items()},
        **{f"run.{key}": run.get(key) for key in RUN_SETTINGS},
        # records from before levels ran one agent at a time, without an SLO
        "run.concurrency": run.get("concurrency") or [1],
        "run.slo": {k: v for k, v in (run.get("slo") or {}).items() if v is not None} or None,
    }


def _prompt_tokens(side: Side) -> float | None:
    """Median prompt size of the first stage, whose prompt is the workload alone (later
    prompts carry earlier outputs, so their size follows the settings under test)."""
    measured = sorted(side.measured(), key=lambda r: r.seq)
    first = measured[0].stage if measured else None
    known = [r.prompt_tokens for r in measured
             if r.stage == first and r.prompt_tokens is not None]
    return statistics.median(known) if known else None


def _arm_options(side: Side) -> dict[str, Any]:
    """The arm's profile and the options its engine really used (output cap per stage)."""
    options: dict[str, Any] = {}
    for record in side.measured():
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
